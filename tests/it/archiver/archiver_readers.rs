//! Issue 11: the archive folder is read in full by every analyst's reader the README shows:
//! `pandas.read_parquet('<archive>/measurements')`, `pyarrow.dataset.dataset(…,
//! partitioning='hive')`, `polars.scan_parquet(…, hive_partitioning=True)` and DuckDB's
//! `read_parquet(…/**/*.parquet, hive_partitioning = true)` (`tests/scripts/archive_readers.py`).
//! Objects used to be named after their chunk (`_hyper_1_5_chunk-….parquet`), which Arrow's
//! dataset discovery (and so pandas) and Spark skip as hidden: those readers saw 0 rows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use vitalsink_tests::archive_run::{
    db_totals, is_hidden, load, local_files, parquet_objects, sub, ArchiveSetup, ROUND_TRIP,
};
use vitalsink_tests::Stack;

#[tokio::test(flavor = "multi_thread")]
async fn pandas_pyarrow_polars_and_duckdb_read_every_archived_row() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let setup = ArchiveSetup::new(&stack, "t_arch_readers", false, "").await;
    let original = load(&setup.dbs.shards, ROUND_TRIP).await;
    let report: serde_json::Value = serde_json::from_str(&setup.ok(&["run"])).unwrap();
    assert_eq!(report["failed"].as_i64(), Some(0), "{report}");
    let archived = sub(&original, &db_totals(&setup.dbs.shards).await);
    let archived_rows: i64 = archived.values().map(|t| t.0).sum();
    assert_eq!(report["rows"].as_i64(), Some(archived_rows), "{report}");

    let objects = parquet_objects(&setup.root).await;
    assert!(objects.len() >= 10, "{objects:?}");
    for o in &objects {
        assert!(!is_hidden(o), "no path component starts with _ or .: {o}");
        let (dir, file) = o.rsplit_once('/').unwrap();
        let shard = dir.rsplit_once("/shard=").unwrap().1;
        assert!(
            file.starts_with(&format!("part-{shard}-hyper_")) && file.ends_with(".parquet"),
            "part-<shard>-<chunk id>-<attempt>.parquet: {o}"
        );
    }
    assert_eq!(
        local_files(&setup.root),
        objects,
        "no other file in the folder"
    );
    let rows = setup.assert_readers_read(&archived);
    eprintln!("rows read per reader: {rows:?} (archived {archived_rows})");
    setup.dbs.drop_all().await;
}
