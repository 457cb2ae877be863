//! The ingest worker against the real stack (Tansu, 2 TimescaleDB shards): a known data set
//! of 100,000 readings from 1,000 participants in both message forms, with about 1% malformed
//! records of 8 kinds, must end up exactly once on the right shards, with every malformed
//! record dead-lettered with its reason — also when the worker is killed with SIGKILL at
//! random moments.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rand::Rng;
use std::time::Duration;
use vitalsink_tests::ingest_run::{
    assert_dead_letters, assert_exactly_once, dataset, endpoints_addr, http_get, log_tail,
    metric_sum, prepare, produce_in_background, stop_gracefully, total_rows, wait_for_rows,
};
use vitalsink_tests::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_dataset_lands_exactly_once_and_rejects_go_to_the_dlq() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let (dbs, setup, dir) = prepare(&stack, "t_ingest").await;
    let data = dataset();
    let log = dir.path().join("ingest.log");
    let worker = setup.spawn(&log);
    let positions = produce_in_background(&stack.brokers, &setup.topic, &data.records)
        .await
        .unwrap();

    let n = wait_for_rows(&dbs.shards, data.readings, Duration::from_secs(300)).await;
    assert_eq!(n, data.readings, "rows in the shards\n{}", log_tail(&log));
    assert_dead_letters(&stack, &setup, &data, &positions).await;
    assert_endpoints(&log, &data).await;

    // Graceful shutdown: SIGTERM, flush, exit 0.
    stop_gracefully(worker, &log).await;
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("shutdown complete"));

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_exactly_once(&dbs.shards, &data.expected).await;
    dbs.drop_all().await;
}

/// `/healthz`, `/readyz` and `/metrics` of a worker that has drained `data`: alive, ready
/// (partitions assigned, shards reachable), and counters that agree with the data set.
async fn assert_endpoints(log: &std::path::Path, data: &vitalsink_tests::dataset::Dataset) {
    let addr = endpoints_addr(log).await;
    assert_eq!(http_get(&addr, "/healthz").await.0, 200);
    let (status, body) = http_get(&addr, "/readyz").await;
    assert_eq!(status, 200, "/readyz: {body}");
    let (status, m) = http_get(&addr, "/metrics").await;
    assert_eq!(status, 200);
    let written = metric_sum(&m, "vitalsink_ingest_rows_written_total", &[]);
    assert_eq!(written as i64, data.readings, "rows written, over shards");
    for shard in ["shard0", "shard1"] {
        let label = format!("shard=\"{shard}\"");
        assert!(
            metric_sum(&m, "vitalsink_ingest_rows_in_total", &[&label]) > 0.0,
            "rows in for {shard}"
        );
        assert!(metric_sum(&m, "vitalsink_ingest_flush_seconds_count", &[&label]) > 0.0);
        assert!(metric_sum(&m, "vitalsink_ingest_batch_rows_count", &[&label]) > 0.0);
    }
    let mut by_reason = std::collections::BTreeMap::<&str, usize>::new();
    for why in data.records.iter().filter_map(|r| r.rejected) {
        *by_reason.entry(why.code()).or_default() += 1;
    }
    for (reason, n) in by_reason {
        let label = format!("reason=\"{reason}\"");
        assert_eq!(
            metric_sum(&m, "vitalsink_ingest_dlq_total", &[&label]) as usize,
            n,
            "DLQ counter for {reason}"
        );
    }
    assert!(
        m.contains("vitalsink_ingest_consumer_lag{"),
        "consumer lag per partition is exported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_keeps_exactly_once() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let (dbs, setup, dir) = prepare(&stack, "t_kill").await;
    let data = dataset();
    let log = dir.path().join("ingest.log");
    let mut worker = setup.spawn(&log);
    // The load arrives in 5 waves. In each, the worker is killed at a random moment after
    // its first new rows land (a restarted worker first waits for the group to drop the
    // killed member, so a fixed timer would often kill it before it wrote anything).
    const KILLS: usize = 5;
    let wave = data.records.len().div_ceil(KILLS);
    let mut positions = Vec::new();
    let mut rows_at_kill = Vec::new();
    for records in data.records.chunks(wave) {
        let before = total_rows(&dbs.shards).await;
        positions.extend(
            produce_in_background(&stack.brokers, &setup.topic, records)
                .await
                .unwrap(),
        );
        wait_for_rows(&dbs.shards, before + 1, Duration::from_secs(120)).await;
        let wait_ms = rand::rng().random_range(0..1_500);
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        worker.kill().unwrap(); // SIGKILL
        worker.wait().unwrap();
        rows_at_kill.push(total_rows(&dbs.shards).await);
        worker = setup.spawn(&log);
    }
    let n = wait_for_rows(&dbs.shards, data.readings, Duration::from_secs(300)).await;
    assert_eq!(
        n,
        data.readings,
        "rows after {KILLS} kills (rows at each kill: {rows_at_kill:?})\n{}",
        log_tail(&log)
    );
    assert_eq!(rows_at_kill.len(), KILLS);
    let mid_load = rows_at_kill
        .iter()
        .filter(|&&r| r > 0 && r < data.readings)
        .count();
    assert!(
        mid_load >= KILLS - 1,
        "kills must land mid-load: rows at each kill {rows_at_kill:?}"
    );
    assert_dead_letters(&stack, &setup, &data, &positions).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_exactly_once(&dbs.shards, &data.expected).await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    dbs.drop_all().await;
}
