//! Typed configuration shared by the `ingest` and `archiver` binaries.
//!
//! Sources, later ones winning:
//! 1. built-in defaults ([`Config::default`]);
//! 2. one TOML file (`--config FILE`, env `VITALSINK_CONFIG`), see `dev/vitalsink.example.toml`;
//! 3. environment variables `VITALSINK_<SECTION>__<KEY>`, e.g. `VITALSINK_KAFKA__BROKERS`;
//! 4. the binaries' clap flags (each flag also reads its own env variable).
//!
//! Unknown keys are refused, and [`Config::validate`] checks the values; both name the key.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::measurement::Limits;

mod archive;
pub use archive::ArchiveConfig;
mod load;
mod pooling;
pub use pooling::{Pooling, SessionUse, ARCHIVER_BULK_LOCK, RESHARD_BULK_LOCK};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Kafka connection and topics.
    pub kafka: KafkaConfig,
    /// The ordered shard list. Order is part of routing: only ever append
    /// (see `schemas/ROUTING.md`).
    pub shards: Vec<ShardConfig>,
    /// Database-side settings applied to every shard.
    pub database: DatabaseConfig,
    /// Contract rules beyond the JSON Schema.
    pub validation: ValidationConfig,
    /// The ingest worker.
    pub ingest: IngestConfig,
    /// Metrics, health and logs.
    pub observability: ObservabilityConfig,
    /// The archiver.
    pub archive: ArchiveConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig::default(),
            shards: vec![
                ShardConfig {
                    name: "shard0".into(),
                    url: "host=127.0.0.1 port=15432 user=postgres dbname=vitalsink".into(),
                    replicas: Vec::new(),
                },
                ShardConfig {
                    name: "shard1".into(),
                    url: "host=127.0.0.1 port=15433 user=postgres dbname=vitalsink".into(),
                    replicas: Vec::new(),
                },
            ],
            database: DatabaseConfig::default(),
            validation: ValidationConfig::default(),
            ingest: IngestConfig::default(),
            observability: ObservabilityConfig::default(),
            archive: ArchiveConfig::default(),
        }
    }
}

/// `[kafka]`: broker connection, topics and consumer group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub brokers: String,
    /// Topic producers publish measurements to.
    pub topic: String,
    /// Dead-letter topic for rejected records.
    pub dlq_topic: String,
    /// Consumer group of the ingest workers.
    pub group_id: String,
    /// Consumer-group session timeout (`session.timeout.ms`). Joining a group takes about half
    /// of it on the local broker; the broker bounds it by its group min/max session timeout.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// File holding the SASL password (librdkafka `sasl.password`), e.g. a Docker secret.
    /// The rest of SASL/TLS is set in `properties`: `security.protocol = "SASL_SSL"`,
    /// `sasl.mechanisms = "SCRAM-SHA-512"`, `sasl.username`, `ssl.ca.location`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<std::path::PathBuf>,
    /// Environment variable holding the SASL password (instead of `password_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// The SASL password resolved at start-up from `password_file` / `password_env`; not
    /// configuration.
    #[serde(skip)]
    pub sasl_password: Option<crate::secret::Secret>,
    /// Extra librdkafka properties, passed through verbatim (e.g. `security.protocol`).
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties of the dead-letter producer only, applied after `properties`:
    /// e.g. `message.max.bytes` (the largest dead letter, default 1,000,000 bytes), or
    /// `bootstrap.servers` of another cluster that keeps the dead-letter topic (as Kafka
    /// Connect's `producer.override.*`).
    pub dlq_properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:19092".into(),
            topic: "measurements".into(),
            dlq_topic: "measurements.dlq".into(),
            group_id: "vitalsink-ingest".into(),
            session_timeout: Duration::from_secs(10),
            password_file: None,
            password_env: None,
            sasl_password: None,
            properties: BTreeMap::new(),
            dlq_properties: BTreeMap::new(),
        }
    }
}

/// `[[shards]]`: one TimescaleDB node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// Stable name used in metrics, logs and archive paths.
    pub name: String,
    /// libpq connection string, key-value (`host=… port=…`) or URL form. Several hosts may be
    /// listed (`host=a,b port=5432,5432 target_session_attrs=read-write`) so that a promoted
    /// standby is found after a failover.
    pub url: String,
    /// Read-only streaming standbys of this shard (libpq connection strings). The query
    /// engine reads from the first that answers, and from `url` when none does; writers never
    /// use them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<String>,
}

/// `[database]`: settings applied to every shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `chunk_time_interval` of the measurements hypertable, applied to new chunks with
    /// `set_chunk_time_interval` (TimescaleDB docs recommend sizing chunks so that recent
    /// chunks and their indexes fit in about 25% of memory).
    #[serde(with = "humantime_serde")]
    pub chunk_interval: Duration,
    /// Connections per shard pool. The archiver takes up to 3 + one per extra reader of a
    /// chunk from it (its job, two chunk locks, helper readers: archiver/src/commands/run.rs).
    pub pool_size: usize,
    /// Timeout for establishing one connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long data sent to a shard may stay unacknowledged before the connection is
    /// dropped (Linux `TCP_USER_TIMEOUT`, tcp(7); libpq's `tcp_user_timeout`), with TCP
    /// keepalives every `tcp_user_timeout / 4` of idleness so that a connection waiting
    /// for an answer is probed too. Applied to every connection whose string sets neither.
    /// Without it a primary cut off by the network (not killed) held a worker's batch for
    /// Linux's default of about 15 minutes (`tcp_retries2`): the Patroni failover was done
    /// in 24 s, the worker stalled (issue 27, README "High availability"). Too short a value
    /// drops healthy connections to an overloaded server; 20 s is well above a LAN's
    /// retransmission times. `0s` leaves the kernel's defaults.
    #[serde(with = "humantime_serde")]
    pub tcp_user_timeout: Duration,
    /// `[database.tls]`: TLS to every shard, replica and move target
    /// ([`crate::pgconn`]; libpq's `sslmode` semantics).
    pub tls: crate::pgconn::PgTlsConfig,
    /// `[database.credentials.<binary>]`: the role each binary logs in as (`ingest`,
    /// `archiver`, `query`, `reshard`, and `migrate` for the `migrate` subcommands), with its
    /// password from a file or an environment variable (`schemas/ROLES.md`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub credentials: BTreeMap<String, crate::pgconn::LoginConfig>,
    /// What the shards' `url`s reach: PostgreSQL itself (`none`, the default) or a
    /// transaction pool such as PgBouncer's (`transaction`; [`Pooling`], README "PgBouncer").
    pub pooling: Pooling,
    /// `[database.direct_urls]`: shard name → connection string reaching that shard's
    /// PostgreSQL without the pooler, for the one connection that must be a session (the
    /// archiver's and reshard's bulk lock). Needed for them under `pooling = "transaction"`;
    /// used whenever given. A shard about to be added (`reshard add-shard`) may be listed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub direct_urls: BTreeMap<String, String>,
    /// The login in use by this process, resolved at start-up from `credentials`
    /// ([`Config::use_role`]); not configuration.
    #[serde(skip)]
    pub login: crate::pgconn::Login,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            chunk_interval: Duration::from_secs(86_400),
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            tcp_user_timeout: Duration::from_secs(20),
            tls: crate::pgconn::PgTlsConfig::default(),
            credentials: BTreeMap::new(),
            pooling: Pooling::None,
            direct_urls: BTreeMap::new(),
            login: crate::pgconn::Login::default(),
        }
    }
}

/// `[validation]`: the contract rules JSON Schema cannot express (see `schemas/README.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationConfig {
    /// Largest accepted message, bytes.
    pub max_message_bytes: usize,
    /// Oldest accepted timestamp relative to the time of ingest.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Furthest accepted timestamp in the future (clock skew).
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            max_message_bytes: l.max_message_bytes,
            max_age: l.max_age,
            max_future: l.max_future,
        }
    }
}

impl ValidationConfig {
    /// The [`Limits`] these settings describe.
    pub fn limits(&self) -> Limits {
        Limits {
            max_message_bytes: self.max_message_bytes,
            max_age: self.max_age,
            max_future: self.max_future,
        }
    }
}

/// `[ingest]`: batching, memory and shutdown of the ingest worker.
///
/// A shard's batch is flushed when it reaches `batch_max_rows` rows or `batch_max_bytes`
/// bytes, or when its oldest row is `batch_max_age` old (Vector's batcher rule: size or age).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Rows per shard batch before it is flushed.
    pub batch_max_rows: usize,
    /// Bytes per shard batch before it is flushed: the rows as encoded for `COPY … BINARY`,
    /// about 60–100 bytes per row.
    pub batch_max_bytes: usize,
    /// Age of a batch's oldest row before it is flushed.
    #[serde(with = "humantime_serde")]
    pub batch_max_age: Duration,
    /// Cap on the worker process's memory, bytes. Half of it is for rows: one standing buffer
    /// per shard (up to `batch_max_bytes` each) and, in the rest, rows buffered or being
    /// written over all shards — when that is used up, consumption waits (backpressure) until
    /// a flush frees memory. A sixteenth is librdkafka's prefetch queue
    /// (`queued.max.messages.kbytes`) and a thirty-second its fetch responses in flight
    /// (`fetch.max.bytes`); the rest (13/32) is headroom for the process itself: the
    /// binary's mapped pages (about 21 MiB for a debug build), librdkafka's per-message
    /// overhead, the PostgreSQL connections' buffers (COPY data goes out in 64 KiB messages,
    /// so each connection's write buffer stays that small), thread stacks and the
    /// allocator's free lists (glibc's mmap threshold is kept fixed for this:
    /// `vitalsink_ingest::allocator`). The cap is the whole process's resident set (RSS,
    /// `VmHWM`): `tests/tests/ingest_memory.rs` drains a 750,000-reading backlog at 2 and 4
    /// shards with 64 MiB and checks the peak (51–56 MiB in 6 runs, debug build).
    pub memory_cap_bytes: usize,
    /// Partitions of the measurements topic when the worker creates it.
    pub topic_partitions: i32,
    /// First retry delay after a failed write; doubles up to `retry_max` with full jitter
    /// (AWS Architecture Blog, "Exponential Backoff and Jitter", 2015).
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// How long a graceful shutdown may take to flush before the process exits anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_deadline: Duration,
    /// How long the worker may hold no partition of its topic, while the topic has some,
    /// before it says so at error level (and every minute after). Rebalances take about half
    /// of `kafka.session_timeout` to settle; a worker with none for longer is either one
    /// too many for the topic's partitions or stuck in a broker's consumer group (issue 27).
    /// `vitalsink_ingest_unassigned_seconds` shows the time either way.
    #[serde(with = "humantime_serde")]
    pub unassigned_alarm: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            batch_max_rows: 20_000,
            batch_max_bytes: 8 << 20,
            batch_max_age: Duration::from_secs(1),
            memory_cap_bytes: 256 << 20,
            topic_partitions: 6,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            shutdown_deadline: Duration::from_secs(30),
            unassigned_alarm: Duration::from_secs(120),
        }
    }
}

impl IngestConfig {
    /// Bytes of readings that may be buffered or in flight: half of `memory_cap_bytes`.
    pub fn buffer_budget_bytes(&self) -> usize {
        self.memory_cap_bytes / 2
    }

    /// librdkafka's prefetch queue, KiB: a sixteenth of `memory_cap_bytes`, 1 to 64 MiB.
    pub fn fetch_queue_kib(&self) -> usize {
        (self.memory_cap_bytes / 16 / 1024).clamp(1024, 65_536)
    }

    /// librdkafka's `fetch.max.bytes` (bytes of one fetch response): a thirty-second of
    /// `memory_cap_bytes`, 1 to 50 MiB (50 MiB is librdkafka's default, CONFIGURATION.md).
    pub fn fetch_max_bytes(&self) -> usize {
        (self.memory_cap_bytes / 32).clamp(1 << 20, 50 << 20)
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[observability]`: metrics/health endpoint and logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObservabilityConfig {
    /// Address of the HTTP server for `/metrics`, `/healthz` and `/readyz`. Unset, each
    /// binary takes its own default so that they can share a host: `ingest`
    /// `127.0.0.1:9464`, `archiver` `127.0.0.1:9465` ([`ObservabilityConfig::listen_or`]).
    pub listen: Option<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// `tracing` filter directive, e.g. `info,vitalsink_ingest=debug`.
    pub log_filter: String,
}

impl ObservabilityConfig {
    /// `listen`, or the binary's `default` when it is unset.
    pub fn listen_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.listen.as_deref().unwrap_or(default)
    }
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        Self {
            listen: None,
            log_format: LogFormat::Text,
            log_filter: "info".into(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
