//! Query engine benchmark (issue 13): the same three queries through `vitalsink-query`
//! (DataFusion over the shards and the archive, in process) and through DuckDB (its
//! `postgres` extension scanning both shards, `UNION ALL` with `read_parquet` of the archive),
//! on the same data, in the same run: 10,000,000 rows of 2,000 participants over 2 shards,
//! a row every 5 minutes over the last 17.4 days, the chunks older than 9 days archived by the
//! release archiver (about half the rows). Each query runs once to warm both engines, then
//! once timed. Prints both times, the ratio (DuckDB's time over ours: above 1 means faster
//! than DuckDB; the target is at least 1×) and whether the results are equal (same keys,
//! counts, and sums or means to 1e-9 relative).
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

/// The three queries, with `{T}` for the table and `{A}`/`{B}` for the week's bounds.
const QUERIES: [(&str, &str); 3] = [
    (
        "one participant, one week",
        "SELECT participant_id AS k, count(*) AS n, sum(value) AS s FROM {T} \
         WHERE participant_id = 'P00042' AND ts >= {A} AND ts < {B} GROUP BY 1",
    ),
    (
        "daily mean per participant and metric",
        "SELECT participant_id || '|' || metric || '|' || CAST(CAST(date_trunc('day', ts) AS DATE) AS VARCHAR) AS k, \
         count(*) AS n, avg(value) AS s FROM {T} GROUP BY 1",
    ),
    (
        "count per day",
        "SELECT CAST(CAST(date_trunc('day', ts) AS DATE) AS VARCHAR) AS k, count(*) AS n, sum(value) AS s \
         FROM {T} GROUP BY 1",
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
out = []
for q in queries:
    con.execute(q).fetchall()
    t = time.perf_counter()
    cur = con.execute(q)
    cols = [d[0] for d in cur.description]
    rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    out.append({"secs": time.perf_counter() - t, "rows": rows})
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
        .map(|(_, q)| {
            q.replace("{T}", "measurements")
                .replace("{A}", &format!("TIMESTAMP '{a}T00:00:00Z'"))
                .replace("{B}", &format!("TIMESTAMP '{b}T00:00:00Z'"))
        })
        .collect();
    let theirs: Vec<String> = QUERIES
        .iter()
        .map(|(_, q)| {
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
    let engine =
        vitalsink_query::engine::Engine::new(&cfg, vitalsink_query::engine::Limits::default())
            .unwrap();
    let mut all_equal = true;
    for (i, (name, _)) in QUERIES.iter().enumerate() {
        engine.collect(&ours[i]).await.unwrap();
        let t = Instant::now();
        let batches = engine.collect(&ours[i]).await.unwrap();
        let secs = t.elapsed().as_secs_f64();
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
        let mine = parse(&rows);
        let theirs = parse(duck[i]["rows"].as_array().unwrap());
        let same = equal(&mine, &theirs) && !mine.is_empty();
        all_equal &= same;
        let duck_s = duck[i]["secs"].as_f64().unwrap();
        println!("{name}: {} result rows, equal: {same}", mine.len());
        report(
            "  DuckDB (postgres + read_parquet)",
            duck_s * 1000.0,
            "ms",
            None,
        );
        report("  vitalsink-query (DataFusion)", secs * 1000.0, "ms", None);
        report(
            "  speed against DuckDB (target ≥ 1)",
            duck_s / secs,
            "×",
            None,
        );
    }
    dbs.drop_all().await;
    assert!(all_equal, "the engines' results differ");
}
