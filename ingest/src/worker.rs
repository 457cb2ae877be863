//! The ingest worker: wires the consumer, the pipeline and one writer per shard, and runs
//! until shutdown.
//!
//! Shutdown (SIGTERM/SIGINT or the token): stop fetching, flush every buffer, let the
//! writers commit, commit the progress to Kafka, leave the group — all within
//! `ingest.shutdown_deadline`, after which the process exits anyway (whatever was not
//! committed is simply consumed again by the next owner; nothing is lost). A permanent error
//! ([`crate::fatal`]) shuts down the same way, then the worker leaves the consumer group and
//! waits, failed and not ready, until SIGTERM; [`run`] then returns the error (exit 1).
//!
//! A rejected record is dead-lettered before any later record is consumed: while its
//! publish is retried ([`crate::dlq`]), the loop stops taking records but keeps flushing
//! aged buffers, committing progress, answering `/readyz` (with the reason) and watching for
//! shutdown.

use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vitalsink_common::db::Shard;
use vitalsink_common::kafka::{client_config, dlq_client_config, ensure_topic, ensure_topic_with};
use vitalsink_common::observe::{self, Readiness};
use vitalsink_common::retry::Class;
use vitalsink_common::shardmap::{self, Routing};
use vitalsink_common::{migrate, Config};

use crate::batch::BatchLimits;
use crate::context::{Assignment, IngestContext};
use crate::dlq::{DeadLetter, DeadLetters, Outcome};
use crate::epochs::Epochs;
use crate::error::{Error, Result};
use crate::fatal::Fatal;
use crate::fleet::{snapshot, Fleet, LiveShards, Resolver, WriterTemplate};
use crate::follow::{spawn_map_watch, Control};
use crate::pipeline::{Pipeline, Taken};
use crate::writer::{Backoff, ShardProgress};
/// How often buffers are checked for age, progress committed to Kafka and readiness updated.
const TICK: Duration = Duration::from_millis(100);
/// Records taken per round of the consume loop after the first, when already queued.
const BURST: usize = 256;
/// Where `/metrics`, `/healthz` and `/readyz` are served when `observability.listen` is unset
/// (the archiver's default is 9465, so both run on one host).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";
/// How long a dead letter may wait for the broker's answer before `/readyz` reports it.
const DLQ_PATIENCE: Duration = Duration::from_secs(5);

/// Runs the worker until `shutdown` is cancelled.
///
/// # Errors
/// Start-up failures: Kafka clients that cannot be built, topics that cannot be created, the
/// metrics port taken, migrations that fail permanently. Once running,
/// [`Error::Permanent`] when an error that retrying cannot fix stopped it (returned at
/// SIGTERM; until then the worker is up in its failed state). Shard and broker outages are
/// not errors: writes and dead letters wait and retry.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<()> {
    let backoff = Backoff {
        initial: cfg.ingest.retry_initial,
        max: cfg.ingest.retry_max,
    };
    // Cancelled by SIGTERM/SIGINT or by a permanent error.
    let stop = shutdown.child_token();
    let fatal = Fatal::new(stop.clone());
    // Cancelled when the shutdown deadline has passed: writers give up their retries.
    let abort = CancellationToken::new();
    let _abort_on_return = abort.clone().drop_guard();
    let shards = Shard::all(&cfg.shards, &cfg.database)?;
    let ready = Readiness::new("starting");
    // Up until SIGTERM, also after a permanent error (the failed state below).
    observe::serve(
        cfg.observability.listen_or(DEFAULT_LISTEN),
        observe::install_recorder(),
        ready.clone(),
        shutdown.clone(),
    )
    .await?;

    migrate_with_retry(&shards, &cfg, backoff, &stop, &fatal).await?;
    let Some(routing) = shard_map_with_retry(&shards, backoff, &stop, &fatal).await? else {
        return Ok(()); // shut down while the map shard did not answer
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
    let (fleet, senders) = Fleet::start(
        union.clone(),
        resolver.clone(),
        WriterTemplate {
            group: cfg.kafka.group_id.clone(),
            topic: cfg.kafka.topic.clone(),
            backoff,
            fatal: fatal.clone(),
            abort: abort.clone(),
        },
    );
    let progress: ShardProgress = fleet.progress.clone();
    let shards_ok = spawn_shard_probe(fleet.live.clone(), stop.clone());

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (routed, routed_rx) = tokio::sync::watch::channel(routing.clone());
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
        consumer_config(&cfg).create_with_context(context)?;
    consumer.subscribe(&[&cfg.kafka.topic])?;
    let dlq = Arc::new(DeadLetters::new(&cfg.kafka, backoff)?);
    let mut pipeline = Pipeline::new(
        Epochs::new(routing.clone()),
        union.iter().map(|s| s.name.clone()).collect(),
        senders,
        cfg.validation.limits(),
        BatchLimits::from(&cfg.ingest),
        // The standing buffers (one per shard, up to a batch each) come out of the budget.
        cfg.ingest
            .buffer_budget_bytes()
            .saturating_sub(cfg.ingest.batch_max_bytes.saturating_mul(union.len())),
        dlq.max_bytes(),
    );
    tracing::info!(topic = %cfg.kafka.topic, group = %cfg.kafka.group_id, shards = union.len(), epoch = routing.base.epoch, pending = ?routing.pending.as_ref().map(|m| m.to.epoch), "ingest running");
    let mut ctl = Control {
        fleet,
        routed,
        topic: cfg.kafka.topic.clone(),
        backoff,
        stop: stop.clone(),
        fatal: fatal.clone(),
    };

    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The dead letter being published; no record is taken while there is one.
    let mut pending: Option<Pending> = None;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(a) = events.recv() => {
                if pending.as_ref().is_some_and(|p| touches(&a, p.partition)) {
                    // Its new owner consumes it again (at least once).
                    pending = None;
                }
                match a {
                    Assignment::Routing(fresh) => ctl.apply(*fresh, &mut pipeline).await,
                    other => pipeline.on_assignment(other),
                }
            }
            _ = tick.tick() => {
                pipeline.flush_due().await;
                commit_progress(&consumer, &cfg.kafka.topic, &progress, &pipeline.assigned());
                crate::metrics::buffered_bytes(pipeline.buffered_bytes());
                ready.set(readiness(&pipeline, &shards_ok, &dlq, pending.as_ref()));
            }
            res = publish(&mut pending) => {
                if let Some(p) = pending.take() {
                    settle(&mut pipeline, &fatal, &p, res);
                }
            }
            msg = consumer.recv(), if pending.is_none() => match msg {
                Ok(m) => {
                    let now = now_micros();
                    pending = take(&mut pipeline, &mut ctl, &dlq, &m, now).await;
                    drop(m);
                    // Take what librdkafka has already queued without another round through
                    // the select, at most BURST records so the tick and shutdown come soon.
                    // A rebalance event ends the burst (the poll returns no record), so the
                    // assignment is applied before any record that follows it; so does a
                    // dead letter, published before any later record is taken.
                    for _ in 0..BURST {
                        if pending.is_some() {
                            break;
                        }
                        match consumer.recv().now_or_never() {
                            Some(Ok(m)) => pending = take(&mut pipeline, &mut ctl, &dlq, &m, now).await,
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
    if let Some(p) = pending.take() {
        tracing::info!(
            partition = p.partition,
            offset = p.offset,
            "shutdown: dead letter not published; the record will be consumed again"
        );
    }

    ready.set(Some("shutting down".into()));
    tracing::info!("shutdown: flushing");
    let drain = async {
        while let Ok(a) = events.try_recv() {
            match a {
                Assignment::Routing(fresh) => ctl.apply(*fresh, &mut pipeline).await,
                other => pipeline.on_assignment(other),
            }
        }
        pipeline.flush_all().await;
        pipeline.close();
        ctl.fleet.join().await;
    };
    if tokio::time::timeout(cfg.ingest.shutdown_deadline, drain)
        .await
        .is_err()
    {
        abort.cancel();
        tracing::warn!(deadline = ?cfg.ingest.shutdown_deadline, "shutdown deadline passed; unflushed rows will be consumed again");
    } else {
        commit_progress(&consumer, &cfg.kafka.topic, &progress, &pipeline.assigned());
        consumer.unsubscribe();
        tracing::info!("shutdown complete");
    }
    let Some(e) = fatal.first() else {
        return Ok(());
    };
    // Failed: the partitions go to the other workers of the group (closing the consumer
    // leaves it), and the worker stays up, not ready, so that `/readyz` and `/metrics` show
    // the error until an operator has fixed the cause and stops it — a restart loop would
    // be a retry of what retrying cannot fix. Kafka Connect keeps a failed task the same way.
    drop(consumer);
    crate::metrics::failed();
    ready.set(Some(format!("failed: {e}")));
    tracing::error!(error = %e, "worker failed: consumption stopped and its partitions released; /metrics and /readyz stay up until SIGTERM");
    shutdown.cancelled().await;
    Err(Error::Permanent(e))
}

/// A dead letter being published: where its record is, since when, and the send.
struct Pending {
    partition: i32,
    offset: i64,
    since: Instant,
    send: Pin<Box<dyn Future<Output = Result<Outcome, KafkaError>> + Send>>,
}

/// Hands `msg` to the pipeline; a rejected record comes back as the dead letter to publish.
/// A cut-over control record is stored and applied here, before any later record is taken.
async fn take(
    pipeline: &mut Pipeline,
    ctl: &mut Control,
    dlq: &Arc<DeadLetters>,
    msg: &BorrowedMessage<'_>,
    now: i64,
) -> Option<Pending> {
    let letter: DeadLetter = match pipeline.handle(msg, now).await {
        Taken::Buffered => return None,
        Taken::DeadLetter(l) => l,
        Taken::Cutover(c) => {
            ctl.cut_over(c, pipeline).await;
            return None;
        }
    };
    let dlq = Arc::clone(dlq);
    Some(Pending {
        partition: letter.partition,
        offset: letter.offset,
        since: Instant::now(),
        send: Box::pin(async move { dlq.send(&letter).await }),
    })
}

/// Drives the pending dead letter's send; never completes when there is none.
async fn publish(pending: &mut Option<Pending>) -> Result<Outcome, KafkaError> {
    match pending {
        Some(p) => p.send.as_mut().await,
        None => std::future::pending().await,
    }
}

/// What a finished dead-letter send means for the record.
fn settle(pipeline: &mut Pipeline, fatal: &Fatal, p: &Pending, res: Result<Outcome, KafkaError>) {
    match res {
        Ok(Outcome::Delivered {
            truncated,
            value_bytes,
        }) => {
            if truncated {
                tracing::info!(
                    partition = p.partition,
                    offset = p.offset,
                    value_bytes,
                    "dead letter sent truncated, with the original's size and SHA-256"
                );
            }
            pipeline.dead_lettered(p.partition, p.offset);
        }
        Ok(Outcome::Refused(e)) => {
            crate::metrics::dead_letter_refused();
            tracing::error!(error = %e, partition = p.partition, offset = p.offset, "the broker refuses the dead letter even at its shortest; given up, the original stays in the source topic");
            pipeline.dead_lettered(p.partition, p.offset);
        }
        Err(e) => {
            let kind = e
                .rdkafka_error_code()
                .map_or_else(|| "kafka".to_string(), |c| format!("{c:?}"));
            fatal.raise("dead_letter", &kind, &e);
        }
    }
}

/// Whether assignment change `a` concerns `partition`.
fn touches(a: &Assignment, partition: i32) -> bool {
    match a {
        Assignment::Assigned(ps) | Assignment::Revoked(ps) => ps.contains(&partition),
        Assignment::Routing(_) => false,
    }
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

/// `None` when ready, else why not: no partitions, a dead letter that cannot be published,
/// a shard that does not answer.
fn readiness(
    pipeline: &Pipeline,
    shards_ok: &tokio::sync::watch::Receiver<Option<String>>,
    dlq: &DeadLetters,
    pending: Option<&Pending>,
) -> Option<String> {
    if pipeline.assigned().is_empty() {
        return Some("no partitions assigned".into());
    }
    if let Some(p) = pending {
        if let Some(why) = dlq.trouble() {
            return Some(why);
        }
        let waited = p.since.elapsed();
        if waited >= DLQ_PATIENCE {
            return Some(format!(
                "dead letter of partition {} offset {} unacknowledged for {} s; consumption paused",
                p.partition,
                p.offset,
                waited.as_secs()
            ));
        }
    }
    shards_ok.borrow().clone()
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

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
