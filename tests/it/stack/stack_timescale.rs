//! The real TimescaleDB shards (`dev/stack up`): the migrations create the measurements
//! hypertable on every shard, rows routed by participant go in and come back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use vitalsink_common::config::DatabaseConfig;
use vitalsink_common::db::Shard;
use vitalsink_common::migrate::{latest_version, migrate};
use vitalsink_common::routing::ShardRouter;
use vitalsink_tests::{ShardDbs, Stack};

#[tokio::test]
async fn hypertable_on_every_shard_insert_and_read_back() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    assert!(
        stack.shard_urls.len() >= 2,
        "the stack runs at least 2 shards"
    );
    let dbs = ShardDbs::create(&stack, "t_stack").await;
    let db = DatabaseConfig {
        chunk_interval: std::time::Duration::from_secs(6 * 3600),
        ..DatabaseConfig::default()
    };
    let shards = Shard::all(&dbs.shards, &db).unwrap();

    for s in &shards {
        assert_eq!(
            migrate(s, &db).await.unwrap(),
            0,
            "fresh database starts at version 0"
        );
        assert_eq!(
            migrate(s, &db).await.unwrap(),
            latest_version(),
            "second run is a no-op"
        );
        let c = s.client().await.unwrap();
        let row = c
            .query_one(
                "SELECT d.time_interval::text FROM timescaledb_information.hypertables h
                 JOIN timescaledb_information.dimensions d USING (hypertable_schema, hypertable_name)
                 WHERE h.hypertable_name = 'measurements'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, String>(0),
            "06:00:00",
            "chunk interval from the configuration"
        );
    }

    // 300 participants, each on its routed shard, 4 readings each, spread over 2 days.
    let router = ShardRouter::new(shards.len());
    let mut expected = vec![0i64; shards.len()];
    for p in 0..300 {
        let pid = format!("P{p:05}");
        let s = &shards[router.shard_for(&pid)];
        let c = s.client().await.unwrap();
        for k in 0..4 {
            c.execute(
                "INSERT INTO measurements (participant_id, metric, ts, value, unit)
                 VALUES ($1, 'heart_rate', '2026-01-01T00:00:00Z'::timestamptz + $2 * INTERVAL '12 hours', $3, '/min')",
                &[&pid, &f64::from(k), &(60.0 + f64::from(k))],
            )
            .await
            .unwrap();
        }
        expected[s.index] += 4;
    }
    for s in &shards {
        let c = s.client().await.unwrap();
        let n: i64 = c
            .query_one("SELECT count(*) FROM measurements", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, expected[s.index], "{}: rows read back", s.name);
        assert!(n > 0, "{} got no participants", s.name);
        let wrong: i64 = c
            .query_one(
                "SELECT count(DISTINCT participant_id) FROM measurements",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(wrong * 4, n);
        let chunks: i64 = c
            .query_one("SELECT count(*) FROM show_chunks('measurements')", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            chunks, 4,
            "{}: 2 days in 6-hour chunks with readings every 12 h",
            s.name
        );
    }
    drop(shards);
    dbs.drop_all().await;
}
