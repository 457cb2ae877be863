//! vitalsink's ingest worker: consumes measurements from Kafka, validates them against the
//! contract in `schemas/`, routes each reading to its participant's shard and writes it
//! exactly once into that shard's `measurements` hypertable.
//!
//! Follow one record: [`worker::run`] (wiring and the consume loop) →
//! [`pipeline::Pipeline::handle`] (decode, route, buffer or dead-letter) → [`batch`] (flush on
//! rows, bytes or age) → [`writer`] (COPY BINARY + offsets in one transaction). Where a
//! partition resumes after a restart or rebalance: [`context`] and [`offsets`].

pub mod batch;
pub mod cli;
pub mod context;
pub mod copy_format;
pub mod dlq;
pub mod epochs;
pub mod error;
pub mod fatal;
pub mod fleet;
pub mod follow;
pub mod metrics;
pub mod offsets;
pub mod pipeline;
pub mod worker;
pub mod writer;

pub use error::{Error, Result};
