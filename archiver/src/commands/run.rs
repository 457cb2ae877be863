//! `run`: every shard, every chunk older than the window ([`Runner::run_once`], and
//! [`Runner::run_every`] for the daemon; the working set itself is [`crate::runner`]'s).
//!
//! Up to `archive.shard_concurrency` shards are archived at once, each on a task of its own;
//! they share the process's rate limit (`archive.rows_per_second`); one shard's part is in
//! `run/shard.rs`. On a shard, chunk k's drop (a transaction whose commit waits on the shard's
//! disk: 0.1–0.3 s a chunk in the growth benchmark) runs while chunk k+1 is exported and
//! verified, so at most one chunk per shard waits for its drop. Each chunk is exported under a
//! [`crate::state::guard::Guard`] (its SHARE lock, held until its
//! drop, which then needs no re-count of the chunk): two guard connections take turns, one
//! holding chunk k until its drop while the other takes chunk k+1. They come from the shard's
//! pool (`database.pool_size`, default 4) with the job's connection and the chunk's helper
//! readers: when two guards and the helpers do not fit, there is one guard, which the previous
//! chunk's drop always has in use when the next export starts, so only a shard's first chunk
//! is exported under its lock and the others are re-checked at their drops; with a pool of 1,
//! chunks go one after the other on the one connection, each re-checked.
//! On each shard a session advisory lock keeps two archivers (an overlapping cron start) from
//! working on the same shard; the second skips it (held by the job's connection, or by a
//! session of its own on `database.direct_urls.<shard>` behind a transaction pooler:
//! README, "PgBouncer"). Before anything else the shard's log rows
//! not yet in the manifest are mirrored. A shard that fails counts as one failure and does not
//! stop the others; the run's [`Report`] adds the shards up in configuration order.
//!
//! Before a chunk is exported, the readings of it that the archive already holds (a resend
//! that came after its day was archived) are dropped from it ([`crate::export::dedup`]; the
//! archive's live objects are read from the manifest once per run, when a chunk is first about
//! to be exported), and counted as the report's `duplicates`.
//!
//! Every chunk dropped gets one audit entry on the map shard (`archive.drop`, with the reason
//! of `run --reason` or "scheduled archiving: chunks older than …"; [`crate::state::audit`]),
//! appended right after its drop commits, and recovered by the sweep at the end of the
//! shard's run when that failed or a crash came in between. At the end of every run (each
//! round of the daemon) the trail's new entries are copied into the archive
//! ([`crate::trail::copy_new`]; a failure is a warning, the next round copies them).

use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use vitalsink_common::observe::{self, Readiness};

use crate::error::{Error, Result};
use crate::runner::Runner;
use crate::state::audit::DropTrail;

mod shard;
use shard::LateCheck;

/// Totals of one run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Report {
    /// Chunks archived and dropped.
    pub archived: usize,
    /// Chunks that failed (left in the database).
    pub failed: usize,
    /// Chunks held back because a restore brought rows of their range back.
    pub held: usize,
    /// Shards skipped because another archiver holds them.
    pub busy_shards: usize,
    /// Rows moved.
    pub rows: u64,
    /// Parquet bytes of the archived chunks.
    pub bytes: u64,
    /// Readings dropped from chunks before their export because the archive already held
    /// them (late resends, [`crate::export::dedup`]).
    pub duplicates: u64,
    /// Actions of the run left without their audit entry (the map shard refused or could not
    /// be reached; the next run appends the entries of dropped chunks). Not zero: the run
    /// fails.
    pub unaudited: usize,
}

impl Report {
    /// Adds another (shard's) report to this one.
    fn add(&mut self, o: &Report) {
        self.archived += o.archived;
        self.failed += o.failed;
        self.held += o.held;
        self.busy_shards += o.busy_shards;
        self.rows += o.rows;
        self.bytes += o.bytes;
        self.duplicates += o.duplicates;
        self.unaudited += o.unaudited;
    }
}

/// What one shard's task of a run returns: its index in the shard list, the report of what it
/// did (also when it stopped early) and how it ended.
type ShardDone = (usize, Report, Result<()>);

impl Runner {
    /// Archives every aged chunk of every shard once, up to `archive.shard_concurrency`
    /// shards at a time, each on a task of its own. Dropping the returned future (the
    /// daemon's shutdown) aborts every shard's task; what they left is resumed by the next run
    /// from the archive log.
    ///
    /// # Errors
    /// [`Error::ChunksFailed`] when some chunks failed (the others are archived); a shard
    /// that cannot be reached, or whose task panicked, counts as one failure and the other
    /// shards go on. Before any shard is touched: the shard list disagrees with the shard
    /// map, or the map shard cannot be read ([`Runner::check_shard_map`]).
    /// [`vitalsink_common::Error::Audit`] when chunks were archived but some audit entries
    /// could not be appended ([`Report::unaudited`]).
    pub async fn run_once(&self) -> Result<Report> {
        self.check_shard_map().await?;
        let trail: Option<Arc<DropTrail>> = self
            .shards
            .first()
            .map(|m| Arc::new(DropTrail::new(m.clone(), self.run_reason())));
        let run_id: Arc<str> = crate::storage::layout::new_attempt().into();
        let at_once = self
            .cfg
            .archive
            .shard_concurrency
            .clamp(1, self.shards.len().max(1));
        tracing::info!(%run_id, root = %self.archive.root, older_than = %humantime::format_duration(self.cfg.archive.older_than), shards_at_once = at_once, "archive run");
        let mut done: Vec<Option<(Report, Result<()>)>> = Vec::new();
        done.resize_with(self.shards.len(), || None);
        let mut tasks: JoinSet<ShardDone> = JoinSet::new();
        let mut index_of = std::collections::HashMap::new();
        let mut next = 0;
        let late = LateCheck::default();
        loop {
            while tasks.len() < at_once && next < self.shards.len() {
                let (runner, run_id, i, late) = (self.clone(), run_id.clone(), next, late.clone());
                let trail = trail.clone();
                let handle = tasks.spawn(async move {
                    let mut report = Report::default();
                    let res = runner
                        .shard(
                            &runner.shards[i],
                            &run_id,
                            &late,
                            trail.as_deref(),
                            &mut report,
                        )
                        .await;
                    (i, report, res)
                });
                index_of.insert(handle.id(), i);
                next += 1;
            }
            let Some(joined) = tasks.join_next_with_id().await else {
                break;
            };
            let (i, report, res) = match joined {
                Ok((_, d)) => d,
                Err(e) => {
                    // A panic (an abort only comes from dropping the JoinSet, which ends the run).
                    let Some(&i) = index_of.get(&e.id()) else {
                        continue;
                    };
                    let shard = self.shards[i].name.clone();
                    let err = Error::ShardTask {
                        shard,
                        message: e.to_string(),
                    };
                    (i, Report::default(), Err(err))
                }
            };
            let name = &self.shards[i].name;
            match &res {
                Ok(()) => tracing::info!(shard = %name, ?report, "shard done"),
                Err(e) => tracing::error!(shard = %name, error = %e, ?report, "shard failed"),
            }
            done[i] = Some((report, res));
        }
        let mut report = Report::default();
        for (r, res) in done.iter().flatten() {
            report.add(r);
            if res.is_err() {
                report.failed += 1;
            }
        }
        report.unaudited = trail.as_ref().map_or(0, |t| t.unaudited());
        self.copy_trail().await;
        tracing::info!(?report, "archive run done");
        if report.failed > 0 {
            return Err(Error::ChunksFailed(report.failed));
        }
        if let Some(e) = trail.as_ref().and_then(|t| t.error()) {
            return Err(e);
        }
        crate::metrics::run_succeeded();
        Ok(report)
    }

    /// Runs [`Self::run_once`] every `every` until `shutdown`, serving metrics and health.
    /// A failed run is logged and retried at the next tick.
    ///
    /// # Errors
    /// Only when the metrics port cannot be bound.
    pub async fn run_every(&self, every: Duration, shutdown: CancellationToken) -> Result<()> {
        let ready = Readiness::new("first run not finished");
        observe::serve(
            self.cfg.observability.listen_or(crate::DEFAULT_LISTEN),
            observe::install_recorder(),
            ready.clone(),
            shutdown.clone(),
        )
        .await?;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let res = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.run_once() => r,
            };
            match res {
                Ok(_) => ready.set(None),
                Err(e) => {
                    tracing::error!(error = %e, "archive run failed; next at the next interval");
                    ready.set(Some(e.to_string()));
                }
            }
        }
        tracing::info!("archiver stopping");
        Ok(())
    }
}
