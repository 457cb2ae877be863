//! One chunk through `planned → written → verified → dropped`, resuming whatever a crashed
//! run left.
//!
//! The state of an attempt is its newest log row other than `failed` (a `failed` row only
//! records an error). On entry, every attempt of the chunk that is still open (`planned`,
//! `written` or `verified`) is looked at: the newest one that got to `written` or `verified`
//! is adopted (re-verified if only written), every other one is discarded: its object is
//! deleted (it may be complete, partial or absent) and `discarded` logged. So a chunk never
//! has two live objects, and the next step always starts from a known object.
//!
//! Crash safety: a chunk's rows leave the database only in the transaction that drops it,
//! which locks the chunk (ACCESS EXCLUSIVE) and commits the `dropped` row with the drop.
//! Before that commit every row is in the database; after it, in an object that was read back
//! and matched. That the chunk still holds exactly the exported rows is known one of two ways:
//! - a new export under a [`Guard`](crate::state::guard::Guard): the drop's transaction is the guard's, which took the
//!   chunk's SHARE lock before the export's snapshot, so no row can have changed since;
//! - otherwise (an attempt adopted from an earlier run, no guard, or the SHARE lock not
//!   granted): the drop re-checks the chunk's count and ts range against the verified
//!   object's under its lock.
//!
//! A new attempt costs the shard three commits, each waiting for a WAL flush: `planned`
//! before the upload (so that a crash finds the object), `written` with
//! `verified` in one transaction after the read-back matched (a crash before it leaves the
//! attempt `planned`: the object is deleted and exported again), and the drop's, which also
//! marks the rows' manifest entries mirrored ([`ChunkJob::unmarked`]).
//!
//! Each drop's audit entry is appended to the trail on the map shard right after the drop
//! commits ([`crate::state::audit`]).
//!
//! The locks and the drop go through the SECURITY DEFINER functions `vitalsink_lock_chunk`,
//! `vitalsink_drop_chunk` (migration 9) and `vitalsink_share_lock_chunk` (migration 10;
//! schemas/ROLES.md), so the archiver's role needs neither table ownership nor DELETE.
//!
//! What both halves use (recording, failing and discarding an attempt) is here; the first half
//! (resume, export, verify) is in `attempt/export_verified.rs`, the second, the drop, in
//! `attempt/drop.rs`.

use object_store::path::Path;
use vitalsink_common::config::ArchiveConfig;

use crate::error::{Error, Result};
use crate::export::catalog::Chunk;
use crate::export::ratelimit::RowLimiter;
use crate::progress::Progress;
use crate::state::audit::DropTrail;
use crate::state::log::{self, LogRow, Step};
use crate::state::manifest;
use crate::storage::store::Archive;

mod drop;
mod export_verified;

/// Everything a chunk's archiving needs.
#[derive(Debug)]
pub struct ChunkJob<'a> {
    /// Shard name.
    pub shard: &'a str,
    /// The shard's schema version.
    pub db_schema_version: i32,
    /// This run's id.
    pub run_id: &'a str,
    /// The archive.
    pub archive: &'a Archive,
    /// `[archive]`.
    pub cfg: &'a ArchiveConfig,
    /// Shared export rate limit.
    pub limiter: &'a RowLimiter,
    /// Progress display.
    pub progress: &'a Progress,
    /// The shard's pool, from which an export borrows helper connections to read a chunk in
    /// parallel ([`crate::export::readers`]); `None`: read on the job's connection only.
    pub pool: Option<&'a deadpool_postgres::Pool>,
    /// Connections reading one chunk at most, the job's own included (1 to
    /// [`crate::export::readers::max_readers`]).
    pub readers: usize,
    /// Ids of log rows whose manifest entries are written but which are not marked
    /// `in_manifest` yet: the next drop's transaction marks them, and [`Self::mark_mirrored`]
    /// what is left (start empty). A crash before that, or a drop's transaction that rolls
    /// back, only has the next run write the same entries again ([`manifest::put`]).
    pub unmarked: std::sync::Mutex<Vec<i64>>,
    /// The run's audit trail: each drop's entry is appended right after the drop commits
    /// ([`DropTrail::dropped`]); `None`: no entries (the sweep of a later run appends them).
    pub trail: Option<&'a DropTrail>,
}

/// What archiving a chunk did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    /// Rows moved to the archive and dropped.
    pub rows: u64,
    /// Parquet bytes of the chunk's object.
    pub bytes: u64,
}

impl ChunkJob<'_> {
    /// Logs `row` and writes its manifest entry, leaving the mark to a later transaction
    /// ([`Self::unmarked`]). A failed put is only logged: the row is committed, and the next
    /// [`manifest::mirror_pending`] writes it.
    async fn record(&self, c: &tokio_postgres::Client, row: &LogRow) -> Result<LogRow> {
        let row = log::insert(c, self.shard, row).await?;
        self.put(&row).await;
        Ok(row)
    }

    /// Logs `rows` in one transaction (one commit), then writes their manifest entries as
    /// [`Self::record`] does.
    async fn record_all(&self, c: &tokio_postgres::Client, rows: &[LogRow]) -> Result<Vec<LogRow>> {
        let logged = log::insert_all(c, self.shard, rows).await?;
        for r in &logged {
            self.put(r).await;
        }
        Ok(logged)
    }

    /// Writes the manifest entry of the committed `row` and adds it to [`Self::unmarked`].
    async fn put(&self, row: &LogRow) {
        match manifest::put(self.archive, self.shard, row).await {
            Ok(()) => self.unmarked_ids().push(row.id),
            Err(e) => {
                tracing::warn!(shard = self.shard, id = row.id, error = %e, "manifest mirror failed; retried next run");
            }
        }
    }

    fn unmarked_ids(&self) -> std::sync::MutexGuard<'_, Vec<i64>> {
        // A panic while the lock was held left a list of ids, which is still right.
        self.unmarked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks the rows of [`Self::unmarked`] mirrored, in the transaction open on `c` (or
    /// a statement of its own). On failure they go back to the list.
    async fn mark_unmarked(&self, c: &impl tokio_postgres::GenericClient) -> Result<()> {
        let ids = std::mem::take(&mut *self.unmarked_ids());
        let res = log::mark_in_manifest(c, self.shard, &ids).await;
        if res.is_err() {
            self.unmarked_ids().extend(ids);
        }
        res
    }

    /// Marks what is left of [`Self::unmarked`] (at the end of a shard's run). A failure is
    /// only logged: the rows are mirrored again next run.
    pub async fn mark_mirrored(&self, c: &tokio_postgres::Client) {
        if let Err(e) = self.mark_unmarked(c).await {
            tracing::warn!(shard = self.shard, error = %e, "marking log rows mirrored failed; mirrored again next run");
        }
    }

    /// Deletes an attempt's object (absent is fine; with the staging files a killed upload to
    /// it left on a local root) and logs `discarded`.
    async fn discard(&self, c: &tokio_postgres::Client, last: &LogRow, why: &str) -> Result<()> {
        if let Some(p) = &last.object_path {
            self.archive.delete(&Path::from(p.as_str())).await?;
        }
        let mut row = last.next(Step::Discarded);
        row.run_id = self.run_id.to_string();
        row.detail = Some(why.to_string());
        self.record(c, &row).await?;
        crate::metrics::discarded(self.shard);
        tracing::info!(shard = self.shard, chunk = %row.chunk_name, attempt = %row.attempt, object = ?row.object_path, why, "discarded attempt");
        Ok(())
    }

    /// Logs `failed` for an attempt (its state does not change).
    async fn fail(&self, c: &tokio_postgres::Client, last: &LogRow, e: &Error) {
        let mut row = last.next(Step::Failed);
        row.run_id = self.run_id.to_string();
        row.detail = Some(e.to_string());
        if let Err(e2) = self.record(c, &row).await {
            tracing::warn!(shard = self.shard, error = %e2, "could not log the failure");
        }
    }

    /// Archives `chunk`: resumes or starts an attempt, verifies, drops
    /// ([`Self::export_verified`], then [`Self::drop_verified`] on the same connection).
    ///
    /// # Errors
    /// Any failure; the chunk then stays in the database and the attempt is logged as
    /// failed (and discarded when its object is unusable).
    pub async fn archive(
        &self,
        client: &mut tokio_postgres::Client,
        chunk: &Chunk,
    ) -> Result<Outcome> {
        let verified = self.export_verified(client, None, chunk).await?;
        self.drop_verified(client, chunk, &verified).await
    }
}
