//! The audit entries of `archiver run` (issue 26; [`vitalsink_common::audit`]): one
//! `archive.drop` entry ([`action::ARCHIVE_DROP`]) per chunk dropped, appended to the trail on
//! the map shard (the first configured shard).
//!
//! **When.** The drop commits on the chunk's own shard, the entry on the map shard, so the two
//! cannot share a transaction (only for the map shard's own chunks could they, and only on a
//! drop that does not run in a [`crate::state::guard::Guard`]'s raw transaction): the entry is
//! appended right after the drop commits ([`DropTrail::dropped`]). A crash, a kill or an
//! unreachable map shard between the two leaves a `dropped` log row without its entry; the
//! sweep at the end of every shard's run ([`DropTrail::sweep`], under the shard's bulk lock,
//! so no other archiver drops on it meanwhile) appends an entry for every `dropped` row of the
//! shard logged since the trail exists there (schema version 14 applied) that has none yet,
//! matched by shard, chunk and attempt, marked `"recovered": true`. A drop therefore gets
//! exactly one entry: appended once, or recovered once by a later run.
//!
//! **Details** of a chunk's entry ([`details`]): `shard`, `chunk` (`schema.name`),
//! `range_start`/`range_end` (the chunk's time range, UTC), `attempt`, `run_id`,
//! `archive_log_id` (the `dropped` row's id on the shard), `rows_before` (rows the chunk held
//! before this run touched it: `object_rows` + `duplicates_dropped`), `rows_after` (0: the
//! chunk is gone), `object` (path in the archive), `object_rows`, `object_bytes`, `checksum`
//! (the object's content checksum as logged at `written` and re-read at `verified`,
//! [`crate::export::checksum`]), `min_ts`/`max_ts`, `source_ranges` (Kafka lineage, when the
//! object has it), `duplicates_dropped` (readings the archive already held, deleted from the
//! chunk by this run before its export, [`crate::export::dedup`]; `null` in a recovered entry,
//! which cannot know them) and `recovered`. `participants` stays empty: the chunk's rows moved
//! to the object, which holds every participant of them.
//!
//! Duplicates deleted from a chunk that this run did not then drop (its export failed) are a
//! deletion too: [`DropTrail::flush_duplicates`] appends an `archive.drop` entry with
//! `"chunk_dropped": false` and `rows_deleted` for them at the end of the shard's run.

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use vitalsink_common::audit::{self, action, Record};
use vitalsink_common::db::Shard;

use crate::error::{pg, Error, Result};
use crate::export::catalog::Chunk;
use crate::state::log::{self, LogRow};

/// One run's audit of its drops: the map shard, the reason, the duplicates deleted per chunk
/// and the entries that could not be appended. Shared by the run's shard tasks.
#[derive(Debug)]
pub struct DropTrail {
    map_shard: Shard,
    reason: String,
    /// (shard, `schema.name`) → duplicates deleted from the chunk by this run, until its
    /// entry takes them.
    duplicates: Mutex<BTreeMap<(String, String), u64>>,
    /// Per shard: drops of this run whose entry could not be appended (yet).
    missed: Mutex<BTreeMap<String, usize>>,
    /// Entries that can no longer be made (duplicates of an undropped chunk whose entry failed).
    lost: AtomicUsize,
}

/// The `details` of the entry of the drop logged as `d` on `shard` (module docs).
pub fn details(shard: &str, d: &LogRow, duplicates: Option<u64>, recovered: bool) -> Value {
    let object_rows = d.rows.unwrap_or(0);
    json!({
        "shard": shard,
        "chunk": format!("{}.{}", d.chunk_schema, d.chunk_name),
        "range_start": d.range_start,
        "range_end": d.range_end,
        "attempt": d.attempt,
        "run_id": d.run_id,
        "archive_log_id": d.id,
        "rows_before": duplicates.map(|n| object_rows + n as i64),
        "rows_after": 0,
        "object": d.object_path,
        "object_rows": d.rows,
        "object_bytes": d.bytes,
        "checksum": d.checksum,
        "min_ts": d.min_ts,
        "max_ts": d.max_ts,
        "source_ranges": d.source_ranges,
        "duplicates_dropped": duplicates,
        "chunk_dropped": true,
        "recovered": recovered,
    })
}

impl DropTrail {
    /// A run's trail on `map_shard`, every entry with `reason`.
    pub fn new(map_shard: Shard, reason: String) -> Self {
        Self {
            map_shard,
            reason,
            duplicates: Mutex::default(),
            missed: Mutex::default(),
            lost: AtomicUsize::new(0),
        }
    }

    /// The reason the entries give.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        // A panic while the lock was held left a map that is still right.
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes that `n` duplicates were deleted from `chunk` of `shard` before its export.
    pub fn duplicates(&self, shard: &str, chunk: &Chunk, n: u64) {
        if n > 0 {
            *Self::lock(&self.duplicates)
                .entry((shard.to_string(), chunk.qualified()))
                .or_default() += n;
        }
    }

    /// Appends the entry of the drop logged as `d` on `shard` (just committed). A failure is
    /// logged and counted; [`Self::sweep`] appends the entry later.
    pub async fn dropped(&self, shard: &str, d: &LogRow) {
        let key = (
            shard.to_string(),
            format!("{}.{}", d.chunk_schema, d.chunk_name),
        );
        let dups = Self::lock(&self.duplicates).remove(&key).unwrap_or(0);
        let rec = Record::new(action::ARCHIVE_DROP, details(shard, d, Some(dups), false))
            .reason(Some(&self.reason));
        if let Err(e) = audit::append(&self.map_shard, &rec).await {
            tracing::warn!(
                shard, chunk = %d.chunk_name, attempt = %d.attempt, error = %e,
                "chunk dropped, but its audit entry could not be appended; appended by the sweep \
                 at the end of the shard's run, or by the next run"
            );
            *Self::lock(&self.missed)
                .entry(shard.to_string())
                .or_default() += 1;
        }
    }

    /// Appends an entry for every drop logged on `shard` (through `c`, under the shard's bulk
    /// lock) since the trail exists there that has none yet (module docs). Returns how many
    /// were appended; clears the shard's count of missed entries.
    ///
    /// # Errors
    /// [`Error::Postgres`] (either shard), [`Error::Common`] when an entry cannot be appended.
    pub async fn sweep(&self, c: &tokio_postgres::Client, shard: &str) -> Result<usize> {
        let dropped = log::dropped_since_trail(c, shard).await?;
        if dropped.is_empty() {
            Self::lock(&self.missed).remove(shard);
            return Ok(0);
        }
        let mc = self.map_shard.client().await?;
        let have: HashSet<(String, String)> = mc
            .query(
                "SELECT details::jsonb ->> 'chunk', details::jsonb ->> 'attempt' FROM audit_log
                  WHERE action = $1 AND details::jsonb ->> 'shard' = $2
                    AND (details::jsonb ->> 'chunk_dropped')::boolean IS NOT FALSE",
                &[&action::ARCHIVE_DROP, &shard],
            )
            .await
            .map_err(pg(&self.map_shard.name))?
            .iter()
            .map(|r| {
                (
                    r.get::<_, Option<String>>(0).unwrap_or_default(),
                    r.get::<_, Option<String>>(1).unwrap_or_default(),
                )
            })
            .collect();
        drop(mc);
        let mut appended = 0;
        for d in dropped {
            let key = (
                format!("{}.{}", d.chunk_schema, d.chunk_name),
                d.attempt.clone(),
            );
            if have.contains(&key) {
                continue;
            }
            let rec = Record::new(action::ARCHIVE_DROP, details(shard, &d, None, true))
                .reason(Some(&self.reason));
            audit::append(&self.map_shard, &rec).await?;
            tracing::info!(shard, chunk = %d.chunk_name, attempt = %d.attempt, "audit entry of an earlier drop appended");
            appended += 1;
        }
        Self::lock(&self.missed).remove(shard);
        Ok(appended)
    }

    /// The end of a shard's run, on its job connection `c` under its bulk lock: the entries
    /// of duplicates deleted from chunks not dropped ([`Self::flush_duplicates`]), then the
    /// [`Self::sweep`]. A failed sweep is logged and counts as (at least) one drop without
    /// its entry, so that the run reports it.
    pub async fn finish_shard(&self, c: &tokio_postgres::Client, shard: &str) {
        self.flush_duplicates(shard).await;
        match self.sweep(c, shard).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                shard,
                entries = n,
                "audit entries of earlier drops appended"
            ),
            Err(e) => {
                tracing::error!(shard, error = %e, "audit sweep failed: drops of this shard may lack their entry until the next run");
                let mut m = Self::lock(&self.missed);
                let v = m.entry(shard.to_string()).or_default();
                *v = (*v).max(1);
            }
        }
    }

    /// Appends an entry for the duplicates deleted from chunks of `shard` that this run did
    /// not drop (module docs). A failure is logged and counted as lost.
    pub async fn flush_duplicates(&self, shard: &str) {
        let left: Vec<((String, String), u64)> = {
            let mut m = Self::lock(&self.duplicates);
            let keys: Vec<(String, String)> =
                m.keys().filter(|(s, _)| s == shard).cloned().collect();
            keys.into_iter()
                .filter_map(|k| m.remove(&k).map(|n| (k, n)))
                .collect()
        };
        for ((_, chunk), n) in left {
            let rec = Record::new(
                action::ARCHIVE_DROP,
                json!({
                    "shard": shard,
                    "chunk": chunk,
                    "chunk_dropped": false,
                    "rows_deleted": n,
                    "duplicates_dropped": n,
                    "why": "readings the archive already holds, deleted from the chunk before \
                            its export; the chunk itself was not archived by this run",
                }),
            )
            .reason(Some(&self.reason));
            if let Err(e) = audit::append(&self.map_shard, &rec).await {
                tracing::error!(shard, %chunk, duplicates = n, error = %e, "duplicates deleted, but their audit entry could not be appended");
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Drops of this run still without an entry, plus entries that could not be made.
    pub fn unaudited(&self) -> usize {
        Self::lock(&self.missed).values().sum::<usize>() + self.lost.load(Ordering::Relaxed)
    }

    /// The error a run ends with when [`Self::unaudited`] is not zero.
    pub fn error(&self) -> Option<Error> {
        let n = self.unaudited();
        (n > 0).then(|| {
            Error::Common(vitalsink_common::Error::Audit(format!(
                "{n} action(s) of this run have no audit entry on {} (chunks dropped: the next \
                 run appends their entries)",
                self.map_shard.name
            )))
        })
    }
}
