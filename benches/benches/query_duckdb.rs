//! Query engine benchmark (issues 13 and 28): the same queries through `vitalsink-query`
//! (DataFusion over the shards and the archive, in process) and through DuckDB (its
//! `postgres` extension scanning the shards, `UNION ALL` with `read_parquet` of the archive),
//! on the same data, in the same run: 10,000,000 rows of 2,000 participants over the stack's
//! shards (`STACK_SHARDS`, default 2), a row every 5 minutes over the last 17.4 days, the
//! chunks older than 9 days archived by the release archiver (about half the rows).
//!
//! Each query runs once to warm each engine, then 5 times; the median is printed, with the
//! ratio (DuckDB's time over ours: above 1 means faster than DuckDB) and its target
//! (issue 28: one participant ≥ 5×, the daily mean and the count per day ≥ 2×), the bytes
//! that came from the shards (values, as read by `vitalsink_query::shard_scan`), and the same
//! for our engine with the aggregates not pushed down (`aggregate_pushdown = false`, every
//! matching row streamed: the plan before issue 28). Results of all three must be equal
//! (same keys and counts, sums or means to 1e-9 relative).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::time::Instant;
use vitalsink_benches::{release_binary, report};
use vitalsink_tests::Stack;

const PARTICIPANTS: usize = 2_000;
const PER_PARTICIPANT: i64 = 5_000;
const EVERY_S: i32 = 300;

/// Key → (count, sum or mean).
type Result = BTreeMap<String, (i64, f64)>;

/// Timed runs of each query (after one to warm); the median is reported.
const RUNS: usize = 5;

/// The queries (name, target speed against DuckDB or 0 for none, SQL with `{T}` for the
/// table and `{A}`/`{B}` for the week's bounds).
const QUERIES: [(&str, f64, &str); 5] = [
    (
        "one participant, one week",
        5.0,
        "SELECT participant_id AS k, count(*) AS n, sum(value) AS s FROM {T} \
         WHERE participant_id = 'P00042' AND ts >= {A} AND ts < {B} GROUP BY 1",
    ),
    (
        "daily mean per participant and metric",
        2.0,
        "SELECT participant_id || '|' || metric || '|' || CAST(CAST(date_trunc('day', ts) AS DATE) AS VARCHAR) AS k, \
         count(*) AS n, avg(value) AS s FROM {T} GROUP BY 1",
    ),
    (
        "count per day",
        2.0,
        "SELECT CAST(CAST(date_trunc('day', ts) AS DATE) AS VARCHAR) AS k, count(*) AS n, sum(value) AS s \
         FROM {T} GROUP BY 1",
    ),
    (
        "whole table: count(*)",
        0.0,
        "SELECT 'all' AS k, count(*) AS n, CAST(count(*) AS DOUBLE) AS s FROM {T}",
    ),
    (
        "whole table: avg(value)",
        0.0,
        "SELECT 'all' AS k, count(value) AS n, avg(value) AS s FROM {T}",
    ),
];

fn parse(rows: &[serde_json::Value]) -> Result {
    rows.iter()
        .map(|r| {
            (
                r["k"].as_str().unwrap().to_string(),
                (r["n"].as_i64().unwrap(), r["s"].as_f64().unwrap()),
            )
        })
        .collect()
}

fn equal(a: &Result, b: &Result) -> bool {
    a.len() == b.len()
        && a.iter().all(|(k, (n, s))| {
            b.get(k).is_some_and(|(m, t)| {
                n == m && (s - t).abs() <= 1e-9 * s.abs().max(t.abs()).max(1.0)
            })
        })
}

const DUCKDB: &str = r#"
import duckdb, json, sys, time
from duckdb_extensions import import_extension
dsns, root, queries = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
con = duckdb.connect()
import_extension("postgres", con=con)
con.execute("LOAD postgres")
con.execute("SET TimeZone = 'UTC'")
parts = []
for i, dsn in enumerate(dsns):
    con.execute(f"ATTACH '{dsn}' AS s{i} (TYPE postgres, READ_ONLY)")
    parts.append(f"SELECT participant_id, metric, ts, value FROM s{i}.public.measurements")
parts.append(f"SELECT participant_id, metric, ts, value FROM read_parquet('{root}/measurements/**/*.parquet')")
con.execute("CREATE VIEW m AS " + " UNION ALL ".join(parts))
runs = int(sys.argv[4])
out = []
for q in queries:
    con.execute(q).fetchall()
    secs = []
    for _ in range(runs):
        t = time.perf_counter()
        cur = con.execute(q)
        cols = [d[0] for d in cur.description]
        rows = [dict(zip(cols, r)) for r in cur.fetchall()]
        secs.append(time.perf_counter() - t)
    out.append({"secs": sorted(secs)[len(secs) // 2], "rows": rows})
print(json.dumps(out, default=float))
"#;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let stack = Stack::from_env();
    let started = Instant::now();
    let (dbs, _) = vitalsink_benches::history::load_spaced(
        &stack,
        "b_query",
        PARTICIPANTS,
        PER_PARTICIPANT,
        "0 s",
        EVERY_S,
    )
    .await;
    let rows = PARTICIPANTS as i64 * PER_PARTICIPANT;
    println!(
        "loaded {rows} rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let config = dir.path().join("query.toml");
    let mut toml = format!(
        "[archive]\nroot = \"file://{}\"\nolder_than = \"9d\"\nrows_per_second = 0\n[observability]\nlisten = \"127.0.0.1:0\"\n",
        root.display()
    );
    for s in &dbs.shards {
        toml.push_str(&format!(
            "[[shards]]\nname = \"{}\"\nurl = \"{}\"\n",
            s.name, s.url
        ));
    }
    std::fs::write(&config, toml).unwrap();
    let started = Instant::now();
    let out = std::process::Command::new(release_binary("archiver"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "archiver: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    println!(
        "archived {} rows in {} chunks in {:.1} s",
        run["rows"],
        run["archived"],
        started.elapsed().as_secs_f64()
    );

    // The week: days 13 to 6 before now, whole UTC days, across the archive boundary.
    let today = chrono::Utc::now().date_naive();
    let a = (today - chrono::Duration::days(13))
        .format("%Y-%m-%d")
        .to_string();
    let b = (today - chrono::Duration::days(6))
        .format("%Y-%m-%d")
        .to_string();
    let ours: Vec<String> = QUERIES
        .iter()
        .map(|(_, _, q)| {
            q.replace("{T}", "measurements")
                .replace("{A}", &format!("TIMESTAMP '{a}T00:00:00Z'"))
                .replace("{B}", &format!("TIMESTAMP '{b}T00:00:00Z'"))
        })
        .collect();
    let theirs: Vec<String> = QUERIES
        .iter()
        .map(|(_, _, q)| {
            q.replace("{T}", "m")
                .replace("{A}", &format!("TIMESTAMPTZ '{a} 00:00:00+00'"))
                .replace("{B}", &format!("TIMESTAMPTZ '{b} 00:00:00+00'"))
        })
        .collect();

    let dsns: Vec<String> = dbs.shards.iter().map(|s| s.url.clone()).collect();
    let res = std::process::Command::new("python3")
        .args([
            "-c",
            DUCKDB,
            &serde_json::to_string(&dsns).unwrap(),
            root.to_str().unwrap(),
            &serde_json::to_string(&theirs).unwrap(),
            &RUNS.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "DuckDB: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let stdout = String::from_utf8_lossy(&res.stdout);
    let duck: Vec<serde_json::Value> =
        serde_json::from_str(stdout.lines().rfind(|l| l.starts_with('[')).unwrap()).unwrap();

    let cfg = vitalsink_common::cli::CommonArgs {
        config: Some(config.clone()),
        ..Default::default()
    }
    .load()
    .unwrap();
    let limits = vitalsink_query::engine::Limits::default();
    let pushed = vitalsink_query::engine::Engine::new(&cfg, limits).unwrap();
    let streamed = vitalsink_query::engine::Engine::new(
        &cfg,
        vitalsink_query::engine::Limits {
            aggregate_pushdown: false,
            ..limits
        },
    )
    .unwrap();
    println!(
        "{} shards; each query warmed, then the median of {RUNS} runs",
        dbs.shards.len()
    );
    let mut all_equal = true;
    let mut missed = Vec::new();
    for (i, (name, target, _)) in QUERIES.iter().enumerate() {
        let ours_pushed = measure(&pushed, &ours[i]).await;
        let ours_streamed = measure(&streamed, &ours[i]).await;
        let theirs = parse(duck[i]["rows"].as_array().unwrap());
        let same = equal(&ours_pushed.rows, &theirs)
            && equal(&ours_streamed.rows, &theirs)
            && !theirs.is_empty();
        all_equal &= same;
        let duck_s = duck[i]["secs"].as_f64().unwrap();
        println!("{name}: {} result rows, equal: {same}", theirs.len());
        report(
            "  DuckDB (postgres + read_parquet)",
            duck_s * 1000.0,
            "ms",
            None,
        );
        report(
            "  vitalsink-query, aggregates on the shards",
            ours_pushed.secs * 1000.0,
            "ms",
            None,
        );
        report(
            "    bytes from the shards",
            ours_pushed.bytes as f64,
            "bytes",
            None,
        );
        report(
            "  vitalsink-query, rows streamed (issue 13)",
            ours_streamed.secs * 1000.0,
            "ms",
            None,
        );
        report(
            "    bytes from the shards",
            ours_streamed.bytes as f64,
            "bytes",
            None,
        );
        let speed = duck_s / ours_pushed.secs;
        if *target > 0.0 {
            report(
                &format!("  speed against DuckDB (target ≥ {target})"),
                speed,
                "×",
                None,
            );
            if speed < *target {
                missed.push(*name);
            }
        } else {
            report("  speed against DuckDB", speed, "×", None);
        }
    }
    if !missed.is_empty() {
        println!("below target: {}", missed.join(", "));
    }
    if std::env::var_os("QUERY_BENCH_KEEP").is_some() {
        // For profiling: the databases and the archive stay; the configuration is printed.
        let kept = dir.keep();
        println!("kept: {}", kept.join("query.toml").display());
    } else {
        dbs.drop_all().await;
    }
    assert!(all_equal, "the engines' results differ");
}

/// One engine's median time, the bytes its last run read from the shards, and its result.
struct Measured {
    secs: f64,
    bytes: u64,
    rows: Result,
}

async fn measure(engine: &vitalsink_query::engine::Engine, sql: &str) -> Measured {
    engine.collect(sql).await.unwrap();
    let mut secs = Vec::new();
    let mut bytes = 0;
    let mut batches = Vec::new();
    for _ in 0..RUNS {
        let before = vitalsink_query::shard_scan::bytes_received();
        let t = Instant::now();
        batches = engine.collect(sql).await.unwrap();
        secs.push(t.elapsed().as_secs_f64());
        bytes = vitalsink_query::shard_scan::bytes_received() - before;
    }
    secs.sort_by(f64::total_cmp);
    let mut w = arrow::json::ArrayWriter::new(Vec::new());
    for b in &batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
    let buf = w.into_inner();
    let rows: Vec<serde_json::Value> = if buf.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&buf).unwrap()
    };
    Measured {
        secs: secs[RUNS / 2],
        bytes,
        rows: parse(&rows),
    }
}
