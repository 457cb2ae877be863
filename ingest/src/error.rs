//! The error type of `vitalsink-ingest`.

/// Errors that stop the ingest worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration, database or Kafka set-up failed.
    #[error(transparent)]
    Common(#[from] vitalsink_common::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
