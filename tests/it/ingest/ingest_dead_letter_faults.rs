//! The dead-letter path under what outside producers and operators do to it (issue 11):
//! records far larger than the dead-letter producer may send, published by a stock
//! confluent-kafka producer (`tests/scripts/produce_big.py`, `message.max.bytes` = 16 MiB;
//! the local broker, Tansu, has no record size limit of its own, so it takes them), and a
//! dead-letter topic that becomes unreachable while the worker runs. Real brokers, real
//! shards.
//!
//! Why the outage kills a second broker instead of deleting the topic: Tansu 0.6 keeps
//! accepting produce requests for a deleted topic from a client that has its metadata
//! cached (checked with confluent-kafka 2.16: offsets 0, 1, 2 acknowledged after the
//! deletion), so deletion is no outage there. The dead-letter topic is put on a second Tansu
//! (`kafka.dlq_properties."bootstrap.servers"`), which the test kills: connections refused,
//! deliveries time out, as for a dead-letter cluster that is down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};
use vitalsink_tests::broker::SpareBroker;
use vitalsink_tests::dataset::Dataset;
use vitalsink_tests::ingest_run::{
    assert_dead_letters, assert_exactly_once, dataset, endpoints_addr, http_get, log_tail,
    metric_sum, peak_rss_bytes, prepare, produce, produce_in_background, read_dead_letters,
    stop_gracefully, total_rows, wait_exit, wait_for_rows, wait_readyz, IngestSetup,
};
use vitalsink_tests::Stack;

/// librdkafka's default `message.max.bytes`, which the worker's dead-letter producer keeps.
const DLQ_PRODUCER_MAX_BYTES: usize = 1_000_000;

/// One big record the outside producer published.
#[derive(Debug)]
struct Big {
    partition: i32,
    offset: i64,
    size: usize,
    sha256: String,
}

/// Publishes one record of each `(size, partition)` with the Python confluent-kafka producer.
fn produce_big(brokers: &str, topic: &str, specs: &[(usize, i32)]) -> Vec<Big> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/produce_big.py");
    let out = Command::new("python3")
        .arg(script)
        .args([brokers, topic])
        .args(specs.iter().map(|(s, p)| format!("{s}:{p}")))
        .output()
        .expect("python3 missing: run dev/setup");
    assert!(
        out.status.success(),
        "produce_big.py failed (confluent-kafka missing? run dev/setup): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Big {
                partition: v["partition"].as_i64().unwrap() as i32,
                offset: v["offset"].as_i64().unwrap(),
                size: v["size"].as_u64().unwrap() as usize,
                sha256: v["sha256"].as_str().unwrap().to_string(),
            }
        })
        .collect()
}

/// The bytes produce_big.py sends: byte i is i % 251.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_10_mib_are_dead_lettered_truncated_and_every_valid_reading_lands_once() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let (dbs, setup, dir) = prepare(&stack, "t_bigdlq").await;
    let data = dataset();
    let log = dir.path().join("ingest.log");
    let worker = setup.spawn(&log);
    let producing = produce_in_background(&stack.brokers, &setup.topic, &data.records);
    // The big records go in while the valid load is flowing, on four of the six partitions.
    wait_for_rows(&dbs.shards, data.readings / 10, Duration::from_secs(120)).await;
    let big = produce_big(
        &stack.brokers,
        &setup.topic,
        &[
            (10 << 20, 0),
            (1536 << 10, 1),
            (10 << 20, 3),
            (1536 << 10, 5),
        ],
    );
    assert_eq!(big.len(), 4);
    let positions = producing.await.unwrap();

    let n = wait_for_rows(&dbs.shards, data.readings, Duration::from_secs(300)).await;
    assert_eq!(n, data.readings, "every valid reading\n{}", log_tail(&log));
    assert_exactly_once(&dbs.shards, &data.expected).await;

    let malformed: BTreeMap<(i32, i64), &[u8]> = data
        .records
        .iter()
        .zip(&positions)
        .filter(|(r, _)| r.rejected.is_some())
        .map(|(r, pos)| (*pos, r.payload.as_slice()))
        .collect();
    let seen = read_dead_letters(
        &stack.brokers,
        &setup.dlq_topic,
        malformed.len() + big.len(),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(seen.len(), malformed.len() + big.len(), "dead letters");
    for b in &big {
        let d = &seen[&(b.partition, b.offset)];
        assert_eq!(d.header("vitalsink.reason"), "oversize");
        assert_eq!(d.header("vitalsink.source.topic"), setup.topic);
        assert_eq!(d.header("vitalsink.truncated"), "true");
        assert_eq!(d.header("vitalsink.original.size"), b.size.to_string());
        assert_eq!(
            d.header("vitalsink.original.sha256"),
            b.sha256,
            "hashlib's digest"
        );
        assert!(
            !d.value.is_empty() && d.value.len() < DLQ_PRODUCER_MAX_BYTES,
            "a prefix that fits the producer: {} bytes",
            d.value.len()
        );
        assert_eq!(
            d.value,
            pattern(d.value.len()),
            "a true prefix of the original"
        );
    }
    // Small enough rejected records keep their whole value.
    for (pos, payload) in &malformed {
        let d = &seen[pos];
        assert_eq!(d.header("vitalsink.truncated"), "false");
        assert_eq!(
            d.header("vitalsink.original.size"),
            payload.len().to_string()
        );
        assert_eq!(&d.value, payload);
    }
    let ten = big.iter().find(|b| b.size == 10 << 20).unwrap();
    let d = &seen[&(ten.partition, ten.offset)];
    eprintln!(
        "dead letter of a 10 MiB record: value {} bytes, headers {:?}; worker peak RSS {} MiB",
        d.value.len(),
        d.headers,
        peak_rss_bytes(worker.id()).unwrap_or(0) >> 20
    );
    stop_gracefully(worker, &log).await;
    dbs.drop_all().await;
}

/// The records of `data` split in two: the first half of the valid records, and the rest
/// in publishing order (every malformed record among them).
fn split(data: &Dataset) -> (Dataset, Dataset) {
    let valid: Vec<usize> = (0..data.records.len())
        .filter(|&i| data.records[i].rejected.is_none())
        .collect();
    let first: std::collections::BTreeSet<usize> =
        valid[..valid.len() / 2].iter().copied().collect();
    let pick = |keep: bool| Dataset {
        records: (0..data.records.len())
            .filter(|i| first.contains(i) == keep)
            .map(|i| data.records[i].clone())
            .collect(),
        expected: Default::default(),
        readings: 0,
    };
    (pick(true), pick(false))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_dead_letter_outage_exits_within_the_deadline_and_loses_nothing() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let (dbs, setup, dir) = prepare(&stack, "t_dlqout").await;
    let mut spare = dead_letters_on_a_spare_broker(&setup).await;
    let deadline = Duration::from_secs(20); // ingest.shutdown_deadline of IngestSetup
    let data = dataset();
    let (first, rest) = split(&data);
    let log = dir.path().join("ingest.log");
    let worker = setup.spawn(&log);
    let addr = endpoints_addr(&log).await;
    let mut positions = produce(&stack.brokers, &setup.topic, &first.records).await;
    // The worker is in the group and writing; then the dead-letter cluster goes down.
    wait_for_rows(&dbs.shards, data.readings / 3, Duration::from_secs(120)).await;
    spare.kill();
    positions.extend(produce(&stack.brokers, &setup.topic, &rest.records).await);

    // The worker cannot publish the first malformed record: it stops consuming, stays
    // alive and says why it is not ready.
    // "unavailable": the form of a failed, retried delivery (not only one still
    // unacknowledged).
    let reason = wait_readyz(&addr, 503, "unavailable", 120)
        .await
        .unwrap_or_default();
    assert!(
        !reason.is_empty(),
        "/readyz never reported the dead-letter outage\n{}",
        log_tail(&log)
    );
    assert_eq!(
        http_get(&addr, "/healthz").await.0,
        200,
        "alive during the outage"
    );
    let stalled = total_rows(&dbs.shards).await;
    assert!(
        stalled < data.readings,
        "consumption paused: {stalled} rows"
    );

    let rss = peak_rss_bytes(worker.id()).unwrap();
    assert!(
        rss < setup.memory_cap as u64,
        "peak RSS {} MiB over the {} MiB cap",
        rss >> 20,
        setup.memory_cap >> 20
    );
    let started = Instant::now();
    stop_gracefully(worker, &log).await;
    let took = started.elapsed();
    assert!(
        took < deadline,
        "SIGTERM took {took:?}, over ingest.shutdown_deadline {deadline:?}\n{}",
        log_tail(&log)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("dead-letter publish failed; retrying"),
        "the outage was retried\n{}",
        log_tail(&log)
    );

    // The dead-letter cluster comes back (empty); a new worker re-creates the topic and
    // finishes the job with nothing lost.
    spare.restart().await;
    let worker = setup.spawn(&log);
    let n = wait_for_rows(&dbs.shards, data.readings, Duration::from_secs(300)).await;
    assert_eq!(
        n,
        data.readings,
        "rows after the restart\n{}",
        log_tail(&log)
    );
    assert_exactly_once(&dbs.shards, &data.expected).await;
    // Every malformed record (all were published after the topic was deleted) is there.
    let published = Dataset {
        records: first.records.into_iter().chain(rest.records).collect(),
        ..data.clone()
    };
    let dlq_cluster = Stack {
        brokers: spare.addr.clone(),
        ..stack.clone()
    };
    assert_dead_letters(&dlq_cluster, &setup, &published, &positions).await;
    eprintln!("dead-letter outage: /readyz said {reason:?}; {stalled} of {} rows in when SIGTERM came; peak RSS {} MiB; exit took {took:?}", data.readings, rss >> 20);
    stop_gracefully(worker, &log).await;
    dbs.drop_all().await;
}

/// A spare broker holding `setup`'s dead-letter topic (the worker creates it there at
/// start-up), with short delivery attempts so that an outage is seen as errors and retried
/// (the worker's default is 30 s).
async fn dead_letters_on_a_spare_broker(setup: &IngestSetup) -> SpareBroker {
    let spare = SpareBroker::start().await;
    setup.set_table(
        "kafka.dlq_properties",
        &[
            ("bootstrap.servers", spare.addr.as_str()),
            ("message.timeout.ms", "3000"),
        ],
    );
    spare
}

/// `GET /readyz`.
async fn readyz(addr: &str) -> (u16, String) {
    http_get(addr, "/readyz").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constraint_violation_stops_the_worker_loudly_and_loses_nothing() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let (dbs, setup, dir) = prepare(&stack, "t_permanent").await;
    let data = dataset();
    let log = dir.path().join("ingest.log");
    let mut worker = setup.spawn(&log);
    let addr = endpoints_addr(&log).await;
    // After the migrations, a constraint that about half of the readings break, on shard 1
    // only: retrying the batch can never succeed.
    for _ in 0..300 {
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("ingest running")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shard1 = vitalsink_tests::connect(&dbs.shards[1].url).await;
    shard1
        .batch_execute("ALTER TABLE measurements ADD CONSTRAINT below_500 CHECK (value < 500)")
        .await
        .unwrap();
    produce(&stack.brokers, &setup.topic, &data.records).await;

    // Failed, not ready, saying why; its metric counts the error.
    let reason = wait_readyz(&addr, 503, "failed", 240)
        .await
        .unwrap_or_default();
    assert!(
        reason.contains("23514") && reason.contains("below_500"),
        "/readyz: {reason:?}\n{}",
        log_tail(&log)
    );
    assert_eq!(http_get(&addr, "/healthz").await.0, 200);
    let metrics = http_get(&addr, "/metrics").await.1;
    assert_eq!(
        metric_sum(
            &metrics,
            "vitalsink_ingest_permanent_errors_total",
            &["stage=\"write\"", "kind=\"23514\""]
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(metric_sum(&metrics, "vitalsink_ingest_failed", &[]), 1.0);
    let text = std::fs::read_to_string(&log).unwrap();
    let loud = text
        .lines()
        .find(|l| l.contains("permanent error"))
        .unwrap_or_else(|| panic!("no permanent-error line\n{}", log_tail(&log)))
        .to_string();
    assert!(loud.contains("ERROR"), "at error level: {loud}");
    assert!(
        loud.contains("23514") && loud.contains("below_500"),
        "names the error: {loud}"
    );
    assert!(
        !text.contains("batch write failed; retrying"),
        "a permanent error is not retried"
    );
    // SIGTERM ends the failed worker with exit code 1.
    let pid = worker.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = wait_exit(&mut worker, Duration::from_secs(30)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{}", log_tail(&log));

    // Fixed by the operator, a new worker writes everything exactly once.
    shard1
        .batch_execute("ALTER TABLE measurements DROP CONSTRAINT below_500")
        .await
        .unwrap();
    let worker = setup.spawn(&log);
    let n = wait_for_rows(&dbs.shards, data.readings, Duration::from_secs(300)).await;
    assert_eq!(n, data.readings, "rows after the fix\n{}", log_tail(&log));
    assert_exactly_once(&dbs.shards, &data.expected).await;
    eprintln!("permanent error: {loud}");
    stop_gracefully(worker, &log).await;
    dbs.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_outage_that_ends_is_ridden_out_without_a_restart() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let (dbs, setup, dir) = prepare(&stack, "t_dlqback").await;
    let mut spare = dead_letters_on_a_spare_broker(&setup).await;
    let data = dataset();
    let (first, rest) = split(&data);
    let log = dir.path().join("ingest.log");
    let worker = setup.spawn(&log);
    let addr = endpoints_addr(&log).await;
    let mut positions = produce(&stack.brokers, &setup.topic, &first.records).await;
    wait_for_rows(&dbs.shards, data.readings / 3, Duration::from_secs(120)).await;
    spare.kill();
    positions.extend(produce(&stack.brokers, &setup.topic, &rest.records).await);
    let seen = wait_readyz(&addr, 503, "unavailable", 120).await.is_some();
    assert!(seen, "the outage shows on /readyz\n{}", log_tail(&log));
    // The cluster and its topic come back: the same worker carries on by itself.
    spare.restart().await;
    let dlq_cluster = Stack {
        brokers: spare.addr.clone(),
        ..stack.clone()
    };
    vitalsink_common::kafka::ensure_topic(&dlq_cluster.kafka(), &setup.dlq_topic, 6)
        .await
        .unwrap();
    let n = wait_for_rows(&dbs.shards, data.readings, Duration::from_secs(300)).await;
    assert_eq!(
        n,
        data.readings,
        "rows after the outage\n{}",
        log_tail(&log)
    );
    assert_exactly_once(&dbs.shards, &data.expected).await;
    let published = Dataset {
        records: first.records.into_iter().chain(rest.records).collect(),
        ..data.clone()
    };
    assert_dead_letters(&dlq_cluster, &setup, &published, &positions).await;
    assert_eq!(
        readyz(&addr).await.0,
        200,
        "ready again\n{}",
        log_tail(&log)
    );
    stop_gracefully(worker, &log).await;
    dbs.drop_all().await;
}
