//! Issue 12, online: `reshard add-shard` and `remove-shard` while producers and two ingest
//! workers of one consumer group keep running.
//!
//! Load: every real recording (`replay real`, as fast as the broker takes it) plus synthetic
//! participants at a steady rate (`replay synthetic --rate`), published by the real `replay`
//! binary while the moves run. 2 → 3: the command is killed (`RESHARD_CRASH_AT`, an abort
//! where a SIGKILL would land) after publishing the cut-over records, after a copy batch,
//! after verifying and after a delete batch, and run again each time; right after the first
//! kill one worker is SIGKILLed (during the cut-over: its partitions are cutting over) and a
//! replacement with the same, old configuration started. 3 → 2: killed after the cut-over
//! records and after a copy batch, with `archiver run` started during the move (it waits for
//! the move, then archives). Afterwards, database (and archive) = the replay's truth per
//! participant — rows and exact sum bits, on the shard `ROUTING.md`'s routing names, nowhere
//! else — the first worker ran through both moves without a restart, and a worker started
//! with the old shard list after the move exits non-zero naming the shard map.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use vitalsink_common::config::ShardConfig;
use vitalsink_tests::ingest_run::{
    extra_shard, ingest_binary, log_tail, prepare, stop_gracefully, total_rows, wait_exit,
    wait_for_rows, IngestSetup,
};
use vitalsink_tests::replay_run::{archive_config, fetch_data, stored_truth};
use vitalsink_tests::routing_reference::python_routes;
use vitalsink_tests::Stack;

/// Per participant: rows and exact sum.
type Want = BTreeMap<String, (i64, f64)>;

fn replay(config: &Path, args: &[&str], log: &Path) -> Child {
    Command::new(ingest_binary().with_file_name("replay"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

async fn finished(child: Child, log: &Path) {
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "replay: {status:?}\n{}", log_tail(log));
}

/// Adds the per-participant totals of a replay truth file to `want`.
fn add_truth(want: &mut Want, path: &Path) {
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for p in t["participants"].as_array().unwrap() {
        let prev = want.insert(
            p["participant_id"].as_str().unwrap().to_string(),
            (p["rows"].as_i64().unwrap(), p["sum"].as_f64().unwrap()),
        );
        assert!(prev.is_none(), "participant ids of the loads overlap");
    }
}

/// Database (and `archive`) hold exactly `want`: per participant its rows and exact sum
/// bits on the shard `ROUTING.md`'s Python reference routes it to, nothing elsewhere, no
/// other participant.
async fn assert_exact(shards: &[ShardConfig], archive: Option<&Path>, want: &Want, what: &str) {
    let got = stored_truth(shards, archive).await;
    let ids: Vec<&String> = want.keys().collect();
    let routes = python_routes(&ids, shards.len());
    for (pid, (rows, sum)) in want {
        let home = routes[pid];
        let p = got.shards[home]
            .get(pid)
            .unwrap_or_else(|| panic!("{what}: {pid} missing on its shard {home}"));
        assert_eq!(
            (p.rows, p.sum.to_bits()),
            (*rows, sum.to_bits()),
            "{what}: {pid} rows and exact sum (stored {} vs {sum})",
            p.sum
        );
        for (i, s) in got.shards.iter().enumerate() {
            assert!(
                i == home || !s.contains_key(pid),
                "{what}: {pid} also on shard {i}"
            );
        }
    }
    let stored: usize = got.shards.iter().map(BTreeMap::len).sum();
    assert_eq!(stored, want.len(), "{what}: no unexpected participants");
}

fn reshard(config: &Path, args: &[&str], crash_at: Option<&str>) -> std::process::Output {
    let mut c = Command::new(ingest_binary().with_file_name("reshard"));
    c.arg("--config")
        .arg(config)
        .args(args)
        .env("NO_COLOR", "1");
    if let Some(p) = crash_at {
        c.env("RESHARD_CRASH_AT", p);
    }
    c.output().unwrap()
}

/// Runs the move killed at each of `points` in turn (each run resuming the last), then to
/// the end; `between` runs after the first kill. Returns the last run's report.
async fn move_through_crashes(
    config: &Path,
    args: &[&str],
    points: &[&str],
    mut between: impl FnMut(),
) -> serde_json::Value {
    for (i, p) in points.iter().enumerate() {
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
            String::from_utf8_lossy(&status.stdout)
                .lines()
                .last()
                .unwrap_or("")
        );
        if i == 0 {
            between();
        }
    }
    let out = reshard(config, args, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn alive(w: &mut Child, log: &Path) {
    assert!(
        w.try_wait().unwrap().is_none(),
        "the worker kept running through the move\n{}",
        log_tail(log)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn online_two_to_three_and_back_under_load_exactly_once() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let (dbs, setup, dir) = prepare(&stack, "t_online").await;
    let d = dir.path();
    let data = fetch_data();
    let log = |n: &str| d.join(format!("{n}.log"));
    let mut w1 = setup.spawn(&log("w1"));
    let w2 = setup.spawn(&log("w2"));

    // Load while 2 → 3 runs.
    let t_real = d.join("real.json");
    let t_syn1 = d.join("syn1.json");
    let real = replay(
        &setup.config,
        &[
            "real",
            "--data",
            data.to_str().unwrap(),
            "--truth-out",
            t_real.to_str().unwrap(),
        ],
        &log("replay-real"),
    );
    let syn1 = replay(
        &setup.config,
        &[
            "synthetic",
            "--participants",
            "60",
            "--days",
            "1",
            "--seed",
            "1",
            "--prefix",
            "syn1-",
            "--rate",
            "8000",
            "--truth-out",
            t_syn1.to_str().unwrap(),
        ],
        &log("replay-syn1"),
    );
    let landed = wait_for_rows(&dbs.shards, 50_000, Duration::from_secs(180)).await;
    assert!(
        landed >= 50_000,
        "load landing before the move\n{}",
        log_tail(&log("w1"))
    );

    let new = extra_shard(&stack, 2).await;
    let add = [
        "add-shard",
        "--reason",
        "test: shard-set change",
        "--name",
        "shard2",
        "--url",
        new.url.as_str(),
        "--batch-rows",
        "20000",
        "--bytes-per-second",
        "16000000",
        "--cutover-timeout",
        "300",
    ];
    let mut w2 = Some(w2);
    let mut w2b: Option<Child> = None;
    let report = move_through_crashes(
        &setup.config,
        &add,
        &["cutover", "copy", "verify", "delete"],
        || {
            // SIGKILL a worker while its partitions cut over; a replacement with the same (old)
            // configuration takes its place.
            let mut w = w2.take().unwrap();
            w.kill().unwrap();
            let _ = w.wait();
            w2b = Some(setup.spawn(&log("w2b")));
        },
    )
    .await;
    eprintln!("2 -> 3: {report}");
    assert!(report["participants"].as_u64().unwrap() > 0, "{report}");
    alive(&mut w1, &log("w1"));
    finished(real, &log("replay-real")).await;
    finished(syn1, &log("replay-syn1")).await;
    let mut want = Want::new();
    add_truth(&mut want, &t_real);
    add_truth(&mut want, &t_syn1);
    let total: i64 = want.values().map(|(n, _)| n).sum();
    let mut three = dbs.shards.clone();
    three.push(new.clone());
    let n = wait_for_rows(&three, total, Duration::from_secs(300)).await;
    assert_eq!(n, total, "{}", log_tail(&log("w1")));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        total_rows(&three).await,
        total,
        "nothing written twice after the move"
    );
    assert_exact(&three, None, &want, "after 2 -> 3").await;

    // A worker started with the old list after the move refuses and exits non-zero.
    let stale_log = log("stale");
    let mut stale = setup.spawn(&stale_log);
    let code = wait_exit(&mut stale, Duration::from_secs(60))
        .await
        .and_then(|s| s.code());
    assert_eq!(code, Some(1), "{}", log_tail(&stale_log));
    let text = std::fs::read_to_string(&stale_log).unwrap();
    assert!(
        text.contains("shard map") && text.contains("shard2"),
        "{}",
        log_tail(&stale_log)
    );

    // 3 → 2 under load, with the archiver started during the move.
    let with_three = IngestSetup::for_group(&setup, &three, d);
    let t_syn2 = d.join("syn2.json");
    let syn2 = replay(
        &setup.config,
        &[
            "synthetic",
            "--participants",
            "60",
            "--days",
            "1",
            "--seed",
            "2",
            "--prefix",
            "syn2-",
            "--rate",
            "8000",
            "--truth-out",
            t_syn2.to_str().unwrap(),
        ],
        &log("replay-syn2"),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let root: PathBuf = d.join("archive");
    let archiver_cfg = archive_config(&setup.config, &root, "3d");
    let remove = [
        "remove-shard",
        "--reason",
        "test: shard-set change",
        "--name",
        "shard2",
        "--batch-rows",
        "20000",
        "--cutover-timeout",
        "300",
    ];
    let mut archiver: Option<Child> = None;
    let report = move_through_crashes(&with_three.config, &remove, &["cutover", "copy"], || {
        let out = std::fs::File::create(d.join("archiver.log")).unwrap();
        archiver = Some(
            Command::new(vitalsink_tests::archive_run::archiver_binary())
                .arg("--config")
                .arg(&archiver_cfg)
                .arg("run")
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(out)
                .spawn()
                .unwrap(),
        );
    })
    .await;
    eprintln!("3 -> 2: {report}");
    let mut archiver = archiver.unwrap();
    let st = tokio::task::spawn_blocking(move || archiver.wait())
        .await
        .unwrap()
        .unwrap();
    let alog = std::fs::read_to_string(d.join("archiver.log")).unwrap();
    assert!(st.success(), "archiver: {st:?}\n{alog}");
    assert!(
        alog.contains("the archiver waits until it has finished"),
        "{alog}"
    );
    finished(syn2, &log("replay-syn2")).await;
    add_truth(&mut want, &t_syn2);
    let total: i64 = want.values().map(|(n, _)| n).sum();
    // Rows land in the database; some of them are archived since.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let got = stored_truth(&dbs.shards, Some(&root)).await;
        let n: i64 = got.db_rows.iter().sum::<i64>() + got.archived_rows.iter().sum::<i64>();
        if n >= total || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_exact(
        &dbs.shards,
        Some(&root),
        &want,
        "after 3 -> 2, database + archive",
    )
    .await;
    assert_eq!(
        total_rows(std::slice::from_ref(&new)).await,
        0,
        "the removed shard holds nothing"
    );
    alive(&mut w1, &log("w1"));
    let w1_log = std::fs::read_to_string(log("w1")).unwrap();
    assert!(
        w1_log.contains("writing to a shard added by a move"),
        "{}",
        log_tail(&log("w1"))
    );
    assert!(
        w1_log.contains("stopped writing to a shard a move removed"),
        "{}",
        log_tail(&log("w1"))
    );
    stop_gracefully(w1, &log("w1")).await;
    stop_gracefully(w2b.unwrap(), &log("w2b")).await;
    dbs.drop_all().await;
}
