//! The access record: one entry per statement, with who asked, what, how much came back, how
//! long it took and how it ended. This is the record of access a trial's auditor asks for
//! (21 CFR 11.10(d) limiting access to authorized individuals, 11.10(e) time-stamped records
//! of operator actions; 11.10(g) authority checks: the refused statements are in it too).
//!
//! Every record goes to the log as an `INFO` event of target `vitalsink_query::access` and,
//! with `--access-log FILE`, as one JSON line appended to that file (written and flushed
//! before the next statement's line; the file is opened in append mode, so rotation by
//! rename + a new file works after a restart):
//!
//! ```json
//! {"at":"2026-12-05T11:00:00.123Z","user":"alice","sql":"SELECT … WHERE participant_id = $1",
//!  "params":["$1: Utf8 (masked)"],"rows":1,"bytes":1234,"ms":52,"outcome":"ok","error":null}
//! ```
//!
//! `params` lists the bound parameters of a prepared statement by position and type only:
//! their values are never recorded. `bytes` is what was sent: Arrow IPC (Flight SQL data
//! bodies and headers) for `query serve`, the result's Arrow buffers for `query sql`.
//! `outcome` is one of `ok`, `refused`, `invalid`, `unavailable`, `memory`, `timeout`, `busy`,
//! `cancelled` (by `CancelFlightInfo`, or the client went away before the last batch) and
//! `error`; it is also the label of `vitalsink_query_statements_total`.

use serde_json::json;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::error::{Error, Result};

/// Where records go besides the log.
#[derive(Debug, Default)]
pub struct AccessLog {
    file: Option<Mutex<std::fs::File>>,
}

impl AccessLog {
    /// Records to the log only (`None`), or also to `path`.
    ///
    /// # Errors
    /// A configuration error naming `--access-log` when the file cannot be opened for append.
    pub fn open(path: Option<&Path>) -> Result<Self> {
        let file = match path {
            None => None,
            Some(p) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| {
                        Error::Common(vitalsink_common::Error::Config {
                            key: "--access-log".into(),
                            message: format!("{}: {e}", p.display()),
                        })
                    })?,
            )),
        };
        Ok(Self { file })
    }
}

/// The outcome label and status class of an error (see the module doc).
pub fn outcome_of(e: &Error) -> &'static str {
    match e {
        Error::Refused(_) => "refused",
        Error::Engine(_) => "invalid",
        Error::Shard { .. } => "unavailable",
        Error::Memory(_) => "memory",
        Error::Timeout(_) => "timeout",
        Error::Busy { .. } => "busy",
        Error::Cancelled => "cancelled",
        _ => "error",
    }
}

/// One statement's record, written when the last handle to it is dropped: at the end of the
/// result stream, at an error, or when the client went away.
#[derive(Debug)]
pub struct Record {
    log: Arc<AccessLog>,
    at: chrono::DateTime<chrono::Utc>,
    started: Instant,
    user: String,
    sql: String,
    params: Vec<String>,
    rows: AtomicU64,
    bytes: AtomicU64,
    end: OnceLock<(&'static str, Option<String>)>,
}

impl Record {
    /// Starts the record of `user`'s `sql` with bound parameters described by `params`
    /// (position and type, never the value).
    pub fn start(log: Arc<AccessLog>, user: &str, sql: &str, params: Vec<String>) -> Arc<Self> {
        Arc::new(Self {
            log,
            at: chrono::Utc::now(),
            started: Instant::now(),
            user: user.to_string(),
            sql: sql.to_string(),
            params,
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            end: OnceLock::new(),
        })
    }

    /// Counts rows sent.
    pub fn add_rows(&self, n: u64) {
        self.rows.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts bytes sent.
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Ends the statement well (the first end recorded wins).
    pub fn ok(&self) {
        let _ = self.end.set(("ok", None));
    }

    /// Ends the statement with `e` (the first end recorded wins).
    pub fn fail(&self, e: &Error) {
        let _ = self.end.set((outcome_of(e), Some(e.to_string())));
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let (outcome, error) = self.end.get().cloned().unwrap_or((
            "cancelled",
            Some("the client went away before the last batch".into()),
        ));
        let rows = self.rows.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let ms = self.started.elapsed().as_millis() as u64;
        metrics::counter!("vitalsink_query_statements_total", "outcome" => outcome).increment(1);
        metrics::histogram!("vitalsink_query_seconds").record(self.started.elapsed().as_secs_f64());
        tracing::info!(
            target: "vitalsink_query::access",
            user = %self.user,
            sql = %self.sql,
            params = ?self.params,
            rows,
            bytes,
            ms,
            outcome,
            error = error.as_deref().unwrap_or(""),
            "statement"
        );
        if let Some(f) = &self.log.file {
            let line = json!({
                "at": self.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "user": self.user,
                "sql": self.sql,
                "params": self.params,
                "rows": rows,
                "bytes": bytes,
                "ms": ms,
                "outcome": outcome,
                "error": error,
            });
            if let Ok(mut f) = f.lock() {
                if let Err(e) = writeln!(f, "{line}").and_then(|()| f.flush()) {
                    tracing::error!(error = %e, "cannot append to the access log");
                }
            }
        }
    }
}
