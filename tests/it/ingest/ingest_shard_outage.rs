//! The ingest worker while a TimescaleDB shard is really stopped (`dev/stack stop-shard`) for
//! about 10 s in the middle of the load. Its own test binary: stopping a shard must not
//! disturb the other tests, and cargo runs test binaries one at a time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use vitalsink_tests::ingest_run::{
    assert_dead_letters, assert_exactly_once, dataset, log_tail, peak_rss_bytes, prepare,
    produce_in_background, stack_script, total_rows, wait_for_rows,
};
use vitalsink_tests::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_outage_of_ten_seconds_keeps_exactly_once_and_memory_under_the_cap() {
    let _stack = vitalsink_tests::stack_lock::exclusive().await;
    let stack = Stack::from_env();
    let (dbs, setup, dir) = prepare(&stack, "t_outage").await;
    let data = dataset();
    let log = dir.path().join("ingest.log");
    let mut worker = setup.spawn(&log);
    let producing = produce_in_background(&stack.brokers, &setup.topic, &data.records);
    let before = wait_for_rows(&dbs.shards, data.readings / 10, Duration::from_secs(120)).await;
    assert!(
        before < data.readings,
        "the load must still be running when the shard stops"
    );
    stack_script(&["stop-shard", "1"]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = total_rows(&dbs.shards[..1]).await;
    stack_script(&["start-shard", "1"]);

    let positions = producing.await.unwrap();
    let n = wait_for_rows(&dbs.shards, data.readings, Duration::from_secs(300)).await;
    assert_eq!(
        n,
        data.readings,
        "rows after the outage\n{}",
        log_tail(&log)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("retrying"),
        "the worker saw the outage and retried"
    );
    let rss = peak_rss_bytes(worker.id()).unwrap();
    assert!(
        rss < setup.memory_cap as u64,
        "peak RSS {} MiB over the {} MiB cap",
        rss >> 20,
        setup.memory_cap >> 20
    );
    eprintln!(
        "outage: rows before {before}, on shard0 during {during}, peak RSS {} MiB",
        rss >> 20
    );
    assert_dead_letters(&stack, &setup, &data, &positions).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_exactly_once(&dbs.shards, &data.expected).await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    dbs.drop_all().await;
}
