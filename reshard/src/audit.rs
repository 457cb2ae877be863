//! The audit side of a move (issue 26; [`vitalsink_common::audit`]): the move's entry in the
//! trail on the map shard, and the participants' status on an added shard.
//!
//! **The entry.** A move that reaches `done` appends one `reshard.move` entry
//! ([`action::RESHARD_MOVE`]) in the same transaction on the map shard that records `done`
//! ([`finish`]), so a move is done exactly when its entry exists, whatever kill came between
//! its phases. `reason` is the required `--reason` of the run that finished it; `participants`
//! holds every moved participant. `details`: `move_id`, `kind` (`add` or
//! `remove`), `shard` (the one added or removed), `online`, `epoch_before`/`epoch_after`,
//! `from_shards`/`to_shards` (the two epochs' shard lists), `participants_moved`,
//! `rows_moved`, `routes` (per old → new shard: participants, rows), `moved` (per
//! participant, at most [`LISTED`]: `participant`, `from`, `to`, `rows` and `checksum` as
//! copied and verified, [`crate::copy::CHECKSUM_SQL`], and `source_deleted`: the old shard's
//! delete record has the same rows and checksum, i.e. the old shard held exactly the copied
//! rows when they were deleted from it), `moved_listed`, `verified_deleted` (participants
//! whose delete record matches their copy), `copied_now`/`deleted_now` (participants copied
//! and deleted by the run that finished the move; an earlier, killed run did the rest) and
//! `participant_status` (an addition: rows of `participant_status` copied to the new shard by
//! this run and held there afterwards; `null` for a removal). Before: each moved participant's
//! rows were on `from`; after: the same rows, count and checksum, on `to` and none on `from`.
//!
//! **Participant status.** Ingest decides each reading against the `participant_status` of
//! the shard it writes to (`vitalsink_common::participants`), so an added shard gets the map
//! shard's rows ([`copy_statuses`], `INSERT … ON CONFLICT (seq) DO NOTHING` under the
//! status lock) before routing names it — before the cut-over records are published (online)
//! or the switch (offline) — and once more before the move is recorded `done`, for changes
//! recorded meanwhile on the configured shards.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use vitalsink_common::audit::{self, action, Record};
use vitalsink_common::db::Shard;
use vitalsink_common::participants;
use vitalsink_common::routing::ShardRouter;

use crate::copy::recorded;
use crate::error::Result;
use crate::moves::report::Report;
use crate::plan::by_name;
use crate::plan::Change;
use crate::state::{self, MoveRow, Phase};

/// Participants listed one by one in a move's entry (`participants` and the totals cover all).
pub const LISTED: usize = 10_000;

/// What [`copy_statuses`] did over a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusCopy {
    /// Rows inserted into the new shard's `participant_status` by this run.
    pub copied_now: u64,
    /// Rows it holds after the last copy.
    pub on_new_shard: i64,
}

/// Copies the map shard's `participant_status` rows that `new` lacks into it (by `seq`), in
/// one transaction on `new` holding [`participants::LOCK_KEY`] exclusively (as
/// `trial participants …` does, so that no ingest transaction decides by a half-copied
/// table). Adds to `done`.
///
/// # Errors
/// Database errors of either shard (e.g. SQLSTATE 42501 for a role without `SELECT` on the
/// map shard's or `INSERT` on the new shard's table).
pub async fn copy_statuses(map_shard: &Shard, new: &Shard, done: &mut StatusCopy) -> Result<()> {
    let rows = map_shard
        .client()
        .await?
        .query(
            "SELECT seq, participant_id, status, to_json(effective_at) #>> '{}',
                    to_json(recorded_at) #>> '{}', reason, audit_seq
               FROM participant_status ORDER BY seq",
            &[],
        )
        .await
        .map_err(|e| map_shard.err(e))?;
    let col_i64 = |i: usize| rows.iter().map(|r| r.get(i)).collect::<Vec<i64>>();
    let col_text = |i: usize| rows.iter().map(|r| r.get(i)).collect::<Vec<String>>();
    let audit_seq: Vec<Option<i64>> = rows.iter().map(|r| r.get(6)).collect();
    let mut c = new.client().await?;
    let tx = c.transaction().await.map_err(|e| new.err(e))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&participants::LOCK_KEY],
    )
    .await
    .map_err(|e| new.err(e))?;
    let inserted = tx
        .execute(
            "INSERT INTO participant_status
                 (seq, participant_id, status, effective_at, recorded_at, reason, audit_seq)
             SELECT s, p, st, e::timestamptz, r::timestamptz, why, a
               FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[],
                           $6::text[], $7::int8[]) AS v(s, p, st, e, r, why, a)
             ON CONFLICT (seq) DO NOTHING",
            &[
                &col_i64(0),
                &col_text(1),
                &col_text(2),
                &col_text(3),
                &col_text(4),
                &col_text(5),
                &audit_seq,
            ],
        )
        .await
        .map_err(|e| new.err(e))?;
    let held: i64 = tx
        .query_one("SELECT count(*) FROM participant_status", &[])
        .await
        .map_err(|e| new.err(e))?
        .get(0);
    tx.commit().await.map_err(|e| new.err(e))?;
    if inserted > 0 {
        tracing::info!(shard = %new.name, rows = inserted, held, "participant status copied to the new shard");
    }
    done.copied_now += inserted;
    done.on_new_shard = held;
    Ok(())
}

/// One moved participant, as its records on the shards say.
#[derive(Debug, Clone)]
struct Moved {
    participant: String,
    from: String,
    to: String,
    rows: i64,
    checksum: String,
    source_deleted: bool,
}

/// The moved participants of `mv`: the `copied` records on the shards of `next`, each with
/// the old shard its participant routed to in `from`, and whether that shard's `deleted`
/// record matches the copy.
async fn moved(
    all: &[Shard],
    from: &[String],
    next: &[String],
    mv: &MoveRow,
) -> Result<Vec<Moved>> {
    let old_router = ShardRouter::new(from.len());
    let mut out = Vec::new();
    let mut deleted: BTreeMap<String, crate::copy::Sums> = BTreeMap::new();
    for to in next {
        for (pid, (rows, checksum)) in recorded(by_name(all, to)?, mv.id, "copied").await? {
            let src = from[old_router.shard_for(&pid)].clone();
            if &src == to {
                continue;
            }
            if !deleted.contains_key(&src) {
                let d = recorded(by_name(all, &src)?, mv.id, "deleted").await?;
                deleted.insert(src.clone(), d);
            }
            let source_deleted = deleted
                .get(&src)
                .and_then(|d| d.get(&pid))
                .is_some_and(|d| d.0 == rows && d.1 == checksum);
            out.push(Moved {
                participant: pid,
                from: src,
                to: to.clone(),
                rows,
                checksum,
                source_deleted,
            });
        }
    }
    out.sort_by(|a, b| a.participant.cmp(&b.participant));
    Ok(out)
}

/// The `details` of a move's entry (module docs).
fn details(
    mv: &MoveRow,
    change: &Change,
    from: &[String],
    next: &[String],
    moved: &[Moved],
    report: &Report,
    statuses: Option<StatusCopy>,
) -> Value {
    let mut routes: BTreeMap<(&str, &str), (u64, i64)> = BTreeMap::new();
    for m in moved {
        let r = routes.entry((&m.from, &m.to)).or_default();
        r.0 += 1;
        r.1 += m.rows;
    }
    let routes: Vec<Value> = routes
        .into_iter()
        .map(|((f, t), (p, r))| json!({"from": f, "to": t, "participants": p, "rows": r}))
        .collect();
    let listed: Vec<Value> = moved
        .iter()
        .take(LISTED)
        .map(|m| {
            json!({
                "participant": m.participant,
                "from": m.from,
                "to": m.to,
                "rows": m.rows,
                "checksum": m.checksum,
                "source_deleted": m.source_deleted,
            })
        })
        .collect();
    let shard = match change {
        Change::Add { name, .. } | Change::Remove { name } => name,
    };
    json!({
        "move_id": mv.id,
        "kind": mv.kind,
        "shard": shard,
        "online": mv.online,
        "epoch_before": mv.from_epoch,
        "epoch_after": mv.to_epoch,
        "from_shards": from,
        "to_shards": next,
        "participants_moved": moved.len(),
        "rows_moved": moved.iter().map(|m| m.rows).sum::<i64>(),
        "routes": routes,
        "moved": listed,
        "moved_listed": listed.len(),
        "verified_deleted": moved.iter().filter(|m| m.source_deleted).count(),
        "copied_now": report.copied_now,
        "deleted_now": report.deleted_now,
        "participant_status": statuses.map(|s| json!({
            "copied_now": s.copied_now,
            "rows_on_new_shard": s.on_new_shard,
        })),
    })
}

/// Records move `mv` `done` and appends its audit entry, in one transaction on the map shard
/// (`all[0]`); returns the entry's `seq`.
///
/// # Errors
/// Database errors (nothing recorded then: running the command again finishes the move).
#[allow(clippy::too_many_arguments)]
pub async fn finish(
    all: &[Shard],
    from: &[String],
    next: &[String],
    mv: &MoveRow,
    change: &Change,
    report: &Report,
    reason: &str,
    statuses: Option<StatusCopy>,
) -> Result<i64> {
    let map_shard = &all[0];
    let moved = moved(all, from, next, mv).await?;
    let rec = Record::new(
        action::RESHARD_MOVE,
        details(mv, change, from, next, &moved, report, statuses),
    )
    .reason(Some(reason))
    .participants(moved.iter().map(|m| m.participant.clone()));
    // The move's totals as the copy phase recorded them (unchanged by this step).
    let participants = i32::try_from(report.participants).unwrap_or(i32::MAX);
    let rows = report.rows;
    let mut c = map_shard.client().await?;
    let tx = c.transaction().await.map_err(|e| map_shard.err(e))?;
    state::finished_in(&*tx, map_shard, mv.id, Phase::Done, participants, rows).await?;
    let entry = audit::append_in(&tx, map_shard, &rec).await?;
    tx.commit().await.map_err(|e| map_shard.err(e))?;
    crate::metrics::phase(Phase::Done);
    tracing::info!(
        move_id = mv.id,
        audit_seq = entry.seq,
        participants = moved.len(),
        "move recorded done, with its audit entry"
    );
    Ok(entry.seq)
}
