//! vitalsink's query engine: one SQL table, `measurements`, over every shard's hypertable
//! and the Parquet archive, each row counted once, on Apache DataFusion.
//!
//! Follow one query: [`cli`] or [`flight`] → [`engine::Engine::plan`] (reads only, on a
//! read-only catalog; DataFusion, memory pool, the archive's store) →
//! [`table::Measurements`]'s `scan` → [`pushdown`] (shards, objects, SQL) →
//! [`snapshot::open`] (one snapshot per shard on a [`sessions`] connection; archive and move
//! state read in it) → [`shard_scan::ShardScanExec`] per shard (rows into Arrow:
//! [`shard_rows`]) and [`archive_scan::plan`] for the archive. An
//! aggregate over that union is then computed on the shards where it can be
//! ([`aggregate::AggregatePushdown`], the first physical optimizer rule: each shard's scan
//! becomes a [`aggregate::ShardAggregateExec`] returning partial states).
//!
//! Beside `measurements` the catalog holds the trial's tables of the map shard
//! ([`trial_tables`]: `audit_log`, `participants`, `participant_status_changes`). With
//! `--lock NAME` ([`locked`]) `measurements` reads the objects of a dataset lock only.

pub mod access;
pub mod aggregate;
pub mod archive_scan;
pub mod cli;
pub mod engine;
pub mod error;
pub mod flight;
pub mod locked;
pub mod pushdown;
pub mod sessions;
pub mod shard_rows;
pub mod shard_scan;
pub mod snapshot;
pub mod table;
pub mod trial_tables;

pub use error::{Error, Result};

/// Where `query serve` answers Flight SQL by default.
pub const DEFAULT_FLIGHT_LISTEN: &str = "127.0.0.1:50051";
/// Where `query serve` serves `/metrics`, `/healthz` and `/readyz` when
/// `observability.listen` is unset (ingest 9464, archiver 9465, reshard 9466).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9467";

/// Compares two secrets in time independent of where they differ.
pub(crate) fn secret_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
