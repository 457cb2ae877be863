//! Planning a change of the shard set, read-only.
//!
//! Rules (jump hash, Lamping & Veach 2014, arXiv:1406.2294; `schemas/ROUTING.md`):
//! - **append** shard `n` to an `n`-shard epoch: a participant moves only if jump hash over
//!   `n + 1` shards names the new one, about `1/(n+1)` of them, from every old shard;
//! - **remove the last** shard of `n`: only its participants move, each to what jump hash
//!   over `n - 1` names;
//! - anything else — removing a shard from the middle, the map shard (the first), the only
//!   shard, adding a name already in the map — re-routes most participants or cannot be
//!   routed, and is refused at once with nothing changed.
//!
//! The plan reads the current epoch of the shard map and, from every shard that loses
//! participants, `count(*)` per participant (streamed: memory holds the moving participants,
//! not their rows). Archived rows (Parquet) stay where they are: the archive is not routed.

use futures::TryStreamExt;
use serde::Serialize;
use vitalsink_common::config::{DatabaseConfig, ShardConfig};
use vitalsink_common::db::Shard;
use vitalsink_common::routing::ShardRouter;
use vitalsink_common::shardmap::{self, ShardMap};

use crate::error::{Error, Result};

/// The change asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Append a shard, reachable at `url`, under `name`.
    Add {
        /// The new shard's name.
        name: String,
        /// Its libpq connection string.
        url: String,
    },
    /// Remove shard `name`, which must be the last of the current epoch.
    Remove {
        /// The shard to remove.
        name: String,
    },
}

impl Change {
    pub(crate) fn action(&self) -> String {
        match self {
            Change::Add { name, .. } => format!("add shard {name}"),
            Change::Remove { name } => format!("remove shard {name}"),
        }
    }
}

/// One participant whose shard changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParticipantMove {
    /// The participant.
    pub participant_id: String,
    /// Shard it lives on in the current epoch.
    pub from: String,
    /// Shard the next epoch routes it to.
    pub to: String,
    /// Its rows on `from` now (hypertable only, not the archive).
    pub rows: i64,
}

/// What a change would move.
#[derive(Debug, Clone, Serialize)]
pub struct MovePlan {
    /// The current epoch.
    pub epoch: i32,
    /// Its shards, in routing order.
    pub shards: Vec<String>,
    /// The next epoch's shards, in routing order.
    pub next_shards: Vec<String>,
    /// Participants found on the shards that lose some.
    pub participants_seen: u64,
    /// Rows on those shards.
    pub rows_seen: i64,
    /// The participants that move, by shard then participant.
    pub moves: Vec<ParticipantMove>,
    /// Rows that move.
    pub rows_moving: i64,
}

/// The next epoch's shard names for `change` over `map`, or why it cannot be.
///
/// # Errors
/// [`Error::Refused`] as the module rules say.
pub fn next_shards(map: &ShardMap, change: &Change) -> Result<Vec<String>> {
    let refuse = |message: String| Error::Refused {
        action: change.action(),
        message,
    };
    match change {
        Change::Add { name, .. } => {
            if map.shards.contains(name) {
                return Err(refuse(format!(
                    "{name} is already in the shard map (epoch {}: [{}])",
                    map.epoch,
                    map.names()
                )));
            }
            if !vitalsink_common::measurement::is_valid_id(name) {
                return Err(refuse(format!(
                    "{name:?} is not a valid shard name (^[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}$)"
                )));
            }
            let mut next = map.shards.clone();
            next.push(name.clone());
            Ok(next)
        }
        Change::Remove { name } => {
            let Some(pos) = map.shards.iter().position(|s| s == name) else {
                return Err(refuse(format!(
                    "{name} is not in the shard map (epoch {}: [{}])",
                    map.epoch,
                    map.names()
                )));
            };
            if map.shards.len() == 1 {
                return Err(refuse("it is the only shard".into()));
            }
            if pos + 1 != map.shards.len() {
                return Err(refuse(format!(
                    "jump-hash routing can only remove the last shard of [{}] ({}); removing \
                     {name}, at position {} of {}, would re-route most participants",
                    map.names(),
                    map.shards[map.shards.len() - 1],
                    pos + 1,
                    map.shards.len()
                )));
            }
            Ok(map.shards[..pos].to_vec())
        }
    }
}

/// Plans `change` over the configured `shards` (which must be the shard map's current epoch,
/// first shard the map shard). For an addition, checks that the new shard answers and holds
/// no measurements yet.
///
/// # Errors
/// [`Error::Refused`] when routing cannot honour the change or the new shard is not empty;
/// [`vitalsink_common::Error::ShardMap`] when the list disagrees with the map (without a map
/// yet, the configured list is taken as epoch 1); database errors.
pub async fn plan(shards: &[Shard], db: &DatabaseConfig, change: &Change) -> Result<MovePlan> {
    let Some(map_shard) = shards.first() else {
        return Err(vitalsink_common::Error::ShardMap("no shards configured".into()).into());
    };
    let map = match shardmap::current(map_shard).await? {
        Some(m) => m,
        // What the first worker would write; a plan writes nothing.
        None => shardmap::ShardMap {
            epoch: 1,
            shards: shards.iter().map(|s| s.name.clone()).collect(),
        },
    };
    let names: Vec<String> = shards.iter().map(|s| s.name.clone()).collect();
    shardmap::check(&map, &names)?;
    let next = next_shards(&map, change)?;
    if let Change::Add { name, url } = change {
        check_new_shard(shards.len(), name, url, db, change).await?;
    }
    // Adding takes participants from every shard; removing only from the last.
    let losing: Vec<&Shard> = match change {
        Change::Add { .. } => shards.iter().collect(),
        Change::Remove { .. } => shards.last().into_iter().collect(),
    };
    let (participants_seen, rows_seen, moves) = moving(&losing, &next).await?;
    Ok(MovePlan {
        epoch: map.epoch,
        shards: map.shards.clone(),
        next_shards: next,
        participants_seen,
        rows_seen,
        rows_moving: moves.iter().map(|m| m.rows).sum(),
        moves,
    })
}

/// The participants on `losing` whose shard in the next epoch (`next`, in routing order)
/// is another one, with their rows: (participants seen, rows seen, moves). Streams each
/// shard's `count(*)` per participant.
///
/// # Errors
/// Database errors.
pub async fn moving(
    losing: &[&Shard],
    next: &[String],
) -> Result<(u64, i64, Vec<ParticipantMove>)> {
    let router = ShardRouter::new(next.len());
    let (mut seen, mut rows_seen, mut moves) = (0u64, 0i64, Vec::new());
    for s in losing {
        let c = s.client().await?;
        let rows = c
            .query_raw(
                "SELECT participant_id, count(*) FROM measurements GROUP BY 1 ORDER BY 1",
                std::iter::empty::<i32>(),
            )
            .await
            .map_err(|e| s.err(e))?;
        futures::pin_mut!(rows);
        while let Some(r) = rows.try_next().await.map_err(|e| s.err(e))? {
            let participant_id: String = r.get(0);
            let n: i64 = r.get(1);
            seen += 1;
            rows_seen += n;
            let to = &next[router.shard_for(&participant_id)];
            if *to != s.name {
                moves.push(ParticipantMove {
                    participant_id,
                    from: s.name.clone(),
                    to: to.clone(),
                    rows: n,
                });
            }
        }
    }
    Ok((seen, rows_seen, moves))
}

/// The new shard answers and has no measurements (it may be unmigrated: the move migrates it).
pub(crate) async fn check_new_shard(
    index: usize,
    name: &str,
    url: &str,
    db: &DatabaseConfig,
    change: &Change,
) -> Result<()> {
    let cfg = ShardConfig {
        name: name.to_string(),
        url: url.to_string(),
        replicas: Vec::new(),
    };
    let shard = Shard::new(index, &cfg, db)?;
    let c = shard.client().await?;
    let exists: bool = c
        .query_one("SELECT to_regclass('measurements') IS NOT NULL", &[])
        .await
        .map_err(|e| shard.err(e))?
        .get(0);
    let rows: i64 = if exists {
        c.query_one("SELECT count(*) FROM measurements", &[])
            .await
            .map_err(|e| shard.err(e))?
            .get(0)
    } else {
        0
    };
    if rows > 0 {
        return Err(Error::Refused {
            action: change.action(),
            message: format!("the new shard {name} already holds {rows} measurements"),
        });
    }
    Ok(())
}

/// The shard of `all` named `name`.
///
/// # Errors
/// [`vitalsink_common::Error::ShardMap`] when none is.
pub(crate) fn by_name<'a>(all: &'a [Shard], name: &str) -> Result<&'a Shard> {
    all.iter().find(|s| s.name == name).ok_or_else(|| {
        vitalsink_common::Error::ShardMap(format!("shard {name} of the map is not configured"))
            .into()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn map(n: usize) -> ShardMap {
        ShardMap {
            epoch: 3,
            shards: (0..n).map(|i| format!("shard{i}")).collect(),
        }
    }

    #[test]
    fn only_appending_and_removing_the_last_shard_are_routable() {
        let add = Change::Add {
            name: "shard3".into(),
            url: String::new(),
        };
        assert_eq!(next_shards(&map(3), &add).unwrap().len(), 4);
        let last = Change::Remove {
            name: "shard2".into(),
        };
        assert_eq!(
            next_shards(&map(3), &last).unwrap(),
            vec!["shard0".to_string(), "shard1".to_string()]
        );
        let middle = Change::Remove {
            name: "shard1".into(),
        };
        let e = next_shards(&map(3), &middle).unwrap_err().to_string();
        assert!(
            e.contains("only remove the last shard") && e.contains("shard2"),
            "{e}"
        );
        for refused in [
            Change::Remove {
                name: "shard0".into(),
            },
            Change::Add {
                name: "shard1".into(),
                url: String::new(),
            },
            Change::Add {
                name: "bad name".into(),
                url: String::new(),
            },
        ] {
            assert!(next_shards(&map(2), &refused).is_err(), "{refused:?}");
        }
        assert!(next_shards(
            &map(1),
            &Change::Remove {
                name: "shard0".into()
            }
        )
        .is_err());
    }
}
