//! Logging set-up shared by the binaries: `tracing` with text or JSON lines on stderr.
//! Text lines are coloured only when stderr is a terminal and `NO_COLOR` is unset
//! (no-color.org): a log file or a pipe gets plain text.

use crate::config::{LogFormat, ObservabilityConfig};
use crate::error::{Error, Result};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the global `tracing` subscriber. `RUST_LOG`, when set, wins over
/// `observability.log_filter`.
///
/// # Errors
/// [`Error::Telemetry`] when the filter does not parse or a subscriber is already installed.
pub fn init_logging(cfg: &ObservabilityConfig) -> Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v),
        _ => EnvFilter::try_new(&cfg.log_filter),
    }
    .map_err(|e| Error::Telemetry(format!("observability.log_filter: {e}")))?;
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let res = match cfg.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    res.map_err(|e| Error::Telemetry(e.to_string()))
}
