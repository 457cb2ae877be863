//! Issue 28, aggregates on the shards: every aggregate form `query` computes on the shards
//! (`query/src/aggregate/`) returns exactly what the engine computes from the streamed rows
//! (`--aggregate-pushdown false`, the plan before it): the same keys, the same integer
//! counts, sums and means to 1e-9 relative. Checked on every real recording (`dev/run`'s
//! data) with the chunks older than 3 days archived; after a restore of two days into the
//! shards; and during an online shard move (2 → 3, a worker running, the move killed after
//! a copy batch, so the query sees a move in progress), then after it. `EXPLAIN` shows what
//! each shard computes, and a form that is not pushed down still answers the same. One
//! participant touches one shard, and only the archive row groups whose statistics may hold
//! that participant are read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use vitalsink_tests::ingest_run::{ingest_binary, log_tail, stop_gracefully};
use vitalsink_tests::query_run::{assert_sums, close, RealDeployment, Sums};
use vitalsink_tests::Stack;

/// `query sql` with aggregate pushdown on or off; the rows as JSON.
fn run(config: &Path, sql: &str, pushdown: bool) -> Vec<Value> {
    let out = Command::new(ingest_binary().with_file_name("query"))
        .arg("--config")
        .arg(config)
        .args(["sql", sql, "--format", "json"])
        .args([
            "--aggregate-pushdown",
            if pushdown { "true" } else { "false" },
        ])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{sql} (pushdown {pushdown}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn explain(config: &Path, sql: &str, pushdown: bool) -> String {
    run(config, &format!("EXPLAIN {sql}"), pushdown)
        .iter()
        .map(|r| r["plan"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Two results are the same: rows in the same order (every query orders by its keys), the
/// same columns, integers and text exactly, floats to 1e-9 relative.
fn assert_same(pushed: &[Value], streamed: &[Value], what: &str) {
    assert_eq!(pushed.len(), streamed.len(), "{what}: rows");
    assert!(!pushed.is_empty(), "{what}: no rows");
    for (a, b) in pushed.iter().zip(streamed) {
        let (a, b) = (a.as_object().unwrap(), b.as_object().unwrap());
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{what}: columns"
        );
        for (k, x) in a {
            let y = &b[k];
            let same = match (x, y) {
                (Value::Number(m), Value::Number(n)) if m.is_f64() || n.is_f64() => {
                    close(m.as_f64().unwrap(), n.as_f64().unwrap())
                }
                _ => x == y,
            };
            assert!(
                same,
                "{what}: column {k}: {x} pushed, {y} streamed\n{a:?}\n{b:?}"
            );
        }
    }
}

/// The aggregate forms of issue 28, each ordered by its keys.
fn forms(metric: &str, p: &str, day: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "whole table",
            "SELECT count(*) AS n, count(value) AS nv, sum(value) AS s, min(value) AS lo, \
             max(value) AS hi, avg(value) AS mean FROM measurements"
                .into(),
        ),
        (
            "per participant and metric",
            "SELECT participant_id, metric, count(*) AS n, sum(value) AS s, avg(value) AS mean, \
             min(ts) AS first, max(ts) AS last FROM measurements GROUP BY 1, 2 ORDER BY 1, 2"
                .into(),
        ),
        (
            "date_trunc day",
            "SELECT participant_id, date_trunc('day', ts) AS day, count(*) AS n, avg(value) AS mean \
             FROM measurements GROUP BY 1, 2 ORDER BY 1, 2"
                .into(),
        ),
        (
            "date_trunc hour, week, month",
            "SELECT date_trunc('hour', ts) AS h, date_trunc('week', ts) AS w, \
             date_trunc('month', ts) AS mo, metric, count(*) AS n, sum(value) AS s \
             FROM measurements GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
                .into(),
        ),
        (
            "date_trunc minute, second",
            "SELECT date_trunc('minute', ts) AS mi, date_trunc('second', ts) AS sec, \
             count(*) AS n, max(value) AS hi FROM measurements GROUP BY 1, 2 ORDER BY 1, 2"
                .into(),
        ),
        (
            "date_bin 15 minutes",
            "SELECT date_bin(INTERVAL '15 minutes', ts) AS b, count(*) AS n, min(value) AS lo, \
             max(value) AS hi FROM measurements GROUP BY 1 ORDER BY 1"
                .into(),
        ),
        (
            "date_bin 1 day from 06:00",
            "SELECT date_bin(INTERVAL '1 day', ts, TIMESTAMP '2020-01-01T06:00:00Z') AS b, \
             metric, count(*) AS n, avg(value) AS mean FROM measurements GROUP BY 1, 2 ORDER BY 1, 2"
                .into(),
        ),
        (
            "time_bucket 1 hour",
            "SELECT time_bucket(INTERVAL '1 hour', ts) AS b, count(*) AS n, sum(value) AS s \
             FROM measurements GROUP BY 1 ORDER BY 1"
                .into(),
        ),
        (
            "local day (README)",
            "SELECT participant_id, metric, \
             CAST(ts + arrow_cast(utc_offset_min * 60, 'Duration(Second)') AS DATE) AS local_day, \
             count(*) AS n, avg(value) AS mean FROM measurements GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
                .into(),
        ),
        (
            "local hour",
            "SELECT date_trunc('hour', arrow_cast(ts + arrow_cast(utc_offset_min * 60, \
             'Duration(Second)'), 'Timestamp(Microsecond, None)')) AS lh, count(*) AS n, \
             avg(value) AS mean FROM measurements WHERE utc_offset_min IS NOT NULL \
             GROUP BY 1 ORDER BY 1"
                .into(),
        ),
        (
            "filters and HAVING",
            format!(
                "SELECT participant_id, count(*) AS n, avg(value) AS mean, max(value) AS hi \
                 FROM measurements WHERE metric IN ('{metric}', 'no such metric') AND value > 1.5 \
                 AND ts < TIMESTAMP '{day}T00:00:00Z' AND participant_id <> '{p}' \
                 GROUP BY 1 HAVING count(*) > 10 ORDER BY 1"
            ),
        ),
        (
            "nullable and text columns",
            "SELECT metric, count(utc_offset_min) AS offsets, sum(utc_offset_min) AS offset_sum, \
             min(unit) AS unit_lo, max(device_id) AS device_hi, min(received_at) AS rec_lo \
             FROM measurements GROUP BY 1 ORDER BY 1"
                .into(),
        ),
        (
            "key built from parts (||, casts to text)",
            "SELECT participant_id || '|' || metric || '|' || \
             CAST(CAST(date_trunc('day', ts) AS DATE) AS VARCHAR) AS k, count(*) AS n, \
             avg(value) AS mean, min(value) AS lo FROM measurements GROUP BY 1 ORDER BY 1"
                .into(),
        ),
        (
            "day as text, with a literal key",
            "SELECT CAST(CAST(date_trunc('day', ts) AS DATE) AS VARCHAR) AS k, 'all' AS tag, \
             count(*) AS n, sum(value) AS s FROM measurements GROUP BY 1, 2 ORDER BY 1"
                .into(),
        ),
        (
            "one participant, one day",
            format!(
                "SELECT participant_id, count(*) AS n, sum(value) AS s FROM measurements \
                 WHERE participant_id = '{p}' AND ts >= TIMESTAMP '{day}T00:00:00Z' \
                 AND ts < TIMESTAMP '{day}T00:00:00Z' + INTERVAL '1 day' GROUP BY 1 ORDER BY 1"
            ),
        ),
    ]
}

/// Every form is computed on each of `shards` shards when pushed down, and returns what the
/// engine returns from the rows.
fn assert_forms(config: &Path, shards: usize, metric: &str, p: &str, day: &str, when: &str) {
    for (name, sql) in forms(metric, p, day) {
        let plan = explain(config, &sql, true);
        let on_shards = plan.matches("ShardAggregateExec: shard=").count();
        // One participant is on one shard; during a move, on its old and its new one.
        let want = if !name.starts_with("one participant") {
            shards..=shards
        } else if when.contains("during") {
            1..=2
        } else {
            1..=1
        };
        assert!(
            want.contains(&on_shards),
            "{when}, {name}: computed on {on_shards} shards: {plan}"
        );
        assert!(
            !plan.contains("ShardScanExec"),
            "{when}, {name}: no shard streams rows: {plan}"
        );
        if name.starts_with("key built") || name.starts_with("day as text") {
            // The shards group by the key's parts; the engine builds the key after.
            assert!(
                plan.contains("__vitalsink_part_0") && !plan.contains("|| '|'"),
                "{when}, {name}: grouped by parts on the shards: {plan}"
            );
        }
        let streamed_plan = explain(config, &sql, false);
        assert!(
            !streamed_plan.contains("ShardAggregateExec"),
            "{when}, {name}: off means off: {streamed_plan}"
        );
        assert_same(
            &run(config, &sql, true),
            &run(config, &sql, false),
            &format!("{when}, {name}"),
        );
    }
    // A form that stays in the engine (DISTINCT, stddev) answers the same with the rule on.
    let sql = "SELECT metric, count(DISTINCT participant_id) AS people, stddev(value) AS sd \
               FROM measurements GROUP BY 1 ORDER BY 1";
    let plan = explain(config, sql, true);
    assert!(
        plan.contains("ShardScanExec") && !plan.contains("ShardAggregateExec"),
        "{when}: not pushed down: {plan}"
    );
    assert_same(
        &run(config, sql, true),
        &run(config, sql, false),
        &format!("{when}, not pushed down"),
    );
}

/// Per participant through the pushed-down plan, against the source truth.
fn per_participant(config: &Path) -> Sums {
    run(
        config,
        "SELECT participant_id, count(*) AS n, sum(value) AS s FROM measurements GROUP BY 1",
        true,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_on_the_shards_equal_the_engine_s() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let (dep, config) = RealDeployment::archived(&stack, "t_qpush").await;
    let t = &dep.truth;
    // The participant with the most days, a day of it in the archive, and its first metric.
    let mut best: Option<(String, Vec<String>)> = None;
    for k in t.daily.keys() {
        let mut it = k.split('|');
        let (p, _, d) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        match &mut best {
            Some((bp, days)) if bp == p => days.push(d.to_string()),
            Some((_, days)) if days.len() >= 3 => {}
            _ => best = Some((p.to_string(), vec![d.to_string()])),
        }
    }
    let (p, mut days) = best.unwrap();
    days.sort();
    days.dedup();
    let day = days[0].clone();
    let metric = t
        .daily
        .keys()
        .find(|k| k.starts_with(&format!("{p}|")))
        .unwrap()
        .split('|')
        .nth(1)
        .unwrap()
        .to_string();
    assert_sums(&per_participant(&config), &t.participants, "pushed down");
    assert_forms(&config, 2, &metric, &p, &day, "shards + archive");

    // One participant: one shard, and of the archive only row groups whose statistics may
    // hold it (the archive is sorted by participant).
    let one = format!(
        "SELECT count(*) AS n, sum(value) AS s FROM measurements WHERE participant_id = '{p}'"
    );
    let analyzed = run(&config, &format!("EXPLAIN ANALYZE {one}"), true)
        .iter()
        .map(|r| r["plan"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("{analyzed}");
    assert_eq!(
        analyzed.matches("ShardAggregateExec: shard=").count(),
        1,
        "{analyzed}"
    );
    let pruned = |what: &str| -> Vec<(u64, u64)> {
        // DataFusion 55: `row_groups_pruned_statistics=N total → M matched`.
        analyzed
            .match_indices(&format!("{what}="))
            .filter_map(|(i, m)| {
                let rest = &analyzed[i + m.len()..];
                let total: u64 = rest.split(' ').next()?.parse().ok()?;
                let matched: u64 = rest.split("→ ").nth(1)?.split(' ').next()?.parse().ok()?;
                Some((total, matched))
            })
            .collect()
    };
    let groups = pruned("row_groups_pruned_statistics");
    assert!(!groups.is_empty(), "row group statistics used: {analyzed}");
    let (total, matched): (u64, u64) = groups.iter().fold((0, 0), |(t, m), (a, b)| (t + a, m + b));
    assert!(
        matched < total,
        "row groups of other participants not read: {matched} of {total}: {analyzed}"
    );
    let (n, s) = t.participants[&p];
    let got = run(&config, &one, true);
    assert_eq!(got[0]["n"].as_i64(), Some(n));
    assert!(close(got[0]["s"].as_f64().unwrap(), s));

    // Bounded memory: a GROUP BY with about a group per reading, under a 16 MiB pool, spills (or
    // fails with the memory error naming the setting), pushed down as before.
    let groups = "SELECT count(*) AS g, sum(n) AS r FROM (SELECT participant_id, metric, ts, \
                  count(*) AS n FROM measurements GROUP BY 1, 2, 3)";
    let out = Command::new(ingest_binary().with_file_name("query"))
        .arg("--config")
        .arg(&config)
        .args(["sql", groups, "--format", "json"])
        .env("QUERY_MEMORY_BYTES", (16u64 << 20).to_string())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        let got: Value = serde_json::from_slice(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        let want = &run(&config, groups, false)[0];
        assert_eq!(got["g"], want["g"], "groups: {got} against {want}");
        assert_eq!(got["r"].as_i64(), Some(t.total()), "{got}");
    } else {
        assert!(err.contains("--memory-bytes"), "the memory error: {err}");
    }
    eprintln!(
        "high-cardinality GROUP BY under 16 MiB: {}",
        if out.status.success() {
            "answered"
        } else {
            "memory error"
        }
    );

    // After a restore of two days into the shards.
    let (from, to) = (&days[0], &days[1.min(days.len() - 1)]);
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
    assert_sums(
        &per_participant(&config),
        &t.participants,
        "after a restore",
    );
    assert_forms(&config, 2, &metric, &p, &day, "after a restore");

    // During an online move 2 → 3: a worker follows the shard map; the move is killed after
    // its first copy batch, so participants' history is on both their old and new shard.
    let wlog = dep.dir.path().join("ingest-move.log");
    let worker = dep.setup.spawn(&wlog);
    let new = vitalsink_tests::ingest_run::extra_shard(&stack, 2).await;
    let add = [
        "add-shard",
        "--reason",
        "test: aggregates during a move",
        "--name",
        "shard2",
        "--url",
        new.url.as_str(),
        "--batch-rows",
        "2000",
    ];
    let out = Command::new(ingest_binary().with_file_name("reshard"))
        .arg("--config")
        .arg(&config)
        .args(add)
        .env("RESHARD_CRASH_AT", "copy")
        .output()
        .unwrap();
    assert!(
        out.status.code().is_none(),
        "killed after a copy batch: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        log_tail(&wlog)
    );
    assert_sums(&per_participant(&config), &t.participants, "during a move");
    assert_forms(&config, 3, &metric, &p, &day, "during an online move");
    vitalsink_tests::run_ok(
        Command::new(ingest_binary().with_file_name("reshard"))
            .arg("--config")
            .arg(&config)
            .args(add),
    );
    stop_gracefully(worker, &wlog).await;
    // (Three shards' batches must fit the configuration's ingest memory cap.)
    let mut text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("batch_max_bytes = 8388608", "batch_max_bytes = 4194304");
    text.push_str(&format!(
        "[[shards]]\nname = \"shard2\"\nurl = \"{}\"\n",
        new.url
    ));
    std::fs::write(&config, text).unwrap();
    assert_sums(&per_participant(&config), &t.participants, "after the move");
    assert_forms(&config, 3, &metric, &p, &day, "after the move");
    dep.dbs.drop_all().await;
    let db = new.url.split("dbname=").nth(1).unwrap().to_string();
    vitalsink_tests::connect(stack.shard_urls.last().unwrap())
        .await
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await
        .unwrap();
}
