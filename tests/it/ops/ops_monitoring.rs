//! Issue 27, items 4 and 5: the alert rules and the Grafana dashboard against live services.
//!
//! - promtool (the trixie root filesystem's, 2.53) checks the rules and the example
//!   configuration and runs the rule tests (each rule firing and resolving);
//! - a real Prometheus (127.0.0.1:19090, data under MONITORING_DIR) scrapes a running ingest
//!   worker, a running archiver daemon, a `reshard add-shard` move while it runs, and
//!   postgres_exporter on both shards and on a streaming replica. Shard 0 is a fresh database
//!   on the stack's first shard; shard 1 is a fresh database on a primary of our own
//!   (`dev/monitoring pair-up`, 127.0.0.1:17500, backed up by pgBackRest) whose replica
//!   (17501) has the third exporter. The shared stack's standbys are not touched;
//! - every rule loads and evaluates without error;
//! - every query of every panel of `ops/grafana/vitalsink.json` returns data: PromQL against
//!   that Prometheus (range queries for time-series panels, instant ones otherwise), SQL
//!   against shard 0 (the map shard, which also holds participants).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "ops_monitoring/procs.rs"]
mod procs;
#[path = "ops_monitoring/support.rs"]
mod support;

use procs::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{
    dashboard_queries, monitoring, promql_concrete, repo, sql_concrete, Prometheus, Query,
};
use vitalsink_common::config::ShardConfig;
use vitalsink_common::kafka::ensure_topic;
use vitalsink_tests::archive_run::{archiver_binary, load, DataShape};
use vitalsink_tests::dataset::generate;
use vitalsink_tests::ingest_run::{
    endpoints_addr, extra_shard, ingest_binary, log_tail, produce, stop_gracefully, wait_for_rows,
    IngestSetup,
};
use vitalsink_tests::{connect, unique, Stack};

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_live_binaries_and_every_dashboard_query_returns_data() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let t0 = Instant::now();
    promtool_checks();
    let alerts = rules_documented_and_tested();
    eprintln!("promtool checks and rule tests: {:?}", t0.elapsed());
    let stack = Stack::from_env();
    monitoring(&["down", NAME]);
    let mut cleanup = Cleanup(Vec::new());
    let listen = Listen {
        ingest: free_listen(),
        archiver: free_listen(),
        reshard: free_listen(),
    };
    monitoring(&[
        "pair-up",
        NAME,
        &PRIMARY_PORT.to_string(),
        &REPLICA_PORT.to_string(),
    ]);
    eprintln!("primary + replica + pgBackRest backup: {:?}", t0.elapsed());

    // Shards: a fresh database on the stack's first shard and one on our own primary.
    let db = unique("t_opsmon");
    let stack0 = stack.shard_urls[0].clone();
    let pair =
        |port: u16, db: &str| format!("host=127.0.0.1 port={port} user=postgres dbname={db}");
    create_db(&stack0, &db).await;
    create_db(&pair(PRIMARY_PORT, "postgres"), &db).await;
    let shards = vec![
        ShardConfig {
            name: "shard0".into(),
            url: format!("{} dbname={db}", stack0.replace("dbname=vitalsink", "")),
            replicas: Vec::new(),
        },
        ShardConfig {
            name: "shard1".into(),
            url: pair(PRIMARY_PORT, &db),
            replicas: Vec::new(),
        },
    ];
    let dir = tempfile::tempdir().unwrap();

    // Archiver configuration (local archive, 30-day window); `migrate` makes the schema.
    let archiver_config = dir.path().join("archiver.toml");
    write_archiver_config(&archiver_config, &shards);
    let archiver_log = dir.path().join("archiver.log");
    let archiver = |args: &[&str]| {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&archiver_log)
            .unwrap();
        let mut c = Command::new(archiver_binary());
        c.arg("--config")
            .arg(&archiver_config)
            .args(args)
            .env("RUST_LOG", "info")
            .env("VITALSINK_OBSERVABILITY__LISTEN", &listen.archiver)
            .stdout(Stdio::null())
            .stderr(log);
        c
    };
    let st = archiver(&["migrate"]).status().unwrap();
    assert!(
        st.success(),
        "archiver migrate: {}",
        log_tail(&archiver_log)
    );
    // Aged readings (45 days back, hourly over about 4 days) and 20 hourly ones in the last day.
    let shape = DataShape {
        participants: 20,
        per_metric: 100,
        every_secs: 3_600,
        recent: 20,
        bulky: false,
    };
    load(&shards, shape).await;

    // Exporters (setup.sql on each primary) and Prometheus.
    let replica_dsn = pair(REPLICA_PORT, &db);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while connect(&replica_dsn)
        .await
        .query_one("SELECT count(*) FROM measurements", &[])
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica never got {db}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for (port, dsn) in
        EXPORTER_PORTS
            .iter()
            .zip([shards[0].url.clone(), shards[1].url.clone(), replica_dsn])
    {
        monitoring(&["exporter-up", NAME, &port.to_string(), &dsn]);
    }
    let config = prometheus_config(dir.path(), &listen);
    monitoring(&[
        "prometheus-up",
        NAME,
        &PROM_PORT.to_string(),
        config.to_str().unwrap(),
    ]);
    let prom = Prometheus {
        addr: format!("127.0.0.1:{PROM_PORT}"),
    };
    let prom_start = chrono::Utc::now().timestamp() as f64;
    eprintln!("exporters and Prometheus up: {:?}", t0.elapsed());

    // Ingest: readings of the last 3 days with malformed records (dead letters).
    let setup = IngestSetup::new(&stack, &shards, dir.path());
    ensure_topic(&stack.kafka(), &setup.topic, 6).await.unwrap();
    ensure_topic(&stack.kafka(), &setup.dlq_topic, 6)
        .await
        .unwrap();
    let before: i64 = vitalsink_tests::ingest_run::total_rows(&shards).await;
    let data = generate(200, 10, 1, 30, 2, chrono::Utc::now().timestamp_millis());
    let ingest_log = dir.path().join("ingest.log");
    let worker = spawn_ingest(&setup, &ingest_log, &listen.ingest);
    produce(&stack.brokers, &setup.topic, &data.records).await;
    let mut worker = worker;
    let n = wait_for_rows(&shards, before + data.readings, Duration::from_secs(60)).await;
    if n != before + data.readings {
        kill_term(&mut worker);
        panic!(
            "stored {n} of {}\n{}",
            before + data.readings,
            log_tail(&ingest_log)
        );
    }
    // Lag comes from librdkafka statistics every 5 s; let Prometheus see a few.
    let lag = prom
        .wait_nonempty(
            "vitalsink_ingest_consumer_lag{job=\"vitalsink-ingest\"}",
            Duration::from_secs(20),
        )
        .await;
    assert!(
        !lag.is_empty(),
        "no consumer lag scraped\n{}",
        log_tail(&ingest_log)
    );
    stop_gracefully(worker, &ingest_log).await;
    eprintln!(
        "ingest stored {} readings: {:?}",
        data.readings,
        t0.elapsed()
    );

    // A move (offline, throttled so that Prometheus scrapes it a few times): 2 → 3 shards.
    let shard2 = extra_shard(&stack, 2).await;
    let reshard = ingest_binary().with_file_name("reshard");
    let out = Command::new(&reshard)
        .args(["--config", setup.config.to_str().unwrap()])
        .args(["add-shard", "--name", "shard2", "--url", &shard2.url])
        .args([
            "--reason",
            "ops_monitoring test",
            "--offline",
            "--batch-rows",
            "50",
            "--bytes-per-second",
            "60000",
        ])
        .env("VITALSINK_OBSERVABILITY__LISTEN", &listen.reshard)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reshard: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("move done: {:?}", t0.elapsed());
    let mut shards3 = shards.clone();
    shards3.push(shard2.clone());
    let setup3 = IngestSetup::for_group(&setup, &shards3, dir.path());
    let ingest_log = dir.path().join("ingest-after-move.log");
    cleanup
        .0
        .push(spawn_ingest(&setup3, &ingest_log, &listen.ingest));

    // The archiver daemon over the 3 shards: archives the aged chunks on its first tick.
    write_archiver_config(&archiver_config, &shards3);
    cleanup
        .0
        .push(archiver(&["run", "--every", "1h"]).spawn().unwrap());

    // The worker's own gauges of issue 27 item 7 (partitions held, seconds without).
    let addr = endpoints_addr(&ingest_log).await;
    let text = wait_metric(
        &addr,
        "vitalsink_ingest_unassigned_seconds",
        Duration::from_secs(30),
    )
    .await;
    for m in [
        "vitalsink_ingest_partitions_assigned",
        "vitalsink_ingest_unassigned_seconds",
    ] {
        assert!(
            text.contains(m),
            "{m} missing from the worker's /metrics:\n{text}"
        );
    }

    // Every target up (the move's is gone by now).
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let up = prom.query("up{job!=\"vitalsink-reshard\"} == 1").await;
        if up.len() == 5 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "targets up: {up:?}\n{}\n{}",
            log_tail(&ingest_log),
            log_tail(&archiver_log)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let archived = prom
        .wait_nonempty(
            "vitalsink_archiver_chunks_total{result=\"archived\"}",
            Duration::from_secs(60),
        )
        .await;
    assert!(
        !archived.is_empty(),
        "archiver: {}",
        log_tail(&archiver_log)
    );
    let _ = prom
        .wait_nonempty(
            "vitalsink_ingest_partitions_assigned > 0",
            Duration::from_secs(30),
        )
        .await;
    // More readings for the restarted worker: its lag (librdkafka statistics every 5 s) is
    // known once it has consumed something. One malformed record of each kind too: the
    // dead-letter rate panel reads the running worker's counters, and a counter appears only
    // once it counts (the first worker's may have been scraped once only before it stopped);
    // a rate needs two scrapes of it (its value may be 0: the first scrape already saw
    // every increment).
    let more = generate(20, 5, 1, 10, 1, chrono::Utc::now().timestamp_millis());
    produce(&stack.brokers, &setup.topic, &more.records).await;
    let dead = prom
        .wait_nonempty(
            "rate(vitalsink_ingest_dlq_total{job=\"vitalsink-ingest\"}[10s])",
            Duration::from_secs(30),
        )
        .await;
    assert!(
        !dead.is_empty(),
        "no dead-letter rate from the restarted worker\n{}",
        log_tail(&ingest_log)
    );
    let lag = prom
        .wait_nonempty(
            "vitalsink_ingest_consumer_lag{job=\"vitalsink-ingest\"}",
            Duration::from_secs(30),
        )
        .await;
    assert!(
        !lag.is_empty(),
        "no lag from the restarted worker\n{}",
        log_tail(&ingest_log)
    );
    // A few more scrapes so that rates have two samples after every change.
    tokio::time::sleep(Duration::from_secs(3)).await;
    eprintln!("all targets scraped: {:?}", t0.elapsed());

    // Every rule evaluates without error; the live data makes one fire: shard0 has no backup.
    let rules = prom.api("rules", &[]).await;
    let mut n_rules = 0;
    for g in rules["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            n_rules += 1;
            assert_eq!(r["health"], "ok", "rule {}: {}", r["name"], r["lastError"]);
        }
    }
    assert_eq!(n_rules, alerts.len(), "rules loaded");
    let pending = prom
        .wait_nonempty(
            "ALERTS{alertname=\"VitalsinkBackupMissing\", shard=\"shard0\"}",
            Duration::from_secs(10),
        )
        .await;
    assert!(
        !pending.is_empty(),
        "shard0 (no pgBackRest stanza) not flagged: ALERTS {:?}, backups {:?}",
        prom.query("ALERTS").await,
        prom.query("vitalsink_backup_last_success_timestamp_seconds")
            .await
    );
    let backup = prom
        .query("vitalsink_backup_last_success_timestamp_seconds{shard=\"shard1\"} > 0")
        .await;
    assert_eq!(backup.len(), 1, "shard1's backup time: {backup:?}");

    // Every query of every panel returns data.
    let queries = dashboard_queries(&repo().join("ops/grafana/vitalsink.json"));
    let sql_shard = connect(&shards[0].url).await;
    let now = chrono::Utc::now().timestamp() as f64;
    let mut empty = Vec::new();
    let (mut n_prom, mut n_sql) = (0, 0);
    for q in &queries {
        let rows = match &q.query {
            Query::Prom(e) => {
                n_prom += 1;
                let e = promql_concrete(e);
                if q.kind == "timeseries" {
                    prom.query_range(&e, prom_start, now, 1).await.len()
                } else {
                    prom.query(&e).await.len()
                }
            }
            Query::Sql(s) => {
                n_sql += 1;
                let s = sql_concrete(s, 96);
                sql_shard
                    .query(&s, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}\n{s}", q.panel))
                    .len()
            }
        };
        eprintln!("{:>5} rows  {}", rows, q.panel);
        if rows == 0 {
            empty.push(q.panel.clone());
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data: {empty:?}"
    );
    eprintln!(
        "{} PromQL and {} SQL queries of the dashboard returned data: {:?}",
        n_prom,
        n_sql,
        t0.elapsed()
    );

    drop(cleanup);
    for (url, name) in [
        (&stack0, &db),
        (
            &stack.shard_urls[stack.shard_urls.len() - 1],
            &db_name(&shard2),
        ),
    ] {
        connect(url)
            .await
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .unwrap();
    }
    eprintln!("total: {:?}", t0.elapsed());
}
