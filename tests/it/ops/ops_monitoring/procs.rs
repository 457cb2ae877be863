//! Processes of `ops_monitoring`: ports, the test's Prometheus configuration, starting the
//! ingest worker, promtool, and cleaning up.

use std::process::{Child, Command, Stdio};
use std::time::Duration;
use vitalsink_common::config::ShardConfig;
use vitalsink_tests::connect;
use vitalsink_tests::ingest_run::{http_get, ingest_binary, IngestSetup};

use super::support::{monitoring, repo};

/// `dev/monitoring` NAME of this test.
pub const NAME: &str = "ops-monitoring-test";
/// Our own primary (shard 1) and its streaming replica.
pub const PRIMARY_PORT: u16 = 17500;
/// See [`PRIMARY_PORT`].
pub const REPLICA_PORT: u16 = 17501;
/// Prometheus.
pub const PROM_PORT: u16 = 19090;
/// Exporters: shard0, shard1, shard1's replica.
pub const EXPORTER_PORTS: [u16; 3] = [19187, 19188, 19189];

/// A port free now on 127.0.0.1, as `127.0.0.1:PORT` (for a binary's `observability.listen`,
/// written into Prometheus' configuration before the binary starts).
pub fn free_listen() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Where the binaries serve `/metrics`.
pub struct Listen {
    /// The ingest worker.
    pub ingest: String,
    /// The archiver daemon.
    pub archiver: String,
    /// `reshard add-shard`.
    pub reshard: String,
}

/// Stops what the test started even when it fails: child processes, then `dev/monitoring
/// down` (Prometheus, exporters, the primary + replica pair).
pub struct Cleanup(pub Vec<Child>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.0 {
            kill_term(c);
        }
        let _ = Command::new(repo().join("dev/monitoring"))
            .args(["down", NAME])
            .output();
    }
}

/// `promtool check rules`, `test rules` (each rule firing and resolving) and `check config`
/// on the files in `ops/prometheus`.
pub fn promtool_checks() {
    let r = repo();
    let p = |s: &str| r.join(s).to_str().unwrap().to_string();
    monitoring(&[
        "promtool",
        "check",
        "rules",
        &p("ops/prometheus/vitalsink-rules.yml"),
    ]);
    let tests = monitoring(&[
        "promtool",
        "test",
        "rules",
        &p("ops/prometheus/tests/vitalsink-rules-test.yml"),
    ]);
    assert!(tests.contains("SUCCESS"), "promtool test rules: {tests}");
    monitoring(&[
        "promtool",
        "check",
        "config",
        &p("ops/prometheus/prometheus.yml"),
    ]);
}

/// The Prometheus configuration of this test: the example's job names, 1 s scrapes of the
/// binaries, 3 s of the exporters (a busy shared shard can take over a second to answer).
pub fn prometheus_config(dir: &std::path::Path, l: &Listen) -> std::path::PathBuf {
    let rules = repo().join("ops/prometheus/vitalsink-rules.yml");
    let e = EXPORTER_PORTS;
    let text = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}\n\
         scrape_configs:\n\
         \x20 - job_name: vitalsink-ingest\n    static_configs:\n      - targets: [\"{}\"]\n\
         \x20 - job_name: vitalsink-archiver\n    static_configs:\n      - targets: [\"{}\"]\n\
         \x20 - job_name: vitalsink-reshard\n    static_configs:\n      - targets: [\"{}\"]\n\
         \x20 - job_name: vitalsink-shards\n    scrape_interval: 3s\n    scrape_timeout: 3s\n    static_configs:\n\
         \x20     - targets: [\"127.0.0.1:{}\"]\n        labels: {{shard: shard0}}\n\
         \x20     - targets: [\"127.0.0.1:{}\"]\n        labels: {{shard: shard1}}\n\
         \x20 - job_name: vitalsink-replicas\n    scrape_interval: 3s\n    scrape_timeout: 3s\n    static_configs:\n\
         \x20     - targets: [\"127.0.0.1:{}\"]\n        labels: {{shard: shard1}}\n",
        l.ingest,
        l.archiver,
        l.reshard,
        e[0],
        e[1],
        e[2],
        rules = rules.display()
    );
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, text).unwrap();
    monitoring(&["promtool", "check", "config", path.to_str().unwrap()]);
    path
}

/// Starts `ingest run` on `setup` with its endpoints on `listen`.
pub fn spawn_ingest(setup: &IngestSetup, log: &std::path::Path, listen: &str) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(ingest_binary())
        .args(["--config", setup.config.to_str().unwrap(), "run"])
        .env("RUST_LOG", "info")
        .env("VITALSINK_OBSERVABILITY__LISTEN", listen)
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .unwrap()
}

/// Waits until a metric of the text exposition at `addr` starts with `name`.
pub async fn wait_metric(addr: &str, name: &str, limit: Duration) -> String {
    let end = tokio::time::Instant::now() + limit;
    loop {
        let (_, body) = http_get(addr, "/metrics").await;
        if body.lines().any(|l| l.starts_with(name)) || tokio::time::Instant::now() >= end {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Creates database `db` on the server of `admin_url` (a libpq string with dbname).
pub async fn create_db(admin_url: &str, db: &str) {
    connect(admin_url)
        .await
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
}

/// SIGTERM to `child`, then waits for it.
pub fn kill_term(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// The database name in `shard`'s connection string.
pub fn db_name(shard: &ShardConfig) -> String {
    shard
        .url
        .split_whitespace()
        .rev()
        .find_map(|kv| kv.strip_prefix("dbname="))
        .unwrap()
        .to_string()
}

/// Writes the archiver's configuration to `path`: a local archive in `archive/` beside it,
/// the 30-day window, no rate limit, `shards`.
pub fn write_archiver_config(path: &std::path::Path, shards: &[ShardConfig]) {
    let root = path.parent().unwrap().join("archive");
    std::fs::create_dir_all(&root).unwrap();
    let mut toml = format!(
        "[archive]\nroot = \"file://{}\"\nolder_than = \"30d\"\nrows_per_second = 0\n",
        root.display()
    );
    for s in shards {
        toml.push_str(&format!(
            "[[shards]]\nname = \"{}\"\nurl = \"{}\"\n",
            s.name, s.url
        ));
    }
    std::fs::write(path, toml).unwrap();
}

/// Every alert of `ops/prometheus/vitalsink-rules.yml`, checked for a `severity` label and
/// `summary` and `description` annotations, and for promtool tests in
/// `ops/prometheus/tests/vitalsink-rules-test.yml`: one test group expecting it firing at one
/// evaluation time and not firing at another (the files' groups check it resolving after it
/// fired), so that a rule added later without tests fails here. Returns the alert names.
pub fn rules_documented_and_tested() -> Vec<String> {
    use serde_norway::Value;
    let read = |p: &str| -> Value {
        let path = repo().join(p);
        serde_norway::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let rules = read("ops/prometheus/vitalsink-rules.yml");
    let tests = read("ops/prometheus/tests/vitalsink-rules-test.yml");
    let mut names = Vec::new();
    for g in rules["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            let name = r["alert"].as_str().expect("a rule without `alert`");
            assert!(r["labels"]["severity"].is_string(), "{name}: no severity");
            for a in ["summary", "description"] {
                assert!(r["annotations"][a].is_string(), "{name}: no {a}");
            }
            names.push(name.to_string());
        }
    }
    for name in &names {
        let covered = tests["tests"].as_sequence().unwrap().iter().any(|g| {
            let evals: Vec<bool> = g["alert_rule_test"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter(|t| t["alertname"].as_str() == Some(name))
                .map(|t| t["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty()))
                .collect();
            evals.contains(&true) && evals.contains(&false)
        });
        assert!(
            covered,
            "{name}: no promtool test group expects it firing and resolved"
        );
    }
    names
}
