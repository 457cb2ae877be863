//! Issue 25: a study app's resends, its device's UTC offsets and a data manager's lineage
//! questions, with stock clients against the real stack (`tests/scripts/provenance.py`).
//!
//! confluent-kafka publishes an upload, then the same bytes again, the same readings as single
//! records, split in two, from a second device, and an upload ten days old. The real worker
//! drains them into two shards; the real archiver moves the old day to Parquet; the old
//! upload is resent (the same bytes) after its day was archived and the archiver runs again.
//! Then database + archive must hold each reading once (two copies of one reading at one
//! instant in one record stay two; the second device's readings stay), read with pandas,
//! pyarrow datasets and DuckDB, each with the UTC offset it was written with (+05:45, -03:30,
//! +14:00, -12:00, Z, and -00:00 as unknown) and a receipt time; an archived row leads to its
//! Kafka record by its lineage alone, byte for byte; `query serve` read with ADBC gives the
//! same; and an archive mixing objects of before and after the change reads the same in
//! pandas, pyarrow, polars, DuckDB and Spark.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;
use vitalsink_tests::ingest_run::{log_tail, prepare, stop_gracefully, wait_applied};
use vitalsink_tests::query_run::Server;
use vitalsink_tests::replay_run::{archive_config, archiver_json};
use vitalsink_tests::{connect, Stack};

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/provenance.py")
}

/// Runs `provenance.py args`; asserts it succeeded and returns its last stdout line as JSON.
fn py(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new("python3")
        .arg(script())
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "provenance.py {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap()
}

/// The shards' rows of the test's participants, as JSON objects (ts and received_at in µs).
async fn db_rows(shards: &[vitalsink_common::config::ShardConfig]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for s in shards {
        let c = connect(&s.url).await;
        for r in c
            .query(
                "SELECT participant_id, device_id, metric, (extract(epoch FROM ts) * 1e6)::int8,
                        value, utc_offset_min, (extract(epoch FROM received_at) * 1e6)::int8,
                        received_at_type, src_topic, src_partition, src_offset, occurrence
                   FROM measurements WHERE participant_id LIKE 'prov-%'",
                &[],
            )
            .await
            .unwrap()
        {
            out.push(serde_json::json!({
                "participant_id": r.get::<_, String>(0),
                "device_id": r.get::<_, Option<String>>(1),
                "metric": r.get::<_, String>(2),
                "ts": r.get::<_, i64>(3),
                "value": r.get::<_, f64>(4),
                "utc_offset_min": r.get::<_, Option<i16>>(5),
                "received_at": r.get::<_, Option<i64>>(6),
                "received_at_type": r.get::<_, Option<i16>>(7),
                "src_topic": r.get::<_, Option<String>>(8),
                "src_partition": r.get::<_, Option<i32>>(9),
                "src_offset": r.get::<_, Option<i64>>(10),
                "occurrence": r.get::<_, Option<i16>>(11),
            }));
        }
    }
    out
}

/// Per partition, the offset after the last record the plan says was sent (from the
/// producer's delivery reports): what the shards must have applied.
fn sent_next(plan: &std::path::Path) -> std::collections::BTreeMap<i32, i64> {
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plan).unwrap()).unwrap();
    let mut next = std::collections::BTreeMap::new();
    for r in plan["sent"].as_array().unwrap() {
        let (p, o) = (
            r["partition"].as_i64().unwrap(),
            r["offset"].as_i64().unwrap(),
        );
        let e = next.entry(p as i32).or_insert(0);
        *e = (*e).max(o + 1);
    }
    assert!(!next.is_empty(), "the plan lists records sent");
    next
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resends_offsets_and_lineage_through_stock_clients() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let (dbs, setup, dir) = prepare(&stack, "t_prov").await;
    let log = dir.path().join("ingest.log");
    let worker = setup.spawn(&log);
    let plan = dir.path().join("plan.json");
    let plan_s = plan.to_str().unwrap();
    let produced = py(&["produce", &stack.brokers, &setup.topic, plan_s]);
    let want = produced["readings"].as_u64().unwrap();
    assert_eq!(want, 21, "{produced}");
    assert!(
        wait_applied(&setup, &sent_next(&plan), Duration::from_secs(120)).await,
        "records consumed\n{}",
        log_tail(&log)
    );
    let rows = db_rows(&dbs.shards).await;
    assert_eq!(
        rows.len() as u64,
        want,
        "each reading once in the database\n{}",
        log_tail(&log)
    );
    let twice: Vec<_> = rows
        .iter()
        .filter(|r| r["value"] == 70.5)
        .map(|r| r["occurrence"].as_i64())
        .collect();
    assert_eq!(
        twice.len(),
        2,
        "one reading twice in one record is kept twice"
    );

    // The old day goes to the archive; then its upload is resent.
    let root = dir.path().join("archive");
    std::fs::create_dir_all(&root).unwrap();
    let config = archive_config(&setup.config, &root, "3d");
    let alog = dir.path().join("archiver.log");
    let first = archiver_json(&config, &["run"], &alog);
    assert!(first["archived"].as_u64().unwrap() >= 1, "{first}");
    py(&["produce-late", &stack.brokers, &setup.topic, plan_s]);
    assert!(
        wait_applied(&setup, &sent_next(&plan), Duration::from_secs(120)).await,
        "late resend consumed\n{}",
        log_tail(&log)
    );
    stop_gracefully(worker, &log).await;
    let late = archiver_json(&config, &["run"], &alog);
    assert_eq!(late["failed"].as_u64(), Some(0), "{late}");
    assert_eq!(
        late["duplicates"].as_u64(),
        Some(6),
        "the resent old upload is left out of the archive: {late}"
    );
    let verify = archiver_json(&config, &["verify"], &alog);
    assert_eq!(
        verify["corrupt"].as_array().map(Vec::len),
        Some(0),
        "{verify}"
    );

    let rows_path = dir.path().join("rows.json");
    std::fs::write(
        &rows_path,
        serde_json::to_vec(&db_rows(&dbs.shards).await).unwrap(),
    )
    .unwrap();
    let root_s = root.to_str().unwrap();
    let checked = py(&["check", rows_path.to_str().unwrap(), root_s, plan_s]);
    assert_eq!(checked["archive"].as_u64(), Some(6), "{checked}");
    assert_eq!(checked["database"].as_u64(), Some(15), "{checked}");
    let traced = py(&["lineage", &stack.brokers, root_s, plan_s]);
    assert_eq!(traced["bytes_equal"], true, "{traced}");

    let qlog = dir.path().join("query.log");
    let server = Server::start(&config, &[], &[], &qlog).await;
    let read = py(&["adbc", &server.addr, plan_s]);
    assert_eq!(read["rows"].as_u64(), Some(want), "{read}");
    server.stop();

    let mixed = py(&["mixed", root_s]);
    assert!(
        mixed["readers"]["spark"][0].as_u64().unwrap() >= 9,
        "{mixed}"
    );
    dbs.drop_all().await;
}
