//! The pipeline's part in participants' withdrawals ([`crate::data::consent`]): refusing
//! readings, buffering a split record's other readings once its dead letter is delivered,
//! taking a newer table, and rewinding after a stale batch.
//!
//! A record with refused readings is dead-lettered whole (reason `withdrawn` or `erased`);
//! its stored readings are encoded at once but buffered only when the dead letter is
//! delivered ([`Pipeline::dead_lettered`]), with a segment of the record even when nothing of
//! it is stored: the batch that moves the shard's offset past the record is the one that
//! carries its decision, so the writer checks it ([`crate::data::guard`]), and the offset
//! never passes a refused reading before its dead letter is delivered.

use bytes::{Bytes, BytesMut};
use rdkafka::message::{BorrowedMessage, Message as _};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::OwnedSemaphorePermit;
use vitalsink_common::measurement::Message;

use super::{Pipeline, Taken};
use crate::data::batch::Segment;
use crate::data::consent::{Consent, Label, Split};
use crate::data::copy_format::{encode_message, Source};
use crate::data::dlq::DeadLetter;

/// The stored readings of a record whose dead letter is being published.
#[derive(Debug)]
pub(super) struct Held {
    shard: usize,
    partition: i32,
    offset: i64,
    participant: String,
    /// Their COPY tuples (empty when every reading was refused).
    data: Bytes,
    rows: u32,
    permit: OwnedSemaphorePermit,
}

impl Pipeline {
    /// Refuses the readings `split` names of `message` (record `msg`, routed to `shard`):
    /// encodes the others and holds them until the dead letter is delivered, and returns the
    /// dead letter.
    pub(super) async fn refuse(
        &mut self,
        msg: &BorrowedMessage<'_>,
        shard: usize,
        message: Message<'_>,
        split: Split,
    ) -> Taken {
        let reason = split.reason().as_str();
        let participant = message.participant_id.to_string();
        let detail = split.detail(&participant, self.consents[shard].version());
        crate::metrics::readings_refused(reason, split.refused.len());
        tracing::debug!(partition = msg.partition(), offset = msg.offset(), %participant, reason, refused = split.refused.len(), kept = split.kept.len(), "readings refused");
        let src = Source::of(msg);
        let kept = Message {
            samples: split.kept,
            ..message
        };
        let mut data = BytesMut::new();
        if !kept.samples.is_empty() {
            encode_message(&mut data, &kept, &src);
        }
        let need = data.len() + std::mem::size_of::<Segment>();
        let need = u32::try_from(need.min(self.memory_cap)).unwrap_or(u32::MAX);
        let letter = DeadLetter::with_reason(msg, reason, detail, self.dlq_max_bytes);
        let Some(permit) = self.reserve(need).await else {
            return Taken::DeadLetter(letter); // the semaphore is never closed
        };
        self.counters.valid(shard, kept.samples.len());
        self.held = Some(Held {
            shard,
            partition: src.partition,
            offset: src.offset,
            participant,
            rows: u32::try_from(kept.samples.len()).unwrap_or(u32::MAX),
            data: data.freeze(),
            permit,
        });
        Taken::DeadLetter(letter)
    }

    /// The dead letter of the record at (`partition`, `offset`) is published (or given up):
    /// the record counts as consumed, and its stored readings, if some were refused, join
    /// their shard's buffer. Ignored when the partition is no longer assigned (its new owner
    /// consumes it again).
    pub async fn dead_lettered(&mut self, partition: i32, offset: i64) {
        let held = self
            .held
            .take()
            .filter(|h| (h.partition, h.offset) == (partition, offset));
        if !self.assigned.contains(&partition) {
            return;
        }
        if let Some(h) = held {
            let Some(buffer) = self.buffers.get_mut(h.shard) else {
                // A shard retired while the dead letter was published: a move removes a
                // shard only once every record routed to it is applied.
                tracing::error!(partition, offset, shard = h.shard, "the shard of a split record was retired; its stored readings are left to a replay");
                return;
            };
            let full = buffer.push_encoded(partition, offset, &h.data, h.rows, h.permit);
            self.labels[h.shard].note(&self.consents[h.shard], &h.participant);
            self.consumed.insert(partition, offset + 1);
            if full {
                self.cut(h.shard).await;
            }
            return;
        }
        self.consumed.insert(partition, offset + 1);
    }

    /// Decides shard `shard`'s readings by `consent` from now on, when it is newer than the
    /// table the pipeline has for it (or, with `force`, whatever its version: a writer read it
    /// in the transaction that refused a batch). What the shard has buffered was decided by
    /// the older table: it is cut first, so that every batch is decided by one table. Call
    /// only when no dead letter is pending ([`Pipeline::dead_lettered`]). Returns whether it
    /// was taken.
    pub async fn set_consent(&mut self, shard: &str, consent: Arc<Consent>, force: bool) -> bool {
        let Some(i) = self.shard_names.iter().position(|n| n == shard) else {
            return false;
        };
        if !force && consent.version() <= self.consents[i].version() {
            return false;
        }
        if !self.buffers[i].is_empty() {
            self.cut(i).await;
        }
        crate::metrics::statuses_version(shard, consent.version());
        tracing::info!(
            shard,
            version = consent.version(),
            was = self.consents[i].version(),
            "deciding by a new participant_status version"
        );
        self.consents[i] = consent;
        true
    }

    /// The `participant_status` version each shard's readings are decided by, in routing
    /// order.
    pub fn consent_versions(&self) -> Vec<i64> {
        self.consents.iter().map(|c| c.version()).collect()
    }

    /// Forgets everything consumed and not yet sent to a writer (buffers, a held record, the
    /// progress) and starts a new generation: batches cut before are refused by a writer that
    /// found one of them stale. The caller then positions every assigned partition where the
    /// shards resume it. Returns the new generation.
    pub fn rewind(&mut self) -> u64 {
        self.generation += 1;
        for (i, buffer) in self.buffers.iter_mut().enumerate() {
            drop(buffer.take(BTreeMap::new()));
            self.labels[i] = Label::default();
            self.last_cut[i] = (BTreeMap::new(), Instant::now());
        }
        self.held = None;
        self.consumed.clear();
        self.generation
    }

    /// The current generation ([`Pipeline::rewind`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }
}
