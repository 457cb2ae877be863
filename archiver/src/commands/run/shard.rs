//! One shard's part of a run ([`Runner::run_once`]): its advisory lock, its aged chunks one
//! after the other, each chunk's late duplicates dropped first, then exported, verified and
//! dropped under a [`Guard`], the previous chunk's drop overlapping the next export.

use std::sync::Arc;
use vitalsink_common::db::Shard;

use super::Report;
use crate::error::Result;
use crate::export::catalog::{self, Chunk};
use crate::export::dedup::{self, Archived};
use crate::progress::Progress;
use crate::runner::{held, try_lock_shard, unlock_shard, LockSession, Runner};
use crate::state::attempt::{ChunkJob, Outcome};
use crate::state::audit::DropTrail;
use crate::state::guard::Guard;
use crate::state::log::{self, LogRow};
use crate::state::manifest;

/// Connections reading one chunk when `shard_concurrency` of `shards` shards are archived
/// at once: the cores ([`crate::export::readers::max_readers`]) shared among the chunks read
/// at once, at least 1. More COPY streams than cores only add context switches and a merge of
/// more sorted runs (measured in the growth benchmark: 2 shards at once on 2 cores read
/// 0.93× DuckDB's rate with 2 connections per chunk).
fn readers_per_chunk(shard_concurrency: usize, shards: usize) -> usize {
    let at_once = shard_concurrency.min(shards).max(1);
    (crate::export::readers::max_readers() / at_once).max(1)
}

/// The guard to export the next chunk on (with its index) and the one the previous chunk's
/// drop runs on (index `dropping`): different guards, or no export guard when there is only
/// the one the drop needs.
fn split(
    guards: &mut [Guard],
    dropping: Option<usize>,
) -> (Option<(usize, &mut Guard)>, Option<&mut Guard>) {
    let (mut export, mut drop) = (None, None);
    for (i, g) in guards.iter_mut().enumerate() {
        if Some(i) == dropping {
            drop = Some(g);
        } else if export.is_none() {
            export = Some((i, g));
        }
    }
    (export, drop)
}

/// Counts one chunk's outcome in `report` and the metrics; a failure is logged (the chunk
/// stays in the database).
fn tally(shard: &str, chunk: &Chunk, res: Result<Outcome>, report: &mut Report) {
    match res {
        Ok(o) => {
            crate::metrics::chunk(shard, "archived");
            report.archived += 1;
            report.rows += o.rows;
            report.bytes += o.bytes;
        }
        Err(e) => {
            tracing::error!(shard, chunk = %chunk.name, error = %e, "chunk not archived; it stays in the database");
            crate::metrics::chunk(shard, "failed");
            report.failed += 1;
        }
    }
}

/// The archive's live objects for [`dedup`], read once per run by the first shard that needs
/// them and shared by the others.
pub(super) type LateCheck = Arc<tokio::sync::OnceCell<Archived>>;

impl Runner {
    pub(super) async fn shard(
        &self,
        shard: &Shard,
        run_id: &str,
        late: &LateCheck,
        trail: Option<&DropTrail>,
        report: &mut Report,
    ) -> Result<()> {
        let version = self.migrate(shard).await?;
        let mut client = shard.client().await?;
        let session = LockSession::open(shard).await?;
        if !try_lock_shard(session.client(&client), &shard.name).await? {
            tracing::warn!(shard = %shard.name, "another archiver is working on this shard; skipped");
            crate::metrics::chunk(&shard.name, "busy");
            report.busy_shards += 1;
            return Ok(());
        }
        let res = self
            .shard_locked(shard, &mut client, version, run_id, late, trail, report)
            .await;
        if let Some(t) = trail {
            // Under the shard's lock: drops of this run whose entry failed, and of earlier
            // runs that stopped between a drop and its entry.
            t.finish_shard(&client, &shard.name).await;
        }
        unlock_shard(session.client(&client), &shard.name).await;
        res
    }

    #[allow(clippy::too_many_arguments)]
    async fn shard_locked(
        &self,
        shard: &Shard,
        client: &mut tokio_postgres::Client,
        version: i32,
        run_id: &str,
        late: &LateCheck,
        trail: Option<&DropTrail>,
        report: &mut Report,
    ) -> Result<()> {
        let name = shard.name.as_str();
        manifest::mirror_pending(&self.archive, &*client, name).await?;
        let windows = log::restored_windows(&*client, name).await?;
        let chunks = catalog::aged_chunks(&*client, name, self.cfg.archive.older_than).await?;
        let total: i64 = chunks.iter().map(|c| c.est_rows.max(0)).sum();
        let progress = Progress::new(total as u64, name);
        let job = ChunkJob {
            shard: name,
            db_schema_version: version,
            run_id,
            archive: &self.archive,
            cfg: &self.cfg.archive,
            limiter: &self.limiter,
            progress: &progress,
            pool: Some(&shard.pool),
            readers: readers_per_chunk(self.cfg.archive.shard_concurrency, self.shards.len()),
            unmarked: Default::default(),
            trail,
        };
        tracing::info!(shard = name, chunks = chunks.len(), "aged chunks found");
        let (held_back, aged): (Vec<&Chunk>, Vec<&Chunk>) =
            chunks.iter().partition(|c| held(c, &windows));
        for c in &held_back {
            tracing::info!(shard = name, chunk = %c.name, "held: a restore brought rows of this range back");
            crate::metrics::chunk(name, "held");
        }
        report.held += held_back.len();
        if shard.pool.status().max_size < 2 {
            // `database.pool_size = 1`: one chunk after the other on the one connection.
            for chunk in aged {
                let res = match self.drop_duplicates(late, client, name, chunk).await {
                    Ok(n) => {
                        report.duplicates += n;
                        if let Some(t) = trail {
                            t.duplicates(name, chunk, n);
                        }
                        job.archive(client, chunk).await
                    }
                    Err(e) => Err(e),
                };
                tally(name, chunk, res, report);
            }
        } else {
            // The job's connection, one or two guards and the helper readers, all from the
            // pool: two guards only when they leave the readers their helpers.
            let n = if shard.pool.status().max_size >= 2 + job.readers {
                2
            } else {
                1
            };
            let mut guards = Vec::with_capacity(n);
            for _ in 0..n {
                guards.push(Guard::new(shard.client().await?));
            }
            // The chunk verified last, waiting for its drop, and the guard it was exported on
            // (or, exported without one, the guard its drop runs on).
            let mut pending: Option<(&Chunk, LogRow, usize)> = None;
            for chunk in aged {
                let previous = pending.take();
                // Committed before the export's snapshot and SHARE lock (the previous chunk's
                // drop waits meanwhile; nothing to do for a chunk no object overlaps).
                let deduped = match self.drop_duplicates(late, client, name, chunk).await {
                    Ok(n) => {
                        report.duplicates += n;
                        if let Some(t) = trail {
                            t.duplicates(name, chunk, n);
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                let (exporting, dropping) = split(&mut guards, previous.as_ref().map(|p| p.2));
                let at = exporting.as_ref().map_or(0, |(i, _)| *i);
                let drop_previous = async {
                    match (previous, dropping) {
                        (Some((ch, v, _)), Some(g)) => {
                            Some((ch, job.drop_guarded(g, ch, &v, None).await))
                        }
                        _ => None,
                    }
                };
                let guard = exporting.map(|(_, g)| g);
                let c: &tokio_postgres::Client = client;
                let export_next = async {
                    deduped?;
                    job.export_verified(c, guard, chunk).await
                };
                let (next, dropped) = tokio::join!(export_next, drop_previous);
                if let Some((ch, res)) = dropped {
                    tally(name, ch, res, report);
                }
                match next {
                    Ok(v) => pending = Some((chunk, v, at)),
                    Err(e) => tally(name, chunk, Err(e), report),
                }
            }
            // The last drop has nothing to overlap: it is over once its commit is, and the
            // job's connection, idle now, looks for that (state::commit).
            if let Some((ch, v, at)) = pending {
                if at < guards.len() {
                    let mut g = guards.swap_remove(at);
                    let res = job.drop_guarded(&mut g, ch, &v, Some(&*client)).await;
                    // Its connection may still owe the COMMIT's answer: not back to the pool.
                    g.retire();
                    tally(name, ch, res, report);
                }
            }
        }
        // What the last drop left unmarked: its own `dropped` row, a failure's rows.
        job.mark_mirrored(&*client).await;
        progress.finish();
        Ok(())
    }

    /// Drops from `chunk` the readings the archive already holds ([`dedup::drop_archived`]),
    /// reading the archive's live objects first if no shard has in this run.
    ///
    /// # Errors
    /// As [`dedup::drop_archived`] and [`Archived::load`]: the chunk is not exported then.
    async fn drop_duplicates(
        &self,
        late: &LateCheck,
        client: &tokio_postgres::Client,
        shard: &str,
        chunk: &Chunk,
    ) -> Result<u64> {
        let archived = late
            .get_or_try_init(|| Archived::load(&self.archive, self.shards.first()))
            .await?;
        dedup::drop_archived(client, shard, &self.archive, archived, chunk).await
    }
}
