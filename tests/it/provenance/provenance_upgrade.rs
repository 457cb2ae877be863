//! Issue 25, upgrade in place: shards left at schema version 11 by an older binary, holding
//! rows (one reading stored twice, as resends were before the rule), are brought to the current
//! version by `ingest migrate`. The rows stay as they were, with NULL for what was not
//! recorded (offset, occurrence, receipt, lineage); the pair is never taken for a duplicate
//! (a NULL occurrence never matches); a new resend of that reading is a new row (documented in
//! schemas/README.md); and the old rows archive, verify and restore like new ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use vitalsink_common::migrate::{latest_version, MIGRATIONS};
use vitalsink_tests::ingest_run::IngestSetup;
use vitalsink_tests::replay_run::{archive_config, archiver_json};
use vitalsink_tests::{connect, ShardDbs, Stack};

/// Brings a fresh database to schema version 11 exactly as `migrate` of that time did: the
/// first eleven migrations and their version rows, in one transaction.
async fn schema_11(url: &str) {
    let mut c = connect(url).await;
    let tx = c.transaction().await.unwrap();
    tx.batch_execute(
        "CREATE TABLE vitalsink_schema_version (
             version integer PRIMARY KEY, name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .unwrap();
    for m in MIGRATIONS.iter().filter(|m| m.version <= 11) {
        tx.batch_execute(m.sql).await.unwrap();
        tx.execute(
            "INSERT INTO vitalsink_schema_version (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_11_deployment_upgrades_in_place() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let dbs = ShardDbs::create(&stack, "t_upgrade").await;
    let dir = tempfile::tempdir().unwrap();
    let setup = IngestSetup::new(&stack, &dbs.shards, dir.path());
    for s in &dbs.shards {
        schema_11(&s.url).await;
    }
    // Ten days old: an aged chunk for the archiver. "old-a" is on the first shard or the
    // second; both shards get the same rows (routing does not matter to the schema).
    let old_rows = "INSERT INTO measurements (participant_id, metric, ts, value, unit)
         SELECT 'old-a', 'heart_rate', date_trunc('day', now()) - interval '10 days' + i * interval '1 minute', 60 + i, '/min'
           FROM generate_series(0, 9) i;
         INSERT INTO measurements (participant_id, metric, ts, value)
         VALUES ('old-a', 'heart_rate', date_trunc('day', now()) - interval '10 days', 60)";
    for s in &dbs.shards {
        connect(&s.url).await.batch_execute(old_rows).await.unwrap();
    }

    let out = std::process::Command::new(vitalsink_tests::ingest_run::ingest_binary())
        .args(["--config", setup.config.to_str().unwrap(), "migrate"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ingest migrate: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    for s in &dbs.shards {
        let c = connect(&s.url).await;
        let v: i32 = c
            .query_one("SELECT max(version) FROM vitalsink_schema_version", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, latest_version());
        let r = c
            .query_one(
                "SELECT count(*), count(utc_offset_min), count(occurrence), count(received_at),
                        count(received_at_type), count(src_topic), count(src_partition),
                        count(src_offset), sum(value)
                   FROM measurements",
                &[],
            )
            .await
            .unwrap();
        let counts: Vec<i64> = (0..8).map(|i| r.get(i)).collect();
        assert_eq!(
            counts,
            [11, 0, 0, 0, 0, 0, 0, 0],
            "old rows kept, nothing recorded"
        );
        assert_eq!(r.get::<_, f64>(8), 705.0);
        let index: bool = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE indexname = 'measurements_reading')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(index, "the unique reading index is built over the old rows");
        // The same reading, now with an occurrence: a new row (the old copy's is unknown).
        let n = c
            .execute(
                "INSERT INTO measurements (participant_id, metric, ts, value, occurrence)
                 VALUES ('old-a', 'heart_rate', date_trunc('day', now()) - interval '10 days', 60, 0)
                 ON CONFLICT DO NOTHING",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
    }

    // The old rows archive, verify and restore.
    let root = dir.path().join("archive");
    std::fs::create_dir_all(&root).unwrap();
    let config = archive_config(&setup.config, &root, "3d");
    let alog = dir.path().join("archiver.log");
    let run = archiver_json(&config, &["run"], &alog);
    assert_eq!(run["failed"].as_u64(), Some(0), "{run}");
    assert_eq!(run["rows"].as_u64(), Some(24), "{run}");
    assert_eq!(run["duplicates"].as_u64(), Some(0), "{run}");
    let verify = archiver_json(&config, &["verify"], &alog);
    assert_eq!(
        verify["good"].as_u64(),
        run["archived"].as_u64(),
        "{verify}"
    );
    let day = |ago: i64| {
        (chrono::Utc::now() - chrono::Duration::days(ago))
            .format("%Y-%m-%d")
            .to_string()
    };
    let restored = archiver_json(
        &config,
        &["restore", "--from", &day(10), "--to", &day(9)],
        &alog,
    );
    let back: i64 = {
        let mut n = 0;
        for s in &dbs.shards {
            n += connect(&s.url)
                .await
                .query_one("SELECT count(*) FROM measurements", &[])
                .await
                .unwrap()
                .get::<_, i64>(0);
        }
        n
    };
    assert!(
        back > 0 && back <= 24,
        "restored rows of old-a's routing shard: {back} ({restored})"
    );
    dbs.drop_all().await;
}
