//! Issue 26, "Withdrawal": a participant is withdrawn while the synthetic replay streams. No
//! reading after the effective time is stored: each one is in the dead-letter topic with
//! reason `withdrawn`. Every earlier one is kept, including after a worker is SIGKILLed
//! around the effective time.
//!
//! The real stack (Tansu, 2 TimescaleDB shards), two real `ingest` workers in one group, the
//! synthetic replay (`vitalsink_replay::run::synthetic`, 1 Hz heart rate of 3 participants,
//! records of 600 samples, paced) and the real command, `trial participants withdraw`. The
//! stream is two days of readings, published day after day: the withdrawal is recorded while
//! the first day streams, with its participant's readings in flight (so the workers' batches
//! decided before it must not commit after it), and takes effect inside the second day, in
//! the middle of a record (which is then partly stored). The worker that consumes the
//! participant's partition is SIGKILLed as the readings around the effective time arrive, and
//! restarted.
//!
//! A second test checks the writer's guard alone ([`vitalsink_ingest::data::writer::apply`]):
//! a batch decided before the withdrawal is not committed after it, it waits for the command's
//! lock, and an unaffected participant's batch commits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message as _};
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use vitalsink_common::config::ShardConfig;
use vitalsink_common::routing::ShardRouter;
use vitalsink_replay::publish::PublishOptions;
use vitalsink_replay::synthetic::{Spec, SynthMetric, DAY_MICROS};
use vitalsink_tests::dataset::OVERSIZE_LIMIT_BYTES;
use vitalsink_tests::ingest_run::{
    endpoints_addr, http_get, ingest_binary, log_tail, metric_sum, prepare, stop_gracefully,
    wait_consumed,
};
use vitalsink_tests::trial_run::trial_binary;
use vitalsink_tests::{connect, Stack};

/// Participants of the stream, `wd-000000` …; the last one is withdrawn (the replay sends each
/// day participant by participant, so its readings stream last, while the workers keep up).
const PARTICIPANTS: u32 = 3;
/// Readings per second the replay publishes.
const RATE: u32 = 20_000;
/// Samples per record.
const BATCH_SAMPLES: usize = 600;
/// The withdrawal's effective time, seconds into the second day: reading 5,833 of the day,
/// inside the record of readings 5,400–5,999 (the readings are 1 s apart from the day's start).
const EFFECTIVE_S: i64 = 5_833;

/// Runs `trial --config CONFIG participants withdraw PARTICIPANT --effective EFFECTIVE` and
/// returns the JSON line it prints.
fn withdraw(config: &Path, participant: &str, effective: &str) -> serde_json::Value {
    let out = std::process::Command::new(trial_binary())
        .arg("--config")
        .arg(config)
        .args([
            "participants",
            "withdraw",
            participant,
            "--effective",
            effective,
            "--reason",
            "participant withdrew consent (test)",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "trial participants withdraw: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("trial printed no JSON line ({e}): {stdout}"))
}

/// One day of 1 Hz heart rate of every participant, ending at `end_at_micros`.
fn day_spec(end_at_micros: i64, seed: u64) -> Spec {
    Spec {
        participants: PARTICIPANTS,
        days: 1,
        metrics: vec![SynthMetric::HeartRate],
        seed,
        end_at_micros,
        prefix: "wd-".into(),
    }
}

/// A participant's readings as (ts µs, value bits), sorted.
type Readings = Vec<(i64, u64)>;

/// Participant `p`'s readings in `specs`, sorted.
fn expected(specs: &[&Spec], p: u32) -> Readings {
    let mut out: Readings = specs
        .iter()
        .flat_map(|s| s.series(p, SynthMetric::HeartRate, 0))
        .map(|(ts, v)| (ts, v.to_bits()))
        .collect();
    out.sort_unstable();
    out
}

/// Per shard, `participant`'s stored readings, each sorted.
async fn stored(shards: &[ShardConfig], participant: &str) -> Vec<Readings> {
    let mut out = Vec::new();
    for s in shards {
        let c = connect(&s.url).await;
        let rows = c
            .query(
                "SELECT (extract(epoch FROM ts) * 1000000)::int8, value FROM measurements
                  WHERE participant_id = $1 ORDER BY 1, 2",
                &[&participant],
            )
            .await
            .unwrap();
        out.push(
            rows.iter()
                .map(|r| (r.get::<_, i64>(0), r.get::<_, f64>(1).to_bits()))
                .collect(),
        );
    }
    out
}

/// Rows of `participant` with `ts` at or after `from_micros`, over the shards.
async fn rows_from(shards: &[ShardConfig], participant: &str, from_micros: i64) -> i64 {
    let from = chrono::DateTime::from_timestamp_micros(from_micros).unwrap();
    let mut n = 0;
    for s in shards {
        let c = connect(&s.url).await;
        n += c
            .query_one(
                "SELECT count(*) FROM measurements WHERE participant_id = $1 AND ts >= $2",
                &[&participant, &from],
            )
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0);
    }
    n
}

/// Waits up to `limit` until `participant` has a row at or after `from_micros`.
async fn wait_rows_from(
    shards: &[ShardConfig],
    participant: &str,
    from_micros: i64,
    limit: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if rows_from(shards, participant, from_micros).await > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The Kafka partition `participant`'s records are in (read from a stored row's lineage).
async fn partition_of(shards: &[ShardConfig], participant: &str) -> i32 {
    for s in shards {
        let c = connect(&s.url).await;
        if let Some(r) = c
            .query_opt(
                "SELECT src_partition FROM measurements WHERE participant_id = $1 LIMIT 1",
                &[&participant],
            )
            .await
            .unwrap()
        {
            return r.get(0);
        }
    }
    panic!("no row of {participant} stored");
}

/// `s` without ANSI colour sequences.
fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The partitions a worker holds now, from its log: those assigned after its last revocation.
fn owned_partitions(log: &Path) -> Vec<i32> {
    let text = plain(&std::fs::read_to_string(log).unwrap_or_default());
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .rposition(|l| l.contains("partitions revoked"))
        .map_or(0, |i| i + 1);
    lines[start..]
        .iter()
        .filter(|l| l.contains("partition assigned"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("partition="))
                .and_then(|p| p.parse().ok())
        })
        .collect()
}

/// A metric of the worker logging to `log`, summed over its labels matching `labels`.
async fn worker_metric(log: &Path, name: &str, labels: &[&str]) -> f64 {
    let addr = endpoints_addr(log).await;
    let (status, body) = http_get(&addr, "/metrics").await;
    assert_eq!(status, 200);
    metric_sum(&body, name, labels)
}

/// One dead letter: its headers and value.
#[derive(Debug)]
struct Letter {
    headers: BTreeMap<String, String>,
    value: Vec<u8>,
}

/// Every record of `topic`, up to the high watermarks read now.
async fn all_records(brokers: &str, topic: &str) -> Vec<Letter> {
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer =
            vitalsink_tests::reader_config(&brokers, &vitalsink_tests::unique("dlq-all"))
                .create()
                .unwrap();
        let meta = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .unwrap();
        let partitions: Vec<i32> = meta.topics()[0]
            .partitions()
            .iter()
            .map(|p| p.id())
            .collect();
        let mut high = BTreeMap::new();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for &p in &partitions {
            let (_, hi) = consumer
                .fetch_watermarks(&topic, p, Duration::from_secs(10))
                .unwrap();
            if hi > 0 {
                high.insert(p, hi);
                tpl.add_partition_offset(&topic, p, rdkafka::Offset::Beginning)
                    .unwrap();
            }
        }
        let mut out = Vec::new();
        if high.is_empty() {
            return out;
        }
        consumer.assign(&tpl).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let mut next: BTreeMap<i32, i64> = high.keys().map(|&p| (p, 0)).collect();
        while next.iter().any(|(p, n)| *n < high[p]) {
            assert!(
                std::time::Instant::now() < deadline,
                "dead-letter topic not read to its end: at {next:?} of {high:?}"
            );
            let Some(m) = consumer.poll(Duration::from_millis(500)) else {
                continue;
            };
            let m = m.unwrap();
            next.insert(m.partition(), m.offset() + 1);
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Letter {
                headers,
                value: m.payload().unwrap_or_default().to_vec(),
            });
        }
        out
    })
    .await
    .unwrap()
}

/// The participant and the readings (ts µs, value bits) of a batch record value.
fn record_readings(value: &[u8]) -> (String, Readings) {
    let v: serde_json::Value = serde_json::from_slice(value).unwrap();
    let ts = |s: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(s.as_str().unwrap())
            .unwrap()
            .timestamp_micros()
    };
    let readings = match v["samples"].as_array() {
        Some(samples) => samples
            .iter()
            .map(|s| (ts(&s["ts"]), s["value"].as_f64().unwrap().to_bits()))
            .collect(),
        None => vec![(ts(&v["ts"]), v["value"].as_f64().unwrap().to_bits())],
    };
    (v["participant_id"].as_str().unwrap().to_string(), readings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_during_the_replay_stores_nothing_after_it_and_keeps_everything_before() {
    let _stack = vitalsink_tests::stack_lock::exclusive().await;
    let stack = Stack::from_env();
    let (dbs, setup, dir) = prepare(&stack, "t_withdraw").await;
    let logs: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("ingest{i}.log")))
        .collect();
    let mut workers: Vec<_> = logs.iter().map(|l| setup.spawn(l)).collect();

    // Two consecutive days ending at the last whole minute: A streams first, B after the
    // withdrawal has been recorded.
    let now = chrono::Utc::now().timestamp_micros();
    let end = now - now.rem_euclid(60_000_000);
    let spec_a = day_spec(end - DAY_MICROS, 1);
    let spec_b = day_spec(end, 2);
    let withdrawn_index = PARTICIPANTS - 1;
    let withdrawn = spec_a.participant_id(withdrawn_index);
    let effective_us = spec_b.start_micros() + EFFECTIVE_S * 1_000_000;
    let effective = chrono::DateTime::from_timestamp_micros(effective_us)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);

    let kafka = vitalsink_common::config::KafkaConfig {
        topic: setup.topic.clone(),
        ..stack.kafka()
    };
    let opts = PublishOptions {
        topic: setup.topic.clone(),
        batch_samples: BATCH_SAMPLES,
        max_message_bytes: OVERSIZE_LIMIT_BYTES,
        rate: NonZeroU32::new(RATE),
        in_flight: 64,
    };
    let replay = |spec: Spec| {
        let (kafka, opts) = (kafka.clone(), opts.clone());
        tokio::spawn(async move {
            vitalsink_replay::run::synthetic(&spec, &kafka, opts)
                .await
                .unwrap()
        })
    };
    let day_a = replay(spec_a.clone());

    // The withdrawn participant's first-day readings are being stored: withdraw now.
    assert!(
        wait_rows_from(&dbs.shards, &withdrawn, 0, Duration::from_secs(180)).await,
        "{withdrawn}'s readings never landed\n{}",
        log_tail(&logs[0])
    );
    let out = withdraw(&setup.config, &withdrawn, &effective);
    let returned = std::time::Instant::now();
    let seq = out["status_seq"]
        .as_i64()
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(out["participant"], withdrawn.as_str(), "{out}");
    assert_eq!(
        out["stored_at_or_after_effective"].as_i64(),
        Some(0),
        "nothing of the second day was published yet: {out}"
    );
    let in_flight = !day_a.is_finished();
    let day_b = replay(spec_b.clone());

    // Both workers decide by the withdrawal within the refresh interval (1 s) and a read.
    let mut behind = logs.clone();
    while !behind.is_empty() && returned.elapsed() < Duration::from_secs(10) {
        let mut still = Vec::new();
        for l in behind {
            for shard in ["shard0", "shard1"] {
                let label = format!("shard=\"{shard}\"");
                if worker_metric(&l, "vitalsink_ingest_statuses_version", &[&label]).await as i64
                    != seq
                {
                    still.push(l.clone());
                    break;
                }
            }
        }
        behind = still;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let followed = returned.elapsed();
    assert!(
        behind.is_empty() && followed < Duration::from_millis(2_500),
        "workers deciding by the withdrawal {followed:?} after the command returned; still \
         behind: {behind:?}"
    );

    // Batches decided before the withdrawal and committed after it are refused (stale) and
    // consumed again (rewinds): how many depends on the refresh's timing, so they are
    // reported, not asserted (the guard test below asserts the refusal). Read before any
    // worker is killed.
    let (mut stale, mut rewinds) = (0.0, 0.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for l in &logs {
        stale += worker_metric(l, "vitalsink_ingest_stale_batches_total", &[]).await;
        rewinds += worker_metric(l, "vitalsink_ingest_rewinds_total", &[]).await;
    }

    // SIGKILL the worker that consumes the participant's partition as its readings around the
    // effective time arrive, and restart it.
    let partition = partition_of(&dbs.shards, &withdrawn).await;
    assert!(
        wait_rows_from(
            &dbs.shards,
            &withdrawn,
            spec_b.start_micros(),
            Duration::from_secs(180)
        )
        .await,
        "{withdrawn}'s second-day readings never landed\n{}",
        log_tail(&logs[0])
    );
    let victim = logs
        .iter()
        .position(|l| owned_partitions(l).contains(&partition))
        .unwrap_or_else(|| {
            panic!(
                "no worker's log says it holds partition {partition}: {:?}",
                logs.iter().map(|l| owned_partitions(l)).collect::<Vec<_>>()
            )
        });
    let wait_ms = rand::random_range(0..400);
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    workers[victim].kill().unwrap(); // SIGKILL
    workers[victim].wait().unwrap();
    let stored_at_kill = rows_from(&dbs.shards, &withdrawn, spec_b.start_micros()).await;
    let restarted = dir.path().join(format!("ingest{victim}-restarted.log"));
    workers[victim] = setup.spawn(&restarted);

    let truth_a = day_a.await.unwrap();
    let truth_b = day_b.await.unwrap();
    let total = u64::from(PARTICIPANTS) * 86_400;
    assert_eq!((truth_a.rows, truth_b.rows), (total, total));
    let live_logs = [logs[1 - victim].clone(), restarted.clone()];
    assert!(
        wait_consumed(&setup, &stack.brokers, Duration::from_secs(600)).await,
        "the replay consumed\n{}\n{}",
        log_tail(&live_logs[0]),
        log_tail(&live_logs[1])
    );
    // Both running workers decide by the withdrawal (the restarted one read it at start).
    for l in &live_logs {
        for shard in ["shard0", "shard1"] {
            let v = worker_metric(
                l,
                "vitalsink_ingest_statuses_version",
                &[&format!("shard=\"{shard}\"")],
            )
            .await;
            assert_eq!(v as i64, seq, "{}: {shard}'s version", l.display());
        }
    }
    for (w, l) in workers.into_iter().zip([&logs[0], &logs[1]]) {
        let l = if l == &logs[victim] { &restarted } else { l };
        stop_gracefully(w, l).await;
    }

    // The database: every reading of the others; the withdrawn participant's readings before
    // the effective time, each once, on its shard; none from it on.
    let router = ShardRouter::new(dbs.shards.len());
    for p in 0..PARTICIPANTS {
        let id = spec_a.participant_id(p);
        let home = router.shard_for(&id);
        let got = stored(&dbs.shards, &id).await;
        let mut want = expected(&[&spec_a, &spec_b], p);
        if p == withdrawn_index {
            want.retain(|&(ts, _)| ts < effective_us);
        }
        for (i, rows) in got.iter().enumerate() {
            if i != home {
                assert!(rows.is_empty(), "{id} also on shard {i}");
            }
        }
        assert_eq!(got[home].len(), want.len(), "{id}: rows on shard {home}");
        assert!(
            got[home] == want,
            "{id}: the stored readings are not the expected ones"
        );
    }

    // The dead-letter topic: only the withdrawn participant's records, reason `withdrawn`,
    // holding exactly the readings from the effective time on (a record dead-lettered twice,
    // by a worker killed before it recorded its progress, counts once: deduplicated by the
    // source headers, as schemas/README.md says).
    let letters = all_records(&stack.brokers, &setup.dlq_topic).await;
    let mut by_source: BTreeMap<(String, String), &Letter> = BTreeMap::new();
    for l in &letters {
        assert_eq!(
            l.headers.get("vitalsink.reason").map(String::as_str),
            Some("withdrawn"),
            "{:?}",
            l.headers
        );
        let detail = &l.headers["vitalsink.detail"];
        assert!(
            detail.contains(&format!("participant {withdrawn} withdrawn")),
            "{detail}"
        );
        assert_eq!(l.headers["vitalsink.source.topic"], setup.topic);
        assert_eq!(l.headers["vitalsink.truncated"], "false");
        by_source.insert(
            (
                l.headers["vitalsink.source.partition"].clone(),
                l.headers["vitalsink.source.offset"].clone(),
            ),
            l,
        );
    }
    let mut refused: Readings = Vec::new();
    let mut split = 0;
    for l in by_source.values() {
        let (participant, readings) = record_readings(&l.value);
        assert_eq!(participant, withdrawn);
        let before = readings.iter().filter(|r| r.0 < effective_us).count();
        if before > 0 {
            split += 1;
            assert!(
                l.headers["vitalsink.detail"].contains(&format!("the other {before} stored")),
                "{:?}",
                l.headers
            );
        }
        refused.extend(readings.into_iter().filter(|r| r.0 >= effective_us));
    }
    refused.sort_unstable();
    let mut want_refused = expected(&[&spec_b], withdrawn_index);
    want_refused.retain(|&(ts, _)| ts >= effective_us);
    assert_eq!(
        refused.len(),
        want_refused.len(),
        "refused readings in the dead-letter topic"
    );
    assert!(
        refused == want_refused,
        "the dead letters hold other readings than the refused ones"
    );
    assert_eq!(split, 1, "one record straddles the effective time");

    eprintln!(
        "withdrawal seq {seq} recorded with {withdrawn}'s first day in flight: {in_flight}; \
         both workers followed it within {followed:?}; stale batches {stale}, rewinds \
         {rewinds} before the kill; worker {victim} killed {wait_ms} ms after the second \
         day's first rows, with {stored_at_kill} of them stored; {} dead letters for {} \
         records",
        letters.len(),
        by_source.len()
    );
    dbs.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_decided_before_a_withdrawal_is_not_committed_after_it() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    use vitalsink_common::measurement::{Message, Sample};
    use vitalsink_ingest::data::batch::{Batch, Segment};
    use vitalsink_ingest::data::consent::{Consent, Label};
    use vitalsink_ingest::data::copy_format::{encode_message, Source};
    use vitalsink_ingest::data::writer::{apply, batch_offsets, Outcome};

    let stack = Stack::from_env();
    let (dbs, setup, _dir) = prepare(&stack, "t_wdguard").await;
    let st = std::process::Command::new(ingest_binary())
        .args(["--config", setup.config.to_str().unwrap(), "migrate"])
        .env("RUST_LOG", "warn")
        .status()
        .unwrap();
    assert!(st.success(), "ingest migrate");
    let db = vitalsink_common::config::DatabaseConfig::default();
    let shards: Vec<vitalsink_common::db::Shard> = dbs
        .shards
        .iter()
        .enumerate()
        .map(|(i, c)| vitalsink_common::db::Shard::new(i, c, &db).unwrap())
        .collect();
    let router = ShardRouter::new(shards.len());
    // Two participants on the same shard.
    let p = "guard-p";
    let q = (0..)
        .map(|i| format!("guard-q{i}"))
        .find(|q| router.shard_for(q) == router.shard_for(p))
        .unwrap();
    let shard = &shards[router.shard_for(p)];
    let before = shard.client().await.unwrap();
    let v0 = Arc::new(Consent::load(&**before).await.unwrap());
    drop(before);
    assert_eq!(v0.version(), 0);

    let t0 = chrono::Utc::now().timestamp_micros() - 3_600_000_000;
    let effective = t0 + 10_000_000;
    // A batch of one record per participant (10 readings, 1 s apart, from t0) at partition 0.
    let batch = |who: &str, offset: i64, label: Label, samples: Vec<Sample>| {
        let msg = Message {
            participant_id: who.into(),
            metric: "heart_rate".into(),
            unit: None,
            device_id: None,
            study_id: None,
            samples,
        };
        let mut data = bytes::BytesMut::new();
        encode_message(
            &mut data,
            &msg,
            &Source {
                topic: &setup.topic,
                partition: 0,
                offset,
                received_at_micros: None,
                received_at_type: None,
            },
        );
        let rows = msg.samples.len();
        Batch {
            shard: shard.index,
            segments: vec![Segment {
                partition: 0,
                offset,
                start: 0,
                end: data.len(),
                rows: rows as u32,
            }],
            data: data.freeze(),
            rows,
            progress: [(0, offset + 1)].into(),
            permit: None,
            spares: None,
            label,
        }
    };
    let samples: Vec<Sample> = (0..20)
        .map(|i| Sample {
            ts_micros: t0 + i * 1_000_000,
            value: 60.0 + i as f64,
            utc_offset_min: Some(0),
        })
        .collect();
    let label = |c: &Arc<Consent>, who: &str| {
        let mut l = Label::default();
        l.note(c, who);
        l
    };
    let apply_one = |b: Batch| {
        let shard = shard.clone();
        let (group, topic) = (setup.group.clone(), setup.topic.clone());
        async move {
            let mut c = shard.client().await.unwrap();
            let mut seen = None;
            apply(&mut c, &group, &topic, &b, &batch_offsets(&b), &mut seen)
                .await
                .unwrap()
        }
    };
    let rows = |who: String| {
        let url = dbs.shards[shard.index].url.clone();
        async move {
            connect(&url)
                .await
                .query_one(
                    "SELECT count(*) FROM measurements WHERE participant_id = $1",
                    &[&who],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };

    // Decided by version 0: every reading of p stored.
    assert_eq!(v0.split(p, &samples), None);
    let stale_batch = batch(p, 1, label(&v0, p), samples.clone());

    // While a status command holds the lock, the writer waits for it.
    let holder_url = dbs.shards[shard.index].url.clone();
    let mut holder = connect(&holder_url).await;
    let tx = holder.transaction().await.unwrap();
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&vitalsink_common::participants::LOCK_KEY],
    )
    .await
    .unwrap();
    let waiting = tokio::spawn(apply_one(batch(&q, 0, label(&v0, &q), samples.clone())));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !waiting.is_finished(),
        "the writer waits for the exclusive lock"
    );
    tx.rollback().await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the writer goes on once the lock is released")
        .unwrap();
    assert!(
        matches!(done, Outcome::Applied(a) if a.written == 20),
        "{done:?}"
    );

    // The withdrawal is recorded (the real command).
    let eff = chrono::DateTime::from_timestamp_micros(effective)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let out = withdraw(&setup.config, p, &eff);
    let seq = out["status_seq"].as_i64().unwrap();

    // The batch decided before it is not committed: nothing of it (its offset, 1, is above
    // the shard's, so without the check it would be written).
    let got = apply_one(stale_batch).await;
    let table = match got {
        Outcome::Stale(t) => t,
        other => panic!("a batch decided by version 0 committed after the withdrawal: {other:?}"),
    };
    assert_eq!(table.version(), seq);
    assert_eq!(
        rows(p.to_string()).await,
        0,
        "nothing of the stale batch stored"
    );

    // An unaffected participant's batch decided by version 0 still commits.
    let later: Vec<Sample> = samples
        .iter()
        .map(|s| Sample {
            ts_micros: s.ts_micros + 60_000_000,
            ..*s
        })
        .collect();
    let other = apply_one(batch(&q, 2, label(&v0, &q), later)).await;
    assert!(
        matches!(other, Outcome::Applied(a) if a.written == 20),
        "{other:?}"
    );

    // Decided again by the table the writer read: the readings before the effective time.
    let split = table.split(p, &samples).expect("readings refused");
    assert_eq!(split.kept.len(), 10);
    assert_eq!(split.refused.len(), 10);
    let fresh = apply_one(batch(p, 3, label(&table, p), split.kept)).await;
    assert!(
        matches!(fresh, Outcome::Applied(a) if a.written == 10),
        "{fresh:?}"
    );
    assert_eq!(rows(p.to_string()).await, 10);
    dbs.drop_all().await;
}
