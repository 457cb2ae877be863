//! Issue 4: `archiver run --every` as a daemon serves Prometheus metrics, `/healthz` and
//! `/readyz` on `observability.listen` (127.0.0.1), archives on its first tick, and exits 0
//! on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::time::Duration;
use vitalsink_tests::archive_run::{aged_chunk_count, load, ArchiveSetup, ROUND_TRIP};
use vitalsink_tests::Stack;

/// `GET path` on 127.0.0.1:port: (status code, body), or None while nothing listens.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, out))
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_serves_metrics_and_health_and_stops_on_sigterm() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let setup = ArchiveSetup::new(&stack, "t_arch_daemon", false, "").await;
    load(&setup.dbs.shards, ROUND_TRIP).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = setup
        .command(
            &["run", "--every", "1h"],
            &[("VITALSINK_OBSERVABILITY__LISTEN", listen.as_str())],
        )
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let metrics = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {}",
            setup.log_tail()
        );
        if let Some((200, _)) = get(port, "/readyz") {
            break get(port, "/metrics").unwrap().1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(get(port, "/healthz").map(|r| r.0), Some(200));
    for s in &setup.dbs.shards {
        assert_eq!(
            aged_chunk_count(s).await,
            0,
            "first tick archived {}",
            s.name
        );
    }
    assert!(
        metrics.contains("vitalsink_archiver_chunks_total{shard=\"shard0\",result=\"archived\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vitalsink_archiver_rows_exported_total"),
        "{metrics}"
    );
    assert!(metrics.contains("vitalsink_archiver_last_run_success_timestamp_seconds"));
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "exit 0 on SIGTERM: {status}");
    setup.dbs.drop_all().await;
}
