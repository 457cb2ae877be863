//! Helpers of `tests/it/query/query_trial_tables.rs` (issue 26): `query sql` and ADBC answers as
//! JSON, the real `trial` binary, audit entries read back from `query`'s answers.

use crate::dataset::Totals;
use crate::ingest_run::log_tail;
use crate::query_run::{close, query_binary, Server};
use crate::run_ok;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use vitalsink_common::audit::Entry;

/// `query --config config [global] sql SQL --format json`.
pub fn query(config: &Path, global: &[&str], sql: &str) -> Output {
    Command::new(query_binary())
        .arg("--config")
        .arg(config)
        .args(global)
        .args(["sql", sql, "--format", "json"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// The JSON rows of a `query sql` that must succeed.
pub fn rows(config: &Path, global: &[&str], sql: &str) -> Vec<Value> {
    let out = query(config, global, sql);
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The `EXPLAIN` text of `sql`.
pub fn plan(config: &Path, global: &[&str], sql: &str) -> String {
    rows(config, global, &format!("EXPLAIN {sql}"))
        .iter()
        .map(|r| r["plan"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Column `col` (integers) of every row of `sql`.
pub fn ints(config: &Path, sql: &str, col: &str) -> Vec<i64> {
    rows(config, &[], sql)
        .iter()
        .map(|r| r[col].as_i64().unwrap_or_else(|| panic!("{col} in {r}")))
        .collect()
}

/// `query sql --format csv`, which must succeed.
pub fn csv(config: &Path, sql: &str) -> String {
    let out = run_ok(
        Command::new(query_binary())
            .arg("--config")
            .arg(config)
            .args(["sql", sql, "--format", "csv"]),
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `(participant_id, status_now, withdrawn_from, changes)` of rows of `participants`
/// (`withdrawn_from` absent or null: `None`).
pub fn summaries(rows: &[Value]) -> Vec<(String, String, Option<DateTime<Utc>>, i64)> {
    rows.iter()
        .map(|r| {
            (
                r["participant_id"].as_str().unwrap().to_string(),
                r["status_now"].as_str().unwrap().to_string(),
                r.get("withdrawn_from").filter(|v| !v.is_null()).map(time),
                r["changes"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// An RFC 3339 time of a JSON answer (`2026-01-02T03:04:05.123456Z`, `…+00:00`).
pub fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .to_utc()
}

/// `t` as RFC 3339 with microseconds and `Z`.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// An audit entry from a row of `audit_log` as `query` answers it (JSON or pyarrow).
pub fn entry_of(v: &Value) -> Entry {
    let text = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k} in {v}")).into();
    Entry {
        seq: v["seq"].as_i64().unwrap(),
        at: time(&v["at"]),
        os_user: text("os_user"),
        db_role: text("db_role"),
        host: text("host"),
        action: text("action"),
        command: text("command"),
        reason: v["reason"].as_str().map(str::to_string),
        participants: v["participants"]
            .as_array()
            .unwrap_or_else(|| panic!("participants in {v}"))
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect(),
        details: text("details"),
        prev_hash: text("prev_hash"),
        hash: text("hash"),
    }
}

/// `trial --config config ARGS` (the real binary), which must succeed; its last line of
/// standard output as JSON (`Value::Null` when there is none).
pub fn trial(config: &Path, args: &[&str]) -> Value {
    let bin = query_binary().with_file_name("trial");
    assert!(
        bin.exists(),
        "{} missing: build it with `cargo build -p vitalsink-trial`",
        bin.display()
    );
    let out = run_ok(Command::new(bin).arg("--config").arg(config).args(args));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map_or(Value::Null, |l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("trial {args:?}: {e}: {l}"))
        })
}

/// `tests/scripts/adbc_trial.py ADDR SQL…` against a running server.
pub fn adbc(server: &Server, sqls: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/adbc_trial.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&server.addr)
        .args(sqls)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "adbc: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        log_tail(&server.log)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Rows and sum over `totals` of the participants `keep` accepts.
pub fn sum_of(totals: &Totals, keep: impl Fn(&str) -> bool) -> (i64, f64) {
    totals
        .iter()
        .filter(|(p, _)| keep(p))
        .fold((0, 0.0), |(n, s), (_, (pn, ps))| (n + pn, s + ps))
}

/// Asserts a row `{"n": rows, "s": sum}` is `want` (the sum to 1e-9 relative).
pub fn assert_count_sum(row: &Value, want: (i64, f64), what: &str) {
    assert_eq!(row["n"].as_i64(), Some(want.0), "{what}: rows {row}");
    assert!(
        close(row["s"].as_f64().unwrap(), want.1),
        "{what}: sum {row}"
    );
}
