//! The pipeline through PgBouncer in transaction pooling mode (issue 27, item 2): one
//! PgBouncer 1.24 per shard server (`dev/pgbouncer`, `max_prepared_statements = 200`), every
//! binary's shard connections through it with `database.pooling = "transaction"`:
//! - `ingest` (COPY, cached prepared statements, the staging table) drains the data
//!   set with a SIGKILL in the middle: exactly once;
//! - `reshard add-shard` and `archiver run` are refused at start-up without
//!   `database.direct_urls` (their bulk lock is a session advisory lock), naming the key; with
//!   it, the move (2 → 3 shards) stays exact and the lock is gone afterwards;
//! - `archiver run` archives every aged chunk, `query` reads shards + archive equal to the
//!   truth, `archiver restore` brings the archived days back exactly; an archiver daemon
//!   keeps its bulk-lock sessions on the direct URLs, none on PgBouncer's server connections;
//! - `trial` withdraws a participant and verifies the audit trail.
//!
//! Each step must show up in PgBouncer's own `SHOW STATS` (transactions pooled), so PgBouncer
//! really was in the path. And the PgBouncer setting this rests on: without
//! `max_prepared_statements`, a statement tokio-postgres prepared is gone once the client
//! gets another server connection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use vitalsink_common::config::ShardConfig;
use vitalsink_tests::archive_run::{
    aged_chunk_count, aged_start, archiver_binary, assert_totals_eq, db_totals, load, DataShape,
};
use vitalsink_tests::dataset::Totals;
use vitalsink_tests::ingest_run::{
    assert_exactly_once, dataset, extra_shard, log_tail, prepare, produce_in_background,
    stop_gracefully, total_rows, wait_for_rows,
};
use vitalsink_tests::pgbouncer::{port_of, xacts, Bouncer};
use vitalsink_tests::query_run::close;
use vitalsink_tests::trial_run::trial_binary;
use vitalsink_tests::{connect, Stack};

/// Aged data for the archiver: about 4 days 45 days ago, 30 participants, 2 metrics.
const AGED: DataShape = DataShape {
    participants: 30,
    per_metric: 1_000,
    every_secs: 360,
    recent: 10,
    bulky: false,
};

/// `application_name` of the direct (bypass) connections in the test's configurations.
const DIRECT_APP: &str = "vs_direct";

/// Writes a configuration: `head` (the ingest set-up's `[kafka]` … `[observability]`),
/// transaction pooling, the direct URLs when `direct` is given, a local archive, `shards`.
fn write_config(
    path: &Path,
    head: &str,
    shards: &[ShardConfig],
    direct: Option<&[ShardConfig]>,
    archive: &Path,
) {
    let mut t = format!("{head}[database]\npooling = \"transaction\"\n");
    if let Some(d) = direct {
        t.push_str("[database.direct_urls]\n");
        for s in d {
            // Named, so that the test can find these sessions in `pg_stat_activity`.
            t.push_str(&format!(
                "{} = \"{} application_name={DIRECT_APP}\"\n",
                s.name, s.url
            ));
        }
    }
    t.push_str(&format!(
        "[archive]\nroot = \"file://{}\"\nolder_than = \"30d\"\nrows_per_second = 0\n",
        archive.display()
    ));
    for s in shards {
        t.push_str(&format!(
            "[[shards]]\nname = \"{}\"\nurl = \"{}\"\n",
            s.name, s.url
        ));
    }
    std::fs::write(path, t).unwrap();
}

fn run(bin: &Path, config: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn ok(bin: &Path, config: &Path, args: &[&str]) -> String {
    let out = run(bin, config, args);
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A command refused at start-up (exit code 2) naming `key`.
fn refused(bin: &Path, config: &Path, args: &[&str], key: &str) {
    let out = run(bin, config, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(key), "{args:?} names {key}: {stderr}");
}

/// Advisory locks held in `shard`'s database (a bulk lock left on a pooled server connection
/// would show here).
async fn advisory_locks(shard: &ShardConfig) -> i64 {
    connect(&shard.url)
        .await
        .query_one(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
              WHERE l.locktype = 'advisory' AND d.datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Asserts PgBouncer pooled more transactions than `before` during `step`; returns the count.
async fn through(bouncers: &[Bouncer], before: i64, step: &str) -> i64 {
    let now = xacts(bouncers).await;
    assert!(
        now > before,
        "{step}: PgBouncer pooled no transaction ({before} -> {now})"
    );
    eprintln!("{step}: {} transactions through PgBouncer", now - before);
    now
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_through_pgbouncer_transaction_pooling_stays_exact() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let t0 = Instant::now();
    let stack = Stack::from_env();
    let bouncers: Vec<Bouncer> = stack
        .shard_urls
        .iter()
        .map(|u| Bouncer::start(port_of(u)))
        .collect();
    let (dbs, setup0, dir) = prepare(&stack, "t_pgb").await;
    let d = dir.path();
    let archive = d.join("archive");
    let direct2 = dbs.shards.clone();
    let pooled2: Vec<ShardConfig> = direct2
        .iter()
        .zip(&bouncers)
        .map(|(s, b)| b.route(s))
        .collect();
    for (s, b) in pooled2.iter().zip(&bouncers) {
        assert!(s.url.contains(&format!("port={}", b.port)), "{}", s.url);
    }
    let text = std::fs::read_to_string(&setup0.config).unwrap();
    let head = text.split_once("[[shards]]").unwrap().0.to_string();
    // Ingest, query and trial need no session: the configuration without any bypass.
    let pooled_cfg = d.join("pooled.toml");
    write_config(&pooled_cfg, &head, &pooled2, None, &archive);
    let setup = vitalsink_tests::ingest_run::IngestSetup {
        shards: pooled2.clone(),
        config: pooled_cfg.clone(),
        ..setup0.clone()
    };

    // 1. ingest through PgBouncer, SIGKILLed once mid-load: exactly once.
    let mut x = xacts(&bouncers).await;
    let t = Instant::now();
    let data = dataset();
    let log = d.join("ingest.log");
    let mut worker = setup.spawn(&log);
    produce_in_background(&stack.brokers, &setup.topic, &data.records)
        .await
        .unwrap();
    wait_for_rows(&direct2, data.readings / 3, Duration::from_secs(180)).await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    let at_kill = total_rows(&direct2).await;
    worker = setup.spawn(&log);
    let n = wait_for_rows(&direct2, data.readings, Duration::from_secs(240)).await;
    assert_eq!(
        n,
        data.readings,
        "rows (killed at {at_kill})\n{}",
        log_tail(&log)
    );
    stop_gracefully(worker, &log).await;
    assert_exactly_once(&direct2, &data.expected).await;
    x = through(&bouncers, x, "ingest").await;
    eprintln!(
        "ingest: {} readings in {:.1}s, killed at {at_kill}",
        data.readings,
        t.elapsed().as_secs_f64()
    );

    // 2. reshard 2 -> 3: refused without direct URLs, exact with them.
    let t = Instant::now();
    let reshard = archiver_binary().with_file_name("reshard");
    let new_direct = extra_shard(&stack, 2).await;
    let new_bouncer = bouncers
        .iter()
        .find(|b| b.target == port_of(&new_direct.url))
        .unwrap();
    let new_pooled = new_bouncer.route(&new_direct);
    let add = [
        "add-shard",
        "--reason",
        "test: through PgBouncer",
        "--offline",
        "--name",
        "shard2",
        "--url",
        new_pooled.url.as_str(),
    ];
    refused(&reshard, &pooled_cfg, &add, "database.direct_urls.shard0");
    let mut direct3 = direct2.clone();
    direct3.push(new_direct.clone());
    let bypass2 = d.join("bypass2.toml");
    write_config(&bypass2, &head, &pooled2, Some(&direct2), &archive);
    // shard2's own direct URL missing: named too.
    refused(&reshard, &bypass2, &add, "database.direct_urls.shard2");
    write_config(&bypass2, &head, &pooled2, Some(&direct3), &archive);
    let report = ok(&reshard, &bypass2, &add);
    eprintln!("reshard: {}", report.trim());
    assert_exactly_once(&direct3, &data.expected).await;
    for s in &direct3 {
        assert_eq!(advisory_locks(s).await, 0, "{}: lock left behind", s.name);
    }
    x = through(&bouncers, x, "reshard").await;
    eprintln!("reshard: {:.1}s", t.elapsed().as_secs_f64());

    // 3. archiver: refused without direct URLs; run, query, restore with them.
    let t = Instant::now();
    let mut pooled3 = pooled2.clone();
    pooled3.push(new_pooled.clone());
    // Three shards: smaller batches (half the memory cap holds two per shard).
    let head: String = head
        .lines()
        .map(|l| {
            if l.starts_with("batch_max_bytes = ") {
                format!("batch_max_bytes = {}\n", setup.memory_cap / 4 / 3)
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let pooled_cfg3 = d.join("pooled3.toml");
    write_config(&pooled_cfg3, &head, &pooled3, None, &archive);
    let bypass3 = d.join("bypass3.toml");
    write_config(&bypass3, &head, &pooled3, Some(&direct3), &archive);
    let archiver = archiver_binary();
    refused(
        &archiver,
        &pooled_cfg3,
        &["run"],
        "database.direct_urls.shard0",
    );
    // Loaded through PgBouncer too (plain INSERT … SELECT).
    let original: Totals = load(&pooled3, AGED).await;
    assert_totals_eq(
        &db_totals(&direct3).await,
        &original,
        "load through PgBouncer",
    );
    let mut aged = 0;
    for s in &direct3 {
        aged += aged_chunk_count(s).await;
    }
    assert!(aged >= 3, "{aged} aged chunks");
    let report: serde_json::Value =
        serde_json::from_str(ok(&archiver, &bypass3, &["run"]).trim()).unwrap();
    assert_eq!(report["archived"].as_i64(), Some(aged), "{report}");
    assert_eq!(report["failed"].as_i64(), Some(0), "{report}");
    for s in &direct3 {
        assert_eq!(aged_chunk_count(s).await, 0, "{}: aged chunks left", s.name);
        assert_eq!(advisory_locks(s).await, 0, "{}: lock left behind", s.name);
    }
    let verify: serde_json::Value =
        serde_json::from_str(&ok(&archiver, &pooled_cfg3, &["verify"])).unwrap();
    assert_eq!(verify["good"].as_i64(), Some(aged), "{verify}");
    x = through(&bouncers, x, "archiver run").await;

    // query: shards (through PgBouncer) + archive equal the truth.
    let query = archiver_binary().with_file_name("query");
    let out = ok(
        &query,
        &pooled_cfg3,
        &[
            "sql",
            "SELECT participant_id, count(*) AS n, sum(value) AS s FROM measurements GROUP BY 1",
            "--format",
            "json",
        ],
    );
    let mut got = Totals::new();
    for l in out.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        got.insert(
            v["participant_id"].as_str().unwrap().to_string(),
            (v["n"].as_i64().unwrap(), v["s"].as_f64().unwrap_or(0.0)),
        );
    }
    assert_eq!(got.len(), original.len(), "participants seen by query");
    for (p, (n, s)) in &original {
        let (gn, gs) = got.get(p).copied().unwrap_or_default();
        assert!(
            gn == *n && close(gs, *s),
            "{p}: query {gn}/{gs}, truth {n}/{s}"
        );
    }
    x = through(&bouncers, x, "query").await;

    // restore the archived days: the shards hold the original rows again.
    let from = (aged_start() - chrono::Duration::days(1)).to_rfc3339();
    let to = (aged_start() + chrono::Duration::days(10)).to_rfc3339();
    ok(
        &archiver,
        &pooled_cfg3,
        &["restore", "--from", &from, "--to", &to, "--reason", "test"],
    );
    assert_totals_eq(
        &db_totals(&direct3).await,
        &original,
        "restored through PgBouncer",
    );
    x = through(&bouncers, x, "archiver restore").await;
    // The archiver as a daemon: between rounds its bulk-lock sessions stay open in its
    // direct pool, on the direct URLs, not on any of PgBouncer's server connections.
    let dlog = d.join("daemon.log");
    let mut daemon = Command::new(&archiver)
        .arg("--config")
        .arg(&bypass3)
        .args(["run", "--every", "1h"])
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&dlog).unwrap())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&dlog)
        .unwrap_or_default()
        .contains("archive run done")
    {
        assert!(Instant::now() < end, "no round done\n{}", log_tail(&dlog));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut pooled_ports = std::collections::BTreeSet::new();
    for b in &bouncers {
        for r in b.show("SERVERS").await {
            if let Some((_, p)) = r.iter().find(|(k, _)| k == "local_port") {
                pooled_ports.insert(p.parse::<i32>().unwrap());
            }
        }
    }
    for s in &direct3 {
        let ports: Vec<i32> = connect(&s.url)
            .await
            .query(
                "SELECT client_port FROM pg_stat_activity
                  WHERE datname = current_database() AND application_name = $1",
                &[&DIRECT_APP],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(!ports.is_empty(), "{}: no direct session", s.name);
        assert!(
            ports.iter().all(|p| !pooled_ports.contains(p)),
            "{}: direct sessions {ports:?} among PgBouncer's {pooled_ports:?}",
            s.name
        );
    }
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    eprintln!("archiver: {:.1}s", t.elapsed().as_secs_f64());

    // 4. trial: a withdrawal and the audit trail, through PgBouncer.
    let trial = trial_binary();
    ok(
        &trial,
        &pooled_cfg3,
        &[
            "participants",
            "withdraw",
            "P0001",
            "--effective",
            "2099-01-01",
            "--reason",
            "test: through PgBouncer",
        ],
    );
    let list = ok(&trial, &pooled_cfg3, &["participants", "list"]);
    assert!(
        list.contains("P0001") && list.contains("withdrawn"),
        "{list}"
    );
    ok(&trial, &pooled_cfg3, &["audit", "verify"]);
    through(&bouncers, x, "trial").await;

    for b in &bouncers {
        let pools = b.show("POOLS").await;
        assert!(
            pools
                .iter()
                .filter(|r| r.iter().any(|(k, v)| k == "database" && v != "pgbouncer"))
                .all(|r| r
                    .iter()
                    .any(|(k, v)| k == "pool_mode" && v == "transaction")),
            "{pools:?}"
        );
    }
    eprintln!("total: {:.1}s", t0.elapsed().as_secs_f64());
    dbs.drop_all().await;
    for s in [new_direct] {
        connect(stack.shard_urls.last().unwrap())
            .await
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                s.url.rsplit("dbname=").next().unwrap()
            ))
            .await
            .unwrap();
    }
}

/// tokio-postgres prepares every statement it is given as text (a protocol-level named
/// statement `sN`). Through a transaction pool that statement lives on the server connection
/// it was prepared on; PgBouncer follows it to the next one only with
/// `max_prepared_statements` > 0. Here the statement's server connection is taken by another
/// client's open transaction (PgBouncer lends idle server connections last in, first out),
/// so the second use runs on a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_need_max_prepared_statements() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let target = port_of(&stack.shard_urls[0]);
    for (max, works) in [("0", false), ("200", true)] {
        let b = Bouncer::start_with(target, &[("PGBOUNCER_MAX_PREPARED_STATEMENTS", max)]);
        let url = format!(
            "host=127.0.0.1 port={} user=postgres dbname=vitalsink",
            b.port
        );
        let (a, other) = (connect(&url).await, connect(&url).await);
        let st = a.prepare("SELECT 41 + 1").await.unwrap();
        other.batch_execute("BEGIN; SELECT 1").await.unwrap();
        let got = a.query_one(&st, &[]).await;
        other.batch_execute("COMMIT").await.unwrap();
        if works {
            assert_eq!(
                got.unwrap().get::<_, i32>(0),
                42,
                "max_prepared_statements = {max}"
            );
        } else {
            let e = got.expect_err("a prepared statement on another server connection");
            assert_eq!(
                e.code(),
                Some(&tokio_postgres::error::SqlState::INVALID_SQL_STATEMENT_NAME),
                "{e:?}"
            );
            eprintln!("max_prepared_statements = 0: {e:?}");
        }
    }
}
