//! Helpers of `ops_monitoring`: `dev/monitoring`, the Prometheus HTTP API and the queries of
//! the Grafana dashboard (`ops/grafana/vitalsink.json`).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vitalsink_tests::ingest_run::http_get;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `dev/monitoring ARGS` and fails the test with its output when it fails; its stdout.
pub fn monitoring(args: &[&str]) -> String {
    let out = std::process::Command::new(repo().join("dev/monitoring"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dev/monitoring {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `s` percent-encoded for a URL query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The Prometheus HTTP API on `addr`.
#[derive(Debug, Clone)]
pub struct Prometheus {
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Prometheus {
    /// `GET /api/v1/PATH?params` → the `data` member (panics on an error status).
    pub async fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let q: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        let url = format!("/api/v1/{path}?{}", q.join("&"));
        let (code, body) = http_get(&self.addr, &url).await;
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{url}: {code} not JSON ({e}): {body}"));
        assert_eq!(v["status"], "success", "{url}: {code} {body}");
        v["data"].clone()
    }

    /// The result of an instant query at the server's now.
    pub async fn query(&self, expr: &str) -> Vec<Value> {
        let d = self.api("query", &[("query", expr)]).await;
        d["result"].as_array().cloned().unwrap_or_default()
    }

    /// The result of a range query over `[start, end]` (Unix seconds) with step `step_s`.
    pub async fn query_range(&self, expr: &str, start: f64, end: f64, step_s: u32) -> Vec<Value> {
        let (s, e, st) = (
            format!("{start:.3}"),
            format!("{end:.3}"),
            step_s.to_string(),
        );
        let d = self
            .api(
                "query_range",
                &[("query", expr), ("start", &s), ("end", &e), ("step", &st)],
            )
            .await;
        d["result"].as_array().cloned().unwrap_or_default()
    }

    /// Waits up to `limit` until `expr` returns at least one sample; the samples, or what it
    /// returned last.
    pub async fn wait_nonempty(&self, expr: &str, limit: Duration) -> Vec<Value> {
        let end = tokio::time::Instant::now() + limit;
        loop {
            let r = self.query(expr).await;
            if !r.is_empty() || tokio::time::Instant::now() >= end {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// One query of one panel of the dashboard.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    /// The panel's title and the target's refId.
    pub panel: String,
    /// Grafana's panel type (`timeseries` panels are run as range queries).
    pub kind: String,
    /// PromQL (`Prom`) or SQL (`Sql`), as written in the dashboard.
    pub query: Query,
}

/// A target's query text by data source.
#[derive(Debug, Clone)]
pub enum Query {
    /// A Prometheus expression.
    Prom(String),
    /// A PostgreSQL query (`rawSql`).
    Sql(String),
}

/// Every target of every panel (rows' panels included) of the dashboard at `path`; panics on
/// a target whose data source is neither `${DS_PROMETHEUS}` nor `${DS_POSTGRES}` or that has
/// no query, so that a panel added later is checked too.
pub fn dashboard_queries(path: &Path) -> Vec<PanelQuery> {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
    let mut out = Vec::new();
    let mut stack: Vec<Value> = doc["panels"].as_array().cloned().unwrap_or_default();
    while let Some(p) = stack.pop() {
        if let Some(children) = p["panels"].as_array() {
            stack.extend(children.iter().cloned());
        }
        let title = p["title"].as_str().unwrap_or("?").to_string();
        let kind = p["type"].as_str().unwrap_or("?").to_string();
        if kind == "row" {
            continue;
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            let ds = t["datasource"]["uid"]
                .as_str()
                .or(p["datasource"]["uid"].as_str())
                .unwrap_or("");
            let panel = format!("{title} [{}]", t["refId"].as_str().unwrap_or("?"));
            let query = match ds {
                "${DS_PROMETHEUS}" => Query::Prom(t["expr"].as_str().unwrap_or("").to_string()),
                "${DS_POSTGRES}" => Query::Sql(t["rawSql"].as_str().unwrap_or("").to_string()),
                other => panic!("panel {panel}: unknown data source uid {other:?}"),
            };
            let text = match &query {
                Query::Prom(q) | Query::Sql(q) => q,
            };
            assert!(!text.trim().is_empty(), "panel {panel}: empty query");
            out.push(PanelQuery {
                panel,
                kind: kind.clone(),
                query,
            });
        }
    }
    out
}

/// Grafana's PromQL variables replaced with concrete values (a 1 s scrape interval).
pub fn promql_concrete(expr: &str) -> String {
    expr.replace("$__rate_interval", "10s")
        .replace("$__interval", "2s")
        .replace("$__range", "5m")
}

/// Grafana's PostgreSQL macros replaced with SQL over the last `hours` hours.
pub fn sql_concrete(sql: &str, hours: u32) -> String {
    let mut s = sql.to_string();
    while let Some(i) = s.find("$__timeFilter(") {
        let rest = &s[i + "$__timeFilter(".len()..];
        let close = rest.find(')').expect("$__timeFilter( without )");
        let col = rest[..close].trim().to_string();
        let cond = format!(
            "{col} BETWEEN now() - interval '{hours} hours' AND now() + interval '1 minute'"
        );
        s = format!("{}{cond}{}", &s[..i], &rest[close + 1..]);
    }
    assert!(
        !s.contains("$__"),
        "a Grafana macro this test does not know: {s}"
    );
    s
}
