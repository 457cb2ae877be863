//! Running the real `archiver` binary against the stack: shard data with chunks older than
//! the window, a configuration per test, the archive read back with DuckDB
//! (`tests/scripts/archive_totals.py`) or with pandas, pyarrow, polars and DuckDB
//! (`tests/scripts/archive_readers.py`), and what the shards still hold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use vitalsink_common::config::ShardConfig;
use vitalsink_common::routing::ShardRouter;

use crate::dataset::Totals;
use crate::{connect, unique, ShardDbs, Stack};

/// Path of the `archiver` binary cargo built (`cargo build -p vitalsink-archiver`, which
/// `dev/test` runs; `cargo test --workspace` alone does not build it).
pub fn archiver_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("archiver");
    assert!(
        bin.exists(),
        "{} missing: build it with `cargo build -p vitalsink-archiver` (dev/test does)",
        bin.display()
    );
    bin
}

/// Where a test's archive lives.
#[derive(Debug, Clone)]
pub enum Root {
    /// A local directory (the NAS case).
    Local(PathBuf),
    /// `s3://bucket/prefix` on the stack's SeaweedFS.
    S3 {
        /// Bucket.
        bucket: String,
        /// Unique prefix.
        prefix: String,
        /// Endpoint URL.
        endpoint: String,
    },
}

impl Root {
    /// A fresh local directory under `dir`.
    pub fn local(dir: &Path) -> Self {
        let p = dir.join(unique("archive"));
        std::fs::create_dir_all(&p).unwrap();
        Root::Local(p)
    }

    /// A fresh prefix in the stack's bucket.
    pub fn s3(stack: &Stack) -> Self {
        Root::S3 {
            bucket: stack.s3_bucket.clone(),
            prefix: unique("archive"),
            endpoint: stack.s3_endpoint.clone(),
        }
    }

    /// The `archive.root` URL.
    pub fn url(&self) -> String {
        match self {
            Root::Local(p) => format!("file://{}", p.display()),
            Root::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}"),
        }
    }

    /// An object_store for the root (to tamper with objects in tests).
    pub fn store(&self) -> std::sync::Arc<dyn object_store::ObjectStore> {
        match self {
            Root::Local(p) => std::sync::Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(p).unwrap(),
            ),
            Root::S3 {
                bucket,
                prefix,
                endpoint,
            } => std::sync::Arc::new(object_store::prefix::PrefixStore::new(
                object_store::aws::AmazonS3Builder::new()
                    .with_endpoint(endpoint)
                    .with_allow_http(true)
                    .with_bucket_name(bucket)
                    .with_region("us-east-1")
                    .with_access_key_id("vitalsink")
                    .with_secret_access_key("vitalsink")
                    .build()
                    .unwrap(),
                prefix.as_str(),
            )),
        }
    }
}

/// One test's archiver set-up: fresh shard databases, an archive root, a config file.
#[derive(Debug)]
pub struct ArchiveSetup {
    /// The shard databases.
    pub dbs: ShardDbs,
    /// The archive root.
    pub root: Root,
    /// The configuration file.
    pub config: PathBuf,
    /// Log file of the archiver runs.
    pub log: PathBuf,
    /// Temporary directory (config, logs, local archive).
    pub dir: tempfile::TempDir,
}

impl ArchiveSetup {
    /// Fresh databases on every shard, migrated; an archive root (`s3` or a local directory);
    /// a config with a 30-day window, small batches (1,000 rows) and row groups (4,000 rows),
    /// 5 MiB parts, no rate limit, plus `extra` TOML lines for `[archive]`.
    pub async fn new(stack: &Stack, prefix: &str, s3: bool, extra: &str) -> Self {
        let dbs = ShardDbs::create(stack, prefix).await;
        let dir = tempfile::tempdir().unwrap();
        let root = if s3 {
            Root::s3(stack)
        } else {
            Root::local(dir.path())
        };
        let mut toml = format!(
            "[archive]\nroot = \"{}\"\nolder_than = \"30d\"\nbatch_rows = 1000\nrow_group_rows = 4000\n\
             part_size_bytes = 5242880\nrows_per_second = 0\ns3_endpoint = \"{}\"\ns3_allow_http = true\n{extra}\n\
             [observability]\nlisten = \"127.0.0.1:0\"\n",
            root.url(),
            stack.s3_endpoint
        );
        for s in &dbs.shards {
            toml.push_str(&format!(
                "[[shards]]\nname = \"{}\"\nurl = \"{}\"\n",
                s.name, s.url
            ));
        }
        let config = dir.path().join("archiver.toml");
        std::fs::write(&config, toml).unwrap();
        let s = Self {
            log: dir.path().join("archiver.log"),
            dbs,
            root,
            config,
            dir,
        };
        let out = s.archiver(&["migrate"], &[]);
        assert!(out.status.success(), "migrate failed: {}", s.log_tail());
        s
    }

    /// The archiver command with this set-up's config and S3 credentials, log appended to
    /// [`Self::log`].
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut c = Command::new(archiver_binary());
        c.arg("--config")
            .arg(&self.config)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "vitalsink")
            .env("AWS_SECRET_ACCESS_KEY", "vitalsink")
            .env("RUST_LOG", "info")
            .env_remove(vitalsink_archiver_crash_env())
            .stdout(Stdio::piped())
            .stderr(log);
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    /// Runs the archiver to completion.
    pub fn archiver(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().unwrap()
    }

    /// Runs the archiver and asserts it succeeded; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.archiver(args, &[]);
        assert!(
            out.status.success(),
            "archiver {args:?} failed ({}): {}",
            out.status,
            self.log_tail()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The last lines of the archiver log.
    pub fn log_tail(&self) -> String {
        crate::ingest_run::log_tail(&self.log)
    }

    /// What DuckDB reads from the archive (and, with `day`, from that date partition).
    pub fn duckdb(&self, day: Option<&str>) -> DuckRead {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/archive_totals.py");
        let root = match &self.root {
            Root::Local(p) => p.display().to_string(),
            r => r.url(),
        };
        let mut c = Command::new("python3");
        c.arg(&script).arg(root);
        if let Some(d) = day {
            c.arg(d);
        }
        if let Root::S3 { endpoint, .. } = &self.root {
            c.env("S3_ENDPOINT", endpoint)
                .env("AWS_ACCESS_KEY_ID", "vitalsink")
                .env("AWS_SECRET_ACCESS_KEY", "vitalsink");
        }
        let out = c.output().expect("python3 missing: run dev/setup");
        assert!(
            out.status.success(),
            "DuckDB read failed (dev/setup installs duckdb and its extensions): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let totals = v["totals"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, t)| (k.clone(), (t[0].as_i64().unwrap(), t[1].as_f64().unwrap())))
            .collect();
        DuckRead {
            totals,
            ts_type: v["ts_type"].as_str().unwrap().to_string(),
            partitions: v["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect(),
            day_rows: v["day_rows"].as_i64(),
            day_files: v["day_files"].as_i64(),
            unsorted_rows: v["unsorted_rows"].as_i64().unwrap(),
        }
    }
}

impl ArchiveSetup {
    /// What pandas, pyarrow.dataset, polars, DuckDB and Spark read from the (local) archive folder,
    /// per reader, and whether the script succeeded (it fails when a reader reads no row).
    pub fn readers(&self) -> (bool, BTreeMap<String, ReaderRead>) {
        let Root::Local(root) = &self.root else {
            panic!("archive_readers.py reads a local archive")
        };
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/archive_readers.py");
        let out = Command::new("python3")
            .arg(&script)
            .arg(root)
            .output()
            .expect("python3 missing: run dev/setup");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("archive_readers.py printed no JSON ({e}; dev/setup installs pandas, pyarrow, polars, duckdb, pyspark and Java): {stderr}")
        });
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        let reads = v
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, r)| {
                let totals = r["totals"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, t)| (k.clone(), (t[0].as_i64().unwrap(), t[1].as_f64().unwrap())))
                    .collect();
                let read = ReaderRead {
                    rows: r["rows"].as_i64().unwrap(),
                    totals,
                    shards: strings(&r["shards"]),
                    dates: strings(&r["dates"]),
                    error: r["error"].as_str().map(str::to_string),
                };
                (name.clone(), read)
            })
            .collect();
        (out.status.success(), reads)
    }

    /// Asserts that pandas, pyarrow.dataset, polars, DuckDB and Spark each read every row of the
    /// (local) archive: none reads 0 rows, all agree with each other and with `want` (per
    /// participant rows and sum of value), and each sees the `shard` partitions of every
    /// configured shard. Returns the rows each read.
    pub fn assert_readers_read(&self, want: &Totals) -> BTreeMap<String, i64> {
        let (ok, reads) = self.readers();
        let rows: BTreeMap<String, i64> = reads.iter().map(|(k, r)| (k.clone(), r.rows)).collect();
        assert!(ok, "a reader read no row: {reads:?}");
        assert_eq!(
            reads.keys().map(String::as_str).collect::<Vec<_>>(),
            ["duckdb", "pandas", "polars", "pyarrow", "spark"]
        );
        let want_rows: i64 = want.values().map(|t| t.0).sum();
        assert!(want_rows > 0, "the archive should hold rows");
        let shards: Vec<String> = self.dbs.shards.iter().map(|s| s.name.clone()).collect();
        let first = reads.values().next().unwrap();
        for (name, r) in &reads {
            assert_eq!(r.error, None, "{name}");
            assert_eq!(r.rows, want_rows, "{name} rows (all readers: {rows:?})");
            assert_totals_eq(&r.totals, want, &format!("{name} vs the source"));
            assert_totals_eq(
                &r.totals,
                &first.totals,
                &format!("{name} vs the other readers"),
            );
            assert_eq!(r.shards, shards, "{name}: shard partitions");
            assert_eq!(r.dates, first.dates, "{name}: date partitions");
            assert!(!r.dates.is_empty(), "{name}: date partitions");
        }
        rows
    }

    /// Turns this set-up's archive into what the archiver wrote before the `part-…` layout
    /// (up to commit f931502): every object named after its chunk,
    /// `measurements/date=D/shard=S/<chunk_name>-<attempt>.parquet`, which Arrow, pandas and
    /// Spark skip as hidden, with that path in the shards' `archive_log` rows and in the
    /// manifest entries, and the shards' schema back at version 4 (no `renamed` step, no
    /// `renamed_from` column). That binary differed from today's in the object name only: the
    /// Parquet footers carry no path, and its manifest entries were the same JSON (today's
    /// leaves out `renamed_from` unless set), so the rewrite below (rename each object, the same
    /// substitution in the log and in each entry's text) gives that archive byte for byte.
    /// Returns the (current, old) path of every object renamed.
    pub async fn make_legacy(&self) -> Vec<(String, String)> {
        use futures::TryStreamExt;
        use object_store::path::Path as ObjPath;
        use object_store::{ObjectStoreExt, PutPayload};
        let store = self.root.store();
        let mut renamed = Vec::new();
        for s in &self.dbs.shards {
            let c = connect(&s.url).await;
            let rows = c
                .query(
                    "SELECT DISTINCT object_path, chunk_name, attempt FROM archive_log
                      WHERE object_path IS NOT NULL",
                    &[],
                )
                .await
                .unwrap();
            let mut paths = BTreeMap::new();
            for r in rows {
                let new: String = r.get(0);
                let (dir, _) = new.rsplit_once('/').unwrap();
                let old = format!(
                    "{dir}/{}-{}.parquet",
                    r.get::<_, String>(1),
                    r.get::<_, String>(2)
                );
                paths.insert(new, old);
            }
            for (new, old) in &paths {
                match store
                    .rename(&ObjPath::from(new.as_str()), &ObjPath::from(old.as_str()))
                    .await
                {
                    Ok(()) => renamed.push((new.clone(), old.clone())),
                    // Objects of discarded attempts are gone already.
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => panic!("rename {new}: {e}"),
                }
                c.execute(
                    "UPDATE archive_log SET object_path = $2 WHERE object_path = $1",
                    &[new, old],
                )
                .await
                .unwrap();
            }
            let dir = ObjPath::from(format!("manifest/shard={}", s.name));
            let entries: Vec<ObjPath> = store
                .list(Some(&dir))
                .map_ok(|m| m.location)
                .try_collect()
                .await
                .unwrap();
            for e in entries {
                let body = store.get(&e).await.unwrap().bytes().await.unwrap();
                let mut text = String::from_utf8(body.to_vec()).unwrap();
                for (new, old) in &paths {
                    text = text.replace(
                        &format!("\"object_path\":\"{new}\""),
                        &format!("\"object_path\":\"{old}\""),
                    );
                }
                assert!(!text.contains("renamed_from"), "{text}");
                if text.as_bytes() != body.as_ref() {
                    store
                        .put(&e, PutPayload::from(text.into_bytes()))
                        .await
                        .unwrap();
                }
            }
            c.batch_execute(
                "ALTER TABLE archive_log DROP COLUMN renamed_from;
                 ALTER TABLE archive_log DROP CONSTRAINT archive_log_step_check;
                 ALTER TABLE archive_log ADD CONSTRAINT archive_log_step_check
                     CHECK (step IN ('planned', 'written', 'verified', 'dropped', 'restored',
                                     'failed', 'discarded'));
                 DELETE FROM vitalsink_schema_version WHERE version > 4",
            )
            .await
            .unwrap();
        }
        renamed.sort();
        renamed
    }
}

/// What one reader got from the archive folder (`tests/scripts/archive_readers.py`).
#[derive(Debug, Clone)]
pub struct ReaderRead {
    /// Rows read.
    pub rows: i64,
    /// Per participant: rows, sum of value.
    pub totals: Totals,
    /// Values of the `shard` partition column seen.
    pub shards: Vec<String>,
    /// Values of the `date` partition column seen.
    pub dates: Vec<String>,
    /// The reader's exception, when it failed.
    pub error: Option<String>,
}

/// Whether some component of an object path starts with `_` or `.` (what Arrow datasets,
/// pandas, Spark and Hadoop skip as hidden).
pub fn is_hidden(path: &str) -> bool {
    path.split('/')
        .any(|c| c.starts_with('_') || c.starts_with('.'))
}

/// The name of the archiver's fault-injection variable (cleared unless a test sets it).
pub fn vitalsink_archiver_crash_env() -> &'static str {
    "ARCHIVER_CRASH_AT"
}

/// What DuckDB read from an archive.
#[derive(Debug, Clone)]
pub struct DuckRead {
    /// Per participant: rows, sum of value.
    pub totals: Totals,
    /// DuckDB's type of `ts`.
    pub ts_type: String,
    /// Hive partitions `date=…/shard=…` seen.
    pub partitions: Vec<String>,
    /// Rows of the requested date partition.
    pub day_rows: Option<i64>,
    /// Files read for the requested date partition.
    pub day_files: Option<i64>,
    /// Rows out of (participant_id, metric, ts) order within their file.
    pub unsorted_rows: i64,
}

/// The test data's shape.
#[derive(Debug, Clone, Copy)]
pub struct DataShape {
    /// Participants (spread over the shards by the routing rule).
    pub participants: usize,
    /// Readings per participant and metric (2 metrics) in the aged days.
    pub per_metric: i64,
    /// Spacing of the aged readings, seconds (starting 45 days ago at UTC midnight).
    pub every_secs: i64,
    /// Readings per participant in the last day (stay in the database).
    pub recent: i64,
    /// High-entropy device ids (makes the Parquet files big: about 20 bytes a row).
    pub bulky: bool,
}

/// Start of the aged data: UTC midnight 45 days ago.
pub fn aged_start() -> chrono::DateTime<chrono::Utc> {
    let d = (chrono::Utc::now() - chrono::Duration::days(45)).date_naive();
    d.and_hms_opt(0, 0, 0).unwrap().and_utc()
}

/// Inserts the data set into each participant's shard; returns the combined per-participant
/// totals. Values are multiples of 0.25, so sums are exact; the first 3 readings of each
/// participant are inserted twice (repeated readings must survive the archive too).
pub async fn load(shards: &[ShardConfig], shape: DataShape) -> Totals {
    let router = ShardRouter::new(shards.len());
    let mut by_shard = vec![Vec::new(); shards.len()];
    for p in 0..shape.participants {
        let pid = format!("P{p:04}");
        by_shard[router.shard_for(&pid)].push(pid);
    }
    let start = aged_start();
    let recent_start = chrono::Utc::now() - chrono::Duration::hours(23);
    let device = if shape.bulky {
        "md5(p || m || i::text)"
    } else {
        "'dev-' || p"
    };
    for (s, pids) in shards.iter().zip(by_shard) {
        let c = connect(&s.url).await;
        let sql = format!(
            "INSERT INTO measurements (participant_id, metric, ts, value, unit, device_id, study_id)
             SELECT p, m, $2::timestamptz + make_interval(secs => i * $3::bigint),
                    ((i * 7 + length(p) + ascii(m)) % 4000) * 0.25,
                    CASE WHEN i % 5 = 0 THEN NULL ELSE 'u-' || m END, {device},
                    CASE WHEN i % 2 = 0 THEN 'study-a' END
               FROM unnest($1::text[]) p, unnest(ARRAY['hr', 'spo2']) m,
                    generate_series(0, $4::bigint - 1) i"
        );
        c.execute(&sql, &[&pids, &start, &shape.every_secs, &shape.per_metric])
            .await
            .unwrap();
        c.execute(&sql, &[&pids, &start, &shape.every_secs, &3i64])
            .await
            .unwrap();
        c.execute(&sql, &[&pids, &recent_start, &3600i64, &shape.recent])
            .await
            .unwrap();
        c.batch_execute("ANALYZE measurements").await.unwrap();
    }
    db_totals(shards).await
}

/// Per participant (rows, sum of value) over all shards' `measurements`.
pub async fn db_totals(shards: &[ShardConfig]) -> Totals {
    totals(shards, "", &[]).await
}

/// Per participant (rows, sum of value) of the rows matching `filter` (SQL after `WHERE`,
/// empty for all) with parameters `params`, over all shards.
async fn totals(
    shards: &[ShardConfig],
    filter: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Totals {
    let filter = if filter.is_empty() {
        String::new()
    } else {
        format!("WHERE {filter}")
    };
    let sql = format!(
        "SELECT participant_id, count(*), sum(value) FROM measurements {filter} GROUP BY 1"
    );
    let mut out = Totals::new();
    for s in shards {
        for r in connect(&s.url).await.query(&sql, params).await.unwrap() {
            let e = out.entry(r.get(0)).or_insert((0, 0.0));
            e.0 += r.get::<_, i64>(1);
            e.1 += r.get::<_, f64>(2);
        }
    }
    out
}

/// Per participant totals of `a` less those of `b` (participants left with no row dropped).
pub fn sub(a: &Totals, b: &Totals) -> Totals {
    let mut out = a.clone();
    for (k, (n, s)) in b {
        let e = out.entry(k.clone()).or_insert((0, 0.0));
        e.0 -= n;
        e.1 -= s;
    }
    out.retain(|_, t| t.0 != 0);
    out
}

/// Per participant totals of two sources added up.
pub fn add(a: &Totals, b: &Totals) -> Totals {
    let mut out = a.clone();
    for (k, (n, s)) in b {
        let e = out.entry(k.clone()).or_insert((0, 0.0));
        e.0 += n;
        e.1 += s;
    }
    out
}

/// Chunks of `measurements` on a shard whose range ends before the 30-day window.
pub async fn aged_chunk_count(shard: &ShardConfig) -> i64 {
    connect(&shard.url)
        .await
        .query_one(
            "SELECT count(*) FROM timescaledb_information.chunks
              WHERE hypertable_name = 'measurements' AND range_end <= now() - interval '30 days'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The archive log of a shard: (chunk, attempt, step, id) in id order.
pub async fn log_steps(shard: &ShardConfig) -> Vec<(String, String, String, i64)> {
    connect(&shard.url)
        .await
        .query(
            "SELECT chunk_name, coalesce(attempt, ''), step, id FROM archive_log ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// Asserts that every chunk in a shard's archive log went planned → written → verified →
/// dropped, in that order, in one attempt; returns the log ([`log_steps`]).
pub async fn assert_each_chunk_archived_once(
    shard: &ShardConfig,
) -> Vec<(String, String, String, i64)> {
    let steps = log_steps(shard).await;
    let chunks: std::collections::BTreeSet<&String> = steps.iter().map(|s| &s.0).collect();
    for c in chunks {
        let seq: Vec<&str> = steps
            .iter()
            .filter(|s| &s.0 == c)
            .map(|s| s.2.as_str())
            .collect();
        assert_eq!(
            seq,
            ["planned", "written", "verified", "dropped"],
            "{}: {c}",
            shard.name
        );
    }
    steps
}

/// The archive log of a shard with paths: (chunk, attempt, step, object path, renamed from),
/// restores left out, in id order.
pub async fn log_paths(
    shard: &ShardConfig,
) -> Vec<(String, String, String, Option<String>, Option<String>)> {
    connect(&shard.url)
        .await
        .query(
            "SELECT chunk_name, coalesce(attempt, ''), step, object_path, renamed_from
               FROM archive_log WHERE step <> 'restored' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

/// Parquet objects under the root's `measurements/`.
pub async fn parquet_objects(root: &Root) -> Vec<String> {
    use futures::TryStreamExt;
    let store = root.store();
    let mut v: Vec<String> = store
        .list(Some(&object_store::path::Path::from("measurements")))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    v.retain(|p| p.ends_with(".parquet"));
    v.sort();
    v
}

/// Every file under a local root's `measurements/` (relative paths, sorted), whatever its
/// name: unlike [`parquet_objects`] (object_store's listing, which leaves out the staging
/// files `<name>#<n>` of LocalFileSystem), this is what pandas and pyarrow would open.
pub fn local_files(root: &Root) -> Vec<String> {
    let Root::Local(dir) = root else {
        panic!("local_files lists a local archive")
    };
    let mut out = Vec::new();
    let mut todo = vec![dir.join("measurements")];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// Asserts two totals are equal participant by participant.
pub fn assert_totals_eq(got: &Totals, want: &Totals, what: &str) {
    let keys: std::collections::BTreeSet<_> = got.keys().chain(want.keys()).collect();
    for k in keys {
        assert_eq!(got.get(k), want.get(k), "{what}: participant {k}");
    }
}

/// Per-shard row counts, for messages.
pub async fn rows_per_shard(shards: &[ShardConfig]) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for s in shards {
        let n: i64 = connect(&s.url)
            .await
            .query_one("SELECT count(*) FROM measurements", &[])
            .await
            .unwrap()
            .get(0);
        m.insert(s.name.clone(), n);
    }
    m
}

/// Rows of all shards with `ts` in `[from, to)`, per participant.
pub async fn window_totals(
    shards: &[ShardConfig],
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Totals {
    totals(shards, "ts >= $1 AND ts < $2", &[&from, &to]).await
}

/// The shape of the round-trip tests: 40 participants, 2 metrics, a reading every 3 minutes
/// for about 4.2 days starting 45 days ago (5 aged daily chunks per shard), and 20 hourly
/// readings in the last day that stay in the database.
pub const ROUND_TRIP: DataShape = DataShape {
    participants: 40,
    per_metric: 2_000,
    every_secs: 180,
    recent: 20,
    bulky: false,
};

/// The done-when scenario of issue 4 on one kind of root: chunks older than the window on
/// both shards are archived, dropped only after verification, and DuckDB over the archive
/// plus the rows left in the shards gives exactly the original per-participant counts and
/// sums; a second run moves nothing more; `verify` passes.
pub async fn round_trip(s3: bool) {
    let stack = Stack::from_env();
    // Small sort buffers exercise both ways of sorting: on the local directory every
    // participant (960 rows a chunk) exceeds 500 rows and is sorted by PostgreSQL alone; on S3
    // participants are grouped into spilled buckets of at most 3,000 rows sorted here.
    let (prefix, extra) = if s3 {
        ("t_arch_s3", "sort_buffer_rows = 3000")
    } else {
        ("t_arch_nas", "sort_buffer_rows = 500")
    };
    let setup = ArchiveSetup::new(&stack, prefix, s3, extra).await;
    let original = load(&setup.dbs.shards, ROUND_TRIP).await;
    let day = aged_start() + chrono::Duration::days(1);
    let day_original = window_totals(&setup.dbs.shards, day, day + chrono::Duration::days(1)).await;
    let mut aged = 0;
    for s in &setup.dbs.shards {
        let n = aged_chunk_count(s).await;
        assert!(n >= 5, "{}: {n} aged chunks", s.name);
        aged += n;
    }

    let plan = setup.ok(&["plan", "--json"]);
    let planned: Vec<serde_json::Value> = plan
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        planned.len() as i64,
        aged,
        "plan lists every aged chunk: {plan}"
    );
    assert!(planned
        .iter()
        .all(|p| p["rows"].as_i64() > Some(0) && p["bytes_on_disk"].as_i64() > Some(0)));
    assert_eq!(
        aged_chunk_count(&setup.dbs.shards[0]).await + aged_chunk_count(&setup.dbs.shards[1]).await,
        aged,
        "plan is a dry run"
    );

    let report: serde_json::Value = serde_json::from_str(&setup.ok(&["run"])).unwrap();
    assert_eq!(report["archived"].as_i64(), Some(aged), "{report}");
    assert_eq!(report["failed"].as_i64(), Some(0), "{report}");
    for s in &setup.dbs.shards {
        assert_eq!(aged_chunk_count(s).await, 0, "{}: aged chunks left", s.name);
        assert_each_chunk_archived_once(s).await;
    }
    let left = db_totals(&setup.dbs.shards).await;
    assert!(
        left.values().all(|(n, _)| *n == 2 * ROUND_TRIP.recent),
        "recent rows stay"
    );

    let duck = setup.duckdb(Some(&day.format("%Y-%m-%d").to_string()));
    assert_totals_eq(
        &add(&duck.totals, &left),
        &original,
        "DuckDB archive + shards vs original",
    );
    assert_eq!(duck.ts_type, "TIMESTAMP WITH TIME ZONE");
    assert_eq!(
        duck.unsorted_rows, 0,
        "rows sorted by participant, metric, ts in every file"
    );
    assert!(duck.partitions.iter().any(|p| p.ends_with("shard=shard0")));
    assert!(duck.partitions.iter().any(|p| p.ends_with("shard=shard1")));
    let day_rows: i64 = day_original.values().map(|t| t.0).sum();
    assert_eq!(duck.day_rows, Some(day_rows), "rows of the date partition");
    assert_eq!(duck.day_files, Some(2), "one file per shard for that date");

    let objects = parquet_objects(&setup.root).await;
    assert_eq!(
        objects.len() as i64,
        aged,
        "one object per chunk: {objects:?}"
    );
    let again: serde_json::Value = serde_json::from_str(&setup.ok(&["run"])).unwrap();
    assert_eq!(again["archived"].as_i64(), Some(0), "{again}");
    assert_eq!(
        parquet_objects(&setup.root).await,
        objects,
        "a second run writes nothing"
    );
    let verify: serde_json::Value = serde_json::from_str(&setup.ok(&["verify"])).unwrap();
    assert_eq!(verify["good"].as_i64(), Some(aged), "{verify}");
    setup.dbs.drop_all().await;
}
