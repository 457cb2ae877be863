//! Issue 26, "Dataset locks", done-when: a lock taken after `dev/run`'s data, then late data,
//! a restore, an online shard move, new readings and an erasure of another participant;
//! `query --lock` returns the locked counts and sums exactly (checked against the truth at
//! lock time) and `trial lock verify` passes.
//!
//! 1. `dev/run`'s data: every real recording (`replay real`, rebased to end now) drained by an
//!    ingest worker into two fresh shards, then `archiver run --older-than 3d` (part archived,
//!    part hot).
//! 2. The truth at lock time: per participant rows and exact sum of values over database +
//!    archive (read back directly), which must equal the source files' and what `query` reads;
//!    then `trial lock create`.
//! 3. After the lock, each a change the live `query` sees and `query --lock` must not:
//!    - late data: readings of an existing participant and of a new one inside an archived
//!      day, published to the topic while two ingest workers run, then archived by `archiver
//!      run` (late chunks);
//!    - a restore of that day (`archiver restore`); a second lock is refused meanwhile;
//!    - an online shard move (`reshard add-shard` while both workers run and readings keep
//!      coming), then a worker with the three-shard configuration;
//!    - new readings through the topic;
//!    - the erasure of a participant present at lock time (one the move took to the new shard,
//!      with rows in the restored day), with the three-shard configuration.
//! 4. `query --lock` (every reading read back through `--format parquet`) holds exactly the
//!    truth at lock time, rows and sum bits per participant, without the erased participant
//!    (revision 2); `count(*)`/`sum(value)` per participant agree; `trial lock list` shows
//!    revisions 1 and 2, the audit trail `lock.create` and `lock.revise` and verifies;
//!    `trial lock verify` passes. The live `query` differs from the lock exactly by what was
//!    published after it, less the erased participant.
//!
//! Live-side differences found at an intermediate step are collected and asserted at the end,
//! after the lock's checks, so that one failure does not hide the others.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration, NaiveDate, Utc};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;
use vitalsink_common::routing::ShardRouter;
use vitalsink_tests::archive_run::window_totals;
use vitalsink_tests::dataset::Record;
use vitalsink_tests::ingest_run::{
    extra_shard, log_tail, produce, stop_gracefully, wait_applied, wait_consumed, IngestSetup,
};
use vitalsink_tests::query_run::{close, RealDeployment};
use vitalsink_tests::replay_run::{archive_config, archiver_json, stored_truth};
use vitalsink_tests::trial_lock_run::{
    assert_exact, batch_record, binary, daily_rows, exact_diff, exact_totals, next_offsets,
    ok_json, ok_lines, query_readings, run_binary, totals_of_published, Exact, Reading,
};
use vitalsink_tests::trial_run::hot_rows;
use vitalsink_tests::Stack;

/// The lock.
const LOCK: &str = "L1";
/// Its reason.
const LOCK_REASON: &str = "database lock before unblinding";
/// A participant first seen in the late data (after the lock).
const NEWCOMER: &str = "late.newcomer";
/// Device of the late readings.
const LATE_DEVICE: &str = "tl-late";
/// Device of the new readings.
const NEW_DEVICE: &str = "tl-new";

/// Whether a reading is one of those this test published after the lock.
fn added(r: &Reading) -> bool {
    r.device == LATE_DEVICE || r.device == NEW_DEVICE
}

/// Midnight UTC of day `YYYY-MM-DD`.
fn midnight(day: &str) -> DateTime<Utc> {
    NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
}

/// `t` minus participant `p`.
fn without(t: &Exact, p: &str) -> Exact {
    let mut t = t.clone();
    t.remove(p);
    t
}

/// What the test checks at each step, and where.
struct Checker {
    dir: PathBuf,
    log: PathBuf,
    n: usize,
    /// Live-side differences, asserted at the end.
    problems: Vec<String>,
}

impl Checker {
    fn readings(&mut self, config: &Path, global: &[&str]) -> Vec<Reading> {
        self.n += 1;
        let out = self.dir.join(format!("answer-{}.parquet", self.n));
        let t = Instant::now();
        let rows = query_readings(config, global, &out, &self.log);
        let _ = std::fs::remove_file(&out);
        eprintln!(
            "query {global:?}: {} readings in {:.1} s",
            rows.len(),
            t.elapsed().as_secs_f64()
        );
        rows
    }

    /// The live `query` holds `base` (rows not published by this test) and `added` (rows it
    /// published) exactly; a difference is recorded, not asserted.
    fn live(&mut self, config: &Path, base: &Exact, extra: &Exact, step: &str) -> Vec<Reading> {
        let rows = self.readings(config, &[]);
        for (what, got, want) in [
            ("recordings", exact_totals(&rows, |r| !added(r)), base),
            (
                "readings published after the lock",
                exact_totals(&rows, added),
                extra,
            ),
        ] {
            if let Some(msg) = exact_diff(&got, want, &format!("live query after {step}: {what}")) {
                eprintln!("LIVE DIFFERENCE: {msg}");
                self.problems.push(msg);
            }
        }
        rows
    }

    /// `query --lock` holds exactly `want` and nothing published after the lock.
    fn lock(&mut self, config: &Path, want: &Exact, step: &str) -> Vec<Reading> {
        let rows = self.readings(config, &["--lock", LOCK]);
        assert!(
            !rows.iter().any(added),
            "query --lock after {step}: readings published after the lock"
        );
        assert_exact(
            &exact_totals(&rows, |_| true),
            want,
            &format!("query --lock {LOCK} after {step}"),
        );
        rows
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn query_lock_holds_through_late_data_restore_move_new_readings_and_erasure() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let started = Instant::now();
    let phase = |what: &str| eprintln!("[{:6.1} s] {what}", started.elapsed().as_secs_f64());
    let stack = Stack::from_env();

    // 1. dev/run's data: the real recordings, drained by an ingest worker, then archived.
    let dep = RealDeployment::ingested(&stack, "t_trial_lock").await;
    phase("recordings ingested");
    let d = dep.dir.path().to_path_buf();
    let log = |n: &str| d.join(format!("{n}.log"));
    let (alog, tlog) = (log("archiver"), log("trial"));
    let root = d.join("archive");
    std::fs::create_dir_all(&root).unwrap();
    let cfg2 = archive_config(&dep.setup.config, &root, "3d");
    let first = archiver_json(&cfg2, &["run", "--older-than", "3d"], &alog);
    assert!(first["archived"].as_u64().unwrap() > 0, "{first}");
    assert_eq!(first["failed"].as_u64(), Some(0), "{first}");
    phase("archived (older than 3 days)");

    // 2. The truth at lock time: database + archive read back directly, = the source files.
    let stored = stored_truth(&dep.dbs.shards, Some(&root)).await;
    let (in_db, in_archive): (i64, i64) = (
        stored.db_rows.iter().sum(),
        stored.archived_rows.iter().sum(),
    );
    assert!(
        in_db > 0 && in_archive > 0,
        "db {in_db}, archive {in_archive}"
    );
    let mut t0 = Exact::new();
    for shard in &stored.shards {
        for (pid, p) in shard {
            let prev = t0.insert(pid.clone(), (p.rows, p.sum));
            assert!(prev.is_none(), "{pid} on two shards before any move");
        }
    }
    assert_exact(
        &t0,
        &dep.truth.participants,
        "database + archive vs the source files",
    );
    assert_eq!(t0.len(), 19, "{:?}", t0.keys());
    let t0_rows: i64 = t0.values().map(|(n, _)| n).sum();
    let mut check = Checker {
        dir: d.clone(),
        log: log("query"),
        n: 0,
        problems: Vec::new(),
    };
    check.live(&cfg2, &t0, &Exact::new(), "the archiver run");
    assert!(check.problems.is_empty(), "{:?}", check.problems);

    let created = ok_lines(
        "trial",
        &cfg2,
        &["lock", "create", LOCK, "--reason", LOCK_REASON],
        &tlog,
    );
    let created = created.last().unwrap().clone();
    assert_eq!(created["rows"].as_i64(), Some(t0_rows), "{created}");
    assert_eq!(created["revision"].as_i64(), Some(1), "{created}");
    assert!(created["hot_objects"].as_i64().unwrap() > 0, "{created}");
    assert!(
        created["archive_objects"].as_i64().unwrap() > 0,
        "{created}"
    );
    check.lock(&cfg2, &t0, "its creation");
    let verified = ok_lines("trial", &cfg2, &["lock", "verify", LOCK], &tlog);
    let verified = verified.last().unwrap();
    assert_eq!(verified["revision"].as_i64(), Some(1), "{verified}");
    assert_eq!(verified["rows"].as_i64(), Some(t0_rows), "{verified}");
    assert_eq!(
        verified["problems"].as_array().map(Vec::len),
        Some(0),
        "{verified}"
    );
    phase("locked");

    // Who and when. The erased participant: one the 2 → 3 move takes to the new shard, with
    // archived days; the day D: one of its archived days (ended more than 3 days ago, with a
    // margin) shared with the most other participants of its shard; Q: another participant of
    // that shard who stays there, with rows on D.
    let (r2, r3) = (ShardRouter::new(2), ShardRouter::new(3));
    let cutoff = Utc::now() - Duration::days(3) - Duration::hours(2);
    let mut days: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (pid, _, day) in stored.daily.keys() {
        if midnight(day) + Duration::days(1) <= cutoff {
            days.entry(pid.as_str()).or_default().insert(day.as_str());
        }
    }
    let erased: String = t0
        .keys()
        .filter(|p| r3.shard_for(p) == 2 && days.contains_key(p.as_str()))
        .max_by_key(|p| (days[p.as_str()].len(), std::cmp::Reverse(p.as_str())))
        .expect("a participant the move takes, with archived days")
        .clone();
    let home = r2.shard_for(&erased);
    let neighbours = |day: &str| {
        days.iter()
            .filter(|(p, ds)| **p != erased && r2.shard_for(p) == home && ds.contains(day))
            .count()
    };
    let day: String = days[erased.as_str()]
        .iter()
        .max_by_key(|d| (neighbours(d), std::cmp::Reverse(**d)))
        .unwrap()
        .to_string();
    assert!(neighbours(&day) > 0, "others on {erased}'s shard on {day}");
    let q: String = days
        .iter()
        .find(|(p, ds)| {
            **p != erased
                && r2.shard_for(p) == home
                && r3.shard_for(p) == home
                && ds.contains(day.as_str())
        })
        .map(|(p, _)| p.to_string())
        .expect("a participant staying on the erased one's shard, on day D");
    let moving_other: String = t0
        .keys()
        .find(|p| r3.shard_for(p) == 2 && **p != erased)
        .expect("a second participant the move takes")
        .clone();
    let other_shard: String = t0
        .keys()
        .find(|p| r2.shard_for(p) != home && r3.shard_for(p) != 2)
        .unwrap()
        .clone();
    let (d0, d1) = (midnight(&day), midnight(&day) + Duration::days(1));
    eprintln!(
        "erased {erased} (shard{home} -> shard2), day {day}, late data for {q} and {NEWCOMER}, \
         new readings also for {moving_other} and {other_shard}"
    );
    assert!(
        window_totals(&dep.dbs.shards, d0, d1).await.is_empty(),
        "day {day} archived"
    );
    let day_rows: i64 = stored
        .daily
        .iter()
        .filter(|((_, _, dd), _)| *dd == day)
        .map(|(_, (n, _))| n)
        .sum();

    // 3a. Late data inside day D, while two workers run, then archived (late chunks).
    let setup = &dep.setup;
    let mut w1 = setup.spawn(&log("w1"));
    let mut w2 = setup.spawn(&log("w2"));
    let mut published: Vec<(String, Vec<f64>)> = Vec::new();
    let mut late: Vec<Record> = Vec::new();
    for (i, pid) in [q.as_str(), NEWCOMER].into_iter().enumerate() {
        for b in 0..2 {
            let start = d0
                + Duration::hours(10 + i as i64)
                + Duration::minutes(30 * b)
                + Duration::milliseconds(123);
            let (r, v) = batch_record(pid, LATE_DEVICE, start, 7_000, 150, 61.0 + 10.0 * i as f64);
            late.push(r);
            published.push((pid.to_string(), v));
        }
    }
    let late_rows: i64 = published.iter().map(|(_, v)| v.len() as i64).sum();
    let pos = produce(&stack.brokers, &setup.topic, &late).await;
    assert!(
        wait_applied(
            setup,
            &next_offsets(&pos),
            std::time::Duration::from_secs(180)
        )
        .await,
        "late data applied\n{}",
        log_tail(&log("w1"))
    );
    assert_eq!(
        window_totals(&dep.dbs.shards, d0, d1)
            .await
            .values()
            .map(|t| t.0)
            .sum::<i64>(),
        late_rows,
        "the late readings are hot, in re-created chunks of {day}"
    );
    let late_run = archiver_json(&cfg2, &["run"], &alog);
    assert_eq!(late_run["failed"].as_u64(), Some(0), "{late_run}");
    let late_chunks = [q.as_str(), NEWCOMER]
        .iter()
        .map(|p| r2.shard_for(p))
        .collect::<BTreeSet<_>>()
        .len() as u64;
    assert!(
        late_run["archived"].as_u64().unwrap() >= late_chunks,
        "{late_chunks} late chunk(s): {late_run}"
    );
    assert_eq!(
        late_run["duplicates"].as_u64().unwrap_or(0),
        0,
        "{late_run}"
    );
    assert!(
        window_totals(&dep.dbs.shards, d0, d1).await.is_empty(),
        "late chunks of {day} archived"
    );
    let mut extra = totals_of_published(&published);
    check.live(&cfg2, &t0, &extra, "late data");
    check.lock(&cfg2, &t0, "late data");
    phase("late data archived");

    // 3b. A restore of day D; a lock is refused while the window is restored.
    let restore = archiver_json(
        &cfg2,
        &[
            "restore",
            "--from",
            &d0.to_rfc3339(),
            "--to",
            &d1.to_rfc3339(),
            "--reason",
            "re-analysis of one day requested by the sponsor",
        ],
        &alog,
    );
    assert_eq!(
        restore["inserted"].as_i64(),
        Some(day_rows + late_rows),
        "{restore}"
    );
    let refused = run_binary(
        &binary("trial"),
        &cfg2,
        &["lock", "create", "L2", "--reason", "second lock"],
        &tlog,
    );
    assert!(!refused.status.success(), "a lock during a restore");
    assert!(
        log_tail(&tlog).contains("restored window"),
        "{}",
        log_tail(&tlog)
    );
    check.live(&cfg2, &t0, &extra, "the restore");
    check.lock(&cfg2, &t0, "the restore");
    phase("day restored");

    // 3c. An online shard move while both workers run and new readings arrive.
    let new = extra_shard(&stack, 2).await;
    let mut three = dep.dbs.shards.clone();
    three.push(new.clone());
    let with_three = IngestSetup::for_group(setup, &three, &d);
    let cfg3 = archive_config(&with_three.config, &root, "3d");
    let fresh = Utc::now() - Duration::minutes(90);
    let who = [
        erased.as_str(),
        moving_other.as_str(),
        q.as_str(),
        NEWCOMER,
        other_shard.as_str(),
    ];
    let mut during: Vec<Vec<Record>> = Vec::new();
    for round in 0..20i64 {
        let mut recs = Vec::new();
        for (i, pid) in who.iter().enumerate() {
            let start = fresh + Duration::seconds(60 * round) + Duration::milliseconds(i as i64);
            let (r, v) = batch_record(pid, NEW_DEVICE, start, 250, 40, 50.0 + i as f64);
            recs.push(r);
            published.push((pid.to_string(), v));
        }
        during.push(recs);
    }
    let (brokers, topic) = (stack.brokers.clone(), setup.topic.clone());
    let producer = tokio::spawn(async move {
        let mut positions = Vec::new();
        let mut first_round = None;
        for recs in during {
            positions.extend(produce(&brokers, &topic, &recs).await);
            first_round.get_or_insert_with(Instant::now);
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        (positions, first_round.unwrap())
    });
    let (cfg_move, url, rlog) = (setup.config.clone(), new.url.clone(), log("reshard"));
    let moved = tokio::task::spawn_blocking(move || {
        run_binary(
            &binary("reshard"),
            &cfg_move,
            &[
                "add-shard",
                "--name",
                "shard2",
                "--url",
                &url,
                "--reason",
                "enrolment doubled",
                "--cutover-timeout",
                "300",
            ],
            &rlog,
        )
    })
    .await
    .unwrap();
    let move_ended = Instant::now();
    assert!(
        moved.status.success(),
        "reshard: {}",
        log_tail(&log("reshard"))
    );
    let report: serde_json::Value = serde_json::from_slice(&moved.stdout).unwrap();
    eprintln!("2 -> 3: {report}");
    assert!(report["participants"].as_u64().unwrap() > 0, "{report}");
    let (pos, first_round) = producer.await.unwrap();
    assert!(
        first_round < move_ended,
        "readings were published while the move ran"
    );
    assert!(
        w1.try_wait().unwrap().is_none() && w2.try_wait().unwrap().is_none(),
        "the workers ran through the move\n{}",
        log_tail(&log("w1"))
    );
    assert!(
        wait_applied(
            &with_three,
            &next_offsets(&pos),
            std::time::Duration::from_secs(180)
        )
        .await,
        "readings during the move applied\n{}",
        log_tail(&log("w1"))
    );
    // The two workers keep running with their two-shard configuration: they follow the shard
    // map to the new shard by themselves (README "Changing the shard set"). (Restarting them
    // here made the test's broker, tansu, keep the group from any new member for minutes: a
    // worker with a fresh group got its partitions at once, one rejoining this group none.)
    extra = totals_of_published(&published);
    check.live(&cfg3, &t0, &extra, "the shard move");
    check.lock(&cfg3, &t0, "the shard move");
    phase("moved to three shards");

    // 3d. New readings through the topic, to the three-shard worker.
    let later = Utc::now() - Duration::minutes(30);
    let mut recs = Vec::new();
    for (i, pid) in who.iter().enumerate() {
        for b in 0..3i64 {
            let start = later + Duration::seconds(100 * b) + Duration::milliseconds(i as i64);
            let (r, v) = batch_record(pid, NEW_DEVICE, start, 500, 120, 80.0 + i as f64);
            recs.push(r);
            published.push((pid.to_string(), v));
        }
    }
    let pos = produce(&stack.brokers, &setup.topic, &recs).await;
    assert!(
        wait_applied(
            &with_three,
            &next_offsets(&pos),
            std::time::Duration::from_secs(180)
        )
        .await,
        "new readings applied\n{}",
        log_tail(&log("w1"))
    );
    extra = totals_of_published(&published);
    check.live(&cfg3, &t0, &extra, "new readings");
    check.lock(&cfg3, &t0, "new readings");
    phase("new readings");

    // 3e. The erasure of a participant present at lock time, over the three shards: the
    // move took its rows to the new shard, its archived rows stay under its old one.
    let before = hot_rows(&three, &erased).await;
    assert!(
        before[0] + before[1] == 0 && before[2] > 0,
        "{erased}'s rows moved to shard2: {before:?}"
    );
    let erase = ok_lines(
        "trial",
        &cfg3,
        &[
            "participants",
            "erase",
            &erased,
            "--reason",
            "optional sub-study consent withdrawn (GDPR Art. 17)",
        ],
        &tlog,
    );
    let erase = erase.last().unwrap().clone();
    let revisions = erase["details"]["lock_revisions"].as_array().unwrap();
    assert_eq!(revisions.len(), 1, "{erase}");
    assert_eq!(revisions[0]["lock"].as_str(), Some(LOCK), "{erase}");
    assert_eq!(revisions[0]["revision"].as_i64(), Some(2), "{erase}");
    assert!(
        wait_consumed(
            &with_three,
            &stack.brokers,
            std::time::Duration::from_secs(120)
        )
        .await,
        "every record consumed\n{}",
        log_tail(&log("w1"))
    );
    stop_gracefully(w1, &log("w1")).await;
    stop_gracefully(w2, &log("w2")).await;
    assert_eq!(
        hot_rows(&three, &erased).await,
        vec![0, 0, 0],
        "{erased} erased"
    );
    phase("erased");

    // 4. The lock: exactly the truth at lock time without the erased participant.
    let want_lock = without(&t0, &erased);
    let want_rows: i64 = want_lock.values().map(|(n, _)| n).sum();
    let locked = check.lock(&cfg3, &want_lock, "the erasure");
    assert_eq!(locked.len() as i64, want_rows);
    // count(*) and sum(value) through the engine as an analyst asks.
    let agg = ok_lines(
        "query",
        &cfg3,
        &[
            "--lock",
            LOCK,
            "sql",
            "SELECT participant_id, count(*) AS n, sum(value) AS s FROM measurements GROUP BY 1",
            "--format",
            "json",
        ],
        &log("query"),
    );
    let agg: BTreeMap<String, (i64, f64)> = agg
        .iter()
        .map(|r| {
            (
                r["participant_id"].as_str().unwrap().to_string(),
                (r["n"].as_i64().unwrap(), r["s"].as_f64().unwrap()),
            )
        })
        .collect();
    assert_eq!(
        agg.keys().collect::<Vec<_>>(),
        want_lock.keys().collect::<Vec<_>>(),
        "query --lock: participants"
    );
    let mut bits_equal = 0;
    for (pid, (n, s)) in &want_lock {
        let (gn, gs) = agg[pid];
        assert_eq!(gn, *n, "query --lock count(*) of {pid}");
        assert!(
            close(gs, *s),
            "query --lock sum(value) of {pid}: {gs} vs {s}"
        );
        bits_equal += usize::from(gs.to_bits() == s.to_bits());
    }
    eprintln!(
        "query --lock sum(value): {bits_equal} of {} participants bit-equal to the exact sum",
        want_lock.len()
    );
    // The trial's own view of the lock.
    let verify = ok_lines("trial", &cfg3, &["lock", "verify", LOCK], &tlog);
    let verify = verify.last().unwrap();
    assert_eq!(verify["revision"].as_i64(), Some(2), "{verify}");
    assert_eq!(verify["rows"].as_i64(), Some(want_rows), "{verify}");
    assert_eq!(
        verify["rows_recorded"].as_i64(),
        Some(want_rows),
        "{verify}"
    );
    assert_eq!(
        verify["problems"].as_array().map(Vec::len),
        Some(0),
        "{verify}"
    );
    let list = ok_lines("trial", &cfg3, &["lock", "list"], &tlog);
    let revs: Vec<(String, i64, i64)> = list
        .iter()
        .map(|l| {
            (
                l["lock"].as_str().unwrap().to_string(),
                l["revision"].as_i64().unwrap(),
                l["rows"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        revs,
        vec![
            (LOCK.to_string(), 1, t0_rows),
            (LOCK.to_string(), 2, want_rows)
        ],
        "lock list"
    );
    let trail = ok_lines(
        "trial",
        &cfg3,
        &["audit", "list", "--format", "json"],
        &tlog,
    );
    let actions: BTreeSet<&str> = trail
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "archive.drop",
        "archive.restore",
        "reshard.move",
        "participant.erase",
        "lock.create",
        "lock.revise",
    ] {
        assert!(actions.contains(a), "audit trail has {a}: {actions:?}");
    }
    let revise: Vec<&serde_json::Value> = trail
        .iter()
        .filter(|e| e["action"] == "lock.revise")
        .collect();
    assert_eq!(revise.len(), 1, "{revise:?}");
    assert_eq!(
        revise[0]["details"]["lock"].as_str(),
        Some(LOCK),
        "{:?}",
        revise[0]
    );
    assert_eq!(revise[0]["details"]["from_revision"].as_i64(), Some(1));
    assert_eq!(revise[0]["details"]["revision"].as_i64(), Some(2));
    ok_lines("trial", &cfg3, &["audit", "verify"], &tlog);
    phase("lock checked");

    // The live side: the recordings less the erased participant, plus exactly what was
    // published after the lock (less the erased participant's).
    published.retain(|(p, _)| *p != erased);
    let extra = totals_of_published(&published);
    let live = check.live(&cfg3, &without(&t0, &erased), &extra, "the erasure");
    assert!(
        live.iter().all(|r| r.participant != erased),
        "live query still has {erased}"
    );
    if !check.problems.is_empty() {
        for p in [q.as_str(), NEWCOMER, moving_other.as_str()] {
            eprintln!("live rows of {p} per day: {:?}", daily_rows(&live, p));
            eprintln!("locked rows of {p} per day: {:?}", daily_rows(&locked, p));
        }
    }
    let verify = ok_json("archiver", &cfg3, &["verify"], &alog);
    eprintln!("archiver verify: {verify}");
    phase("live checked");
    assert!(
        check.problems.is_empty(),
        "the lock holds, but the live query is wrong at {} step(s):\n{}",
        check.problems.len(),
        check.problems.join("\n")
    );
    dep.dbs.drop_all().await;
    for s in [new] {
        vitalsink_tests::connect(stack.shard_urls.last().unwrap())
            .await
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                s.url.rsplit("dbname=").next().unwrap()
            ))
            .await
            .unwrap();
    }
}
