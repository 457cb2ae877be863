//! The consume loop's state: one record in, its readings into the right shard's buffer (or
//! the record to the dead-letter topic), full or old buffers out to the shard writers.
//!
//! Reading order for one measurement: [`Pipeline::handle`] → `measurement::decode_message` →
//! `ShardRouter::shard_for` → [`crate::batch::ShardBuffer::push`] (encodes the COPY tuples,
//! [`crate::copy_format`]) → [`Pipeline::cut`] → [`crate::writer::ShardWriter::run`] →
//! [`crate::writer::apply`].

use rdkafka::message::{BorrowedMessage, Message};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, Semaphore};
use vitalsink_common::measurement::{decode_message, Limits, RejectReason, Rejection};
use vitalsink_common::routing::ShardRouter;

use crate::batch::{record_bytes, Batch, BatchLimits, ShardBuffer, Spares};
use crate::context::Assignment;
use crate::dlq::DeadLetter;

/// Consume-loop state.
pub struct Pipeline {
    router: ShardRouter,
    shard_names: Vec<String>,
    buffers: Vec<ShardBuffer>,
    writers: Vec<mpsc::Sender<Batch>>,
    /// Partitions assigned to this worker.
    assigned: std::collections::BTreeSet<i32>,
    /// Per owned partition, the next offset not yet consumed (from its first record on).
    consumed: BTreeMap<i32, i64>,
    /// Per shard, the progress its last batch carried and when it was cut.
    last_cut: Vec<(BTreeMap<i32, i64>, Instant)>,
    limits: Limits,
    batch_limits: BatchLimits,
    memory: Arc<Semaphore>,
    memory_cap: usize,
    /// Most bytes of a rejected record's key or value kept for its dead letter.
    dlq_max_bytes: usize,
    counters: crate::metrics::RecordCounters,
}

impl Pipeline {
    /// A pipeline feeding `writers` (one per shard, in routing order), holding at most
    /// `memory_cap` bytes of readings; a dead letter keeps at most `dlq_max_bytes` of a
    /// rejected record's key and value (the dead-letter producer's `message.max.bytes`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shard_names: Vec<String>,
        writers: Vec<mpsc::Sender<Batch>>,
        limits: Limits,
        batch_limits: BatchLimits,
        memory_cap: usize,
        dlq_max_bytes: usize,
    ) -> Self {
        let n = shard_names.len();
        let memory = Arc::new(Semaphore::new(memory_cap));
        Self {
            router: ShardRouter::new(n),
            counters: crate::metrics::RecordCounters::new(&shard_names),
            buffers: {
                // Enough spares for what a writer holds: one batch written, two queued.
                let spares = Spares::new(3 * n, memory.clone());
                (0..n)
                    .map(|i| ShardBuffer::new(i, batch_limits, spares.clone()))
                    .collect()
            },
            shard_names,
            writers,
            assigned: Default::default(),
            consumed: BTreeMap::new(),
            last_cut: vec![(BTreeMap::new(), Instant::now()); n],
            limits,
            batch_limits,
            memory,
            memory_cap,
            dlq_max_bytes,
        }
    }

    /// Partitions assigned to this worker.
    pub fn assigned(&self) -> Vec<i32> {
        self.assigned.iter().copied().collect()
    }

    /// Memory held by buffered and in-flight batches, bytes.
    pub fn buffered_bytes(&self) -> usize {
        self.memory_cap
            .saturating_sub(self.memory.available_permits())
    }

    /// Applies an assignment change.
    pub fn on_assignment(&mut self, a: Assignment) {
        match a {
            // Unknown until the first record: no progress is claimed for it before.
            Assignment::Assigned(ps) => ps.into_iter().for_each(|p| {
                self.consumed.remove(&p);
                self.assigned.insert(p);
            }),
            Assignment::Revoked(ps) => ps.iter().for_each(|p| {
                self.consumed.remove(p);
                self.assigned.remove(p);
            }),
        }
    }

    /// Takes one record: decodes it, then buffers its readings for their shard, or returns
    /// it as a dead letter to publish. A dead-lettered record counts as consumed only once
    /// [`Pipeline::dead_lettered`] says it was published. Waits when memory is at the cap
    /// (backpressure) or a writer is behind.
    pub async fn handle(
        &mut self,
        msg: &BorrowedMessage<'_>,
        now_micros: i64,
    ) -> Option<DeadLetter> {
        let (partition, offset) = (msg.partition(), msg.offset());
        let decoded = match msg.payload() {
            Some(bytes) => decode_message(bytes, &self.limits, now_micros),
            None => Err(Rejection {
                reason: RejectReason::Schema,
                detail: "record has no value".into(),
            }),
        };
        match decoded {
            Ok(message) => {
                let shard = self.router.shard_for(&message.participant_id);
                let need = record_bytes(&message);
                let need = u32::try_from(need.min(self.memory_cap)).unwrap_or(u32::MAX);
                let permit = match self.memory.clone().acquire_many_owned(need).await {
                    Ok(p) => p,
                    Err(_) => return None, // the semaphore is never closed
                };
                self.counters.valid(shard, message.samples.len());
                let full = self.buffers[shard].push(partition, offset, &message, permit);
                self.consumed.insert(partition, offset + 1);
                if full {
                    self.cut(shard).await;
                }
                None
            }
            Err(why) => {
                crate::metrics::record_rejected(why.reason);
                tracing::debug!(partition, offset, reason = why.reason.code(), detail = %why.detail, "record rejected");
                Some(DeadLetter::new(msg, why, self.dlq_max_bytes))
            }
        }
    }

    /// The dead letter of the record at (`partition`, `offset`) is published (or given up):
    /// the record counts as consumed. Ignored when the partition is no longer assigned (its
    /// new owner consumes it again).
    pub fn dead_lettered(&mut self, partition: i32, offset: i64) {
        if self.assigned.contains(&partition) {
            self.consumed.insert(partition, offset + 1);
        }
    }

    /// Sends shard `shard`'s buffer to its writer, with the current progress.
    pub async fn cut(&mut self, shard: usize) {
        let progress = self.consumed.clone();
        let batch = self.buffers[shard].take(progress.clone());
        self.last_cut[shard] = (progress, Instant::now());
        if self.writers[shard].send(batch).await.is_err() {
            tracing::error!(shard = %self.shard_names[shard], "shard writer stopped; batch dropped");
        }
    }

    /// Flushes every buffer whose oldest row is `batch_max_age` old, and sends an offsets-only
    /// batch to shards that got no rows for that long while the partitions moved on, so that
    /// every shard's resume offsets stay close to the consumer's position.
    pub async fn flush_due(&mut self) {
        let now = Instant::now();
        for shard in 0..self.buffers.len() {
            let idle = now.duration_since(self.last_cut[shard].1) >= self.batch_limits.max_age;
            let buffer = &self.buffers[shard];
            if buffer.is_due(now)
                || (buffer.is_empty() && idle && self.last_cut[shard].0 != self.consumed)
            {
                self.cut(shard).await;
            }
        }
    }

    /// Flushes every buffer (on shutdown).
    pub async fn flush_all(&mut self) {
        for shard in 0..self.buffers.len() {
            if !self.buffers[shard].is_empty() || self.last_cut[shard].0 != self.consumed {
                self.cut(shard).await;
            }
        }
    }

    /// Closes the writers' channels; each writer finishes what it has and stops.
    pub fn close(&mut self) {
        self.writers.clear();
    }
}
