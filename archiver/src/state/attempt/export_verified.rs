//! The first half of a chunk's archiving: resume an earlier attempt or export a new object,
//! read it back and verify it ([`ChunkJob::export_verified`]); the second half, the drop, is
//! in `drop.rs`.

use object_store::path::Path;
use std::collections::BTreeMap;
use std::time::Duration;

use super::ChunkJob;
use crate::error::{Error, Result};
use crate::export::catalog::Chunk;
use crate::export::checksum::Algorithm;
use crate::export::{self, Target};
use crate::fault::{self, CrashPoint};
use crate::state::guard::Guard;
use crate::state::log::{self, LogRow, Step};
use crate::storage::layout;
use crate::storage::readback;

impl ChunkJob<'_> {
    /// The first half of archiving `chunk`: resumes an earlier attempt or exports a new
    /// object, reads it back and verifies it. Returns the `verified` log row, which
    /// [`Self::drop_guarded`] takes with the same `guard`, or [`Self::drop_verified`] on any
    /// connection when there is none. A new export takes the chunk's SHARE lock on `guard`
    /// first ([`Guard::lock`]); on failure the guard's transaction is ended.
    ///
    /// # Errors
    /// Any failure; the chunk then stays in the database and the attempt is logged as
    /// failed (and discarded when its object is unusable).
    pub async fn export_verified(
        &self,
        c: &tokio_postgres::Client,
        mut guard: Option<&mut Guard>,
        chunk: &Chunk,
    ) -> Result<LogRow> {
        let res = self
            .export_verified_in(c, guard.as_deref_mut(), chunk)
            .await;
        if res.is_err() {
            if let Some(g) = guard {
                g.release(self.shard).await;
            }
        }
        res
    }

    async fn export_verified_in(
        &self,
        c: &tokio_postgres::Client,
        guard: Option<&mut Guard>,
        chunk: &Chunk,
    ) -> Result<LogRow> {
        let mut adopted = self.resume(c, chunk).await?;
        if let Some(written) = adopted.take_if(|r| r.step == Step::Written) {
            match self.verify(c, chunk, &written).await {
                Ok(v) => adopted = Some(v),
                Err(e) => {
                    self.fail(c, &written, &e).await;
                    self.discard(c, &written, "adopted object failed verification")
                        .await?;
                }
            }
        }
        let verified = match adopted {
            Some(v) => v,
            None => {
                let written = self.export(c, guard, chunk).await?;
                match self.verify(c, chunk, &written).await {
                    Ok(v) => v,
                    Err(e) => {
                        self.fail(c, &written, &e).await;
                        self.discard(c, &written, "failed verification").await?;
                        return Err(e);
                    }
                }
            }
        };
        fault::maybe_crash(CrashPoint::AfterVerify).await;
        Ok(verified)
    }

    /// Looks at the chunk's earlier attempts: returns the one to adopt (newest `written` or
    /// `verified`), after discarding every other open one.
    async fn resume(&self, c: &tokio_postgres::Client, chunk: &Chunk) -> Result<Option<LogRow>> {
        let rows = log::of_chunk(c, self.shard, chunk).await?;
        let mut state: BTreeMap<String, LogRow> = BTreeMap::new();
        for r in rows.into_iter().filter(|r| r.step != Step::Failed) {
            state.insert(r.attempt.clone(), r);
        }
        let mut open: Vec<LogRow> = state
            .into_values()
            .filter(|r| matches!(r.step, Step::Planned | Step::Written | Step::Verified))
            .collect();
        open.sort_by_key(|r| r.id);
        let adopt_id = open
            .iter()
            .filter(|r| matches!(r.step, Step::Written | Step::Verified))
            .map(|r| r.id)
            .max();
        let mut adopted = None;
        for r in open {
            if Some(r.id) == adopt_id {
                tracing::info!(shard = self.shard, chunk = %chunk.name, attempt = %r.attempt, step = r.step.as_str(), "resuming an earlier attempt");
                adopted = Some(r);
            } else {
                self.discard(c, &r, "unfinished attempt of an earlier run")
                    .await?;
            }
        }
        Ok(adopted)
    }

    /// Up to `readers` − 1 idle or new connections from the pool, for reading a chunk in
    /// parallel; fewer (none) when the pool has no free slot.
    async fn helpers(&self) -> Vec<deadpool_postgres::Object> {
        let Some(pool) = self.pool else {
            return Vec::new();
        };
        let now = deadpool_postgres::Timeouts {
            wait: Some(Duration::ZERO),
            create: Some(Duration::from_secs(10)),
            recycle: Some(Duration::from_secs(10)),
        };
        let mut got = Vec::new();
        for _ in 1..self.readers {
            match pool.timeout_get(&now).await {
                Ok(c) => got.push(c),
                Err(e) => {
                    tracing::debug!(shard = self.shard, error = %e, "no helper connection");
                    break;
                }
            }
        }
        got
    }

    /// A new attempt: logs `planned`, takes the chunk's SHARE lock on `guard` (when there is
    /// one), exports. Returns the `written` row, not logged yet (id 0): [`Self::verify`] logs
    /// it with `verified`, in one commit.
    async fn export(
        &self,
        c: &tokio_postgres::Client,
        guard: Option<&mut Guard>,
        chunk: &Chunk,
    ) -> Result<LogRow> {
        let attempt = layout::new_attempt();
        let path = layout::data_object(self.shard, &chunk.name, chunk.range_start, &attempt);
        let mut planned = LogRow::new(self.run_id, &attempt, chunk, Step::Planned);
        planned.object_path = Some(path.to_string());
        let planned = self.record(c, &planned).await?;
        // Before the export's snapshot (taken by its first query), so that the snapshot has
        // every row the chunk holds until the guard's transaction drops it.
        if let Some(g) = guard {
            g.lock(self.shard, chunk).await;
        }
        self.progress
            .label(format!("{} {}", self.shard, chunk.name));
        let target = Target {
            shard: self.shard,
            chunk,
            path: path.clone(),
            attempt: &attempt,
            db_schema_version: self.db_schema_version,
        };
        let helpers = self.helpers().await;
        let helper_refs: Vec<&tokio_postgres::Client> = helpers.iter().map(|h| &***h).collect();
        let ex = match export::export(
            c,
            &helper_refs,
            self.archive,
            self.cfg,
            &target,
            self.limiter,
            self.progress,
        )
        .await
        {
            Ok(ex) => ex,
            Err(e) => {
                self.fail(c, &planned, &e).await;
                self.discard(c, &planned, "export failed").await?;
                return Err(e);
            }
        };
        fault::maybe_crash(CrashPoint::AfterUpload).await;
        let micros = |t: Option<i64>| t.and_then(chrono::DateTime::from_timestamp_micros);
        let mut written = planned.next(Step::Written);
        written.bytes = Some(ex.bytes as i64);
        written.rows = Some(ex.summary.rows as i64);
        written.checksum = Some(ex.summary.checksum.clone());
        written.min_ts = micros(ex.summary.min_ts);
        written.max_ts = micros(ex.summary.max_ts);
        written.source_ranges = Some(ex.summary.source_ranges.clone());
        crate::metrics::exported(self.shard, ex.summary.rows, ex.bytes, ex.took);
        tracing::info!(
            shard = self.shard, chunk = %chunk.name, object = %path, rows = ex.summary.rows,
            bytes = ex.bytes, secs = ex.took.as_secs_f64(), "exported"
        );
        Ok(written)
    }

    /// Reads the object back and compares it with what the export recorded (rows, checksum,
    /// ts range, size): logs `verified` when they match. A `written` row not logged yet (id
    /// 0, a new export) is logged with it in one transaction: until that commit the attempt is
    /// `planned`, and a crash before it has the next run delete the object and export again,
    /// as a crash before the upload ended does.
    async fn verify(
        &self,
        c: &tokio_postgres::Client,
        chunk: &Chunk,
        written: &LogRow,
    ) -> Result<LogRow> {
        let path = written.object_path.clone().unwrap_or_default();
        let rb = readback::read(
            self.archive,
            &Path::from(path.as_str()),
            Algorithm::of(written.checksum.as_deref()),
        )
        .await?;
        readback::compare(&path, &rb, written)?;
        // The chunk itself is re-checked against the object once, under its lock, just
        // before the drop (`drop_chunk`): a check here as well would scan it twice.
        let mut v = written.next(Step::Verified);
        v.run_id = self.run_id.to_string();
        let v = if written.id == 0 {
            let mut logged = self.record_all(c, &[written.clone(), v]).await?;
            logged.pop().ok_or_else(|| Error::Verify {
                object: path.clone(),
                message: "the verified row was not logged".into(),
            })?
        } else {
            self.record(c, &v).await?
        };
        tracing::info!(shard = self.shard, chunk = %chunk.name, object = %path, rows = rb.summary.rows, "verified");
        Ok(v)
    }
}
