//! Issue 14, least privilege (schemas/ROLES.md): migration 9's group roles, each binary
//! running as a login user in its own role.
//!
//! * Refusals, SQLSTATE 42501: the ingest role cannot DELETE, UPDATE or TRUNCATE rows nor
//!   drop a chunk (`drop_chunks`, `DROP TABLE <chunk>`, the archiver's SECURITY DEFINER
//!   functions), though its INSERT into a new time range creates a chunk; the reader cannot
//!   INSERT, UPDATE, DELETE or TRUNCATE any table; the archiver cannot SELECT, INSERT, UPDATE
//!   or DELETE `ingest_offsets`, and its drop function refuses anything but a chunk of
//!   `measurements`; the mover cannot TRUNCATE, drop chunks or read the archive log.
//! * Start-up: with migrations pending (a fresh database, or one at version 8) the ingest and
//!   archiver binaries running as their roles exit with an error naming the shard, the
//!   pending migrations and the owner, and change nothing; the owner's `migrate` then works.
//! * Round trip: ingest, archiver (`run`, `restore`) and query each with their own role end
//!   exactly as the same steps run by the owner on a twin set of databases from the same
//!   topic (rows per participant and shard after ingest, archive and restore; the archiver's
//!   reports; the query's per-participant totals), and as the data set's truth. An archiver
//!   given the reader's login fails and drops nothing (the login in the URL is what is used).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::Client;
use vitalsink_common::config::ShardConfig;
use vitalsink_common::kafka::ensure_topic;
use vitalsink_tests::archive_run::{archiver_binary, rows_per_shard};
use vitalsink_tests::dataset::{generate, Totals};
use vitalsink_tests::ingest_run::{
    assert_exactly_once, ingest_binary, log_tail, produce, shard_totals, stop_gracefully,
    wait_exit, wait_for_rows, IngestSetup,
};
use vitalsink_tests::replay_run::{archive_config, archiver_json};
use vitalsink_tests::{connect, run_ok, ShardDbs, Stack};

/// Login users of the test, one per group role (cluster-wide, shared by every run).
const INGEST: &str = "vs_test_ingest";
const ARCHIVER: &str = "vs_test_archiver";
const READER: &str = "vs_test_reader";
const MOVER: &str = "vs_test_mover";

/// Creates the login users on every server of the stack, each IN ROLE its group role.
async fn ensure_login_users(stack: &Stack) {
    vitalsink_tests::roles::ensure_login_users(
        stack,
        &[
            (INGEST, "vitalsink_ingest"),
            (ARCHIVER, "vitalsink_archiver"),
            (READER, "vitalsink_reader"),
            (MOVER, "vitalsink_mover"),
        ],
    )
    .await;
}

/// `shards` with the login `user` instead of the owner (`user=postgres`) in their URLs.
fn as_user(shards: &[ShardConfig], user: &str) -> Vec<ShardConfig> {
    shards
        .iter()
        .map(|s| {
            assert!(s.url.contains("user=postgres"), "{}", s.url);
            ShardConfig {
                url: s.url.replace("user=postgres", &format!("user={user}")),
                ..s.clone()
            }
        })
        .collect()
}

/// Asserts `sql`, run by `who`, is refused with SQLSTATE 42501 (insufficient_privilege).
async fn refused(c: &Client, who: &str, sql: &str) {
    assert_eq!(
        vitalsink_tests::roles::sqlstate(c, sql).await.as_deref(),
        Some("42501"),
        "{who} must be refused: {sql}"
    );
}

/// Asserts `sql`, run by `who`, succeeds.
async fn allowed(c: &Client, who: &str, sql: &str) {
    assert_eq!(
        vitalsink_tests::roles::sqlstate(c, sql).await,
        None,
        "{who} must be allowed: {sql}"
    );
}

/// Runs `bin --config config migrate` (as whoever the config's URLs name).
fn migrate(bin: &Path, config: &Path) {
    run_ok(Command::new(bin).arg("--config").arg(config).arg("migrate"));
}

/// Chunks of `measurements` as quoted `schema.name`, oldest first, and the row count.
async fn chunks_and_rows(owner: &Client) -> (Vec<String>, i64) {
    let chunks = vitalsink_tests::chunks(owner).await;
    let rows = owner
        .query_one("SELECT count(*) FROM measurements", &[])
        .await
        .unwrap()
        .get(0);
    (chunks, rows)
}

/// The shard's recorded schema version.
async fn schema_version(owner: &Client) -> i32 {
    owner
        .query_one("SELECT max(version) FROM vitalsink_schema_version", &[])
        .await
        .unwrap()
        .get(0)
}

/// Every table of the schema, with a column to name in an UPDATE.
const TABLES: &[(&str, &str)] = &[
    ("measurements", "value"),
    ("ingest_offsets", "next_offset"),
    ("archive_log", "detail"),
    ("shard_map", "reason"),
    ("shard_moves", "phase"),
    ("shard_move_rows", "rows"),
    ("shard_cutovers", "cutover_offset"),
    ("vitalsink_schema_version", "name"),
];

/// Starts `bin … run` (`ingest` or `archiver`) with `config` and asserts it exits non-zero
/// within 60 s, its log naming shard0, the pending migrations, `user` and the owner.
async fn assert_refuses_pending(bin: &Path, config: &Path, user: &str, log: &Path, found: i32) {
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let st = wait_exit(&mut child, Duration::from_secs(60)).await;
    if st.is_none() {
        child.kill().unwrap();
    }
    let text = std::fs::read_to_string(log).unwrap();
    assert!(
        st.is_some_and(|s| !s.success()),
        "{} as {user} must exit with an error: {st:?}\n{}",
        bin.display(),
        log_tail(log)
    );
    let want = format!(
        "shard shard0: schema migrations are pending (the shard is at version {found}, this binary needs {})",
        vitalsink_common::migrate::latest_version()
    );
    for needle in [want.as_str(), user, "must be applied by the schema's owner"] {
        assert!(
            text.contains(needle),
            "{} as {user}: log lacks {needle:?}\n{}",
            bin.display(),
            log_tail(log)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_role_is_refused_what_it_must_not_do() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let started = Instant::now();
    let stack = Stack::from_env();
    let dbs = ShardDbs::create(&stack, "t_roles_deny").await;
    let dir = tempfile::tempdir().unwrap();
    let owner_cfg = IngestSetup::new(&stack, &dbs.shards, dir.path());
    migrate(&ingest_binary(), &owner_cfg.config);
    ensure_login_users(&stack).await;

    let url = &dbs.shards[0].url;
    let owner = connect(url).await;
    owner
        .batch_execute(
            "INSERT INTO measurements (participant_id, metric, ts, value)
                  VALUES ('P1', 'hr', '2020-01-01T00:00:00Z', 1), ('P1', 'hr', '2020-02-01T00:00:00Z', 2);
             INSERT INTO ingest_offsets (consumer_group, topic, kafka_partition, next_offset)
                  VALUES ('g', 't', 0, 10);
             INSERT INTO shard_map (epoch, shards, reason) VALUES (1, ARRAY['shard0', 'shard1'], 'test');",
        )
        .await
        .unwrap();
    let (chunks, rows) = chunks_and_rows(&owner).await;
    assert_eq!((chunks.len(), rows), (2, 2), "{chunks:?}");
    let chunk = chunks[0].clone();
    let user_url = |u: &str| url.replace("user=postgres", &format!("user={u}"));

    // ingest: inserts, also into a new time range (TimescaleDB creates the chunk as the
    // hypertable's owner), keeps ingest_offsets; deletes and drops nothing.
    let ing = connect(&user_url(INGEST)).await;
    allowed(
        &ing,
        INGEST,
        "INSERT INTO measurements (participant_id, metric, ts, value)
              VALUES ('P2', 'hr', '2020-03-01T00:00:00Z', 3)",
    )
    .await;
    // The duplicate-aware write's path (ingest/src/data/writer.rs): a temporary staging table
    // declared column by column, then INSERT … ON CONFLICT DO NOTHING (one of two copies kept).
    let cols = vitalsink_common::columns::column_list();
    allowed(
        &ing,
        INGEST,
        &format!(
            "BEGIN;
             CREATE TEMP TABLE IF NOT EXISTS vitalsink_ingest_staging ({}) ON COMMIT DELETE ROWS;
             INSERT INTO vitalsink_ingest_staging (participant_id, metric, ts, value, occurrence, src_partition)
                  VALUES ('P2', 'hr', '2020-03-01T00:00:01Z', 4, 0, 0), ('P2', 'hr', '2020-03-01T00:00:01Z', 4, 0, 0);
             INSERT INTO measurements ({cols}) SELECT {cols} FROM vitalsink_ingest_staging
              WHERE src_partition = 0 ON CONFLICT DO NOTHING;
             COMMIT",
            vitalsink_common::columns::column_defs()
        ),
    )
    .await;
    allowed(
        &ing,
        INGEST,
        "BEGIN;
         SELECT next_offset FROM ingest_offsets WHERE consumer_group = 'g' FOR UPDATE;
         UPDATE ingest_offsets SET next_offset = 11 WHERE consumer_group = 'g';
         INSERT INTO ingest_offsets (consumer_group, topic, kafka_partition, next_offset)
              VALUES ('g', 't', 1, 0) ON CONFLICT DO NOTHING;
         COMMIT",
    )
    .await;
    let (after_insert, rows) = chunks_and_rows(&owner).await;
    assert_eq!(
        (after_insert.len(), rows),
        (3, 4),
        "the ingest role's insert created a chunk: {after_insert:?}"
    );
    for sql in [
        "DELETE FROM measurements".to_string(),
        "UPDATE measurements SET value = 0".into(),
        "TRUNCATE measurements".into(),
        "SELECT drop_chunks('measurements', older_than => now())".into(),
        format!("DROP TABLE {chunk}"),
        format!("SELECT vitalsink_drop_chunk('{chunk}')"),
        format!("BEGIN; SELECT vitalsink_lock_chunk('{chunk}')"),
        format!("BEGIN; SELECT vitalsink_share_lock_chunk('{chunk}')"),
        format!("SELECT vitalsink_delete_archived('{chunk}', ARRAY['P1'], ARRAY['hr'], ARRAY[now()], ARRAY[1.0::float8], ARRAY[NULL::text], ARRAY[0::int2])"),
        format!("BEGIN; LOCK TABLE {chunk} IN ACCESS EXCLUSIVE MODE"),
        format!("BEGIN; LOCK TABLE {chunk} IN SHARE MODE"),
        format!("DELETE FROM {chunk}"),
        "DELETE FROM ingest_offsets".into(),
        "TRUNCATE ingest_offsets".into(),
        "DROP TABLE ingest_offsets".into(),
        "DELETE FROM shard_map".into(),
        "UPDATE shard_map SET reason = 'x'".into(),
        "SELECT count(*) FROM archive_log".into(),
        "ALTER TABLE measurements ADD COLUMN x int".into(),
        "CREATE TABLE vitalsink_intruder (i int)".into(),
    ] {
        refused(&ing, INGEST, &sql).await;
    }

    // reader: SELECT only, on what a query reads.
    let rd = connect(&user_url(READER)).await;
    allowed(&rd, READER, "SELECT count(*) FROM measurements").await;
    allowed(
        &rd,
        READER,
        "SELECT (SELECT count(*) FROM archive_log), (SELECT count(*) FROM shard_map),
                (SELECT count(*) FROM shard_moves), (SELECT count(*) FROM shard_move_rows),
                (SELECT count(*) FROM shard_cutovers)",
    )
    .await;
    for (table, col) in TABLES {
        for sql in [
            format!("INSERT INTO {table} DEFAULT VALUES"),
            format!("UPDATE {table} SET {col} = {col}"),
            format!("DELETE FROM {table}"),
            format!("TRUNCATE {table}"),
        ] {
            refused(&rd, READER, &sql).await;
        }
    }
    for sql in [
        format!("INSERT INTO {chunk} (participant_id, metric, ts, value) VALUES ('P3', 'hr', '2020-01-01', 1)"),
        format!("DELETE FROM {chunk}"),
        format!("DROP TABLE {chunk}"),
        format!("SELECT vitalsink_drop_chunk('{chunk}')"),
        format!("BEGIN; SELECT vitalsink_share_lock_chunk('{chunk}')"),
        format!("SELECT vitalsink_delete_archived('{chunk}', ARRAY['P1'], ARRAY['hr'], ARRAY[now()], ARRAY[1.0::float8], ARRAY[NULL::text], ARRAY[0::int2])"),
        "SELECT drop_chunks('measurements', older_than => now())".into(),
        "SELECT * FROM ingest_offsets".into(),
    ] {
        refused(&rd, READER, &sql).await;
    }

    // archiver: nothing of ingest_offsets; no DELETE, UPDATE or TRUNCATE of rows; its drop
    // function drops chunks of measurements only.
    let arc = connect(&user_url(ARCHIVER)).await;
    for sql in [
        "SELECT * FROM ingest_offsets",
        "SELECT count(*) FROM ingest_offsets",
        "INSERT INTO ingest_offsets (consumer_group, topic, kafka_partition, next_offset) VALUES ('g', 't', 5, 0)",
        "UPDATE ingest_offsets SET next_offset = 0",
        "DELETE FROM ingest_offsets",
        "TRUNCATE ingest_offsets",
        "DELETE FROM measurements",
        "UPDATE measurements SET value = 0",
        "TRUNCATE measurements",
        "SELECT drop_chunks('measurements', older_than => now())",
        "SELECT vitalsink_drop_chunk('measurements')",
        "SELECT vitalsink_drop_chunk('ingest_offsets')",
        "SELECT vitalsink_drop_chunk('archive_log')",
        "SELECT vitalsink_drop_chunk(NULL)",
        "BEGIN; SELECT vitalsink_lock_chunk('ingest_offsets')",
        "BEGIN; SELECT vitalsink_share_lock_chunk('ingest_offsets')",
        "BEGIN; SELECT vitalsink_share_lock_chunk('measurements')",
        "BEGIN; SELECT vitalsink_share_lock_chunk(NULL)",
        "UPDATE shard_map SET reason = 'x'",
        "SELECT vitalsink_delete_archived('measurements', ARRAY['P1'], ARRAY['hr'], ARRAY[now()], ARRAY[1.0::float8], ARRAY[NULL::text], ARRAY[0::int2])",
        "SELECT vitalsink_delete_archived('ingest_offsets', ARRAY['P1'], ARRAY['hr'], ARRAY[now()], ARRAY[1.0::float8], ARRAY[NULL::text], ARRAY[0::int2])",
    ] {
        refused(&arc, ARCHIVER, sql).await;
    }
    // ...but it may delete a chunk's readings by identity (a late resend the archive holds).
    allowed(
        &arc,
        ARCHIVER,
        &format!("SELECT vitalsink_delete_archived('{chunk}', ARRAY['P1'], ARRAY['hr'], ARRAY[now()], ARRAY[1.0::float8], ARRAY[NULL::text], ARRAY[0::int2])"),
    )
    .await;
    // A table the owner made a child of `measurements` is no chunk (migration 11 checks
    // TimescaleDB's chunk catalog as well as inheritance).
    owner
        .batch_execute("CREATE TABLE vitalsink_child () INHERITS (measurements)")
        .await
        .unwrap();
    for sql in [
        "SELECT vitalsink_drop_chunk('vitalsink_child')",
        "BEGIN; SELECT vitalsink_lock_chunk('vitalsink_child')",
        "BEGIN; SELECT vitalsink_share_lock_chunk('vitalsink_child')",
    ] {
        refused(&arc, ARCHIVER, sql).await;
    }
    owner
        .batch_execute("DROP TABLE vitalsink_child")
        .await
        .unwrap();
    refused(&arc, ARCHIVER, &format!("DROP TABLE {chunk}")).await;
    refused(&arc, ARCHIVER, &format!("DELETE FROM {chunk}")).await;
    // SHARE mode itself needs UPDATE, DELETE, TRUNCATE or MAINTAIN; only the function gives it.
    refused(
        &arc,
        ARCHIVER,
        &format!("BEGIN; LOCK TABLE {chunk} IN SHARE MODE"),
    )
    .await;
    allowed(&arc, ARCHIVER, &format!("SELECT count(*) FROM {chunk}")).await;
    allowed(
        &arc,
        ARCHIVER,
        &format!("BEGIN; SELECT vitalsink_share_lock_chunk('{chunk}'); ROLLBACK"),
    )
    .await;

    // mover: moves rows of participants, nothing wholesale, no chunk drops, no archive log.
    let mv = connect(&user_url(MOVER)).await;
    allowed(
        &mv,
        MOVER,
        "DELETE FROM measurements WHERE participant_id = 'nobody'",
    )
    .await;
    for sql in [
        "TRUNCATE measurements".to_string(),
        "SELECT drop_chunks('measurements', older_than => now())".into(),
        format!("DROP TABLE {chunk}"),
        format!("SELECT vitalsink_drop_chunk('{chunk}')"),
        "SELECT count(*) FROM archive_log".into(),
        "DELETE FROM ingest_offsets".into(),
        "DELETE FROM shard_map".into(),
    ] {
        refused(&mv, MOVER, &sql).await;
    }

    // Nothing of that changed anything but the one allowed insert and offset update.
    assert_eq!(chunks_and_rows(&owner).await, (after_insert, 4));
    let offsets: Vec<(i32, i64)> = owner
        .query(
            "SELECT kafka_partition, next_offset FROM ingest_offsets ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(offsets, vec![(0, 11), (1, 0)]);
    for t in ["ingest_offsets", "archive_log", "measurements"] {
        let there: bool = owner
            .query_one(&format!("SELECT to_regclass('{t}') IS NOT NULL"), &[])
            .await
            .unwrap()
            .get(0);
        assert!(there, "{t} still exists");
    }

    // Start-up with migrations pending. A fresh database: nothing there, the roles may not
    // create the schema.
    let fresh = ShardDbs::create(&stack, "t_roles_fresh").await;
    let fresh_ingest = IngestSetup::new(&stack, &as_user(&fresh.shards, INGEST), dir.path());
    assert_refuses_pending(
        &ingest_binary(),
        &fresh_ingest.config,
        INGEST,
        &dir.path().join("fresh-ingest.log"),
        0,
    )
    .await;
    let fresh_arc = IngestSetup::new(&stack, &as_user(&fresh.shards, ARCHIVER), dir.path());
    let fresh_arc = archive_config(&fresh_arc.config, &dir.path().join("fresh-archive"), "1d");
    assert_refuses_pending(
        &archiver_binary(),
        &fresh_arc,
        ARCHIVER,
        &dir.path().join("fresh-archiver.log"),
        0,
    )
    .await;
    let fresh_owner = connect(&fresh.shards[0].url).await;
    let untouched: bool = fresh_owner
        .query_one(
            "SELECT to_regclass('vitalsink_schema_version') IS NULL AND to_regclass('measurements') IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(untouched, "the refused start created nothing");

    // A shard at version 8 (migrations 9 and 10 pending): refused, still at 8; the owner migrates.
    owner
        .batch_execute("DELETE FROM vitalsink_schema_version WHERE version >= 9")
        .await
        .unwrap();
    let v8_ingest = IngestSetup::new(&stack, &as_user(&dbs.shards, INGEST), dir.path());
    assert_refuses_pending(
        &ingest_binary(),
        &v8_ingest.config,
        INGEST,
        &dir.path().join("v8-ingest.log"),
        8,
    )
    .await;
    let v8_arc = IngestSetup::new(&stack, &as_user(&dbs.shards, ARCHIVER), dir.path());
    let v8_arc = archive_config(&v8_arc.config, &dir.path().join("v8-archive"), "1d");
    assert_refuses_pending(
        &archiver_binary(),
        &v8_arc,
        ARCHIVER,
        &dir.path().join("v8-archiver.log"),
        8,
    )
    .await;
    assert_eq!(
        schema_version(&owner).await,
        8,
        "the refused starts applied nothing"
    );
    migrate(&ingest_binary(), &owner_cfg.config);
    assert_eq!(
        schema_version(&owner).await,
        vitalsink_common::migrate::latest_version()
    );
    // Current again: the role's migrate (a no-op) succeeds.
    migrate(&archiver_binary(), &v8_arc);

    fresh.drop_all().await;
    dbs.drop_all().await;
    eprintln!("refusals and start-up checks: {:.1?}", started.elapsed());
}

/// `query sql` with `config`: per participant (rows, sum of values).
fn query_totals(config: &Path) -> Totals {
    let sql =
        "SELECT participant_id AS p, count(*) AS n, sum(value) AS s FROM measurements GROUP BY 1";
    let out = Command::new(ingest_binary().with_file_name("query"))
        .arg("--config")
        .arg(config)
        .args(["sql", sql, "--format", "json"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "query with {}: {}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["p"].as_str().unwrap().to_string(),
                (v["n"].as_i64().unwrap(), v["s"].as_f64().unwrap()),
            )
        })
        .collect()
}

/// Rows per archive-log step on every shard.
async fn log_step_counts(shards: &[ShardConfig]) -> Vec<Vec<(String, i64)>> {
    let mut out = Vec::new();
    for s in shards {
        let c = connect(&s.url).await;
        out.push(
            c.query(
                "SELECT step, count(*) FROM archive_log GROUP BY 1 ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn pipeline_with_a_role_per_binary_ends_as_with_the_owner() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let started = Instant::now();
    let stack = Stack::from_env();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let owner_dbs = ShardDbs::create(&stack, "t_roles_owner").await;
    let role_dbs = ShardDbs::create(&stack, "t_roles_role").await;
    let owner_ingest = IngestSetup::new(&stack, &owner_dbs.shards, d);
    ensure_topic(&stack.kafka(), &owner_ingest.topic, 6)
        .await
        .unwrap();
    ensure_topic(&stack.kafka(), &owner_ingest.dlq_topic, 6)
        .await
        .unwrap();
    // The owner migrates both sets; the roles' binaries then find the schema current.
    migrate(&ingest_binary(), &owner_ingest.config);
    migrate(
        &ingest_binary(),
        &IngestSetup::for_group(&owner_ingest, &role_dbs.shards, d).config,
    );
    ensure_login_users(&stack).await;
    let role_cfg =
        |user: &str| IngestSetup::for_group(&owner_ingest, &as_user(&role_dbs.shards, user), d);
    // The role's ingest worker: same topic, a consumer group of its own.
    let role_ingest = IngestSetup::for_topic(
        &stack,
        &as_user(&role_dbs.shards, INGEST),
        d,
        5_000,
        owner_ingest.topic.clone(),
    );

    // Ingest: 300 participants, 24,000 readings 3 days old, malformed records mixed in.
    let data = generate(300, 20, 2, 30, 3, chrono::Utc::now().timestamp_millis());
    produce(&stack.brokers, &owner_ingest.topic, &data.records).await;
    let (olog, rlog) = (d.join("ingest-owner.log"), d.join("ingest-role.log"));
    let (ow, rw) = (owner_ingest.spawn(&olog), role_ingest.spawn(&rlog));
    let limit = Duration::from_secs(180);
    let got = wait_for_rows(&owner_dbs.shards, data.readings, limit).await;
    assert_eq!(got, data.readings, "owner's ingest: {}", log_tail(&olog));
    let got = wait_for_rows(&role_dbs.shards, data.readings, limit).await;
    assert_eq!(got, data.readings, "ingest role: {}", log_tail(&rlog));
    stop_gracefully(ow, &olog).await;
    stop_gracefully(rw, &rlog).await;
    assert_exactly_once(&role_dbs.shards, &data.expected).await;
    assert_eq!(
        shard_totals(&role_dbs.shards).await,
        shard_totals(&owner_dbs.shards).await,
        "after ingest"
    );

    // Archive: every chunk is older than a day. Given the reader's login, the archiver fails
    // and drops nothing.
    let (aolog, arlog) = (d.join("archiver-owner.log"), d.join("archiver-role.log"));
    let owner_archive = archive_config(&owner_ingest.config, &d.join("archive-owner"), "1d");
    let role_root = d.join("archive-role");
    let role_archive = archive_config(&role_cfg(ARCHIVER).config, &role_root, "1d");
    let reader_archive = archive_config(&role_cfg(READER).config, &role_root, "1d");
    let denied = Command::new(archiver_binary())
        .arg("--config")
        .arg(&reader_archive)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("archiver-reader.log")).unwrap())
        .status()
        .unwrap();
    assert!(!denied.success(), "the archiver as the reader must fail");
    let denied_log = std::fs::read_to_string(d.join("archiver-reader.log")).unwrap();
    assert!(denied_log.contains("42501"), "{denied_log}");
    assert_eq!(
        rows_per_shard(&role_dbs.shards).await.values().sum::<i64>(),
        data.readings,
        "nothing dropped by the reader"
    );

    let ran_owner = archiver_json(&owner_archive, &["run"], &aolog);
    let ran_role = archiver_json(&role_archive, &["run"], &arlog);
    assert!(ran_role["archived"].as_i64() > Some(0), "{ran_role}");
    assert_eq!(ran_role["rows"].as_i64(), Some(data.readings), "{ran_role}");
    assert_eq!(ran_role["failed"].as_i64(), Some(0), "{ran_role}");
    for k in ["archived", "failed", "held", "rows"] {
        assert_eq!(
            ran_role[k], ran_owner[k],
            "archiver run {k}: {ran_role} vs {ran_owner}"
        );
    }
    assert_eq!(
        rows_per_shard(&role_dbs.shards).await,
        rows_per_shard(&owner_dbs.shards).await,
        "after archiving"
    );
    assert_eq!(
        rows_per_shard(&role_dbs.shards).await.values().sum::<i64>(),
        0,
        "every chunk dropped"
    );
    let steps = log_step_counts(&role_dbs.shards).await;
    assert_eq!(
        steps,
        log_step_counts(&owner_dbs.shards).await,
        "archive logs"
    );

    // Query (reader role): every row once, from the archive now.
    let reader_query = archive_config(&role_cfg(READER).config, &role_root, "1d");
    let owner_query = owner_archive.clone();
    assert_eq!(
        query_totals(&reader_query),
        data.expected,
        "query after archiving"
    );
    assert_eq!(query_totals(&owner_query), data.expected, "owner's query");

    // Restore the whole range.
    let from = (chrono::Utc::now() - chrono::Duration::days(5)).to_rfc3339();
    let to = chrono::Utc::now().to_rfc3339();
    let args = ["restore", "--from", from.as_str(), "--to", to.as_str()];
    let back_owner = archiver_json(&owner_archive, &args, &aolog);
    let back_role = archiver_json(&role_archive, &args, &arlog);
    assert_eq!(
        back_role["inserted"].as_i64(),
        Some(data.readings),
        "{back_role}"
    );
    for k in ["objects", "matched", "inserted", "skipped"] {
        assert_eq!(
            back_role[k], back_owner[k],
            "restore {k}: {back_role} vs {back_owner}"
        );
    }
    assert_exactly_once(&role_dbs.shards, &data.expected).await;
    assert_eq!(
        shard_totals(&role_dbs.shards).await,
        shard_totals(&owner_dbs.shards).await,
        "after restore"
    );
    assert_eq!(
        query_totals(&reader_query),
        data.expected,
        "query after restore"
    );

    owner_dbs.drop_all().await;
    role_dbs.drop_all().await;
    eprintln!("round trip with roles: {:.1?}", started.elapsed());
}
