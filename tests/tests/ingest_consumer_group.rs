//! Two ingest workers in one consumer group share the partitions; one stops in the middle of
//! the load and the other takes over without loss or duplicates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use vitalsink_tests::ingest_run::{
    assert_dead_letters, assert_exactly_once, dataset, log_tail, prepare, produce_in_background,
    stop_gracefully, wait_for_rows,
};
use vitalsink_tests::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_partitions_and_hand_over_when_one_stops() {
    let stack = Stack::from_env();
    let (dbs, setup, dir) = prepare(&stack, "t_group").await;
    let data = dataset();
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let a = setup.spawn(&log_a);
    let mut b = setup.spawn(&log_b);
    // Both joined: each has partitions before the load starts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let assigned = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .matches("partition assigned")
            .count()
    };
    while (assigned(&log_a) == 0 || assigned(&log_b) == 0) && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        assigned(&log_a) > 0 && assigned(&log_b) > 0,
        "both workers get partitions\n{}\n{}",
        log_tail(&log_a),
        log_tail(&log_b)
    );

    let producing = produce_in_background(&stack.brokers, &setup.topic, &data.records);
    let mid = wait_for_rows(&dbs.shards, data.readings / 4, Duration::from_secs(120)).await;
    assert!(
        mid < data.readings,
        "worker a must stop in the middle of the load"
    );
    // Worker a stops (SIGTERM: flush, leave the group); b takes over its partitions.
    stop_gracefully(a, &log_a).await;

    let positions = producing.await.unwrap();
    let n = wait_for_rows(&dbs.shards, data.readings, Duration::from_secs(300)).await;
    assert_eq!(
        n,
        data.readings,
        "rows after the hand-over\n{}",
        log_tail(&log_b)
    );
    assert!(
        assigned(&log_b) > 3,
        "b took over a's partitions:\n{}",
        log_tail(&log_b)
    );
    assert_dead_letters(&stack, &setup, &data, &positions).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_exactly_once(&dbs.shards, &data.expected).await;
    b.kill().unwrap();
    b.wait().unwrap();
    dbs.drop_all().await;
}
