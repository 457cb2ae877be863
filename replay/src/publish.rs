//! Publishing readings to the measurements topic: the reference producer.
//!
//! What a producer of the vitalsink contract (`schemas/README.md`) should do, and this one
//! does:
//! - **key** every record by `participant_id`, so one participant's readings stay in order on
//!   one partition;
//! - use the **batch form** (`samples`, one participant and one metric, at most
//!   [`MAX_BATCH_SAMPLES`] samples) for anything with more than a few readings, and keep each
//!   record within `validation.max_message_bytes` — larger ones are dead-lettered;
//! - an **idempotent producer** with `acks=all` (`enable.idempotence=true`), so broker
//!   retries neither lose nor duplicate nor reorder records;
//! - **timestamps** RFC 3339 UTC with microseconds (what the database stores), finite values.
//!
//! A failed delivery stops the run with the error (after librdkafka's own retries); records
//! already delivered stay delivered, so a rerun publishes them again (ingest writes every
//! record it receives: rerun into a fresh topic, or not at all).

use crate::error::{Error, Result};
use std::num::NonZeroU32;
pub use vitalsink_common::measurement::MAX_BATCH_SAMPLES;

mod encode;
pub use encode::{encode_batches, push_sample, BatchHeader};
mod producer;
pub use producer::Publisher;

/// Bytes of a record value beyond which no sample is added (the contract's default
/// `validation.max_message_bytes`).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_576;

/// How records are built and paced.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Measurements topic.
    pub topic: String,
    /// Samples per batch record, 1 to [`MAX_BATCH_SAMPLES`].
    pub batch_samples: usize,
    /// Largest record value, bytes (use the ingest workers' `validation.max_message_bytes`).
    pub max_message_bytes: usize,
    /// Average readings per second over the run (`None`: as fast as the broker takes them).
    /// Bursts up to one batch record; records hold at most `rate` samples.
    pub rate: Option<NonZeroU32>,
    /// Records awaiting delivery before sending waits.
    pub in_flight: usize,
}

impl PublishOptions {
    /// Checks the ranges.
    ///
    /// # Errors
    /// [`Error::Argument`] naming the option.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_BATCH_SAMPLES).contains(&self.batch_samples) {
            return Err(Error::Argument {
                name: "--batch-samples",
                detail: format!("{} not in 1..={MAX_BATCH_SAMPLES}", self.batch_samples),
            });
        }
        if self.max_message_bytes < 1024 {
            return Err(Error::Argument {
                name: "validation.max_message_bytes",
                detail: "below 1024 bytes".into(),
            });
        }
        if self.in_flight == 0 {
            return Err(Error::Argument {
                name: "--in-flight",
                detail: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
