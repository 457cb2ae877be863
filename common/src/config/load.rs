//! Loading the configuration from its sources (defaults, file, environment, flags) and
//! checking what serde cannot: [`Config::load`], [`Config::use_role`], [`Config::validate`].

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

use super::Config;
use crate::error::{Error, Result};

impl Config {
    /// Loads defaults, then the TOML file at `path` (if any), then `VITALSINK_*` environment
    /// variables, then `overrides` (a serializable struct of the clap flags that were given,
    /// with absent flags skipped), and validates the result.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key that is unknown, mistyped or out of range, or the file
    /// that cannot be read.
    pub fn load<O: Serialize>(path: Option<&Path>, overrides: &O) -> Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(p) = path {
            if !p.is_file() {
                return Err(Error::Config {
                    key: "config".into(),
                    message: format!("file {} does not exist", p.display()),
                });
            }
            fig = fig.merge(Toml::file(p));
        }
        fig = fig
            // `VITALSINK_CONFIG` is the file itself; `VITALSINK_SECURE_*` are the secure local
            // stack's coordinates (`STACK_SECURE=1 dev/stack env`), not configuration.
            .merge(
                Env::prefixed("VITALSINK_")
                    .filter(|k| {
                        let k = k.as_str().to_ascii_lowercase();
                        k != "config" && !k.starts_with("secure_")
                    })
                    .split("__"),
            )
            .merge(Serialized::defaults(overrides));
        let cfg: Config = fig.extract().map_err(|e| Error::from_figment(&e))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Resolves this process's secrets: the PostgreSQL login of `role`
    /// (`database.credentials.<role>`; none configured leaves the connection strings' own)
    /// and the Kafka SASL password. Called at start-up by every binary with its name, and by
    /// the `migrate` subcommands with `migrate`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key whose password file or variable cannot be read.
    pub fn use_role(&mut self, role: &str) -> Result<()> {
        self.database.login = crate::pgconn::Login::resolve(&self.database, role)?;
        self.kafka.sasl_password = crate::secret::PasswordSource {
            password_file: self.kafka.password_file.clone(),
            password_env: self.kafka.password_env.clone(),
        }
        .resolve("kafka")?;
        Ok(())
    }

    /// Checks values that serde cannot: non-empty strings, positive sizes, unique shard names.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad key, e.g. `shards[1].name`.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, message: &str| {
            Err(Error::Config {
                key: key.into(),
                message: message.into(),
            })
        };
        for (key, v) in [
            ("kafka.brokers", &self.kafka.brokers),
            ("kafka.topic", &self.kafka.topic),
            ("kafka.dlq_topic", &self.kafka.dlq_topic),
            ("kafka.group_id", &self.kafka.group_id),
        ] {
            if v.trim().is_empty() {
                return bad(key, "must not be empty");
            }
        }
        if self.kafka.topic == self.kafka.dlq_topic {
            return bad("kafka.dlq_topic", "must differ from kafka.topic");
        }
        if self.shards.is_empty() {
            return bad("shards", "at least one shard is required");
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in self.shards.iter().enumerate() {
            if s.name.is_empty() || !crate::measurement::is_valid_id(&s.name) {
                return bad(
                    &format!("shards[{i}].name"),
                    "must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                );
            }
            if !names.insert(&s.name) {
                return bad(&format!("shards[{i}].name"), "duplicate shard name");
            }
            if let Err(e) = s.url.parse::<tokio_postgres::Config>() {
                return bad(
                    &format!("shards[{i}].url"),
                    &format!("not a libpq connection string: {e}"),
                );
            }
        }
        if self.database.chunk_interval < Duration::from_secs(60) {
            return bad("database.chunk_interval", "must be at least 1m");
        }
        if self.database.pool_size == 0 {
            return bad("database.pool_size", "must be at least 1");
        }
        if let Err((key, message)) = self.database.check_pooling() {
            return bad(&key, &message);
        }
        let i = &self.ingest;
        if i.batch_max_rows == 0 {
            return bad("ingest.batch_max_rows", "must be at least 1");
        }
        if i.batch_max_bytes == 0 {
            return bad("ingest.batch_max_bytes", "must be at least 1");
        }
        if i.batch_max_age.is_zero() {
            return bad("ingest.batch_max_age", "must be positive");
        }
        if i.buffer_budget_bytes() < i.batch_max_bytes.saturating_mul(2 * self.shards.len()) {
            return bad(
                "ingest.memory_cap_bytes",
                "half of it must hold two full batches per shard (2 × batch_max_bytes × shards)",
            );
        }
        if i.buffer_budget_bytes() < self.validation.max_message_bytes.saturating_mul(4) {
            return bad(
                "ingest.memory_cap_bytes",
                "must be at least 8 × validation.max_message_bytes",
            );
        }
        if i.unassigned_alarm.is_zero() {
            return bad("ingest.unassigned_alarm", "must be positive");
        }
        if i.topic_partitions < 1 {
            return bad("ingest.topic_partitions", "must be at least 1");
        }
        if i.retry_initial.is_zero() || i.retry_max < i.retry_initial {
            return bad("ingest.retry_max", "needs 0 < retry_initial <= retry_max");
        }
        if self.validation.max_message_bytes == 0 {
            return bad("validation.max_message_bytes", "must be at least 1");
        }
        if let Some(listen) = &self.observability.listen {
            if listen.parse::<std::net::SocketAddr>().is_err() {
                return bad("observability.listen", "must be an ip:port socket address");
            }
        }
        if let Err((key, message)) = self.archive.check() {
            return bad(key, message);
        }
        Ok(())
    }
}
