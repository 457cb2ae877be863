//! The shard writer: applies batches to one shard, exactly once, in the order they were cut.
//!
//! One transaction per batch:
//! 1. lock the shard's `ingest_offsets` rows of the batch's partitions (`FOR UPDATE`, in
//!    partition order so that two workers never deadlock) and read `next_offset`;
//! 2. `COPY measurements … FROM STDIN BINARY` the rows whose offset is at or above it — rows
//!    below were applied before (by this worker before a crash, or by another worker that
//!    owned the partition), so they are skipped;
//! 3. raise `next_offset` to the batch's progress (never lower it);
//! 4. commit. Rows and offsets become visible together or not at all.
//!
//! A failed attempt is retried with exponential backoff and full jitter until it succeeds, so
//! a shard outage or failover only delays the batch; memory stays bounded because the
//! consumer waits for the batches' memory to come back.

use bytes::{BufMut, BytesMut};
use postgres_types::{accepts, to_sql_checked, IsNull, ToSql, Type};
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use vitalsink_common::db::Shard;
use vitalsink_common::measurement::Reading;

use crate::batch::Batch;

/// Microseconds between the Unix epoch and PostgreSQL's epoch, 2000-01-01T00:00:00Z.
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// A `timestamptz` from UTC microseconds, written in PostgreSQL's binary format (an `i64` of
/// microseconds since 2000-01-01, see `timestamp_send` in PostgreSQL's `timestamp.c`).
#[derive(Debug, Clone, Copy)]
struct PgTimestamp(i64);

impl ToSql for PgTimestamp {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_i64(self.0 - PG_EPOCH_OFFSET_MICROS);
        Ok(IsNull::No)
    }
    accepts!(TIMESTAMPTZ);
    to_sql_checked!();
}

/// The column types of the COPY, in the order of [`COPY_SQL`].
const COPY_TYPES: [Type; 7] = [
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::FLOAT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
];
const COPY_SQL: &str =
    "COPY measurements (participant_id, metric, ts, value, unit, device_id, study_id) FROM STDIN (FORMAT binary)";

/// What one applied batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Rows copied into the hypertable.
    pub written: u64,
    /// Rows skipped because the shard had applied them before.
    pub skipped: u64,
}

/// The offsets a batch moves the shard to: its progress, raised to one past the highest row
/// offset of every partition it has rows of.
pub fn batch_offsets(batch: &Batch) -> BTreeMap<i32, i64> {
    let mut next = batch.progress.clone();
    for r in &batch.rows {
        let e = next.entry(r.partition).or_insert(r.offset + 1);
        *e = (*e).max(r.offset + 1);
    }
    next
}

/// Applies `batch` in one transaction (see the module rule), moving the shard's offsets to
/// `next` ([`batch_offsets`] of the batch).
///
/// # Errors
/// The driver's error; the transaction is rolled back and nothing of the batch is kept.
pub async fn apply(
    client: &mut tokio_postgres::Client,
    group: &str,
    topic: &str,
    batch: &Batch,
    next: &BTreeMap<i32, i64>,
) -> Result<Applied, tokio_postgres::Error> {
    if next.is_empty() {
        return Ok(Applied::default());
    }
    let partitions: Vec<i32> = next.keys().copied().collect();
    let offsets: Vec<i64> = next.values().copied().collect();
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO ingest_offsets (consumer_group, topic, kafka_partition, next_offset)
         SELECT $1, $2, p, 0 FROM unnest($3::int4[]) AS p
         ON CONFLICT DO NOTHING",
        &[&group, &topic, &partitions],
    )
    .await?;
    let locked = tx
        .query(
            "SELECT kafka_partition, next_offset FROM ingest_offsets
             WHERE consumer_group = $1 AND topic = $2 AND kafka_partition = ANY($3)
             ORDER BY kafka_partition FOR UPDATE",
            &[&group, &topic, &partitions],
        )
        .await?;
    let applied: BTreeMap<i32, i64> = locked.iter().map(|r| (r.get(0), r.get(1))).collect();

    let mut out = Applied::default();
    let mut per_partition: BTreeMap<i32, i64> = BTreeMap::new();
    let mut kept: Vec<&Reading> = Vec::with_capacity(batch.rows.len());
    for row in &batch.rows {
        if row.offset >= applied.get(&row.partition).copied().unwrap_or(0) {
            *per_partition.entry(row.partition).or_default() += 1;
            kept.push(&row.reading);
        } else {
            out.skipped += 1;
        }
    }
    out.written = copy_readings(&tx, &kept).await?;
    let rows: Vec<i64> = partitions
        .iter()
        .map(|p| per_partition.get(p).copied().unwrap_or(0))
        .collect();
    tx.execute(
        "UPDATE ingest_offsets o
         SET next_offset = GREATEST(o.next_offset, v.next_offset),
             rows_applied = o.rows_applied + v.rows, updated_at = now()
         FROM unnest($3::int4[], $4::int8[], $5::int8[]) AS v(kafka_partition, next_offset, rows)
         WHERE o.consumer_group = $1 AND o.topic = $2 AND o.kafka_partition = v.kafka_partition",
        &[&group, &topic, &partitions, &offsets, &rows],
    )
    .await?;
    tx.commit().await?;
    Ok(out)
}

/// Streams `readings` into the `measurements` hypertable with `COPY … FROM STDIN (FORMAT
/// binary)` inside `tx`. Returns the number of rows copied. No COPY is started for none.
///
/// # Errors
/// The driver's error (the caller's transaction is then unusable).
pub async fn copy_readings(
    tx: &tokio_postgres::Transaction<'_>,
    readings: &[&Reading],
) -> Result<u64, tokio_postgres::Error> {
    if readings.is_empty() {
        return Ok(0);
    }
    let sink = tx.copy_in(COPY_SQL).await?;
    let writer = BinaryCopyInWriter::new(sink, &COPY_TYPES);
    tokio::pin!(writer);
    for r in readings {
        writer
            .as_mut()
            .write(&[
                &r.participant_id,
                &r.metric,
                &PgTimestamp(r.ts_micros),
                &r.value,
                &r.unit,
                &r.device_id,
                &r.study_id,
            ])
            .await?;
    }
    writer.finish().await
}

/// Exponential backoff with full jitter: attempt `n` (from 1) waits a uniformly random time
/// in `[0, min(max, initial × 2^(n-1))]` (AWS Architecture Blog, "Exponential Backoff and
/// Jitter", 2015).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Ceiling of the first delay.
    pub initial: Duration,
    /// Largest ceiling.
    pub max: Duration,
}

impl Backoff {
    /// The delay before retry number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max);
        ceiling.mul_f64(rand::rng().random::<f64>())
    }
}

/// Per shard, the offsets its committed batches moved it to. The consumer commits the
/// minimum over shards to Kafka, as progress (the shards, not Kafka, decide where to resume).
#[derive(Debug, Clone)]
pub struct ShardProgress(Arc<Mutex<Vec<BTreeMap<i32, i64>>>>);

impl ShardProgress {
    /// Empty progress for `shards` shards.
    pub fn new(shards: usize) -> Self {
        Self(Arc::new(Mutex::new(vec![BTreeMap::new(); shards])))
    }

    fn advance(&self, shard: usize, next: &BTreeMap<i32, i64>) {
        if let Ok(mut g) = self.0.lock() {
            if let Some(m) = g.get_mut(shard) {
                for (&p, &o) in next {
                    let e = m.entry(p).or_insert(o);
                    *e = (*e).max(o);
                }
            }
        }
    }

    /// Per partition among `partitions`, the offset every shard has applied up to: the minimum
    /// over shards. A partition some shard has no record of is left out.
    pub fn safe_offsets(&self, partitions: &[i32]) -> BTreeMap<i32, i64> {
        let Ok(g) = self.0.lock() else {
            return BTreeMap::new();
        };
        partitions
            .iter()
            .filter_map(|p| {
                g.iter()
                    .map(|m| m.get(p).copied())
                    .min()
                    .flatten()
                    .map(|o| (*p, o))
            })
            .collect()
    }
}

/// The task that owns one shard's writes.
#[derive(Debug)]
pub struct ShardWriter {
    /// The shard.
    pub shard: Shard,
    /// Consumer group, the key of the offsets.
    pub group: String,
    /// Topic, the key of the offsets.
    pub topic: String,
    /// Retry delays.
    pub backoff: Backoff,
    /// Where committed offsets are reported.
    pub progress: ShardProgress,
}

impl ShardWriter {
    /// Applies batches from `rx` in order until the channel closes. Each batch is retried
    /// until it commits; its memory is released right after.
    pub async fn run(self, mut rx: mpsc::Receiver<Batch>) {
        let shard = self.shard.name.clone();
        while let Some(batch) = rx.recv().await {
            let next = batch_offsets(&batch);
            let mut attempt = 0u32;
            loop {
                let started = Instant::now();
                let res = match self.shard.client().await {
                    Ok(mut c) => apply(&mut c, &self.group, &self.topic, &batch, &next)
                        .await
                        .map_err(|e| self.shard.err(e)),
                    Err(e) => Err(e),
                };
                match res {
                    Ok(a) => {
                        crate::metrics::batch_written(&shard, &batch, a, started.elapsed());
                        self.progress.advance(self.shard.index, &next);
                        break;
                    }
                    Err(e) => {
                        attempt += 1;
                        let wait = self.backoff.delay(attempt);
                        crate::metrics::write_retry(&shard);
                        tracing::warn!(shard = %shard, attempt, error = %e, retry_in_ms = wait.as_millis() as u64, "batch write failed; retrying");
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::batch::Row;

    fn row(partition: i32, offset: i64) -> Row {
        Row {
            partition,
            offset,
            reading: Reading {
                participant_id: "p".into(),
                metric: "m".into(),
                ts_micros: 0,
                value: 0.0,
                unit: None,
                device_id: None,
                study_id: None,
            },
        }
    }

    #[test]
    fn batch_offsets_cover_every_row() {
        let b = Batch {
            shard: 0,
            rows: vec![row(0, 5), row(1, 9), row(0, 7)],
            bytes: 0,
            progress: [(0, 6), (2, 40)].into(),
            permit: None,
        };
        assert_eq!(batch_offsets(&b), [(0, 8), (1, 10), (2, 40)].into());
    }

    #[test]
    fn safe_offsets_are_the_minimum_over_shards() {
        let p = ShardProgress::new(2);
        p.advance(0, &[(0, 10), (1, 5)].into());
        p.advance(1, &[(0, 7)].into());
        p.advance(1, &[(0, 3)].into());
        assert_eq!(
            p.safe_offsets(&[0, 1, 2]),
            [(0, 7)].into(),
            "never goes back; partition 1 unknown on shard 1"
        );
    }

    #[test]
    fn backoff_stays_under_its_ceiling() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for attempt in 1..40 {
            let ceiling = Duration::from_millis(100 * (1u64 << (attempt - 1).min(20)))
                .min(Duration::from_secs(2));
            assert!(b.delay(attempt) <= ceiling);
        }
    }
}
