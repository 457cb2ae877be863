//! The dead-letter queue: a rejected record is published to `kafka.dlq_topic` with its
//! original key and bytes — or, when they do not fit, a prefix of them — and headers naming
//! why, where it came from and what it was:
//!
//! | header | value |
//! |---|---|
//! | `vitalsink.reason` | the reason code (`schemas/README.md`), e.g. `invalid_json`, or `withdrawn` / `erased` |
//! | `vitalsink.detail` | what exactly was wrong (at most 1 KiB) |
//! | `vitalsink.source.topic` / `.partition` / `.offset` | the original record's position |
//! | `vitalsink.original.size` | the original value's length, bytes (decimal) |
//! | `vitalsink.original.sha256` | SHA-256 of the original value, 64 lower-case hex digits |
//! | `vitalsink.truncated` | `true` when the value (or key) is only a prefix, else `false` |
//! | `vitalsink.original.key_size` | the original key's length, bytes; only when the key is cut |
//!
//! **Size.** A record may be larger than the dead-letter producer may send: a producer with
//! `message.max.bytes` = 16 MiB writes a 10 MiB record to a broker that allows it, while
//! librdkafka's default `message.max.bytes` is 1,000,000 bytes (librdkafka CONFIGURATION.md)
//! and a topic's `max.message.bytes` may be lower still. Such a record is sent as a prefix
//! that fits the producer's `message.max.bytes` (headers and 1 KiB of framing reserved); if
//! the broker still answers `MESSAGE_TOO_LARGE`, the prefix is halved until it fits. The
//! original can be fetched from the source topic at the headers' position while it is
//! retained, and checked against the digest.
//!
//! **Errors** ([`vitalsink_common::retry::kafka_class`]): a transient error (broker
//! unreachable, topic deleted, timeout) is retried with backoff for as long as it lasts —
//! the worker stops consuming meanwhile and reports why on `/readyz`, and SIGTERM ends the
//! wait (the record is consumed again later); a record the broker refuses even at its
//! shortest is given up with an error log (the original stays in the source topic); an error
//! no record can get past (authorization, invalid topic) stops the worker.
//!
//! The consumer waits for the broker's acknowledgement before it counts the record as
//! consumed, so a rejected record is never lost; after a crash it may be dead-lettered twice
//! (at least once; deduplicate by the source headers).

use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, ProducerContext};
use rdkafka::util::Timeout;
use rdkafka::ClientContext;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use vitalsink_common::config::KafkaConfig;
use vitalsink_common::kafka::client_config;
use vitalsink_common::measurement::Rejection;
use vitalsink_common::retry::{kafka_class, Backoff, ProduceClass};

/// Header carrying the reason code.
pub const REASON_HEADER: &str = "vitalsink.reason";
/// Header carrying the detail.
pub const DETAIL_HEADER: &str = "vitalsink.detail";
/// Header carrying the source topic.
pub const SOURCE_TOPIC_HEADER: &str = "vitalsink.source.topic";
/// Header carrying the source partition (decimal).
pub const SOURCE_PARTITION_HEADER: &str = "vitalsink.source.partition";
/// Header carrying the source offset (decimal).
pub const SOURCE_OFFSET_HEADER: &str = "vitalsink.source.offset";
/// Header carrying the original value's length in bytes (decimal).
pub const ORIGINAL_SIZE_HEADER: &str = "vitalsink.original.size";
/// Header carrying the SHA-256 of the original value (hex).
pub const ORIGINAL_SHA256_HEADER: &str = "vitalsink.original.sha256";
/// Header carrying the original key's length in bytes, present only when the key was cut.
pub const ORIGINAL_KEY_SIZE_HEADER: &str = "vitalsink.original.key_size";
/// Header saying whether the value (or key) is only a prefix: `true` or `false`.
pub const TRUNCATED_HEADER: &str = "vitalsink.truncated";

/// librdkafka's default `message.max.bytes` (CONFIGURATION.md), used when
/// `kafka.properties` does not set it.
pub const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;
/// Bytes of the limit left for the record's framing (length fields, timestamps, the record
/// batch header of 61 bytes in the v2 format, KIP-98), with room to spare.
const FRAMING_BYTES: usize = 1024;
/// Longest `vitalsink.detail`, bytes.
const MAX_DETAIL_BYTES: usize = 1024;

/// A rejected record, ready to be dead-lettered: at most the producer's
/// `message.max.bytes` of its key and value, plus what identifies the original.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// A prefix of the original key (`None`: the record had none).
    pub key: Option<Vec<u8>>,
    /// A prefix of the original value (`None`: the record had none).
    pub value: Option<Vec<u8>>,
    /// Length of the original key, bytes.
    pub key_size: usize,
    /// Length of the original value, bytes.
    pub value_size: usize,
    /// SHA-256 of the original value, hex.
    pub sha256: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// The reason code (`vitalsink.reason`): a
    /// [`vitalsink_common::measurement::RejectReason`] code, or `withdrawn` /
    /// `erased` for readings refused by a participant's status
    /// ([`crate::data::consent::Split::reason`]).
    pub reason: &'static str,
    /// What exactly was wrong (`vitalsink.detail`, cut to 1 KiB when sent).
    pub detail: String,
}

impl DeadLetter {
    /// Takes what the dead letter needs of `msg`: its digest and size, and at most
    /// `max_bytes` of its key and of its value (the copy is bounded by configuration, not
    /// by the record).
    pub fn new(msg: &BorrowedMessage<'_>, why: Rejection, max_bytes: usize) -> Self {
        Self::with_reason(msg, why.reason.code(), why.detail, max_bytes)
    }

    /// As [`DeadLetter::new`], with reason code `reason` (see [`DeadLetter::reason`]) and
    /// `detail`.
    pub fn with_reason(
        msg: &BorrowedMessage<'_>,
        reason: &'static str,
        detail: String,
        max_bytes: usize,
    ) -> Self {
        let value = msg.payload();
        let key = msg.key();
        let prefix = |b: &[u8]| b[..b.len().min(max_bytes)].to_vec();
        Self {
            key_size: key.map_or(0, <[u8]>::len),
            value_size: value.map_or(0, <[u8]>::len),
            sha256: sha256_hex(value.unwrap_or_default()),
            key: key.map(prefix),
            value: value.map(prefix),
            partition: msg.partition(),
            offset: msg.offset(),
            reason,
            detail,
        }
    }
}

/// SHA-256 of `bytes` as 64 lower-case hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What became of a dead letter.
#[derive(Debug)]
pub enum Outcome {
    /// The topic has it; `truncated` when only a prefix fitted.
    Delivered {
        /// Whether the key or value is a prefix.
        truncated: bool,
        /// Bytes of the value sent.
        value_bytes: usize,
    },
    /// The broker refuses the record even at its shortest (an invalid record): it is given
    /// up; the original stays in the source topic at its position.
    Refused(KafkaError),
}

/// Hands each delivery report to the task waiting for it.
struct Delivery;

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = Box<oneshot::Sender<Result<(), KafkaError>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, waiting: Self::DeliveryOpaque) {
        let _ = waiting.send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone()));
    }
}

/// Publishes rejected records to the dead-letter topic.
///
/// Delivery reports are served by one thread blocked in `rd_kafka_queue_poll` until an event
/// arrives. (rdkafka's `FutureProducer` polls in 100 ms slices and spins through the last
/// sub-millisecond of each, about 1% of a core for an idle dead-letter topic.)
pub struct DeadLetters {
    producer: Arc<BaseProducer<Delivery>>,
    topic: String,
    source_topic: String,
    backoff: Backoff,
    max_bytes: usize,
    /// The last transient error while a send is retrying; `None` otherwise.
    trouble: Mutex<Option<String>>,
}

/// How long librdkafka tries to deliver one dead letter before reporting a failure
/// (`message.timeout.ms`; its default of 300 s would hide an outage from `/readyz` for five
/// minutes). The send is then retried with backoff.
const DELIVERY_TIMEOUT_MS: &str = "30000";

impl DeadLetters {
    /// A producer (`acks=all`, not idempotent: see the body) for `cfg.dlq_topic`,
    /// dead-lettering records of `cfg.topic`, configured by `kafka.properties` and then
    /// `kafka.dlq_properties`.
    ///
    /// # Errors
    /// The client cannot be built (a bad `kafka.properties` entry).
    pub fn new(cfg: &KafkaConfig, backoff: Backoff) -> Result<Self, KafkaError> {
        let mut config = client_config(cfg);
        // Not idempotent: an idempotent producer whose cluster lost its producer state (a
        // cluster rebuilt, the local broker's in-memory storage restarted) times out every
        // delivery afterwards and never recovers (seen with librdkafka 2.12 and 2.16 against a
        // restarted Tansu), which would turn a transient outage into a stuck worker. Dead
        // letters are at least once anyway: one is in flight at a time, and a duplicate is
        // told by its source headers.
        config
            .set("enable.idempotence", "false")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", DELIVERY_TIMEOUT_MS)
            // The worker creates the dead-letter topic at start-up with
            // `ingest.topic_partitions`; a deleted one must be an outage the operator sees,
            // not re-created by a produce with the broker's defaults (librdkafka's producer
            // default is `true`).
            .set("allow.auto.create.topics", "false");
        for (k, v) in cfg.properties.iter().chain(&cfg.dlq_properties) {
            config.set(k, v);
        }
        let max_bytes = config
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES);
        let producer: BaseProducer<Delivery> = config.create_with_context(Delivery)?;
        let producer = Arc::new(producer);
        let reports = Arc::clone(&producer);
        // Lives as long as the process: it blocks until the next event.
        std::thread::Builder::new()
            .name("dlq-delivery".into())
            .spawn(move || reports.poll(Timeout::Never))
            .map_err(|e| KafkaError::ClientCreation(format!("delivery thread: {e}")))?;
        Ok(Self {
            producer,
            topic: cfg.dlq_topic.clone(),
            source_topic: cfg.topic.clone(),
            backoff,
            max_bytes,
            trouble: Mutex::new(None),
        })
    }

    /// The producer's `message.max.bytes`: no dead letter is larger.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Why dead letters cannot be published right now (the last transient error of a send
    /// that is still retrying), for `/readyz`; `None` when they can.
    pub fn trouble(&self) -> Option<String> {
        self.trouble.lock().ok().and_then(|g| g.clone())
    }

    fn set_trouble(&self, t: Option<String>) {
        if let Ok(mut g) = self.trouble.lock() {
            *g = t;
        }
    }

    /// Publishes `letter` and waits until the broker has it (see the module doc for sizes and
    /// errors). Transient errors are retried with backoff without end: drop the future to
    /// stop (shutdown).
    ///
    /// # Errors
    /// An error no retry can fix for any record (`ProduceClass::Fatal`): the caller stops.
    pub async fn send(&self, letter: &DeadLetter) -> Result<Outcome, KafkaError> {
        let key = letter.key.as_deref().unwrap_or_default();
        let value = letter.value.as_deref().unwrap_or_default();
        let partition = letter.partition.to_string();
        let offset = letter.offset.to_string();
        let size = letter.value_size.to_string();
        let key_size = letter.key_size.to_string();
        let detail = cut_str(&letter.detail, MAX_DETAIL_BYTES);
        let fixed: [(&str, &str); 8] = [
            (REASON_HEADER, letter.reason),
            (DETAIL_HEADER, detail),
            (SOURCE_TOPIC_HEADER, &self.source_topic),
            (SOURCE_PARTITION_HEADER, &partition),
            (SOURCE_OFFSET_HEADER, &offset),
            (ORIGINAL_SIZE_HEADER, &size),
            (ORIGINAL_SHA256_HEADER, &letter.sha256),
            (ORIGINAL_KEY_SIZE_HEADER, &key_size),
        ];
        let header_bytes: usize = fixed
            .iter()
            .chain([(TRUNCATED_HEADER, "false")].iter())
            .map(|(k, v)| k.len() + v.len() + 10)
            .sum();
        let mut budget = self.max_bytes.saturating_sub(header_bytes + FRAMING_BYTES);
        let mut attempt = 0u32;
        loop {
            let key_keep = key.len().min(budget);
            let value_keep = value.len().min(budget - key_keep);
            let key_cut = key_keep < letter.key_size;
            let truncated = key_cut || value_keep < letter.value_size;
            // The key-size header only when the key is cut (the last of `fixed`).
            let shown = if key_cut { &fixed[..] } else { &fixed[..7] };
            let headers = shown
                .iter()
                .chain([(TRUNCATED_HEADER, if truncated { "true" } else { "false" })].iter())
                .fold(OwnedHeaders::new_with_capacity(9), |h, (k, v)| {
                    h.insert(Header {
                        key: k,
                        value: Some(*v),
                    })
                });
            let (report, delivered) = oneshot::channel();
            let mut rec: BaseRecord<'_, [u8], [u8], _> =
                BaseRecord::with_opaque_to(&self.topic, Box::new(report)).headers(headers);
            if letter.key.is_some() {
                rec = rec.key(&key[..key_keep]);
            }
            if letter.value.is_some() {
                rec = rec.payload(&value[..value_keep]);
            }
            let outcome = match self.producer.send(rec) {
                Ok(()) => delivered.await.unwrap_or(Err(KafkaError::Canceled)),
                Err((e, _)) => Err(e),
            };
            let e = match outcome {
                Ok(()) => {
                    self.set_trouble(None);
                    if truncated {
                        crate::metrics::dead_letter_truncated();
                    }
                    return Ok(Outcome::Delivered {
                        truncated,
                        value_bytes: value_keep,
                    });
                }
                Err(e) => e,
            };
            match kafka_class(&e) {
                ProduceClass::TooLarge if key_keep + value_keep > 0 => {
                    // The topic allows less than the producer: halve until it fits.
                    budget = (key_keep + value_keep) / 2;
                    tracing::warn!(error = %e, partition = letter.partition, offset = letter.offset, retry_with_bytes = budget, "dead letter too large for the topic; sending a shorter prefix");
                }
                ProduceClass::TooLarge | ProduceClass::RecordRejected => {
                    self.set_trouble(None);
                    return Ok(Outcome::Refused(e));
                }
                ProduceClass::Fatal => {
                    self.set_trouble(None);
                    return Err(e);
                }
                ProduceClass::Transient => {
                    attempt += 1;
                    let wait = self.backoff.delay(attempt);
                    crate::metrics::dead_letter_retry();
                    self.set_trouble(Some(format!(
                        "dead-letter topic {} unavailable ({e}); consumption paused at partition {} offset {}",
                        self.topic, letter.partition, letter.offset
                    )));
                    tracing::warn!(error = %e, attempt, partition = letter.partition, offset = letter.offset, retry_in_ms = wait.as_millis() as u64, "dead-letter publish failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_the_sha256_of_the_bytes() {
        // FIPS 180-2, appendix B.1: SHA-256("abc").
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn details_are_cut_on_a_character_boundary() {
        assert_eq!(cut_str("abc", 10), "abc");
        assert_eq!(cut_str("aé", 2), "a");
        assert_eq!(cut_str("aéb", 3), "aé");
    }
}
