//! Running the real `trial` binary against a throwaway two-shard deployment for the erasure
//! tests (issue 26): readings with provenance of several participants over 45 days ago … now,
//! one participant ([`VICTIM`]) on *both* shards, archived in two passes by the real
//! `archiver run` with a dataset lock taken between them (so the lock holds archived objects
//! and hot chunks that were archived afterwards), and what every reader finds afterwards:
//! `query` (shards + archive, or `--lock`), and DuckDB, pandas and pyarrow over the archive
//! folder (`tests/scripts/erasure_readers.py`).

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use vitalsink_common::config::ShardConfig;
use vitalsink_common::routing::ShardRouter;

use crate::archive_run::{aged_start, db_totals, ArchiveSetup, Root};
use crate::dataset::Totals;
use crate::ingest_run::log_tail;
use crate::query_run::query_binary;
use crate::{connect, Stack};

/// The participant erased. Its rows are on both shards (as after a shard move), in 5 archived
/// days on its own shard and 4 on the other, 3 later archived days and the last 30 hours.
pub const VICTIM: &str = "P0005";
/// A participant whose id starts with the victim's (and sorts right after it, so the two share
/// row groups): erasure must match the id exactly.
pub const NEIGHBOUR: &str = "P00050";
/// The reason the erasure is run with.
pub const ERASE_REASON: &str = "participant request (GDPR Art. 17), ticket 4711";
/// The lock taken before the erasure.
pub const LOCK: &str = "interim-analysis-1";

/// The erasure's fault-injection points (`TRIAL_CRASH_AT`), in the order the command reaches
/// them.
pub const KILL_POINTS: [&str; 7] = [
    "after-status",
    "after-hot-delete",
    "after-object-write",
    "after-swap",
    "after-lock-revision",
    "before-delete",
    "before-audit",
];

/// Path of the `trial` binary cargo built (`cargo build -p vitalsink-trial`).
pub fn trial_binary() -> PathBuf {
    let bin = query_binary().with_file_name("trial");
    assert!(
        bin.exists(),
        "{} missing: build it with `cargo build -p vitalsink-trial`",
        bin.display()
    );
    bin
}

/// Participants other than the victim: `P0001`..`P0009` and [`NEIGHBOUR`].
pub fn others() -> Vec<String> {
    let mut v: Vec<String> = (1..=9)
        .map(|i| format!("P{i:04}"))
        .filter(|p| p != VICTIM)
        .collect();
    v.push(NEIGHBOUR.to_string());
    v
}

/// One batch of readings: `n` per metric (`hr`, `spo2`) every `every_secs` from `start`.
/// Values are multiples of 0.25 (sums are exact in float8); the victim's all end in .25 or
/// .75, so an integer in an audit entry is never one of them. Provenance as ingest writes it:
/// the device's UTC offset (or NULL), occurrence 0, received 2 s after the reading
/// (CreateTime, or LogAppendTime for some), source topic, partition and offset.
#[allow(clippy::too_many_arguments)]
async fn insert(
    c: &tokio_postgres::Client,
    pids: &[String],
    start: chrono::DateTime<chrono::Utc>,
    every_secs: i64,
    n: i64,
    victim_values: bool,
    offset_base: i64,
) {
    let value = if victim_values {
        "(60 + (i * 7 + ascii(m)) % 300) + 0.25 + 0.5 * (i % 2)"
    } else {
        "((i * 7 + length(p) + ascii(m)) % 4000) * 0.25"
    };
    let sql = format!(
        "INSERT INTO measurements (participant_id, metric, ts, value, unit, device_id, study_id,
                                   utc_offset_min, occurrence, received_at, received_at_type,
                                   src_topic, src_partition, src_offset)
         SELECT p, m, $2::timestamptz + make_interval(secs => i * $3::bigint), {value},
                CASE m WHEN 'hr' THEN '/min' ELSE '%' END, 'W-' || p || '-wrist', 'study-a',
                CASE i % 3 WHEN 0 THEN 60 WHEN 1 THEN -300 END, 0,
                $2::timestamptz + make_interval(secs => i * $3::bigint + 2),
                CASE WHEN i % 4 = 0 THEN 1 ELSE 0 END, 'vitals.measurements',
                abs(hashtext(p)) % 6, $5::bigint + 2 * i + (m = 'spo2')::int
           FROM unnest($1::text[]) p, unnest(ARRAY['hr', 'spo2']) m,
                generate_series(0, $4::bigint - 1) i"
    );
    c.execute(&sql, &[&pids, &start, &every_secs, &n, &offset_base])
        .await
        .unwrap();
}

/// Where the data set's last 30 hours start: 30 h before the first call, the same for every
/// deployment of one test process. Computed per deployment, it moved the hourly readings'
/// split between yesterday's and today's chunk whenever two deployments compared with each
/// other were loaded on either side of a full hour (a CI run at 17:55–18:02 UTC: 10 rows in
/// the other chunk of the lock's revision 2).
fn recent_start() -> chrono::DateTime<chrono::Utc> {
    static START: std::sync::OnceLock<chrono::DateTime<chrono::Utc>> = std::sync::OnceLock::new();
    *START.get_or_init(|| chrono::Utc::now() - chrono::Duration::hours(30))
}

/// Loads the data set (see the module documentation); returns the per-participant totals.
///
/// Per shard: its routed participants (and the victim on the victim's own shard) with a
/// reading every 30 min per metric over 5 days from 45 days ago and 3 days from 35 days ago,
/// and hourly in the last 30 h; on the other shard the victim's readings of days 2–5, day 11
/// and the last 29 h (15 min later than on its own shard).
pub async fn load(shards: &[ShardConfig]) -> Totals {
    assert_eq!(shards.len(), 2, "the erasure tests want two shards");
    let router = ShardRouter::new(shards.len());
    let home = router.shard_for(VICTIM);
    let day = chrono::Duration::days(1);
    let base = aged_start();
    let recent = recent_start();
    let quarter = chrono::Duration::minutes(15);
    for (i, s) in shards.iter().enumerate() {
        let c = connect(&s.url).await;
        let mut pids: Vec<String> = others()
            .into_iter()
            .filter(|p| router.shard_for(p) == i)
            .collect();
        pids.sort();
        assert!(!pids.is_empty(), "{}: no participant routed here", s.name);
        let off = 1_000_000 * i as i64;
        insert(&c, &pids, base, 1800, 5 * 48, false, off).await;
        insert(
            &c,
            &pids,
            base + day * 10,
            1800,
            3 * 48,
            false,
            off + 100_000,
        )
        .await;
        insert(&c, &pids, recent, 3600, 30, false, off + 200_000).await;
        let v = vec![VICTIM.to_string()];
        if i == home {
            insert(&c, &v, base, 1800, 5 * 48, true, off + 300_000).await;
            insert(&c, &v, base + day * 10, 1800, 3 * 48, true, off + 400_000).await;
            insert(&c, &v, recent, 3600, 30, true, off + 500_000).await;
        } else {
            insert(
                &c,
                &v,
                base + day + quarter,
                1800,
                4 * 48,
                true,
                off + 300_000,
            )
            .await;
            insert(
                &c,
                &v,
                base + day * 11 + quarter,
                1800,
                48,
                true,
                off + 400_000,
            )
            .await;
            insert(&c, &v, recent + quarter, 3600, 29, true, off + 500_000).await;
        }
        c.batch_execute("ANALYZE measurements").await.unwrap();
    }
    db_totals(shards).await
}

/// Every value of the victim's readings over the shards (before the erasure).
pub async fn victim_values(shards: &[ShardConfig]) -> Vec<f64> {
    let mut out = Vec::new();
    for s in shards {
        for r in connect(&s.url)
            .await
            .query(
                "SELECT DISTINCT value FROM measurements WHERE participant_id = $1",
                &[&VICTIM],
            )
            .await
            .unwrap()
        {
            out.push(r.get(0));
        }
    }
    out
}

/// Rows of `participant` in each shard's `measurements`.
pub async fn hot_rows(shards: &[ShardConfig], participant: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for s in shards {
        out.push(
            connect(&s.url)
                .await
                .query_one(
                    "SELECT count(*) FROM measurements WHERE participant_id = $1",
                    &[&participant],
                )
                .await
                .unwrap()
                .get(0),
        );
    }
    out
}

/// A deployment ready for the erasure: data loaded, archived in two passes around a lock.
#[derive(Debug)]
pub struct Deployment {
    /// Databases, archive root, config, archiver log.
    pub setup: ArchiveSetup,
    /// Per participant rows and sum of value over everything, before any archiving.
    pub truth: Totals,
    /// The victim's rows left in the shards when the erasure starts.
    pub victim_hot: i64,
    /// Per participant rows and sum of value in the shards when the erasure starts.
    pub hot_before: Totals,
    /// Log of the trial and query runs.
    pub log: PathBuf,
}

impl Deployment {
    /// Fresh databases and archive root (`s3` or a local folder), the data set, `archiver run
    /// --older-than 40d` (the first 5 days), `trial lock create` [`LOCK`], `archiver run` (the
    /// 30-day window: 3 more days). Checks that `query` and `query --lock` read the truth.
    pub async fn build(stack: &Stack, prefix: &str, s3: bool) -> Self {
        let setup = ArchiveSetup::new(stack, prefix, s3, "").await;
        let truth = load(&setup.dbs.shards).await;
        assert_eq!(truth.len(), 10, "participants: {truth:?}");
        let log = setup.dir.path().join("trial.log");
        let first: Value =
            serde_json::from_str(&setup.ok(&["run", "--older-than", "40d"])).unwrap();
        assert!(first["archived"].as_i64().unwrap() >= 10, "{first}");
        assert_eq!(first["failed"].as_i64(), Some(0), "{first}");
        let mut d = Self {
            setup,
            truth,
            victim_hot: 0,
            hot_before: Totals::new(),
            log,
        };
        let lock = d.trial_json(&["lock", "create", LOCK, "--reason", "interim analysis"]);
        assert!(lock["hot_objects"].as_i64().unwrap() > 0, "{lock}");
        assert!(lock["archive_objects"].as_i64().unwrap() >= 10, "{lock}");
        let second: Value = serde_json::from_str(&d.setup.ok(&["run"])).unwrap();
        assert!(second["archived"].as_i64().unwrap() >= 4, "{second}");
        assert_eq!(second["failed"].as_i64(), Some(0), "{second}");
        d.victim_hot = hot_rows(&d.setup.dbs.shards, VICTIM).await.iter().sum();
        d.hot_before = db_totals(&d.setup.dbs.shards).await;
        let per_shard = hot_rows(&d.setup.dbs.shards, VICTIM).await;
        assert!(
            per_shard.iter().all(|n| *n > 0),
            "victim hot on every shard: {per_shard:?}"
        );
        assert!(d.victim_hot < d.truth[VICTIM].0, "victim rows archived");
        crate::archive_run::assert_totals_eq(
            &d.query_totals(&[]),
            &d.truth,
            "query before the erasure",
        );
        crate::archive_run::assert_totals_eq(
            &d.query_totals(&["--lock", LOCK]),
            &d.truth,
            "query --lock before the erasure",
        );
        d
    }

    /// A deployment whose archive objects are bigger than one multipart part (5 MiB): one
    /// chunk per shard of about 400,000 rows with high-entropy device ids (the shape of
    /// `archiver_crash_resume`), the victim among 20 participants on its own shard, archived by
    /// `archiver run`; no lock. On a local folder.
    pub async fn bulky(stack: &Stack, prefix: &str) -> Self {
        let setup = ArchiveSetup::new(stack, prefix, false, "").await;
        let shape = crate::archive_run::DataShape {
            participants: 20,
            per_metric: 20_000,
            every_secs: 4,
            recent: 5,
            bulky: true,
        };
        let truth = crate::archive_run::load(&setup.dbs.shards, shape).await;
        assert!(truth.contains_key(VICTIM), "{truth:?}");
        let run: Value = serde_json::from_str(&setup.ok(&["run"])).unwrap();
        assert!(run["archived"].as_i64().unwrap() >= 2, "{run}");
        assert_eq!(run["failed"].as_i64(), Some(0), "{run}");
        let log = setup.dir.path().join("trial.log");
        let victim_hot = hot_rows(&setup.dbs.shards, VICTIM).await.iter().sum();
        let hot_before = db_totals(&setup.dbs.shards).await;
        Self {
            setup,
            truth,
            victim_hot,
            hot_before,
            log,
        }
    }

    /// Every file under a local root (relative paths, sorted), whatever its name: what
    /// pandas and pyarrow would open besides what object_store lists.
    pub fn local_files(&self) -> Vec<String> {
        let Root::Local(dir) = &self.setup.root else {
            panic!("local_files lists a local archive")
        };
        let mut out = Vec::new();
        let mut todo = vec![dir.clone()];
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

    /// The victim's rows in the archive before the erasure.
    pub fn victim_archived(&self) -> i64 {
        self.truth[VICTIM].0 - self.victim_hot
    }

    /// The truth without the victim.
    pub fn expected(&self) -> Totals {
        let mut t = self.truth.clone();
        t.remove(VICTIM);
        t
    }

    fn env(&self, c: &mut Command) {
        c.arg("--config")
            .arg(&self.setup.config)
            .env("AWS_ACCESS_KEY_ID", "vitalsink")
            .env("AWS_SECRET_ACCESS_KEY", "vitalsink")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .env_remove("TRIAL_CRASH_AT");
    }

    fn log_file(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap()
    }

    /// `trial --config … ARGS` with extra environment `env`, stdout piped, stderr appended to
    /// [`Self::log`].
    pub fn trial_command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(trial_binary());
        self.env(&mut c);
        c.args(args).stdout(Stdio::piped()).stderr(self.log_file());
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    /// Runs [`Self::trial_command`] to its end.
    pub fn trial(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.trial_command(args, env).output().unwrap()
    }

    /// `trial ARGS`, which must succeed; its stdout.
    pub fn trial_ok(&self, args: &[&str]) -> String {
        let out = self.trial(args, &[]);
        assert!(
            out.status.success(),
            "trial {args:?}: {}\n{}",
            out.status,
            log_tail(&self.log)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `trial ARGS`, which must succeed and print one JSON line.
    pub fn trial_json(&self, args: &[&str]) -> Value {
        let text = self.trial_ok(args);
        serde_json::from_str(text.trim())
            .unwrap_or_else(|e| panic!("trial {args:?} printed {text:?}: {e}"))
    }

    /// `trial ARGS` printing JSON lines, which must succeed.
    pub fn trial_lines(&self, args: &[&str]) -> Vec<Value> {
        self.trial_ok(args)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// `trial participants erase VICTIM --reason …`, killed at `crash` when given.
    pub fn erase_command(&self, crash: Option<&str>) -> Command {
        let env: Vec<(&str, &str)> = crash.map(|p| ("TRIAL_CRASH_AT", p)).into_iter().collect();
        self.trial_command(
            &["participants", "erase", VICTIM, "--reason", ERASE_REASON],
            &env,
        )
    }

    /// Runs [`Self::erase_command`] to its end.
    pub fn erase(&self, crash: Option<&str>) -> Output {
        self.erase_command(crash).output().unwrap()
    }

    /// `query [global] sql SQL --format json`, which must succeed; its rows.
    pub fn query(&self, global: &[&str], sql: &str) -> Vec<Value> {
        let mut c = Command::new(query_binary());
        c.arg("--config")
            .arg(&self.setup.config)
            .args(global)
            .args(["sql", sql, "--format", "json"])
            .env("AWS_ACCESS_KEY_ID", "vitalsink")
            .env("AWS_SECRET_ACCESS_KEY", "vitalsink")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(self.log_file());
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "query {global:?} {sql}: {}\n{}",
            out.status,
            log_tail(&self.log)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Per participant rows and sum of value through `query [global]`.
    pub fn query_totals(&self, global: &[&str]) -> Totals {
        self.query(
            global,
            "SELECT participant_id, count(*) AS n, sum(value) AS s FROM measurements GROUP BY 1",
        )
        .iter()
        .map(|r| {
            (
                r["participant_id"].as_str().unwrap().to_string(),
                (r["n"].as_i64().unwrap(), r["s"].as_f64().unwrap()),
            )
        })
        .collect()
    }

    /// What DuckDB, pandas and pyarrow find in the archive (`erasure_readers.py`).
    pub fn readers(&self) -> Readers {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/erasure_readers.py");
        let root = match &self.setup.root {
            Root::Local(p) => p.display().to_string(),
            r => r.url(),
        };
        let mut c = Command::new("python3");
        c.arg(&script).arg(root).arg(VICTIM);
        if let Root::S3 { endpoint, .. } = &self.setup.root {
            c.env("S3_ENDPOINT", endpoint)
                .env("AWS_ACCESS_KEY_ID", "vitalsink")
                .env("AWS_SECRET_ACCESS_KEY", "vitalsink");
        }
        let out = c.output().expect("python3 missing: run dev/setup");
        assert!(
            out.status.success(),
            "erasure_readers.py failed (dev/setup installs duckdb, pandas, pyarrow): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let readers = v["readers"]
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
                (
                    name.clone(),
                    Read {
                        rows: r["rows"].as_i64().unwrap(),
                        totals,
                        victim_rows: r["victim_rows"].as_i64().unwrap(),
                        shards: strings(&r["shards"]),
                        dates: strings(&r["dates"]),
                        error: r["error"].as_str().map(str::to_string),
                    },
                )
            })
            .collect();
        Readers {
            readers,
            everywhere_victim_rows: v["everywhere_victim_rows"].as_i64().unwrap(),
            files: v["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| (f[0].as_str().unwrap().to_string(), f[1].as_i64().unwrap()))
                .collect(),
        }
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// What one reader found in `ROOT/measurements`.
#[derive(Debug, Clone)]
pub struct Read {
    /// Rows read.
    pub rows: i64,
    /// Per participant rows and sum of value.
    pub totals: Totals,
    /// Rows of the victim found with the reader's own filter.
    pub victim_rows: i64,
    /// `shard` partition values.
    pub shards: Vec<String>,
    /// `date` partition values.
    pub dates: Vec<String>,
    /// The reader's exception.
    pub error: Option<String>,
}

/// What `erasure_readers.py` found.
#[derive(Debug, Clone)]
pub struct Readers {
    /// Per reader (`duckdb`, `pandas`, `pyarrow`).
    pub readers: BTreeMap<String, Read>,
    /// The victim's rows in any Parquet object under the root (locks included).
    pub everywhere_victim_rows: i64,
    /// Every Parquet object under the root, relative path and rows.
    pub files: Vec<(String, i64)>,
}
