//! `trial participants erase ID --reason …`: removes a participant from every shard and from
//! the archive (GDPR Art. 17), keeping the archive's checksums, manifest and locks exact.
//!
//! Steps, each recorded in the participant's row of `erasures` (map shard) before the next
//! begins, so that running the command again after a kill at any point resumes and ends in the
//! same state ([`CRASH_ENV`] makes the tests kill it at each):
//! 1. **status**: `erased` in `participant_status` on every shard, under the exclusive
//!    withdrawal lock (`vitalsink_common::participants`): from then on ingest stores none of
//!    their readings, a resend included (dead-letter reason `erased`);
//! 2. **hot rows**: counted, then deleted on each shard (`vitalsink_erase_participant`);
//! 3. **archive**: every live object whose row-group statistics may hold the participant is
//!    rewritten without their rows to `<old name>-e<erasure id>.parquet` ([`rewrite`]), read
//!    back and verified (rows = old − erased, content checksum), then swapped in as
//!    `migrate-archive` renames an object: a `renamed` row in the shard's `archive_log`,
//!    mirrored to the manifest;
//! 4. **locks**: each lock whose newest revision holds the participant gets a new revision
//!    (its objects rewritten under `locks/<name>/rev=<n+1>/`, archive objects replaced by their
//!    rewrites), recorded with its own audit entry (`lock.revise`);
//! 5. **delete**: the old objects (and the old lock revision's objects that held the
//!    participant) are deleted;
//! 6. **audit**: one `participant.erase` entry with counts and checksums before and after,
//!    never a value.
//!
//! Outside vitalsink's reach (README "Running a trial"): the source topic until its retention
//! expires, the dead-letter topic, database backups and WAL archives, object-store versions.

mod archive;
mod locks;
pub mod rewrite;
mod state;

use object_store::path::Path;
use serde_json::json;
use vitalsink_common::audit::{self, action, Record};
use vitalsink_common::datalock;
use vitalsink_common::db::Shard;
use vitalsink_common::participants;
use vitalsink_common::Config;

use crate::commands::map_shard;
use crate::error::{Error, Result};
pub use state::CRASH_ENV;
use state::{crash, remaining_hot, save, start, Hot, State};

/// Erases `participant`; returns the report the command prints.
///
/// # Errors
/// [`Error::Common`]/[`Error::Archive`] on a failing shard or store (run the command again to
/// resume), [`Error::Failed`] when a rewritten object does not verify (the old one is kept).
pub async fn run(
    cfg: &Config,
    shards: &[Shard],
    participant: &str,
    reason: &str,
) -> Result<serde_json::Value> {
    if participant.trim().is_empty() {
        return Err(Error::Arg {
            arg: "participant",
            message: "must not be empty".into(),
        });
    }
    let map = map_shard(shards)?;
    let archive = vitalsink_archiver::storage::store::open(&cfg.archive)?;
    let (id, mut st, done) = start(map, shards, participant, reason).await?;
    if let Some(report) = done {
        return Ok(report);
    }
    status(shards, participant, reason, id, &mut st, map).await?;
    crash("after-status");
    for s in shards {
        hot(s, participant, id, &mut st, map).await?;
    }
    crash("after-hot-delete");
    if !st.scanned {
        archive::scan(&archive, shards, participant, id, &mut st).await?;
        st.scanned = true;
        save(map, id, &st).await?;
    }
    for i in 0..st.objects.len() {
        if !st.objects[i].swapped {
            archive::swap(cfg, &archive, shards, participant, id, i, &mut st, map).await?;
        }
    }
    if !st.locks_done {
        locks::revise_locks(cfg, &archive, map, participant, reason, id, &mut st).await?;
        st.locks_done = true;
        save(map, id, &st).await?;
    }
    crash("before-delete");
    if !st.deleted {
        let keep = datalock::referenced(map).await?;
        for p in &st.delete {
            if keep.contains(p) {
                tracing::warn!(object = %p, "still named by a lock's newest revision; kept");
                continue;
            }
            archive.delete(&Path::from(p.as_str())).await?;
        }
        for p in locks::superseded_lock_objects(&archive, map, participant).await? {
            archive.delete(&p).await?;
        }
        st.deleted = true;
        save(map, id, &st).await?;
    }
    crash("before-audit");
    finish(map, participant, reason, id, &st).await
}

/// Step 1.
async fn status(
    shards: &[Shard],
    participant: &str,
    reason: &str,
    id: i64,
    st: &mut State,
    map: &Shard,
) -> Result<()> {
    let seq = match st.status_seq {
        Some(s) => s,
        None => {
            let seq = participants::next_seq(shards).await?;
            st.status_seq = Some(seq);
            save(map, id, st).await?;
            seq
        }
    };
    let change = participants::NewChange {
        seq,
        participant,
        status: participants::Status::Erased,
        effective_at: None,
        reason,
        audit_seq: None,
    };
    for s in shards {
        let mut c = s.client().await?;
        let tx = c.transaction().await.map_err(|e| Error::pg(s, e))?;
        participants::record_in(&tx, &change)
            .await
            .map_err(|e| Error::pg(s, e))?;
        tx.commit().await.map_err(|e| Error::pg(s, e))?;
    }
    Ok(())
}

/// Step 2 on one shard.
async fn hot(s: &Shard, participant: &str, id: i64, st: &mut State, map: &Shard) -> Result<()> {
    if st.hot.get(&s.name).is_some_and(|h| h.deleted.is_some()) {
        return Ok(());
    }
    if !st.hot.contains_key(&s.name) {
        let before = remaining_hot(s, participant).await?;
        st.hot.insert(
            s.name.clone(),
            Hot {
                before,
                deleted: None,
            },
        );
        save(map, id, st).await?;
    }
    let c = s.client().await?;
    let n: i64 = c
        .query_one("SELECT vitalsink_erase_participant($1)", &[&participant])
        .await
        .map_err(|e| Error::pg(s, e))?
        .get(0);
    if let Some(h) = st.hot.get_mut(&s.name) {
        // A resumed delete finds fewer (the first one committed): the count recorded before
        // the first delete stands.
        h.deleted = Some(if n == 0 { h.before } else { n });
    }
    save(map, id, st).await?;
    tracing::info!(shard = %s.name, rows = n, "hot rows erased");
    Ok(())
}

/// Step 6: the audit entry and the end of the erasure, in one transaction.
async fn finish(
    map: &Shard,
    participant: &str,
    reason: &str,
    id: i64,
    st: &State,
) -> Result<serde_json::Value> {
    let hot_before: i64 = st.hot.values().map(|h| h.before).sum();
    let details = json!({
        "erasure": id,
        "status_seq": st.status_seq,
        "hot_rows": st.hot.iter().map(|(k, h)| (k.clone(), json!({"before": h.before, "after": 0}))).collect::<serde_json::Map<_, _>>(),
        "hot_rows_erased": hot_before,
        "objects": st.objects.iter().filter(|o| !o.unchanged).map(|o| json!({
            "shard": o.shard, "before": o.old, "after": o.new,
            "rows_before": o.old_rows, "rows_after": o.new_rows,
            "checksum_before": o.old_checksum, "checksum_after": o.new_checksum,
        })).collect::<Vec<_>>(),
        "archived_rows_erased": st.objects.iter().map(|o| o.old_rows - o.new_rows.unwrap_or(o.old_rows)).sum::<i64>(),
        "lock_revisions": st.locks,
        "outside_reach": ["source topic until its retention", "dead-letter topic", "database backups and WAL archives", "object-store versions"],
    });
    let mut c = map.client().await?;
    let tx = c.transaction().await.map_err(|e| Error::pg(map, e))?;
    let entry = audit::append_in(
        &tx,
        map,
        &Record::new(action::ERASE, details.clone())
            .reason(Some(reason))
            .participants([participant.to_string()]),
    )
    .await?;
    tx.execute(
        "UPDATE erasures SET finished_at = now(), audit_seq = $2 WHERE id = $1",
        &[&id, &entry.seq],
    )
    .await
    .map_err(|e| Error::pg(map, e))?;
    tx.commit().await.map_err(|e| Error::pg(map, e))?;
    Ok(
        json!({"participant": participant, "erasure": id, "audit_seq": entry.seq, "details": details}),
    )
}
