//! Issue 13, the query engine (`query`, DataFusion): after `dev/run`-style ingest of every
//! real recording and archiving of the chunks older than 3 days, SQL over the one table
//! `measurements` must match the replay's `truth.json` exactly (rows; sums to 1e-9
//! relative): per participant, per participant, metric and UTC day (the daily means of
//! `dev/report`), and one participant's time range; and again after a crash between the
//! archiver's verify and drop (its fault hook), after a restore, read from a real streaming
//! standby (and from the primary once it is gone), and during a shard move killed after a
//! copy and after a delete. ADBC's Flight SQL driver gets the same numbers into pandas.
//! `EXPLAIN` of a one-participant, two-day query shows one shard scanned, its filters as SQL,
//! and only the archive objects of those days. A stopped shard fails the query naming it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use vitalsink_tests::ingest_run::{ingest_binary, log_tail, stack_script};
use vitalsink_tests::query_run::{
    assert_sums, close, metric, sums_of, RealDeployment, Server, Sums, Truth,
};
use vitalsink_tests::replay_run::archiver_json;
use vitalsink_tests::Stack;

fn query(config: &Path, sql: &str) -> std::process::Output {
    Command::new(ingest_binary().with_file_name("query"))
        .arg("--config")
        .arg(config)
        .args(["sql", sql, "--format", "json"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// `query sql` under a memory pool of `bytes`.
fn query_in(config: &Path, sql: &str, bytes: usize) -> std::process::Output {
    Command::new(ingest_binary().with_file_name("query"))
        .arg("--config")
        .arg(config)
        .args(["sql", sql, "--format", "json"])
        .env("NO_COLOR", "1")
        .env("QUERY_MEMORY_BYTES", bytes.to_string())
        .output()
        .unwrap()
}

fn json_lines(out: &std::process::Output, sql: &str) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn rows(config: &Path, sql: &str) -> Vec<serde_json::Value> {
    let out = query(config, sql);
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn plan_text(explain: &[serde_json::Value]) -> String {
    explain
        .iter()
        .map(|r| r["plan"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn explain_text(config: &Path, sql: &str) -> String {
    plan_text(&rows(config, &format!("EXPLAIN {sql}")))
}

fn per_participant(config: &Path) -> Sums {
    rows(
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

fn daily(config: &Path) -> Sums {
    rows(
        config,
        "SELECT participant_id, metric, CAST(date_trunc('day', ts) AS DATE) AS day, count(*) AS n, \
         sum(value) AS s, avg(value) AS mean FROM measurements GROUP BY 1, 2, 3",
    )
    .iter()
    .map(|r| {
        (
            format!(
                "{}|{}|{}",
                r["participant_id"].as_str().unwrap(),
                r["metric"].as_str().unwrap(),
                r["day"].as_str().unwrap()
            ),
            (r["n"].as_i64().unwrap(), r["s"].as_f64().unwrap()),
        )
    })
    .collect()
}

/// The participant with the most days, and two consecutive days of it with rows.
fn pick(t: &Truth) -> (String, String, String) {
    let mut days: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for k in t.daily.keys() {
        let mut it = k.split('|');
        let (p, _m, d) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        days.entry(p.to_string()).or_default().push(d.to_string());
    }
    let (p, mut ds) = days.into_iter().max_by_key(|(_, d)| d.len()).unwrap();
    ds.sort();
    ds.dedup();
    let from = ds[ds.len() / 3].clone();
    let to = ds[ds.len() / 3 + 1].clone();
    (p, from, to)
}

/// One participant over whole UTC days `[from, to]`, against the daily truth.
fn assert_range(config: &Path, t: &Truth, p: &str, from: &str, to: &str, what: &str) {
    let got = rows(
        config,
        &format!(
            "SELECT count(*) AS n, sum(value) AS s FROM measurements WHERE participant_id = '{p}' \
             AND ts >= TIMESTAMP '{from}T00:00:00Z' AND ts < TIMESTAMP '{to}T00:00:00Z' + INTERVAL '1 day'"
        ),
    );
    let (mut n, mut s) = (0i64, 0.0f64);
    for (k, (kn, ks)) in &t.daily {
        let mut it = k.split('|');
        let (kp, _, d) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        if kp == p && d >= from && d <= to {
            n += kn;
            s += ks;
        }
    }
    assert!(n > 0);
    assert_eq!(got[0]["n"].as_i64().unwrap(), n, "{what}: range rows");
    assert!(close(got[0]["s"].as_f64().unwrap(), s), "{what}: range sum");
}

fn assert_all(config: &Path, t: &Truth, what: &str) {
    assert_sums(
        &per_participant(config),
        &t.participants,
        &format!("{what}: per participant"),
    );
    assert_sums(
        &daily(config),
        &t.daily,
        &format!("{what}: per participant, metric and day"),
    );
    let (p, from, to) = pick(t);
    assert_range(config, t, &p, &from, &to, what);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_table_over_shards_and_archive_counts_every_row_once() {
    let _stack = vitalsink_tests::stack_lock::exclusive().await;
    let stack = Stack::from_env();
    let dep = RealDeployment::ingested(&stack, "t_query").await;
    let (dbs, d, t) = (&dep.dbs, dep.dir.path(), &dep.truth);
    let total = t.total();
    let config = dep.archive_config();
    let alog = d.join("archiver.log");
    // The first chunk is archived and verified, then the archiver dies before dropping it.
    let crashed = Command::new(vitalsink_tests::archive_run::archiver_binary())
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("ARCHIVER_CRASH_AT", "after-verify")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&alog).unwrap())
        .status()
        .unwrap();
    assert!(crashed.code().is_none(), "killed after verify: {crashed:?}");
    assert_all(&config, t, "after a crash between verify and drop");

    let run = archiver_json(&config, &["run"], &alog);
    assert!(run["archived"].as_i64().unwrap() > 0, "{run}");
    assert_all(&config, t, "after archiving");

    // Memory is bounded by the pool. A window over the whole table sorted by value needs a
    // full sort: under 64 MiB it spills to disk and still ranks every row once (the ranks sum
    // to n(n+1)/2). A hash join's build side cannot spill: it fails with the memory error,
    // naming the setting.
    let ranked = "SELECT count(*) AS n, sum(rn) AS s FROM (SELECT row_number() OVER \
                  (ORDER BY value, ts, participant_id, metric) AS rn FROM measurements)";
    let got = json_lines(&query_in(&config, ranked, 64 << 20), ranked);
    assert_eq!(got[0]["n"].as_i64(), Some(total), "{got:?}");
    assert_eq!(
        got[0]["s"].as_i64(),
        Some(total * (total + 1) / 2),
        "{got:?}"
    );
    let analyzed = plan_text(&json_lines(
        &query_in(&config, &format!("EXPLAIN ANALYZE {ranked}"), 64 << 20),
        ranked,
    ));
    let spills: u64 = analyzed
        .match_indices("spill_count=")
        .filter_map(|(i, m)| {
            analyzed[i + m.len()..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|d| d.parse::<u64>().ok())
        })
        .sum();
    assert!(spills > 0, "the sort spilled under 64 MiB: {analyzed}");
    let join = "SELECT count(*) FROM measurements a JOIN measurements b \
                ON a.participant_id = b.participant_id AND a.metric = b.metric AND a.ts = b.ts";
    let out = query_in(&config, join, 4 << 20);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--memory-bytes") && err.contains("HashJoin"),
        "{err}"
    );

    // The same numbers through a real client: ADBC Flight SQL into pandas.
    let flog = d.join("flight.log");
    let server = Server::start(&config, &[], &[], &flog).await;
    let addr = server.addr.clone();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/adbc_query.py");
    let (p, from, to) = pick(t);
    let out = Command::new("python3")
        .args([
            script,
            &addr,
            "SELECT participant_id, count(*) AS n, sum(value) AS s FROM measurements GROUP BY participant_id",
            &p,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "adbc: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        log_tail(&flog)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        got["type"].as_str().unwrap().starts_with("pandas")
            && got["type"].as_str().unwrap().ends_with("DataFrame"),
        "{got}"
    );
    assert_eq!(got["dtypes"]["n"], "int64", "{got}");
    let via_adbc = sums_of(&got["rows"]);
    assert_sums(
        &via_adbc,
        &t.participants,
        "through ADBC Flight SQL into pandas",
    );
    // What a tool does on connecting, and a prepared statement with a bound `$1`.
    let (want_n, want_s) = t.participants[&p];
    let prepared = &got["prepared"][0];
    assert_eq!(prepared["n"].as_i64(), Some(want_n), "prepared: {got}");
    assert!(
        close(prepared["s"].as_f64().unwrap(), want_s),
        "prepared: {got}"
    );
    let columns: Vec<String> = got["table_schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    for c in ["participant_id", "metric", "ts", "value"] {
        assert!(columns.iter().any(|x| x == c), "table schema {columns:?}");
    }
    let listed: Vec<&serde_json::Value> = got["tables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["table"] == "measurements")
        .collect();
    assert_eq!(listed.len(), 1, "get_objects: {got}");
    assert_eq!(listed[0]["type"], "TABLE", "{got}");
    assert_eq!(listed[0]["columns"], got["table_schema"], "{got}");
    assert!(
        got["info"]
            .as_object()
            .unwrap()
            .values()
            .any(|v| v == "vitalsink-query"),
        "get_info: {got}"
    );
    let bad = Command::new("python3")
        .args([script, &addr, "SELECT nope FROM measurements"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("nope"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    // Statements show in the server's metrics: the good ones and the refused one.
    let metrics = server.metrics().await;
    let counter = |outcome: &str| {
        metric(
            &metrics,
            "vitalsink_query_statements_total",
            &format!("outcome=\"{outcome}\""),
        )
    };
    assert!(counter("ok") >= 2.0, "{metrics}");
    assert!(counter("invalid") >= 1.0, "{metrics}");

    // The server's sessions on the shards: kept in its pools between statements (the same
    // backends answer the next statement), never left in a transaction (no snapshot outlives
    // its statement), at most the pool's size per shard.
    let before = query_backends(dbs).await;
    for (shard, b) in &before {
        assert!(
            !b.is_empty() && b.len() <= QUERY_POOL_SIZE,
            "{shard}: {b:?}"
        );
        assert!(
            b.iter().all(|(_, state)| state == "idle"),
            "{shard}: a session of the server is not idle between statements: {b:?}"
        );
    }
    let again = Command::new("python3")
        .args([script, &addr, "SELECT count(*) AS n FROM measurements"])
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let after = query_backends(dbs).await;
    for (shard, b) in &after {
        assert!(b.iter().all(|(_, state)| state == "idle"), "{shard}: {b:?}");
        let reused = b.iter().filter(|x| before[shard].contains(x)).count();
        assert!(
            reused > 0,
            "{shard}: the next statement opened new sessions instead of pooled ones: before {:?}, after {b:?}",
            before[shard]
        );
    }
    server.stop();

    // Pruning: one participant over two days touches one shard and those days' objects.

    let explain = rows(
        &config,
        &format!(
            "EXPLAIN SELECT count(*) FROM measurements WHERE participant_id = '{p}' \
             AND ts >= TIMESTAMP '{from}T00:00:00Z' AND ts < TIMESTAMP '{to}T00:00:00Z' + INTERVAL '1 day'"
        ),
    );
    let plan: String = plan_text(&explain);
    eprintln!("{plan}");
    // (The count is computed on that shard: `ShardAggregateExec`, issue 28.)
    assert_eq!(
        plan.matches("ShardScanExec: shard=").count()
            + plan.matches("ShardAggregateExec: shard=").count(),
        1,
        "one shard: {plan}"
    );
    assert!(
        plan.contains(&format!("participant_id = '{p}'")),
        "filter as SQL: {plan}"
    );
    assert!(plan.contains("ts >= '"), "time filter as SQL: {plan}");
    for date in plan
        .match_indices("date=")
        .map(|(i, _)| &plan[i + 5..i + 15])
    {
        assert!(
            date >= from.as_str() && date <= to.as_str(),
            "object of {date} outside {from}..{to}: {plan}"
        );
    }

    // A restore of two days brings their rows back into the database: still each once.
    vitalsink_tests::run_ok(
        Command::new(vitalsink_tests::archive_run::archiver_binary())
            .arg("--config")
            .arg(&config)
            .args([
                "restore",
                "--from",
                &format!("{from}T00:00:00Z"),
                "--to",
                &format!("{to}T23:59:59Z"),
            ]),
    );
    assert_all(&config, t, "after a restore");

    // A read replica: shard0 is read from its streaming standby while it answers, and from
    // its primary once it is gone.
    stack_script(&["standby-up", "0"]);
    let primary = dbs.shards[0].url.clone();
    let port: u16 = primary
        .split("port=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let standby = primary.replace(&format!("port={port} "), &format!("port={} ", port + 10));
    let replica_cfg = config.with_extension("replica.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let line = format!("url = \"{primary}\"\n");
    assert!(text.contains(&line));
    std::fs::write(
        &replica_cfg,
        text.replace(&line, &format!("{line}replicas = [\"{standby}\"]\n")),
    )
    .unwrap();
    let standby_xacts = || async {
        vitalsink_tests::connect(&standby)
            .await
            .query_one("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let before = standby_xacts().await;
    assert_sums(
        &per_participant(&replica_cfg),
        &t.participants,
        "read from the replica",
    );
    let plan = explain_text(&replica_cfg, "SELECT count(*) FROM measurements");
    assert!(plan.contains("shard0 (replica 0)"), "{plan}");
    assert!(plan.contains("shard1 (primary)"), "{plan}");
    tokio::time::sleep(Duration::from_millis(800)).await; // statistics are flushed about every 0.5 s
    let after = standby_xacts().await;
    assert!(
        after > before + 1,
        "the standby served the queries: {before} -> {after} transactions"
    );
    stack_script(&["standby-down", "0"]);
    assert_sums(
        &per_participant(&replica_cfg),
        &t.participants,
        "replica down: from the primary",
    );
    let plan = explain_text(&replica_cfg, "SELECT count(*) FROM measurements");
    assert!(plan.contains("shard0 (primary)"), "{plan}");

    // Loud failures.
    let bad = query(&config, "SELECT nope FROM measurements");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("nope"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    // shard1's server really stopped (no replica): the query fails naming it, and answers
    // again once it is back. (This test has its own binary, so no other test sees it stop.)
    stack_script(&["stop-shard", "1"]);
    let out = query(&config, "SELECT count(*) FROM measurements");
    stack_script(&["start-shard", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("shard shard1"), "the shard is named: {err}");
    assert_sums(&per_participant(&config), &t.participants, "shard1 back");

    // During a shard move (2 -> 3, offline: the worker is stopped): the command killed after
    // a copy batch, then after a delete batch; each time, and after, every row once.
    let new = vitalsink_tests::ingest_run::extra_shard(&stack, 2).await;
    let add = [
        "add-shard",
        "--reason",
        "test: shard-set change",
        "--offline",
        "--name",
        "shard2",
        "--url",
        new.url.as_str(),
        "--batch-rows",
        "5000",
    ];
    for (point, what) in [
        ("copy", "during a move, copying"),
        ("delete", "during a move, deleting"),
    ] {
        let out = Command::new(ingest_binary().with_file_name("reshard"))
            .arg("--config")
            .arg(&config)
            .args(add)
            .env("RESHARD_CRASH_AT", point)
            .output()
            .unwrap();
        assert!(
            out.status.code().is_none(),
            "killed at {point}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_all(&config, t, what);
    }
    vitalsink_tests::run_ok(
        Command::new(ingest_binary().with_file_name("reshard"))
            .arg("--config")
            .arg(&config)
            .args(add),
    );
    // (Three shards' batches must fit the configuration's ingest memory cap.)
    let mut text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("batch_max_bytes = 8388608", "batch_max_bytes = 4194304");
    text.push_str(&format!(
        "[[shards]]\nname = \"shard2\"\nurl = \"{}\"\n",
        new.url
    ));
    std::fs::write(&config, text).unwrap();
    assert_all(&config, t, "after the move");
    dep.dbs.drop_all().await;
}

/// Sessions `query serve` keeps per shard (`vitalsink_query::sessions::POOL_SIZE`).
const QUERY_POOL_SIZE: usize = 8;

/// Per shard database of `dbs`, the backends of `query` (`application_name` vitalsink-query)
/// as (pid, state), once none is in a transaction or running a statement (waits up to 10 s for
/// a statement's snapshot to be released; what stays after that is returned as it is).
async fn query_backends(dbs: &vitalsink_tests::ShardDbs) -> BTreeMap<String, Vec<(i32, String)>> {
    let mut out = BTreeMap::new();
    for (i, s) in dbs.shards.iter().enumerate() {
        let c = vitalsink_tests::connect(&s.url).await;
        let mut got = Vec::new();
        for _ in 0..100 {
            got = c
                .query(
                    "SELECT pid, coalesce(state, '') FROM pg_stat_activity
                      WHERE datname = current_database() AND application_name = 'vitalsink-query'
                      ORDER BY pid",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect::<Vec<(i32, String)>>();
            if got.iter().all(|(_, st)| st == "idle") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        out.insert(format!("shard{i}"), got);
    }
    out
}
