//! The durable record of a move: one `shard_moves` row on the map shard, whose `phase` is
//! the last phase finished (`copying` → `verified` → `switched` → `done`), as TimescaleDB's
//! `chunk_copy_operation` records the stages of a chunk copy. A re-run reads it and carries
//! on from there; per-participant progress is in `shard_move_rows` on the shards themselves
//! ([`crate::copy`], [`crate::moves`]).

use serde::Serialize;
use vitalsink_common::db::Shard;
use vitalsink_common::shardmap::ShardMap;

use crate::error::Result;

/// Phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Online only, started: the target epoch is in the map and cut-over records are in
    /// the topic; waiting until every shard has applied every partition past its cut-over.
    Cutover,
    /// Copying the moving participants' rows to their new shards.
    Copying,
    /// Every copy verified against its source.
    Verified,
    /// The new epoch is in the shard map: routing names the new shards.
    Switched,
    /// The moved rows are deleted from their old shards.
    Done,
}

impl Phase {
    fn parse(s: &str) -> Self {
        match s {
            "verified" => Phase::Verified,
            "switched" => Phase::Switched,
            "done" => Phase::Done,
            "cutover" => Phase::Cutover,
            _ => Phase::Copying,
        }
    }

    /// The name stored in `shard_moves.phase`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Cutover => "cutover",
            Phase::Copying => "copying",
            Phase::Verified => "verified",
            Phase::Switched => "switched",
            Phase::Done => "done",
        }
    }
}

/// One `shard_moves` row.
#[derive(Debug, Clone, Serialize)]
pub struct MoveRow {
    /// Id, the key of `shard_move_rows`.
    pub id: i64,
    /// Epoch the move starts from.
    pub from_epoch: i32,
    /// Epoch it ends in.
    pub to_epoch: i32,
    /// `add` or `remove`.
    pub kind: String,
    /// The shard added or removed.
    pub shard: String,
    /// For an addition, the new shard's database identity ([`database_id`]).
    pub target_id: Option<String>,
    /// Last phase finished.
    pub phase: Phase,
    /// Run while ingest runs (cut-over records), or with the workers stopped.
    pub online: bool,
    /// Participants that move (known once copied).
    pub participants: i32,
    /// Their rows (known once the copy phase has listed them).
    pub rows_total: i64,
    /// Rows copied so far.
    pub rows_copied: i64,
    /// Rows deleted from their old shards so far.
    pub rows_deleted: i64,
    /// Rows not copied yet.
    pub rows_left: i64,
}

const COLUMNS: &str = "id, from_epoch, to_epoch, kind, shard, phase, participants, rows_total, \
     rows_copied, rows_deleted, target_id, online";

fn row(r: &tokio_postgres::Row) -> MoveRow {
    MoveRow {
        id: r.get(0),
        from_epoch: r.get(1),
        to_epoch: r.get(2),
        kind: r.get(3),
        shard: r.get(4),
        phase: Phase::parse(r.get::<_, &str>(5)),
        participants: r.get(6),
        rows_total: r.get(7),
        rows_copied: r.get(8),
        rows_deleted: r.get(9),
        rows_left: (r.get::<_, i64>(7) - r.get::<_, i64>(8)).max(0),
        target_id: r.get(10),
        online: r.get(11),
    }
}

/// The move that has not reached `done`, if any (at most one: a move starts only when none
/// is unfinished, and `to_epoch` is unique).
///
/// # Errors
/// Database errors.
pub async fn unfinished(map_shard: &Shard) -> Result<Option<MoveRow>> {
    let c = map_shard.client().await?;
    let r = c
        .query_opt(
            &format!("SELECT {COLUMNS} FROM shard_moves WHERE phase <> 'done' ORDER BY id LIMIT 1"),
            &[],
        )
        .await
        .map_err(|e| map_shard.err(e))?;
    Ok(r.as_ref().map(row))
}

/// Every move, oldest first.
///
/// # Errors
/// Database errors.
pub async fn all(map_shard: &Shard) -> Result<Vec<MoveRow>> {
    let c = map_shard.client().await?;
    let rows = c
        .query(
            &format!("SELECT {COLUMNS} FROM shard_moves ORDER BY id"),
            &[],
        )
        .await
        .map_err(|e| map_shard.err(e))?;
    Ok(rows.iter().map(row).collect())
}

/// What a new move is.
#[derive(Debug, Clone)]
pub struct NewMove<'a> {
    /// The epoch it starts from.
    pub from_epoch: i32,
    /// `add` or `remove`.
    pub kind: &'a str,
    /// The shard added or removed.
    pub shard: &'a str,
    /// For an addition, the new shard's [`database_id`].
    pub target_id: Option<&'a str>,
    /// Online: the target epoch's shard list and the shard's connection string (written with
    /// the move, so workers route by it from their partitions' cut-overs on). `None` offline.
    pub online: Option<(&'a [String], &'a str)>,
    /// The shard's connection string, recorded in both modes (readers such as the query
    /// engine reach a shard being added through it).
    pub url: &'a str,
    /// Why, for the shard map's `reason`.
    pub reason: &'a str,
}

/// Records a new move from `m.from_epoch` — offline in phase `copying`; online in phase
/// `cutover`, in one transaction with its target epoch in the shard map.
///
/// # Errors
/// Database errors; a unique violation when another move to the same epoch raced it.
pub async fn start(map_shard: &Shard, m: &NewMove<'_>) -> Result<MoveRow> {
    let mut c = map_shard.client().await?;
    let tx = c.transaction().await.map_err(|e| map_shard.err(e))?;
    let (phase, online, url) = match m.online {
        Some((_, url)) => ("cutover", true, Some(url)),
        None => ("copying", false, Some(m.url)),
    };
    let r = tx
        .query_one(
            &format!(
                "INSERT INTO shard_moves (from_epoch, to_epoch, kind, shard, target_id, phase, online, target_url)
                 VALUES ($1, $1 + 1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
            ),
            &[&m.from_epoch, &m.kind, &m.shard, &m.target_id, &phase, &online, &url],
        )
        .await
        .map_err(|e| map_shard.err(e))?;
    if let Some((shards, _)) = m.online {
        tx.execute(
            "INSERT INTO shard_map (epoch, shards, reason) VALUES ($1 + 1, $2, $3)",
            &[&m.from_epoch, &shards, &m.reason],
        )
        .await
        .map_err(|e| map_shard.err(e))?;
    }
    tx.commit().await.map_err(|e| map_shard.err(e))?;
    Ok(row(&r))
}

/// Which database `shard` is: `<system identifier>/<database name>` (`pg_control_system()`,
/// unique per cluster, and `current_database()`), whatever URL reached it.
///
/// # Errors
/// Database errors.
pub async fn database_id(shard: &Shard) -> Result<String> {
    let c = shard.client().await?;
    let r = c
        .query_one(
            "SELECT (SELECT system_identifier FROM pg_control_system())::text || '/' || current_database()",
            &[],
        )
        .await
        .map_err(|e| shard.err(e))?;
    Ok(r.get(0))
}

/// Records that move `id` finished `phase`, with its totals.
///
/// # Errors
/// Database errors.
pub async fn finished(
    map_shard: &Shard,
    id: i64,
    phase: Phase,
    participants: i32,
    rows: i64,
) -> Result<()> {
    let c = map_shard.client().await?;
    finished_in(&**c, map_shard, id, phase, participants, rows).await
}

/// [`finished`] on `c`, a connection to (or transaction on) the map shard, e.g. the one
/// that appends the move's audit entry with `done` ([`crate::audit::finish`]).
///
/// # Errors
/// Database errors.
pub async fn finished_in(
    c: &impl tokio_postgres::GenericClient,
    map_shard: &Shard,
    id: i64,
    phase: Phase,
    participants: i32,
    rows: i64,
) -> Result<()> {
    c.execute(
        "UPDATE shard_moves SET phase = $2, participants = $3, rows_total = $4, updated_at = now()
          WHERE id = $1",
        &[&id, &phase.as_str(), &participants, &rows],
    )
    .await
    .map_err(|e| map_shard.err(e))?;
    Ok(())
}

/// Adds `copied` and `deleted` rows to move `id`'s progress.
///
/// # Errors
/// Database errors.
pub async fn progress(map_shard: &Shard, id: i64, copied: i64, deleted: i64) -> Result<()> {
    let c = map_shard.client().await?;
    c.execute(
        "UPDATE shard_moves SET rows_copied = rows_copied + $2, rows_deleted = rows_deleted + $3,
                updated_at = now() WHERE id = $1",
        &[&id, &copied, &deleted],
    )
    .await
    .map_err(|e| map_shard.err(e))?;
    Ok(())
}

/// Epoch `epoch` of the map.
///
/// # Errors
/// Database errors.
pub async fn epoch(map_shard: &Shard, epoch: i32) -> Result<Option<ShardMap>> {
    let c = map_shard.client().await?;
    let r = c
        .query_opt(
            "SELECT epoch, shards FROM shard_map WHERE epoch = $1",
            &[&epoch],
        )
        .await
        .map_err(|e| map_shard.err(e))?;
    Ok(r.map(|r| ShardMap {
        epoch: r.get(0),
        shards: r.get(1),
    }))
}

/// Writes epoch `to` routing over `shards` (the switch); idempotent.
///
/// # Errors
/// Database errors.
pub async fn switch(map_shard: &Shard, to: i32, shards: &[String], reason: &str) -> Result<()> {
    let c = map_shard.client().await?;
    c.execute(
        "INSERT INTO shard_map (epoch, shards, reason) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        &[&to, &shards, &reason],
    )
    .await
    .map_err(|e| map_shard.err(e))?;
    Ok(())
}
