//! Ingest drain benchmark (issue 3): a pre-loaded topic of 2,000,000 readings drained by the
//! release `ingest` binary into 2 shards, against two limits measured in the same run:
//! - broker-only: the same topic consumed by a bare rdkafka consumer (no decoding, no writes);
//! - COPY-only: the same rows, decoded and encoded as COPY tuples beforehand, `COPY … BINARY`'d
//!   straight into fresh hypertables of the same shards, one connection per shard in
//!   parallel, in transactions of the ingest worker's batch size.
//!
//! Timing starts when the first message (limits) or first row (ingest) arrives, so the
//! consumer-group join (seconds on Tansu) is not counted; the ingest figure also leaves out
//! its first batch (at most `batch_max_age`). Run with `dev/bench` (needs `dev/stack up` and
//! the release binaries).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use std::time::{Duration, Instant};
use vitalsink_benches::{cores, cpu_seconds, cpu_seconds_matching, machine_busy_seconds, report};
use vitalsink_common::kafka::ensure_topic;
use vitalsink_common::measurement::{decode, Limits};
use vitalsink_common::routing::ShardRouter;
use vitalsink_ingest::copy_format::{copy_in, encode_reading};
use vitalsink_tests::dataset::generate;
use vitalsink_tests::ingest_run::{peak_rss_bytes, produce, total_rows, IngestSetup};
use vitalsink_tests::{connect, unique, ShardDbs, Stack};

const PARTITIONS: i32 = 6;
/// Rows per batch, for the ingest worker (`ingest.batch_max_rows`, its default) and the
/// COPY-only limit alike.
const BATCH_ROWS: usize = 20_000;

#[tokio::main]
async fn main() {
    let stack = Stack::from_env();
    let now_ms = chrono::Utc::now().timestamp_millis();
    // 1,000 participants × (500 single readings + 15 batches of 100 samples) = 2,000,000.
    let data = generate(1_000, 500, 15, 100, 0, now_ms);
    println!(
        "data set: {} readings in {} records",
        data.readings,
        data.records.len()
    );

    let dbs = ShardDbs::create(&stack, "b_ingest").await;
    let dir = std::env::temp_dir().join(unique("bench"));
    std::fs::create_dir_all(&dir).unwrap();
    let setup = IngestSetup::with_batch_rows(&stack, &dbs.shards, &dir, BATCH_ROWS);
    ensure_topic(&stack.kafka(), &setup.topic, PARTITIONS)
        .await
        .unwrap();
    ensure_topic(&stack.kafka(), &setup.dlq_topic, PARTITIONS)
        .await
        .unwrap();
    let t = Instant::now();
    produce(&stack.brokers, &setup.topic, &data.records).await;
    println!("pre-loaded the topic in {:.1} s", t.elapsed().as_secs_f64());

    let broker_rate =
        broker_only_rate(&stack, &setup.topic, data.records.len(), data.readings).await;
    let (copy_rate, copy_cpu_per_row) = copy_only_rate(&stack, &data).await;

    // The ingest worker, release build, as a separate process.
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/ingest");
    assert!(
        bin.exists(),
        "{} missing: run dev/bench (it builds the release binaries)",
        bin.display()
    );
    let log = dir.join("ingest.log");
    let mut child = std::process::Command::new(&bin)
        .args(["--config", setup.config.to_str().unwrap(), "run"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut first: Option<Instant> = None;
    let (mut busy_at_first, mut rows_at_first) = (f64::NAN, 0);
    // The broker's CPU, for the CPU account below. Progress is polled over one connection
    // per shard held open for the whole drain (a new backend per poll would cost the shards
    // CPU the worker is measured against).
    let pollers: Vec<_> = connect_all(&dbs.shards).await;
    let broker_cpu0 = cpu_seconds_matching("tansu broker");
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut n = 0;
    // Progress is polled from `ingest_offsets.rows_applied` (a few rows), not `count(*)`,
    // which would scan the growing hypertables and steal the shards' CPU from the COPY.
    while n < data.readings && Instant::now() < deadline {
        n = applied_rows(&pollers).await;
        if n > 0 && first.is_none() {
            first = Some(Instant::now());
            busy_at_first = machine_busy_seconds().unwrap_or(f64::NAN);
            rows_at_first = n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(f64::NAN);
    let busy = machine_busy_seconds().unwrap_or(f64::NAN) - busy_at_first;
    println!(
        "ingest: machine CPU {:.0}% of {} cores busy while draining, {:.2} CPU-µs per row (shards, broker, worker and this benchmark together)",
        busy / elapsed / cores() * 100.0,
        cores(),
        busy / (data.readings - rows_at_first) as f64 * 1e6
    );
    let cpu = cpu_seconds(child.id()).unwrap_or(f64::NAN);
    let broker_cpu = cpu_seconds_matching("tansu broker") - broker_cpu0;
    let rss = peak_rss_bytes(child.id()).unwrap_or(0);
    child.kill().ok();
    child.wait().ok();
    let n = total_rows(&dbs.shards).await;
    assert_eq!(
        n,
        data.readings,
        "ingest did not drain the topic; log: {}",
        log.display()
    );

    let rate = data.readings as f64 / elapsed;
    let lower = broker_rate.min(copy_rate);
    // The CPU account: the shards, the broker and the worker share this machine's cores,
    // while the COPY-only limit had every core for the shards alone. Taking the shards' CPU
    // per row from the COPY-only run, the drain cannot beat
    // cores / (shards + broker + worker CPU per row).
    let per_row = |s: f64| s / data.readings as f64 * 1e6;
    let (w, br) = (per_row(cpu), per_row(broker_cpu));
    let ceiling = cores() / (copy_cpu_per_row + br + w) * 1e6;
    println!(
        "CPU per row: shards {copy_cpu_per_row:.2} µs (COPY-only run), broker {br:.2} µs, worker {w:.2} µs \
         → with {} cores shared the drain cannot beat {ceiling:.0} rows/s = {:.2}× COPY-only",
        cores(),
        ceiling / copy_rate
    );
    println!();
    report("limit: broker-only consume", broker_rate, "rows/s", None);
    report(
        "limit: COPY BINARY straight into the shards",
        copy_rate,
        "rows/s",
        None,
    );
    report(
        "ingest drain",
        rate,
        "rows/s",
        Some(("the lower limit", lower)),
    );
    report(
        "ingest drain vs broker-only",
        rate,
        "rows/s",
        Some(("broker-only", broker_rate)),
    );
    report(
        "ingest drain vs COPY-only",
        rate,
        "rows/s",
        Some(("COPY-only", copy_rate)),
    );
    report(
        "ingest drain vs the shared-CPU ceiling",
        rate,
        "rows/s",
        Some(("the ceiling", ceiling)),
    );
    report(
        "ingest CPU per row",
        cpu / data.readings as f64 * 1e6,
        "CPU-µs",
        Some(("the 1 µs target", 1.0)),
    );
    report(
        "ingest CPU per million rows",
        cpu / data.readings as f64 * 1e6,
        "CPU-s",
        None,
    );
    report(
        "ingest peak RSS",
        rss as f64 / (1 << 20) as f64,
        "MiB",
        Some(("the memory cap", (setup.memory_cap >> 20) as f64)),
    );
    dbs.drop_all().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// Rows/s of a bare consumer group reading the whole topic.
async fn broker_only_rate(stack: &Stack, topic: &str, records: usize, readings: i64) -> f64 {
    let consumer: StreamConsumer =
        vitalsink_tests::reader_config(&stack.brokers, &unique("bench-broker"))
            .create()
            .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut first = None;
    let mut bytes = 0usize;
    for _ in 0..records {
        let m = consumer.recv().await.unwrap();
        first.get_or_insert_with(Instant::now);
        bytes += m.payload().map_or(0, <[u8]>::len);
    }
    let secs = first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(f64::NAN);
    println!(
        "broker-only: {records} records ({} MiB) in {secs:.2} s",
        bytes >> 20
    );
    readings as f64 / secs
}

/// Rows/s of COPY BINARY of the decoded rows into fresh hypertables, one connection per shard,
/// and the machine's busy CPU-µs per row meanwhile (the shards' cost of a row).
async fn copy_only_rate(stack: &Stack, data: &vitalsink_tests::dataset::Dataset) -> (f64, f64) {
    let dbs = ShardDbs::create(stack, "b_copy").await;
    let router = ShardRouter::new(dbs.shards.len());
    let mut per_shard = vec![Vec::new(); dbs.shards.len()];
    let now = chrono::Utc::now().timestamp_micros();
    for r in &data.records {
        let readings = decode(&r.payload, &Limits::default(), now).unwrap();
        per_shard[router.shard_for(&readings[0].participant_id)].extend(readings);
    }
    // Encoded before the clock starts: this limit is what the shards alone can take.
    let per_shard: Vec<Vec<bytes::Bytes>> = per_shard
        .iter()
        .map(|rows| {
            rows.chunks(BATCH_ROWS)
                .map(|chunk| {
                    let mut buf = bytes::BytesMut::new();
                    chunk.iter().for_each(|r| encode_reading(&mut buf, r));
                    buf.freeze()
                })
                .collect()
        })
        .collect();
    for s in &dbs.shards {
        let shard = vitalsink_common::db::Shard::new(0, s, &Default::default()).unwrap();
        vitalsink_common::migrate::migrate(&shard, &Default::default())
            .await
            .unwrap();
    }
    let busy0 = machine_busy_seconds().unwrap_or(f64::NAN);
    let t = Instant::now();
    let tasks: Vec<_> = dbs
        .shards
        .iter()
        .zip(per_shard)
        .map(|(s, batches)| {
            let url = s.url.clone();
            tokio::spawn(async move {
                let mut c = connect(&url).await;
                // Same batch size as the ingest run, one transaction per batch.
                for data in batches {
                    let tx = c.transaction().await.unwrap();
                    copy_in(&tx, vec![data]).await.unwrap();
                    tx.commit().await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    let busy = machine_busy_seconds().unwrap_or(f64::NAN) - busy0;
    println!(
        "COPY-only: {} rows in {secs:.2} s; machine CPU {:.0}% of {} cores busy, {:.2} CPU-µs per row",
        data.readings,
        busy / secs / cores() * 100.0,
        cores(),
        busy / data.readings as f64 * 1e6
    );
    dbs.drop_all().await;
    (
        data.readings as f64 / secs,
        busy / data.readings as f64 * 1e6,
    )
}

/// One open connection per shard.
async fn connect_all(
    shards: &[vitalsink_common::config::ShardConfig],
) -> Vec<tokio_postgres::Client> {
    let mut out = Vec::new();
    for s in shards {
        out.push(connect(&s.url).await);
    }
    out
}

/// Rows the shards' `ingest_offsets` say were applied, summed (a few rows, not a scan).
async fn applied_rows(clients: &[tokio_postgres::Client]) -> i64 {
    let mut n = 0;
    for c in clients {
        n += c
            .query_one(
                "SELECT coalesce(sum(rows_applied), 0)::int8 FROM ingest_offsets",
                &[],
            )
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0);
    }
    n
}
