//! The archiver's Prometheus metrics (served on `observability.listen` at `/metrics` while
//! `run` works).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `vitalsink_archiver_chunks_total` | counter | `shard`, `result` = `archived` \| `failed` \| `held` \| `busy` |
//! | `vitalsink_archiver_rows_exported_total` | counter | `shard` |
//! | `vitalsink_archiver_bytes_written_total` | counter | `shard` (Parquet bytes) |
//! | `vitalsink_archiver_export_seconds` | histogram | `shard` (one chunk's export) |
//! | `vitalsink_archiver_objects_discarded_total` | counter | `shard` (unadopted attempts deleted) |
//! | `vitalsink_archiver_rows_restored_total` | counter | `shard` |
//! | `vitalsink_archiver_duplicates_total` | counter | `shard` (readings of late chunks already archived, dropped before their export: [`crate::export::dedup`]) |
//! | `vitalsink_archiver_objects_renamed_total` | counter | `shard` (by `migrate-archive`) |
//! | `vitalsink_archiver_last_run_success_timestamp_seconds` | gauge | (Unix time of the last run without failures) |

use std::time::Duration;

/// One chunk finished with `result`.
pub fn chunk(shard: &str, result: &'static str) {
    metrics::counter!("vitalsink_archiver_chunks_total", "shard" => shard.to_string(), "result" => result)
        .increment(1);
}

/// One chunk exported: rows, Parquet bytes and time taken.
pub fn exported(shard: &str, rows: u64, bytes: u64, took: Duration) {
    let s = shard.to_string();
    metrics::counter!("vitalsink_archiver_rows_exported_total", "shard" => s.clone())
        .increment(rows);
    metrics::counter!("vitalsink_archiver_bytes_written_total", "shard" => s.clone())
        .increment(bytes);
    metrics::histogram!("vitalsink_archiver_export_seconds", "shard" => s)
        .record(took.as_secs_f64());
}

/// An attempt's object was discarded.
pub fn discarded(shard: &str) {
    metrics::counter!("vitalsink_archiver_objects_discarded_total", "shard" => shard.to_string())
        .increment(1);
}

/// Rows restored into `shard`.
pub fn restored(shard: &str, rows: u64) {
    metrics::counter!("vitalsink_archiver_rows_restored_total", "shard" => shard.to_string())
        .increment(rows);
}

/// `rows` readings already archived were dropped from a chunk of `shard` before its export.
pub fn duplicates(shard: &str, rows: u64) {
    metrics::counter!("vitalsink_archiver_duplicates_total", "shard" => shard.to_string())
        .increment(rows);
}

/// An object was renamed by `migrate-archive`.
pub fn renamed(shard: &str) {
    metrics::counter!("vitalsink_archiver_objects_renamed_total", "shard" => shard.to_string())
        .increment(1);
}

/// A run finished without failures.
pub fn run_succeeded() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    metrics::gauge!("vitalsink_archiver_last_run_success_timestamp_seconds").set(now);
}
