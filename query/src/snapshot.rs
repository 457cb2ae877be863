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
use crate::shard_scan::Conn;

/// Connections kept per shard (primary or replica URL) for the snapshots of the engine's
/// queries: a query opens its snapshots on them instead of connecting anew (a new
/// PostgreSQL backend, with TimescaleDB loaded, took milliseconds of a one-participant query).
/// More at once than this connect on their own, as before.
pub const POOL_SIZE: usize = 8;

/// The engine's connection pools, one per shard URL, made on first use (deadpool). A
/// connection comes back only after its statement read to the end, its transaction rolled
/// back ([`Conn::release`]); handing one out runs `ROLLBACK` first (deadpool's recycling
/// query), so no snapshot outlives its query.
#[derive(Debug, Default)]
pub struct Pools {
    by_url: std::sync::Mutex<std::collections::HashMap<String, deadpool_postgres::Pool>>,
}

impl Pools {
    fn pool(
        &self,
        name: &str,
        url: &str,
        db: &vitalsink_common::config::DatabaseConfig,
    ) -> Result<deadpool_postgres::Pool> {
        let mut by_url = self
            .by_url
            .lock()
            .map_err(|_| Error::Archive("connection pools poisoned".into()))?;
        if let Some(p) = by_url.get(url) {
            return Ok(p.clone());
        }
        let (pg, tls) = vitalsink_common::pgconn::settings(
            url,
            &format!("shard {name} connection string"),
            db,
            "vitalsink-query",
        )?;
        let mgr = deadpool_postgres::Manager::from_config(
            pg,
            tls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Custom("ROLLBACK".into()),
            },
        );
        let pool = deadpool_postgres::Pool::builder(mgr)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Shard {
                shard: name.to_string(),
                message: e.to_string(),
            })?;
        by_url.insert(url.to_string(), pool.clone());
        Ok(pool)
    }

    /// A session on shard `name` at `url`: pooled when the pool has one to give now, else a
    /// connection of its own.
    ///
    /// # Errors
    /// [`Error::Shard`] naming the shard when it does not answer.
    pub async fn session(
        &self,
        name: &str,
        url: &str,
        db: &vitalsink_common::config::DatabaseConfig,
    ) -> Result<Conn> {
        let pool = self.pool(name, url, db)?;
        let now = deadpool_postgres::Timeouts {
            wait: Some(std::time::Duration::ZERO),
            ..Default::default()
        };
        match pool.timeout_get(&now).await {
            Ok(o) => Ok(Conn::Pooled(o)),
            Err(deadpool_postgres::PoolError::Backend(e)) => Err(Error::Shard {
                shard: name.to_string(),
                message: vitalsink_common::error::describe_postgres(&e),
            }),
            Err(_) => Ok(Conn::Plain(connect(name, url, db).await?)),
        }
    }
}

/// An archived object whose chunk its shard has dropped.
#[derive(Debug, Clone)]
pub struct Archived {
    /// Path relative to the archive root.
    pub path: String,
    /// The chunk's time range, `[start, end)`.
    pub range: (DateTime<Utc>, DateTime<Utc>),
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
    /// transaction; dropped unread, a pooled session's transaction is rolled back when the
    /// pool hands it out again).
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

/// A session of its own on shard `sc` (not from a pool: it holds a transaction for as long
/// as the query reads): on the first of its replicas that answers, unless `primary_only`,
/// else on the primary. Returns the session and where it is (`primary`, `replica N`).
async fn session(
    pools: &Pools,
    sc: &ShardConfig,
    db: &vitalsink_common::config::DatabaseConfig,
    primary_only: bool,
) -> Result<(Conn, String)> {
    if !primary_only {
        for (i, url) in sc.replicas.iter().enumerate() {
            match pools.session(&sc.name, url, db).await {
                Ok(c) => return Ok((c, format!("replica {i}"))),
                Err(e) => {
                    tracing::warn!(shard = %sc.name, replica = i, error = %e, "replica does not answer; trying the next, then the primary");
                }
            }
        }
    }
    Ok((
        pools.session(&sc.name, &sc.url, db).await?,
        "primary".into(),
    ))
}

/// A plain session on shard `name` at `url`, with TLS and login as every binary's (also the
/// session of [`crate::trial_tables`]' reads of the map shard).
///
/// # Errors
/// [`Error::Shard`] naming the shard when it does not answer; configuration errors of the
/// connection string.
pub(crate) async fn connect(
    name: &str,
    url: &str,
    db: &vitalsink_common::config::DatabaseConfig,
) -> Result<tokio_postgres::Client> {
    let fail = |message: String| Error::Shard {
        shard: name.to_string(),
        message,
    };
    // TLS and login as every binary's ([`vitalsink_common::pgconn`]).
    let (pg, tls) = vitalsink_common::pgconn::settings(
        url,
        &format!("shard {name} connection string"),
        db,
        "vitalsink-query",
    )?;
    let (c, conn) = pg
        .connect(tls)
        .await
        .map_err(|e| fail(vitalsink_common::error::describe_postgres(&e)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(c)
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
    let c = conn.client();
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
        let c = conn.client();
        let e = shard_err(&s.name);
        c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(&e)?;
        // The first query takes the snapshot.
        for r in c.query(DROPPED_SQL, &[]).await.map_err(&e)? {
            archived.push(Archived {
                path: r.get(0),
                range: (r.get(1), r.get(2)),
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
