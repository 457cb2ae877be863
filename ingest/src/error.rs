//! The error type of `vitalsink-ingest`.

/// Errors that stop the ingest worker: start-up failures, and once running, a permanent
/// error ([`crate::fatal`]); transient failures are retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration, database or Kafka set-up failed.
    #[error(transparent)]
    Common(#[from] vitalsink_common::Error),
    /// A Kafka client could not be built or subscribed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A permanent error stopped the running worker: `stage: error`, e.g.
    /// `write: shard shard1: db error: ERROR: permission denied for table measurements`.
    #[error("stopped by a permanent error in {0}")]
    Permanent(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
