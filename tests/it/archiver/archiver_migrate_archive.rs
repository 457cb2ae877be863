//! Issue 11: an archive written before the `part-…` layout (every object named after its
//! chunk, `_hyper_1_5_chunk-<attempt>.parquet`, which pandas/pyarrow and Spark skip) keeps
//! working with `verify`, `status` and `restore`, and `archiver migrate-archive` renames it
//! without losing its trail: killed after a copy and after logging a rename, it resumes, a
//! second run renames nothing, every chunk's log reads `planned, written, verified, dropped,
//! renamed`, `verify` is clean, and every reader sees every archived row.
//!
//! The old archive is made from a fresh one by `ArchiveSetup::make_legacy`: objects, log rows,
//! manifest entries and schema version as the archiver before the change wrote them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use vitalsink_tests::archive_run::{
    aged_start, assert_totals_eq, db_totals, is_hidden, load, local_files, log_paths,
    parquet_objects, sub, window_totals, ArchiveSetup, ROUND_TRIP,
};
use vitalsink_tests::dataset::Totals;
use vitalsink_tests::Stack;

fn json(s: &[u8]) -> serde_json::Value {
    serde_json::from_slice(s).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(s)))
}

fn len(v: &serde_json::Value) -> usize {
    v.as_array().map_or(usize::MAX, Vec::len)
}

/// What the archive holds per participant, read with all four readers (local) or DuckDB (S3).
fn archive_totals(setup: &ArchiveSetup, s3: bool, want: &Totals) {
    if s3 {
        assert_totals_eq(&setup.duckdb(None).totals, want, "DuckDB over S3");
    } else {
        let rows = setup.assert_readers_read(want);
        eprintln!("rows read per reader: {rows:?}");
    }
}

/// `verify`'s report and whether it passed.
fn verify(setup: &ArchiveSetup) -> (bool, serde_json::Value) {
    let out = setup.archiver(&["verify"], &[]);
    (out.status.success(), json(&out.stdout))
}

/// Runs `migrate-archive` with the process aborted at `point`.
fn migrate_crashing_at(setup: &ArchiveSetup, point: &str) {
    let out = setup.archiver(&["migrate-archive"], &[("ARCHIVER_CRASH_AT", point)]);
    assert_eq!(
        out.status.signal(),
        Some(6),
        "abort at {point}, got {}: {}",
        out.status,
        setup.log_tail()
    );
}

async fn legacy_archive_is_migrated(s3: bool) {
    let stack = Stack::from_env();
    let prefix = if s3 {
        "t_arch_legacy_s3"
    } else {
        "t_arch_legacy"
    };
    let setup = ArchiveSetup::new(&stack, prefix, s3, "").await;
    let shards = &setup.dbs.shards;
    let original = load(shards, ROUND_TRIP).await;
    let (d1, d2) = (
        aged_start() + chrono::Duration::days(1),
        aged_start() + chrono::Duration::days(2),
    );
    let want_window: i64 = window_totals(shards, d1, d2)
        .await
        .values()
        .map(|t| t.0)
        .sum();
    setup.ok(&["run"]);
    let archived = sub(&original, &db_totals(shards).await);
    let current = parquet_objects(&setup.root).await;
    let n = current.len();
    assert!(n >= 10, "{current:?}");

    // The old archive: every object hidden from Arrow's dataset discovery.
    let legacy = setup.make_legacy().await;
    assert_eq!(legacy.len(), n, "{legacy:?}");
    let old: Vec<String> = legacy.iter().map(|(_, o)| o.clone()).collect();
    assert_eq!(
        parquet_objects(&setup.root).await,
        old.iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    assert!(old.iter().all(|o| is_hidden(o)), "{old:?}");
    if !s3 {
        // The defect: pandas, pyarrow.dataset and Spark read nothing, DuckDB and polars
        // everything.
        let (ok, reads) = setup.readers();
        assert!(!ok, "{reads:?}");
        assert_eq!(reads["pandas"].rows, 0, "{reads:?}");
        assert_eq!(reads["pyarrow"].rows, 0, "{reads:?}");
        assert_eq!(reads["spark"].rows, 0, "{reads:?}");
        let all: i64 = archived.values().map(|t| t.0).sum();
        assert_eq!(reads["duckdb"].rows, all, "{reads:?}");
        assert_eq!(reads["polars"].rows, all, "{reads:?}");
    }

    // verify, status and restore work over it, paths taken from the records.
    let (ok, v) = verify(&setup);
    assert!(ok, "{v} {}", setup.log_tail());
    assert_eq!(v["good"].as_u64(), Some(n as u64), "{v}");
    assert_eq!(len(&v["hidden_names"]), n, "{v}");
    let status = json(setup.ok(&["status"]).as_bytes());
    assert_eq!(
        status["archive"]["live_objects"].as_u64(),
        Some(n as u64),
        "{status}"
    );
    assert_eq!(
        status["archive"]["hidden_name_objects"].as_u64(),
        Some(n as u64),
        "{status}"
    );
    assert_eq!(
        status["archive"]["live_rows"].as_i64(),
        Some(archived.values().map(|t| t.0).sum()),
        "{status}"
    );
    let (f, t) = (d1.to_rfc3339(), d2.to_rfc3339());
    let restored = json(setup.ok(&["restore", "--from", &f, "--to", &t]).as_bytes());
    assert_eq!(
        restored["inserted"].as_i64(),
        Some(want_window),
        "{restored}"
    );

    // A dry run changes nothing.
    let dry = json(setup.ok(&["migrate-archive", "--dry-run"]).as_bytes());
    assert_eq!(len(&dry["renamed"]), n, "{dry}");
    assert_eq!(parquet_objects(&setup.root).await.len(), n);
    assert!(parquet_objects(&setup.root)
        .await
        .iter()
        .all(|o| is_hidden(o)));

    // Killed after copying the first object: the copy is unknown to the manifest.
    migrate_crashing_at(&setup, "after-copy");
    let (ok, v) = verify(&setup);
    assert!(!ok, "{v}");
    assert_eq!(len(&v["unknown"]), 1, "{v}");
    // Killed after logging its rename: the old name is a leftover readers would double count.
    migrate_crashing_at(&setup, "after-rename-log");
    let (ok, v) = verify(&setup);
    assert!(!ok, "{v}");
    assert_eq!(len(&v["unknown"]), 0, "{v}");
    assert_eq!(len(&v["renamed_leftovers"]), 1, "{v}");
    assert_eq!(v["good"].as_u64(), Some(n as u64), "{v}");

    // Resumed: the rest renamed, the leftover deleted; then nothing more to do.
    let done = json(setup.ok(&["migrate-archive"]).as_bytes());
    assert_eq!(len(&done["renamed"]), n - 1, "{done}");
    assert_eq!(len(&done["old_names_deleted"]), 1, "{done}");
    assert_eq!(len(&done["failed"]), 0, "{done}");
    assert_eq!(done["current"].as_u64(), Some(1), "{done}");
    let again = json(setup.ok(&["migrate-archive"]).as_bytes());
    assert_eq!(len(&again["renamed"]), 0, "{again}");
    assert_eq!(len(&again["old_names_deleted"]), 0, "{again}");
    assert_eq!(again["current"].as_u64(), Some(n as u64), "{again}");

    assert_eq!(
        parquet_objects(&setup.root).await,
        current,
        "the current names"
    );
    if !s3 {
        assert_eq!(
            local_files(&setup.root),
            current,
            "no other file in the folder"
        );
    }
    let (ok, v) = verify(&setup);
    assert!(ok, "{v} {}", setup.log_tail());
    assert_eq!(v["good"].as_u64(), Some(n as u64), "{v}");
    assert_eq!(len(&v["hidden_names"]), 0, "{v}");
    assert_eq!(len(&v["renamed_leftovers"]), 0, "{v}");
    let status = json(setup.ok(&["status"]).as_bytes());
    assert_eq!(
        status["archive"]["hidden_name_objects"].as_u64(),
        Some(0),
        "{status}"
    );
    assert_eq!(
        status["archive"]["live_objects"].as_u64(),
        Some(n as u64),
        "{status}"
    );
    let mut dropped = 0;
    let mut renamed = 0;
    for s in &status["shards"].as_array().unwrap()[..] {
        dropped += s["log"]["chunks_by_last_step"]["dropped"].as_u64().unwrap();
        renamed += s["log"]["objects_renamed"].as_u64().unwrap();
    }
    assert_eq!((dropped, renamed), (n as u64, n as u64), "{status}");

    // The trail: every earlier row kept with the old name, one `renamed` row from it to the new.
    let by_old: std::collections::BTreeMap<&String, &String> =
        legacy.iter().map(|(new, old)| (old, new)).collect();
    for s in shards {
        let rows = log_paths(s).await;
        let chunks: BTreeSet<&String> = rows.iter().map(|r| &r.0).collect();
        for c in chunks {
            let of: Vec<_> = rows.iter().filter(|r| &r.0 == c).collect();
            let steps: Vec<&str> = of.iter().map(|r| r.2.as_str()).collect();
            assert_eq!(
                steps,
                ["planned", "written", "verified", "dropped", "renamed"],
                "{c}"
            );
            let old = of[3].3.clone().unwrap();
            assert!(of[..4].iter().all(|r| r.3.as_ref() == Some(&old)), "{of:?}");
            assert_eq!(of[4].4.as_ref(), Some(&old), "{of:?}");
            assert_eq!(of[4].3.as_ref(), Some(by_old[&old]), "{of:?}");
        }
    }

    archive_totals(&setup, s3, &archived);
    // restore reads the renamed objects: the window is all there already.
    let again = json(setup.ok(&["restore", "--from", &f, "--to", &t]).as_bytes());
    assert_eq!(again["inserted"].as_i64(), Some(0), "{again}");
    assert_eq!(again["skipped"].as_i64(), Some(want_window), "{again}");
    setup.dbs.drop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_local_archive_keeps_working_and_is_migrated() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    legacy_archive_is_migrated(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_s3_archive_keeps_working_and_is_migrated() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    legacy_archive_is_migrated(true).await;
}
