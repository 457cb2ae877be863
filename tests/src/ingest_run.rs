//! Running the real `ingest` binary against the stack, feeding it and checking what it wrote.

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use vitalsink_common::config::ShardConfig;
use vitalsink_common::routing::ShardRouter;

use crate::dataset::{generate, Dataset, Record, Totals, OVERSIZE_LIMIT_BYTES};
use crate::{connect, unique, ShardDbs, Stack};
use vitalsink_common::kafka::ensure_topic;

/// Path of the `ingest` binary cargo built for this test run.
pub fn ingest_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = dir.join("ingest");
    assert!(
        bin.exists(),
        "{} missing: run the tests with `cargo test --workspace` (dev/test)",
        bin.display()
    );
    bin
}

/// One test's ingest set-up: topics, group and a configuration file.
#[derive(Debug, Clone)]
pub struct IngestSetup {
    /// Measurements topic.
    pub topic: String,
    /// Dead-letter topic.
    pub dlq_topic: String,
    /// Consumer group.
    pub group: String,
    /// Shards (fresh databases).
    pub shards: Vec<ShardConfig>,
    /// The configuration file.
    pub config: PathBuf,
    /// Memory cap the worker runs with, bytes.
    pub memory_cap: usize,
}

impl IngestSetup {
    /// Writes a configuration for the stack's broker and `shards`, with unique topics and
    /// group, a 64 MiB memory cap and small (5,000-row) batches, into `dir`.
    pub fn new(stack: &Stack, shards: &[ShardConfig], dir: &std::path::Path) -> Self {
        Self::with_batch_rows(stack, shards, dir, 5_000)
    }

    /// As [`IngestSetup::new`], with batches of up to `batch_max_rows` rows.
    pub fn with_batch_rows(
        stack: &Stack,
        shards: &[ShardConfig],
        dir: &std::path::Path,
        batch_max_rows: usize,
    ) -> Self {
        Self::for_topic(stack, shards, dir, batch_max_rows, unique("measurements"))
    }

    /// As [`IngestSetup::with_batch_rows`], consuming `topic` (e.g. one already loaded) in a
    /// group of its own.
    pub fn for_topic(
        stack: &Stack,
        shards: &[ShardConfig],
        dir: &std::path::Path,
        batch_max_rows: usize,
        topic: String,
    ) -> Self {
        let memory_cap = 64 << 20;
        // Half the memory cap must hold two full batches per shard: 8 MiB batches up to
        // 2 shards, smaller ones for more.
        let batch_bytes = (memory_cap / 4 / shards.len().max(1)).min(8 << 20);
        let s = Self {
            dlq_topic: format!("{topic}.dlq"),
            group: unique("ingest"),
            topic,
            shards: shards.to_vec(),
            config: dir.join(format!("{}.toml", unique("ingest"))),
            memory_cap,
        };
        let mut toml = format!(
            "[kafka]\nbrokers = \"{}\"\ntopic = \"{}\"\ndlq_topic = \"{}\"\ngroup_id = \"{}\"\nsession_timeout = \"6s\"\n\
             [validation]\nmax_message_bytes = {OVERSIZE_LIMIT_BYTES}\n\
             [ingest]\nbatch_max_rows = {batch_max_rows}\nbatch_max_bytes = {batch_bytes}\nbatch_max_age = \"200ms\"\nmemory_cap_bytes = {memory_cap}\n\
             topic_partitions = 6\nretry_initial = \"50ms\"\nretry_max = \"1s\"\nshutdown_deadline = \"20s\"\n\
             [observability]\nlisten = \"127.0.0.1:0\"\n",
            stack.brokers, s.topic, s.dlq_topic, s.group
        );
        for sh in shards {
            toml.push_str(&format!(
                "[[shards]]\nname = \"{}\"\nurl = \"{}\"\n",
                sh.name, sh.url
            ));
        }
        std::fs::write(&s.config, toml).unwrap();
        s
    }

    /// The same topics and group as `other`, over `shards`, with its configuration file in
    /// `dir` (a worker of the same deployment started with another shard list).
    pub fn for_group(other: &IngestSetup, shards: &[ShardConfig], dir: &std::path::Path) -> Self {
        let text = std::fs::read_to_string(&other.config).unwrap();
        let (head, _) = text.split_once("[[shards]]").unwrap();
        // Half the memory cap must hold two full batches per shard: smaller batches for
        // more shards.
        let batch = (other.memory_cap / 4 / shards.len().max(1)).min(8 << 20);
        let mut toml: String = head
            .lines()
            .map(|l| {
                if l.starts_with("batch_max_bytes = ") {
                    format!("batch_max_bytes = {batch}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        for sh in shards {
            toml.push_str(&format!(
                "[[shards]]\nname = \"{}\"\nurl = \"{}\"\n",
                sh.name, sh.url
            ));
        }
        let s = Self {
            shards: shards.to_vec(),
            config: dir.join(format!("{}.toml", unique("ingest"))),
            ..other.clone()
        };
        std::fs::write(&s.config, toml).unwrap();
        s
    }

    /// Sets string keys of table `table` (e.g. `kafka.dlq_properties`) in the configuration
    /// file; once per table.
    pub fn set_table(&self, table: &str, entries: &[(&str, &str)]) {
        let mut toml = std::fs::read_to_string(&self.config).unwrap();
        toml.push_str(&format!("[{table}]\n"));
        for (k, v) in entries {
            toml.push_str(&format!("\"{k}\" = \"{v}\"\n"));
        }
        std::fs::write(&self.config, toml).unwrap();
    }

    /// Starts an ingest worker with this configuration; its log goes to `log`.
    pub fn spawn(&self, log: &std::path::Path) -> Child {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        Command::new(ingest_binary())
            .args(["--config", self.config.to_str().unwrap(), "run"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap()
    }
}

/// Publishes `records` in order; returns each record's (partition, offset).
pub async fn produce(brokers: &str, topic: &str, records: &[Record]) -> Vec<(i32, i64)> {
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("message.max.bytes", "4000000")
        .create()
        .unwrap();
    let mut positions = Vec::with_capacity(records.len());
    for chunk in records.chunks(5_000) {
        let sends = chunk.iter().map(|r| {
            producer.send(
                FutureRecord::to(topic).key(&r.key).payload(&r.payload),
                Duration::from_secs(60),
            )
        });
        for res in futures::future::join_all(sends).await {
            let d = res.map_err(|(e, _)| e).expect("produce");
            positions.push((d.partition, d.offset));
        }
    }
    positions
}

/// Per shard, per participant: (rows, sum of values).
pub async fn shard_totals(shards: &[ShardConfig]) -> Vec<Totals> {
    let mut out = Vec::new();
    for s in shards {
        let c = connect(&s.url).await;
        let rows = c
            .query(
                "SELECT participant_id, count(*), sum(value) FROM measurements GROUP BY 1",
                &[],
            )
            .await
            .unwrap();
        out.push(
            rows.iter()
                .map(|r| {
                    (
                        r.get::<_, String>(0),
                        (r.get::<_, i64>(1), r.get::<_, f64>(2)),
                    )
                })
                .collect(),
        );
    }
    out
}

/// Publishes `records` from a background task (for loads that run while the test acts).
pub fn produce_in_background(
    brokers: &str,
    topic: &str,
    records: &[Record],
) -> tokio::task::JoinHandle<Vec<(i32, i64)>> {
    let (brokers, topic, records) = (brokers.to_string(), topic.to_string(), records.to_vec());
    tokio::spawn(async move { produce(&brokers, &topic, &records).await })
}

/// Rows in all shards together.
pub async fn total_rows(shards: &[ShardConfig]) -> i64 {
    let mut n = 0;
    for s in shards {
        let c = connect(&s.url).await;
        n += c
            .query_one("SELECT count(*) FROM measurements", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0);
    }
    n
}

/// Waits until the shards hold `want` rows in all, up to `limit`; returns what they hold.
pub async fn wait_for_rows(shards: &[ShardConfig], want: i64, limit: Duration) -> i64 {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let n = total_rows(shards).await;
        if n >= want || tokio::time::Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Asserts the database holds exactly `expected`: every participant on the shard routing
/// names, with its exact count and sum, nowhere else, and no row twice.
pub async fn assert_exactly_once(shards: &[ShardConfig], expected: &Totals) {
    let router = ShardRouter::new(shards.len());
    let got = shard_totals(shards).await;
    for (pid, want) in expected {
        let home = router.shard_for(pid);
        assert_eq!(got[home].get(pid), Some(want), "{pid} on its shard {home}");
        for (i, g) in got.iter().enumerate() {
            if i != home {
                assert!(!g.contains_key(pid), "{pid} also on shard {i}");
            }
        }
    }
    let participants: usize = got.iter().map(BTreeMap::len).sum();
    assert_eq!(participants, expected.len(), "no unexpected participants");
    for s in shards {
        let c = connect(&s.url).await;
        let dups: i64 = c
            .query_one(
                "SELECT count(*) FROM (SELECT 1 FROM measurements GROUP BY participant_id, metric, ts HAVING count(*) > 1) d",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(dups, 0, "{}: duplicated readings", s.name);
    }
}

/// One record read back from a dead-letter topic.
#[derive(Debug, Clone)]
pub struct SeenDeadLetter {
    /// Every header, as text.
    pub headers: BTreeMap<String, String>,
    /// The record's value (empty when it had none).
    pub value: Vec<u8>,
}

impl SeenDeadLetter {
    /// Header `k`; panics naming it when missing.
    pub fn header(&self, k: &str) -> &str {
        self.headers
            .get(k)
            .unwrap_or_else(|| panic!("dead letter without header {k}: {:?}", self.headers))
    }
}

/// Reads the dead-letter topic until it holds `want` distinct source records or `limit`
/// passes; returns source (partition, offset) → the dead letter (the last one read, when a
/// record was dead-lettered twice).
pub async fn read_dead_letters(
    brokers: &str,
    dlq_topic: &str,
    want: usize,
    limit: Duration,
) -> BTreeMap<(i32, i64), SeenDeadLetter> {
    let consumer: StreamConsumer = crate::reader_config(brokers, &unique("dlq-reader"))
        .set("fetch.max.bytes", "16777216")
        .create()
        .unwrap();
    consumer.subscribe(&[dlq_topic]).unwrap();
    let mut out = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + limit;
    while out.len() < want {
        let Ok(msg) = tokio::time::timeout_at(deadline, consumer.recv()).await else {
            break;
        };
        let msg = msg.unwrap();
        let headers: BTreeMap<String, String> = msg
            .headers()
            .expect("dead letter without headers")
            .iter()
            .map(|h| {
                (
                    h.key.to_string(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        let seen = SeenDeadLetter {
            headers,
            value: msg.payload().unwrap_or_default().to_vec(),
        };
        let pos = (
            seen.header("vitalsink.source.partition").parse().unwrap(),
            seen.header("vitalsink.source.offset").parse().unwrap(),
        );
        assert!(!seen.header("vitalsink.detail").is_empty());
        out.insert(pos, seen);
    }
    out
}

/// As [`read_dead_letters`], keeping only the reason header of each.
pub async fn dead_letters(
    brokers: &str,
    dlq_topic: &str,
    want: usize,
    limit: Duration,
) -> BTreeMap<(i32, i64), String> {
    read_dead_letters(brokers, dlq_topic, want, limit)
        .await
        .into_iter()
        .map(|(pos, d)| (pos, d.header("vitalsink.reason").to_string()))
        .collect()
}

/// Peak resident set size of a running process, bytes (`VmHWM` in `/proc/PID/status`).
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The data set: 100,000 readings of 1,000 participants in both forms, with over 1%
/// malformed records of 8 kinds.
pub fn dataset() -> Dataset {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let d = generate(1_000, 40, 2, 30, 60, now_ms);
    let bad = d.records.iter().filter(|r| r.rejected.is_some()).count();
    assert!(d.readings >= 100_000 && d.expected.len() >= 1_000);
    assert!(
        bad * 100 >= d.records.len(),
        "at least 1% malformed: {bad} of {}",
        d.records.len()
    );
    d
}

/// Fresh shard databases, topics (6 partitions) and a worker configuration.
pub async fn prepare(stack: &Stack, prefix: &str) -> (ShardDbs, IngestSetup, tempfile::TempDir) {
    let dbs = ShardDbs::create(stack, prefix).await;
    let dir = tempfile::tempdir().unwrap();
    let setup = IngestSetup::new(stack, &dbs.shards, dir.path());
    ensure_topic(&stack.kafka(), &setup.topic, 6).await.unwrap();
    ensure_topic(&stack.kafka(), &setup.dlq_topic, 6)
        .await
        .unwrap();
    (dbs, setup, dir)
}

/// [`prepare`], then the data set written by one worker, stopped with SIGTERM (so
/// every shard is at the same offsets): what the shard-map and reshard tests start from.
pub async fn loaded(
    stack: &Stack,
    prefix: &str,
) -> (ShardDbs, IngestSetup, tempfile::TempDir, Dataset) {
    let (dbs, setup, dir) = prepare(stack, prefix).await;
    let data = dataset();
    let log = dir.path().join("ingest.log");
    let worker = setup.spawn(&log);
    produce(&stack.brokers, &setup.topic, &data.records).await;
    let n = wait_for_rows(&dbs.shards, data.readings, Duration::from_secs(300)).await;
    assert_eq!(n, data.readings, "{}", log_tail(&log));
    stop_gracefully(worker, &log).await;
    (dbs, setup, dir, data)
}

/// A fresh database on the stack's last server, as one more shard named `shard<n>`.
pub async fn extra_shard(stack: &Stack, n: usize) -> ShardConfig {
    let name = unique("t_extra");
    let url = stack.shard_urls.last().unwrap();
    connect(url)
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    ShardConfig {
        name: format!("shard{n}"),
        url: format!("{} dbname={name}", url.replace("dbname=vitalsink", "")),
        replicas: Vec::new(),
    }
}

/// Checks the dead-letter topic holds every malformed record, with its reason.
pub async fn assert_dead_letters(
    stack: &Stack,
    setup: &IngestSetup,
    data: &Dataset,
    positions: &[(i32, i64)],
) {
    let want: BTreeMap<(i32, i64), String> = data
        .records
        .iter()
        .zip(positions)
        .filter_map(|(r, pos)| r.rejected.map(|why| (*pos, why.code().to_string())))
        .collect();
    let kinds: std::collections::BTreeSet<&String> = want.values().collect();
    assert!(kinds.len() >= 6, "malformed kinds: {kinds:?}");
    let got = dead_letters(
        &stack.brokers,
        &setup.dlq_topic,
        want.len(),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(got, want, "dead-letter topic: source position → reason");
}

/// Stops an ingest worker with SIGTERM and asserts it exits 0 (its graceful shutdown);
/// `log` is its log file, shown on failure.
pub async fn stop_gracefully(mut worker: std::process::Child, log: &std::path::Path) {
    let pid = worker.id().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(kill.unwrap().success(), "kill -TERM {pid}");
    let status = tokio::task::spawn_blocking(move || worker.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        log_tail(log)
    );
}

/// The last 40 lines of a worker log, for failure messages.
pub fn log_tail(path: &std::path::Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    s.lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n")
}

/// The address a worker's metrics and health endpoints are bound to, from its log line
/// `metrics and health endpoints up … addr=HOST:PORT`; waits up to 30 s for it.
pub async fn endpoints_addr(log: &std::path::Path) -> String {
    for _ in 0..300 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|l| l.contains("metrics and health endpoints up"))
        {
            let plain = strip_ansi(line);
            let addr = plain
                .split_whitespace()
                .find_map(|w| w.strip_prefix("addr="))
                .unwrap_or_else(|| panic!("no addr= in {line:?}"));
            return addr.to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the worker never logged its endpoints\n{}", log_tail(log));
}

/// `s` without ANSI colour sequences (`ESC [ … m`), as a terminal-less log may still hold.
fn strip_ansi(s: &str) -> String {
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

/// Polls `GET /readyz` on `addr` every 500 ms, at most `tries` times, until it answers
/// `code` with a body containing `needle`; returns that body, or None when it never did.
pub async fn wait_readyz(addr: &str, code: u16, needle: &str, tries: usize) -> Option<String> {
    for _ in 0..tries {
        let (c, body) = http_get(addr, "/readyz").await;
        if c == code && body.contains(needle) {
            return Some(body);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// Waits up to `limit` for `child` to exit by itself; its status, or None.
pub async fn wait_exit(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// `GET path` on `addr` over plain HTTP/1.0: (status code, body).
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad response {head:?}"));
    (status, body.to_string())
}

/// Sum of the samples of Prometheus metric `name` whose labels contain every `label="value"`
/// of `labels`, from a text exposition.
pub fn metric_sum(exposition: &str, name: &str, labels: &[&str]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs `dev/stack` with `args` (e.g. `stop-shard 1`) and asserts it succeeded.
pub fn stack_script(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../dev/stack");
    let st = Command::new(script).args(args).status().unwrap();
    assert!(st.success(), "dev/stack {args:?} failed");
}

/// Per partition, the offset every shard has applied up to: the lowest
/// `ingest_offsets.next_offset` over all the setup's shards, 0 where a shard has no entry yet.
/// The worker resumes from that minimum (`ingest/src/data/offsets.rs`), and shards commit
/// their parts of one batch one after the other: a shard that got no rows of it (an
/// offsets-only batch) may commit before the one that got them, so the highest offset over the
/// shards says nothing about the rows (a CI run once read 0 rows after it).
pub async fn applied_offsets(setup: &IngestSetup) -> BTreeMap<i32, i64> {
    let mut per_shard = Vec::new();
    for s in &setup.shards {
        let c = connect(&s.url).await;
        let rows = c
            .query(
                "SELECT kafka_partition, next_offset FROM ingest_offsets WHERE consumer_group = $1 AND topic = $2",
                &[&setup.group, &setup.topic],
            )
            .await
            .unwrap_or_default();
        per_shard.push(
            rows.iter()
                .map(|r| (r.get::<_, i32>(0), r.get::<_, i64>(1)))
                .collect::<BTreeMap<i32, i64>>(),
        );
    }
    let partitions: std::collections::BTreeSet<i32> =
        per_shard.iter().flat_map(|m| m.keys().copied()).collect();
    partitions
        .into_iter()
        .map(|p| {
            let lowest = per_shard
                .iter()
                .map(|m| m.get(&p).copied().unwrap_or(0))
                .min()
                .unwrap_or(0);
            (p, lowest)
        })
        .collect()
}

/// Waits until the shards have applied at least `next` (per partition, the offset after the
/// last record the caller produced, as its delivery reports gave them). Returns whether it got
/// there within `limit`.
pub async fn wait_applied(setup: &IngestSetup, next: &BTreeMap<i32, i64>, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let applied = applied_offsets(setup).await;
        if next
            .iter()
            .all(|(p, n)| applied.get(p).is_some_and(|a| a >= n))
        {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until the shards have applied every record the topic holds: for each partition,
/// every shard's `ingest_offsets.next_offset` ([`applied_offsets`]) reaches the partition's
/// high watermark. Needed where rows stop growing although records are still consumed (a resend
/// whose readings are all duplicates). The caller has produced records, so a topic the broker
/// does not list yet, or lists with no record (all high watermarks 0, as a broker may answer
/// just after the produce), is not done: metadata and watermarks are read again each round
/// (a CI run once passed the wait with nothing applied). Returns whether it got there within
/// `limit`.
pub async fn wait_consumed(setup: &IngestSetup, brokers: &str, limit: Duration) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = match crate::reader_config(brokers, &crate::unique("wm")).create()
    {
        Ok(c) => c,
        Err(e) => panic!("consumer: {e}"),
    };
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let high: BTreeMap<i32, i64> = consumer
            .fetch_metadata(Some(&setup.topic), Duration::from_secs(10))
            .ok()
            .and_then(|meta| {
                let partitions: Vec<i32> = meta
                    .topics()
                    .first()?
                    .partitions()
                    .iter()
                    .map(|p| p.id())
                    .collect();
                partitions
                    .iter()
                    .map(|&p| {
                        let (_, hi) = consumer
                            .fetch_watermarks(&setup.topic, p, Duration::from_secs(10))
                            .ok()?;
                        Some((p, hi))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let applied = applied_offsets(setup).await;
        let records: i64 = high.values().sum();
        if records > 0
            && high
                .iter()
                .all(|(p, hi)| *hi == 0 || applied.get(p).is_some_and(|a| a >= hi))
        {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
