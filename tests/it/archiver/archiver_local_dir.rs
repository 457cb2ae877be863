//! Issue 4: aged chunks of 2 shards archived to a local directory (the NAS case), read back
//! with DuckDB (`read_parquet(… hive_partitioning = true)`) and added to what the shards keep:
//! exactly the original per-participant counts and sums. See
//! `vitalsink_tests::archive_run::round_trip` for every assertion.

#[tokio::test(flavor = "multi_thread")]
async fn archive_to_local_directory_round_trip() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    vitalsink_tests::archive_run::round_trip(false).await;
}
