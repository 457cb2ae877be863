//! Archive export benchmark (issue 4): one TimescaleDB chunk of 5,000,000 rows, exported to
//! Parquet three ways in the same run, each [`RUNS`] times, interleaved, and the median taken:
//! - the archiver's export ([`vitalsink_archiver::export::export`]: COPY BINARY on one
//!   connection per core sharing a snapshot, external merge sort by participant, metric, ts,
//!   zstd, to a local directory), unthrottled;
//! - the limit: DuckDB's own PostgreSQL → Parquet export of the same chunk, all of its 14
//!   columns as the archive holds them (PyPI `duckdb` with
//!   the `duckdb-extension-postgres` wheel: `postgres_scan` … `ORDER BY` the same key,
//!   `COPY … (FORMAT parquet, COMPRESSION zstd)`), with DuckDB's default threads (one per
//!   core; its scan also splits the table by ctid ranges over connections sharing a
//!   snapshot);
//! - the whole `archiver run` (release binary: export, read-back verification, drop), as many
//!   times as well: each run drops the chunk it archived, so the next one gets the same rows
//!   loaded again a day later; DuckDB exports each of these chunks just before the run, and
//!   the run's ratio is to the median of those exports. The run ends once its last drop is
//!   committed, while the shard's backend still deletes the chunk's files
//!   (archiver/src/state/commit.rs); the run until no other backend of the shard is active
//!   any more is printed as well, against the same exports;
//! - the archiver's export again with `archive.encode_threads = 1` (every Parquet column on
//!   one thread, as `ArrowWriter` does; the default encodes each row group's columns on one
//!   thread per CPU, [`vitalsink_archiver::export::encode`]), and the encoding alone (one row
//!   group of the object read back, encoded 5 times from memory on 1 and on 2 threads), so
//!   what parallel columns gain is printed as ratios.
//!
//! Also the archive's bytes per row against the chunk's on-disk bytes per row
//! (`pg_total_relation_size`: heap, TOAST, indexes). Targets: export rate at least DuckDB's;
//! archive at most 1/8 of the chunk. The data: 1,000 participants × 4 vital-sign metrics ×
//! 1,250 one-minute readings in one day, values with one decimal like a monitor reports, with
//! the provenance ingest gives every reading since schema version 12 (a UTC offset, the time of
//! receipt 2–5 s after the reading, and the Kafka record: one per participant and minute,
//! over 8 partitions), inserted in time order as ingest writes them.
//! After each load the shard is vacuumed and checkpointed, and the chunk is read once before
//! timing, so that every contender starts with a warm cache and none shares the machine
//! with a checkpoint of the load (1.3 GiB of table and indexes just written).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

// Not a bench target of its own: Cargo finds `benches/*.rs` and `benches/*/main.rs` only.
#[path = "archive_export/contenders.rs"]
mod contenders;

use contenders::{archiver_export, archiver_run, duckdb_export, warm};
use std::time::{Duration, Instant};
use vitalsink_archiver::export::catalog::aged_chunks;
use vitalsink_archiver::export::encode::Encoder;
use vitalsink_archiver::export::format;
use vitalsink_benches::report;
use vitalsink_tests::{connect, unique, ShardDbs, Stack};

const PARTICIPANTS: i64 = 1_000;
const SAMPLES: i64 = 1_250;
/// Timed runs of each contender. Five rather than three: this VM's times vary by ±15 % from
/// run to run, and the median of five is less moved by one slow run.
const RUNS: usize = 5;

/// The run with the median time.
fn median(mut runs: Vec<(f64, u64)>) -> (f64, u64) {
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    runs[runs.len() / 2]
}

#[tokio::main]
async fn main() {
    let stack = Stack::from_env();
    let dbs = ShardDbs::create(&stack, "b_archive").await;
    let shard = dbs.shards[0].clone();
    let dir = std::env::temp_dir().join(unique("bench-archive"));
    std::fs::create_dir_all(&dir).unwrap();
    let sh = vitalsink_common::db::Shard::new(0, &shard, &Default::default()).unwrap();
    vitalsink_common::migrate::migrate(&sh, &Default::default())
        .await
        .unwrap();

    let c = connect(&shard.url).await;
    let day = (chrono::Utc::now() - chrono::Duration::days(60))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let t = Instant::now();
    load(&c, day).await;
    let chunks = aged_chunks(&c, "shard0", Duration::from_secs(86_400))
        .await
        .unwrap();
    assert_eq!(chunks.len(), 1, "one chunk: {chunks:?}");
    let chunk = chunks[0].clone();
    let rows: i64 = c
        .query_one(&format!("SELECT count(*) FROM {}", chunk.ident()), &[])
        .await
        .unwrap()
        .get(0);
    assert!(rows >= 5_000_000);
    println!(
        "loaded {rows} rows into {} in {:.1} s; on disk {:.1} MiB incl. indexes",
        chunk.name,
        t.elapsed().as_secs_f64(),
        chunk.bytes as f64 / 1048576.0
    );

    // The machine is shared: `RUNS` runs of each, interleaved, and the median of each.
    let mut duck_runs = Vec::new();
    let mut ours_runs = Vec::new();
    let mut serial_runs = Vec::new();
    for i in 0..RUNS {
        duck_runs.push(duckdb_export(&shard.url, &chunk, &dir));
        ours_runs.push(archiver_export(&c, &shard.url, &chunk, &dir, i, 0).await);
        serial_runs.push(archiver_export(&c, &shard.url, &chunk, &dir, RUNS + i, 1).await);
    }
    let duck = median(duck_runs);
    let (ours_secs, ours_bytes) = median(ours_runs);
    let (one_secs, _) = median(serial_runs);
    let (encode_one, encode_two) = encode_alone(&dir.join("lib"));
    // `archiver run` drops the chunk it archives: each further run gets the same rows loaded
    // again one day later (a chunk of its own), read once to warm the cache like the others.
    // DuckDB exports each of these chunks just before the run, so that the run is compared
    // with exports of the same chunks in the same minutes (this VM's speed drifts over the
    // bench's quarter of an hour).
    let mut run_runs = Vec::new();
    let mut idle_runs = Vec::new();
    let mut duck_paired = Vec::new();
    let mut run_rss = 0;
    for i in 0..RUNS {
        let this = if i > 0 {
            load(&c, day + chrono::Duration::days(i as i64)).await;
            let next = aged_chunks(&c, "shard0", Duration::from_secs(86_400))
                .await
                .unwrap();
            assert_eq!(next.len(), 1, "one chunk: {next:?}");
            warm(&c, &next[0]).await;
            next[0].clone()
        } else {
            chunk.clone()
        };
        duck_paired.push(duckdb_export(&shard.url, &this, &dir));
        let (secs, idle, rss) = archiver_run(&c, &shard, &dir, i).await;
        run_runs.push((secs, 0));
        idle_runs.push((idle, 0));
        run_rss = run_rss.max(rss);
    }
    let (run_secs, _) = median(run_runs);
    let (idle_secs, _) = median(idle_runs);
    let (duck_paired_secs, _) = median(duck_paired);

    let mib = |b: f64| b / 1048576.0;
    let rows_f = rows as f64;
    let ours_rate = rows_f / ours_secs;
    let duck_rate = rows_f / duck.0;
    println!();
    report(
        "limit: DuckDB postgres_scan → Parquet",
        duck_rate,
        "rows/s",
        None,
    );
    report(
        "archiver export",
        ours_rate,
        "rows/s",
        Some(("DuckDB", duck_rate)),
    );
    report(
        "archiver export, encode_threads = 1",
        rows_f / one_secs,
        "rows/s",
        Some(("default", ours_rate)),
    );
    report(
        "Parquet encoding alone, 2 threads",
        encode_one / encode_two,
        "× 1 thread",
        None,
    );
    report(
        "archiver export, Parquet written",
        mib(ours_bytes as f64) / ours_secs,
        "MiB/s",
        None,
    );
    report(
        "archiver export, chunk read (on-disk size)",
        mib(chunk.bytes as f64) / ours_secs,
        "MiB/s",
        None,
    );
    report(
        "DuckDB export of the run's chunks",
        rows_f / duck_paired_secs,
        "rows/s",
        None,
    );
    report(
        "archiver run (export + verify + drop)",
        rows_f / run_secs,
        "rows/s",
        Some(("DuckDB", rows_f / duck_paired_secs)),
    );
    report(
        "archiver run, until the shard is idle (chunk's files deleted)",
        rows_f / idle_secs,
        "rows/s",
        Some(("DuckDB", rows_f / duck_paired_secs)),
    );
    report("archiver run peak RSS", mib(run_rss as f64), "MiB", None);
    let disk_per_row = chunk.bytes as f64 / rows_f;
    let ours_per_row = ours_bytes as f64 / rows_f;
    report(
        "chunk on disk per row (heap + indexes)",
        disk_per_row,
        "bytes",
        None,
    );
    report(
        "DuckDB Parquet per row",
        duck.1 as f64 / rows_f,
        "bytes",
        Some(("on disk", disk_per_row)),
    );
    report(
        "archive Parquet per row",
        ours_per_row,
        "bytes",
        Some(("on disk", disk_per_row)),
    );
    report(
        "archive size vs the 1/8 target",
        ours_per_row,
        "bytes",
        Some(("on disk / 8", disk_per_row / 8.0)),
    );
    dbs.drop_all().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// Loads the chunk of `day` (`PARTICIPANTS` × 4 metrics × `SAMPLES` readings, see the module
/// doc), in time order, then VACUUM ANALYZE and CHECKPOINT.
async fn load(c: &tokio_postgres::Client, day: chrono::DateTime<chrono::Utc>) {
    c.execute(
        "INSERT INTO measurements (participant_id, metric, ts, value, unit, device_id, study_id,
                                   utc_offset_min, occurrence, received_at, received_at_type,
                                   src_topic, src_partition, src_offset)
         SELECT 'P' || lpad(p::text, 5, '0'), m.name, $1::timestamptz + make_interval(mins => i::int),
                round((m.base + m.amp * sin(i / 90.0 + p) + (random() * 2 - 1))::numeric, 1)::float8,
                m.unit, 'dev-' || (p % 997), 'study-' || (p % 3),
                (p % 5) * 60 - 120, 0,
                $1::timestamptz + make_interval(mins => i::int, secs => 2 + ((p * 7919 + i) % 3000) / 1000.0),
                0, 'vitals', p % 8, i * ($2::bigint / 8 + 1) + p / 8
           FROM generate_series(1, $2::bigint) p,
                (VALUES ('heart_rate', 72.0, 12.0, 'bpm'), ('spo2', 97.0, 1.5, '%'),
                        ('resp_rate', 15.0, 3.0, '1/min'), ('skin_temp', 33.5, 0.8, 'Cel'))
                    AS m(name, base, amp, unit),
                generate_series(0, $3::bigint - 1) i
          ORDER BY i, p",
        &[&day, &PARTICIPANTS, &SAMPLES],
    )
    .await
    .unwrap();
    c.batch_execute("VACUUM ANALYZE measurements")
        .await
        .unwrap();
    // Otherwise the checkpointer writes the load out (spread over `checkpoint_timeout` ×
    // `checkpoint_completion_target`) while the next contender runs.
    c.batch_execute("CHECKPOINT").await.unwrap();
}

/// Encodes the first row group of an object under `root` 5 times from memory with
/// [`Encoder`] on 1 and on 2 threads (alternating, 3 rounds, the fastest of each): (seconds
/// on 1 thread, seconds on 2).
fn encode_alone(root: &std::path::Path) -> (f64, f64) {
    fn first_parquet(dir: &std::path::Path) -> Option<std::path::PathBuf> {
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                if let Some(f) = first_parquet(&p) {
                    return Some(f);
                }
            } else if p.extension().is_some_and(|x| x == "parquet") {
                return Some(p);
            }
        }
        None
    }
    let file = std::fs::File::open(first_parquet(root).expect("an archived object")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .with_row_groups(vec![0])
        .with_batch_size(65_536)
        .build()
        .unwrap();
    let batches: Vec<arrow::array::RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let encode = |threads: usize| {
        let t = Instant::now();
        for _ in 0..5 {
            let props = format::writer_properties(rows, vec![]);
            let mut e = Encoder::new(format::schema(), props, rows, threads).unwrap();
            for b in &batches {
                e.write(b).unwrap();
            }
            e.finish(vec![]).unwrap();
        }
        t.elapsed().as_secs_f64()
    };
    let (mut one, mut two) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        one = one.min(encode(1));
        two = two.min(encode(2));
    }
    println!("Parquet encoding alone, 5 × {rows} rows: {one:.2} s on 1 thread, {two:.2} s on 2");
    (one, two)
}
