//! Issue 11: `ingest` and `archiver` used to share the default metrics port 9464, so on one
//! host the second failed to start. With `observability.listen` unset, both start together:
//! ingest on 127.0.0.1:9464, the archiver daemon on 127.0.0.1:9465 (README, Configuration).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::Duration;
use vitalsink_tests::archive_run::archiver_binary;
use vitalsink_tests::ingest_run::{http_get, log_tail, prepare, stop_gracefully};
use vitalsink_tests::Stack;

/// `GET /healthz` on `addr` answers 200 within 60 s.
async fn healthy(addr: &str) -> bool {
    for _ in 0..120 {
        if tokio::net::TcpStream::connect(addr).await.is_ok()
            && http_get(addr, "/healthz").await.0 == 200
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_archiver_share_a_host_with_their_default_ports() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    for port in [9464, 9465] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "127.0.0.1:{port} is taken by another process; stop it (a leftover `ingest run`?)"
        );
    }
    let stack = Stack::from_env();
    let (dbs, setup, dir) = prepare(&stack, "t_ports").await;
    // The test configuration pins port 0; take the key out, and add an archive root.
    let toml = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace("listen = \"127.0.0.1:0\"\n", "");
    assert!(!toml.contains("listen"));
    let archive = dir.path().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::write(
        &setup.config,
        format!("{toml}[archive]\nroot = \"file://{}\"\n", archive.display()),
    )
    .unwrap();

    let ingest_log = dir.path().join("ingest.log");
    let ingest = setup.spawn(&ingest_log);
    let archiver_log = dir.path().join("archiver.log");
    let archiver = Command::new(archiver_binary())
        .args([
            "--config",
            setup.config.to_str().unwrap(),
            "run",
            "--every",
            "1h",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&archiver_log).unwrap())
        .spawn()
        .unwrap();

    assert!(
        healthy("127.0.0.1:9464").await,
        "ingest on 9464\n{}",
        log_tail(&ingest_log)
    );
    assert!(
        healthy("127.0.0.1:9465").await,
        "archiver on 9465\n{}",
        log_tail(&archiver_log)
    );
    let (_, metrics) = http_get("127.0.0.1:9465", "/metrics").await;
    assert!(
        !metrics.contains("vitalsink_ingest_"),
        "9465 is the archiver's, not ingest's"
    );
    stop_gracefully(archiver, &archiver_log).await;
    stop_gracefully(ingest, &ingest_log).await;
    dbs.drop_all().await;
}
