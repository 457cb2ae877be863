//! Helpers of `tests/it/trial/trial_lock.rs` (issue 26, dataset locks): readings of a whole
//! `query` answer read back exactly (through `--format parquet`), per-participant totals with
//! exact (correctly rounded, order-independent) sums, the real `trial`, `archiver` and
//! `reshard` binaries with their logs, and the extra readings the test publishes after the
//! lock.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use vitalsink_replay::exact::ExactSum;

use crate::dataset::Record;
use crate::ingest_run::{ingest_binary, log_tail};
use crate::query_run::query_binary;

/// Per participant: rows and exact sum of values.
pub type Exact = BTreeMap<String, (i64, f64)>;

/// One reading of a `query` answer.
#[derive(Debug, Clone)]
pub struct Reading {
    /// `participant_id`.
    pub participant: String,
    /// `device_id` (empty when NULL).
    pub device: String,
    /// `metric`.
    pub metric: String,
    /// `ts`, µs since the epoch.
    pub ts: i64,
    /// `value`.
    pub value: f64,
}

/// An appendable log file.
pub fn log_file(log: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap()
}

/// `query --config config [global] sql "SELECT participant_id, device_id, metric, ts, value
/// FROM measurements" --format parquet --out FILE`, which must succeed; every reading read
/// back from the file with the `parquet` crate (values bit for bit).
pub fn query_readings(config: &Path, global: &[&str], out: &Path, log: &Path) -> Vec<Reading> {
    let sql = "SELECT participant_id, device_id, metric, ts, value FROM measurements";
    let _ = std::fs::remove_file(out);
    let st = Command::new(query_binary())
        .arg("--config")
        .arg(config)
        .args(global)
        .args(["sql", sql, "--format", "parquet", "--out"])
        .arg(out)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log_file(log))
        .status()
        .unwrap();
    assert!(
        st.success(),
        "query {global:?} sql {sql}: {st:?}\n{}",
        log_tail(log)
    );
    let file = std::fs::File::open(out).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        let b = batch.unwrap();
        let text = |name: &str| {
            let col = b
                .column_by_name(name)
                .unwrap_or_else(|| panic!("query answer without column {name}"));
            arrow::compute::cast(col, &DataType::Utf8).unwrap()
        };
        let (pid, device, metric) = (text("participant_id"), text("device_id"), text("metric"));
        let (pid, device, metric) = (
            pid.as_string::<i32>(),
            device.as_string::<i32>(),
            metric.as_string::<i32>(),
        );
        let ts = arrow::compute::cast(
            b.column_by_name("ts").unwrap(),
            &DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
        )
        .unwrap();
        let ts = ts.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        let value = b.column_by_name("value").unwrap();
        let value = value.as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            assert!(!pid.is_null(i) && !value.is_null(i) && !ts.is_null(i));
            rows.push(Reading {
                participant: pid.value(i).to_string(),
                device: if device.is_null(i) {
                    String::new()
                } else {
                    device.value(i).to_string()
                },
                metric: metric.value(i).to_string(),
                ts: ts.value(i),
                value: value.value(i),
            });
        }
    }
    rows
}

/// Per participant rows and exact sum of the readings `keep` accepts.
pub fn exact_totals<'a>(
    readings: impl IntoIterator<Item = &'a Reading>,
    keep: impl Fn(&Reading) -> bool,
) -> Exact {
    let mut acc: BTreeMap<String, (i64, ExactSum)> = BTreeMap::new();
    for r in readings.into_iter().filter(|r| keep(r)) {
        let e = acc.entry(r.participant.clone()).or_default();
        e.0 += 1;
        e.1.add(r.value);
    }
    acc.into_iter()
        .map(|(p, (n, s))| (p, (n, s.value())))
        .collect()
}

/// Whether `got` and `want` hold the same participants with the same rows and the same sum
/// bits; `Some(message)` listing every difference when they do not.
pub fn exact_diff(got: &Exact, want: &Exact, what: &str) -> Option<String> {
    let mut diffs = Vec::new();
    let keys: std::collections::BTreeSet<&String> = got.keys().chain(want.keys()).collect();
    for k in keys {
        let (g, w) = (got.get(k), want.get(k));
        let same = match (g, w) {
            (Some(g), Some(w)) => g.0 == w.0 && g.1.to_bits() == w.1.to_bits(),
            _ => false,
        };
        if !same {
            diffs.push(format!("{k}: got {g:?}, want {w:?}"));
        }
    }
    (!diffs.is_empty()).then(|| {
        format!(
            "{what}: {} participant(s) differ (rows, exact sum):\n{}",
            diffs.len(),
            diffs.join("\n")
        )
    })
}

/// Asserts [`exact_diff`] finds no difference.
pub fn assert_exact(got: &Exact, want: &Exact, what: &str) {
    if let Some(m) = exact_diff(got, want, what) {
        panic!("{m}");
    }
}

/// Rows of `readings` per participant and UTC day (`YYYY-MM-DD`), for failure messages.
pub fn daily_rows(readings: &[Reading], participant: &str) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for r in readings.iter().filter(|r| r.participant == participant) {
        let day = chrono::DateTime::from_timestamp_micros(r.ts)
            .unwrap()
            .format("%Y-%m-%d")
            .to_string();
        *out.entry(day).or_insert(0) += 1;
    }
    out
}

/// Per participant rows and exact sum of published values (`(participant, values)` pairs).
pub fn totals_of_published(published: &[(String, Vec<f64>)]) -> Exact {
    let mut acc: BTreeMap<String, (i64, ExactSum)> = BTreeMap::new();
    for (pid, values) in published {
        let e = acc.entry(pid.clone()).or_default();
        for v in values {
            e.0 += 1;
            e.1.add(*v);
        }
    }
    acc.into_iter()
        .map(|(p, (n, s))| (p, (n, s.value())))
        .collect()
}

/// One batch record of `participant`: metric `heart_rate` from device `device`, `n` samples
/// every `every_ms` from `start`, values `base + 0.25 k` (exact in float8). Returns the record
/// and the values.
pub fn batch_record(
    participant: &str,
    device: &str,
    start: chrono::DateTime<chrono::Utc>,
    every_ms: i64,
    n: usize,
    base: f64,
) -> (Record, Vec<f64>) {
    let mut values = Vec::with_capacity(n);
    let samples: Vec<String> = (0..n)
        .map(|k| {
            let v = base + 0.25 * (k % 97) as f64;
            values.push(v);
            let t = start + chrono::Duration::milliseconds(every_ms * k as i64);
            format!(
                r#"{{"ts":"{}","value":{v}}}"#,
                t.format("%Y-%m-%dT%H:%M:%S%.3fZ")
            )
        })
        .collect();
    let json = format!(
        r#"{{"participant_id":"{participant}","metric":"heart_rate","unit":"/min","device_id":"{device}","samples":[{}]}}"#,
        samples.join(",")
    );
    (
        Record {
            key: participant.to_string(),
            payload: json.into_bytes(),
            rejected: None,
        },
        values,
    )
}

/// Per partition, the offset after the last of `positions` (what [`crate::ingest_run::wait_applied`]
/// waits for).
pub fn next_offsets(positions: &[(i32, i64)]) -> BTreeMap<i32, i64> {
    let mut next = BTreeMap::new();
    for (p, o) in positions {
        let e = next.entry(*p).or_insert(0);
        *e = (*e).max(o + 1);
    }
    next
}

/// Runs `binary --config config ARGS` with `NO_COLOR`, `RUST_LOG=info`, stdout piped and
/// stderr appended to `log`.
pub fn run_binary(binary: &Path, config: &Path, args: &[&str], log: &Path) -> Output {
    Command::new(binary)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log_file(log))
        .output()
        .unwrap()
}

/// Path of a workspace binary built beside `ingest` (`trial`, `reshard`, `archiver`, …).
pub fn binary(name: &str) -> PathBuf {
    let bin = ingest_binary().with_file_name(name);
    assert!(
        bin.exists(),
        "{} missing: build it with `cargo build -p vitalsink-{name}`",
        bin.display()
    );
    bin
}

/// `binary ARGS`, which must succeed; its standard output as JSON lines (blank lines left
/// out).
pub fn ok_lines(
    binary_name: &str,
    config: &Path,
    args: &[&str],
    log: &Path,
) -> Vec<serde_json::Value> {
    let out = run_binary(&binary(binary_name), config, args, log);
    assert!(
        out.status.success(),
        "{binary_name} {args:?}: {:?}\n{}",
        out.status,
        log_tail(log)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{binary_name} {args:?} printed {l:?}: {e}"))
        })
        .collect()
}

/// `binary ARGS`, which must succeed and print one JSON document (possibly pretty-printed).
pub fn ok_json(binary_name: &str, config: &Path, args: &[&str], log: &Path) -> serde_json::Value {
    let out = run_binary(&binary(binary_name), config, args, log);
    assert!(
        out.status.success(),
        "{binary_name} {args:?}: {:?}\n{}",
        out.status,
        log_tail(log)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{binary_name} {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
