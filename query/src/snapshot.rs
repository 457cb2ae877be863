//! What one query reads: one REPEATABLE READ, read-only transaction per shard, and what each
//! shard's own tables say in that same snapshot — which archived chunks it has dropped (their
//! rows are read from the Parquet object instead), which archived windows were restored
//! into it (those rows are read from the database instead), and, during a shard move, which
//! participants it has already received a copy of.
//!
//! **Each row once.** For every shard the database rows count; an archive object's rows
//! count only when the shard that archived it says, in the snapshot read here, that the chunk
//! is dropped (`archive_log`: newest step `dropped`, the object under its newest name); and
//! of those, rows inside a window a restore brought back into some shard (a `restored` row
//! naming the object) do not. A chunk written or verified but not dropped is read from the
//! database only; a crash between verify and drop changes nothing.
//!
//! **During a shard move** a moving participant's history sits on its old shard until the
//! move deletes it, and on its new shard from the moment its copy commits (with its `copied`
//! record, in the same transaction). The snapshots of the shards that give participants away
//! are taken **before** those of the shards that receive them; a receiving shard's `copied`
//! records then say which participants' history it holds, and the giving shards' scans leave
//! exactly those participants out. Had a copy committed after the giving shard's snapshot, the
//! receiving snapshot (later) has it and the giver's rows are left out; had it not committed
//! by then, the giver's earlier snapshot still holds the history, which is read. Either way
//! each row once, without a lock.
//!
//! **Replicas.** A shard's `replicas` (read-only streaming standbys) are read instead of its
//! primary when one answers; a standby's snapshot is a consistent past state of its primary,
//! archive log included. During a shard move all shards are read on their primaries, since
//! the order of snapshots above must be an order in time.

use chrono::{DateTime, Utc};
use vitalsink_common::config::ShardConfig;
use vitalsink_common::Config;

use crate::error::{Error, Result};
use crate::sessions::{session, Conn, Pools};

/// An archived object whose chunk its shard has dropped.
#[derive(Debug, Clone)]
pub struct Archived {
    /// Path relative to the archive root.
    pub path: String,
    /// The chunk's time range, `[start, end)`.
    pub range: (DateTime<Utc>, DateTime<Utc>),
    /// The object's size in bytes as the archive log records it (the archiver wrote and
    /// verified it at that size; objects are never rewritten under their name), or `None`
    /// when unknown: the scan then asks the store ([`crate::archive_scan::plan`]).
    pub bytes: Option<u64>,
}

/// A window of an object a restore brought back into a shard's database.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The object restored from.
    pub path: String,
    /// `[from, to)`.
    pub window: (DateTime<Utc>, DateTime<Utc>),
    /// Only these participants, or all when empty.
    pub participants: Vec<String>,
}

/// One shard's open snapshot.
pub struct ShardSnapshot {
    /// The shard's name.
    pub name: String,
    /// The session holding the transaction (read by the shard's scan, which ends the
    /// transaction; dropped unread, the session is closed, not pooled: [`Conn`]).
    pub client: Conn,
    /// Where the session is: `primary` or `replica N`.
    pub on: String,
    /// Participants whose rows this shard's scan leaves out: their history was copied to a
    /// receiving shard, which counts it.
    pub exclude: Vec<String>,
}

impl std::fmt::Debug for ShardSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardSnapshot")
            .field("shard", &self.name)
            .field("exclude", &self.exclude.len())
            .finish()
    }
}

/// Everything one query reads.
#[derive(Debug)]
pub struct Snapshot {
    /// Shards in routing order (the longer list of a move in progress).
    pub shards: Vec<ShardSnapshot>,
    /// Routing lists in force: the current epoch's, plus the other list of a move in
    /// progress (a participant may be on its shard in either).
    pub lists: Vec<Vec<String>>,
    /// Archived objects of dropped chunks, over all shards.
    pub archived: Vec<Archived>,
    /// Restored windows, over all shards.
    pub restored: Vec<Restored>,
}

/// The shard move in progress, as read from the map shard.
struct Move {
    id: i64,
    kind: String,
    shard: String,
    url: Option<String>,
    from: Vec<String>,
    to: Vec<String>,
}

/// The archived objects that count ([`vitalsink_archiver::state::log::LIVE_OBJECTS_SQL`]):
/// path and range are read here.
const DROPPED_SQL: &str = vitalsink_archiver::state::log::LIVE_OBJECTS_SQL;

const RESTORED_SQL: &str = "SELECT object_path, range_start, range_end, coalesce(detail, '{}')
       FROM archive_log WHERE step = 'restored' AND object_path IS NOT NULL";

/// Every rename (`renamed_from` → `object_path`) of the shard's archive log.
const RENAMES_SQL: &str = "SELECT renamed_from, object_path FROM archive_log
      WHERE step = 'renamed' AND renamed_from IS NOT NULL AND object_path IS NOT NULL";

/// `path` after every rename in `renames` (at most as many steps as there are renames, so a
/// cycle cannot loop).
fn newest_name(path: String, renames: &std::collections::HashMap<String, String>) -> String {
    let mut p = path;
    for _ in 0..=renames.len() {
        match renames.get(&p) {
            Some(next) if *next != p => p = next.clone(),
            _ => break,
        }
    }
    p
}

fn shard_err(shard: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| Error::Shard {
        shard: shard.to_string(),
        message: vitalsink_common::error::describe_postgres(&e),
    }
}

/// Reads the shard map and any move in progress from the map shard (`cfg.shards[0]`).
async fn layout(
    cfg: &Config,
    pools: &Pools,
    map_shard: &ShardConfig,
) -> Result<(Vec<String>, Option<Move>)> {
    let conn = pools
        .session(&map_shard.name, &map_shard.url, &cfg.database)
        .await?;
    let c = conn.client(&map_shard.name)?;
    let e = shard_err(&map_shard.name);
    let current: Vec<String> = c
        .query_opt(
            "SELECT shards FROM shard_map ORDER BY epoch DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(&e)?
        .map_or_else(
            || cfg.shards.iter().map(|s| s.name.clone()).collect(),
            |r| r.get(0),
        );
    let mv = c
        .query_opt(
            "SELECT m.id, m.kind, m.shard, m.target_url, f.shards, t.shards
               FROM shard_moves m
               JOIN shard_map f ON f.epoch = m.from_epoch
               LEFT JOIN shard_map t ON t.epoch = m.to_epoch
              WHERE m.phase <> 'done' ORDER BY m.id LIMIT 1",
            &[],
        )
        .await
        .map_err(&e)?;
    let mv = match mv {
        None => None,
        Some(r) => {
            let from: Vec<String> = r.get(4);
            let kind: String = r.get(1);
            let shard: String = r.get(2);
            // An offline move writes its target epoch only at its switch.
            let to: Vec<String> = r.get::<_, Option<Vec<String>>>(5).unwrap_or_else(|| {
                let mut l = from.clone();
                if kind == "add" {
                    l.push(shard.clone());
                } else {
                    l.retain(|n| n != &shard);
                }
                l
            });
            Some(Move {
                id: r.get(0),
                kind,
                shard,
                url: r.get(3),
                from,
                to,
            })
        }
    };
    // Read outside a transaction: nothing to end before the pool has it again.
    conn.put_back();
    Ok((current, mv))
}

/// Opens the snapshot of every shard a row may be on — of `participants` only, when given:
/// the shards any routing list in force names for them — (see the module documentation for
/// the order) and reads their archive and move state in it.
///
/// # Errors
/// [`Error::Shard`] naming a shard that does not answer or fails; configuration errors when
/// the map names a shard neither configured nor the target of the move in progress.
pub async fn open(
    cfg: &Config,
    pools: &Pools,
    participants: Option<&std::collections::BTreeSet<String>>,
) -> Result<Snapshot> {
    let Some(map_shard) = cfg.shards.first() else {
        return Err(vitalsink_common::Error::ShardMap("no shards configured".into()).into());
    };
    let (current, mv) = layout(cfg, pools, map_shard).await?;
    let union: Vec<String> = match &mv {
        Some(m) if m.to.len() > m.from.len() => m.to.clone(),
        Some(m) => m.from.clone(),
        None => current.clone(),
    };
    let mut lists = vec![current.clone()];
    if let Some(m) = &mv {
        for l in [&m.from, &m.to] {
            if !lists.contains(l) {
                lists.push(l.clone());
            }
        }
    }
    let wanted = |name: &str| match participants {
        None => true,
        Some(ps) => lists.iter().any(|l| {
            let r = vitalsink_common::routing::ShardRouter::new(l.len());
            ps.iter()
                .any(|p| l.get(r.shard_for(p)).is_some_and(|n| n == name))
        }),
    };
    let mut shards: Vec<ShardConfig> = Vec::new();
    for name in union.iter().filter(|n| wanted(n)) {
        let sc = cfg
            .shards
            .iter()
            .find(|s| &s.name == name)
            .cloned()
            .or_else(|| {
                mv.as_ref().and_then(|m| {
                    (m.shard == *name).then(|| ShardConfig {
                        name: name.clone(),
                        url: m.url.clone().unwrap_or_default(),
                        replicas: Vec::new(),
                    })
                })
            })
            .filter(|s| !s.url.is_empty())
            .ok_or_else(|| {
                vitalsink_common::Error::ShardMap(format!(
                    "shard {name} of the shard map is not configured"
                ))
            })?;
        shards.push(sc);
    }
    // Giving shards first.
    let gives = |name: &str| match &mv {
        Some(m) if m.kind == "add" => m.from.iter().any(|n| n == name),
        Some(m) => m.shard == name,
        None => true,
    };
    let order: Vec<usize> = (0..shards.len())
        .filter(|&i| gives(&shards[i].name))
        .chain((0..shards.len()).filter(|&i| !gives(&shards[i].name)))
        .collect();
    let mut opened: Vec<Option<ShardSnapshot>> = (0..shards.len()).map(|_| None).collect();
    let mut archived = Vec::new();
    let mut restored = Vec::new();
    let mut copied: Vec<String> = Vec::new();
    for i in order {
        let s = &shards[i];
        // During a move every shard is read on its primary: the snapshot order above is an
        // order in time, which a lagging replica would not keep.
        let (conn, on) = session(pools, s, &cfg.database, mv.is_some()).await?;
        let c = conn.client(&s.name)?;
        let e = shard_err(&s.name);
        c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(&e)?;
        // The first query takes the snapshot.
        for r in c.query(DROPPED_SQL, &[]).await.map_err(&e)? {
            let bytes: i64 = r.get(5);
            archived.push(Archived {
                path: r.get(0),
                range: (r.get(1), r.get(2)),
                bytes: u64::try_from(bytes).ok().filter(|&b| b > 0),
            });
        }
        // An object renamed after its restore (`migrate-archive`, or an erasure's rewrite) is
        // read under its new name: its restored windows follow it, in this same snapshot.
        let renames: std::collections::HashMap<String, String> = c
            .query(RENAMES_SQL, &[])
            .await
            .map_err(&e)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for r in c.query(RESTORED_SQL, &[]).await.map_err(&e)? {
            let detail: String = r.get(3);
            let participants = serde_json::from_str::<serde_json::Value>(&detail)
                .ok()
                .and_then(|v| {
                    v["participants"].as_array().map(|a| {
                        a.iter()
                            .filter_map(|p| p.as_str().map(str::to_string))
                            .collect()
                    })
                })
                .unwrap_or_default();
            restored.push(Restored {
                path: newest_name(r.get(0), &renames),
                window: (r.get(1), r.get(2)),
                participants,
            });
        }
        if let Some(m) = mv.as_ref().filter(|_| !gives(&s.name)) {
            for r in c
                .query(
                    "SELECT participant_id FROM shard_move_rows WHERE move_id = $1 AND side = 'copied'",
                    &[&m.id],
                )
                .await
                .map_err(&e)?
            {
                copied.push(r.get(0));
            }
        }
        opened[i] = Some(ShardSnapshot {
            name: s.name.clone(),
            client: conn,
            on,
            exclude: Vec::new(),
        });
    }
    let mut out: Vec<ShardSnapshot> = opened.into_iter().flatten().collect();
    copied.sort();
    copied.dedup();
    for s in &mut out {
        if mv.is_some() && gives(&s.name) {
            s.exclude = copied.clone();
        }
    }
    Ok(Snapshot {
        shards: out,
        lists,
        archived,
        restored,
    })
}

#[cfg(test)]
mod tests {
    use super::newest_name;

    #[test]
    fn a_restored_window_follows_its_object_through_renames() {
        let renames = [("a", "b"), ("b", "c"), ("x", "x")]
            .into_iter()
            .map(|(f, t)| (f.to_string(), t.to_string()))
            .collect();
        assert_eq!(newest_name("a".into(), &renames), "c");
        assert_eq!(newest_name("c".into(), &renames), "c");
        assert_eq!(newest_name("x".into(), &renames), "x");
    }
}
