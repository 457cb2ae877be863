//! Growth benchmark (issue 15): about 100 M readings ingested into 2 shards in 10 waves of
//! about 10 M, to see whether the insert rate stays flat while the hypertables grow (the
//! reason TimescaleDB is chosen: a chunk's indexes stay small while the table grows, see
//! TimescaleDB's "Hypertables and chunks" docs). Then the archiver over the grown data set
//! against DuckDB's PostgreSQL → Parquet export of the same chunks.
//!
//! The data ([`cohorts`]): `replay synthetic`, modelled on the real recordings, over
//! 60 days — 360 participants with 30-second actigraphy epochs (`acceleration`), 4 with 1 Hz
//! `heart_rate`, 7 with 100 Hz PPG in one-minute bursts every 3 hours; 103.1 M readings. Wave
//! `w` is days `6w … 6w+5`, so the data arrives in time order as a trial's does; each wave has
//! a topic of its own (6 partitions, 3 per shard) that is deleted after it (the local broker
//! keeps topics in memory), published by the three `replay` processes at once, then drained
//! by a fresh release `ingest` worker (20,000-row batches, 64 MiB cap).
//!
//! Per wave it prints: rows/s from the drain's first row to its last; the shards' table and
//! index bytes (`hypertable_detailed_size`), also as a fraction of RAM; the worker's CPU-µs
//! per row and peak RSS; and what could explain a slowdown: chunks, checkpoints requested
//! (`pg_stat_checkpointer`), autovacuum runs, and the host's own state ([`Host`]: CPU steal
//! and iowait during the drain, pages the kernel reclaimed, `MemFree` after it). At the end:
//! the last wave's rate over the first (target ≥ 0.8×).
//!
//! The same data is replayed at each `database.chunk_interval` of `BENCH_GROWTH_INTERVALS`
//! (default `1d,1h,7d`); after the first, the archiver moves everything older than 7 days.
//! `BENCH_GROWTH_WAVES` (default 10) shortens a trial run; `BENCH_GROWTH_ARCHIVE_ONLY` reruns
//! only the archiver phase over databases a failed run left. Run with
//! `dev/bench --bench growth` (about an hour; 13 GB of disk per interval, freed after it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vitalsink_archiver::export::catalog::{aged_chunks, Chunk};
use vitalsink_benches::{
    applied_rows, connect_all, cpu_seconds, cpu_seconds_matching, duckdb_json,
    machine_busy_seconds, release_binary, report,
};
use vitalsink_common::kafka::ensure_topic;
use vitalsink_tests::ingest_run::{peak_rss_bytes, IngestSetup};
use vitalsink_tests::{connect, unique, ShardDbs, Stack};

const PARTITIONS: i32 = 6;
const DAYS_PER_WAVE: u32 = 6;
const BATCH_ROWS: usize = 20_000;
const BROKER: &str = "tansu broker";
/// What the archiver moves: chunks older than this (archive.older_than).
const ARCHIVE_OLDER_THAN: &str = "7d";

/// One group of participants: id prefix, participants, `replay synthetic --metrics`, readings
/// per participant and day.
struct Cohort {
    prefix: &'static str,
    participants: u32,
    metrics: &'static str,
    per_day: u64,
}

/// The trial's mix (rates of `replay`'s synthetic metrics).
fn cohorts() -> [Cohort; 3] {
    [
        Cohort {
            prefix: "act-",
            participants: 360,
            metrics: "acceleration",
            per_day: 2_880,
        },
        Cohort {
            prefix: "hr-",
            participants: 4,
            metrics: "heart-rate",
            per_day: 86_400,
        },
        Cohort {
            prefix: "ppg-",
            participants: 7,
            metrics: "ppg-bursts",
            per_day: 48_000,
        },
    ]
}

fn wave_readings() -> i64 {
    cohorts()
        .iter()
        .map(|c| u64::from(c.participants) * c.per_day * u64::from(DAYS_PER_WAVE))
        .sum::<u64>() as i64
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[tokio::main]
async fn main() {
    let stack = Stack::from_env();
    assert_eq!(
        stack.shard_urls.len(),
        2,
        "the growth benchmark runs on 2 shards (STACK_SHARDS=2)"
    );
    let waves: u32 = env_or("BENCH_GROWTH_WAVES", "10").parse().unwrap();
    let intervals = env_or("BENCH_GROWTH_INTERVALS", "1d,1h,7d");
    let ram = meminfo_bytes("MemTotal");
    // The data ends now (rounded to the minute by replay) and starts waves × 6 days earlier.
    let end = chrono::Utc::now();
    let start = end - chrono::Duration::days(i64::from(waves * DAYS_PER_WAVE));
    println!(
        "data: {} waves of {} readings ({} days each), {:.1} M readings from {} to {}; RAM {:.1} GiB",
        waves,
        wave_readings(),
        DAYS_PER_WAVE,
        (wave_readings() * i64::from(waves)) as f64 / 1e6,
        start.format("%Y-%m-%d"),
        end.format("%Y-%m-%d %H:%M"),
        gib(ram)
    );
    // BENCH_GROWTH_ARCHIVE_ONLY=DATABASE: only the archiver phase, over the databases a
    // failed run left behind (named in `SELECT datname FROM pg_database`); drops them after.
    if let Ok(name) = std::env::var("BENCH_GROWTH_ARCHIVE_ONLY") {
        let dbs = ShardDbs::existing(&stack, &name);
        let dir = std::env::temp_dir().join(unique("bench-growth"));
        std::fs::create_dir_all(&dir).unwrap();
        archive(&dbs, &dir).await;
        dbs.drop_all().await;
        std::fs::remove_dir_all(&dir).ok();
        return;
    }
    let mut summaries = Vec::new();
    for (i, interval) in intervals.split(',').enumerate() {
        println!();
        println!("== database.chunk_interval = {interval}");
        let dbs = ShardDbs::create(&stack, "b_growth").await;
        let dir = std::env::temp_dir().join(unique("bench-growth"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut rows = Vec::new();
        for w in 0..waves {
            let wave_end = start + chrono::Duration::days(i64::from((w + 1) * DAYS_PER_WAVE));
            rows.push(wave(&stack, &dbs, &dir, interval, w, wave_end, ram).await);
        }
        let first = rows[0].rate;
        let last = rows[rows.len() - 1].rate;
        let mean = rows.iter().map(|r| r.rate).sum::<f64>() / rows.len() as f64;
        println!();
        report(
            &format!("{interval}: last wave / first wave"),
            last,
            "rows/s",
            Some(("the first wave", first)),
        );
        report(
            &format!("{interval}: last wave vs the 0.8× target"),
            last,
            "rows/s",
            Some(("0.8 × the first wave", 0.8 * first)),
        );
        let end_size = rows[rows.len() - 1].total_bytes;
        summaries.push((interval.to_string(), first, last, mean, end_size, rows));
        if i == 0 {
            archive(&dbs, &dir).await;
        }
        dbs.drop_all().await;
        std::fs::remove_dir_all(&dir).ok();
    }
    println!();
    println!("== chunk intervals compared");
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>10} {:>10} {:>12}",
        "interval",
        "first rows/s",
        "last rows/s",
        "mean rows/s",
        "last/first",
        "chunks",
        "bytes/row"
    );
    let best = summaries.iter().map(|s| s.3).fold(f64::NAN, f64::max);
    for (interval, first, last, mean, bytes, rows) in &summaries {
        let n: i64 = rows.iter().map(|r| r.readings).sum();
        println!(
            "{interval:<10} {first:>12.0} {last:>12.0} {mean:>12.0} {:>9.2}× {:>10} {:>12.1}",
            last / first,
            rows[rows.len() - 1].chunks,
            *bytes as f64 / n as f64
        );
    }
    for (interval, _, _, mean, _, _) in &summaries {
        report(
            &format!("{interval}: mean rate vs the best interval's"),
            *mean,
            "rows/s",
            Some(("the best mean", best)),
        );
    }
}

/// The figures of one wave.
struct Wave {
    readings: i64,
    rate: f64,
    total_bytes: i64,
    chunks: i64,
}

/// Publishes wave `w` (the days ending at `wave_end`) to a topic of its own, drains it with a
/// fresh worker, prints its line and deletes the topic.
async fn wave(
    stack: &Stack,
    dbs: &ShardDbs,
    dir: &std::path::Path,
    interval: &str,
    w: u32,
    wave_end: chrono::DateTime<chrono::Utc>,
    ram: u64,
) -> Wave {
    let topic = unique("growth");
    for t in [topic.clone(), format!("{topic}.dlq")] {
        ensure_topic(&stack.kafka(), &t, PARTITIONS).await.unwrap();
    }
    let setup = IngestSetup::for_topic(stack, &dbs.shards, dir, BATCH_ROWS, topic.clone());
    setup.set_table("database", &[("chunk_interval", interval)]);
    let want = wave_readings();
    let t = Instant::now();
    publish(&setup, w, wave_end, dir);
    let publish_secs = t.elapsed().as_secs_f64();

    let pollers = connect_all(&dbs.shards).await;
    let before_applied = applied_rows(&pollers).await;
    let before = pg_counters(&pollers).await;
    let log = dir.join(format!("ingest-{w}.log"));
    let mut child = Command::new(release_binary("ingest"))
        .args(["--config", setup.config.to_str().unwrap(), "run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let broker_cpu0 = cpu_seconds_matching(BROKER);
    let host0 = Host::now();
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut first: Option<(Instant, i64)> = None;
    let mut n = 0;
    while n < want && Instant::now() < deadline {
        n = applied_rows(&pollers).await - before_applied;
        if n > 0 && first.is_none() {
            first = Some((Instant::now(), n));
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (t0, n0) = first.expect("the worker applied rows");
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(child.id()).unwrap_or(f64::NAN);
    let rss = peak_rss_bytes(child.id()).unwrap_or(0);
    let broker_cpu = cpu_seconds_matching(BROKER) - broker_cpu0;
    let host = Host::now().since(&host0);
    stop(&mut child);
    assert_eq!(
        n,
        want,
        "wave {w}: the worker did not drain the topic; log: {}",
        log.display()
    );
    let after = pg_counters(&pollers).await;
    let (table, index, chunks) = sizes(&pollers).await;
    let rate = (want - n0) as f64 / secs;
    let total = table + index;
    if w == 0 {
        println!(
            "{:>4} {:>10} {:>9} {:>10} {:>10} {:>10} {:>9} {:>10} {:>9} {:>7} {:>6} {:>8} {:>8} {:>6} {:>6} {:>11} {:>9}",
            "wave",
            "rows",
            "publish s",
            "rows/s",
            "table GiB",
            "index GiB",
            "of RAM",
            "worker µs",
            "broker µs",
            "RSS MiB",
            "chunks",
            "ckpt req",
            "autovac",
            "steal",
            "iowait",
            "reclaim MiB",
            "free GiB"
        );
    }
    println!(
        "{:>4} {:>10} {:>9.1} {:>10.0} {:>10.2} {:>10.2} {:>8.1}% {:>10.2} {:>9.2} {:>7.1} {:>6} {:>8} {:>8} {:>5.1}% {:>5.1}% {:>11.0} {:>9.1}",
        w + 1,
        want,
        publish_secs,
        rate,
        gib(table as u64),
        gib(index as u64),
        total as f64 / ram as f64 * 100.0,
        cpu / want as f64 * 1e6,
        broker_cpu / want as f64 * 1e6,
        rss as f64 / 1048576.0,
        chunks,
        after.0 - before.0,
        after.1 - before.1,
        host.steal_pct(),
        host.iowait_pct(),
        host.reclaimed_pages as f64 * 4096.0 / 1048576.0,
        gib(meminfo_bytes("MemFree"))
    );
    delete_topics(stack, &[topic.clone(), format!("{topic}.dlq")]).await;
    Wave {
        readings: want,
        rate,
        total_bytes: total,
        chunks,
    }
}

/// Runs the three cohorts' `replay synthetic` at once and waits for them.
fn publish(
    setup: &IngestSetup,
    w: u32,
    wave_end: chrono::DateTime<chrono::Utc>,
    dir: &std::path::Path,
) {
    let bin = release_binary("replay");
    let end = wave_end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let children: Vec<(Child, std::path::PathBuf)> = cohorts()
        .iter()
        .map(|c| {
            let log = dir.join(format!("replay-{w}-{}log", c.prefix));
            let child = Command::new(&bin)
                .args(["--config", setup.config.to_str().unwrap(), "synthetic"])
                .args(["--participants", &c.participants.to_string()])
                .args(["--days", &DAYS_PER_WAVE.to_string()])
                .args(["--metrics", c.metrics, "--prefix", c.prefix])
                .args(["--seed", &(w + 1).to_string(), "--end-at", &end])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            (child, log)
        })
        .collect();
    for (mut child, log) in children {
        let status = child.wait().unwrap();
        assert!(status.success(), "replay failed, see {}", log.display());
    }
}

/// Stops the worker (its offsets are in the shards, so a kill loses nothing).
fn stop(child: &mut Child) {
    child.kill().ok();
    child.wait().ok();
}

/// Deletes the wave's topics so the in-memory broker gives their memory back.
async fn delete_topics(stack: &Stack, topics: &[String]) {
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .create()
        .unwrap();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    match admin.delete_topics(&names, &AdminOptions::new()).await {
        Ok(results) => {
            for r in results {
                if let Err((t, e)) = r {
                    println!("(could not delete topic {t}: {e})");
                }
            }
        }
        Err(e) => println!("(could not delete the wave's topics: {e})"),
    }
}

/// Checkpoints requested (by WAL volume, not by timeout) and autovacuum/autoanalyze runs so
/// far, summed over the shards (PostgreSQL 17 `pg_stat_checkpointer`, `pg_stat_user_tables`).
async fn pg_counters(clients: &[tokio_postgres::Client]) -> (i64, i64) {
    let (mut ckpt, mut av) = (0, 0);
    for c in clients {
        let r = c
            .query_one(
                "SELECT (SELECT num_requested FROM pg_stat_checkpointer)::int8,
                        (SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0)
                           FROM pg_stat_user_tables)::int8",
                &[],
            )
            .await
            .unwrap();
        ckpt += r.get::<_, i64>(0);
        av += r.get::<_, i64>(1);
    }
    (ckpt, av)
}

/// The shards' table (heap + TOAST) and index bytes of the hypertable, and its chunks, summed.
async fn sizes(clients: &[tokio_postgres::Client]) -> (i64, i64, i64) {
    let (mut table, mut index, mut chunks) = (0, 0, 0);
    for c in clients {
        let r = c
            .query_one(
                "SELECT (table_bytes + toast_bytes)::int8, index_bytes::int8,
                        (SELECT count(*) FROM show_chunks('measurements'))::int8
                   FROM hypertable_detailed_size('measurements')",
                &[],
            )
            .await
            .unwrap();
        table += r.get::<_, i64>(0);
        index += r.get::<_, i64>(1);
        chunks += r.get::<_, i64>(2);
    }
    (table, index, chunks)
}

/// A `/proc/meminfo` field (`MemTotal`, `MemFree`, …), bytes.
fn meminfo_bytes(field: &str) -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("/proc/meminfo has no {field}"));
    kb * 1024
}

/// What the host did during a wave, to tell the database's growth from the machine's own
/// slowdowns: CPU ticks (`/proc/stat`, all CPUs: total, steal = time the hypervisor gave to
/// other guests, iowait) and pages the kernel reclaimed (`/proc/vmstat` `pgsteal_kswapd` +
/// `pgsteal_direct`: the page cache is full, so every new page costs an eviction).
#[derive(Debug, Clone, Copy, Default)]
struct Host {
    total_ticks: u64,
    steal_ticks: u64,
    iowait_ticks: u64,
    reclaimed_pages: u64,
}

impl Host {
    fn now() -> Host {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let f: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user)
        let vmstat = std::fs::read_to_string("/proc/vmstat").unwrap_or_default();
        let reclaimed_pages = vmstat
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(k, _)| *k == "pgsteal_kswapd" || *k == "pgsteal_direct")
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum();
        Host {
            total_ticks: f.iter().take(8).sum(),
            steal_ticks: f.get(7).copied().unwrap_or(0),
            iowait_ticks: f.get(4).copied().unwrap_or(0),
            reclaimed_pages,
        }
    }

    fn since(&self, before: &Host) -> Host {
        Host {
            total_ticks: self.total_ticks.saturating_sub(before.total_ticks),
            steal_ticks: self.steal_ticks.saturating_sub(before.steal_ticks),
            iowait_ticks: self.iowait_ticks.saturating_sub(before.iowait_ticks),
            reclaimed_pages: self.reclaimed_pages.saturating_sub(before.reclaimed_pages),
        }
    }

    fn steal_pct(&self) -> f64 {
        self.steal_ticks as f64 / self.total_ticks.max(1) as f64 * 100.0
    }

    fn iowait_pct(&self) -> f64 {
        self.iowait_ticks as f64 / self.total_ticks.max(1) as f64 * 100.0
    }
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

/// The archiver over the grown data set: everything older than [`ARCHIVE_OLDER_THAN`], both
/// shards at once (`archive.shard_concurrency = 2`), unthrottled, to a local directory;
/// against DuckDB's PostgreSQL → Parquet export of the same chunks, measured first. Both
/// start from settled, warm chunks: vacuumed and checkpointed, then read (and counted) once.
async fn archive(dbs: &ShardDbs, dir: &std::path::Path) {
    println!();
    println!("== archiver: every chunk older than {ARCHIVE_OLDER_THAN}");
    let older = humantime::parse_duration(ARCHIVE_OLDER_THAN).unwrap();
    // An archive run meets chunks days old, which autovacuum has vacuumed (PostgreSQL 13+
    // vacuums after inserts, `autovacuum_vacuum_insert_threshold`) and whose pages are
    // written out. The chunks here were written minutes ago: settle them first, so that
    // neither contender pays for hint bits, visibility-map writes or the other's dirty pages.
    let t = Instant::now();
    let settle = dbs.shards.iter().map(|s| async move {
        let c = connect(&s.url).await;
        // Two statements: VACUUM cannot run in the implicit transaction of a multi-statement
        // query.
        c.batch_execute("VACUUM (ANALYZE) measurements")
            .await
            .unwrap();
        c.batch_execute("CHECKPOINT").await.unwrap();
    });
    futures::future::join_all(settle).await;
    println!(
        "settled: VACUUM (ANALYZE) and CHECKPOINT on both shards at once, {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut all: Vec<(String, Chunk)> = Vec::new();
    let mut rows = 0i64;
    let mut disk = 0i64;
    for s in &dbs.shards {
        let c = connect(&s.url).await;
        for chunk in aged_chunks(&c, &s.name, older).await.unwrap() {
            // Reads the whole chunk: counts it and warms the cache for both contenders.
            let n: i64 = c
                .query_one(
                    &format!("SELECT count(*), sum(value) FROM {}", chunk.ident()),
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            rows += n;
            disk += chunk.bytes;
            all.push((s.url.clone(), chunk));
        }
    }
    println!(
        "{} aged chunks, {rows} rows, {:.2} GiB on disk incl. indexes",
        all.len(),
        gib(disk as u64)
    );
    // Machine CPU less the contender's own process: the shards' backends (which come and go
    // with the connections, so their own counters cannot be summed) and the kernel's work.
    let busy0 = machine_busy_seconds().unwrap_or(f64::NAN);
    let (duck_secs, duck_bytes, duck_cpu) = duckdb_export(&all, dir);
    let busy1 = machine_busy_seconds().unwrap_or(f64::NAN);
    let (run_secs, run_rss, archived_bytes, run_cpu) = archiver_run(&dbs.shards, dir);
    let busy2 = machine_busy_seconds().unwrap_or(f64::NAN);
    let per_row = |s: f64| s / rows as f64 * 1e6;
    println!(
        "machine CPU-µs per row: DuckDB export {:.2} (DuckDB {:.2}, the rest {:.2}), archiver run {:.2} (the archiver {:.2}, the rest {:.2})",
        per_row(busy1 - busy0),
        per_row(duck_cpu),
        per_row(busy1 - busy0 - duck_cpu),
        per_row(busy2 - busy1),
        per_row(run_cpu),
        per_row(busy2 - busy1 - run_cpu)
    );
    let rows_f = rows as f64;
    let duck_rate = rows_f / duck_secs;
    report(
        "limit: DuckDB postgres_scan → Parquet",
        duck_rate,
        "rows/s",
        None,
    );
    report(
        "archiver run, 2 shards at once",
        rows_f / run_secs,
        "rows/s",
        Some(("DuckDB", duck_rate)),
    );
    report(
        "archiver run peak RSS",
        run_rss as f64 / 1048576.0,
        "MiB",
        None,
    );
    report(
        "DuckDB Parquet per row",
        duck_bytes as f64 / rows_f,
        "bytes",
        None,
    );
    report(
        "archive Parquet per row",
        archived_bytes as f64 / rows_f,
        "bytes",
        Some(("on disk", disk as f64 / rows_f)),
    );
}

/// DuckDB's export of every chunk of `chunks` (shard URL, chunk), one after the other in one
/// process with its default threads: (seconds, Parquet bytes, the process's CPU-seconds).
fn duckdb_export(chunks: &[(String, Chunk)], dir: &std::path::Path) -> (f64, u64, f64) {
    let out = dir.join("duckdb");
    std::fs::create_dir_all(&out).unwrap();
    let list: Vec<serde_json::Value> = chunks
        .iter()
        .map(|(dsn, c)| serde_json::json!([dsn, c.schema, c.name]))
        .collect();
    let list_file = dir.join("duckdb-chunks.json");
    std::fs::write(&list_file, serde_json::to_string(&list).unwrap()).unwrap();
    let script = r#"
import duckdb, json, os, sys, time
from duckdb_extensions import import_extension
chunks, out, columns = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
con = duckdb.connect()
import_extension("postgres", con=con)
con.execute("LOAD postgres")
t, cpu = time.time(), time.process_time()
size = 0
for i, (dsn, schema, table) in enumerate(chunks):
    path = f"{out}/{i}.parquet"
    con.execute(f"""COPY (SELECT {columns}
                    FROM postgres_scan('{dsn}', '{schema}', '{table}')
                    ORDER BY participant_id, metric, ts)
                  TO '{path}' (FORMAT parquet, COMPRESSION zstd)""")
    size += os.path.getsize(path)
secs = time.time() - t
print(json.dumps({"secs": secs, "bytes": size, "cpu": time.process_time() - cpu,
                  "threads": con.execute("SELECT current_setting('threads')").fetchone()[0]}))
"#;
    let v = duckdb_json(
        "DuckDB export",
        script,
        // The same columns the archive holds (all of the row, provenance too).
        &[
            list_file.as_os_str(),
            out.as_os_str(),
            vitalsink_common::columns::column_list().as_ref(),
        ],
    );
    std::fs::remove_dir_all(&out).ok();
    (
        v["secs"].as_f64().unwrap_or(f64::NAN),
        v["bytes"].as_u64().unwrap_or(0),
        v["cpu"].as_f64().unwrap_or(f64::NAN),
    )
}

/// `archiver run` (release binary) over both shards at once: (seconds, peak RSS bytes,
/// Parquet bytes written, the process's CPU-seconds).
fn archiver_run(
    shards: &[vitalsink_common::config::ShardConfig],
    dir: &std::path::Path,
) -> (f64, u64, u64, f64) {
    let bin = release_binary("archiver");
    let config = dir.join("archiver.toml");
    let root = dir.join("archive");
    let mut toml = format!(
        "[archive]\nroot = \"file://{}\"\nolder_than = \"{ARCHIVE_OLDER_THAN}\"\nrows_per_second = 0\nshard_concurrency = 2\n\
         [observability]\nlisten = \"127.0.0.1:0\"\n",
        root.display()
    );
    for s in shards {
        toml.push_str(&format!(
            "[[shards]]\nname = \"{}\"\nurl = \"{}\"\n",
            s.name, s.url
        ));
    }
    std::fs::write(&config, toml).unwrap();
    let log = dir.join("archiver.log");
    let t = Instant::now();
    // BENCH_GROWTH_PERF=FILE: record a CPU profile of the run with `perf` (the RSS and CPU
    // figures are then perf's).
    let mut cmd = match std::env::var("BENCH_GROWTH_PERF") {
        Ok(out) => {
            let mut c = Command::new("perf");
            c.args(["record", "-F", "499", "-g", "-o", &out, "--"])
                .arg(bin);
            c
        }
        Err(_) => Command::new(bin),
    };
    let mut child = cmd
        .args(["--config", config.to_str().unwrap(), "run"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let (mut rss, mut cpu) = (0, 0.0);
    while child.try_wait().unwrap().is_none() {
        rss = rss.max(peak_rss_bytes(child.id()).unwrap_or(0));
        cpu = cpu_seconds(child.id()).unwrap_or(cpu);
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = t.elapsed().as_secs_f64();
    let out = child.wait_with_output().unwrap();
    // Kept after the benchmark's directory is removed: per chunk, the export's seconds.
    let kept = std::env::temp_dir().join("growth-archiver.log");
    std::fs::copy(&log, &kept).ok();
    assert!(
        out.status.success(),
        "archiver run failed, see {}",
        kept.display()
    );
    println!(
        "archiver run: {secs:.1} s: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    (secs, rss, dir_bytes(&root), cpu)
}

/// Bytes of the `.parquet` files under `dir`, recursively.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            total += dir_bytes(&p);
        } else if p.extension().is_some_and(|x| x == "parquet") {
            total += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    total
}
