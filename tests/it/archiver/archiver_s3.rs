//! Issue 4: aged chunks of 2 shards archived to S3 (the stack's SeaweedFS), read back by
//! DuckDB's own httpfs extension straight from S3 (loaded offline from the PyPI wheel
//! `duckdb-extension-httpfs`), added to what the shards keep: exactly the original
//! per-participant counts and sums. See `vitalsink_tests::archive_run::round_trip`.

#[tokio::test(flavor = "multi_thread")]
async fn archive_to_s3_round_trip() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    vitalsink_tests::archive_run::round_trip(true).await;
}
