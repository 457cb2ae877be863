//! The dead-letter queue: a rejected record is published, with its original key and bytes,
//! to `kafka.dlq_topic` with headers naming why and where it came from:
//!
//! | header | value |
//! |---|---|
//! | `vitalsink.reason` | the reason code (`schemas/README.md`), e.g. `invalid_json` |
//! | `vitalsink.detail` | what exactly was wrong |
//! | `vitalsink.source.topic` / `.partition` / `.offset` | the original record's position |
//!
//! The consumer waits for the broker's acknowledgement before it counts the record as
//! consumed, so a rejected record is never lost; after a crash it may be dead-lettered twice
//! (at least once; deduplicate by the source headers).

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;
use vitalsink_common::config::KafkaConfig;
use vitalsink_common::kafka::client_config;
use vitalsink_common::measurement::Rejection;

use crate::writer::Backoff;

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

/// Where a rejected record came from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Publishes rejected records to the dead-letter topic.
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    backoff: Backoff,
}

impl DeadLetters {
    /// An idempotent producer (`enable.idempotence=true`, `acks=all`) for `cfg.dlq_topic`.
    ///
    /// # Errors
    /// The client cannot be built (a bad `kafka.properties` entry).
    pub fn new(cfg: &KafkaConfig, backoff: Backoff) -> Result<Self, rdkafka::error::KafkaError> {
        let producer = client_config(cfg)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .create()?;
        Ok(Self {
            producer,
            topic: cfg.dlq_topic.clone(),
            backoff,
        })
    }

    /// Publishes one rejected record and waits until the broker has it, retrying with backoff
    /// for as long as it takes.
    pub async fn send(
        &self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        src: Source<'_>,
        why: &Rejection,
    ) {
        let partition = src.partition.to_string();
        let offset = src.offset.to_string();
        let mut attempt = 0u32;
        loop {
            let headers = OwnedHeaders::new_with_capacity(5)
                .insert(Header {
                    key: REASON_HEADER,
                    value: Some(why.reason.code()),
                })
                .insert(Header {
                    key: DETAIL_HEADER,
                    value: Some(why.detail.as_str()),
                })
                .insert(Header {
                    key: SOURCE_TOPIC_HEADER,
                    value: Some(src.topic),
                })
                .insert(Header {
                    key: SOURCE_PARTITION_HEADER,
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: SOURCE_OFFSET_HEADER,
                    value: Some(offset.as_str()),
                });
            let mut rec: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers);
            if let Some(k) = key {
                rec = rec.key(k);
            }
            if let Some(p) = payload {
                rec = rec.payload(p);
            }
            match self.producer.send(rec, Duration::from_secs(30)).await {
                Ok(_) => return,
                Err((e, _)) => {
                    attempt += 1;
                    let wait = self.backoff.delay(attempt);
                    tracing::warn!(error = %e, attempt, "dead-letter publish failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}
