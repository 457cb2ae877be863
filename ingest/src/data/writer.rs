//! The shard writer: applies batches to one shard, exactly once, in the order they were cut.
//!
//! One transaction per batch:
//! 0. check that the batch's decisions hold under the shard's `participant_status` table
//!    ([`crate::data::guard`]: its shared advisory lock, then its version); a stale batch is
//!    rolled back and dropped with every later batch of its generation, and the consume loop
//!    is told ([`Stale`]) to rewind;
//! 1. lock the shard's `ingest_offsets` rows of the batch's partitions (`FOR UPDATE`, in
//!    partition order so that two workers never deadlock) and read `next_offset`;
//! 2. `COPY measurements … FROM STDIN BINARY` the rows whose offset is at or above it — rows
//!    below were applied before (by this worker before a crash, or by another worker that
//!    owned the partition), so they are skipped. The COPY runs in a savepoint: when the
//!    unique index `measurements_reading` refuses a row (a reading delivered again in another
//!    record: schemas/README.md, "A reading's identity"), the savepoint is rolled back and the
//!    same rows go through a temporary table and `INSERT … ON CONFLICT DO NOTHING`, which keeps
//!    each reading once and counts the rest as duplicates. Duplicates are rare, so most
//!    batches pay one savepoint, not the second copy;
//! 3. raise `next_offset` to the batch's progress (never lower it);
//! 4. commit. Rows and offsets become visible together or not at all.
//!
//! A failed attempt whose error is transient ([`vitalsink_common::retry`]: the shard is down,
//! failing over, out of connections) is retried with exponential backoff and full jitter, so
//! an outage only delays the batch; memory stays bounded because the consumer waits for the
//! batches' memory to come back. A permanent error (permission denied, a missing table, a
//! constraint) is not retried: the writer raises it ([`crate::fatal`]) and stops, and the
//! worker shuts down with the error; the batch is not committed, so its records are consumed
//! again after the fault is fixed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_util::sync::CancellationToken;
use vitalsink_common::db::Shard;
use vitalsink_common::retry::{Backoff, Class};

use crate::data::batch::{Batch, Segment};
use crate::data::consent::Consent;
use crate::data::copy_format::copy_in;
use crate::data::guard::{self, Check, Stale};
use crate::fatal::Fatal;
use vitalsink_common::columns::{column_defs, column_list};

/// What one applied batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Rows copied into the hypertable.
    pub written: u64,
    /// Rows skipped because the shard had applied them before.
    pub skipped: u64,
    /// Readings left out because the shard holds them already (delivered again in another
    /// record).
    pub duplicates: u64,
}

/// The offsets a batch moves the shard to: its progress, raised to one past the highest row
/// offset of every partition it has rows of.
pub fn batch_offsets(batch: &Batch) -> BTreeMap<i32, i64> {
    let mut next = batch.progress.clone();
    for s in &batch.segments {
        let e = next.entry(s.partition).or_insert(s.offset + 1);
        *e = (*e).max(s.offset + 1);
    }
    next
}

/// What became of a batch handed to [`apply`].
#[derive(Debug)]
pub enum Outcome {
    /// Committed.
    Applied(Applied),
    /// Not committed: decided by an older `participant_status` than the shard's, which
    /// decides some of its participants otherwise ([`crate::data::guard`]); carries the table.
    Stale(Arc<Consent>),
}

/// Applies `batch` in one transaction (see the module rule), moving the shard's offsets to
/// `next` ([`batch_offsets`] of the batch). `seen` is the writer's cache of the shard's
/// `participant_status` table ([`guard::check`]).
///
/// # Errors
/// The driver's error; the transaction is rolled back and nothing of the batch is kept.
pub async fn apply(
    client: &mut deadpool_postgres::ClientWrapper,
    group: &str,
    topic: &str,
    batch: &Batch,
    next: &BTreeMap<i32, i64>,
    seen: &mut Option<Arc<Consent>>,
) -> Result<Outcome, tokio_postgres::Error> {
    if next.is_empty() {
        return Ok(Outcome::Applied(Applied::default()));
    }
    let partitions: Vec<i32> = next.keys().copied().collect();
    let offsets: Vec<i64> = next.values().copied().collect();
    let tx = client.transaction().await?;
    if let Check::Stale(table) = guard::check(&tx, &batch.label, seen).await? {
        tx.rollback().await?;
        return Ok(Outcome::Stale(table));
    }
    // Prepared once per pooled connection (deadpool's statement cache), not per batch.
    let create = tx.prepare_cached(CREATE_OFFSETS_SQL).await?;
    let lock = tx.prepare_cached(LOCK_OFFSETS_SQL).await?;
    let advance = tx.prepare_cached(ADVANCE_OFFSETS_SQL).await?;
    tx.execute(
        &create,
        &[&group as &(dyn ToSql + Sync), &topic, &partitions],
    )
    .await?;
    let locked = tx
        .query(&lock, &[&group as &(dyn ToSql + Sync), &topic, &partitions])
        .await?;
    let applied: BTreeMap<i32, i64> = locked.iter().map(|r| (r.get(0), r.get(1))).collect();

    let mut out = Applied::default();
    let mut per_partition: BTreeMap<i32, i64> = BTreeMap::new();
    let kept = kept_parts(batch, |s| {
        let keep = s.offset >= applied.get(&s.partition).copied().unwrap_or(0);
        if keep {
            *per_partition.entry(s.partition).or_default() += i64::from(s.rows);
        } else {
            out.skipped += u64::from(s.rows);
        }
        keep
    });
    tx.batch_execute("SAVEPOINT vitalsink_copy").await?;
    match copy_in(&tx, "measurements", &kept).await {
        Ok(n) => out.written = n,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT vitalsink_copy")
                .await?;
            let (written, inserted) = insert_new(&tx, &kept).await?;
            out.duplicates = written - inserted.values().sum::<u64>();
            out.written = written - out.duplicates;
            per_partition = inserted
                .into_iter()
                .map(|(p, n)| (p, i64::try_from(n).unwrap_or(i64::MAX)))
                .collect();
        }
        Err(e) => return Err(e),
    }
    let rows: Vec<i64> = partitions
        .iter()
        .map(|p| per_partition.get(p).copied().unwrap_or(0))
        .collect();
    tx.execute(
        &advance,
        &[
            &group as &(dyn ToSql + Sync),
            &topic,
            &partitions,
            &offsets,
            &rows,
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(Outcome::Applied(out))
}

/// The duplicate-aware write: `kept` is COPYed into the session's staging table (created once
/// per connection, emptied at commit), then inserted with `ON CONFLICT DO NOTHING` on the
/// unique index `measurements_reading`, one statement per source partition so that each
/// partition's applied rows are counted. Needs no `SELECT` on `measurements` (the ingest role
/// has only `INSERT`; schemas/ROLES.md): the staging table is declared from
/// [`vitalsink_common::columns::column_defs`], not `LIKE measurements`, and nothing is
/// returned. Returns the rows staged and, per source partition, the rows inserted.
async fn insert_new(
    tx: &tokio_postgres::Transaction<'_>,
    kept: &[bytes::Bytes],
) -> Result<(u64, BTreeMap<i32, u64>), tokio_postgres::Error> {
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS {STAGING} ({}) ON COMMIT DELETE ROWS",
        column_defs()
    ))
    .await?;
    let staged = copy_in(tx, STAGING, kept).await?;
    let cols = column_list();
    let partitions = tx
        .query(
            &format!("SELECT DISTINCT src_partition FROM {STAGING}"),
            &[],
        )
        .await?;
    let insert = format!(
        "INSERT INTO measurements ({cols}) SELECT {cols} FROM {STAGING} \
         WHERE src_partition = $1 ON CONFLICT DO NOTHING"
    );
    let mut inserted = BTreeMap::new();
    for p in partitions.iter().map(|r| r.get::<_, i32>(0)) {
        inserted.insert(p, tx.execute(&insert, &[&p]).await?);
    }
    Ok((staged, inserted))
}

/// The session's staging table for [`insert_new`].
const STAGING: &str = "vitalsink_ingest_staging";

/// Creates missing offset rows of the batch's partitions at offset 0.
const CREATE_OFFSETS_SQL: &str =
    "INSERT INTO ingest_offsets (consumer_group, topic, kafka_partition, next_offset)
     SELECT $1, $2, p, 0 FROM unnest($3::int4[]) AS p
     ON CONFLICT DO NOTHING";
/// Locks the batch's offset rows in partition order and reads them.
const LOCK_OFFSETS_SQL: &str = "SELECT kafka_partition, next_offset FROM ingest_offsets
     WHERE consumer_group = $1 AND topic = $2 AND kafka_partition = ANY($3)
     ORDER BY kafka_partition FOR UPDATE";
/// Moves the offsets forward (never back) and counts the rows applied.
const ADVANCE_OFFSETS_SQL: &str = "UPDATE ingest_offsets o
     SET next_offset = GREATEST(o.next_offset, v.next_offset),
         rows_applied = o.rows_applied + v.rows, updated_at = now()
     FROM unnest($3::int4[], $4::int8[], $5::int8[]) AS v(kafka_partition, next_offset, rows)
     WHERE o.consumer_group = $1 AND o.topic = $2 AND o.kafka_partition = v.kafka_partition";

/// The byte ranges of `batch.data` whose segments `keep` accepts, adjacent ranges merged
/// (zero-copy slices; one slice when nothing is skipped).
fn kept_parts(batch: &Batch, mut keep: impl FnMut(&Segment) -> bool) -> Vec<bytes::Bytes> {
    let mut parts = Vec::new();
    let mut open: Option<(usize, usize)> = None;
    for s in &batch.segments {
        if keep(s) {
            open = match open {
                Some((a, b)) if b == s.start => Some((a, s.end)),
                Some((a, b)) => {
                    parts.push(batch.data.slice(a..b));
                    Some((s.start, s.end))
                }
                None => Some((s.start, s.end)),
            };
        }
    }
    if let Some((a, b)) = open {
        parts.push(batch.data.slice(a..b));
    }
    parts
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

    /// Tracks `shards` shards: new ones start with no progress, the last ones beyond are
    /// dropped (an online move added or removed them).
    pub fn resize(&self, shards: usize) {
        if let Ok(mut g) = self.0.lock() {
            g.resize(shards, BTreeMap::new());
        }
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
    /// Where a permanent error is raised.
    pub fatal: Fatal,
    /// Cancelled when the shutdown deadline has passed: a batch still being retried is
    /// given up (it is consumed again by the next owner of its partitions).
    pub abort: CancellationToken,
    /// Where a stale batch is reported (the consume loop rewinds).
    pub stale: mpsc::UnboundedSender<Stale>,
}

impl ShardWriter {
    /// Applies batches from `rx` in order until the channel closes. Each batch is retried
    /// while its error is transient, until it commits; its memory is released right after.
    /// A stale batch is dropped with every later one of its generation, and reported.
    /// Stops at a permanent error (raised to [`ShardWriter::fatal`]) or at `abort`.
    pub async fn run(self, mut rx: mpsc::Receiver<Batch>) {
        let shard = self.shard.name.clone();
        let mut seen: Option<Arc<Consent>> = None;
        // Batches of this generation and older are not committed: one of them was stale.
        let mut refused: Option<u64> = None;
        while let Some(batch) = rx.recv().await {
            if refused.is_some_and(|g| batch.label.generation <= g) {
                tracing::debug!(shard = %shard, generation = batch.label.generation, rows = batch.rows, "batch after a stale one dropped; its records are consumed again");
                continue;
            }
            let next = batch_offsets(&batch);
            let mut attempt = 0u32;
            loop {
                let started = Instant::now();
                let res = match self.shard.client().await {
                    Ok(mut c) => apply(&mut c, &self.group, &self.topic, &batch, &next, &mut seen)
                        .await
                        .map_err(|e| self.shard.err(e)),
                    Err(e) => Err(e),
                };
                match res {
                    Ok(Outcome::Stale(consent)) => {
                        let generation = batch.label.generation;
                        refused = Some(generation);
                        crate::metrics::stale_batch(&shard);
                        tracing::info!(shard = %shard, generation, version = consent.version(), rows = batch.rows, "batch decided by an older participant_status: rolled back; the worker rewinds");
                        let _ = self.stale.send(Stale {
                            shard: shard.clone(),
                            generation,
                            consent,
                        });
                        break;
                    }
                    Ok(Outcome::Applied(a)) => {
                        crate::metrics::batch_written(
                            &shard,
                            batch.rows,
                            a.written,
                            a.skipped,
                            a.duplicates,
                            started.elapsed(),
                        );
                        self.progress.advance(self.shard.index, &next);
                        break;
                    }
                    Err(e) if e.class() == Class::Permanent => {
                        self.fatal.raise("write", &e.kind(), &e);
                        return;
                    }
                    Err(e) => {
                        attempt += 1;
                        let wait = self.backoff.delay(attempt);
                        crate::metrics::write_retry(&shard);
                        tracing::warn!(shard = %shard, attempt, error = %e, retry_in_ms = wait.as_millis() as u64, "batch write failed; retrying");
                        tokio::select! {
                            _ = self.abort.cancelled() => {
                                tracing::warn!(shard = %shard, "shutdown deadline: batch given up, its records will be consumed again");
                                return;
                            }
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
