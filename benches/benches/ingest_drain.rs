//! Ingest drain benchmark (issue 3): a pre-loaded topic of 2,000,000 readings drained by the
//! release `ingest` binary into 2 shards, against two limits measured in the same run:
//! - broker-only: the same topic consumed by a bare rdkafka consumer configured as the
//!   worker's (same fetch sizes), no decoding, no writes;
//! - COPY-only: the rows the drain wrote, read back from the shards in the order they were
//!   written (per chunk; see `stored_rows`) and `COPY … BINARY`'d again, encoded beforehand,
//!   into fresh hypertables of the same shards, one connection per shard in parallel, in
//!   transactions of the worker's batch size. Why the drain's own order: the order matters to
//!   the shards. The data set is generated sorted by participant, which makes every insert an
//!   append at the right edge of the `(participant_id, ts)` index; a consumer of a partitioned
//!   topic receives the partitions interleaved, and copying the rows in the order one such
//!   consumer received them cost the shards 0–17 % more CPU than participant order. The
//!   participant-sorted COPY is still printed, for reference.
//!
//! Everything is measured twice, with the processes placed two ways:
//! 1. as the local stack runs them: shards, broker, worker and this benchmark on all cores;
//! 2. with the shards pinned to one half of the cores and everything else to the other half
//!    ([`vitalsink_benches::placement`]), as when the database nodes are machines of their
//!    own. Here the COPY-only limit and the drain get the same CPU for the shards.
//!
//! Timing starts when the first message (limits) or first row (ingest) arrives, so the
//! consumer-group join (seconds on Tansu) is not counted; the ingest figure also leaves out
//! its first batch (at most `batch_max_age`). Run with `dev/bench` (needs `dev/stack up` and
//! the release binaries).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use bytes::Bytes;
use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use std::time::{Duration, Instant};
use vitalsink_benches::placement::{parent, CoreSplit};
use vitalsink_benches::{
    applied_rows, connect_all, cores, cpu_seconds, cpu_seconds_matching, machine_busy_seconds,
    pids_matching, report,
};
use vitalsink_common::kafka::ensure_topic;
use vitalsink_common::measurement::{decode, Limits};
use vitalsink_common::routing::ShardRouter;
use vitalsink_ingest::data::copy_format::{copy_in, encode_reading};
use vitalsink_tests::dataset::{generate, Dataset};
use vitalsink_tests::ingest_run::{peak_rss_bytes, produce, total_rows, IngestSetup};
use vitalsink_tests::{connect, unique, ShardDbs, Stack};

const PARTITIONS: i32 = 6;
/// Rows per batch, for the ingest worker (`ingest.batch_max_rows`, its default) and the
/// COPY-only limit alike.
const BATCH_ROWS: usize = 20_000;
/// How the broker's processes are recognised (for its CPU time and its placement).
const BROKER: &str = "tansu broker";

#[tokio::main]
async fn main() {
    let stack = Stack::from_env();
    let cores = cores();
    let now_ms = chrono::Utc::now().timestamp_millis();
    // 1,000 participants × (500 single readings + 15 batches of 100 samples) = 2,000,000.
    let data = generate(1_000, 500, 15, 100, 0, now_ms);
    println!(
        "data set: {} readings in {} records",
        data.readings,
        data.records.len()
    );
    let topic = unique("measurements");
    for t in [topic.clone(), format!("{topic}.dlq")] {
        ensure_topic(&stack.kafka(), &t, PARTITIONS).await.unwrap();
    }
    let t = Instant::now();
    produce(&stack.brokers, &topic, &data.records).await;
    println!("pre-loaded the topic in {:.1} s", t.elapsed().as_secs_f64());

    println!();
    println!("== 1. shards, broker and worker on all {cores} cores");
    let shared = median_of(&stack, &data, &topic).await;
    println!();
    shared.print();
    shared.print_ceiling(cores);

    let postmasters = postmasters(&stack).await;
    let mut others = pids_matching(BROKER);
    others.push(std::process::id());
    let Some(split) = CoreSplit::apply(cores as usize, postmasters, others) else {
        println!("(placement 2 needs at least 2 cores)");
        return;
    };
    println!();
    println!(
        "== 2. shards on core(s) {}; broker, worker and this benchmark on core(s) {}",
        split.shard_cores, split.other_cores
    );
    let run = median_of(&stack, &data, &topic).await;
    drop(split); // every process gets all cores back
    println!();
    run.print();
}

/// Repetitions of each placement's measurement; the run with the median ratio is reported.
/// Single runs on a 2-core VM swing by several percent (the same COPY-only limit has taken
/// 3.4 to 6.1 machine CPU-µs per row in different runs).
const REPEATS: usize = 3;

/// [`measure`] `REPEATS` times: every run's ratio to the lower limit, then the median run.
async fn median_of(stack: &Stack, data: &Dataset, topic: &str) -> Run {
    let mut runs = Vec::with_capacity(REPEATS);
    for _ in 0..REPEATS {
        runs.push(measure(stack, data, topic).await);
    }
    runs.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
    let ratios: Vec<String> = runs.iter().map(|r| format!("{:.2}×", r.ratio())).collect();
    let most = |f: fn(&Run) -> f64| runs.iter().map(f).fold(f64::NAN, f64::max);
    println!(
        "ingest drain / lower limit in {REPEATS} runs: {}; highest peak RSS {:.1} MiB, highest worker CPU {:.2} µs per row; the median run:",
        ratios.join(", "),
        most(|r| r.rss_mib),
        most(|r| r.worker_cpu_per_row),
    );
    runs.swap_remove(REPEATS / 2)
}

/// The figures of one placement.
struct Run {
    broker_rate: f64,
    copy_rate: f64,
    /// COPY-only with the rows in the data set's (participant) order, for reference.
    sorted_rate: f64,
    /// Machine CPU-µs per row during the COPY-only limit (the shards' cost of a row).
    copy_cpu_per_row: f64,
    rate: f64,
    /// CPU-µs per row of the ingest process and of the broker during the drain.
    worker_cpu_per_row: f64,
    broker_cpu_per_row: f64,
    rss_mib: f64,
    cap_mib: f64,
    /// The same drain into shards without the reading rule (schema 11's index instead of the
    /// unique `measurements_reading`): what the rule costs.
    rule_off_rate: f64,
}

impl Run {
    /// The drain's rate over the lower limit's.
    fn ratio(&self) -> f64 {
        self.rate / self.broker_rate.min(self.copy_rate)
    }

    fn print(&self) {
        let lower = self.broker_rate.min(self.copy_rate);
        report(
            "limit: broker-only consume",
            self.broker_rate,
            "rows/s",
            None,
        );
        report(
            "limit: COPY BINARY straight into the shards",
            self.copy_rate,
            "rows/s",
            None,
        );
        report(
            "(not a limit) the same in participant order",
            self.sorted_rate,
            "rows/s",
            Some(("COPY in the drain's order", self.copy_rate)),
        );
        report(
            "ingest drain",
            self.rate,
            "rows/s",
            Some(("the lower limit", lower)),
        );
        report(
            "ingest drain vs broker-only",
            self.rate,
            "rows/s",
            Some(("broker-only", self.broker_rate)),
        );
        report(
            "ingest drain vs COPY-only",
            self.rate,
            "rows/s",
            Some(("COPY-only", self.copy_rate)),
        );
        report(
            "ingest drain with the reading rule vs without it (issue 25)",
            self.rate,
            "rows/s",
            Some(("the drain without the rule", self.rule_off_rate)),
        );
        report(
            "ingest CPU per row",
            self.worker_cpu_per_row,
            "CPU-µs",
            Some(("the 1 µs target", 1.0)),
        );
        report(
            "ingest CPU per million rows",
            self.worker_cpu_per_row,
            "CPU-s",
            None,
        );
        report(
            "ingest peak RSS",
            self.rss_mib,
            "MiB",
            Some(("the memory cap", self.cap_mib)),
        );
    }

    /// The CPU account of a shared placement: the shards, the broker and the worker share
    /// the cores, while the COPY-only limit had every core for the shards alone. Taking the
    /// shards' CPU per row from the COPY-only run, the drain cannot beat
    /// cores / (shards + broker + worker CPU per row).
    fn print_ceiling(&self, cores: f64) {
        let (w, br) = (self.worker_cpu_per_row, self.broker_cpu_per_row);
        let ceiling = cores / (self.copy_cpu_per_row + br + w) * 1e6;
        println!(
            "CPU per row: shards {:.2} µs (COPY-only run), broker {br:.2} µs, worker {w:.2} µs \
             → with {cores} cores shared the drain cannot beat {ceiling:.0} rows/s = {:.2}× COPY-only",
            self.copy_cpu_per_row,
            ceiling / self.copy_rate
        );
        report(
            "ingest drain vs the shared-CPU ceiling",
            self.rate,
            "rows/s",
            Some(("the ceiling", ceiling)),
        );
    }
}

/// The limits and the drain, in fresh databases, with the processes placed as they are now.
async fn measure(stack: &Stack, data: &Dataset, topic: &str) -> Run {
    let dbs = ShardDbs::create(stack, "b_ingest").await;
    let dir = std::env::temp_dir().join(unique("bench"));
    std::fs::create_dir_all(&dir).unwrap();
    let setup = IngestSetup::for_topic(stack, &dbs.shards, &dir, BATCH_ROWS, topic.to_string());
    let worker_cfg = vitalsink_common::config::Config::load(
        Some(&setup.config),
        &std::collections::BTreeMap::<String, String>::new(),
    )
    .unwrap();
    let broker_rate = broker_only_rate(&worker_cfg, topic, data.records.len(), data.readings).await;
    let (rate, worker_cpu, broker_cpu, rss) = drain(&setup, &dbs, &dir, data).await;
    // The COPY-only limit: the rows the drain wrote, in the order it wrote them.
    let written = stored_rows(&dbs.shards).await;
    dbs.drop_all().await;
    std::fs::remove_dir_all(&dir).ok();
    let rule_off_rate = drain_without_rule(stack, data, topic).await;
    let (copy_rate, copy_cpu_per_row) =
        copy_only_rate(stack, written, data.readings, "in the drain's order").await;
    let (sorted_rate, _) = copy_only_rate(
        stack,
        in_data_set_order(data, setup.shards.len()),
        data.readings,
        "in participant order",
    )
    .await;
    let per_row = |s: f64| s / data.readings as f64 * 1e6;
    Run {
        broker_rate,
        copy_rate,
        sorted_rate,
        copy_cpu_per_row,
        rate,
        worker_cpu_per_row: per_row(worker_cpu),
        broker_cpu_per_row: per_row(broker_cpu),
        rss_mib: rss as f64 / (1 << 20) as f64,
        cap_mib: (setup.memory_cap >> 20) as f64,
        rule_off_rate,
    }
}

/// The drain as it was before each reading was kept once (issue 25): the same topic into
/// fresh shards whose hypertable has schema 11's `(participant_id, ts DESC)` index instead of
/// the unique reading index `measurements_reading`. Rows/s.
async fn drain_without_rule(stack: &Stack, data: &Dataset, topic: &str) -> f64 {
    let dbs = ShardDbs::create(stack, "b_ingest_norule").await;
    let dir = std::env::temp_dir().join(unique("bench"));
    std::fs::create_dir_all(&dir).unwrap();
    let setup = IngestSetup::for_topic(stack, &dbs.shards, &dir, BATCH_ROWS, topic.to_string());
    let migrated = std::process::Command::new(vitalsink_benches::release_binary("ingest"))
        .args(["--config", setup.config.to_str().unwrap(), "migrate"])
        .status()
        .unwrap();
    assert!(migrated.success(), "ingest migrate");
    for s in &dbs.shards {
        connect(&s.url)
            .await
            .batch_execute(
                "DROP INDEX measurements_reading;
                 CREATE INDEX measurements_participant_ts ON measurements (participant_id, ts DESC)",
            )
            .await
            .unwrap();
    }
    let (rate, ..) = drain(&setup, &dbs, &dir, data).await;
    dbs.drop_all().await;
    std::fs::remove_dir_all(&dir).ok();
    rate
}

/// Runs the release `ingest` binary on the pre-loaded topic until every reading is in the
/// shards: rows/s, the worker's and the broker's CPU-seconds, the worker's peak RSS (bytes).
async fn drain(
    setup: &IngestSetup,
    dbs: &ShardDbs,
    dir: &std::path::Path,
    data: &Dataset,
) -> (f64, f64, f64, u64) {
    let bin = vitalsink_benches::release_binary("ingest");
    let log = dir.join("ingest.log");
    let mut child = std::process::Command::new(&bin)
        .args(["--config", setup.config.to_str().unwrap(), "run"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut first: Option<Instant> = None;
    let (mut busy_at_first, mut rows_at_first) = (f64::NAN, 0);
    // Progress is polled over one connection per shard held open for the whole drain (a new
    // backend per poll would cost the shards CPU the worker is measured against), from
    // `ingest_offsets.rows_applied` (a few rows), not `count(*)`, which would scan the
    // growing hypertables.
    let pollers: Vec<_> = connect_all(&dbs.shards).await;
    let broker_cpu0 = cpu_seconds_matching(BROKER);
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut n = 0;
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
    let broker_cpu = cpu_seconds_matching(BROKER) - broker_cpu0;
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
    (data.readings as f64 / elapsed, cpu, broker_cpu, rss)
}

/// Each shard's postmaster: the parent of a backend.
async fn postmasters(stack: &Stack) -> Vec<u32> {
    let mut out = Vec::new();
    for url in &stack.shard_urls {
        let c = connect(url).await;
        let backend: i32 = c
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        let pid = u32::try_from(backend).unwrap();
        out.push(parent(pid).expect("a shard backend's parent (same machine)"));
    }
    out
}

/// Rows/s of a bare consumer reading the whole topic, configured as the worker's consumer
/// (`cfg`: same fetch sizes and queue) in a group of its own.
async fn broker_only_rate(
    cfg: &vitalsink_common::config::Config,
    topic: &str,
    records: usize,
    readings: i64,
) -> f64 {
    let consumer: StreamConsumer = vitalsink_ingest::worker::consumer_config(cfg)
        .set("group.id", unique("bench-broker"))
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

/// The rows the shards hold, per shard, as COPY tuples in the order they were written, cut
/// into batches of [`BATCH_ROWS`] rows: by writing transaction (`xmin`, one per batch), then
/// chunk, then `ctid`, which for a fresh heap that only ever got inserts is the insertion
/// order. So every chunk (and its indexes) sees the same sequence of rows again; what is not
/// reproduced is how a batch interleaved its rows between chunks.
async fn stored_rows(shards: &[vitalsink_common::config::ShardConfig]) -> Vec<Vec<Bytes>> {
    let mut out = Vec::new();
    for s in shards {
        let c = connect(&s.url).await;
        let sql = format!(
            "COPY (SELECT {} FROM measurements ORDER BY xmin::text::int8, tableoid, ctid) TO STDOUT (FORMAT binary)",
            columns()
        );
        let stream = c.copy_out(sql.as_str()).await.unwrap();
        futures::pin_mut!(stream);
        let mut all = bytes::BytesMut::new();
        while let Some(part) = stream.next().await {
            all.extend_from_slice(&part.unwrap());
        }
        // A 19-byte header (signature, flags, extension length 0) and a 2-byte trailer.
        assert!(all.starts_with(b"PGCOPY\n\xff\r\n\0") && all.len() >= 21);
        let end = all.len() - 2;
        let tuples = all.freeze().slice(19..end);
        out.push(split_tuples(&tuples, BATCH_ROWS));
    }
    out
}

/// The columns of `copy_format::copy_sql`, in its order.
fn columns() -> String {
    vitalsink_common::columns::column_list()
}

/// Cuts binary COPY tuples into slices of `per_batch` tuples (a tuple: an i16 field count,
/// then per field an i32 length, -1 for NULL, and that many bytes).
fn split_tuples(data: &Bytes, per_batch: usize) -> Vec<Bytes> {
    let be16 = |p: usize| i16::from_be_bytes([data[p], data[p + 1]]);
    let be32 = |p: usize| i32::from_be_bytes([data[p], data[p + 1], data[p + 2], data[p + 3]]);
    let (mut out, mut start, mut pos, mut n) = (Vec::new(), 0, 0, 0);
    while pos < data.len() {
        let fields = be16(pos);
        pos += 2;
        for _ in 0..fields {
            let len = be32(pos);
            pos += 4 + usize::try_from(len).unwrap_or(0);
        }
        n += 1;
        if n == per_batch {
            out.push(data.slice(start..pos));
            (start, n) = (pos, 0);
        }
    }
    if start < pos {
        out.push(data.slice(start..pos));
    }
    out
}

/// The data set's rows per shard in the data set's own order (participant by participant),
/// encoded as COPY tuples in batches of [`BATCH_ROWS`].
fn in_data_set_order(data: &Dataset, shards: usize) -> Vec<Vec<Bytes>> {
    let router = ShardRouter::new(shards);
    let mut per_shard = vec![Vec::new(); shards];
    let now = chrono::Utc::now().timestamp_micros();
    for r in &data.records {
        let readings = decode(&r.payload, &Limits::default(), now).unwrap();
        per_shard[router.shard_for(&readings[0].participant_id)].extend(readings);
    }
    per_shard
        .iter()
        .map(|rows| {
            rows.chunks(BATCH_ROWS)
                .map(|chunk| {
                    let mut buf = bytes::BytesMut::new();
                    chunk.iter().enumerate().for_each(|(i, r)| {
                        let src = vitalsink_ingest::data::copy_format::Source {
                            topic: "measurements",
                            partition: 0,
                            offset: i as i64,
                            received_at_micros: Some(r.ts_micros),
                            received_at_type: Some(0),
                        };
                        encode_reading(&mut buf, r, &src)
                    });
                    buf.freeze()
                })
                .collect()
        })
        .collect()
}

/// Rows/s of COPY BINARY of `per_shard`'s batches (encoded beforehand: this limit is what
/// the shards alone can take) into fresh hypertables, one connection per shard in parallel,
/// one transaction per batch; and the machine's busy CPU-µs per row meanwhile (the shards'
/// cost of a row).
///
/// The order of the rows matters to the shards: rows sorted by participant_id append at the
/// right edge of the `(participant_id, ts)` index (PostgreSQL's B-tree rightmost-leaf fast
/// path), rows as a topic's partitions interleave them land inside it.
async fn copy_only_rate(
    stack: &Stack,
    per_shard: Vec<Vec<Bytes>>,
    rows: i64,
    label: &str,
) -> (f64, f64) {
    let dbs = ShardDbs::create(stack, "b_copy").await;
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
                    copy_in(&tx, "measurements", &[data]).await.unwrap();
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
        "COPY-only {label}: {rows} rows in {secs:.2} s; machine CPU {:.0}% of {} cores busy, {:.2} CPU-µs per row",
        busy / secs / cores() * 100.0,
        cores(),
        busy / rows as f64 * 1e6
    );
    dbs.drop_all().await;
    (rows as f64 / secs, busy / rows as f64 * 1e6)
}
