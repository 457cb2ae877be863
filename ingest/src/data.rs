//! The data path: where a record becomes a row, in the order it passes through.
//!
//! ```text
//! Kafka record → pipeline (decode against the contract, the cut-over check)
//!              → route     (which shard, by the record's epoch)
//!              → consent   (which readings the participant's status refuses)
//!              → batch     (the shard's buffer of COPY BINARY tuples: copy_format)
//!              → writer    (guard, then COPY + offsets in one transaction on the shard)
//!   rejected   → dlq       (the dead-letter topic, with the reason)
//!   refused    → dlq       (reason `withdrawn` / `erased`; the record's other readings go on)
//! ```
//!
//! [`pipeline::Pipeline::handle`] takes one record, [`route::Epochs::shard_for`] picks its
//! shard, [`consent::Consent::split`] decides its readings by the shard's participants'
//! statuses, [`batch::ShardBuffer::push`] encodes it ([`copy_format`]), [`pipeline::Pipeline::cut`]
//! hands a full or old batch to its [`writer::ShardWriter`], which checks its decisions
//! ([`guard`]) and applies it with [`writer::apply`]; a rejected record, or one with refused
//! readings (a withdrawn or erased participant), becomes a [`dlq::DeadLetter`]. Where a
//! partition resumes is read back from what the writers committed: [`offsets`].
//!
//! Nothing here imports the control plane ([`crate::control`]): it drives this path through
//! [`pipeline::Pipeline`]'s methods.

pub mod batch;
pub mod consent;
pub mod copy_format;
pub mod dlq;
pub mod guard;
pub mod offsets;
pub mod pipeline;
pub mod route;
pub mod writer;
