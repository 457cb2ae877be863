//! The contenders of the archive export benchmark, each timed on one chunk: DuckDB's
//! PostgreSQL → Parquet export, the archiver's export in process, and the whole
//! `archiver run` binary (see the benchmark's module doc, `archive_export.rs`).

use std::time::{Duration, Instant};
use vitalsink_archiver::export::catalog::Chunk;
use vitalsink_archiver::export::ratelimit::RowLimiter;
use vitalsink_archiver::export::readers;
use vitalsink_archiver::export::{export, Target};
use vitalsink_archiver::progress::Progress;
use vitalsink_benches::duckdb_timed;
use vitalsink_common::config::ArchiveConfig;
use vitalsink_tests::connect;
use vitalsink_tests::ingest_run::peak_rss_bytes;

/// Warms the cache with a full read of the chunk.
pub async fn warm(c: &tokio_postgres::Client, chunk: &Chunk) {
    c.query_one(
        &format!("SELECT count(*), sum(value) FROM {}", chunk.ident()),
        &[],
    )
    .await
    .unwrap();
}

/// DuckDB's PostgreSQL → Parquet export of the chunk: (seconds, Parquet bytes).
pub fn duckdb_export(dsn: &str, chunk: &Chunk, dir: &std::path::Path) -> (f64, u64) {
    let out = dir.join("duckdb.parquet");
    // The same columns the archive holds (all of the row, provenance too).
    let columns = vitalsink_common::columns::column_list();
    let script = r#"
import duckdb, json, os, sys, time
from duckdb_extensions import import_extension
dsn, schema, table, out, columns = sys.argv[1:6]
con = duckdb.connect()
import_extension("postgres", con=con)
con.execute("LOAD postgres")
con.execute(f"SELECT count(*) FROM postgres_scan('{dsn}', '{schema}', '{table}')")
t = time.time()
con.execute(f"""COPY (SELECT {columns}
                FROM postgres_scan('{dsn}', '{schema}', '{table}')
                ORDER BY participant_id, metric, ts)
              TO '{out}' (FORMAT parquet, COMPRESSION zstd)""")
secs = time.time() - t
print(json.dumps({"secs": secs, "bytes": os.path.getsize(out),
                  "threads": con.execute("SELECT current_setting('threads')").fetchone()[0]}))
"#;
    duckdb_timed(
        "DuckDB export",
        script,
        &[
            dsn.as_ref(),
            chunk.schema.as_ref(),
            chunk.name.as_ref(),
            out.as_os_str(),
            columns.as_ref(),
        ],
    )
}

/// The archiver's export, in process, unthrottled, with as many helper connections as
/// `archiver run` borrows from its pool ([`readers::max_readers`] in all; connecting them is
/// not timed, as the pool's connections are usually open), its columns encoded on
/// `encode_threads` threads (`archive.encode_threads`, 0 = one per CPU): (seconds, Parquet
/// bytes).
pub async fn archiver_export(
    c: &tokio_postgres::Client,
    url: &str,
    chunk: &Chunk,
    dir: &std::path::Path,
    run: usize,
    encode_threads: usize,
) -> (f64, u64) {
    warm(c, chunk).await;
    let cfg = ArchiveConfig {
        root: format!("file://{}", dir.join("lib").display()),
        rows_per_second: 0,
        encode_threads,
        ..ArchiveConfig::default()
    };
    let archive = vitalsink_archiver::storage::store::open(&cfg).unwrap();
    let target = Target {
        shard: "shard0",
        chunk,
        path: vitalsink_archiver::storage::layout::data_object(
            "shard0",
            &chunk.name,
            chunk.range_start,
            &format!("bench{run}"),
        ),
        attempt: &format!("bench{run}"),
        db_schema_version: vitalsink_common::migrate::latest_version(),
    };
    let limiter = RowLimiter::new(0, cfg.batch_rows);
    let mut helpers = Vec::new();
    for _ in 1..readers::max_readers() {
        helpers.push(connect(url).await);
    }
    let helpers: Vec<&tokio_postgres::Client> = helpers.iter().collect();
    let ex = export(
        c,
        &helpers,
        &archive,
        &cfg,
        &target,
        &limiter,
        &Progress::none(),
    )
    .await
    .unwrap();
    println!(
        "archiver export (encode_threads = {encode_threads}): {:.2} s, {} bytes, {} rows, {}",
        ex.took.as_secs_f64(),
        ex.bytes,
        ex.summary.rows,
        ex.summary.checksum
    );
    (ex.took.as_secs_f64(), ex.bytes)
}

/// `archiver run` (release binary) on the shard, the `run`th time: (seconds to its exit,
/// seconds until no other client backend of the shard is active, peak RSS bytes). `c` is
/// idle, on the shard's database; it looks every 5 ms after the exit.
pub async fn archiver_run(
    c: &tokio_postgres::Client,
    shard: &vitalsink_common::config::ShardConfig,
    dir: &std::path::Path,
    run: usize,
) -> (f64, f64, u64) {
    let bin = vitalsink_benches::release_binary("archiver");
    let config = dir.join("archiver.toml");
    std::fs::write(
        &config,
        format!(
            "[[shards]]\nname = \"shard0\"\nurl = \"{}\"\n[archive]\nroot = \"file://{}\"\nolder_than = \"1d\"\nrows_per_second = 0\n\
             [observability]\nlisten = \"127.0.0.1:0\"\n",
            shard.url,
            dir.join("run").display()
        ),
    )
    .unwrap();
    let t = Instant::now();
    let child = std::process::Command::new(bin)
        .args(["--config", config.to_str().unwrap(), "run"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.join(format!("archiver{run}.log"))).unwrap())
        .spawn()
        .unwrap();
    // The peak RSS is sampled on a thread of its own, so that the run is timed to its exit
    // rather than to the next 100 ms sample.
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut rss = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                rss = rss.max(peak_rss_bytes(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(20));
            }
            rss
        })
    };
    let out = child.wait_with_output().unwrap();
    let secs = t.elapsed().as_secs_f64();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    // At most a minute: the deletion takes a fraction of a second.
    for _ in 0..12_000 {
        let busy: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
                 AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if busy == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let idle = t.elapsed().as_secs_f64();
    let rss = sampler.join().unwrap();
    assert!(
        out.status.success(),
        "archiver run failed, see {}",
        dir.join(format!("archiver{run}.log")).display()
    );
    println!(
        "archiver run: {secs:.2} s (shard idle after {idle:.2} s): {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    (secs, idle, rss)
}
