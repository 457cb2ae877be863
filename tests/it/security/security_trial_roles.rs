//! Issue 26, least privilege for trial operations (schemas/ROLES.md, README "Running a trial"):
//! which role may write the audit trail, record withdrawals, erase, lock, and read them; every
//! other role refused with SQLSTATE 42501, in SQL and through the `trial` binary.
//!
//! * SQL: no role, the owner included, can UPDATE, DELETE or TRUNCATE `audit_log` (grants and
//!   the append-only triggers); only the archiver, mover and steward may INSERT into it; only
//!   the steward (and the mover, copying it to a new shard) may INSERT status changes; the
//!   steward cannot change `measurements` except through `vitalsink_erase_participant`, which
//!   no other role may call; the auditor reads the trail and the locks and nothing else.
//! * Binary: `trial participants withdraw` works as the steward and is refused as the auditor,
//!   the reader, the ingest and the archiver role, leaving nothing behind; `trial audit list`
//!   and `audit verify` work as the auditor; `lock create` and `participants erase` are
//!   refused as the auditor and leave the rows where they were.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tokio_postgres::Client;
use vitalsink_common::config::ShardConfig;
use vitalsink_tests::ingest_run::{ingest_binary, IngestSetup};
use vitalsink_tests::trial_run::trial_binary;
use vitalsink_tests::{connect, run_ok, ShardDbs, Stack};

const INGEST: &str = "vs_test_ingest";
const ARCHIVER: &str = "vs_test_archiver";
const READER: &str = "vs_test_reader";
const MOVER: &str = "vs_test_mover";
const STEWARD: &str = "vs_test_steward";
const AUDITOR: &str = "vs_test_auditor";

async fn refused(c: &Client, who: &str, sql: &str) {
    assert_eq!(
        vitalsink_tests::roles::sqlstate(c, sql).await.as_deref(),
        Some("42501"),
        "{who} must be refused: {sql}"
    );
}

async fn allowed(c: &Client, who: &str, sql: &str) {
    assert_eq!(
        vitalsink_tests::roles::sqlstate(c, sql).await,
        None,
        "{who} must be allowed: {sql}"
    );
}

/// A configuration for `trial` whose shards are reached as `user`.
fn config_as(dir: &Path, shards: &[ShardConfig], user: &str, archive: &Path) -> PathBuf {
    let mut toml = String::from("[kafka]\nbrokers = \"127.0.0.1:19092\"\ntopic = \"unused\"\n");
    for s in shards {
        assert!(s.url.contains("user=postgres"), "{}", s.url);
        toml += &format!(
            "[[shards]]\nname = \"{}\"\nurl = \"{}\"\n",
            s.name,
            s.url.replace("user=postgres", &format!("user={user}"))
        );
    }
    toml += &format!("[archive]\nroot = \"file://{}\"\n", archive.display());
    let path = dir.join(format!("trial-{user}.toml"));
    std::fs::write(&path, toml).unwrap();
    path
}

fn trial(config: &Path, args: &[&str]) -> Output {
    Command::new(trial_binary())
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn assert_refused(out: &Output, who: &str, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && (err.contains("42501") || err.contains("permission denied")),
        "{what} as {who} must be refused with SQLSTATE 42501: {:?}\n{err}",
        out.status
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trial_operations_are_refused_to_every_other_role() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let dbs = ShardDbs::create(&stack, "t_trial_roles").await;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let owner_cfg = IngestSetup::new(&stack, &dbs.shards, dir.path());
    run_ok(
        Command::new(ingest_binary())
            .arg("--config")
            .arg(&owner_cfg.config)
            .arg("migrate"),
    );
    vitalsink_tests::roles::ensure_login_users(
        &stack,
        &[
            (INGEST, "vitalsink_ingest"),
            (ARCHIVER, "vitalsink_archiver"),
            (READER, "vitalsink_reader"),
            (MOVER, "vitalsink_mover"),
            (STEWARD, "vitalsink_steward"),
            (AUDITOR, "vitalsink_auditor"),
        ],
    )
    .await;
    let url = &dbs.shards[0].url;
    let owner = connect(url).await;
    owner
        .batch_execute(
            "INSERT INTO measurements (participant_id, metric, ts, value)
                  VALUES ('P1', 'hr', now() - interval '1 hour', 1), ('P2', 'hr', now(), 2)",
        )
        .await
        .unwrap();
    let user_url = |u: &str| url.replace("user=postgres", &format!("user={u}"));

    // A first entry, through the steward's binary, so that there is something to change.
    let steward_cfg = config_as(dir.path(), &dbs.shards, STEWARD, &archive);
    let out = trial(
        &steward_cfg,
        &[
            "participants",
            "withdraw",
            "P9",
            "--effective",
            "2026-01-01T00:00:00Z",
            "--reason",
            "roles test",
        ],
    );
    assert!(
        out.status.success(),
        "the steward may withdraw: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Nobody changes the trail: not the owner (triggers), not any vitalsink role.
    for sql in [
        "UPDATE audit_log SET reason = 'x'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        refused(&owner, "the owner", sql).await;
    }
    let insert_entry = "INSERT INTO audit_log (seq, at, os_user, db_role, host, action, command,
                             details, prev_hash, hash)
                        VALUES (1000, now(), 'u', 'r', 'h', 'x', 'c', '{}', 'p', 'h1000')";
    for user in [INGEST, ARCHIVER, READER, MOVER, STEWARD, AUDITOR] {
        let c = connect(&user_url(user)).await;
        for sql in [
            "UPDATE audit_log SET reason = 'x'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
            "UPDATE participant_status SET reason = 'x'",
            "DELETE FROM participant_status",
            "UPDATE dataset_locks SET reason = 'x'",
            "DELETE FROM dataset_locks",
            "DELETE FROM erasures",
        ] {
            refused(&c, user, sql).await;
        }
        if user != STEWARD {
            refused(&c, user, "SELECT vitalsink_erase_participant('P1')").await;
            refused(
                &c,
                user,
                "INSERT INTO dataset_locks (name, revision, reason, rows, manifest, checksum)
                 VALUES ('x', 1, 'r', 0, '{}', 'c')",
            )
            .await;
        }
        if [INGEST, READER, AUDITOR].contains(&user) {
            refused(&c, user, insert_entry).await;
        }
        if [INGEST, READER, AUDITOR, ARCHIVER].contains(&user) {
            refused(
                &c,
                user,
                "INSERT INTO participant_status (seq, participant_id, status, effective_at, reason)
                 VALUES (1000, 'P1', 'withdrawn', now(), 'r')",
            )
            .await;
        }
    }
    // The steward: no direct change of rows.
    let st = connect(&user_url(STEWARD)).await;
    for sql in [
        "DELETE FROM measurements",
        "UPDATE measurements SET value = 0",
        "TRUNCATE measurements",
        "INSERT INTO measurements (participant_id, metric, ts, value) VALUES ('P3', 'hr', now(), 1)",
        "DELETE FROM ingest_offsets",
        "INSERT INTO shard_map (epoch, shards, reason) VALUES (99, ARRAY['x'], 'r')",
        "CREATE TABLE vitalsink_intruder (i int)",
    ] {
        refused(&st, STEWARD, sql).await;
    }
    // The auditor reads the trail and the locks, not the data.
    let au = connect(&user_url(AUDITOR)).await;
    allowed(&au, AUDITOR, "SELECT count(*) FROM audit_log").await;
    allowed(&au, AUDITOR, "SELECT count(*) FROM dataset_locks").await;
    allowed(&au, AUDITOR, "SELECT count(*) FROM participant_status").await;
    refused(&au, AUDITOR, "SELECT count(*) FROM measurements").await;
    // The reader sees the trail (query's audit_log table) but writes nothing.
    let rd = connect(&user_url(READER)).await;
    allowed(&rd, READER, "SELECT count(*) FROM audit_log").await;

    // Through the binary: refused roles leave nothing behind.
    let statuses_before: i64 = owner
        .query_one("SELECT count(*) FROM participant_status", &[])
        .await
        .unwrap()
        .get(0);
    let entries_before: i64 = owner
        .query_one("SELECT count(*) FROM audit_log", &[])
        .await
        .unwrap()
        .get(0);
    for user in [AUDITOR, READER, INGEST, ARCHIVER] {
        let cfg = config_as(dir.path(), &dbs.shards, user, &archive);
        let out = trial(
            &cfg,
            &[
                "participants",
                "withdraw",
                "P1",
                "--effective",
                "2026-01-01",
                "--reason",
                "not allowed",
            ],
        );
        assert_refused(&out, user, "participants withdraw");
    }
    let auditor_cfg = config_as(dir.path(), &dbs.shards, AUDITOR, &archive);
    assert_refused(
        &trial(
            &auditor_cfg,
            &["participants", "erase", "P1", "--reason", "x"],
        ),
        AUDITOR,
        "participants erase",
    );
    assert_refused(
        &trial(&auditor_cfg, &["lock", "create", "L1", "--reason", "x"]),
        AUDITOR,
        "lock create",
    );
    let statuses_after: i64 = owner
        .query_one("SELECT count(*) FROM participant_status", &[])
        .await
        .unwrap()
        .get(0);
    let entries_after: i64 = owner
        .query_one("SELECT count(*) FROM audit_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        statuses_after, statuses_before,
        "a refused withdrawal left a status change"
    );
    assert_eq!(
        entries_after, entries_before,
        "a refused command left an audit entry"
    );
    let p1: i64 = owner
        .query_one(
            "SELECT count(*) FROM measurements WHERE participant_id = 'P1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(p1, 1, "a refused erasure deleted rows");

    // The auditor's own commands work.
    let out = trial(&auditor_cfg, &["audit", "list", "--format", "csv"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(
        csv.lines()
            .next()
            .unwrap_or("")
            .starts_with("seq,at,os_user,db_role,host,action"),
        "{csv}"
    );
    assert!(
        csv.contains("participant.withdraw") && csv.contains(STEWARD),
        "{csv}"
    );
    let out = trial(&auditor_cfg, &["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dbs.drop_all().await;
}
