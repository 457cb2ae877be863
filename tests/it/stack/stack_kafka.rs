//! The real broker (Tansu, started by `dev/stack up`): topics are created through the admin
//! API, records produced with an idempotent producer and consumed through a consumer group
//! that commits its offsets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::time::Duration;
use vitalsink_common::kafka::{client_config, ensure_topic};
use vitalsink_tests::{unique, Stack};

const PARTITIONS: i32 = 3;
const RECORDS: usize = 2_000;

#[tokio::test]
async fn produce_and_consume_through_a_consumer_group() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let kafka = stack.kafka();
    let topic = unique("stack-kafka");
    ensure_topic(&kafka, &topic, PARTITIONS)
        .await
        .expect("broker unreachable: run `dev/stack up`");
    // Creating it again is a no-op.
    ensure_topic(&kafka, &topic, PARTITIONS).await.unwrap();

    let producer: FutureProducer = client_config(&kafka)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .unwrap();
    for i in 0..RECORDS {
        let key = format!("P{:04}", i % 97);
        let payload = format!("{{\"n\":{i}}}");
        let headers = OwnedHeaders::new().insert(Header {
            key: "seq",
            value: Some(&i.to_string()),
        });
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(&key)
                    .payload(&payload)
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    let group = unique("stack-group");
    let consumer: StreamConsumer = vitalsink_tests::reader_config(&kafka.brokers, &group)
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();

    let mut seen = BTreeSet::new();
    let mut partitions = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while seen.len() < RECORDS {
        let msg = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {RECORDS} records consumed in 90 s", seen.len()))
            .unwrap();
        let payload: serde_like::N = serde_like::parse(msg.payload().unwrap());
        let seq = msg
            .headers()
            .unwrap()
            .iter()
            .find(|h| h.key == "seq")
            .unwrap();
        assert_eq!(
            seq.value.unwrap(),
            payload.0.to_string().as_bytes(),
            "header survives the round trip"
        );
        // The key decides the partition: the same key always lands on the same partition.
        partitions.insert(msg.partition());
        assert!(
            seen.insert(payload.0),
            "record {} delivered twice",
            payload.0
        );
        consumer.store_offset_from_message(&msg).ok();
    }
    assert_eq!(seen.len(), RECORDS);
    assert_eq!(
        partitions.len(),
        PARTITIONS as usize,
        "keys spread over every partition"
    );
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();

    // The group's committed offsets add up to every record.
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(&topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    let total: i64 = committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            other => panic!(
                "partition {} has no committed offset: {other:?}",
                e.partition()
            ),
        })
        .sum();
    assert_eq!(total, RECORDS as i64);
}

/// A tiny parser for the `{"n":123}` payloads, to keep this test free of serde.
mod serde_like {
    pub struct N(pub usize);
    pub fn parse(b: &[u8]) -> N {
        let s = std::str::from_utf8(b).unwrap();
        N(s.trim_start_matches("{\"n\":")
            .trim_end_matches('}')
            .parse()
            .unwrap())
    }
}
