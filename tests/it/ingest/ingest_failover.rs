//! Shard failover to a promoted standby, with real PostgreSQL streaming replication started by
//! `dev/stack standby-up` (no mock): shard1 is given to the worker as a multi-host connection
//! string with `target_session_attrs=read-write`; mid-load the primary is stopped and the
//! standby promoted. The worker must find the new primary by itself and end exactly once.
//! Its own test binary: it stops shard1, and cargo runs test binaries one at a time.
//! The worker's peak RSS stays under its memory cap throughout (issue 27).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use vitalsink_common::config::ShardConfig;
use vitalsink_tests::ingest_run::{
    assert_exactly_once, dataset, log_tail, peak_rss_bytes, prepare, produce_in_background,
    stack_script, wait_for_rows,
};
use vitalsink_tests::Stack;

/// `url` (libpq key-value form `host=H port=P …`) with the standby on `standby_port` as a
/// second host, and only a read-write server accepted.
fn multi_host(url: &str, standby_port: u16) -> String {
    let mut out: Vec<String> = url
        .split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some(("host", h)) => format!("host={h},{h}"),
            Some(("port", p)) => format!("port={p},{standby_port}"),
            _ => kv.to_string(),
        })
        .collect();
    out.push("target_session_attrs=read-write".into());
    out.join(" ")
}

/// `url` pointing at port `port` only.
fn on_port(url: &str, port: u16) -> String {
    url.split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some(("port", _)) => format!("port={port}"),
            _ => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoted_standby_is_found_through_the_multi_host_url() {
    let _stack = vitalsink_tests::stack_lock::exclusive().await;
    let stack = Stack::from_env();
    let (dbs, setup, dir) = prepare(&stack, "t_failover").await;
    let primary_port: u16 = dbs.shards[1]
        .url
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("port="))
        .unwrap()
        .parse()
        .unwrap();
    let standby_port = primary_port + 10; // dev/stack: STACK_PG_PORT + 10 + N
    stack_script(&["standby-up", "1"]);

    // The worker's shard1 is "primary or standby, whichever is read-write".
    let shard1 = &dbs.shards[1].url;
    let toml = std::fs::read_to_string(&setup.config).unwrap();
    assert!(toml.contains(shard1.as_str()));
    std::fs::write(
        &setup.config,
        toml.replace(shard1.as_str(), &multi_host(shard1, standby_port)),
    )
    .unwrap();

    let data = dataset();
    let log = dir.path().join("ingest.log");
    let mut worker = setup.spawn(&log);
    let worker_id = worker.id();
    let producing = produce_in_background(&stack.brokers, &setup.topic, &data.records);
    let before = wait_for_rows(&dbs.shards, data.readings / 5, Duration::from_secs(120)).await;
    assert!(
        before < data.readings,
        "the load must still be running at the failover"
    );

    // Fail over: a fast shutdown streams the primary's last WAL to the standby first.
    stack_script(&["stop-shard", "1"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack_script(&["standby-promote", "1"]);

    let after: Vec<ShardConfig> = vec![
        dbs.shards[0].clone(),
        ShardConfig {
            name: dbs.shards[1].name.clone(),
            url: on_port(shard1, standby_port),
            replicas: Vec::new(),
        },
    ];
    producing.await.unwrap();
    let n = wait_for_rows(&after, data.readings, Duration::from_secs(300)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let outcome = std::panic::AssertUnwindSafe(async {
        assert_eq!(
            n,
            data.readings,
            "rows after the failover\n{}",
            log_tail(&log)
        );
        assert!(
            text.contains("retrying"),
            "the worker saw the primary go and retried"
        );
        assert_exactly_once(&after, &data.expected).await;
        // Issue 27, item 6: the memory cap holds through the failover (writes waiting and
        // retrying while the batches fill up to the budget).
        let rss = peak_rss_bytes(worker_id).unwrap();
        assert!(
            rss < setup.memory_cap as u64,
            "peak RSS {:.1} MiB over the {} MiB cap",
            rss as f64 / f64::from(1 << 20),
            setup.memory_cap >> 20
        );
    });
    let result = futures::FutureExt::catch_unwind(outcome).await;

    worker.kill().ok();
    worker.wait().ok();
    // Back to the plain stack for the next test binaries: the old primary returns (its
    // database of this test is dropped with the others), the standby is removed.
    stack_script(&["standby-down", "1"]);
    stack_script(&["start-shard", "1"]);
    dbs.drop_all().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
