//! Issue 15: `archive.shard_concurrency` archives the shards at the same time. The same data
//! set is archived twice, into fresh databases each time: once with `shard_concurrency = 1`
//! (one shard after the other) and once with `2`.
//!
//! - **Overlap.** Each shard's `archive_log` rows carry `at` (PostgreSQL's `now()` of the step's
//!   transaction). Sequentially, shard1's first step comes after shard0's last one. With 2 at
//!   once, the two shards' spans `[first step, last step]` overlap. The sequential run is the
//!   control: it shows the check can fail.
//! - **Same result.** Both runs give the same JSON report (chunks, rows, bytes). Every chunk of
//!   every shard goes `planned → written → verified → dropped` in one attempt, in the same
//!   chunk order, and both shards carry one run id. The shards keep the same rows. DuckDB over
//!   each archive reads the same per-participant totals, and archive plus shards equals the
//!   original. `verify` passes.
//! - **Validation.** `shard_concurrency = 0` is refused (exit 2), naming the key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Utc};
use std::time::Instant;
use vitalsink_tests::archive_run::{
    add, aged_chunk_count, archiver_binary, assert_each_chunk_archived_once, assert_totals_eq,
    db_totals, load, parquet_objects, ArchiveSetup, DuckRead, Root, ROUND_TRIP,
};
use vitalsink_tests::dataset::Totals;
use vitalsink_tests::{connect, Stack};

/// What one run left: its report, each shard's (chunk, step) log in id order and the span of
/// its steps, the run ids, the rows left in the shards, what DuckDB reads from the archive.
struct Outcome {
    report: serde_json::Value,
    steps: Vec<Vec<(String, Vec<String>)>>,
    spans: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    run_ids: Vec<String>,
    left: Totals,
    duck: DuckRead,
    objects: usize,
}

/// Archives the round-trip data set with `shard_concurrency = n` into fresh databases and a
/// fresh local archive; checks archive + shards = original and `verify`.
async fn archive_with(stack: &Stack, n: usize) -> Outcome {
    let setup = ArchiveSetup::new(
        stack,
        &format!("t_arch_conc{n}"),
        false,
        &format!("shard_concurrency = {n}"),
    )
    .await;
    let original = load(&setup.dbs.shards, ROUND_TRIP).await;
    let t = Instant::now();
    let report: serde_json::Value = serde_json::from_str(&setup.ok(&["run"])).unwrap();
    eprintln!(
        "shard_concurrency = {n}: run took {:?}: {report}",
        t.elapsed()
    );
    let log = std::fs::read_to_string(&setup.log).unwrap();
    assert!(
        log.contains(&format!("shards_at_once={n}")),
        "run logs how many shards go at once: {}",
        setup.log_tail()
    );
    let (mut steps, mut spans, mut run_ids) = (Vec::new(), Vec::new(), Vec::new());
    for s in &setup.dbs.shards {
        assert_eq!(aged_chunk_count(s).await, 0, "{}: aged chunks left", s.name);
        let rows = assert_each_chunk_archived_once(s).await;
        assert!(!rows.is_empty(), "{}: no archive log", s.name);
        // Per chunk, in the order the chunks started: chunk k's drop runs while chunk k+1
        // is exported, so how their log rows interleave is timing, not order.
        let mut per_chunk: Vec<(String, Vec<String>)> = Vec::new();
        for r in rows {
            match per_chunk.iter_mut().find(|(c, _)| *c == r.0) {
                Some((_, seq)) => seq.push(r.2),
                None => per_chunk.push((r.0, vec![r.2])),
            }
        }
        steps.push(per_chunk);
        let c = connect(&s.url).await;
        // Every log row mirrored and marked by the run itself (the marks ride in the drops'
        // transactions, the last ones at the end of the shard), before `verify` below would
        // mirror what it left.
        let counts = c
            .query_one(
                "SELECT count(*) FILTER (WHERE NOT in_manifest), count(*) FROM archive_log",
                &[],
            )
            .await
            .unwrap();
        let (unmarked, logged): (i64, i64) = (counts.get(0), counts.get(1));
        assert_eq!(unmarked, 0, "{}: log rows not marked mirrored", s.name);
        if let Root::Local(dir) = &setup.root {
            let entries = std::fs::read_dir(dir.join(format!("manifest/shard={}", s.name)))
                .unwrap()
                .count();
            assert_eq!(
                entries as i64, logged,
                "{}: one manifest entry per log row",
                s.name
            );
        }
        let span = c
            .query_one("SELECT min(at), max(at) FROM archive_log", &[])
            .await
            .unwrap();
        spans.push((span.get(0), span.get(1)));
        for r in c
            .query("SELECT DISTINCT run_id FROM archive_log", &[])
            .await
            .unwrap()
        {
            run_ids.push(r.get(0));
        }
    }
    let left = db_totals(&setup.dbs.shards).await;
    let duck = setup.duckdb(None);
    assert_totals_eq(
        &add(&duck.totals, &left),
        &original,
        &format!("shard_concurrency = {n}: DuckDB archive + shards vs original"),
    );
    assert_eq!(duck.unsorted_rows, 0, "rows sorted in every file");
    let objects = parquet_objects(&setup.root).await.len();
    let verify: serde_json::Value = serde_json::from_str(&setup.ok(&["verify"])).unwrap();
    assert_eq!(
        verify["good"].as_u64(),
        Some(objects as u64),
        "shard_concurrency = {n}: {verify}"
    );
    setup.dbs.drop_all().await;
    Outcome {
        report,
        steps,
        spans,
        run_ids,
        left,
        duck,
        objects,
    }
}

/// Whether two spans of time share an instant.
fn overlap(a: (DateTime<Utc>, DateTime<Utc>), b: (DateTime<Utc>, DateTime<Utc>)) -> bool {
    a.0.max(b.0) <= a.1.min(b.1)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_shards_archived_at_once_give_the_sequential_result() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();

    let refused = std::process::Command::new(archiver_binary())
        .arg("check-config")
        .env("VITALSINK_ARCHIVE__SHARD_CONCURRENCY", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("archive.shard_concurrency"), "{stderr}");

    let seq = archive_with(&stack, 1).await;
    let par = archive_with(&stack, 2).await;

    assert_eq!(seq.spans.len(), 2);
    assert!(
        seq.spans[0].1 < seq.spans[1].0,
        "one after the other: shard0 {:?} ends before shard1 {:?} starts",
        seq.spans[0],
        seq.spans[1]
    );
    assert!(
        overlap(par.spans[0], par.spans[1]),
        "at once: shard0 {:?} and shard1 {:?} overlap",
        par.spans[0],
        par.spans[1]
    );
    let shared = par.spans[0].1.min(par.spans[1].1) - par.spans[0].0.max(par.spans[1].0);
    eprintln!(
        "shard spans, sequential: {:?}; at once: {:?} (overlapping {} ms)",
        seq.spans,
        par.spans,
        shared.num_milliseconds()
    );

    assert_eq!(par.report, seq.report, "same JSON report");
    assert_eq!(par.report["failed"].as_u64(), Some(0), "{}", par.report);
    assert_eq!(
        par.report["busy_shards"].as_u64(),
        Some(0),
        "{}",
        par.report
    );
    assert_eq!(
        par.report["archived"].as_u64(),
        Some(par.objects as u64),
        "one object per archived chunk"
    );
    assert_eq!(par.objects, seq.objects);
    assert_eq!(
        par.steps, seq.steps,
        "same chunks and steps, shard by shard"
    );
    for (what, o) in [("sequential", &seq), ("at once", &par)] {
        assert_eq!(o.run_ids.len(), 2, "{what}: one run id per shard log");
        assert_eq!(o.run_ids[0], o.run_ids[1], "{what}: both shards in one run");
    }
    assert_totals_eq(&par.left, &seq.left, "rows left in the shards");
    assert_totals_eq(
        &par.duck.totals,
        &seq.duck.totals,
        "DuckDB over the archive",
    );
    assert_eq!(
        par.duck.partitions, seq.duck.partitions,
        "date/shard partitions"
    );
}
