//! vitalsink's ingest worker: consumes measurements from Kafka, validates them against the
//! contract in `schemas/`, routes each reading to its participant's shard and writes it
//! exactly once into that shard's `measurements` hypertable.
//!
//! Follow one record: [`worker::run`] (start-up, the consume loop, shutdown) →
//! [`data::pipeline::Pipeline::handle`] (decode, route by [`data::route`], decide each reading
//! by its participant's status with [`data::consent`], buffer or dead-letter via
//! [`data::dlq`]) → [`data::batch`] (COPY tuples of [`data::copy_format`], flushed on rows,
//! bytes or age) → [`data::writer`] (the status check of [`data::guard`], then COPY BINARY +
//! offsets in one transaction). Where a partition resumes after a restart or rebalance:
//! [`control::rebalance`] and [`data::offsets`]; after a batch decided by an older status
//! table: [`control::statuses`].
//!
//! Folders by role: [`data`] (where a record becomes a row) and [`control`] (the control
//! plane: rebalances, following the shard map through an online move, the writer fleet),
//! which drives [`data`] and is never imported by it; [`worker`] wires both. [`cli`],
//! [`error`], [`fatal`] and [`metrics`] serve them all; [`allocator`] fixes glibc's mmap
//! threshold before anything runs (the memory cap depends on it).

pub mod allocator;
pub mod cli;
pub mod control;
pub mod data;
pub mod error;
pub mod fatal;
pub mod metrics;
pub mod worker;

pub use error::{Error, Result};
