//! The `reshard` command's Prometheus metrics, served on `observability.listen` (default
//! `127.0.0.1:9466`, beside ingest's 9464 and the archiver's 9465) while a move runs.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `vitalsink_reshard_rows_copied_total` | counter | (rows copied to their new shard; its rate is the copy rate) |
//! | `vitalsink_reshard_rows_deleted_total` | counter | (rows deleted from their old shard) |
//! | `vitalsink_reshard_verified_total` | counter | `result` = `match` \| `mismatch` (participants verified) |
//! | `vitalsink_reshard_rows_left` | gauge | (rows of the move not copied yet) |
//! | `vitalsink_reshard_phase` | gauge | (last phase finished: 0 cutover, 1 copying, 2 verified, 3 switched, 4 done) |
//! | `vitalsink_reshard_cutover_lag_records` | gauge | (online: records of all partitions up to their cut-over not yet applied on every shard) |
//! | `vitalsink_reshard_partitions_cut_over` | gauge | (online: partitions whose cut-over record a worker has stored) |

use crate::state::Phase;

/// `rows` copied; `left` rows still to copy.
pub fn copied(rows: i64, left: i64) {
    metrics::counter!("vitalsink_reshard_rows_copied_total").increment(rows.max(0) as u64);
    metrics::gauge!("vitalsink_reshard_rows_left").set(left.max(0) as f64);
}

/// `rows` deleted from an old shard.
pub fn deleted(rows: i64) {
    metrics::counter!("vitalsink_reshard_rows_deleted_total").increment(rows.max(0) as u64);
}

/// One participant verified, its copy matching its source or not.
pub fn verified(matched: bool) {
    let result = if matched { "match" } else { "mismatch" };
    metrics::counter!("vitalsink_reshard_verified_total", "result" => result).increment(1);
}

/// The move finished `phase`.
pub fn phase(phase: Phase) {
    metrics::gauge!("vitalsink_reshard_phase").set(phase as u8 as f64);
}

/// Online: `partitions` cut over; `lag` records up to the cut-overs not applied everywhere.
pub fn cutover(partitions: usize, lag: i64) {
    metrics::gauge!("vitalsink_reshard_partitions_cut_over").set(partitions as f64);
    metrics::gauge!("vitalsink_reshard_cutover_lag_records").set(lag.max(0) as f64);
}
