//! PgBouncer instances of one test (`dev/pgbouncer`): transaction pooling in front of each of
//! the stack's shard servers, on ports of their own, and their admin console.

use std::process::Command;
use vitalsink_common::config::ShardConfig;

use crate::unique;

/// One running PgBouncer (stopped on drop).
#[derive(Debug)]
pub struct Bouncer {
    /// Instance name (`dev/pgbouncer` state directory).
    pub name: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The PostgreSQL port it forwards to.
    pub target: u16,
}

fn script() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../dev/pgbouncer")
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The `port=N` of a key-value connection string.
pub fn port_of(url: &str) -> u16 {
    url.split_whitespace()
        .find_map(|kv| kv.strip_prefix("port="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url:?}"))
}

impl Bouncer {
    /// Starts an instance in front of 127.0.0.1:`target` (fails the test when it cannot).
    pub fn start(target: u16) -> Self {
        Self::start_with(target, &[])
    }

    /// [`Bouncer::start`] with `dev/pgbouncer`'s environment `env` (for example
    /// `PGBOUNCER_MAX_PREPARED_STATEMENTS`).
    pub fn start_with(target: u16, env: &[(&str, &str)]) -> Self {
        let name = unique("pgb").replace('_', "-");
        let port = free_port();
        let st = Command::new(script())
            .args(["start", &name, &port.to_string(), &target.to_string()])
            .envs(env.iter().copied())
            .status()
            .unwrap();
        assert!(
            st.success(),
            "dev/pgbouncer start failed (is the stack up? `dev/stack up` installs PgBouncer)"
        );
        Self { name, port, target }
    }

    /// `shard` with its port replaced by this instance's.
    pub fn route(&self, shard: &ShardConfig) -> ShardConfig {
        let url = shard
            .url
            .split_whitespace()
            .map(|kv| {
                if kv.starts_with("port=") {
                    format!("port={}", self.port)
                } else {
                    kv.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        ShardConfig {
            url,
            ..shard.clone()
        }
    }

    /// `SHOW name` on the admin console (simple protocol only), as rows of (column, value).
    pub async fn show(&self, what: &str) -> Vec<Vec<(String, String)>> {
        let (c, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=pgbouncer",
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let mut out = Vec::new();
        for m in c.simple_query(&format!("SHOW {what}")).await.unwrap() {
            if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                out.push(
                    r.columns()
                        .iter()
                        .enumerate()
                        .map(|(i, col)| {
                            (col.name().to_string(), r.get(i).unwrap_or("").to_string())
                        })
                        .collect(),
                );
            }
        }
        out
    }

    /// Transactions PgBouncer has pooled so far (`SHOW STATS` `total_xact_count`), over every
    /// database but its own console.
    pub async fn xacts(&self) -> i64 {
        self.show("STATS")
            .await
            .iter()
            .filter(|r| r.iter().any(|(k, v)| k == "database" && v != "pgbouncer"))
            .filter_map(|r| {
                r.iter()
                    .find(|(k, _)| k == "total_xact_count")
                    .and_then(|(_, v)| v.parse::<i64>().ok())
            })
            .sum()
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = Command::new(script()).args(["stop", &self.name]).status();
        if let Ok(out) = Command::new(script()).args(["dir", &self.name]).output() {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if dir.contains("vitalsink-pgbouncer") {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// Transactions pooled by all of `bouncers`.
pub async fn xacts(bouncers: &[Bouncer]) -> i64 {
    let mut n = 0;
    for b in bouncers {
        n += b.xacts().await;
    }
    n
}
