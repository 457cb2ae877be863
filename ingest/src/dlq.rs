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

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, ProducerContext};
use rdkafka::util::Timeout;
use rdkafka::ClientContext;
use std::sync::Arc;
use tokio::sync::oneshot;
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
    backoff: Backoff,
}

impl DeadLetters {
    /// An idempotent producer (`enable.idempotence=true`, `acks=all`) for `cfg.dlq_topic`.
    ///
    /// # Errors
    /// The client cannot be built (a bad `kafka.properties` entry).
    pub fn new(cfg: &KafkaConfig, backoff: Backoff) -> Result<Self, rdkafka::error::KafkaError> {
        let producer: BaseProducer<Delivery> = client_config(cfg)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .create_with_context(Delivery)?;
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
            let (report, delivered) = oneshot::channel();
            let mut rec: BaseRecord<'_, [u8], [u8], _> =
                BaseRecord::with_opaque_to(&self.topic, Box::new(report)).headers(headers);
            if let Some(k) = key {
                rec = rec.key(k);
            }
            if let Some(p) = payload {
                rec = rec.payload(p);
            }
            let outcome = match self.producer.send(rec) {
                Ok(()) => delivered.await.unwrap_or(Err(KafkaError::Canceled)),
                Err((e, _)) => Err(e),
            };
            match outcome {
                Ok(()) => return,
                Err(e) => {
                    attempt += 1;
                    let wait = self.backoff.delay(attempt);
                    tracing::warn!(error = %e, attempt, "dead-letter publish failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}
