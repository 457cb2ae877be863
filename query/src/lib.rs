//! vitalsink's query engine: one SQL table, `measurements`, over every shard's hypertable
//! and the Parquet archive, each row counted once, on Apache DataFusion.
//!
//! Follow one query: [`cli`] → [`engine::session`] (DataFusion, memory pool, the archive's
//! store) → [`table::Measurements::scan`] → [`pushdown`] (shards, objects, SQL) →
//! [`snapshot::open`] (one snapshot per shard; archive and move state read in it) →
//! [`shard_scan::ShardScanExec`] per shard and [`archive_scan::plan`] for the archive.

pub mod archive_scan;
pub mod cli;
pub mod engine;
pub mod error;
pub mod pushdown;
pub mod shard_scan;
pub mod snapshot;
pub mod table;

pub use error::{Error, Result};
