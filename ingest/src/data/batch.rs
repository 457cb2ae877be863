//! Per-shard write-behind buffers: rows wait here, already encoded as `COPY … BINARY` tuples
//! ([`crate::data::copy_format`]), until their batch is full (rows or bytes) or old enough,
//! then leave as one [`Batch`] for the shard's writer.
//!
//! A batch also carries the consumer's **progress**: for every partition, the offset of the
//! next record not yet consumed when the batch was cut. Because every row of this shard from
//! records before that point is in this batch or an earlier one, the writer may record that
//! offset as applied on this shard in the same transaction as the rows.
//!
//! Memory: a buffered row costs its encoded tuple (about 60 bytes for typical ids) plus a
//! [`Segment`] per record, and that is exactly what is reserved from the memory budget. Each
//! shard also keeps one standing buffer allocation, at most `batch_max_bytes` plus one record.
//! A batch leaves with the buffer it was encoded in (no copy); once the batch is dropped the
//! allocation returns to a [`Spares`] list for the next batch, so a drain does not allocate,
//! copy and free a batch-sized block per batch.

use bytes::{Bytes, BytesMut};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use vitalsink_common::config::IngestConfig;
use vitalsink_common::measurement::Message;

use crate::data::consent::Label;
use crate::data::copy_format::{encode_message, message_len, Source};

/// The tuples of one Kafka record inside a batch's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Byte range of the record's tuples in [`Batch::data`].
    pub start: usize,
    /// End of that range (exclusive).
    pub end: usize,
    /// Rows (tuples) of the record.
    pub rows: u32,
}

/// Flush thresholds of a shard buffer.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Rows before a flush.
    pub max_rows: usize,
    /// Encoded bytes before a flush.
    pub max_bytes: usize,
    /// Age of the oldest row before a flush.
    pub max_age: Duration,
}

impl From<&IngestConfig> for BatchLimits {
    fn from(c: &IngestConfig) -> Self {
        Self {
            max_rows: c.batch_max_rows,
            max_bytes: c.batch_max_bytes,
            max_age: c.batch_max_age,
        }
    }
}

/// A batch of rows for one shard, ready to be written.
#[derive(Debug)]
pub struct Batch {
    /// Shard index.
    pub shard: usize,
    /// The rows as `COPY … BINARY` tuples, in consumption order (no header or trailer).
    pub data: Bytes,
    /// One segment per record, in consumption order, covering `data`.
    pub segments: Vec<Segment>,
    /// Rows in `data`.
    pub rows: usize,
    /// Per partition, the next offset this batch (with the earlier ones) accounts for.
    pub progress: BTreeMap<i32, i64>,
    /// Memory reserved for the batch; released when the batch is dropped.
    pub permit: Option<OwnedSemaphorePermit>,
    /// Where `data`'s allocation goes when the batch is dropped.
    pub spares: Option<Spares>,
    /// What its rows and refused readings were decided with (set by the pipeline at the cut;
    /// checked by the writer at commit, [`crate::data::guard`]).
    pub label: Label,
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let Some(spares) = &self.spares {
            spares.put(std::mem::take(&mut self.data));
        }
    }
}

/// Emptied batch buffers waiting to be reused, at most `max`. An idle buffer holds memory
/// permits for its capacity from the same budget as the rows; when the budget cannot spare
/// them (or `max` are already kept) the buffer is freed instead.
#[derive(Debug, Clone)]
pub struct Spares {
    list: Arc<Mutex<Vec<(BytesMut, OwnedSemaphorePermit)>>>,
    max: usize,
    memory: Arc<Semaphore>,
}

impl Spares {
    /// Keeps at most `max` buffers, their capacity reserved from `memory`.
    pub fn new(max: usize, memory: Arc<Semaphore>) -> Self {
        Self {
            list: Arc::new(Mutex::new(Vec::with_capacity(max))),
            max,
            memory,
        }
    }

    /// A buffer to encode into: a returned one (its permits go back to the budget: it becomes
    /// a shard's standing buffer, reserved separately) or a new empty one.
    fn get(&self) -> BytesMut {
        self.list
            .lock()
            .ok()
            .and_then(|mut l| l.pop())
            .map(|(b, _permit)| b)
            .unwrap_or_default()
    }

    /// Frees every idle buffer, giving its share of the budget back.
    pub fn clear(&self) {
        if let Ok(mut l) = self.list.lock() {
            l.clear();
        }
    }

    /// Takes back a batch's data if no slice of it is still held elsewhere and the budget has
    /// room for its capacity.
    fn put(&self, data: Bytes) {
        let Ok(mut b) = data.try_into_mut() else {
            return;
        };
        let Ok(mut l) = self.list.lock() else {
            return;
        };
        if l.len() >= self.max {
            return;
        }
        let need = u32::try_from(b.capacity()).unwrap_or(u32::MAX);
        if let Ok(permit) = self.memory.clone().try_acquire_many_owned(need) {
            b.clear();
            l.push((b, permit));
        }
    }
}

/// Memory a record of `msg` from `src` takes in a buffer, bytes: its tuples and its segment.
pub fn record_bytes(msg: &Message<'_>, src: &Source<'_>) -> usize {
    message_len(msg, src) + std::mem::size_of::<Segment>()
}

/// Rows waiting for one shard.
#[derive(Debug)]
pub struct ShardBuffer {
    shard: usize,
    data: BytesMut,
    segments: Vec<Segment>,
    rows: usize,
    opened: Option<Instant>,
    permit: Option<OwnedSemaphorePermit>,
    limits: BatchLimits,
    spares: Spares,
}

impl ShardBuffer {
    /// An empty buffer for shard `shard`, reusing batch buffers through `spares`.
    pub fn new(shard: usize, limits: BatchLimits, spares: Spares) -> Self {
        Self {
            spares,
            shard,
            data: BytesMut::new(),
            segments: Vec::new(),
            rows: 0,
            opened: None,
            permit: None,
            limits,
        }
    }

    /// Encodes the rows of one record and keeps the memory reserved for them
    /// ([`record_bytes`]). Returns true when the batch is now full (rows or bytes).
    pub fn push(
        &mut self,
        src: &Source<'_>,
        msg: &Message<'_>,
        permit: OwnedSemaphorePermit,
    ) -> bool {
        let (partition, offset) = (src.partition, src.offset);
        self.opened.get_or_insert_with(Instant::now);
        let start = self.data.len();
        encode_message(&mut self.data, msg, src);
        let rows = msg.samples.len();
        self.segments.push(Segment {
            partition,
            offset,
            start,
            end: self.data.len(),
            rows: u32::try_from(rows).unwrap_or(u32::MAX),
        });
        self.rows += rows;
        self.keep(permit)
    }

    /// Appends the tuples of one record encoded beforehand (`data`, `rows` of them: a
    /// record whose refused readings waited for their dead letter,
    /// [`crate::data::pipeline::Pipeline::dead_lettered`]; zero rows when every reading was
    /// refused, so that the batch still accounts for the record) with the memory reserved
    /// for them. Returns true when the batch is now full.
    pub fn push_encoded(
        &mut self,
        partition: i32,
        offset: i64,
        data: &[u8],
        rows: u32,
        permit: OwnedSemaphorePermit,
    ) -> bool {
        self.opened.get_or_insert_with(Instant::now);
        let start = self.data.len();
        self.data.extend_from_slice(data);
        self.segments.push(Segment {
            partition,
            offset,
            start,
            end: self.data.len(),
            rows,
        });
        self.rows += rows as usize;
        self.keep(permit)
    }

    /// Keeps `permit` with the rows' memory; whether the batch is full.
    fn keep(&mut self, permit: OwnedSemaphorePermit) -> bool {
        match &mut self.permit {
            Some(p) => p.merge(permit),
            None => self.permit = Some(permit),
        }
        self.rows >= self.limits.max_rows || self.data.len() >= self.limits.max_bytes
    }

    /// Whether the oldest row has waited `max_age` at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        self.opened
            .is_some_and(|t| now.duration_since(t) >= self.limits.max_age)
    }

    /// Number of rows waiting.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no record waits (a record whose readings were all refused counts: it has a
    /// segment of no rows).
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Cuts the waiting rows into a batch carrying `progress`, and empties the buffer.
    pub fn take(&mut self, progress: BTreeMap<i32, i64>) -> Batch {
        self.opened = None;
        let data = std::mem::replace(&mut self.data, self.spares.get()).freeze();
        Batch {
            shard: self.shard,
            data,
            segments: std::mem::take(&mut self.segments),
            rows: std::mem::take(&mut self.rows),
            progress,
            permit: self.permit.take(),
            spares: Some(self.spares.clone()),
            label: Label::default(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
