//! The error type of `vitalsink-ingest`.

/// Errors that stop the ingest worker (at start-up; once running, failures are retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration, database or Kafka set-up failed.
    #[error(transparent)]
    Common(#[from] vitalsink_common::Error),
    /// A Kafka client could not be built or subscribed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
