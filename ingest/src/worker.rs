//! The ingest worker: wires the consumer, the pipeline and one writer per shard, and runs
//! until shutdown.
//!
//! Shutdown (SIGTERM/SIGINT or the token): stop fetching, flush every buffer, let the
//! writers commit, commit the progress to Kafka, leave the group — all within
//! `ingest.shutdown_deadline`, after which the process exits anyway (whatever was not
//! committed is simply consumed again by the next owner; nothing is lost).

use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vitalsink_common::db::Shard;
use vitalsink_common::kafka::{client_config, ensure_topic};
use vitalsink_common::observe::{self, Readiness};
use vitalsink_common::{migrate, Config};

use crate::batch::BatchLimits;
use crate::context::IngestContext;
use crate::dlq::DeadLetters;
use crate::error::Result;
use crate::pipeline::Pipeline;
use crate::writer::{Backoff, ShardProgress, ShardWriter};

/// Batches queued per shard writer beyond the one it is writing.
const WRITER_QUEUE: usize = 2;
/// How often buffers are checked for age, progress committed to Kafka and readiness updated.
const TICK: Duration = Duration::from_millis(100);
/// Records taken per round of the consume loop after the first, when already queued.
const BURST: usize = 256;

/// Runs the worker until `shutdown` is cancelled.
///
/// # Errors
/// Start-up failures: Kafka clients that cannot be built, topics that cannot be created, the
/// metrics port taken. Shard outages are not errors: writes wait and retry.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<()> {
    let backoff = Backoff {
        initial: cfg.ingest.retry_initial,
        max: cfg.ingest.retry_max,
    };
    let shards = Shard::all(&cfg.shards, &cfg.database)?;
    let ready = Readiness::new("starting");
    observe::serve(
        &cfg.observability.listen,
        observe::install_recorder(),
        ready.clone(),
        shutdown.clone(),
    )
    .await?;

    migrate_with_retry(&shards, &cfg, backoff, &shutdown).await;
    ensure_topic(&cfg.kafka, &cfg.kafka.topic, cfg.ingest.topic_partitions).await?;
    ensure_topic(
        &cfg.kafka,
        &cfg.kafka.dlq_topic,
        cfg.ingest.topic_partitions,
    )
    .await?;

    let progress = ShardProgress::new(shards.len());
    let mut writers = Vec::new();
    let mut senders = Vec::new();
    for s in &shards {
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let w = ShardWriter {
            shard: s.clone(),
            group: cfg.kafka.group_id.clone(),
            topic: cfg.kafka.topic.clone(),
            backoff,
            progress: progress.clone(),
        };
        writers.push(tokio::spawn(w.run(rx)));
        senders.push(tx);
    }
    let shards_ok = spawn_shard_probe(shards.clone(), shutdown.clone());

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let context = IngestContext {
        shards: shards.clone(),
        group: cfg.kafka.group_id.clone(),
        topic: cfg.kafka.topic.clone(),
        backoff,
        runtime: tokio::runtime::Handle::current(),
        events: events_tx,
    };
    let consumer: StreamConsumer<IngestContext> =
        consumer_config(&cfg).create_with_context(context)?;
    consumer.subscribe(&[&cfg.kafka.topic])?;
    let dlq = DeadLetters::new(&cfg.kafka, backoff)?;
    let mut pipeline = Pipeline::new(
        cfg.kafka.topic.clone(),
        shards.iter().map(|s| s.name.clone()).collect(),
        senders,
        cfg.validation.limits(),
        BatchLimits::from(&cfg.ingest),
        // The standing buffers (one per shard, up to a batch each) come out of the budget.
        cfg.ingest
            .buffer_budget_bytes()
            .saturating_sub(cfg.ingest.batch_max_bytes.saturating_mul(shards.len())),
        dlq,
    );
    tracing::info!(topic = %cfg.kafka.topic, group = %cfg.kafka.group_id, shards = shards.len(), "ingest running");

    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(a) = events.recv() => pipeline.on_assignment(a),
            _ = tick.tick() => {
                pipeline.flush_due().await;
                commit_progress(&consumer, &cfg.kafka.topic, &progress, &pipeline.assigned());
                crate::metrics::buffered_bytes(pipeline.buffered_bytes());
                ready.set(readiness(&pipeline, &shards_ok));
            }
            msg = consumer.recv() => match msg {
                Ok(m) => {
                    let now = now_micros();
                    pipeline.handle(&m, now).await;
                    drop(m);
                    // Take what librdkafka has already queued without another round through
                    // the select, at most BURST records so the tick and shutdown come soon.
                    // A rebalance event ends the burst (the poll returns no record), so the
                    // assignment is applied before any record that follows it.
                    for _ in 0..BURST {
                        match consumer.recv().now_or_never() {
                            Some(Ok(m)) => pipeline.handle(&m, now).await,
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "consume error");
                                break;
                            }
                            None => break,
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "consume error");
                    tokio::time::sleep(TICK).await;
                }
            },
        }
    }

    ready.set(Some("shutting down".into()));
    tracing::info!("shutdown: flushing");
    let drain = async {
        while let Ok(a) = events.try_recv() {
            pipeline.on_assignment(a);
        }
        pipeline.flush_all().await;
        pipeline.close();
        for w in writers {
            let _ = w.await;
        }
    };
    if tokio::time::timeout(cfg.ingest.shutdown_deadline, drain)
        .await
        .is_err()
    {
        tracing::warn!(deadline = ?cfg.ingest.shutdown_deadline, "shutdown deadline passed; unflushed rows will be consumed again");
        return Ok(());
    }
    commit_progress(&consumer, &cfg.kafka.topic, &progress, &pipeline.assigned());
    consumer.unsubscribe();
    tracing::info!("shutdown complete");
    Ok(())
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

async fn migrate_with_retry(
    shards: &[Shard],
    cfg: &Config,
    backoff: Backoff,
    shutdown: &CancellationToken,
) {
    let mut attempt = 0u32;
    while let Err(e) = migrate::migrate_all(shards, &cfg.database).await {
        attempt += 1;
        tracing::warn!(error = %e, attempt, "migrations failed; retrying");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.delay(attempt).max(Duration::from_millis(200))) => {}
        }
    }
}

/// Reports the offsets every shard has applied as the group's committed offsets (progress
/// only: resuming reads the shards).
fn commit_progress(
    consumer: &StreamConsumer<IngestContext>,
    topic: &str,
    progress: &ShardProgress,
    assigned: &[i32],
) {
    let safe = progress.safe_offsets(assigned);
    if safe.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in safe {
        let _ = tpl.add_partition_offset(topic, p, Offset::Offset(o));
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        tracing::debug!(error = %e, "progress commit failed");
    }
}

fn readiness(
    pipeline: &Pipeline,
    shards_ok: &tokio::sync::watch::Receiver<Option<String>>,
) -> Option<String> {
    if pipeline.assigned().is_empty() {
        return Some("no partitions assigned".into());
    }
    shards_ok.borrow().clone()
}

/// Checks every few seconds that every shard answers `SELECT 1`; `None` when all do.
fn spawn_shard_probe(
    shards: Vec<Shard>,
    shutdown: CancellationToken,
) -> tokio::sync::watch::Receiver<Option<String>> {
    let (tx, rx) = tokio::sync::watch::channel(Some("shards not checked yet".to_string()));
    tokio::spawn(async move {
        loop {
            let mut down = Vec::new();
            for s in &shards {
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

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
