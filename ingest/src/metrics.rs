//! The ingest worker's Prometheus metrics (served on `observability.listen` at `/metrics`).
//! Every stage reports here with plain numbers; this module imports nothing of the crate.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `vitalsink_ingest_records_total` | counter | `result` = `valid` \| `rejected` |
//! | `vitalsink_ingest_dlq_total` | counter | `reason` (records dead-lettered; `withdrawn` and `erased` count records with refused readings) |
//! | `vitalsink_ingest_refused_total` | counter | `reason` = `withdrawn` \| `erased` (readings not stored because of the participant's status) |
//! | `vitalsink_ingest_statuses_version` | gauge | `shard` (the `participant_status` version its readings are decided by) |
//! | `vitalsink_ingest_stale_batches_total` | counter | `shard` (batches rolled back: decided by an older `participant_status`) |
//! | `vitalsink_ingest_rewinds_total` | counter | (the worker consumed again from the shards' offsets after a stale batch) |
//! | `vitalsink_ingest_rows_in_total` | counter | `shard` (rows routed to it) |
//! | `vitalsink_ingest_rows_written_total` | counter | `shard` |
//! | `vitalsink_ingest_rows_skipped_total` | counter | `shard` (already applied, after a restart or rebalance) |
//! | `vitalsink_ingest_batches_total` | counter | `shard` |
//! | `vitalsink_ingest_batch_rows` | histogram | `shard` |
//! | `vitalsink_ingest_flush_seconds` | histogram | `shard` |
//! | `vitalsink_ingest_write_retries_total` | counter | `shard` |
//! | `vitalsink_ingest_permanent_errors_total` | counter | `stage` = `write` \| `resume` \| `dead_letter` \| `migrate` \| `statuses` \| `rewind`, `kind` (SQLSTATE or Kafka error) |
//! | `vitalsink_ingest_failed` | gauge | (1 once a permanent error stopped the worker) |
//! | `vitalsink_ingest_dlq_truncated_total` | counter | (dead letters sent as a prefix) |
//! | `vitalsink_ingest_dlq_retries_total` | counter | (transient dead-letter publish failures) |
//! | `vitalsink_ingest_dlq_refused_total` | counter | (dead letters the broker refused even at their shortest) |
//! | `vitalsink_ingest_buffered_bytes` | gauge | (memory held by batches, bytes) |
//! | `vitalsink_ingest_consumer_lag` | gauge | `partition` (records, from librdkafka statistics) |
//! | `vitalsink_ingest_partitions_assigned` | gauge | (partitions of the topic this worker holds now) |
//! | `vitalsink_ingest_unassigned_seconds` | gauge | (seconds this worker has held no partition while its topic has some; 0 while it holds one) |

use std::time::Duration;
use vitalsink_common::measurement::RejectReason;

/// The consume loop's per-record counters, registered once: a `counter!` with labels per
/// record costs a key allocation and a registry lookup, measurable at 10^5 records/s.
#[derive(Debug, Clone)]
pub struct RecordCounters {
    valid: metrics::Counter,
    rows_in: Vec<metrics::Counter>,
}

impl RecordCounters {
    /// Handles for shards named `shards`, in routing order.
    pub fn new(shards: &[String]) -> Self {
        Self {
            valid: metrics::counter!("vitalsink_ingest_records_total", "result" => "valid"),
            rows_in: shards
                .iter()
                .map(|s| metrics::counter!("vitalsink_ingest_rows_in_total", "shard" => s.clone()))
                .collect(),
        }
    }

    /// A record was decoded into `rows` readings for shard index `shard`.
    pub fn valid(&self, shard: usize, rows: usize) {
        self.valid.increment(1);
        if let Some(c) = self.rows_in.get(shard) {
            c.increment(rows as u64);
        }
    }
}

/// A record was rejected and dead-lettered.
pub fn record_rejected(reason: RejectReason) {
    metrics::counter!("vitalsink_ingest_records_total", "result" => "rejected").increment(1);
    metrics::counter!("vitalsink_ingest_dlq_total", "reason" => reason.code()).increment(1);
}

/// `readings` readings of one record were refused for `reason` (`withdrawn`, `erased`): the
/// record is dead-lettered.
pub fn readings_refused(reason: &'static str, readings: usize) {
    metrics::counter!("vitalsink_ingest_dlq_total", "reason" => reason).increment(1);
    metrics::counter!("vitalsink_ingest_refused_total", "reason" => reason)
        .increment(readings as u64);
}

/// Shard `shard`'s readings are now decided by `participant_status` version `version`.
pub fn statuses_version(shard: &str, version: i64) {
    metrics::gauge!("vitalsink_ingest_statuses_version", "shard" => shard.to_string())
        .set(version as f64);
}

/// A batch for `shard` was rolled back: decided by an older `participant_status`.
pub fn stale_batch(shard: &str) {
    metrics::counter!("vitalsink_ingest_stale_batches_total", "shard" => shard.to_string())
        .increment(1);
}

/// The worker rewound to the shards' offsets after a stale batch.
pub fn rewound() {
    metrics::counter!("vitalsink_ingest_rewinds_total").increment(1);
}

/// A batch of `rows` rows committed on `shard` in `took`: `written` rows copied, `skipped`
/// applied before, `duplicates` readings the shard held already (the writer's `Applied`).
pub fn batch_written(
    shard: &str,
    rows: usize,
    written: u64,
    skipped: u64,
    duplicates: u64,
    took: Duration,
) {
    let s = shard.to_string();
    metrics::counter!("vitalsink_ingest_rows_written_total", "shard" => s.clone())
        .increment(written);
    metrics::counter!("vitalsink_ingest_rows_skipped_total", "shard" => s.clone())
        .increment(skipped);
    // Readings the shard held already (schemas/README.md, "A reading's identity").
    metrics::counter!("vitalsink_ingest_duplicates_total", "shard" => s.clone())
        .increment(duplicates);
    if duplicates > 0 {
        tracing::info!(
            shard,
            duplicates,
            written,
            "readings delivered again left out"
        );
    }
    metrics::counter!("vitalsink_ingest_batches_total", "shard" => s.clone()).increment(1);
    metrics::histogram!("vitalsink_ingest_batch_rows", "shard" => s.clone()).record(rows as f64);
    metrics::histogram!("vitalsink_ingest_flush_seconds", "shard" => s).record(took.as_secs_f64());
}

/// A write to `shard` failed and will be retried.
pub fn write_retry(shard: &str) {
    metrics::counter!("vitalsink_ingest_write_retries_total", "shard" => shard.to_string())
        .increment(1);
}

/// A permanent error of `stage` of kind `kind` stopped the worker ([`crate::fatal`]).
pub fn permanent_error(stage: &'static str, kind: &str) {
    metrics::counter!("vitalsink_ingest_permanent_errors_total", "stage" => stage, "kind" => kind.to_string())
        .increment(1);
}

/// The worker is in its failed state.
pub fn failed() {
    metrics::gauge!("vitalsink_ingest_failed").set(1.0);
}

/// A dead letter was sent as a prefix of the original.
pub fn dead_letter_truncated() {
    metrics::counter!("vitalsink_ingest_dlq_truncated_total").increment(1);
}

/// A dead-letter publish failed transiently and will be retried.
pub fn dead_letter_retry() {
    metrics::counter!("vitalsink_ingest_dlq_retries_total").increment(1);
}

/// The broker refused a dead letter even at its shortest.
pub fn dead_letter_refused() {
    metrics::counter!("vitalsink_ingest_dlq_refused_total").increment(1);
}

/// Memory held by buffered and in-flight batches, bytes.
pub fn buffered_bytes(bytes: usize) {
    metrics::gauge!("vitalsink_ingest_buffered_bytes").set(bytes as f64);
}

/// Consumer lag of one partition, records.
pub fn consumer_lag(partition: i32, lag: i64) {
    metrics::gauge!("vitalsink_ingest_consumer_lag", "partition" => partition.to_string())
        .set(lag as f64);
}

/// The worker holds `n` partitions of its topic.
pub fn partitions_assigned(n: usize) {
    metrics::gauge!("vitalsink_ingest_partitions_assigned").set(n as f64);
}

/// The worker has held no partition for `seconds` while its topic has some (0: it holds one).
pub fn unassigned_seconds(seconds: f64) {
    metrics::gauge!("vitalsink_ingest_unassigned_seconds").set(seconds);
}

/// A partition cut over to `epoch` (a cut-over control record stored by this worker).
pub fn cut_over(epoch: i32) {
    metrics::counter!("vitalsink_ingest_cutovers_total").increment(1);
    metrics::gauge!("vitalsink_ingest_epoch_pending").set(f64::from(epoch));
}
