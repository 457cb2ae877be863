//! The real input end to end (issue 5): every real recording shipped in the PyPI packages
//! (fetched by `dev/fetch-data`) is replayed by the reference producer into a fresh topic,
//! the real ingest worker drains it into 2 TimescaleDB shards, and the shards must then hold
//! exactly what the source files hold: per participant the same number of rows and the same
//! exact sum of values, on the participant's routing shard only, with the same number of
//! repeated timestamps, and per participant, metric and UTC day the same rows and sums (the
//! daily-mean analysis of `dev/report`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use vitalsink_common::routing::ShardRouter;
use vitalsink_replay::publish::PublishOptions;
use vitalsink_replay::rebase::TimePlan;
use vitalsink_tests::dataset::OVERSIZE_LIMIT_BYTES;
use vitalsink_tests::ingest_run::{log_tail, prepare, wait_for_rows};
use vitalsink_tests::replay_run::{db_truth, fetch_data, stop_gracefully};
use vitalsink_tests::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_recordings_land_exactly_as_in_the_source_files() {
    let data = fetch_data();
    let stack = Stack::from_env();
    let (dbs, setup, dir) = prepare(&stack, "t_replay").await;
    let log = dir.path().join("ingest.log");
    let worker = setup.spawn(&log);

    let kafka = vitalsink_common::config::KafkaConfig {
        topic: setup.topic.clone(),
        ..stack.kafka()
    };
    let opts = PublishOptions {
        topic: setup.topic.clone(),
        batch_samples: vitalsink_replay::publish::MAX_BATCH_SAMPLES,
        // The worker's validation.max_message_bytes in this set-up.
        max_message_bytes: OVERSIZE_LIMIT_BYTES,
        rate: None,
        in_flight: 64,
    };
    let plan = TimePlan {
        native: false,
        end_at_micros: chrono::Utc::now().timestamp_micros(),
    };
    let truth = vitalsink_replay::run::real(&data, plan, &kafka, opts)
        .await
        .unwrap();
    assert_eq!(
        truth.participants.len(),
        19,
        "15 AWD + 1 BBA + 3 heartpy recordings"
    );
    assert!(truth.rows > 400_000, "{}", truth.rows);

    let n = wait_for_rows(&dbs.shards, truth.rows as i64, Duration::from_secs(600)).await;
    assert_eq!(
        n,
        truth.rows as i64,
        "rows in the shards\n{}",
        log_tail(&log)
    );

    stop_gracefully(worker, &log).await;

    let db = db_truth(&dbs.shards).await;
    let router = ShardRouter::new(dbs.shards.len());
    for p in &truth.participants {
        let home = router.shard_for(&p.participant_id);
        let got = db.shards[home]
            .get(&p.participant_id)
            .unwrap_or_else(|| panic!("{} missing on shard {home}", p.participant_id));
        assert_eq!(
            (got.rows, got.sum.to_bits(), got.duplicate_ts),
            (p.rows as i64, p.sum.to_bits(), p.duplicate_ts as i64),
            "{} ({}): rows, exact sum bits, repeated timestamps; db sum {} source sum {}",
            p.participant_id,
            p.source,
            got.sum,
            p.sum
        );
        for (i, s) in db.shards.iter().enumerate() {
            assert!(
                i == home || !s.contains_key(&p.participant_id),
                "{} also on shard {i}",
                p.participant_id
            );
        }
    }
    let in_db: usize = db.shards.iter().map(|s| s.len()).sum();
    assert_eq!(
        in_db,
        truth.participants.len(),
        "no unexpected participants"
    );
    assert!(
        truth.participants.iter().any(|p| p.duplicate_ts > 0),
        "heartpy data3.csv repeats timestamps"
    );

    let want: std::collections::BTreeMap<_, _> = truth
        .daily
        .iter()
        .map(|d| {
            (
                (d.participant_id.clone(), d.metric.clone(), d.day.clone()),
                (d.rows as i64, d.sum),
            )
        })
        .collect();
    assert_eq!(
        db.daily, want,
        "rows and exact sums per participant, metric and UTC day"
    );
    dbs.drop_all().await;
}
