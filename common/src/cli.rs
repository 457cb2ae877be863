//! Command-line flags shared by the binaries (clap derive, every flag also read from its
//! environment variable, which is the same one the configuration loader reads for that key).

use crate::config::{Config, LogFormat};
use crate::error::Result;
use clap::Args;
use serde_json::{json, Map, Value};
use std::path::PathBuf;

/// Flags every vitalsink binary takes. Absent flags leave the configuration as the file and
/// environment set it.
#[derive(Debug, Clone, Default, Args)]
pub struct CommonArgs {
    /// TOML configuration file (see dev/vitalsink.example.toml).
    #[arg(long, global = true, env = "VITALSINK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers, `host:port[,host:port…]` (key `kafka.brokers`).
    #[arg(long, global = true, env = "VITALSINK_KAFKA__BROKERS")]
    pub brokers: Option<String>,
    /// Measurements topic (key `kafka.topic`).
    #[arg(long, global = true, env = "VITALSINK_KAFKA__TOPIC")]
    pub topic: Option<String>,
    /// Address of the metrics and health HTTP server (key `observability.listen`).
    #[arg(long, global = true, env = "VITALSINK_OBSERVABILITY__LISTEN")]
    pub listen: Option<String>,
    /// Log format (key `observability.log_format`).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "VITALSINK_OBSERVABILITY__LOG_FORMAT"
    )]
    pub log_format: Option<LogFormat>,
}

impl CommonArgs {
    /// The given flags as a nested configuration fragment, for [`Config::load`].
    pub fn overrides(&self) -> Value {
        let mut root = Map::new();
        let mut put = |section: &str, key: &str, v: Value| {
            let s = root.entry(section).or_insert_with(|| json!({}));
            if let Value::Object(m) = s {
                m.insert(key.to_string(), v);
            }
        };
        if let Some(v) = &self.brokers {
            put("kafka", "brokers", json!(v));
        }
        if let Some(v) = &self.topic {
            put("kafka", "topic", json!(v));
        }
        if let Some(v) = &self.listen {
            put("observability", "listen", json!(v));
        }
        if let Some(v) = self.log_format {
            put("observability", "log_format", json!(v));
        }
        Value::Object(root)
    }

    /// Loads and validates the configuration these flags point at.
    ///
    /// # Errors
    /// As [`Config::load`]: the bad key is named.
    pub fn load(&self) -> Result<Config> {
        Config::load(self.config.as_deref(), &self.overrides())
    }
}

/// Start-up shared by the binaries: loads the configuration and installs logging. On failure
/// prints `BIN: error` on stderr (logging is configured from the configuration, so it cannot
/// be used yet) and returns the exit code to leave with (2: bad configuration).
pub fn start(bin: &str, args: &CommonArgs) -> std::result::Result<Config, std::process::ExitCode> {
    let fail = |e: crate::Error| {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("{bin}: {e}");
        }
        std::process::ExitCode::from(2)
    };
    let mut cfg = args.load().map_err(fail)?;
    cfg.use_role(bin).map_err(fail)?;
    crate::telemetry::init_logging(&cfg.observability).map_err(fail)?;
    Ok(cfg)
}

/// Turns the outcome of a binary's command into its exit code, logging the error.
pub fn exit_code<E: std::fmt::Display>(
    bin: &str,
    res: std::result::Result<(), E>,
) -> std::process::ExitCode {
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{bin} failed");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The `migrate` subcommand of both binaries: applies the schema migrations on every shard.
///
/// # Errors
/// As [`crate::migrate::migrate_all`].
pub async fn migrate(cfg: &Config) -> Result<()> {
    // Migrations run as the owner: `database.credentials.migrate` when configured.
    let mut cfg = cfg.clone();
    if cfg.database.credentials.contains_key("migrate") {
        cfg.use_role("migrate")?;
    }
    let shards = crate::db::Shard::all(&cfg.shards, &cfg.database)?;
    crate::migrate::migrate_all(&shards, &cfg.database).await
}

/// The `check-config` subcommand: the effective configuration as pretty JSON, with every
/// inline secret masked ([`crate::secret::redact_config`]). Passwords read from files or
/// variables are not part of it at all.
pub fn config_json(cfg: &Config) -> String {
    let mut v = serde_json::to_value(cfg).unwrap_or_default();
    crate::secret::redact_config(&mut v);
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// An instant given on a command line as RFC 3339 (with its UTC offset) or `YYYY-MM-DD` (UTC
/// midnight); `None` when it is neither. The callers name the flag in their error.
pub fn parse_instant(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.to_utc());
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}
