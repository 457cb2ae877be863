//! The shard map: which shards route, by epoch, held durably on the **map shard** — the
//! first shard of the routing order, which jump hash never removes (`schemas/ROUTING.md`).
//!
//! Each epoch lists shard names in routing order; the highest epoch is current. Routing is a
//! pure function of (participant, epoch): [`crate::routing::ShardRouter`] over that epoch's
//! list. The configuration's `[[shards]]` list says how to reach the shards; the map says
//! which of them route. A binary whose list disagrees with the current epoch refuses to write
//! ([`check`]), so a shard appended to the configuration by hand — which re-routes about
//! `1/(n+1)` of the participants while their earlier rows stay where they were, duplicating
//! them on a replay — stops the worker at start-up with the reason instead.
//!
//! The first binary to start on a deployment without a map writes epoch 1 from its
//! configuration ([`bootstrap`]), unless the shards themselves show that the list was
//! changed: a shard that has never applied a batch while others have is a shard appended
//! after the fact.

use crate::db::Shard;
use crate::error::{Error, Result};

/// One epoch of the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    /// Version, from 1.
    pub epoch: i32,
    /// Shard names in routing order.
    pub shards: Vec<String>,
}

impl ShardMap {
    /// Shard names as one comma-separated string, for messages.
    pub fn names(&self) -> String {
        self.shards.join(", ")
    }
}

/// The current epoch, read from the map shard (`shards[0]`); `None` before [`bootstrap`].
///
/// # Errors
/// [`Error::Postgres`]/[`Error::Pool`] when the map shard cannot be read.
pub async fn current(map_shard: &Shard) -> Result<Option<ShardMap>> {
    let c = map_shard.client().await?;
    let row = c
        .query_opt(
            "SELECT epoch, shards FROM shard_map ORDER BY epoch DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(|e| map_shard.err(e))?;
    Ok(row.map(|r| ShardMap {
        epoch: r.get(0),
        shards: r.get(1),
    }))
}

/// Writes epoch 1 from the configured shard list if the map is empty, and returns the
/// current epoch. Concurrent first starts agree: the insert is `ON CONFLICT DO NOTHING`.
///
/// # Errors
/// [`Error::ShardMap`] when the shards show the list was changed by hand (a shard that never
/// applied a batch beside shards that did); database errors as [`current`].
pub async fn bootstrap(shards: &[Shard]) -> Result<ShardMap> {
    let Some(map_shard) = shards.first() else {
        return Err(Error::ShardMap("no shards configured".into()));
    };
    if let Some(m) = current(map_shard).await? {
        return Ok(m);
    }
    let mut written = Vec::new();
    for s in shards {
        let c = s.client().await?;
        let any: bool = c
            .query_one("SELECT EXISTS (SELECT 1 FROM ingest_offsets)", &[])
            .await
            .map_err(|e| s.err(e))?
            .get(0);
        written.push((s.name.clone(), any));
    }
    let fresh: Vec<&str> = written
        .iter()
        .filter(|(_, any)| !any)
        .map(|(n, _)| n.as_str())
        .collect();
    if !fresh.is_empty() && fresh.len() < written.len() {
        return Err(Error::ShardMap(format!(
            "no shard map yet, and shard(s) {} never applied a batch while the others did: they \
             look appended to the configuration after data was routed over fewer shards. \
             Routing over the longer list would send their participants' new readings away from \
             the rows already written. Start with the shard list that routed the data so far; \
             a shard is added with a move, not by editing the list",
            fresh.join(", ")
        )));
    }
    let names: Vec<String> = shards.iter().map(|s| s.name.clone()).collect();
    let c = map_shard.client().await?;
    c.execute(
        "INSERT INTO shard_map (epoch, shards, reason) VALUES (1, $1, 'bootstrap from configuration')
         ON CONFLICT DO NOTHING",
        &[&names],
    )
    .await
    .map_err(|e| map_shard.err(e))?;
    current(map_shard)
        .await?
        .ok_or_else(|| Error::ShardMap("epoch 1 was written but cannot be read back".into()))
}

/// Checks that `configured` (shard names in configuration order) is exactly the map's
/// current epoch.
///
/// # Errors
/// [`Error::ShardMap`] naming both lists and the epoch.
pub fn check(map: &ShardMap, configured: &[String]) -> Result<()> {
    if map.shards == configured {
        return Ok(());
    }
    Err(Error::ShardMap(format!(
        "the configuration lists shards [{}] but the shard map (epoch {}, on shard {}) routes \
         over [{}]; refusing to write. Configure exactly the map's shards, in its order",
        configured.join(", "),
        map.epoch,
        map.shards.first().map_or("?", String::as_str),
        map.names()
    )))
}

/// The shard move (`reshard`) that has not finished, as a sentence, e.g. `a shard move (add
/// shard2, epoch 1 → 2) is in phase copying`; `None` when there is none.
///
/// # Errors
/// [`Error::Postgres`]/[`Error::Pool`] when the map shard cannot be read.
pub async fn unfinished_move(map_shard: &Shard) -> Result<Option<String>> {
    let c = map_shard.client().await?;
    let row = c
        .query_opt(
            "SELECT kind, shard, from_epoch, to_epoch, phase FROM shard_moves
              WHERE phase <> 'done' ORDER BY id LIMIT 1",
            &[],
        )
        .await
        .map_err(|e| map_shard.err(e))?;
    Ok(row.map(|r| {
        format!(
            "a shard move ({} {}, epoch {} → {}) is in phase {}",
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, i32>(2),
            r.get::<_, i32>(3),
            r.get::<_, String>(4)
        )
    }))
}

/// [`bootstrap`], then [`check`] against `shards`' names, and no unfinished shard move: what
/// every binary that writes does at start-up.
///
/// # Errors
/// As [`bootstrap`] and [`check`]; [`Error::ShardMap`] while a move has not finished (moves
/// run with the workers stopped; `reshard` resumes it).
pub async fn verify(shards: &[Shard]) -> Result<ShardMap> {
    let map = bootstrap(shards).await?;
    if let Some(mv) = unfinished_move(&shards[0]).await? {
        return Err(Error::ShardMap(format!(
            "{mv}; refusing to write until it has finished (run the same `reshard` command again              to resume it)"
        )));
    }
    let names: Vec<String> = shards.iter().map(|s| s.name.clone()).collect();
    check(&map, &names)?;
    Ok(map)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_list_other_than_the_current_epoch_is_refused_naming_both() {
        let map = ShardMap {
            epoch: 1,
            shards: vec!["shard0".into(), "shard1".into()],
        };
        assert!(check(&map, &map.shards.clone()).is_ok());
        let appended: Vec<String> = vec!["shard0".into(), "shard1".into(), "shard2".into()];
        let e = check(&map, &appended).unwrap_err().to_string();
        assert!(
            e.contains("[shard0, shard1, shard2]") && e.contains("epoch 1"),
            "{e}"
        );
        let reordered: Vec<String> = vec!["shard1".into(), "shard0".into()];
        assert!(check(&map, &reordered).is_err());
    }
}
