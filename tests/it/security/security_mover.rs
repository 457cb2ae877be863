//! Least privilege for `reshard` (schemas/ROLES.md): a real online move run as a login user
//! in `vitalsink_mover`, with the ingest worker running as a login user in
//! `vitalsink_ingest`, each binary given its login by `[database.credentials.<binary>]` (the
//! shards' URLs name the owner, `postgres`, who also runs the migrations through
//! `[database.credentials.migrate]`).
//!
//! * The owner migrates two shards; a worker (ingest role) loads 300 participants.
//! * `reshard add-shard` as the mover onto a database the owner has not migrated exits 1
//!   naming the pending migrations and the owner, and creates nothing there; once the owner
//!   has migrated it, the same command with the reader's login exits 1 with SQLSTATE 42501
//!   and records no move (so the credentials entry, not the URL's user, is the login used).
//! * Online 2 → 3 as the mover while the worker keeps running and a second load is
//!   published, then online 3 → 2 while a third one is; `plan`, `status` and `map` as the
//!   mover too. After each move every participant is on exactly its routed shard with its
//!   exact rows and sum (the totals before the move plus what was published meanwhile), no
//!   reading twice, and the removed shard holds nothing; the worker wrote to the added shard
//!   and stopped writing to it again without a restart.
//! * With the worker stopped, the same round trip `--offline` as the mover onto another
//!   database the owner migrated (the offsets check; the added shard's offsets copied at the
//!   switch equal the others'), every row again exactly once.
//! * The mover cannot TRUNCATE measurements, touch `archive_log`, drop a chunk or run DDL
//!   (42501), and those attempts change nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use tokio_postgres::Client;
use vitalsink_common::config::ShardConfig;
use vitalsink_tests::dataset::{generate, Dataset, Totals};
use vitalsink_tests::ingest_run::{
    assert_exactly_once, extra_shard, ingest_binary, log_tail, prepare, produce,
    produce_in_background, shard_totals, stop_gracefully, total_rows, wait_for_rows, IngestSetup,
};
use vitalsink_tests::roles::{ensure_login_users, sqlstate};
use vitalsink_tests::{connect, run_ok, Stack};

/// Login users of this test (cluster-wide, shared by every run).
const INGEST: &str = "vs_mtest_ingest";
const MOVER: &str = "vs_mtest_mover";
const READER: &str = "vs_mtest_reader";

/// Appends the logins to `setup`'s configuration: the worker as [`INGEST`], `reshard` as
/// `reshard_user`, the `migrate` subcommands as the owner. The URLs keep naming the owner.
fn with_logins(setup: &IngestSetup, reshard_user: &str) {
    let mut toml = std::fs::read_to_string(&setup.config).unwrap();
    for (binary, user) in [
        ("ingest", INGEST),
        ("reshard", reshard_user),
        ("migrate", "postgres"),
    ] {
        toml.push_str(&format!(
            "[database.credentials.{binary}]\nuser = \"{user}\"\n"
        ));
    }
    std::fs::write(&setup.config, toml).unwrap();
}

/// `ingest migrate` with `setup`'s configuration: as the owner (`credentials.migrate`).
fn migrate_as_owner(setup: &IngestSetup) {
    run_ok(
        Command::new(ingest_binary())
            .arg("--config")
            .arg(&setup.config)
            .arg("migrate"),
    );
}

/// `setup`'s topics and group over `shards`, with the logins (`reshard` as `reshard_user`).
fn config_for(
    setup: &IngestSetup,
    shards: &[ShardConfig],
    dir: &Path,
    reshard_user: &str,
) -> IngestSetup {
    let s = IngestSetup::for_group(setup, shards, dir);
    with_logins(&s, reshard_user);
    s
}

/// `reshard --config config args…`, run off the async threads (loads are published
/// meanwhile).
async fn reshard(config: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(ingest_binary().with_file_name("reshard"));
    c.arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

/// [`reshard`], asserting success (a failure shows the tail of the worker's log `wlog` too);
/// returns stdout.
async fn reshard_ok(config: &Path, args: &[&str], wlog: &Path) -> String {
    let out = reshard(config, args).await;
    assert!(
        out.status.success(),
        "reshard {args:?}: {:?}\n{}\nworker log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        log_tail(wlog)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `a` plus `b`, per participant.
fn merged(a: &Totals, b: &Totals) -> Totals {
    let mut out = a.clone();
    for (pid, (n, s)) in b {
        let e = out.entry(pid.clone()).or_insert((0, 0.0));
        e.0 += n;
        e.1 += s;
    }
    out
}

/// Per participant over all `shards` (checked elsewhere to be on one shard only).
async fn all_totals(shards: &[ShardConfig]) -> Totals {
    shard_totals(shards)
        .await
        .iter()
        .fold(Totals::new(), |acc, t| merged(&acc, t))
}

/// Moves recorded in the map shard.
async fn moves(owner: &Client) -> Vec<(String, String)> {
    owner
        .query("SELECT kind, phase FROM shard_moves ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// A shard's `ingest_offsets`, read by the owner.
async fn offsets(url: &str) -> Vec<(String, String, i32, i64)> {
    connect(url)
        .await
        .query(
            "SELECT consumer_group, topic, kafka_partition, next_offset FROM ingest_offsets ORDER BY 1, 2, 3",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// Waits until `log` contains `needle`, up to `limit`.
async fn logged(log: &Path, needle: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if std::fs::read_to_string(log).unwrap().contains(needle) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A load of `participants` participants, its readings 3 days before `now` shifted by
/// `shift_h` hours (so that loads never share a reading's key).
fn load(participants: usize, shift_h: i64) -> Dataset {
    let now = chrono::Utc::now().timestamp_millis() + shift_h * 3_600_000;
    generate(participants, 10, 2, 30, 1, now)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reshard_as_the_mover_moves_every_row_exactly_once_online_and_offline() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let started = Instant::now();
    let stack = Stack::from_env();
    let (dbs, setup, dir) = prepare(&stack, "t_mover").await;
    let d = dir.path();
    with_logins(&setup, MOVER);
    // The owner migrates (credentials.migrate); then the login users can join the roles.
    migrate_as_owner(&setup);
    ensure_login_users(
        &stack,
        &[
            (INGEST, "vitalsink_ingest"),
            (MOVER, "vitalsink_mover"),
            (READER, "vitalsink_reader"),
        ],
    )
    .await;
    let owner0 = connect(&dbs.shards[0].url).await;

    // Load A, written by the worker as the ingest role; the worker keeps running.
    let a = load(300, 0);
    let wlog = d.join("worker.log");
    let worker = setup.spawn(&wlog);
    produce(&stack.brokers, &setup.topic, &a.records).await;
    let n = wait_for_rows(&dbs.shards, a.readings, Duration::from_secs(120)).await;
    assert_eq!(n, a.readings, "{}", log_tail(&wlog));
    assert_exactly_once(&dbs.shards, &a.expected).await;
    let before = all_totals(&dbs.shards).await;
    assert_eq!(before, a.expected, "totals before the move");
    eprintln!("loaded {} rows: {:.1?}", a.readings, started.elapsed());

    // A new shard the owner has not migrated: the mover may not, and creates nothing there.
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
        "5000",
        "--cutover-timeout",
        "120",
    ];
    let out = reshard(&setup.config, &add).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for needle in [
        "schema migrations are pending (the shard is at version 0",
        MOVER,
        "must be applied by the schema's owner",
    ] {
        assert!(stderr.contains(needle), "lacks {needle:?}: {stderr}");
    }
    let owner_new = connect(&new.url).await;
    let untouched: bool = owner_new
        .query_one(
            "SELECT to_regclass('vitalsink_schema_version') IS NULL AND to_regclass('measurements') IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(untouched, "the mover created nothing on the new shard");
    assert_eq!(moves(&owner0).await, vec![], "no move recorded");

    // The owner migrates it (ROLES.md: before a mover adds it).
    let new_only = config_for(&setup, std::slice::from_ref(&new), d, MOVER);
    migrate_as_owner(&new_only);

    // With the reader's login `reshard` is refused (it may not read ingest_offsets) and
    // records nothing: the credentials entry is the login used, not the URL's owner.
    let as_reader = config_for(&setup, &dbs.shards, d, READER);
    let out = reshard(&as_reader.config, &add).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("permission denied for table ingest_offsets") && stderr.contains("42501"),
        "{stderr}"
    );
    assert_eq!(moves(&owner0).await, vec![], "no move recorded");
    let seeded: i64 = owner_new
        .query_one("SELECT count(*) FROM ingest_offsets", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seeded, 0, "nothing seeded on the new shard");

    // Plan, then 2 → 3 online as the mover, load B published meanwhile.
    let planned = reshard_ok(
        &setup.config,
        &[
            "plan",
            "--json",
            "add-shard",
            "--name",
            "shard2",
            "--url",
            &new.url,
        ],
        &wlog,
    )
    .await;
    let planned: serde_json::Value = serde_json::from_str(&planned).unwrap();
    assert!(
        !planned["moves"].as_array().unwrap().is_empty(),
        "{planned}"
    );
    let b = load(200, 6);
    let producing = produce_in_background(&stack.brokers, &setup.topic, &b.records);
    let t = Instant::now();
    let report = reshard_ok(&setup.config, &add, &wlog).await;
    eprintln!(
        "2 -> 3 as the mover in {:.1?}: {}",
        t.elapsed(),
        report.trim()
    );
    let report: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert!(report["participants"].as_u64() > Some(0), "{report}");
    producing.await.unwrap();
    let mut three = dbs.shards.clone();
    three.push(new.clone());
    let after_add = merged(&before, &b.expected);
    let want: i64 = after_add.values().map(|(n, _)| n).sum();
    let n = wait_for_rows(&three, want, Duration::from_secs(120)).await;
    assert_eq!(n, want, "{}", log_tail(&wlog));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(total_rows(&three).await, want, "nothing written twice");
    assert_exactly_once(&three, &after_add).await;
    assert_eq!(all_totals(&three).await, after_add, "totals after 2 -> 3");
    let map = reshard_ok(&setup.config, &["map"], &wlog).await;
    let map: serde_json::Value = serde_json::from_str(map.trim()).unwrap();
    assert_eq!(
        map["shards"],
        serde_json::json!(["shard0", "shard1", "shard2"]),
        "{map}"
    );

    // 3 → 2 online as the mover, load C published meanwhile; the worker (started with the
    // two-shard list) keeps running.
    let with_three = config_for(&setup, &three, d, MOVER);
    let c = load(200, 12);
    let producing = produce_in_background(&stack.brokers, &setup.topic, &c.records);
    let remove = [
        "remove-shard",
        "--reason",
        "test: shard-set change",
        "--name",
        "shard2",
        "--batch-rows",
        "5000",
        "--cutover-timeout",
        "120",
    ];
    let t = Instant::now();
    let report = reshard_ok(&with_three.config, &remove, &wlog).await;
    eprintln!(
        "3 -> 2 as the mover in {:.1?}: {}",
        t.elapsed(),
        report.trim()
    );
    producing.await.unwrap();
    let after_remove = merged(&after_add, &c.expected);
    let want: i64 = after_remove.values().map(|(n, _)| n).sum();
    let n = wait_for_rows(&dbs.shards, want, Duration::from_secs(120)).await;
    assert_eq!(n, want, "{}", log_tail(&wlog));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(total_rows(&three).await, want, "nothing written twice");
    assert_exactly_once(&dbs.shards, &after_remove).await;
    assert_eq!(
        all_totals(&dbs.shards).await,
        after_remove,
        "totals after 3 -> 2"
    );
    assert_eq!(
        total_rows(std::slice::from_ref(&new)).await,
        0,
        "the removed shard holds nothing"
    );
    let status = reshard_ok(&setup.config, &["status"], &wlog).await;
    let phases: Vec<(String, String)> = status
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["kind"].as_str().unwrap().to_string(),
                v["phase"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let done = |k: &str| (k.to_string(), "done".to_string());
    assert_eq!(phases, vec![done("add"), done("remove")], "{status}");
    assert_eq!(moves(&owner0).await, phases);

    // The worker applies the finished removal on its next look at the map.
    for needle in [
        "writing to a shard added by a move",
        "stopped writing to a shard a move removed",
    ] {
        assert!(
            logged(&wlog, needle, Duration::from_secs(60)).await,
            "worker: {needle:?}\n{}",
            log_tail(&wlog)
        );
    }
    stop_gracefully(worker, &wlog).await;

    // Offline too (its own steps: the offsets check, the new shard's offsets copied at the
    // switch), onto another database the owner migrated first.
    let other = extra_shard(&stack, 2).await;
    migrate_as_owner(&config_for(&setup, std::slice::from_ref(&other), d, MOVER));
    let add_offline = [
        "add-shard",
        "--reason",
        "test: shard-set change",
        "--offline",
        "--name",
        "shard2",
        "--url",
        other.url.as_str(),
        "--batch-rows",
        "5000",
    ];
    let t = Instant::now();
    let report = reshard_ok(&setup.config, &add_offline, &wlog).await;
    eprintln!(
        "offline 2 -> 3 as the mover in {:.1?}: {}",
        t.elapsed(),
        report.trim()
    );
    let mut three = dbs.shards.clone();
    three.push(other.clone());
    assert_exactly_once(&three, &after_remove).await;
    assert_eq!(
        offsets(&other.url).await,
        offsets(&dbs.shards[0].url).await,
        "the added shard resumes where the others do"
    );
    let with_other = config_for(&setup, &three, d, MOVER);
    let t = Instant::now();
    let report = reshard_ok(
        &with_other.config,
        &[
            "remove-shard",
            "--reason",
            "test: shard-set change",
            "--offline",
            "--name",
            "shard2",
            "--batch-rows",
            "5000",
        ],
        &wlog,
    )
    .await;
    eprintln!(
        "offline 3 -> 2 as the mover in {:.1?}: {}",
        t.elapsed(),
        report.trim()
    );
    assert_exactly_once(&dbs.shards, &after_remove).await;
    assert_eq!(
        total_rows(std::slice::from_ref(&other)).await,
        0,
        "the removed shard holds nothing"
    );

    // What a mover must not do, on a shard with rows and chunks.
    let chunk: String = owner0
        .query_one(
            "SELECT format('%I.%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks
              WHERE hypertable_name = 'measurements' ORDER BY range_start LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let mover = connect(
        &dbs.shards[0]
            .url
            .replace("user=postgres", &format!("user={MOVER}")),
    )
    .await;
    for sql in [
        "TRUNCATE measurements".to_string(),
        format!("TRUNCATE {chunk}"),
        "SELECT count(*) FROM archive_log".into(),
        "INSERT INTO archive_log DEFAULT VALUES".into(),
        "UPDATE archive_log SET detail = detail".into(),
        "DELETE FROM archive_log".into(),
        "TRUNCATE archive_log".into(),
        "SELECT drop_chunks('measurements', older_than => now())".into(),
        format!("DROP TABLE {chunk}"),
        format!("SELECT vitalsink_drop_chunk('{chunk}')"),
        "ALTER TABLE measurements ADD COLUMN x int".into(),
        "CREATE TABLE vitalsink_intruder (i int)".into(),
        "DROP TABLE shard_move_rows".into(),
    ] {
        assert_eq!(
            sqlstate(&mover, &sql).await.as_deref(),
            Some("42501"),
            "the mover must be refused: {sql}"
        );
    }
    assert_exactly_once(&dbs.shards, &after_remove).await;

    dbs.drop_all().await;
    let admin = connect(stack.shard_urls.last().unwrap()).await;
    drop(owner_new);
    for shard in [&new, &other] {
        let name = shard.url.rsplit("dbname=").next().unwrap();
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .unwrap();
    }
    eprintln!("moves as the mover: {:.1?}", started.elapsed());
}
