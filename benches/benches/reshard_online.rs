//! Online shard move benchmark (issue 12): live ingest throughput while `reshard add-shard`
//! runs, as a ratio of the throughput just before it, in the same run, and the longest pause
//! in rows landing — around the cut-over and over the whole move.
//!
//! Set-up: 2 shards already holding 1,000,000 rows of 2,000 participants, and a live load of
//! the same participants' readings (batch records of 60 samples) published at a steady rate
//! (150,000 readings/s, `RESHARD_BENCH_RATE` to change) into a 6-partition topic, consumed by
//! two release `ingest` workers of one group. Rows landing are read from the shards'
//! `ingest_offsets.rows_applied` (written in the same transaction as the rows) every 50 ms.
//! The move is the release `reshard add-shard` with its default copy throttle (64 MiB/s); it
//! moves about a third of the participants' history (the preloaded rows and the live rows
//! that landed before the cut-over). Printed: the rows/s of history moved (copied, verified
//! and deleted, over the whole command), ingest before / during / after the move, and the
//! longest pause in rows landing.
//! Target (issue 12): ingest during the move ≥ 0.7× ingest before it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use rdkafka::producer::{FutureProducer, FutureRecord};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vitalsink_benches::{release_binary, report};
use vitalsink_common::kafka::ensure_topic;
use vitalsink_tests::dataset::generate;
use vitalsink_tests::ingest_run::{extra_shard, IngestSetup};
use vitalsink_tests::{connect, Stack};

const PARTICIPANTS: usize = 2_000;
const HISTORY_PER_PARTICIPANT: i64 = 500;
/// Readings per second of the live load (the same generated records again and again:
/// throughput only); `RESHARD_BENCH_RATE` overrides it.
const RATE: i64 = 150_000;
/// The producer's pacing.
const TICK: Duration = Duration::from_millis(100);
/// Ingest measured after the move.
const AFTER: Duration = Duration::from_secs(5);
/// Ingest measured alone before the move starts, after a warm-up.
const WARM_UP: Duration = Duration::from_secs(6);
const BEFORE: Duration = Duration::from_secs(6);
const SAMPLE: Duration = Duration::from_millis(50);

/// Rows applied on all `shards` for this group (`ingest_offsets.rows_applied`).
async fn applied(clients: &[tokio_postgres::Client], group: &str) -> i64 {
    let mut n = 0;
    for c in clients {
        n += c
            .query_one(
                "SELECT coalesce(sum(rows_applied), 0)::int8 FROM ingest_offsets WHERE consumer_group = $1",
                &[&group],
            )
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0);
    }
    n
}

fn worker(config: &std::path::Path, log: &std::path::Path) -> Child {
    Command::new(release_binary("ingest"))
        .args(["--config", config.to_str().unwrap(), "run"])
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Rows/s between samples at `a` and `b` (seconds since the start).
fn rate(samples: &[(f64, i64)], a: f64, b: f64) -> f64 {
    let at = |t: f64| {
        samples
            .iter()
            .rev()
            .find(|(s, _)| *s <= t)
            .or(samples.first())
            .map_or(0, |s| s.1)
    };
    (at(b) - at(a)) as f64 / (b - a).max(1e-9)
}

/// Longest time between `a` and `b` during which no row landed, seconds.
fn longest_pause(samples: &[(f64, i64)], a: f64, b: f64) -> f64 {
    let mut longest = 0.0f64;
    let mut since = a;
    let mut last = None;
    for &(t, n) in samples.iter().filter(|(t, _)| *t >= a && *t <= b) {
        if last.is_some_and(|l| n > l) {
            longest = longest.max(t - since);
            since = t;
        }
        last = Some(n);
    }
    longest.max(b - since)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let stack = Stack::from_env();
    let rate_live: i64 = std::env::var("RESHARD_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RATE);
    let (dbs, _) = vitalsink_benches::history::load(
        &stack,
        "b_online",
        PARTICIPANTS,
        HISTORY_PER_PARTICIPANT,
        "2 days",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let setup = IngestSetup::with_batch_rows(&stack, &dbs.shards, dir.path(), 20_000);
    ensure_topic(&stack.kafka(), &setup.topic, 6).await.unwrap();
    ensure_topic(&stack.kafka(), &setup.dlq_topic, 6)
        .await
        .unwrap();

    // The live load: the same participants' readings in batch records (60 samples each),
    // published at a steady rate from a background task until the end, as a fleet of
    // devices would.
    let data = generate(
        PARTICIPANTS,
        0,
        4,
        60,
        0,
        chrono::Utc::now().timestamp_millis(),
    );
    let per_record = data.readings as f64 / data.records.len() as f64;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .set("linger.ms", "5")
        .set("message.max.bytes", "4000000")
        .create()
        .unwrap();
    // The workers start first; the load follows while they join the group.
    let w = [
        worker(&setup.config, &dir.path().join("w1.log")),
        worker(&setup.config, &dir.path().join("w2.log")),
    ];
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let published = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let load = {
        let (stop, published, topic) = (stop.clone(), published.clone(), setup.topic.clone());
        let records = data.records.clone();
        let per_tick = ((rate_live as f64 / per_record) * TICK.as_secs_f64()).ceil() as usize;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            let mut next = records.iter().cycle();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let batch: Vec<_> = (&mut next).take(per_tick).collect();
                let sends = batch.iter().map(|r| {
                    producer.send(
                        FutureRecord::to(&topic).key(&r.key).payload(&r.payload),
                        Duration::from_secs(60),
                    )
                });
                for res in futures::future::join_all(sends).await {
                    res.map_err(|(e, _)| e).unwrap();
                }
                published.fetch_add(
                    (per_tick as f64 * per_record) as i64,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        })
    };
    println!(
        "history {} rows on 2 shards; live load {rate_live} readings/s in records of {per_record:.0}",
        PARTICIPANTS as i64 * HISTORY_PER_PARTICIPANT
    );

    // Two workers ingest it; rows landing are sampled every 50 ms.
    // The shard the move adds (empty until then), sampled too.
    let new = extra_shard(&stack, 2).await;
    let t0 = Instant::now();
    let t0_wall = chrono::Utc::now();
    let samples: Arc<Mutex<Vec<(f64, i64)>>> = Arc::default();
    let sampler = {
        let samples = samples.clone();
        let stop = stop.clone();
        let group = setup.group.clone();
        let mut clients = Vec::new();
        for s in dbs.shards.iter().chain([&new]) {
            clients.push(connect(&s.url).await);
        }
        tokio::spawn(async move {
            loop {
                let n = applied(&clients, &group).await;
                samples
                    .lock()
                    .unwrap()
                    .push((t0.elapsed().as_secs_f64(), n));
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                tokio::time::sleep(SAMPLE).await;
            }
        })
    };
    tokio::time::sleep(WARM_UP + BEFORE).await;

    // The move, online.
    let move_start = t0.elapsed().as_secs_f64();
    let out = Command::new(release_binary("reshard"))
        .arg("--config")
        .arg(&setup.config)
        .args([
            "add-shard",
            "--name",
            "shard2",
            "--url",
            &new.url,
            "--reason",
            "benchmark",
        ])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let move_end = t0.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "reshard failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let at = |marker: &str| vitalsink_benches::log_time(&log, marker);
    tokio::time::sleep(AFTER).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();
    sampler.await.unwrap();
    let s = samples.lock().unwrap().clone();
    for mut c in w {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let _ = c.wait();
    }

    let before = rate(&s, WARM_UP.as_secs_f64(), move_start);
    let during = rate(&s, move_start, move_end);
    let moved_rows = r["rows"].as_i64().unwrap_or(0);
    println!(
        "moved {} participants, {moved_rows} rows of history; the move took {:.1} s",
        r["participants"],
        move_end - move_start
    );
    if let (Some(a), Some(b)) = (at("cut-over records published"), at("cut-over reached")) {
        report(
            "cut-over (records published → reached)",
            (b - a).num_milliseconds() as f64,
            "ms",
            None,
        );
    }
    report(
        "reshard online add-shard, history moved",
        moved_rows as f64 / (move_end - move_start),
        "rows/s",
        None,
    );
    report("live load published", rate_live as f64, "readings/s", None);
    report("ingest before the move (2 workers)", before, "rows/s", None);
    report(
        "ingest during the move",
        during,
        "rows/s",
        Some(("ingest before (target ≥ 0.70)", before)),
    );
    report(
        "ingest during the move, against the live load",
        during,
        "rows/s",
        Some(("live load published", rate_live as f64)),
    );
    // The cut-over on the samples' clock (the command logs RFC 3339 wall-clock times), with
    // half a second either side.
    let secs = |t: chrono::DateTime<chrono::FixedOffset>| {
        (t.with_timezone(&chrono::Utc) - t0_wall).num_milliseconds() as f64 / 1000.0
    };
    let cut = at("cut-over records published")
        .zip(at("cut-over reached"))
        .map(|(a, b)| (secs(a) - 0.5, secs(b) + 0.5))
        .unwrap_or((move_start, move_end));
    report(
        "longest pause in rows landing, around the cut-over",
        longest_pause(&s, cut.0.max(move_start), cut.1.min(move_end)) * 1000.0,
        "ms",
        None,
    );
    report(
        "longest pause in rows landing, whole move",
        longest_pause(&s, move_start, move_end) * 1000.0,
        "ms",
        None,
    );
    report(
        "longest pause in rows landing, before the move",
        longest_pause(&s, WARM_UP.as_secs_f64(), move_start) * 1000.0,
        "ms",
        None,
    );
    report(
        "ingest after the move",
        rate(&s, move_end, move_end + AFTER.as_secs_f64()),
        "rows/s",
        Some(("ingest before", before)),
    );
    dbs.drop_all().await;
}
