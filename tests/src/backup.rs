//! Backup-enabled shards of a test's own, run by `dev/backup` (pgBackRest 2.55.1 from the
//! stack's trixie root filesystem, WAL archiving on, repository in the secure stack's S3 over
//! HTTPS): what `tests/it/stack/stack_backup.rs` restores to a point in time.

use std::process::Command;
use std::time::{Duration, Instant};
use vitalsink_common::config::ShardConfig;

/// The clusters one test runs with `dev/backup`: their own ports, directory in the root
/// filesystem and repository path in the bucket.
#[derive(Debug, Clone)]
pub struct BackupClusters {
    /// `BACKUP_ROOT_DIR`: data, configuration and logs, inside the root filesystem.
    pub root_dir: String,
    /// `BACKUP_REPO_PATH`: where in the bucket the repository lives (unique per run).
    pub repo_path: String,
    /// `BACKUP_PORT`: cluster N listens on `port + N`.
    pub port: u16,
    /// How many clusters (`BACKUP_SHARDS`).
    pub count: usize,
}

/// What a `pgbackrest info --output=json` reports of the newest backup of a stanza.
#[derive(Debug, Clone, Copy)]
pub struct BackupSize {
    /// Size of the database files backed up, bytes (`info.size`).
    pub database: u64,
    /// Size in the repository, compressed, bytes (`info.repository.size`).
    pub repository: u64,
}

impl BackupClusters {
    /// `count` clusters on ports `port`, `port + 1`, … with the repository at `repo_path`.
    pub fn new(root_dir: &str, repo_path: &str, port: u16, count: usize) -> Self {
        Self {
            root_dir: root_dir.into(),
            repo_path: repo_path.into(),
            port,
            count,
        }
    }

    /// Runs `dev/backup ARGS` with this set's environment (the S3 identity and CA from the
    /// secure stack's `VITALSINK_SECURE_*` variables when set); asserts it succeeded and
    /// returns its standard output (pgBackRest's console log and reports).
    pub fn run(&self, args: &[&str]) -> String {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../dev/backup");
        let mut cmd = Command::new(script);
        cmd.args(args)
            .env("BACKUP_ROOT_DIR", &self.root_dir)
            .env("BACKUP_REPO_PATH", &self.repo_path)
            .env("BACKUP_PORT", self.port.to_string())
            .env("BACKUP_SHARDS", self.count.to_string());
        for (from, to) in [
            ("VITALSINK_SECURE_S3_ACCESS_KEY_FILE", "BACKUP_S3_KEY_FILE"),
            (
                "VITALSINK_SECURE_S3_SECRET_KEY_FILE",
                "BACKUP_S3_SECRET_FILE",
            ),
            ("VITALSINK_SECURE_CA", "BACKUP_S3_CA_FILE"),
            ("VITALSINK_SECURE_S3_BUCKET", "BACKUP_S3_BUCKET"),
        ] {
            if let Ok(v) = std::env::var(from) {
                cmd.env(to, v);
            }
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "dev/backup {args:?} failed (the repository is the secure stack's S3: \
             `STACK_SECURE=1 dev/stack up`):\n{err}\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// As [`BackupClusters::run`], timed.
    pub fn timed(&self, args: &[&str]) -> Duration {
        let t = Instant::now();
        self.run(args);
        t.elapsed()
    }

    /// Shard `n` as the worker's shard `shard<n>`, database `vitalsink`.
    pub fn shard(&self, n: usize) -> ShardConfig {
        ShardConfig {
            name: format!("shard{n}"),
            url: format!(
                "host=127.0.0.1 port={} user=postgres dbname=vitalsink",
                self.port + n as u16
            ),
            replicas: Vec::new(),
        }
    }

    /// Every shard, in routing order.
    pub fn shards(&self) -> Vec<ShardConfig> {
        (0..self.count).map(|n| self.shard(n)).collect()
    }

    /// The newest backup of shard `n`'s stanza, as `pgbackrest info --output=json` has it.
    pub fn newest_backup(&self, n: usize) -> BackupSize {
        let text = self.run(&[
            "info",
            &n.to_string(),
            "--output=json",
            "--log-level-console=warn",
        ]);
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        let last = v[0]["backup"].as_array().unwrap().last().unwrap().clone();
        BackupSize {
            database: last["info"]["size"].as_u64().unwrap(),
            repository: last["info"]["repository"]["size"].as_u64().unwrap(),
        }
    }
}

/// A Kafka-protocol broker that enforces retention: Tansu 0.6 from crates.io with its SQLite
/// storage (the binary `STACK_SECURE=1 dev/stack up` builds into `STACK_CACHE/tansu-build`),
/// plain TCP on a free port of 127.0.0.1, its database in a directory of its own, and its
/// maintenance (which deletes records older than a topic's `retention.ms` when its
/// `cleanup.policy` is `delete`) every second instead of every 10 minutes. The stack's
/// broker (the PyPI build, memory storage) never deletes records, and neither build
/// implements `DeleteRecords`. Killed on drop.
#[derive(Debug)]
pub struct RetentionBroker {
    /// `host:port` to bootstrap from.
    pub addr: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl RetentionBroker {
    /// Starts the broker and waits until it accepts connections.
    pub async fn start() -> Self {
        let cache =
            std::env::var("STACK_CACHE").unwrap_or_else(|_| "/var/cache/vitalsink".to_string());
        let bin = std::path::Path::new(&cache).join("tansu-build/root/bin/tansu");
        assert!(
            bin.exists(),
            "{} missing: `STACK_SECURE=1 dev/stack up` builds it (dev/test runs it)",
            bin.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("tansu.log")).unwrap();
        let child = Command::new(bin)
            .current_dir(dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args([
                "--storage-engine",
                "sqlite://tansu.db?maintenance_interval=1s",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut b = Self {
            addr: format!("127.0.0.1:{port}"),
            child,
            _dir: dir,
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(&b.addr).await.is_ok() {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = b.child.kill();
        let _ = b.child.wait();
        panic!("tansu (SQLite) on {} did not start", b.addr);
    }

    /// Sets `retention.ms` (and `cleanup.policy=delete`) of `topic` with a stock
    /// confluent-kafka admin client (`tests/scripts/topic_retention.py`).
    pub fn set_retention(&self, topic: &str, retention: Duration) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/topic_retention.py");
        let ms = retention.as_millis().to_string();
        crate::run_ok(Command::new("python3").args([script, &self.addr, topic, &ms]));
    }
}

impl Drop for RetentionBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
