//! Per-shard write-behind buffers: rows wait here until their batch is full (rows or bytes)
//! or old enough, then leave as one [`Batch`] for the shard's writer.
//!
//! A batch also carries the consumer's **progress**: for every partition, the offset of the
//! next record not yet consumed when the batch was cut. Because every row of this shard from
//! records before that point is in this batch or an earlier one, the writer may record that
//! offset as applied on this shard in the same transaction as the rows.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;
use vitalsink_common::config::IngestConfig;
use vitalsink_common::measurement::Reading;

/// A reading and the Kafka record it came from.
#[derive(Debug, Clone)]
pub struct Row {
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// The reading.
    pub reading: Reading,
}

/// Flush thresholds of a shard buffer.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Rows before a flush.
    pub max_rows: usize,
    /// Approximate bytes before a flush.
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
    /// The rows, in consumption order.
    pub rows: Vec<Row>,
    /// Approximate in-memory bytes of the rows.
    pub bytes: usize,
    /// Per partition, the next offset this batch (with the earlier ones) accounts for.
    pub progress: BTreeMap<i32, i64>,
    /// Memory reserved for the rows; released when the batch is dropped.
    pub permit: Option<OwnedSemaphorePermit>,
}

/// Rows waiting for one shard.
#[derive(Debug)]
pub struct ShardBuffer {
    shard: usize,
    rows: Vec<Row>,
    bytes: usize,
    opened: Option<Instant>,
    permit: Option<OwnedSemaphorePermit>,
    limits: BatchLimits,
}

impl ShardBuffer {
    /// An empty buffer for shard `shard`.
    pub fn new(shard: usize, limits: BatchLimits) -> Self {
        Self {
            shard,
            rows: Vec::new(),
            bytes: 0,
            opened: None,
            permit: None,
            limits,
        }
    }

    /// Adds the readings of one record and the memory reserved for them. Returns true when
    /// the batch is now full (rows or bytes).
    pub fn push(
        &mut self,
        partition: i32,
        offset: i64,
        readings: Vec<Reading>,
        permit: OwnedSemaphorePermit,
    ) -> bool {
        self.opened.get_or_insert_with(Instant::now);
        for reading in readings {
            self.bytes += reading.approx_bytes();
            self.rows.push(Row {
                partition,
                offset,
                reading,
            });
        }
        match &mut self.permit {
            Some(p) => p.merge(permit),
            None => self.permit = Some(permit),
        }
        self.rows.len() >= self.limits.max_rows || self.bytes >= self.limits.max_bytes
    }

    /// Whether the oldest row has waited `max_age` at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        self.opened
            .is_some_and(|t| now.duration_since(t) >= self.limits.max_age)
    }

    /// Number of rows waiting.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row waits.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Cuts the waiting rows into a batch carrying `progress`, and empties the buffer.
    pub fn take(&mut self, progress: BTreeMap<i32, i64>) -> Batch {
        self.opened = None;
        Batch {
            shard: self.shard,
            rows: std::mem::take(&mut self.rows),
            bytes: std::mem::take(&mut self.bytes),
            progress,
            permit: self.permit.take(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::sync::Semaphore;

    fn reading(pid: &str) -> Reading {
        Reading {
            participant_id: pid.into(),
            metric: "hr".into(),
            ts_micros: 0,
            value: 1.0,
            unit: None,
            device_id: None,
            study_id: None,
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
        let mut b = ShardBuffer::new(1, limits(3, usize::MAX, 60_000));
        assert!(!b.push(
            0,
            10,
            vec![reading("a")],
            sem.clone().try_acquire_many_owned(10).unwrap()
        ));
        assert!(b.push(
            0,
            11,
            vec![reading("a"), reading("a")],
            sem.clone().try_acquire_many_owned(20).unwrap()
        ));
        assert_eq!(sem.available_permits(), 70);
        let batch = b.take([(0, 12)].into());
        assert_eq!((batch.shard, batch.rows.len()), (1, 3));
        assert_eq!(
            batch.rows.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [10, 11, 11]
        );
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
        let one = reading("a").approx_bytes();
        let mut b = ShardBuffer::new(0, limits(1_000, one * 2, 60_000));
        assert!(!b.push(
            0,
            0,
            vec![reading("a")],
            sem.clone().try_acquire_owned().unwrap()
        ));
        assert!(b.push(
            0,
            1,
            vec![reading("a")],
            sem.clone().try_acquire_owned().unwrap()
        ));
    }

    #[test]
    fn due_by_age_of_oldest_row() {
        let sem = Arc::new(Semaphore::new(10));
        let mut b = ShardBuffer::new(0, limits(1_000, usize::MAX, 50));
        let t0 = Instant::now();
        assert!(
            !b.is_due(t0 + Duration::from_secs(1)),
            "an empty buffer is never due"
        );
        b.push(
            0,
            0,
            vec![reading("a")],
            sem.clone().try_acquire_owned().unwrap(),
        );
        assert!(!b.is_due(Instant::now()));
        assert!(b.is_due(Instant::now() + Duration::from_millis(60)));
    }
}
