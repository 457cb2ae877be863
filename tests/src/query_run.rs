//! Running the real `query` binary: a deployment holding every real recording over the shards
//! and the Parquet archive (what `dev/run` builds), the source truth to check answers
//! against, and a `query serve` to connect analysts' clients to.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::ingest_run::{ingest_binary, log_tail, prepare, stop_gracefully, wait_for_rows};
use crate::replay_run::{archive_config, archiver_json, fetch_data};
use crate::{ShardDbs, Stack};

/// Path of the `query` binary cargo built for this test run.
pub fn query_binary() -> PathBuf {
    ingest_binary().with_file_name("query")
}

/// Key → (rows, sum).
pub type Sums = BTreeMap<String, (i64, f64)>;

/// Whether two sums agree to 1e-9 relative.
pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Asserts `got` has exactly `want`'s keys, rows and sums (to 1e-9 relative).
pub fn assert_sums(got: &Sums, want: &Sums, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: keys");
    for (k, (n, s)) in want {
        let (gn, gs) = got.get(k).unwrap_or_else(|| panic!("{what}: {k} missing"));
        assert_eq!(gn, n, "{what}: {k} rows");
        assert!(close(*gs, *s), "{what}: {k} sum {gs} vs {s}");
    }
}

/// The replay's source truth (`truth.json`).
#[derive(Debug)]
pub struct Truth {
    /// Per participant.
    pub participants: Sums,
    /// Per `participant|metric|day`.
    pub daily: Sums,
}

impl Truth {
    /// Reads `truth.json`.
    pub fn read(path: &Path) -> Self {
        let t: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut participants = Sums::new();
        for p in t["participants"].as_array().unwrap() {
            participants.insert(
                p["participant_id"].as_str().unwrap().into(),
                (p["rows"].as_i64().unwrap(), p["sum"].as_f64().unwrap()),
            );
        }
        let mut daily = Sums::new();
        for d in t["daily"].as_array().unwrap() {
            daily.insert(
                format!(
                    "{}|{}|{}",
                    d["participant_id"].as_str().unwrap(),
                    d["metric"].as_str().unwrap(),
                    d["day"].as_str().unwrap()
                ),
                (d["rows"].as_i64().unwrap(), d["sum"].as_f64().unwrap()),
            );
        }
        Self {
            participants,
            daily,
        }
    }

    /// Every reading.
    pub fn total(&self) -> i64 {
        self.participants.values().map(|(n, _)| n).sum()
    }
}

/// A deployment holding the real recordings.
pub struct RealDeployment {
    /// The shard databases (drop them at the end).
    pub dbs: ShardDbs,
    /// The ingest set-up it was written with.
    pub setup: crate::ingest_run::IngestSetup,
    /// The test's directory (logs, truth, archive).
    pub dir: tempfile::TempDir,
    /// The source truth.
    pub truth: Truth,
    /// Where `truth.json` is.
    pub truth_path: PathBuf,
}

impl RealDeployment {
    /// `replay real` of every recording into fresh topics and shard databases, drained by one
    /// ingest worker (stopped with SIGTERM).
    pub async fn ingested(stack: &Stack, prefix: &str) -> Self {
        let (dbs, setup, dir) = prepare(stack, prefix).await;
        let d = dir.path();
        let truth_path = d.join("truth.json");
        let rlog = d.join("replay.log");
        let st = Command::new(ingest_binary().with_file_name("replay"))
            .arg("--config")
            .arg(&setup.config)
            .args([
                "real",
                "--data",
                fetch_data().to_str().unwrap(),
                "--truth-out",
                truth_path.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&rlog).unwrap())
            .status()
            .unwrap();
        assert!(st.success(), "{}", log_tail(&rlog));
        let truth = Truth::read(&truth_path);
        let total = truth.total();
        let wlog = d.join("ingest.log");
        let w = setup.spawn(&wlog);
        assert_eq!(
            wait_for_rows(&dbs.shards, total, Duration::from_secs(300)).await,
            total,
            "{}",
            log_tail(&wlog)
        );
        stop_gracefully(w, &wlog).await;
        Self {
            dbs,
            setup,
            dir,
            truth,
            truth_path,
        }
    }

    /// The configuration with a local archive (chunks older than 3 days), as `dev/run`.
    pub fn archive_config(&self) -> PathBuf {
        archive_config(&self.setup.config, &self.dir.path().join("archive"), "3d")
    }

    /// [`RealDeployment::ingested`], then `archiver run` with [`Self::archive_config`];
    /// returns the configuration.
    pub async fn archived(stack: &Stack, prefix: &str) -> (Self, PathBuf) {
        let d = Self::ingested(stack, prefix).await;
        let config = d.archive_config();
        let run = archiver_json(&config, &["run"], &d.dir.path().join("archiver.log"));
        assert!(run["archived"].as_i64().unwrap() > 0, "{run}");
        (d, config)
    }
}

/// A running `query serve`.
pub struct Server {
    /// The process.
    pub child: Child,
    /// Its Flight SQL address, `127.0.0.1:PORT`.
    pub addr: String,
    /// Its log file.
    pub log: PathBuf,
}

impl Server {
    /// Starts `query --config config [global] serve [serve_args]` on free loopback ports
    /// (Flight SQL and metrics), logging at info into `log`, and waits for its address.
    pub async fn start(config: &Path, global: &[&str], serve_args: &[&str], log: &Path) -> Self {
        let mut child = Command::new(query_binary())
            .arg("--config")
            .arg(config)
            .args(["--listen", "127.0.0.1:0"])
            .args(global)
            .args(["serve", "--flight-listen", "127.0.0.1:0"])
            .args(serve_args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        for _ in 0..300 {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(l) = text.lines().find(|l| l.contains("Flight SQL up")) {
                let addr = l
                    .split("addr=")
                    .nth(1)
                    .and_then(|a| a.split_whitespace().next())
                    .map(str::to_string)
                    .unwrap_or_else(|| panic!("no addr= in {l}"));
                return Self {
                    child,
                    addr,
                    log: log.to_path_buf(),
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("no Flight SQL address\n{}", log_tail(log));
    }

    /// The server's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let maddr = crate::ingest_run::endpoints_addr(&self.log).await;
        crate::ingest_run::http_get(&maddr, "/metrics").await.1
    }

    /// Stops it.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Server {
    /// A failing test stops its server too.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `name{…label…}` in Prometheus text, 0 when absent.
pub fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Adds analyst `name` with `password` to the accounts file `users` (`query add-user`).
pub fn add_user(users: &Path, name: &str, password: &str) {
    let mut c = Command::new(query_binary())
        .args(["add-user", "--users-file"])
        .arg(users)
        .arg(name)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(c.stdin.take().unwrap(), "{password}").unwrap();
    assert!(c.wait().unwrap().success(), "add-user {name}");
}

/// Per-participant (rows, sum) of result rows `participant_id, n, s` (JSON records).
pub fn sums_of(rows: &Value) -> Sums {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["participant_id"].as_str().unwrap().into(),
                (r["n"].as_i64().unwrap(), r["s"].as_f64().unwrap()),
            )
        })
        .collect()
}

/// `VmRSS` and `VmHWM` of a process, MiB, for the phase log.
pub fn rss(pid: u32, phase: &str) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            >> 10
    };
    eprintln!(
        "server RSS after {phase}: {} MiB (peak {} MiB)",
        kb("VmRSS:"),
        kb("VmHWM:")
    );
}

/// The error message in a client script's JSON answer (`{"error": {"message": …}}`), or "".
pub fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_default()
}
