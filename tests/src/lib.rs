//! Helpers for the end-to-end tests: where the local stack listens and per-test isolation
//! (a fresh database on every shard, unique topic and object prefixes).
//!
//! The stack is the real one started by `dev/stack up`. A test never skips when a service is
//! missing: it fails, naming the service and how to start it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod archive_run;
pub mod backup;
pub mod broker;
pub mod dataset;
pub mod ingest_run;
pub mod pgbouncer;
pub mod query_run;
pub mod replay_run;
pub mod roles;
pub mod routing_reference;
pub mod secure;
pub mod stack_lock;
pub mod trial_lock_run;
pub mod trial_query;
pub mod trial_run;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use vitalsink_common::config::{KafkaConfig, ShardConfig};

/// Endpoints of the local stack, from the `STACK_*` variables `dev/stack env` prints, or the
/// defaults of `dev/stack`.
#[derive(Debug, Clone)]
pub struct Stack {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// libpq connection strings of the shards, in routing order (database `vitalsink`).
    pub shard_urls: Vec<String>,
    /// S3 endpoint URL.
    pub s3_endpoint: String,
    /// Bucket `dev/stack up` creates.
    pub s3_bucket: String,
}

impl Stack {
    /// Reads the endpoints from the environment.
    pub fn from_env() -> Self {
        let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        let urls = var(
            "STACK_SHARD_URLS",
            "host=127.0.0.1 port=15432 user=postgres dbname=vitalsink;host=127.0.0.1 port=15433 user=postgres dbname=vitalsink",
        );
        Self {
            brokers: var("STACK_KAFKA_BROKERS", "127.0.0.1:19092"),
            shard_urls: urls.split(';').map(str::to_string).collect(),
            s3_endpoint: var("STACK_S3_ENDPOINT", "http://127.0.0.1:18333"),
            s3_bucket: var("STACK_S3_BUCKET", "vitalsink"),
        }
    }

    /// A Kafka configuration pointing at the stack's broker, with short group timeouts
    /// (joining a group takes about half the session timeout on Tansu).
    pub fn kafka(&self) -> KafkaConfig {
        KafkaConfig {
            brokers: self.brokers.clone(),
            session_timeout: std::time::Duration::from_secs(6),
            ..KafkaConfig::default()
        }
    }
}

/// A consumer-group reader configuration: from the earliest offset, no auto-commit, short
/// session timeout (joining takes about half of it on Tansu).
pub fn reader_config(brokers: &str, group: &str) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000");
    c
}

/// A name no other test or run uses: `prefix-<pid>-<millis>-<n>`, lower case.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!(
        "{prefix}_{}_{ms}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Chunks of `measurements` on `c`'s database as quoted `schema.name`, oldest first
/// (`timescaledb_information.chunks`).
pub async fn chunks(c: &tokio_postgres::Client) -> Vec<String> {
    c.query(
        "SELECT format('%I.%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks
          WHERE hypertable_name = 'measurements' ORDER BY range_start",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Connects to one of the stack's shards or fails the test with how to start the stack.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    // A libpq multi-host string that asks for the primary (the HA stack's, `STACK_HA=1
    // dev/stack`) may find none for a while: Patroni demotes a primary that cannot renew its
    // leader key and promotes again within its `ttl` (20 s, dev/stack-ha). Such a string is
    // retried that long; any other fails at once.
    let patience = if url.contains("target_session_attrs=read-write") {
        std::time::Duration::from_secs(30)
    } else {
        std::time::Duration::ZERO
    };
    let start = std::time::Instant::now();
    loop {
        match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                return client;
            }
            Err(e) if start.elapsed() < patience => {
                eprintln!("connect: {url:?}: {e}; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => {
                panic!("TimescaleDB shard {url:?} unreachable ({e}); run `dev/stack up`")
            }
        }
    }
}

/// A fresh database on every shard, so that tests do not see each other's rows.
#[derive(Debug)]
pub struct ShardDbs {
    /// Shard configurations pointing at the fresh databases, in routing order.
    pub shards: Vec<ShardConfig>,
    admin_urls: Vec<String>,
    name: String,
}

impl ShardDbs {
    /// Creates database `prefix_<unique>` on every shard of `stack`.
    pub async fn create(stack: &Stack, prefix: &str) -> Self {
        let name = unique(prefix);
        let mut shards = Vec::new();
        for (i, url) in stack.shard_urls.iter().enumerate() {
            let admin = connect(url).await;
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
            shards.push(ShardConfig {
                name: format!("shard{i}"),
                url: format!("{} dbname={name}", url.replace("dbname=vitalsink", "")),
                replicas: Vec::new(),
            });
        }
        Self {
            shards,
            admin_urls: stack.shard_urls.clone(),
            name,
        }
    }

    /// The databases `name` that an earlier [`ShardDbs::create`] left on every shard of
    /// `stack` (a benchmark that failed after its load phase, rerun from there).
    pub fn existing(stack: &Stack, name: &str) -> Self {
        let shards = stack
            .shard_urls
            .iter()
            .enumerate()
            .map(|(i, url)| ShardConfig {
                name: format!("shard{i}"),
                url: format!("{} dbname={name}", url.replace("dbname=vitalsink", "")),
                replicas: Vec::new(),
            })
            .collect();
        Self {
            shards,
            admin_urls: stack.shard_urls.clone(),
            name: name.to_string(),
        }
    }

    /// Drops the databases (call at the end of a passing test; a failing one leaves them for
    /// inspection until `dev/stack reset`).
    pub async fn drop_all(self) {
        for url in &self.admin_urls {
            let admin = connect(url).await;
            admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .await
                .unwrap();
        }
    }
}

/// Runs `cmd` to completion and asserts it succeeded, showing its stderr otherwise.
pub fn run_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
