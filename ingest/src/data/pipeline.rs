//! The consume loop's state: one record in, its readings into the right shard's buffer (or
//! the record to the dead-letter topic), full or old buffers out to the shard writers.
//!
//! Reading order for one measurement: [`Pipeline::handle`] → `measurement::decode_message` →
//! [`crate::data::route::Epochs::shard_for`] (`ShardRouter::shard_for` of the record's epoch)
//! → [`crate::data::batch::ShardBuffer::push`] (encodes the COPY tuples,
//! [`crate::data::copy_format`]) → [`Pipeline::cut`] →
//! [`crate::data::writer::ShardWriter::run`] → [`crate::data::writer::apply`].
//!
//! Each reading is decided by its shard's `participant_status` table ([`Consent::split`]):
//! a record with refused readings becomes a dead letter, and its other readings are buffered
//! once the dead letter is delivered (`statuses`: [`Pipeline::dead_lettered`]). Every batch
//! carries what it was decided with ([`crate::data::consent::Label`]).
//!
//! The control plane ([`crate::control`]) changes what this pipeline feeds and how it routes
//! only through its methods ([`Pipeline::assign`], [`Pipeline::revoke`], [`Pipeline::grow`],
//! [`Pipeline::retire_last`], [`Pipeline::set_routing`], [`Pipeline::cut_over`],
//! [`Pipeline::known_cutovers`], [`Pipeline::set_consent`], [`Pipeline::rewind`]); nothing
//! here imports it.

mod statuses;

use rdkafka::message::{BorrowedMessage, Headers, Message};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use vitalsink_common::cutover::{CONTROL_CUTOVER, CONTROL_HEADER, EPOCH_HEADER};
use vitalsink_common::measurement::{decode_message, Limits, RejectReason, Rejection};

use crate::data::batch::{record_bytes, Batch, BatchLimits, ShardBuffer, Spares};
use crate::data::consent::{Consent, Label};
use crate::data::copy_format::Source;
use crate::data::dlq::DeadLetter;
use crate::data::route::{Cutover, Epochs};

/// What became of one record handed to [`Pipeline::handle`].
#[derive(Debug)]
pub enum Taken {
    /// Its readings are buffered for their shards.
    Buffered,
    /// Rejected: to publish to the dead-letter topic.
    DeadLetter(DeadLetter),
    /// A cut-over control record: the worker stores it, then calls
    /// [`Pipeline::cut_over`], before it hands over any later record.
    Cutover(Cutover),
}

/// Consume-loop state.
pub struct Pipeline {
    /// Routing by epoch; shard indexes are positions in its union list.
    epochs: Epochs,
    shard_names: Vec<String>,
    buffers: Vec<ShardBuffer>,
    writers: Vec<mpsc::Sender<Batch>>,
    /// Partitions assigned to this worker.
    assigned: std::collections::BTreeSet<i32>,
    /// Per owned partition, the next offset not yet consumed (from its first record on).
    consumed: BTreeMap<i32, i64>,
    /// Per shard, the progress its last batch carried and when it was cut.
    last_cut: Vec<(BTreeMap<i32, i64>, Instant)>,
    spares: Spares,
    limits: Limits,
    batch_limits: BatchLimits,
    memory: Arc<Semaphore>,
    memory_cap: usize,
    /// Most bytes of a rejected record's key or value kept for its dead letter.
    dlq_max_bytes: usize,
    counters: crate::metrics::RecordCounters,
    /// Per shard (routing order), the `participant_status` table its readings are decided by.
    consents: Vec<Arc<Consent>>,
    /// Per shard, what its buffered readings were decided with.
    labels: Vec<Label>,
    /// Raised by every [`Pipeline::rewind`]: a writer that refused a stale batch drops the
    /// later batches of its generation.
    generation: u64,
    /// The record whose dead letter is being published, when some of its readings are
    /// refused: its other readings, waiting to be buffered.
    held: Option<statuses::Held>,
}

impl Pipeline {
    /// A pipeline routing by `epochs` and feeding `writers` (one per shard of its union list,
    /// named `shard_names`, in routing order), deciding each shard's readings by its
    /// `consents` entry, holding at most
    /// `memory_cap` bytes of readings; a dead letter keeps at most `dlq_max_bytes` of a
    /// rejected record's key and value (the dead-letter producer's `message.max.bytes`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        epochs: Epochs,
        shard_names: Vec<String>,
        writers: Vec<mpsc::Sender<Batch>>,
        consents: Vec<Arc<Consent>>,
        limits: Limits,
        batch_limits: BatchLimits,
        memory_cap: usize,
        dlq_max_bytes: usize,
    ) -> Self {
        let n = shard_names.len();
        let memory = Arc::new(Semaphore::new(memory_cap));
        // Enough spares for what a writer holds: one batch written, two queued.
        let spares = Spares::new(3 * n, memory.clone());
        Self {
            epochs,
            counters: crate::metrics::RecordCounters::new(&shard_names),
            buffers: (0..n)
                .map(|i| ShardBuffer::new(i, batch_limits, spares.clone()))
                .collect(),
            spares,
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
            consents: (0..n)
                .map(|i| consents.get(i).cloned().unwrap_or_default())
                .collect(),
            labels: vec![Label::default(); n],
            generation: 0,
            held: None,
        }
    }

    /// The routing state.
    pub fn epochs(&self) -> &Epochs {
        &self.epochs
    }

    /// The shards fed, in routing order.
    pub fn shard_names(&self) -> &[String] {
        &self.shard_names
    }

    /// Feeds one more shard, appended to the routing order (an online move adds it).
    pub fn grow(&mut self, name: String, writer: mpsc::Sender<Batch>) {
        let i = self.buffers.len();
        self.buffers
            .push(ShardBuffer::new(i, self.batch_limits, self.spares.clone()));
        self.writers.push(writer);
        self.last_cut.push((BTreeMap::new(), Instant::now()));
        // The map shard's table until the new shard's own is read (the writer's check covers
        // the difference, if any).
        self.consents
            .push(self.consents.first().cloned().unwrap_or_default());
        self.labels.push(Label::default());
        self.shard_names.push(name);
        self.counters = crate::metrics::RecordCounters::new(&self.shard_names);
    }

    /// Stops feeding the last shard of the routing order (a removal finished: nothing routes
    /// to it any more), after sending it whatever it still has buffered; its writer finishes
    /// its queue and stops.
    pub async fn retire_last(&mut self) {
        let Some(last) = self.buffers.len().checked_sub(1) else {
            return;
        };
        if !self.buffers[last].is_empty() {
            self.cut(last).await;
        }
        self.buffers.pop();
        self.writers.pop();
        self.last_cut.pop();
        self.consents.pop();
        self.labels.pop();
        self.shard_names.pop();
        self.counters = crate::metrics::RecordCounters::new(&self.shard_names);
    }

    /// The cut-over record `c` is stored, and its partition cuts over at `stored` (the first
    /// such record's offset): later records of the partition route by the pending epoch, and
    /// the control record counts as consumed.
    pub fn cut_over(&mut self, c: Cutover, stored: i64) {
        self.epochs.set_cutover(c.partition, c.epoch, stored);
        if self.assigned.contains(&c.partition) {
            self.consumed.insert(c.partition, c.offset + 1);
        }
    }

    /// Routes by `routing` from now on ([`Epochs::update`]).
    ///
    /// # Errors
    /// The routing's shard list when it is not the list this pipeline feeds (the caller
    /// grows or retires shards first).
    pub fn set_routing(
        &mut self,
        routing: vitalsink_common::shardmap::Routing,
    ) -> Result<(), String> {
        if routing.union() != self.shard_names.as_slice() {
            return Err(format!(
                "routing over [{}] but feeding [{}]",
                routing.union().join(", "),
                self.shard_names.join(", ")
            ));
        }
        self.epochs.update(routing);
        Ok(())
    }

    /// Cut-overs to the pending epoch `epoch` stored by whoever consumed their control
    /// records (read at assignment).
    pub fn known_cutovers(&mut self, epoch: i32, cutovers: &BTreeMap<i32, i64>) {
        for (&p, &o) in cutovers {
            self.epochs.set_cutover(p, epoch, o);
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

    /// `partitions` are now assigned to this worker (a rebalance gave them).
    pub fn assign(&mut self, partitions: Vec<i32>) {
        // Unknown until the first record: no progress is claimed for it before.
        partitions.into_iter().for_each(|p| {
            self.consumed.remove(&p);
            self.assigned.insert(p);
        });
    }

    /// `partitions` are no longer assigned to this worker (a rebalance took them).
    pub fn revoke(&mut self, partitions: &[i32]) {
        partitions.iter().for_each(|p| {
            self.consumed.remove(p);
            self.assigned.remove(p);
        });
    }

    /// Takes one record: decodes it, then buffers its readings for their shard, or returns
    /// it as a dead letter to publish. A dead-lettered record counts as consumed only once
    /// [`Pipeline::dead_lettered`] says it was published. Waits when memory is at the cap
    /// (backpressure) or a writer is behind.
    pub async fn handle(&mut self, msg: &BorrowedMessage<'_>, now_micros: i64) -> Taken {
        let (partition, offset) = (msg.partition(), msg.offset());
        if let Some(epoch) = cutover_epoch(msg) {
            return Taken::Cutover(Cutover {
                partition,
                offset,
                epoch,
            });
        }
        let decoded = match msg.payload() {
            Some(bytes) => decode_message(bytes, &self.limits, now_micros),
            None => Err(Rejection {
                reason: RejectReason::Schema,
                detail: "record has no value".into(),
            }),
        };
        match decoded {
            Ok(message) => {
                // Within the buffers: [`Pipeline::set_routing`] keeps them the union's length.
                let shard = self
                    .epochs
                    .shard_for(partition, offset, &message.participant_id);
                if let Some(split) =
                    self.consents[shard].split(&message.participant_id, &message.samples)
                {
                    return self.refuse(msg, shard, message, split).await;
                }
                let src = Source::of(msg);
                let need = record_bytes(&message, &src);
                let need = u32::try_from(need.min(self.memory_cap)).unwrap_or(u32::MAX);
                let Some(permit) = self.reserve(need).await else {
                    return Taken::Buffered; // the semaphore is never closed
                };
                self.counters.valid(shard, message.samples.len());
                self.labels[shard].note(&self.consents[shard], &message.participant_id);
                let full = self.buffers[shard].push(&src, &message, permit);
                self.consumed.insert(partition, offset + 1);
                if full {
                    self.cut(shard).await;
                }
                Taken::Buffered
            }
            Err(why) => {
                crate::metrics::record_rejected(why.reason);
                tracing::debug!(partition, offset, reason = why.reason.code(), detail = %why.detail, "record rejected");
                Taken::DeadLetter(DeadLetter::new(msg, why, self.dlq_max_bytes))
            }
        }
    }

    /// Reserves `need` bytes of the memory budget for a record's rows. When the budget has no
    /// room, what holds it is given back first: the idle spare buffers, then every partly
    /// filled batch, sent to its writer (which frees its rows' share once written). Waiting
    /// without doing so could last for ever: the age flush that would otherwise send those
    /// batches runs in this same loop (a stall seen with 4 shards, 4 MiB batches and a
    /// 64 MiB cap in the 4-shard drain benchmark). `None` only if the semaphore were closed.
    async fn reserve(&mut self, need: u32) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.memory.clone().try_acquire_many_owned(need) {
            return Some(p);
        }
        self.spares.clear();
        if let Ok(p) = self.memory.clone().try_acquire_many_owned(need) {
            return Some(p);
        }
        for shard in 0..self.buffers.len() {
            if !self.buffers[shard].is_empty() {
                self.cut(shard).await;
            }
        }
        self.memory.clone().acquire_many_owned(need).await.ok()
    }

    /// Sends shard `shard`'s buffer to its writer, with the current progress and what its
    /// readings were decided with.
    pub async fn cut(&mut self, shard: usize) {
        let progress = self.consumed.clone();
        let mut batch = self.buffers[shard].take(progress.clone());
        batch.label = std::mem::take(&mut self.labels[shard]);
        batch.label.generation = self.generation;
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

/// The epoch of a cut-over control record ([`vitalsink_common::cutover`]); `None` for any
/// other record. A control header with another kind, or without a decimal epoch, is not a
/// cut-over: such a record is decoded (and dead-lettered) like any other.
fn cutover_epoch(msg: &BorrowedMessage<'_>) -> Option<i32> {
    let headers = msg.headers()?;
    let mut control = false;
    let mut epoch = None;
    for h in headers.iter() {
        match h.key {
            CONTROL_HEADER => control = h.value == Some(CONTROL_CUTOVER.as_bytes()),
            EPOCH_HEADER => {
                epoch = h
                    .value
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse().ok());
            }
            _ => {}
        }
    }
    epoch.filter(|_| control)
}
