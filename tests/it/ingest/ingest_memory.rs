//! Issue 27, item 6: the worker's peak RSS stays under `ingest.memory_cap_bytes` while it
//! drains a large backlog, at 2 and at 4 shards. The backlog (750,000 readings in 255,000
//! records, single readings and 100-sample batches) is in the topic before the worker
//! starts, so librdkafka's prefetch, the batches and the writers are all as full as the cap
//! lets them be. The process's peak RSS (`VmHWM`) is the measure: everything the process
//! holds, the binary's own pages, librdkafka and the allocator included. (Before issue 27,
//! 75.7–92 MiB: whole batches as single COPY messages grew every connection's write buffer,
//! and glibc's moving mmap threshold kept freed batch buffers in the heap.)
//! (`ingest_shard_outage` checks the same bound through a shard outage, `ingest_failover`
//! through a failover.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use vitalsink_common::config::ShardConfig;
use vitalsink_common::kafka::ensure_topic;
use vitalsink_tests::dataset::generate;
use vitalsink_tests::ingest_run::{
    assert_exactly_once, log_tail, peak_rss_bytes, produce, wait_for_rows, IngestSetup,
};
use vitalsink_tests::{unique, ShardDbs, Stack};

/// Batches as the worker's default (`ingest.batch_max_rows`).
const BATCH_ROWS: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_rss_stays_under_the_cap_draining_a_backlog_at_2_and_4_shards() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let now_ms = chrono::Utc::now().timestamp_millis();
    // 1,000 participants × (250 single readings + 5 batches of 100 samples) = 750,000.
    let data = generate(1_000, 250, 5, 100, 0, now_ms);
    let topic = unique("measurements");
    for t in [topic.clone(), format!("{topic}.dlq")] {
        ensure_topic(&stack.kafka(), &t, 6).await.unwrap();
    }
    produce(&stack.brokers, &topic, &data.records).await;

    let two = ShardDbs::create(&stack, "t_mem2").await;
    let four_a = ShardDbs::create(&stack, "t_mem4a").await;
    let four_b = ShardDbs::create(&stack, "t_mem4b").await;
    let four: Vec<ShardConfig> = four_a
        .shards
        .iter()
        .chain(&four_b.shards)
        .enumerate()
        .map(|(i, s)| ShardConfig {
            name: format!("shard{i}"),
            ..s.clone()
        })
        .collect();
    let mut report = Vec::new();
    for shards in [two.shards.clone(), four] {
        let dir = tempfile::tempdir().unwrap();
        let setup = IngestSetup::for_topic(&stack, &shards, dir.path(), BATCH_ROWS, topic.clone());
        let log = dir.path().join("ingest.log");
        let mut worker = setup.spawn(&log);
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The worker executed itself again with glibc's mmap threshold fixed.
        let environ = std::fs::read(format!("/proc/{}/environ", worker.id())).unwrap();
        assert!(
            environ
                .split(|b| *b == 0)
                .any(|v| v.starts_with(b"MALLOC_MMAP_THRESHOLD_=")),
            "the worker runs with MALLOC_MMAP_THRESHOLD_ set"
        );
        let n = wait_for_rows(&shards, data.readings, Duration::from_secs(600)).await;
        let rss = peak_rss_bytes(worker.id()).unwrap();
        worker.kill().unwrap();
        worker.wait().unwrap();
        assert_eq!(n, data.readings, "drained\n{}", log_tail(&log));
        assert_exactly_once(&shards, &data.expected).await;
        report.push(format!(
            "{} shards: peak RSS {:.1} MiB of the {} MiB cap",
            shards.len(),
            rss as f64 / f64::from(1 << 20),
            setup.memory_cap >> 20
        ));
        assert!(
            rss < setup.memory_cap as u64,
            "{} shards: peak RSS {:.1} MiB over the {} MiB cap\n{}",
            shards.len(),
            rss as f64 / f64::from(1 << 20),
            setup.memory_cap >> 20,
            log_tail(&log)
        );
    }
    // Straight to the process's stderr, past the test harness's capture, so that a passing
    // run prints the measurement too.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "ingest_memory: {}", report.join("; "));
    for dbs in [two, four_a, four_b] {
        dbs.drop_all().await;
    }
}
