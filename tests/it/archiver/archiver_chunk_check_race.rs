//! The archiver's chunk functions (migrations 9–11, schemas/ROLES.md) while other chunks of
//! the same hypertable are dropped.
//!
//! The archiver takes chunk k+1's SHARE lock while chunk k's drop commits on another
//! connection (`archiver/src/state/guard.rs`). Until migration 11 the functions checked their
//! argument against TimescaleDB's `show_chunks`, which fails with "no chunk found with ID <n>"
//! (SQLSTATE XX000) when a chunk is dropped while it scans the catalog; in the 100 M-row
//! growth benchmark 2–3 of 106 chunks were exported without their lock because of it. Here
//! the owner drops every other chunk of 300, one transaction each, while the archiver's role
//! calls `vitalsink_share_lock_chunk` and `vitalsink_lock_chunk` on a chunk that stays, in a
//! loop, until the drops are done. Every call must succeed (with migration 10's check, 69 of
//! 116 failed here), and the dropped chunks must be refused after.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use vitalsink_tests::ingest_run::{ingest_binary, IngestSetup};
use vitalsink_tests::{connect, run_ok, ShardDbs, Stack};

/// Login user of the test in the archiver's group role (cluster-wide, shared by every run).
const ARCHIVER: &str = "vs_test_archiver";

/// Chunks made (one a day); every other one is dropped during the calls.
const CHUNKS: i64 = 300;

#[tokio::test(flavor = "multi_thread")]
async fn chunk_functions_hold_while_other_chunks_are_dropped() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let dbs = ShardDbs::create(&stack, "t_chunk_race").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = IngestSetup::new(&stack, &dbs.shards, dir.path());
    run_ok(
        Command::new(ingest_binary())
            .arg("--config")
            .arg(&cfg.config)
            .arg("migrate"),
    );
    vitalsink_tests::roles::ensure_login_users(&stack, &[(ARCHIVER, "vitalsink_archiver")]).await;

    let url = &dbs.shards[0].url;
    let owner = connect(url).await;
    // One row a day over CHUNKS days: one chunk a day at the default 1-day chunk_interval.
    owner
        .batch_execute(&format!(
            "INSERT INTO measurements (participant_id, metric, ts, value)
             SELECT 'P1', 'hr', '2020-01-01T12:00:00Z'::timestamptz + d * interval '1 day', d
               FROM generate_series(0, {}) d",
            CHUNKS - 1
        ))
        .await
        .unwrap();
    let chunks = vitalsink_tests::chunks(&owner).await;
    assert_eq!(chunks.len() as i64, CHUNKS, "one chunk a day");
    let kept = chunks[0].clone();
    let doomed: Vec<String> = chunks.iter().skip(1).step_by(2).cloned().collect();

    let arc = connect(&url.replace("user=postgres", &format!("user={ARCHIVER}"))).await;
    let dropper = {
        let doomed = doomed.clone();
        tokio::spawn(async move {
            for c in &doomed {
                owner
                    .batch_execute(&format!("DROP TABLE {c}"))
                    .await
                    .unwrap();
            }
            owner
        })
    };
    let (mut calls, mut failures) = (0u32, Vec::new());
    // Bounded: the dropper ends after doomed.len() statements; at most 100,000 calls.
    while !dropper.is_finished() && calls < 100_000 {
        for f in ["vitalsink_share_lock_chunk", "vitalsink_lock_chunk"] {
            let sql = format!("BEGIN; SELECT {f}('{kept}'); ROLLBACK");
            if let Err(e) = arc.batch_execute(&sql).await {
                arc.batch_execute("ROLLBACK").await.unwrap();
                failures.push(format!(
                    "{f}: {}",
                    vitalsink_common::error::describe_postgres(&e)
                ));
            }
            calls += 1;
        }
    }
    let owner = dropper.await.unwrap();
    eprintln!(
        "{calls} calls while {} chunks were dropped, {} failed",
        doomed.len(),
        failures.len()
    );
    assert!(
        calls >= 20,
        "the loop must overlap the drops to test anything: {calls} calls"
    );
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed while other chunks were dropped; first: {:?}",
        failures.len(),
        failures.first()
    );

    // The dropped chunks' names are gone; the kept chunk is still taken, an undropped one too.
    for c in doomed.iter().take(3) {
        let state = vitalsink_tests::roles::sqlstate(
            &arc,
            &format!("BEGIN; SELECT vitalsink_share_lock_chunk('{c}'); ROLLBACK"),
        )
        .await;
        // A dropped chunk's name no longer resolves to a relation (42P01, in the cast to
        // regclass), before the function is reached.
        assert_eq!(state.as_deref(), Some("42P01"), "{c}");
    }
    assert_eq!(
        vitalsink_tests::roles::sqlstate(
            &arc,
            &format!(
                "BEGIN; SELECT vitalsink_share_lock_chunk('{}'); ROLLBACK",
                chunks[2]
            ),
        )
        .await,
        None
    );
    let left: i64 = owner
        .query_one(
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'measurements'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, CHUNKS - doomed.len() as i64);
    drop(owner);
    drop(arc);
    dbs.drop_all().await;
}
