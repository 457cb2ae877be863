//! vitalsink's archiver: moves aged hypertable chunks from every shard to verified Parquet
//! files on a NAS path or S3-compatible storage, and restores them.

pub mod cli;
pub mod error;

pub use error::{Error, Result};
