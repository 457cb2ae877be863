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
    /// Kafka no longer holds records a shard still needs: partition `partition` of `topic`
    /// resumes at `next_offset` (the shards' lowest stored `ingest_offsets.next_offset`, e.g.
    /// after a restore from backup) but its low watermark (first offset still held) is
    /// `low_watermark` > `next_offset` ([`crate::control::retention`]).
    #[error(
        "{topic}[{partition}]: the shards resume at offset {next_offset} but Kafka's low watermark is {low_watermark}: \
         records {next_offset}..{low_watermark} were deleted (retention shorter than the gap since the shard's restore point); \
         refusing to skip them"
    )]
    RetentionGap {
        /// The measurements topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Where the shards resume it (stored `next_offset`).
        next_offset: i64,
        /// The partition's log-start offset on the broker.
        low_watermark: i64,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
