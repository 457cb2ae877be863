//! Replaying the real recordings through the real ingest worker, archiving part of them with
//! the real archiver, and reading back from the shards and the Parquet archive what the
//! replay's truth ([`vitalsink_replay::truth::Truth`]) says must be there.

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, TimestampMicrosecondType};
use futures::{pin_mut, TryStreamExt};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use vitalsink_common::config::ShardConfig;
use vitalsink_replay::exact::ExactSum;

use crate::connect;
use crate::ingest_run::log_tail;

/// Runs `dev/fetch-data` (idempotent: a no-op once the cache is complete) and returns the
/// data directory it prints. Panics, failing the test, when the fetch fails.
pub fn fetch_data() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dev/fetch-data");
    let out = std::process::Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    assert!(
        out.status.success(),
        "dev/fetch-data failed: {:?}",
        out.status
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// What one participant has in one shard (database, plus archive when read).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DbParticipant {
    /// Rows.
    pub rows: i64,
    /// Exact sum of the values (correctly rounded, as the truth's).
    pub sum: f64,
    /// Rows − distinct `(metric, ts)`.
    pub duplicate_ts: i64,
    /// Of [`Self::rows`], the rows read from the Parquet archive.
    pub archived_rows: i64,
}

/// The stored side of the comparison: the shards' rows and, when an archive is given, the
/// archive's rows (each under the shard its Hive `shard=` partition names).
#[derive(Debug, Clone, Default)]
pub struct DbTruth {
    /// Per shard (routing order), per participant.
    pub shards: Vec<BTreeMap<String, DbParticipant>>,
    /// Per (participant, metric, UTC day `YYYY-MM-DD`): rows and exact sum, over all shards.
    pub daily: BTreeMap<(String, String, String), (i64, f64)>,
    /// Rows read from the databases, per shard.
    pub db_rows: Vec<i64>,
    /// Rows read from the archive, per shard.
    pub archived_rows: Vec<i64>,
    /// Parquet files read, per shard.
    pub parquet_files: Vec<usize>,
}

/// One participant's running totals.
#[derive(Debug, Default)]
struct Acc {
    rows: i64,
    archived: i64,
    sum: ExactSum,
    seen: HashMap<String, HashSet<i64>>,
}

/// Exact per-participant (per shard) and per-day accumulation of readings.
#[derive(Debug, Default)]
struct Accumulator {
    shards: Vec<BTreeMap<String, Acc>>,
    daily: BTreeMap<(String, String, String), (i64, ExactSum)>,
}

impl Accumulator {
    fn add(
        &mut self,
        shard: usize,
        pid: &str,
        metric: &str,
        ts_micros: i64,
        v: f64,
        archived: bool,
    ) {
        let p = self.shards[shard].entry(pid.to_string()).or_default();
        p.rows += 1;
        p.archived += i64::from(archived);
        p.sum.add(v);
        if !p.seen.contains_key(metric) {
            p.seen.insert(metric.to_string(), HashSet::new());
        }
        if let Some(s) = p.seen.get_mut(metric) {
            s.insert(ts_micros);
        }
        let day = chrono::DateTime::from_timestamp_micros(ts_micros)
            .unwrap()
            .format("%Y-%m-%d")
            .to_string();
        let d = self
            .daily
            .entry((pid.to_string(), metric.to_string(), day))
            .or_default();
        d.0 += 1;
        d.1.add(v);
    }
}

/// Reads every row of every shard (streamed) and sums exactly per participant and per
/// participant, metric and UTC day.
pub async fn db_truth(shards: &[ShardConfig]) -> DbTruth {
    stored_truth(shards, None).await
}

/// As [`db_truth`], plus every row of the Parquet files under `archive` (a local archive
/// root, read with the `parquet` crate): the rows of `measurements/date=…/shard=NAME/` count
/// for the shard named NAME.
pub async fn stored_truth(shards: &[ShardConfig], archive: Option<&Path>) -> DbTruth {
    let mut acc = Accumulator {
        shards: shards.iter().map(|_| BTreeMap::new()).collect(),
        ..Accumulator::default()
    };
    let mut out = DbTruth::default();
    for (i, s) in shards.iter().enumerate() {
        let c = connect(&s.url).await;
        let rows = c
            .query_raw(
                "SELECT participant_id, metric, (extract(epoch FROM ts) * 1000000)::int8, value FROM measurements",
                std::iter::empty::<i32>(),
            )
            .await
            .unwrap();
        pin_mut!(rows);
        let mut n = 0;
        while let Some(r) = rows.try_next().await.unwrap() {
            acc.add(i, r.get(0), r.get(1), r.get(2), r.get(3), false);
            n += 1;
        }
        out.db_rows.push(n);
    }
    out.archived_rows = vec![0; shards.len()];
    out.parquet_files = vec![0; shards.len()];
    if let Some(root) = archive {
        for file in parquet_files(&root.join("measurements")) {
            let name = file
                .parent()
                .and_then(|d| d.file_name())
                .and_then(|d| d.to_str())
                .and_then(|d| d.strip_prefix("shard="))
                .unwrap_or_else(|| panic!("{}: not under shard=NAME/", file.display()));
            let i = shards
                .iter()
                .position(|s| s.name == name)
                .unwrap_or_else(|| panic!("{}: unknown shard {name}", file.display()));
            out.parquet_files[i] += 1;
            out.archived_rows[i] += read_parquet(&file, |pid, metric, ts, v| {
                acc.add(i, pid, metric, ts, v, true)
            });
        }
    }
    out.shards = acc
        .shards
        .into_iter()
        .map(|per| {
            per.into_iter()
                .map(|(pid, a)| {
                    let distinct: usize = a.seen.values().map(HashSet::len).sum();
                    let p = DbParticipant {
                        rows: a.rows,
                        sum: a.sum.value(),
                        duplicate_ts: a.rows - distinct as i64,
                        archived_rows: a.archived,
                    };
                    (pid, p)
                })
                .collect()
        })
        .collect();
    out.daily = acc
        .daily
        .into_iter()
        .map(|(k, (n, s))| (k, (n, s.value())))
        .collect();
    out
}

/// Every `*.parquet` file under `dir`, recursively, sorted.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(parquet_files(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Calls `row(participant_id, metric, ts µs since the epoch, value)` for every row of one
/// archive file (the archiver's schema, `archiver/src/export/format.rs`); returns the rows read.
pub fn read_parquet(path: &Path, mut row: impl FnMut(&str, &str, i64, f64)) -> i64 {
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut n = 0;
    for batch in reader {
        let b = batch.unwrap();
        let col = |name: &str| {
            b.column_by_name(name)
                .unwrap_or_else(|| panic!("{}: no column {name}", path.display()))
        };
        let pid = col("participant_id").as_string::<i32>();
        let metric = col("metric").as_string::<i32>();
        let ts = col("ts").as_primitive::<TimestampMicrosecondType>();
        let value = col("value").as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            row(pid.value(i), metric.value(i), ts.value(i), value.value(i));
            n += 1;
        }
    }
    n
}

/// Writes an archiver configuration next to `ingest_config`: the same file (shards,
/// observability) plus an `[archive]` section with a local `root` and `older_than` window.
pub fn archive_config(ingest_config: &Path, root: &Path, older_than: &str) -> PathBuf {
    let mut toml = std::fs::read_to_string(ingest_config).unwrap();
    toml.push_str(&format!(
        "\n[archive]\nroot = \"file://{}\"\nolder_than = \"{older_than}\"\nrows_per_second = 0\n",
        root.display()
    ));
    let path = ingest_config.with_extension("archive.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// Runs the `archiver` binary with `config` and `args` to completion, its log appended to
/// `log`; asserts it succeeded and returns its stdout parsed as JSON.
pub fn archiver_json(config: &Path, args: &[&str], log: &Path) -> serde_json::Value {
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let out = std::process::Command::new(crate::archive_run::archiver_binary())
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info")
        .stderr(err)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "archiver {args:?}: {}\n{}",
        out.status,
        log_tail(log)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "archiver {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
