//! Issue 4: the archiver dies at each step of a chunk and is run again; afterwards no row is
//! lost and none is duplicated across the archive (read by DuckDB) and the shards, each chunk
//! has exactly one Parquet object, and `verify` passes.
//!
//! The three step-exact deaths use the archiver's hidden fault injection
//! (`ARCHIVER_CRASH_AT=mid-upload|after-upload|after-verify`, which calls
//! `std::process::abort` at that point: no destructor, no flush). The fourth test kills the
//! process with a real SIGKILL while it exports under a rate limit. On a local directory, a
//! death mid-upload leaves LocalFileSystem's staging file (`<name>#<n>`), which pandas and
//! pyarrow would open: `verify` reports it and the resumed run deletes it with the attempt.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;
use vitalsink_tests::archive_run::{
    add, aged_chunk_count, assert_totals_eq, db_totals, load, local_files, log_steps,
    parquet_objects, ArchiveSetup, DataShape, Root, ROUND_TRIP,
};
use vitalsink_tests::dataset::Totals;
use vitalsink_tests::Stack;

/// One chunk per shard of about 400,000 rows with high-entropy device ids: some 8 MB of
/// Parquet, more than one 5 MiB multipart part, so `mid-upload` dies with a part uploaded.
const BULKY: DataShape = DataShape {
    participants: 20,
    per_metric: 20_000,
    every_secs: 4,
    recent: 5,
    bulky: true,
};

/// After the resumed run: every aged chunk gone from the shards, one object per dropped chunk,
/// DuckDB over the archive + the shards' rows = the original totals, `verify` clean.
async fn assert_resumed(setup: &ArchiveSetup, original: &Totals) {
    let mut dropped = 0;
    for s in &setup.dbs.shards {
        assert_eq!(aged_chunk_count(s).await, 0, "{}: aged chunks left", s.name);
        dropped += log_steps(s)
            .await
            .iter()
            .filter(|r| r.2 == "dropped")
            .count();
    }
    let objects = parquet_objects(&setup.root).await;
    assert_eq!(
        objects.len(),
        dropped,
        "one object per dropped chunk: {objects:?}"
    );
    if let Root::Local(_) = setup.root {
        assert_eq!(
            local_files(&setup.root),
            objects,
            "no other file in the folder (pandas and pyarrow would read it)"
        );
    }
    let duck = setup.duckdb(None);
    let left = db_totals(&setup.dbs.shards).await;
    assert_totals_eq(
        &add(&duck.totals, &left),
        original,
        "archive + shards after resume",
    );
    let v: serde_json::Value = serde_json::from_str(&setup.ok(&["verify"])).unwrap();
    assert_eq!(v["good"].as_u64(), Some(dropped as u64), "{v}");
}

async fn crash_and_resume(point: &str, s3: bool, shape: DataShape) {
    let stack = Stack::from_env();
    // One shard at a time, so the crash point is reached on shard0's first chunk, the one
    // inspected below. With shards archived at once the other shard is anywhere in its own
    // chunk when the process dies: each shard's state is then one of the points tested here,
    // resumed from its own log (archiver_concurrent.rs covers running them at once).
    let setup = ArchiveSetup::new(
        &stack,
        &format!("t_crash_{}", point.replace('-', "_")),
        s3,
        "shard_concurrency = 1",
    )
    .await;
    let original = load(&setup.dbs.shards, shape).await;

    let out = setup.archiver(&["run"], &[("ARCHIVER_CRASH_AT", point)]);
    assert_eq!(
        out.status.signal(),
        Some(6),
        "fault injection at {point} must abort the process (SIGABRT), got {}: {}",
        out.status,
        setup.log_tail()
    );
    // The crashed attempt: its last step in the log, and whether its object is visible.
    let steps = log_steps(&setup.dbs.shards[0]).await;
    let last = steps
        .last()
        .cloned()
        .expect("the crashed run logged its first step");
    let objects = parquet_objects(&setup.root).await;
    let visible = objects.iter().any(|o| o.contains(&last.1));
    match point {
        "mid-upload" => {
            assert_eq!(last.2, "planned", "{steps:?}");
            assert!(
                !visible,
                "a half-uploaded object is never visible: {objects:?}"
            );
            if let Root::Local(_) = setup.root {
                // But its staging file is, to folder readers: verify reports it as pending.
                let out = setup.archiver(&["verify"], &[]);
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                assert!(out.status.success(), "{v}");
                let staged = |p: &serde_json::Value| p.as_str().is_some_and(|p| p.contains('#'));
                assert!(v["pending"].as_array().unwrap().iter().any(staged), "{v}");
            }
        }
        "after-upload" => {
            assert_eq!(last.2, "planned", "{steps:?}");
            assert!(
                visible,
                "the complete but unlogged object is there: {objects:?}"
            );
        }
        _ => {
            assert_eq!(last.2, "verified", "{steps:?}");
            assert!(visible);
            // Right now the chunk is in both places: readers of archive + shards double count
            // until the next run drops it.
            let both = add(
                &setup.duckdb(None).totals,
                &db_totals(&setup.dbs.shards).await,
            );
            assert_ne!(both, original, "the verified chunk is still in the shard");
        }
    }

    let report: serde_json::Value = serde_json::from_str(&setup.ok(&["run"])).unwrap();
    assert_eq!(report["failed"].as_i64(), Some(0), "{report}");
    let steps = log_steps(&setup.dbs.shards[0]).await;
    let crashed: Vec<&str> = steps
        .iter()
        .filter(|r| r.1 == last.1)
        .map(|r| r.2.as_str())
        .collect();
    match point {
        // The unlogged object is deleted, never adopted as a second copy.
        "mid-upload" | "after-upload" => assert_eq!(crashed, ["planned", "discarded"]),
        _ => assert_eq!(crashed, ["planned", "written", "verified", "dropped"]),
    }
    assert_resumed(&setup, &original).await;
    setup.dbs.drop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_mid_upload_then_resume() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    crash_and_resume("mid-upload", false, BULKY).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_mid_upload_to_s3_then_resume() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    crash_and_resume("mid-upload", true, BULKY).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_after_upload_before_verify_then_resume() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    crash_and_resume("after-upload", false, ROUND_TRIP).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_after_verify_before_drop_then_resume() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    crash_and_resume("after-verify", false, ROUND_TRIP).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_export_then_resume() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    // 20,000 rows/s: the first shard's 5 chunks (about 80,000 rows) take about 4 s.
    let setup = ArchiveSetup::new(&stack, "t_crash_kill", false, "").await;
    let original = load(&setup.dbs.shards, ROUND_TRIP).await;
    let mut child = setup
        .command(&["run", "--rows-per-second", "20000"], &[])
        .spawn()
        .unwrap();
    // Wait until an export is under way (its `planned` row is in the log), then a bit more.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let steps = log_steps(&setup.dbs.shards[0]).await;
        if steps.iter().filter(|s| s.2 == "planned").count() >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no export started: {}",
            setup.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "killed mid-run: {}",
        setup.log_tail()
    );
    let steps = log_steps(&setup.dbs.shards[0]).await;
    assert!(
        steps.iter().any(|s| s.2 == "planned") && aged_chunk_count(&setup.dbs.shards[0]).await > 0,
        "killed before the shard was done: {steps:?}"
    );
    setup.ok(&["run"]);
    assert_resumed(&setup, &original).await;
    setup.dbs.drop_all().await;
}
