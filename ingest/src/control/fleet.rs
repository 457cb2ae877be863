//! The shards a worker writes to: one [`ShardWriter`] per shard of the routing's union list.
//! An online shard move ([`crate::data::route`]) appends a shard to it, or — once a removal
//! has finished — takes the last one away, while the worker runs; with jump hash every change
//! of the list is at its end (`schemas/ROUTING.md`).
//!
//! A shard the configuration does not list (the one being added, for a worker configured
//! with the old list, or the one being removed, for a worker configured with the new list) is
//! reached through the connection string the move recorded in the shard map.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vitalsink_common::config::{DatabaseConfig, ShardConfig};
use vitalsink_common::db::Shard;
use vitalsink_common::retry::Class;
use vitalsink_common::shardmap::Routing;

use vitalsink_common::retry::Backoff;

use crate::data::batch::Batch;
use crate::data::guard::Stale;
use crate::data::pipeline::Pipeline;
use crate::data::writer::{ShardProgress, ShardWriter};
use crate::fatal::Fatal;

/// Batches queued per shard writer beyond the one it is writing.
const WRITER_QUEUE: usize = 2;

/// The shards written now, shared with the rebalance callback (resume offsets) and the shard
/// probe (`/readyz`).
pub type LiveShards = Arc<RwLock<Vec<Shard>>>;

/// A copy of the live list.
pub fn snapshot(live: &LiveShards) -> Vec<Shard> {
    live.read().map(|g| g.clone()).unwrap_or_default()
}

/// Builds [`Shard`]s for a routing's union list.
#[derive(Debug, Clone)]
pub struct Resolver {
    /// The configuration's `[[shards]]`.
    pub configured: Vec<ShardConfig>,
    /// Pool settings.
    pub db: DatabaseConfig,
}

impl Resolver {
    /// The shards of `routing.union()`, in order: the one of `live` at the same index and
    /// name (its pool kept), else the configured one of that name, else the move's target.
    ///
    /// # Errors
    /// [`vitalsink_common::Error::ShardMap`] when a shard is neither configured nor the
    /// move's target; [`vitalsink_common::Error::Config`] when its connection string does
    /// not parse.
    pub fn resolve(
        &self,
        routing: &Routing,
        live: &[Shard],
    ) -> vitalsink_common::Result<Vec<Shard>> {
        routing
            .union()
            .iter()
            .enumerate()
            .map(|(i, name)| {
                if let Some(s) = live.get(i).filter(|s| &s.name == name) {
                    return Ok(s.clone());
                }
                let cfg = self
                    .configured
                    .iter()
                    .find(|c| &c.name == name)
                    .or(routing
                        .pending
                        .as_ref()
                        .map(|m| &m.target)
                        .filter(|t| &t.name == name && !t.url.is_empty()))
                    .ok_or_else(|| {
                        vitalsink_common::Error::ShardMap(format!(
                            "shard {name} of the shard map (epoch {} [{}]) is neither configured \
                             nor the target of a shard move in progress",
                            routing.latest_epoch(),
                            routing.union().join(", ")
                        ))
                    })?;
                Shard::new(i, cfg, &self.db)
            })
            .collect()
    }
}

/// What every shard writer shares.
#[derive(Debug, Clone)]
pub struct WriterTemplate {
    /// Consumer group, the key of the offsets.
    pub group: String,
    /// Topic, the key of the offsets.
    pub topic: String,
    /// Retry delays.
    pub backoff: Backoff,
    /// Where a permanent error is raised.
    pub fatal: Fatal,
    /// Cancelled when the shutdown deadline has passed.
    pub abort: CancellationToken,
    /// Where a writer reports a stale batch ([`crate::data::guard`]).
    pub stale: mpsc::UnboundedSender<Stale>,
}

/// The writers, one per live shard.
pub struct Fleet {
    /// The shards written now.
    pub live: LiveShards,
    /// Builds shards of a new routing.
    pub resolver: Arc<Resolver>,
    /// Per shard, the offsets its committed batches reached.
    pub progress: ShardProgress,
    template: WriterTemplate,
    /// Per live shard, the token that gives up its writer's retries when it is retired.
    retire: Vec<CancellationToken>,
    handles: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Starts a writer for each of `shards`; returns the fleet and their senders, in order.
    pub fn start(
        shards: Vec<Shard>,
        resolver: Arc<Resolver>,
        template: WriterTemplate,
    ) -> (Self, Vec<mpsc::Sender<Batch>>) {
        let mut fleet = Self {
            live: Arc::new(RwLock::new(Vec::new())),
            resolver,
            progress: ShardProgress::new(0),
            template,
            retire: Vec::new(),
            handles: Vec::new(),
        };
        let senders = shards.into_iter().map(|s| fleet.spawn(s)).collect();
        (fleet, senders)
    }

    fn spawn(&mut self, shard: Shard) -> mpsc::Sender<Batch> {
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let retire = self.template.abort.child_token();
        let n = {
            let mut g = match self.live.write() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            g.push(shard.clone());
            g.len()
        };
        self.progress.resize(n);
        let w = ShardWriter {
            shard,
            group: self.template.group.clone(),
            topic: self.template.topic.clone(),
            backoff: self.template.backoff,
            progress: self.progress.clone(),
            fatal: self.template.fatal.clone(),
            abort: retire.clone(),
            stale: self.template.stale.clone(),
        };
        self.retire.push(retire);
        self.handles.push(tokio::spawn(w.run(rx)));
        tx
    }

    /// Makes the pipeline feed exactly `shards` (resolved from `routing` by
    /// [`Resolver::resolve`]) and route by `routing`: appends writers for new shards at the
    /// end, or retires the last ones (after sending them what they have buffered).
    ///
    /// # Errors
    /// A message when the list changed other than at its end (jump hash allows no other
    /// change; the worker must stop).
    pub async fn apply(
        &mut self,
        routing: Routing,
        shards: Vec<Shard>,
        pipeline: &mut Pipeline,
    ) -> Result<(), String> {
        let have: Vec<String> = pipeline.shard_names().to_vec();
        let want: Vec<String> = shards.iter().map(|s| s.name.clone()).collect();
        let common = have.len().min(want.len());
        if have[..common] != want[..common] {
            return Err(format!(
                "the shard map routes over [{}] where this worker writes [{}]: a list may only \
                 change at its end",
                want.join(", "),
                have.join(", ")
            ));
        }
        for s in shards.into_iter().skip(have.len()) {
            tracing::info!(shard = %s.name, epoch = routing.latest_epoch(), "writing to a shard added by a move");
            let name = s.name.clone();
            let tx = self.spawn(s);
            pipeline.grow(name, tx);
        }
        while pipeline.shard_names().len() > want.len() {
            pipeline.retire_last().await;
            let name = {
                let mut g = match self.live.write() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                g.pop().map(|s| s.name)
            };
            if let Some(t) = self.retire.pop() {
                // Nothing routes to it any more; what its writer still retries is an
                // offsets-only batch.
                t.cancel();
            }
            self.progress.resize(pipeline.shard_names().len());
            tracing::info!(shard = ?name, "stopped writing to a shard a move removed");
        }
        pipeline.set_routing(routing)
    }

    /// Waits for every writer to finish (their channels are closed by
    /// [`Pipeline::close`]).
    pub async fn join(&mut self) {
        for h in std::mem::take(&mut self.handles) {
            let _ = h.await;
        }
    }
}

/// Runs `op` until it succeeds, retrying transient errors with `backoff`; `None` when
/// `stop` is cancelled meanwhile or the error is permanent (then raised to `fatal` as
/// `stage`).
pub async fn with_retry<T, F, Fut>(
    stage: &'static str,
    backoff: Backoff,
    stop: &CancellationToken,
    fatal: &Fatal,
    mut op: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = vitalsink_common::Result<T>>,
{
    let mut attempt = 0u32;
    loop {
        match op().await {
            Ok(v) => return Some(v),
            Err(e) if e.class() == Class::Permanent => {
                fatal.raise(stage, &e.kind(), &e);
                return None;
            }
            Err(e) => {
                attempt += 1;
                tracing::warn!(stage, error = %e, attempt, "retrying");
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(backoff.delay(attempt).max(Duration::from_millis(50))) => {}
                }
            }
        }
    }
}
