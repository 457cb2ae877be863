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

    /// Whether no row waits.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
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
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    /// One spare buffer, with a budget that always covers it.
    fn spares() -> Spares {
        Spares::new(1, Arc::new(Semaphore::new(1 << 24)))
    }

    fn msg(samples: usize) -> Message<'static> {
        Message {
            participant_id: Cow::Borrowed("a"),
            metric: Cow::Borrowed("hr"),
            unit: None,
            device_id: None,
            study_id: None,
            samples: vec![
                vitalsink_common::measurement::Sample {
                    ts_micros: 0,
                    value: 1.0,
                    utc_offset_min: Some(0),
                };
                samples
            ],
        }
    }

    /// The source of the record at (`partition`, `offset`).
    fn src(partition: i32, offset: i64) -> Source<'static> {
        Source {
            topic: "measurements",
            partition,
            offset,
            received_at_micros: None,
            received_at_type: None,
        }
    }

    fn limits(rows: usize, bytes: usize, age_ms: u64) -> BatchLimits {
        BatchLimits {
            max_rows: rows,
            max_bytes: bytes,
            max_age: Duration::from_millis(age_ms),
        }
    }

    #[test]
    fn full_by_rows_then_take_empties_and_releases_memory() {
        let sem = Arc::new(Semaphore::new(100));
        let mut b = ShardBuffer::new(1, limits(3, usize::MAX, 60_000), spares());
        assert!(!b.push(
            &src(0, 10),
            &msg(1),
            sem.clone().try_acquire_many_owned(10).unwrap()
        ));
        assert!(b.push(
            &src(0, 11),
            &msg(2),
            sem.clone().try_acquire_many_owned(20).unwrap()
        ));
        assert_eq!(sem.available_permits(), 70);
        let batch = b.take([(0, 12)].into());
        assert_eq!((batch.shard, batch.rows), (1, 3));
        let one = message_len(&msg(1), &src(0, 0));
        assert_eq!(
            batch.segments,
            [
                Segment {
                    partition: 0,
                    offset: 10,
                    start: 0,
                    end: one,
                    rows: 1
                },
                Segment {
                    partition: 0,
                    offset: 11,
                    start: one,
                    end: 3 * one,
                    rows: 2
                },
            ]
        );
        assert_eq!(batch.data.len(), 3 * one);
        assert!(b.is_empty() && !b.is_due(Instant::now() + Duration::from_secs(3600)));
        drop(batch);
        assert_eq!(
            sem.available_permits(),
            100,
            "memory comes back when the batch is dropped"
        );
    }

    #[test]
    fn full_by_bytes() {
        let sem = Arc::new(Semaphore::new(10));
        let one = message_len(&msg(1), &src(0, 0));
        let mut b = ShardBuffer::new(0, limits(1_000, one * 2, 60_000), spares());
        assert!(!b.push(
            &src(0, 0),
            &msg(1),
            sem.clone().try_acquire_owned().unwrap()
        ));
        assert!(b.push(
            &src(0, 1),
            &msg(1),
            sem.clone().try_acquire_owned().unwrap()
        ));
    }

    #[test]
    fn due_by_age_of_oldest_row() {
        let sem = Arc::new(Semaphore::new(10));
        let mut b = ShardBuffer::new(0, limits(1_000, usize::MAX, 50), spares());
        let t0 = Instant::now();
        assert!(
            !b.is_due(t0 + Duration::from_secs(1)),
            "an empty buffer is never due"
        );
        b.push(
            &src(0, 0),
            &msg(1),
            sem.clone().try_acquire_owned().unwrap(),
        );
        assert!(!b.is_due(Instant::now()));
        assert!(b.is_due(Instant::now() + Duration::from_millis(60)));
    }

    #[test]
    fn a_dropped_batch_gives_its_allocation_back_for_a_later_batch() {
        let sem = Arc::new(Semaphore::new(1_000));
        let mut b = ShardBuffer::new(0, limits(1, usize::MAX, 60_000), spares());
        let push = |b: &mut ShardBuffer| {
            b.push(
                &src(0, 0),
                &msg(3),
                sem.clone().try_acquire_owned().unwrap(),
            );
        };
        push(&mut b);
        let first = b.take(BTreeMap::new());
        let ptr = first.data.as_ptr();
        drop(first);
        push(&mut b);
        let second = b.take(BTreeMap::new());
        assert_ne!(
            second.data.as_ptr(),
            ptr,
            "the standing buffer was a new one"
        );
        push(&mut b);
        let third = b.take(BTreeMap::new());
        assert_eq!(
            third.data.as_ptr(),
            ptr,
            "the first batch's buffer came back"
        );
        assert_eq!(
            third.data.len(),
            message_len(&msg(3), &src(0, 0)),
            "and was emptied first"
        );
    }

    #[test]
    fn a_spare_buffer_is_kept_only_when_the_budget_covers_its_capacity() {
        let rows = Arc::new(Semaphore::new(1_000));
        for (budget, kept) in [(0, 0), (1 << 20, 1)] {
            let memory = Arc::new(Semaphore::new(budget));
            let spares = Spares::new(4, memory.clone());
            let mut b = ShardBuffer::new(0, limits(1, usize::MAX, 60_000), spares.clone());
            b.push(
                &src(0, 0),
                &msg(3),
                rows.clone().try_acquire_owned().unwrap(),
            );
            let batch = b.take(BTreeMap::new());
            let capacity = batch.data.len(); // frozen exactly at its length here or more
            drop(batch);
            let list = spares.list.lock().unwrap();
            assert_eq!(list.len(), kept, "budget {budget}");
            if kept == 1 {
                assert!(list[0].0.capacity() >= capacity);
                assert_eq!(
                    memory.available_permits(),
                    budget - list[0].0.capacity(),
                    "the spare holds permits for its capacity"
                );
            }
        }
    }
}
