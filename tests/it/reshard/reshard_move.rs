//! `reshard add-shard` / `remove-shard` (issue 12, the offline part): 2 → 3 → 2 shards over
//! real shards written by a real worker, the command killed (`RESHARD_CRASH_AT`, an abort
//! where a SIGKILL would land) in each phase — copy, verify, switch, delete — and run again;
//! afterwards every participant is on exactly its routed shard with its exact rows and sum, a
//! worker refuses to start while the move is unfinished, and one started with the new list
//! resumes where the others stopped (writes nothing twice).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;
use vitalsink_tests::archive_run::archiver_binary;
use vitalsink_tests::ingest_run::{
    assert_exactly_once, endpoints_addr, extra_shard, loaded, log_tail, stop_gracefully,
    total_rows, wait_readyz, IngestSetup,
};
use vitalsink_tests::{connect, unique, Stack};

fn reshard(
    config: &std::path::Path,
    args: &[&str],
    crash_at: Option<&str>,
) -> std::process::Output {
    let bin = vitalsink_tests::ingest_run::ingest_binary().with_file_name("reshard");
    let mut c = Command::new(bin);
    c.arg("--config").arg(config).args(args);
    if let Some(p) = crash_at {
        c.env("RESHARD_CRASH_AT", p);
    }
    c.output().unwrap()
}

/// Runs the move once per crash point (each run killed there, resuming the last), then to
/// the end; returns the last run's stdout.
fn move_through_crashes(config: &std::path::Path, args: &[&str], points: &[&str]) -> String {
    for p in points {
        let out = reshard(config, args, Some(p));
        assert!(
            out.status.code().is_none(),
            "killed at {p}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let status = reshard(config, &["status"], None);
        eprintln!(
            "after a kill at {p}: {}",
            String::from_utf8_lossy(&status.stdout).trim()
        );
    }
    let out = reshard(config, args, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Starts a worker on `setup` and checks that it refuses, naming the unfinished move.
async fn refused_during_move(setup: &IngestSetup, dir: &std::path::Path) {
    let log = dir.join(format!("{}.log", unique("refused")));
    let mut w = setup.spawn(&log);
    let st = tokio::task::spawn_blocking(move || w.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.code(), Some(1), "{}", log_tail(&log));
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("shard move"),
        "{}",
        log_tail(&log)
    );
}

/// A worker on `setup` starts, checks the map, and writes nothing new for a while.
async fn idles_exactly(setup: &IngestSetup, dir: &std::path::Path, rows: i64) {
    let log = dir.join(format!("{}.log", unique("after")));
    let w = setup.spawn(&log);
    let addr = endpoints_addr(&log).await;
    let ready = wait_readyz(&addr, 200, "", 120).await.is_some();
    assert!(
        ready,
        "the worker with the new shard list is ready\n{}",
        log_tail(&log)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        total_rows(&setup.shards).await,
        rows,
        "resumed without rewriting\n{}",
        log_tail(&log)
    );
    stop_gracefully(w, &log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_to_three_and_back_exactly_once_through_a_kill_in_every_phase() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let (dbs, setup, dir, data) = loaded(&stack, "t_move").await;

    // 2 → 3.
    let new = extra_shard(&stack, 2).await;
    let add = [
        "add-shard",
        "--reason",
        "test: shard-set change",
        "--offline",
        "--name",
        "shard2",
        "--url",
        new.url.as_str(),
        "--bytes-per-second",
        "4000000",
        "--batch-rows",
        "5000",
    ];
    // An archiver at work on shard1 (holding its lock): the move refuses, nothing changed.
    let archiver_at_work = connect(&dbs.shards[1].url).await;
    archiver_at_work
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&vitalsink_common::db::BULK_LOCK_KEY],
        )
        .await
        .unwrap();
    let out = reshard(&setup.config, &add, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("working on shard shard1"), "{stderr}");
    drop(archiver_at_work);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Killed right after the first participant is copied; a worker and an archiver refuse
    // meanwhile.
    let out = reshard(&setup.config, &add, Some("copy"));
    assert!(
        out.status.code().is_none(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    refused_during_move(&setup, dir.path()).await;
    // Resuming with a --url that reaches another database is refused.
    let other = extra_shard(&stack, 2).await;
    let wrong: Vec<&str> = add
        .iter()
        .map(|a| {
            if *a == new.url.as_str() {
                other.url.as_str()
            } else {
                a
            }
        })
        .collect();
    let out = reshard(&setup.config, &wrong, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("give the first run's --url"), "{stderr}");
    // An archiver started meanwhile waits for the move (and is stopped here).
    let archiver_log = dir.path().join("archiver.log");
    let mut archiver = Command::new(archiver_binary())
        .arg("--config")
        .arg(&setup.config)
        .arg(format!(
            "--root=file://{}",
            dir.path().join("archive").display()
        ))
        .args(["--older-than", "1h", "run"])
        .stderr(std::fs::File::create(&archiver_log).unwrap())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        archiver.try_wait().unwrap().is_none(),
        "{}",
        log_tail(&archiver_log)
    );
    archiver.kill().unwrap();
    let _ = archiver.wait();
    assert!(
        std::fs::read_to_string(&archiver_log)
            .unwrap()
            .contains("the archiver waits until it has finished"),
        "{}",
        log_tail(&archiver_log)
    );
    let report = move_through_crashes(&setup.config, &add, &["copy", "verify", "switch", "delete"]);
    eprintln!("2 -> 3: {report}");
    let mut three = dbs.shards.clone();
    three.push(new.clone());
    assert_exactly_once(&three, &data.expected).await;
    let r: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    let status = String::from_utf8(reshard(&setup.config, &["status"], None).stdout).unwrap();
    let last: serde_json::Value = serde_json::from_str(status.lines().last().unwrap()).unwrap();
    assert_eq!(last["phase"], "done", "{status}");
    assert_eq!(
        last["rows_copied"], r["rows"],
        "status counts every copied row: {status}"
    );
    assert_eq!(
        last["rows_deleted"], r["rows"],
        "and every deleted one: {status}"
    );
    assert_eq!(last["rows_left"], 0);
    let moved = r["participants"].as_u64().unwrap() as f64 / data.expected.len() as f64;
    assert!(
        (0.25..0.42).contains(&moved),
        "about 1/3 of the participants moved: {moved}"
    );
    let with_three = IngestSetup::for_group(&setup, &three, dir.path());
    idles_exactly(&with_three, dir.path(), data.readings).await;

    // 3 → 2: the last shard's participants go back.
    let remove = [
        "remove-shard",
        "--reason",
        "test: shard-set change",
        "--offline",
        "--name",
        "shard2",
        "--batch-rows",
        "5000",
    ];
    let report = move_through_crashes(&with_three.config, &remove, &["copy", "delete"]);
    eprintln!("3 -> 2: {report}");
    assert_exactly_once(&dbs.shards, &data.expected).await;
    let left: i64 = connect(&new.url)
        .await
        .query_one("SELECT count(*) FROM measurements", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the removed shard holds nothing");
    let with_two = IngestSetup::for_group(&setup, &dbs.shards, dir.path());
    idles_exactly(&with_two, dir.path(), data.readings).await;

    // Refused at once, nothing changed: the middle shard, or the first.
    let out = reshard(
        &setup.config,
        &[
            "remove-shard",
            "--name",
            "shard0",
            "--reason",
            "test: refused",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only remove the last shard"));
    dbs.drop_all().await;
}
