//! The shard map refuses what issue 12 found: a shard appended to the configuration by hand
//! (`STACK_SHARDS=3`, one more `[[shards]]`) made every partition resume at offset 0 and
//! duplicated a quarter of the data on the new shard. Now the worker refuses to write, with
//! the reason, both when the map exists and on a deployment that predates it; and a running
//! worker whose map moves on stops. Real broker, real shards (the third shard is a third
//! database on the stack's second server).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use vitalsink_common::config::ShardConfig;
use vitalsink_tests::archive_run::archiver_binary;
use vitalsink_tests::ingest_run::{
    assert_exactly_once, endpoints_addr, extra_shard, loaded, log_tail, total_rows, wait_exit,
    wait_readyz, IngestSetup,
};
use vitalsink_tests::{connect, unique, Stack};

/// Starts a worker on `shards` (same topic and group as `setup`) and expects it to refuse:
/// exit 1 by itself with `expect` in its log, and no row written anywhere.
async fn assert_refused(
    setup: &IngestSetup,
    shards: &[ShardConfig],
    dir: &std::path::Path,
    expect: &str,
) {
    let before = total_rows(shards).await;
    let stale = IngestSetup::for_group(setup, shards, dir);
    let log = dir.join(format!("{}.log", unique("refused")));
    let mut w = stale.spawn(&log);
    let code = wait_exit(&mut w, Duration::from_secs(60))
        .await
        .and_then(|s| s.code());
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        code,
        Some(1),
        "the worker refuses and exits 1\n{}",
        log_tail(&log)
    );
    assert!(
        text.contains(expect),
        "says why ({expect:?})\n{}",
        log_tail(&log)
    );
    assert_eq!(total_rows(shards).await, before, "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_appended_by_hand_is_refused_with_the_reason() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let (dbs, setup, dir, data) = loaded(&stack, "t_map").await;

    // The operator appends a third shard and restarts: refused, the map names the lists.
    let mut three = dbs.shards.clone();
    three.push(extra_shard(&stack, 2).await);
    assert_refused(
        &setup,
        &three,
        dir.path(),
        "the configuration lists shards [shard0, shard1, shard2] but the shard map (epoch 1",
    )
    .await;

    // The archiver refuses the same list, before touching a chunk.
    let stale = IngestSetup::for_group(&setup, &three, dir.path());
    let out = std::process::Command::new(archiver_binary())
        .args(["--config", stale.config.to_str().unwrap()])
        .arg(format!(
            "--root=file://{}",
            dir.path().join("archive").display()
        ))
        .args(["run"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "archiver refuses: {stderr}");
    assert!(stderr.contains("refusing to write"), "says why: {stderr}");

    // A deployment from before the map (no map row): the shards themselves give it away.
    connect(&dbs.shards[0].url)
        .await
        .batch_execute("DELETE FROM shard_map")
        .await
        .unwrap();
    assert_refused(
        &setup,
        &three,
        dir.path(),
        "shard(s) shard2 never applied a batch",
    )
    .await;
    assert_exactly_once(&dbs.shards, &data.expected).await;

    // With the right list the worker starts (and re-writes epoch 1), and when the map moves
    // on while it runs, it stops writing and says so.
    let log2 = dir.path().join("ingest2.log");
    let mut worker = setup.spawn(&log2);
    let addr = endpoints_addr(&log2).await;
    for _ in 0..100 {
        if std::fs::read_to_string(&log2)
            .unwrap_or_default()
            .contains("shard map checked")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    connect(&dbs.shards[0].url)
        .await
        .batch_execute(
            "INSERT INTO shard_map (epoch, shards, reason) VALUES (2, '{shard0,shard1,shard2}', 'test')",
        )
        .await
        .unwrap();
    let reason = wait_readyz(&addr, 503, "failed", 60)
        .await
        .unwrap_or_default();
    assert!(
        reason.contains("epoch 2"),
        "/readyz: {reason:?}\n{}",
        log_tail(&log2)
    );
    let pid = worker.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert_eq!(
        wait_exit(&mut worker, Duration::from_secs(30))
            .await
            .and_then(|s| s.code()),
        Some(1)
    );
    assert_exactly_once(&dbs.shards, &data.expected).await;
    dbs.drop_all().await;
}
