//! The error type of `vitalsink-reshard`.

/// Errors of the `reshard` command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration, shard map or database errors of the shared helpers.
    #[error(transparent)]
    Common(#[from] vitalsink_common::Error),
    /// The change cannot be made with jump-hash routing, or names a shard wrongly. Nothing
    /// was changed.
    #[error("cannot {action}: {message}")]
    Refused {
        /// What was asked, e.g. `remove shard shard1`.
        action: String,
        /// Why it cannot be done.
        message: String,
    },
    /// Publishing the cut-over records, or reading the topic's partitions, failed.
    #[error("kafka: {0}")]
    Kafka(String),
    /// An online move's cut-over did not complete in time (ingest workers stopped or far
    /// behind); running the command again waits again. Nothing is lost.
    #[error(
        "cut-over not reached within {waited_s} s: {detail}; run the command again to keep waiting"
    )]
    Stalled {
        /// Seconds waited.
        waited_s: u64,
        /// Partitions not cut over and records behind.
        detail: String,
    },
    /// A participant's rows on its old and new shard disagree.
    #[error("verification of participant {participant}: {message}")]
    Verify {
        /// The participant.
        participant: String,
        /// What differs, and what was done about it.
        message: String,
    },
}

impl From<rdkafka::error::KafkaError> for Error {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        Error::Kafka(e.to_string())
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
