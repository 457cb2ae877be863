//! Shard move benchmark (issue 12): `reshard add-shard` (release binary, unthrottled) moving
//! the participants jump hash assigns to a new third shard, against the limit measured in the
//! same run: a raw binary COPY pipe of the same rows into an empty database on the same
//! server (`psql \copy … TO STDOUT (FORMAT binary) | psql \copy … FROM STDIN`), which moves
//! the bytes without verifying or deleting anything. Prints rows/s of both, their ratio, and
//! the command's peak RSS (bounded by configuration, not by the rows moved).
//!
//! The move here is offline (`--offline`, no ingest runs during it); `reshard_online` has the
//! online figures (ingest throughput during a move, the longest pause at the cut-over).
//! Data: 2,000 participants × 500 readings (1,000,000 rows) over 2 shards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vitalsink_benches::{release_binary, report};
use vitalsink_common::config::{DatabaseConfig, ShardConfig};
use vitalsink_common::db::Shard;
use vitalsink_common::routing::ShardRouter;
use vitalsink_tests::ingest_run::{extra_shard, peak_rss_bytes};
use vitalsink_tests::{connect, Stack};

const PARTICIPANTS: usize = 2_000;
const PER_PARTICIPANT: i64 = 500;

/// psql connection string of a libpq key-value `url`.
fn psql(url: &str, command: &str) -> Command {
    let mut c = Command::new("psql");
    c.args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", command]);
    c
}

#[tokio::main]
async fn main() {
    let stack = Stack::from_env();
    let start = Instant::now();
    let db = DatabaseConfig::default();
    let (dbs, by_shard) =
        vitalsink_benches::history::load(&stack, "b_move", PARTICIPANTS, PER_PARTICIPANT, "0 s")
            .await;
    println!(
        "loaded {} rows in {:.1} s",
        PARTICIPANTS as i64 * PER_PARTICIPANT,
        start.elapsed().as_secs_f64()
    );

    // The limit: the moving participants' rows through a raw COPY pipe into a scratch shard.
    let after = ShardRouter::new(3);
    let moving: Vec<String> = by_shard
        .iter()
        .flatten()
        .filter(|p| after.shard_for(p) == 2)
        .cloned()
        .collect();
    let scratch = extra_shard(&stack, 9).await;
    let scratch_shard = Shard::new(9, &scratch, &db).unwrap();
    vitalsink_common::migrate::migrate(&scratch_shard, &db)
        .await
        .unwrap();
    let list = moving
        .iter()
        .map(|p| format!("'{p}'"))
        .collect::<Vec<_>>()
        .join(",");
    let cols = "participant_id, metric, ts, value, unit, device_id, study_id";
    let started = Instant::now();
    for s in &dbs.shards {
        let mut out = psql(&s.url, &format!("\\copy (SELECT {cols} FROM measurements WHERE participant_id IN ({list})) TO STDOUT (FORMAT binary)"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let into = psql(
            &scratch.url,
            &format!("\\copy measurements ({cols}) FROM STDIN (FORMAT binary)"),
        )
        .stdin(out.stdout.take().unwrap())
        .status()
        .unwrap();
        assert!(
            out.wait().unwrap().success() && into.success(),
            "COPY pipe failed"
        );
    }
    let pipe_s = started.elapsed().as_secs_f64();
    let rows: i64 = connect(&scratch.url)
        .await
        .query_one("SELECT count(*) FROM measurements", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, moving.len() as i64 * PER_PARTICIPANT);

    // The move.
    let new: ShardConfig = extra_shard(&stack, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("reshard.toml");
    let mut toml = String::from("[observability]\nlisten = \"127.0.0.1:0\"\n");
    for s in &dbs.shards {
        toml.push_str(&format!(
            "[[shards]]\nname = \"{}\"\nurl = \"{}\"\n",
            s.name, s.url
        ));
    }
    std::fs::write(&config, toml).unwrap();
    let started = Instant::now();
    let mut child = Command::new(release_binary("reshard"))
        .arg("--config")
        .arg(&config)
        .args([
            "add-shard",
            "--reason",
            "test: shard-set change",
            "--offline",
            "--name",
            "shard2",
            "--url",
            &new.url,
            "--bytes-per-second",
            "0",
        ])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut rss = 0;
    while child.try_wait().unwrap().is_none() {
        rss = rss.max(peak_rss_bytes(child.id()).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let move_s = started.elapsed().as_secs_f64();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "reshard failed");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["rows"].as_i64(), Some(rows), "{r}");

    // Phase durations from the command's log lines (RFC 3339 timestamps).
    let log = String::from_utf8_lossy(&out.stderr);
    let at = |marker: &str| vitalsink_benches::log_time(&log, marker);
    let phases = [
        (
            "start → copied and verified",
            "move started",
            "copied and verified",
        ),
        ("verified → switched", "copied and verified", "switched"),
        ("switched → deleted (done)", "switched", "move done"),
    ];
    for (name, a, b) in phases {
        if let (Some(a), Some(b)) = (at(a), at(b)) {
            report(name, (b - a).num_milliseconds() as f64, "ms", None);
        }
    }
    let pipe_rate = rows as f64 / pipe_s;
    println!(
        "moving {} participants, {rows} rows to shard2",
        moving.len()
    );
    report(
        "raw COPY pipe (limit, copy only)",
        pipe_rate,
        "rows/s",
        None,
    );
    report(
        "reshard add-shard (copy + verify + delete)",
        rows as f64 / move_s,
        "rows/s",
        Some(("raw COPY pipe", pipe_rate)),
    );
    report("reshard peak RSS", (rss >> 20) as f64, "MiB", None);
    dbs.drop_all().await;
}
