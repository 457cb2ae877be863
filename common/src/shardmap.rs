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

use std::collections::BTreeMap;

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

/// Whether every epoch after `from` up to `to` was reached by an online move that has
/// finished: a worker that routed epoch `from` may then route `to` (it followed those moves'
/// cut-overs, or owned no partition to follow them on).
///
/// # Errors
/// Database errors of the map shard.
pub async fn online_moves_done(map_shard: &Shard, from: i32, to: i32) -> Result<bool> {
    let c = map_shard.client().await?;
    let r = c
        .query_one(
            "SELECT count(*) FILTER (WHERE online AND phase = 'done') FROM shard_moves
              WHERE to_epoch > $1 AND to_epoch <= $2",
            &[&from, &to],
        )
        .await
        .map_err(|e| map_shard.err(e))?;
    Ok(r.get::<_, i64>(0) == i64::from(to - from))
}

/// A shard move in progress while ingest runs (`reshard add-shard|remove-shard` without
/// `--offline`), as writers see it: records of a partition route by `from` up to and
/// including the partition's cut-over record ([`crate::cutover`]), by `to` after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlineMove {
    /// The move's id (`shard_moves.id`).
    pub id: i64,
    /// The epoch it starts from.
    pub from: ShardMap,
    /// The epoch it goes to: already the highest in the map (the pending epoch).
    pub to: ShardMap,
    /// The shard added or removed, and its libpq connection string as given to `reshard`,
    /// for writers whose configuration does not list it.
    pub target: crate::config::ShardConfig,
    /// Last phase finished (`cutover`, `copying`, `verified`).
    pub phase: String,
}

impl OnlineMove {
    /// The longer of the two lists (with jump hash one is a prefix of the other): every
    /// shard a record may route to while the move runs.
    pub fn union(&self) -> &[String] {
        if self.to.shards.len() >= self.from.shards.len() {
            &self.to.shards
        } else {
            &self.from.shards
        }
    }
}

/// What a writer routes by: `base` for every record, except that while `pending` runs, the
/// records above a partition's cut-over route by `pending.to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// Every record below its partition's cut-over (all records when nothing is pending).
    pub base: ShardMap,
    /// The online move in progress, if any.
    pub pending: Option<OnlineMove>,
}

impl Routing {
    /// Every shard a record may route to now, in routing order.
    pub fn union(&self) -> &[String] {
        self.pending
            .as_ref()
            .map_or(self.base.shards.as_slice(), OnlineMove::union)
    }

    /// The highest epoch known (the pending one while a move runs).
    pub fn latest_epoch(&self) -> i32 {
        self.pending
            .as_ref()
            .map_or(self.base.epoch, |m| m.to.epoch)
    }
}

/// Reads what writers route by from the map shard: the current epoch, or, while an online
/// move runs, the epoch it started from plus the move.
///
/// # Errors
/// [`Error::ShardMap`] while an **offline** move is unfinished (writers must not run then),
/// when the map is empty, or an epoch a move names is missing; database errors as [`current`].
pub async fn routing(map_shard: &Shard) -> Result<Routing> {
    let Some(now) = current(map_shard).await? else {
        return Err(Error::ShardMap("the shard map is empty".into()));
    };
    let c = map_shard.client().await?;
    let row = c
        .query_opt(
            "SELECT id, kind, shard, from_epoch, to_epoch, phase, online, target_url
               FROM shard_moves WHERE phase <> 'done' ORDER BY id LIMIT 1",
            &[],
        )
        .await
        .map_err(|e| map_shard.err(e))?;
    let Some(r) = row else {
        return Ok(Routing {
            base: now,
            pending: None,
        });
    };
    let (id, kind, shard, from_epoch, to_epoch, phase, online, url): (
        i64,
        String,
        String,
        i32,
        i32,
        String,
        bool,
        Option<String>,
    ) = (
        r.get(0),
        r.get(1),
        r.get(2),
        r.get(3),
        r.get(4),
        r.get(5),
        r.get(6),
        r.get(7),
    );
    if !online {
        return Err(Error::ShardMap(format!(
            "a shard move ({kind} {shard}, epoch {from_epoch} → {to_epoch}) is in phase {phase} \
             with the workers stopped (--offline); refusing to write until it has finished (run \
             the same `reshard` command again to resume it)"
        )));
    }
    let mut lists = BTreeMap::new();
    for r in c
        .query(
            "SELECT epoch, shards FROM shard_map WHERE epoch = ANY($1)",
            &[&vec![from_epoch, to_epoch]],
        )
        .await
        .map_err(|err| map_shard.err(err))?
    {
        lists.insert(r.get::<_, i32>(0), r.get::<_, Vec<String>>(1));
    }
    let mut epoch = |e: i32| {
        lists
            .remove(&e)
            .map(|shards| ShardMap { epoch: e, shards })
            .ok_or_else(|| {
                Error::ShardMap(format!("move {id} names epoch {e}, missing from the map"))
            })
    };
    let from = epoch(from_epoch)?;
    let to = epoch(to_epoch)?;
    Ok(Routing {
        base: from.clone(),
        pending: Some(OnlineMove {
            id,
            from,
            to,
            target: crate::config::ShardConfig {
                name: shard,
                url: url.unwrap_or_default(),
                replicas: Vec::new(),
            },
            phase,
        }),
    })
}

/// [`bootstrap`], then what writers route by ([`routing`]), with `shards`' names checked
/// against it: what every binary that writes does at start-up. While an online move runs,
/// either list of the move is accepted (a worker restarted during the move keeps its
/// configuration; it reaches the other shard through the move's record); otherwise exactly the
/// current epoch.
///
/// # Errors
/// As [`bootstrap`], [`routing`] and [`check`].
pub async fn verify(shards: &[Shard]) -> Result<Routing> {
    bootstrap(shards).await?;
    let routing = routing(&shards[0]).await?;
    let names: Vec<String> = shards.iter().map(|s| s.name.clone()).collect();
    match &routing.pending {
        Some(m) if m.to.shards == names => {}
        Some(m) => check(&m.from, &names).map_err(|_| {
            Error::ShardMap(format!(
                "the configuration lists shards [{}] but shard move {} runs from epoch {} [{}] \
                 to epoch {} [{}]; refusing to write. Configure one of the two lists",
                names.join(", "),
                m.id,
                m.from.epoch,
                m.from.names(),
                m.to.epoch,
                m.to.names()
            ))
        })?,
        None => check(&routing.base, &names)?,
    }
    Ok(routing)
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
