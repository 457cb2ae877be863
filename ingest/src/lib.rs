//! vitalsink's ingest worker: consumes measurements from Kafka, validates them against the
//! contract in `schemas/`, routes each reading to its participant's shard and writes it
//! exactly once into that shard's `measurements` hypertable.

pub mod cli;
pub mod error;

pub use error::{Error, Result};
