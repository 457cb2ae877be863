//! The `ingest` binary's start-up: a bad configuration stops it with exit code 2 and the bad
//! key named; `migrate` brings real shards to the current schema version.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn ingest(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ingest"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn bad_configuration_fails_at_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str); 3] = [
        ("[database]\npool_size = \"lots\"\n", "database.pool_size"),
        ("[kafka]\nbrokerz = \"x\"\n", "kafka.brokerz"),
        (
            "[[shards]]\nname = \"bad name!\"\nurl = \"host=h\"\n",
            "shards[0].name",
        ),
    ];
    for (i, (toml, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&path, toml).unwrap();
        let out = ingest(&["--config", path.to_str().unwrap(), "check-config"], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert!(stderr.contains(key), "stderr does not name {key}: {stderr}");
    }
    // An environment override is checked the same way.
    let out = ingest(
        &["check-config"],
        &[("VITALSINK_DATABASE__CHUNK_INTERVAL", "soon")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("database.chunk_interval"));
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let out = ingest(
        &["--topic", "from-flag", "check-config"],
        &[("VITALSINK_KAFKA__GROUP_ID", "g-env")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cfg["kafka"]["topic"], "from-flag");
    assert_eq!(cfg["kafka"]["group_id"], "g-env");
}

#[test]
fn logs_into_a_pipe_carry_no_colour_codes() {
    // A shard nobody listens on: `migrate` logs its failure through tracing, to a pipe.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[[shards]]\nname = \"s0\"\nurl = \"host=127.0.0.1 port=1 user=postgres connect_timeout=2\"\n",
    )
    .unwrap();
    let out = ingest(&["--config", path.to_str().unwrap(), "migrate"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("ERROR"), "a log line: {stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escape in piped log: {stderr:?}"
    );
}
