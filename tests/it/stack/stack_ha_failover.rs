//! Issue 27, automatic failover: every shard a Patroni cluster (`STACK_HA=1 dev/stack`: a
//! primary and a synchronous streaming replica, each member in a network namespace of its
//! own, one etcd). The shards are given to the binaries as libpq multi-host strings
//! (`host=a,b … target_session_attrs=read-write`; read-only ones as `replicas` for `query`).
//!
//! Under steady ingest, every process of shard0's primary's namespace is SIGKILLed (its
//! PostgreSQL and its Patroni: the machine dies). Patroni promotes the replica with nobody's
//! help; the time from the kill to the new primary accepting a write is measured and
//! printed. The worker goes on by itself and every reading is stored exactly once. An
//! `archiver run` under way at the kill (a second deployment with aged chunks) finishes or
//! fails naming shard0; the next run archives the rest, each chunk dropped once, archive +
//! shards exactly the original rows. `query` during the failover answers or fails naming
//! shard0. Then an `archiver run` and a `query` over archive + shards (replicas where one
//! answers) work on the new topology with the same configuration, and the old primary
//! rejoins as a replica (pg_rewind) and serves `query`'s reads again.
//!
//! Manual variant: `HA_TEST_FAULT=partition` cuts the primary off the network instead
//! (`HA_TEST_KEEPALIVE=1` adds TCP keepalives and `tcp_user_timeout` to the shard strings,
//! `HA_TEST_CONN_PARAMS` other parameters; without them the worker stalls, README "High
//! availability (Patroni)").
//!
//! The test starts the HA stack itself when it is not up (and stops it at the end only
//! then); the broker and S3 are the plain stack's. A missing piece fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use vitalsink_tests::archive_run::{
    add, aged_chunk_count, assert_totals_eq, db_totals, load, log_steps, ArchiveSetup, ROUND_TRIP,
};
use vitalsink_tests::ingest_run::{
    assert_exactly_once, dataset, ingest_binary, log_tail, prepare, produce_in_background,
    stop_gracefully, total_rows, wait_exit, wait_for_rows,
};
use vitalsink_tests::replay_run::{archive_config, archiver_json};
use vitalsink_tests::Stack;

/// `STACK_HA=1 dev/stack ARGS`: (success, stdout, stderr).
fn ha_script(args: &[&str]) -> (bool, String, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../dev/stack");
    let out = Command::new(script)
        .args(args)
        .env("STACK_HA", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ha_ok(args: &[&str]) -> String {
    let (ok, out, err) = ha_script(args);
    assert!(ok, "STACK_HA=1 dev/stack {args:?} failed:\n{out}\n{err}");
    out
}

/// The HA stack's endpoints (`STACK_HA=1 dev/stack env`) and its read-only shard strings.
fn ha_env() -> (Stack, Vec<String>) {
    let vars: BTreeMap<String, String> = ha_ok(&["env"])
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect();
    let var = |k: &str| {
        vars.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("STACK_HA=1 dev/stack env printed no {k}"))
    };
    let split = |v: String| v.split(';').map(str::to_string).collect::<Vec<_>>();
    (
        Stack {
            brokers: var("STACK_KAFKA_BROKERS"),
            shard_urls: split(var("STACK_SHARD_URLS")),
            s3_endpoint: var("STACK_S3_ENDPOINT"),
            s3_bucket: var("STACK_S3_BUCKET"),
        },
        split(var("STACK_HA_REPLICA_URLS")),
    )
}

/// `query --config config sql SQL --format json`.
fn query_output(config: &Path, sql: &str) -> std::process::Output {
    Command::new(ingest_binary().with_file_name("query"))
        .arg("--config")
        .arg(config)
        .args(["sql", sql, "--format", "json"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// [`query_output`] as JSON objects; asserts success.
fn query_rows(config: &Path, sql: &str) -> Vec<serde_json::Value> {
    let out = query_output(config, sql);
    assert!(
        out.status.success(),
        "query {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Per participant (rows, sum) through `query` (archive + shards).
fn query_totals(config: &Path) -> BTreeMap<String, (i64, f64)> {
    query_rows(
        config,
        "SELECT participant_id, count(*) AS n, sum(value) AS s FROM measurements GROUP BY participant_id",
    )
    .iter()
    .map(|r| {
        (
            r["participant_id"].as_str().unwrap().into(),
            (r["n"].as_i64().unwrap(), r["s"].as_f64().unwrap()),
        )
    })
    .collect()
}

fn explain(config: &Path) -> String {
    query_rows(config, "EXPLAIN SELECT count(*) FROM measurements")
        .iter()
        .map(|r| r["plan"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Polls `url` (read-write multi-host) until a write commits; the time it took.
async fn until_writable(url: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let probe = format!("{url} connect_timeout=2");
    while start.elapsed() < limit {
        if let Ok(Ok((c, conn))) = tokio::time::timeout(
            Duration::from_secs(3),
            tokio_postgres::connect(&probe, tokio_postgres::NoTls),
        )
        .await
        {
            tokio::spawn(conn);
            if c.batch_execute(
                "CREATE TEMP TABLE ha_probe (a int); INSERT INTO ha_probe VALUES (1)",
            )
            .await
            .is_ok()
            {
                return Some(start.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Waits until shard0's primary (`admin`, a read-write multi-host string) has a replica that
/// has replayed everything it wrote, so that reads of the replica are complete.
async fn replica_caught_up(admin: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok((c, conn)) = tokio_postgres::connect(admin, tokio_postgres::NoTls).await {
            tokio::spawn(conn);
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM pg_stat_replication
                      WHERE state = 'streaming' AND replay_lsn >= pg_current_wal_lsn()",
                    &[],
                )
                .await
                .map(|r| r.get(0))
                .unwrap_or(0);
            if n > 0 {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    false
}

/// Waits until every shard has a primary and a streaming replica (`status` exits 0).
async fn wait_whole(limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ha_script(&["status"]).0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// A child process killed when dropped, so that a failing test leaves no worker or archiver
/// behind (one blocked on a cut-off primary would outlive the test by many minutes).
struct Reaped(Option<std::process::Child>);

impl Reaped {
    fn take(&mut self) -> std::process::Child {
        self.0.take().unwrap()
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Stops the HA stack when dropped (the test passed or failed) if this test started it.
struct Started(bool);

impl Drop for Started {
    fn drop(&mut self) {
        if self.0 {
            let (ok, out, err) = ha_script(&["down"]);
            if !ok {
                eprintln!("STACK_HA=1 dev/stack down failed:\n{out}\n{err}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_promotes_the_replica_and_every_binary_follows() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let _started = if ha_script(&["status"]).0 {
        Started(false)
    } else {
        let t = Instant::now();
        let guard = Started(true);
        ha_ok(&["up"]);
        eprintln!(
            "STACK_HA=1 dev/stack up took {:.1} s",
            t.elapsed().as_secs_f64()
        );
        guard
    };
    let (stack, replica_urls) = ha_env();
    assert_eq!(stack.shard_urls.len(), 2, "two HA shards");
    assert!(stack.shard_urls[0].contains("target_session_attrs=read-write"));

    // A second deployment on the same HA shards with aged data (chunks 45 days back), for an
    // archiver run that is under way when the primary dies.
    let arch = ArchiveSetup::new(&stack, "t_ha_arch", false, "").await;
    let original = load(&arch.dbs.shards, ROUND_TRIP).await;

    // HA_TEST_FAULT=partition (a manual variant): the primary is cut off the network
    // instead of killed. HA_TEST_KEEPALIVE=1 adds TCP keepalives and a TCP user timeout to
    // the shard strings; HA_TEST_CONN_PARAMS adds the parameters it gives instead.
    let partition = std::env::var("HA_TEST_FAULT").as_deref() == Ok("partition");
    let mut stack = stack;
    let extra = match std::env::var("HA_TEST_CONN_PARAMS") {
        Ok(p) => Some(p),
        Err(_) if std::env::var("HA_TEST_KEEPALIVE").as_deref() == Ok("1") => Some(
            "keepalives_idle=5 keepalives_interval=2 keepalives_retries=3 tcp_user_timeout=10"
                .to_string(),
        ),
        Err(_) => None,
    };
    if let Some(extra) = extra {
        for u in &mut stack.shard_urls {
            u.push(' ');
            u.push_str(&extra);
        }
    }
    let (dbs, setup, dir) = prepare(&stack, "t_ha").await;
    let data = dataset();
    let log = dir.path().join("ingest.log");
    let mut worker = Reaped(Some(setup.spawn(&log)));
    let producing = produce_in_background(&stack.brokers, &setup.topic, &data.records);
    let before = wait_for_rows(&dbs.shards, data.readings / 5, Duration::from_secs(120)).await;
    assert!(
        before < data.readings,
        "the load must still be running at the kill ({before} rows)"
    );

    // The configurations of the archiver and query: the worker's, plus an archive (chunks
    // older than a day; readings span the 3 days before now in 1-day chunks), plus, for
    // query, each shard's replicas as one read-only multi-host string.
    let archive = archive_config(&setup.config, &dir.path().join("archive"), "1d");
    let mut qtext = std::fs::read_to_string(&archive).unwrap();
    for (s, ro) in dbs.shards.iter().zip(&replica_urls) {
        let line = format!("url = \"{}\"\n", s.url);
        assert!(qtext.contains(&line));
        let db = s
            .url
            .split("dbname=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        let ro = ro.replace("dbname=vitalsink", &format!("dbname={db}"));
        qtext = qtext.replace(&line, &format!("{line}replicas = [\"{ro}\"]\n"));
    }
    let qcfg = dir.path().join("query.toml");
    std::fs::write(&qcfg, qtext).unwrap();

    // The primary of shard0 dies: SIGKILL of every process in its namespace. Queries run
    // meanwhile.
    let rows_at_kill = total_rows(&dbs.shards).await;
    let mut archiving = Reaped(Some(arch.command(&["run"], &[]).spawn().unwrap()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = ha_ok(&[
        if partition {
            "partition-primary"
        } else {
            "kill-primary"
        },
        "0",
    ])
    .trim()
    .to_string();
    let t_kill = Instant::now();
    let url0 = dbs.shards[0].url.clone();
    let probe = tokio::spawn(async move {
        until_writable(&url0, Duration::from_secs(90))
            .await
            .map(|_| t_kill.elapsed())
    });
    let sql = "SELECT count(*) AS n FROM measurements";
    let (with, without) = (qcfg.clone(), archive.clone());
    let during = tokio::task::spawn_blocking(move || query_output(&with, sql));
    let during_primary = tokio::task::spawn_blocking(move || query_output(&without, sql));
    let (during, during_primary) = (during.await.unwrap(), during_primary.await.unwrap());
    // query reads the shard map from shard0's primary, replicas or not: while there is none,
    // it fails with an error naming shard0 (the caller retries), or answers once there is.
    for (what, out) in [("with", &during), ("without", &during_primary)] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("shard0"),
            "query {what} replicas during the failover: answers or fails naming shard0: {err}"
        );
        eprintln!(
            "during the failover, query {what} replicas: {}",
            if out.status.success() {
                "answered".to_string()
            } else {
                err.lines().last().unwrap_or_default().to_string()
            }
        );
    }
    let failover = probe
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no writable primary of shard0 90 s after killing {killed}"));
    let new_primary = ha_ok(&["primary", "0"]).trim().to_string();
    eprintln!(
        "killed {killed} at {rows_at_kill} rows; {new_primary} accepted writes {:.1} s later",
        failover.as_secs_f64()
    );
    assert_ne!(new_primary, killed);
    assert!(
        failover < Duration::from_secs(45),
        "failover took {failover:?} (ttl 20 s)"
    );

    let positions = producing.await.unwrap();
    assert_eq!(positions.len(), data.records.len());
    let t = Instant::now();
    let n = wait_for_rows(&dbs.shards, data.readings, Duration::from_secs(300)).await;
    assert_eq!(
        n,
        data.readings,
        "rows after the failover\n{}",
        log_tail(&log)
    );
    eprintln!(
        "all {n} readings stored {:.1} s after the new primary took writes",
        t.elapsed().as_secs_f64()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("retrying"),
        "the worker saw the primary go and retried\n{}",
        log_tail(&log)
    );
    assert_exactly_once(&dbs.shards, &data.expected).await;
    stop_gracefully(worker.take(), &log).await;

    // The archiver run that the kill interrupted either finished or failed naming shard0; run
    // again, it archives the rest. Every aged chunk is then dropped exactly once, and archive
    // plus shards hold exactly the original rows.
    let first = wait_exit(archiving.0.as_mut().unwrap(), Duration::from_secs(120))
        .await
        .expect("the archiver run of the failover never ended");
    let first_log = std::fs::read_to_string(&arch.log).unwrap_or_default();
    let named = first_log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("shard0"));
    assert!(
        first.success() || named.is_some(),
        "archiver run during the failover: finishes, or fails with an error naming shard0: {}\n{}",
        first,
        arch.log_tail()
    );
    eprintln!(
        "archiver run during the failover: {}",
        named.map_or("finished".to_string(), str::to_string)
    );
    let again: serde_json::Value = serde_json::from_str(&arch.ok(&["run"])).unwrap();
    assert_eq!(again["failed"].as_i64(), Some(0), "{again}");
    for s in &arch.dbs.shards {
        assert_eq!(aged_chunk_count(s).await, 0, "{}: aged chunks left", s.name);
        let steps = log_steps(s).await;
        let mut dropped: BTreeMap<&str, usize> = BTreeMap::new();
        for (chunk, _, step, _) in &steps {
            if step == "dropped" {
                *dropped.entry(chunk.as_str()).or_default() += 1;
            }
        }
        assert!(
            dropped.len() >= 5 && dropped.values().all(|n| *n == 1),
            "{}: each aged chunk dropped once: {dropped:?}",
            s.name
        );
    }
    let left = db_totals(&arch.dbs.shards).await;
    assert_totals_eq(
        &add(&arch.duckdb(None).totals, &left),
        &original,
        "archive + shards after an archiver run through the failover",
    );
    arch.dbs.drop_all().await;

    // The archiver and query, same configuration, new topology. Readings span the 3 days
    // before now in 1-day chunks: those older than a day are archived.
    let run = archiver_json(&archive, &["run"], &dir.path().join("archiver.log"));
    assert!(run["archived"].as_i64().unwrap_or(0) > 0, "{run}");
    assert_eq!(run["failed"].as_i64(), Some(0), "{run}");
    assert_eq!(
        query_totals(&qcfg),
        data.expected,
        "query: archive + shards"
    );
    let plan = explain(&qcfg);
    assert!(
        plan.contains("shard0 (primary)"),
        "shard0 has no replica now\n{plan}"
    );
    assert!(plan.contains("shard1 (replica 0)"), "{plan}");

    // The old primary rejoins as a replica (pg_rewind) and serves query's reads of shard0.
    if partition {
        ha_ok(&["heal", &killed]);
    } else {
        ha_ok(&["start-member", &killed]);
    }
    let t = Instant::now();
    assert!(
        wait_whole(Duration::from_secs(120)).await,
        "{killed} did not rejoin: {}",
        ha_script(&["status"]).1
    );
    eprintln!(
        "{killed} rejoined as a replica in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(ha_ok(&["primary", "0"]).trim(), new_primary);
    assert!(
        replica_caught_up(&stack.shard_urls[0], Duration::from_secs(60)).await,
        "{killed} streams but never caught up"
    );
    // Patroni may restart the rejoined member once more (after pg_rewind): query falls back to
    // the primary while it does, and reads the replica again within seconds.
    let mut plan = String::new();
    for _ in 0..30 {
        plan = explain(&qcfg);
        if plan.contains("shard0 (replica 0)") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(plan.contains("shard0 (replica 0)"), "{plan}");
    assert_eq!(query_totals(&qcfg), data.expected, "query after the rejoin");

    // The shard map keeps a move's target as given: a multi-host string round-trips through
    // `shard_moves.target_url` to what writers route by (`shardmap::routing`), read through a
    // pool on the multi-host string of the map shard.
    let target = format!("{} connect_timeout=3", stack.shard_urls[1]);
    let map0 = vitalsink_tests::connect(&dbs.shards[0].url).await;
    map0.execute(
        "INSERT INTO shard_map (epoch, shards, reason) VALUES (2, $1, 'test: pending add')",
        &[&vec!["shard0", "shard1", "shard2"]],
    )
    .await
    .unwrap();
    map0.execute(
        "INSERT INTO shard_moves (from_epoch, to_epoch, kind, shard, phase, online, target_url)
         VALUES (1, 2, 'add', 'shard2', 'cutover', true, $1)",
        &[&target],
    )
    .await
    .unwrap();
    let db = vitalsink_common::config::DatabaseConfig::default();
    let shard0 = vitalsink_common::db::Shard::new(0, &dbs.shards[0], &db).unwrap();
    let routing = vitalsink_common::shardmap::routing(&shard0).await.unwrap();
    assert_eq!(routing.pending.map(|m| m.target.url), Some(target));

    dbs.drop_all().await;
}
