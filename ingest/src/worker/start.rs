//! Start-up: the metrics endpoint, migrations, the shard map, topics, the participants'
//! statuses, the writers, the map and status watches, the consumer and the pipeline, wired
//! into a [`Worker`] for the consume loop.

use rdkafka::consumer::{Consumer, StreamConsumer};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use vitalsink_common::db::Shard;
use vitalsink_common::kafka::{client_config, dlq_client_config, ensure_topic, ensure_topic_with};
use vitalsink_common::observe::{self, Readiness};
use vitalsink_common::retry::{Backoff, Class};
use vitalsink_common::shardmap::{self, Routing};
use vitalsink_common::{migrate, Config};

use crate::control::fleet::{snapshot, Fleet, LiveShards, Resolver, WriterTemplate};
use crate::control::follow::{spawn_map_watch, Control};
use crate::control::rebalance::{Assignment, IngestContext};
use crate::control::statuses::{self, Refreshed};
use crate::data::batch::BatchLimits;
use crate::data::dlq::DeadLetters;
use crate::data::guard::Stale;
use crate::data::pipeline::Pipeline;
use crate::data::route::Epochs;
use crate::data::writer::ShardProgress;
use crate::error::{Error, Result};
use crate::fatal::Fatal;

/// Where `/metrics`, `/healthz` and `/readyz` are served when `observability.listen` is unset
/// (the archiver's default is 9465, so both run on one host).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// The wired worker: what the consume loop and shutdown work with. Declared in drop order:
/// the control plane and pipeline first, the consumer before its event channel, the tokens
/// last.
pub(super) struct Worker {
    /// Follows the shard map; owns the writers.
    pub(super) ctl: Control,
    /// The data path.
    pub(super) pipeline: Pipeline,
    /// The dead-letter producer.
    pub(super) dlq: Arc<DeadLetters>,
    /// The Kafka consumer, its rebalance callback in [`IngestContext`].
    pub(super) consumer: StreamConsumer<IngestContext>,
    /// Assignment changes from the rebalance callback and the map watch.
    pub(super) events: mpsc::UnboundedReceiver<Assignment>,
    /// Stale batches the writers refused (the loop rewinds).
    pub(super) stale: mpsc::UnboundedReceiver<Stale>,
    /// Shards' changed `participant_status` tables, from the status watch.
    pub(super) refreshed: mpsc::UnboundedReceiver<Refreshed>,
    /// The shard probe's verdict, for `/readyz`.
    pub(super) shards_ok: watch::Receiver<Option<String>>,
    /// The offsets every shard committed, for the progress commit to Kafka.
    pub(super) progress: ShardProgress,
    /// `/readyz`.
    pub(super) ready: Readiness,
    /// Where a permanent error is raised.
    pub(super) fatal: Fatal,
    /// Cancelled by SIGTERM/SIGINT or by a permanent error.
    pub(super) stop: CancellationToken,
    /// Cancelled when the shutdown deadline has passed: writers give up their retries.
    pub(super) abort: CancellationToken,
}

/// Wires the worker; `None` when shut down while the map shard did not answer.
///
/// # Errors
/// As [`super::run`]'s start-up failures.
pub(super) async fn start(
    cfg: &Config,
    shutdown: &CancellationToken,
    abort: CancellationToken,
) -> Result<Option<Worker>> {
    let backoff = Backoff {
        initial: cfg.ingest.retry_initial,
        max: cfg.ingest.retry_max,
    };
    // Cancelled by SIGTERM/SIGINT or by a permanent error.
    let stop = shutdown.child_token();
    let fatal = Fatal::new(stop.clone());
    let shards = Shard::all(&cfg.shards, &cfg.database)?;
    let ready = Readiness::new("starting");
    // Up until SIGTERM, also after a permanent error (the failed state).
    observe::serve(
        cfg.observability.listen_or(DEFAULT_LISTEN),
        observe::install_recorder(),
        ready.clone(),
        shutdown.clone(),
    )
    .await?;

    migrate_with_retry(&shards, cfg, backoff, &stop, &fatal).await?;
    let Some(routing) = shard_map_with_retry(&shards, backoff, &stop, &fatal).await? else {
        return Ok(None);
    };
    // TLS and SASL are checked here, so a refused connection fails the start naming it.
    vitalsink_common::kafka::check_connection(&cfg.kafka).await?;
    ensure_topic(&cfg.kafka, &cfg.kafka.topic, cfg.ingest.topic_partitions).await?;
    ensure_topic_with(
        dlq_client_config(&cfg.kafka),
        &cfg.kafka.dlq_topic,
        cfg.ingest.topic_partitions,
    )
    .await?;

    let resolver = Arc::new(Resolver {
        configured: cfg.shards.clone(),
        db: cfg.database.clone(),
    });
    // Every shard a record may route to: while an online move runs, the longer of its lists.
    let union = resolver.resolve(&routing, &shards)?;
    // Each shard's participants' statuses, before the first record is decided.
    let Some(consents) = statuses::load_all(&union, backoff, &stop, &fatal).await else {
        return match fatal.first() {
            Some(e) => Err(Error::Permanent(e)),
            None => Ok(None),
        };
    };
    let (stale_tx, stale) = mpsc::unbounded_channel();
    let (fleet, senders) = Fleet::start(
        union.clone(),
        resolver.clone(),
        WriterTemplate {
            group: cfg.kafka.group_id.clone(),
            topic: cfg.kafka.topic.clone(),
            backoff,
            fatal: fatal.clone(),
            abort: abort.clone(),
            stale: stale_tx,
        },
    );
    let (refreshed_tx, refreshed) = mpsc::unbounded_channel();
    statuses::spawn_status_watch(
        fleet.live.clone(),
        union
            .iter()
            .zip(&consents)
            .map(|(s, c)| (s.name.clone(), c.version()))
            .collect(),
        refreshed_tx,
        fatal.clone(),
        stop.clone(),
    );
    let progress: ShardProgress = fleet.progress.clone();
    let shards_ok = spawn_shard_probe(fleet.live.clone(), stop.clone());

    let (events_tx, events) = mpsc::unbounded_channel();
    let (routed, routed_rx) = watch::channel(routing.clone());
    spawn_map_watch(
        fleet.live.clone(),
        resolver.clone(),
        cfg.kafka.topic.clone(),
        routed_rx,
        events_tx.clone(),
        fatal.clone(),
        stop.clone(),
    );
    let context = IngestContext {
        live: fleet.live.clone(),
        resolver: resolver.clone(),
        group: cfg.kafka.group_id.clone(),
        topic: cfg.kafka.topic.clone(),
        backoff,
        runtime: tokio::runtime::Handle::current(),
        events: events_tx,
        shutdown: stop.clone(),
        fatal: fatal.clone(),
    };
    let consumer: StreamConsumer<IngestContext> =
        consumer_config(cfg).create_with_context(context)?;
    consumer.subscribe(&[&cfg.kafka.topic])?;
    let dlq = Arc::new(DeadLetters::new(&cfg.kafka, backoff)?);
    let pipeline = Pipeline::new(
        Epochs::new(routing.clone()),
        union.iter().map(|s| s.name.clone()).collect(),
        senders,
        consents,
        cfg.validation.limits(),
        BatchLimits::from(&cfg.ingest),
        // The standing buffers (one per shard, up to a batch each) come out of the budget.
        cfg.ingest
            .buffer_budget_bytes()
            .saturating_sub(cfg.ingest.batch_max_bytes.saturating_mul(union.len())),
        dlq.max_bytes(),
    );
    tracing::info!(topic = %cfg.kafka.topic, group = %cfg.kafka.group_id, shards = union.len(), epoch = routing.base.epoch, pending = ?routing.pending.as_ref().map(|m| m.to.epoch), "ingest running");
    let ctl = Control {
        fleet,
        routed,
        topic: cfg.kafka.topic.clone(),
        group: cfg.kafka.group_id.clone(),
        backoff,
        stop: stop.clone(),
        fatal: fatal.clone(),
    };
    Ok(Some(Worker {
        ctl,
        pipeline,
        dlq,
        consumer,
        events,
        stale,
        refreshed,
        shards_ok,
        progress,
        ready,
        fatal,
        stop,
        abort,
    }))
}

/// The consumer's librdkafka configuration: `cfg.kafka`'s group and session timeout, manual
/// offset storage (offsets are stored only after the shards applied them), and fetch sizes
/// taken from `cfg.ingest`'s memory cap. `kafka.properties` are applied last. Public so that
/// the drain benchmark's broker-only limit consumes exactly like the worker.
pub fn consumer_config(cfg: &Config) -> rdkafka::ClientConfig {
    let session_ms = cfg.kafka.session_timeout.as_millis().max(1000);
    let mut c = client_config(&cfg.kafka);
    c.set("group.id", &cfg.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", session_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (session_ms / 6).max(100).to_string(),
        )
        .set("statistics.interval.ms", "5000")
        .set(
            "queued.max.messages.kbytes",
            cfg.ingest.fetch_queue_kib().to_string(),
        )
        // librdkafka counts only payload bytes against the queue's KiB limit, yet each queued
        // message also costs an op of a few hundred bytes: also cap the queue's message count,
        // at one message per KiB of its budget.
        .set(
            "queued.min.messages",
            cfg.ingest.fetch_queue_kib().to_string(),
        )
        // When a queue threshold is hit, librdkafka postpones the partition's next fetch by
        // this long (default 1000 ms, CONFIGURATION.md): with a queue sized by the memory cap
        // that would leave the worker idle for most of each second.
        .set("fetch.queue.backoff.ms", "10")
        .set("fetch.max.bytes", cfg.ingest.fetch_max_bytes().to_string())
        .set(
            "max.partition.fetch.bytes",
            cfg.ingest.fetch_max_bytes().min(1 << 20).to_string(),
        );
    for (k, v) in &cfg.kafka.properties {
        c.set(k, v);
    }
    c
}

/// Applies the migrations on every shard, retrying transient errors until shutdown.
///
/// # Errors
/// [`Error::Permanent`] when a migration fails in a way retrying cannot fix (permission
/// denied, TimescaleDB missing, a schema newer than this binary).
async fn migrate_with_retry(
    shards: &[Shard],
    cfg: &Config,
    backoff: Backoff,
    shutdown: &CancellationToken,
    fatal: &Fatal,
) -> Result<()> {
    let mut attempt = 0u32;
    while let Err(e) = migrate::migrate_all(shards, &cfg.database).await {
        if e.class() == Class::Permanent {
            fatal.raise("migrate", &e.kind(), &e);
            return Err(Error::Permanent(format!("migrate: {e}")));
        }
        attempt += 1;
        tracing::warn!(error = %e, attempt, "migrations failed; retrying");
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(backoff.delay(attempt).max(Duration::from_millis(200))) => {}
        }
    }
    Ok(())
}

/// Reads (or on a new deployment writes) the shard map and checks the configured shard list
/// against it ([`vitalsink_common::shardmap::verify`]), retrying while the map shard does not
/// answer; `None` when shut down meanwhile.
///
/// # Errors
/// [`Error::Permanent`] when the list disagrees with the map: the worker refuses to write.
async fn shard_map_with_retry(
    shards: &[Shard],
    backoff: Backoff,
    shutdown: &CancellationToken,
    fatal: &Fatal,
) -> Result<Option<Routing>> {
    let mut attempt = 0u32;
    loop {
        match shardmap::verify(shards).await {
            Ok(m) => {
                tracing::info!(epoch = m.base.epoch, shards = %m.base.names(), pending = ?m.pending.as_ref().map(|p| p.to.epoch), "shard map checked");
                return Ok(Some(m));
            }
            Err(e) if e.class() == Class::Permanent => {
                fatal.raise("shard_map", &e.kind(), &e);
                return Err(Error::Permanent(format!("shard_map: {e}")));
            }
            Err(e) => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "cannot read the shard map; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(backoff.delay(attempt).max(Duration::from_millis(200))) => {}
                }
            }
        }
    }
}

/// Checks every few seconds that every shard answers `SELECT 1`; `None` when all do.
fn spawn_shard_probe(
    live: LiveShards,
    shutdown: CancellationToken,
) -> tokio::sync::watch::Receiver<Option<String>> {
    let (tx, rx) = tokio::sync::watch::channel(Some("shards not checked yet".to_string()));
    tokio::spawn(async move {
        loop {
            let mut down = Vec::new();
            for s in &snapshot(&live) {
                let ok = tokio::time::timeout(Duration::from_secs(2), async {
                    match s.client().await {
                        Ok(c) => c.simple_query("SELECT 1").await.is_ok(),
                        Err(_) => false,
                    }
                })
                .await
                .unwrap_or(false);
                if !ok {
                    down.push(s.name.clone());
                }
            }
            let _ = tx.send(if down.is_empty() {
                None
            } else {
                Some(format!("shards unreachable: {}", down.join(", ")))
            });
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    });
    rx
}
