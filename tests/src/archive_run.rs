//! Running the real `archiver` binary against the stack: shard data with chunks older than
//! the window, a configuration per test, the archive read back with DuckDB
//! (`tests/scripts/archive_totals.py`), and what the shards still hold.

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
        // Every chunk went planned → written → verified → dropped, in that order, one attempt.
        let steps = log_steps(s).await;
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
                s.name
            );
        }
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
