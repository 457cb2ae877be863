//! The consume loop: records in, assignment changes applied, buffers flushed by age, progress
//! committed, readiness reported, until the worker stops.
//!
//! A rejected record is dead-lettered before any later record is consumed: while its
//! publish is retried ([`crate::data::dlq`]), the loop stops taking records but keeps
//! flushing aged buffers, committing progress, answering `/readyz` (with the reason) and
//! watching for shutdown.
//!
//! Participants' statuses ([`crate::control::statuses`]): a shard's changed table is taken,
//! and a stale batch a writer refused rewinds the consumer, each only while no dead letter is
//! pending (a record's decision and its dead letter belong to one table).

use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::start::Worker;
use super::starvation::Starvation;
use crate::control::follow::Control;
use crate::control::rebalance::{Assignment, IngestContext};
use crate::data::dlq::{DeadLetter, DeadLetters, Outcome};
use crate::data::pipeline::{Pipeline, Taken};
use crate::data::writer::ShardProgress;
use crate::fatal::Fatal;

/// How often buffers are checked for age, progress committed to Kafka and readiness updated.
const TICK: Duration = Duration::from_millis(100);
/// Records taken per round of the consume loop after the first, when already queued.
const BURST: usize = 256;
/// How long a dead letter may wait for the broker's answer before `/readyz` reports it.
const DLQ_PATIENCE: Duration = Duration::from_secs(5);

/// Runs the consume loop until `w.stop` is cancelled; `topic` is the measurements topic;
/// `unassigned_alarm` is `ingest.unassigned_alarm` ([`Starvation`]).
pub(super) async fn consume(w: &mut Worker, topic: &str, unassigned_alarm: Duration) {
    let Worker {
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
        ..
    } = w;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The dead letter being published; no record is taken while there is one.
    let mut pending: Option<Pending> = None;
    let mut starvation = Starvation::new(topic, unassigned_alarm);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(a) = events.recv() => {
                if pending.as_ref().is_some_and(|p| touches(&a, p.partition)) {
                    // Its new owner consumes it again (at least once).
                    pending = None;
                }
                on_assignment(ctl, pipeline, a).await;
            }
            Some(s) = stale.recv(), if pending.is_none() => {
                ctl.rewind(s, pipeline, consumer).await;
            }
            Some(r) = refreshed.recv(), if pending.is_none() => {
                pipeline.set_consent(&r.shard, r.consent, false).await;
            }
            _ = tick.tick() => {
                pipeline.flush_due().await;
                commit_progress(consumer, topic, progress, &pipeline.assigned());
                crate::metrics::buffered_bytes(pipeline.buffered_bytes());
                ready.set(readiness(pipeline, shards_ok, dlq, pending.as_ref()));
                starvation.tick(pipeline.assigned().len(), consumer);
            }
            res = publish(&mut pending) => {
                if let Some(p) = pending.take() {
                    settle(pipeline, fatal, &p, res).await;
                }
            }
            msg = consumer.recv(), if pending.is_none() => match msg {
                Ok(m) => {
                    let now = now_micros();
                    pending = take(pipeline, ctl, dlq, &m, now).await;
                    drop(m);
                    if pending.is_none() {
                        pending = take_queued(consumer, pipeline, ctl, dlq, now).await;
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
}

/// Applies an assignment change from the rebalance callback or the map watch: a shard map to
/// the control plane, partitions given or taken to the pipeline.
pub(super) async fn on_assignment(ctl: &mut Control, pipeline: &mut Pipeline, a: Assignment) {
    match a {
        Assignment::Routing(fresh) => ctl.apply(*fresh, pipeline).await,
        Assignment::Assigned(ps) => pipeline.assign(ps),
        Assignment::Revoked(ps) => pipeline.revoke(&ps),
    }
}

/// Takes what librdkafka has already queued without another round through the select, at
/// most [`BURST`] records so the tick and shutdown come soon. A rebalance event ends the
/// burst (the poll returns no record), so the assignment is applied before any record that
/// follows it; so does a dead letter, published before any later record is taken.
async fn take_queued(
    consumer: &StreamConsumer<IngestContext>,
    pipeline: &mut Pipeline,
    ctl: &mut Control,
    dlq: &Arc<DeadLetters>,
    now: i64,
) -> Option<Pending> {
    for _ in 0..BURST {
        match consumer.recv().now_or_never() {
            Some(Ok(m)) => {
                let pending = take(pipeline, ctl, dlq, &m, now).await;
                if pending.is_some() {
                    return pending;
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "consume error");
                break;
            }
            None => break,
        }
    }
    None
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
async fn settle(
    pipeline: &mut Pipeline,
    fatal: &Fatal,
    p: &Pending,
    res: Result<Outcome, KafkaError>,
) {
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
            pipeline.dead_lettered(p.partition, p.offset).await;
        }
        Ok(Outcome::Refused(e)) => {
            crate::metrics::dead_letter_refused();
            tracing::error!(error = %e, partition = p.partition, offset = p.offset, "the broker refuses the dead letter even at its shortest; given up, the original stays in the source topic");
            pipeline.dead_lettered(p.partition, p.offset).await;
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

/// Reports the offsets every shard has applied as the group's committed offsets (progress
/// only: resuming reads the shards).
pub(super) fn commit_progress(
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

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
