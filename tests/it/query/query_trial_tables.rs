//! Issue 26, `query`'s side of running a trial: the audit trail (`audit_log`) and the
//! participants' status (`participants`, `participant_status_changes`) as tables beside
//! `measurements`, through `query sql` and through ADBC Flight SQL into pyarrow and pandas;
//! and `--lock NAME`, which makes `measurements` the objects of a dataset lock only.
//!
//! The deployment: fresh shard databases, readings 45 days old (archived by the real
//! `archiver run`, so `measurements` spans the archive and the shards) and of the last day.
//! Audit entries come from `vitalsink_common::audit::append` and from the real `trial`
//! binary (`participants withdraw|reinstate`); every field read through `query` must be the
//! stored one, which the hash chain recomputed from `query`'s answer proves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use std::process::Command;
use vitalsink_common::audit::{self, action, Entry, Record, GENESIS};
use vitalsink_common::config::DatabaseConfig;
use vitalsink_common::db::Shard;
use vitalsink_tests::archive_run::{aged_start, load, ArchiveSetup, DataShape, Root};
use vitalsink_tests::ingest_run::log_tail;
use vitalsink_tests::query_run::{query_binary, Server};
use vitalsink_tests::trial_query::*;
use vitalsink_tests::Stack;

/// Six participants, two metrics, 40 readings each 6 h apart from 45 days ago (archived with
/// the 30-day window) and 4 of the last day (stay in the shards).
const SHAPE: DataShape = DataShape {
    participants: 6,
    per_metric: 40,
    every_secs: 6 * 3600,
    recent: 4,
    bulky: false,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_trail_and_participant_status_are_tables_of_query() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let s = ArchiveSetup::new(&stack, "t_qtrial", false, "").await;
    let totals = load(&s.dbs.shards, SHAPE).await;
    s.ok(&["run"]);
    let config = s.config.as_path();
    let map = Shard::new(0, &s.dbs.shards[0], &DatabaseConfig::default()).unwrap();

    // Entries of our own: participants given unsorted, details needing escapes, a NULL
    // reason and one with quotes and non-ASCII text.
    let restore = Record::new(
        action::ARCHIVE_RESTORE,
        json!({"chunk": "c1", "rows": {"before": 0, "after": 12}, "note": "it's \"quoted\"; a,b"}),
    )
    .participants(["P0002".to_string(), "P0001".to_string()]);
    audit::append(&map, &restore).await.unwrap();
    let migrate = Record::new(action::MIGRATE, json!({})).reason(Some("résumé; 'ünï', \"x\""));
    audit::append(&map, &migrate).await.unwrap();
    // Status changes through the real binary: P0001 withdrawn; P0002 withdrawn and
    // reinstated; P0003 withdrawn from a time still to come (active now).
    let start = aged_start();
    let w1 = start + Duration::days(10);
    let (w2, r2) = (start + Duration::days(5), start + Duration::days(20));
    let future =
        DateTime::from_timestamp((Utc::now() + Duration::days(30)).timestamp(), 0).unwrap();
    let reason = "consent withdrawn (visit 3)";
    for (verb, p, at) in [
        ("withdraw", "P0001", w1),
        ("withdraw", "P0002", w2),
        ("reinstate", "P0002", r2),
        ("withdraw", "P0003", future),
    ] {
        let effective = rfc3339(at);
        trial(
            config,
            &[
                "participants",
                verb,
                p,
                "--effective",
                &effective,
                "--reason",
                reason,
            ],
        );
    }

    // 1. audit_log through the CLI: every entry as stored, field for field.
    let stored = audit::read(&map, 1, None).await.unwrap();
    assert!(stored.len() >= 6, "{stored:?}");
    let via_cli: Vec<Entry> = rows(config, &[], "SELECT * FROM audit_log ORDER BY seq")
        .iter()
        .map(entry_of)
        .collect();
    assert_eq!(via_cli, stored, "audit_log through query sql");
    assert_eq!(
        audit::verify(&via_cli, 1, GENESIS),
        vec![],
        "chain of query's answer"
    );
    let mine = stored
        .iter()
        .find(|e| e.action == action::ARCHIVE_RESTORE)
        .unwrap();
    assert_eq!(mine.participants, ["P0001", "P0002"]);
    assert!(stored.iter().any(|e| e.reason.is_none()));
    // Filters: pushed into the SELECT on seq and at, applied by the engine on the rest.
    let k = mine.seq;
    let want: Vec<i64> = stored
        .iter()
        .filter(|e| e.seq > k && e.action == action::WITHDRAW)
        .map(|e| e.seq)
        .collect();
    assert_eq!(want.len(), 3);
    let sql = format!(
        "SELECT seq FROM audit_log WHERE seq > {k} AND action = 'participant.withdraw' ORDER BY seq"
    );
    assert_eq!(ints(config, &sql, "seq"), want, "{sql}");
    let text = plan(config, &[], &sql);
    let pushed = format!("FROM audit_log WHERE (seq > {k}) ORDER BY seq");
    assert!(text.contains(&pushed), "{text}");
    let touching: Vec<i64> = stored
        .iter()
        .filter(|e| e.participants.iter().any(|p| p == "P0001"))
        .map(|e| e.seq)
        .collect();
    let sql = "SELECT seq FROM audit_log WHERE array_has(participants, 'P0001') ORDER BY seq";
    assert_eq!(touching.len(), 2);
    assert_eq!(ints(config, sql, "seq"), touching, "{sql}");
    let since = format!(
        "SELECT count(*) AS n FROM audit_log WHERE at >= TIMESTAMP '{}'",
        rfc3339(mine.at)
    );
    let n = stored.iter().filter(|e| e.at >= mine.at).count() as i64;
    assert_eq!(ints(config, &since, "n"), [n], "{since}");
    // CSV holds the list as text.
    let text = csv(
        config,
        "SELECT participants FROM audit_log WHERE cardinality(participants) = 2",
    );
    assert_eq!(text, "participants\n\"[P0001, P0002]\"\n");

    // 2. participants and participant_status_changes.
    let got = rows(
        config,
        &[],
        "SELECT * FROM participants ORDER BY participant_id",
    );
    let want = vec![
        ("P0001".to_string(), "withdrawn".to_string(), Some(w1), 1),
        ("P0002".into(), "active".into(), None, 2),
        ("P0003".into(), "active".into(), None, 1),
    ];
    assert_eq!(summaries(&got), want, "participants");
    let changes = rows(
        config,
        &[],
        "SELECT c.participant_id, c.status, c.effective_at, c.reason, a.action, a.reason AS why \
         FROM participant_status_changes c JOIN audit_log a ON a.seq = c.audit_seq ORDER BY c.seq",
    );
    let got: Vec<(&str, &str, DateTime<Utc>, &str)> = changes
        .iter()
        .map(|r| {
            assert_eq!(r["reason"], reason, "{r}");
            assert_eq!(r["why"], reason, "{r}");
            (
                r["participant_id"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
                time(&r["effective_at"]),
                r["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("P0001", "withdrawn", w1, action::WITHDRAW),
            ("P0002", "withdrawn", w2, action::WITHDRAW),
            ("P0002", "active", r2, action::REINSTATE),
            ("P0003", "withdrawn", future, action::WITHDRAW),
        ]
    );
    // The analysis that leaves withdrawn participants out, over archive and shards.
    let exclude = "SELECT count(*) AS n, sum(value) AS s FROM measurements WHERE participant_id \
                   NOT IN (SELECT participant_id FROM participants WHERE status_now <> 'active')";
    let kept = sum_of(&totals, |p| p != "P0001");
    assert!(kept.0 > 0 && kept.0 < sum_of(&totals, |_| true).0);
    assert_count_sum(&rows(config, &[], exclude)[0], kept, "withdrawn left out");
    // Or only the readings from the withdrawal on.
    let before = "SELECT count(*) AS n FROM measurements m LEFT JOIN participants p \
                  USING (participant_id) WHERE p.withdrawn_from IS NULL OR m.ts < p.withdrawn_from";
    let after_w1 = format!(
        "SELECT count(*) AS n FROM measurements WHERE participant_id = 'P0001' AND ts >= TIMESTAMP '{}'",
        rfc3339(w1)
    );
    let after_w1 = ints(config, &after_w1, "n")[0];
    assert!(after_w1 > 0);
    let all = sum_of(&totals, |_| true).0;
    assert_eq!(ints(config, before, "n"), [all - after_w1]);

    // 3. The same through ADBC Flight SQL, into pyarrow and pandas.
    let flog = s.dir.path().join("flight.log");
    let server = Server::start(config, &[], &[], &flog).await;
    let got = adbc(
        &server,
        &[
            "SELECT * FROM audit_log ORDER BY seq",
            "SELECT * FROM participants ORDER BY participant_id",
            exclude,
        ],
    );
    let audit_res = &got["results"][0];
    for (c, t) in [
        ("seq", "int64"),
        ("at", "timestamp[us, tz=UTC]"),
        ("reason", "string"),
        ("participants", "list<item: string>"),
        ("details", "string"),
        ("hash", "string"),
    ] {
        assert_eq!(audit_res["types"][c], t, "{c}: {audit_res}");
    }
    assert_eq!(
        audit_res["dtypes"]["at"], "datetime64[us, UTC]",
        "{audit_res}"
    );
    assert_eq!(audit_res["dtypes"]["participants"], "object", "{audit_res}");
    assert_eq!(
        audit_res["py_types"]["participants"], "ndarray",
        "{audit_res}"
    );
    let via_adbc: Vec<Entry> = audit_res["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(entry_of)
        .collect();
    assert_eq!(via_adbc, stored, "audit_log through ADBC");
    let p_res = &got["results"][1];
    assert_eq!(
        p_res["types"]["withdrawn_from"], "timestamp[us, tz=UTC]",
        "{p_res}"
    );
    assert_eq!(
        summaries(p_res["rows"].as_array().unwrap()),
        want,
        "{p_res}"
    );
    assert_count_sum(
        &got["results"][2]["rows"][0],
        kept,
        "withdrawn left out, ADBC",
    );
    for (t, c) in [
        ("audit_log", "hash"),
        ("participants", "status_now"),
        ("participant_status_changes", "audit_seq"),
        ("measurements", "value"),
    ] {
        let cols = got["tables"][t]
            .as_array()
            .unwrap_or_else(|| panic!("{t} not listed: {got}"));
        assert!(cols.iter().any(|x| x == c), "{t}: {cols:?}");
    }
    server.stop();
    s.dbs.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_lock_reads_the_lock_and_no_shard() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let s = ArchiveSetup::new(&stack, "t_qlock", false, "").await;
    let totals = load(&s.dbs.shards, SHAPE).await;
    s.ok(&["run"]);
    let config = s.config.as_path();
    let Root::Local(root) = &s.root else {
        unreachable!("a local archive")
    };
    let all = sum_of(&totals, |_| true);
    let name = "db-lock.v1";
    let made = trial(
        config,
        &[
            "lock",
            "create",
            name,
            "--reason",
            "database lock before unblinding",
        ],
    );
    assert_eq!(made["rows"].as_i64(), Some(all.0), "{made}");
    assert!(made["hot_objects"].as_i64() > Some(0), "{made}");
    assert!(made["archive_objects"].as_i64() > Some(0), "{made}");
    let total = "SELECT count(*) AS n, sum(value) AS s FROM measurements";
    let lock = ["--lock", name];
    assert_count_sum(&rows(config, &lock, total)[0], all, "the lock");

    // New readings after the lock: the live table has them, the lock does not.
    let c = vitalsink_tests::connect(&s.dbs.shards[1].url).await;
    c.execute(
        "INSERT INTO measurements (participant_id, metric, ts, value) \
         SELECT 'late-' || i, 'hr', now() - interval '1 hour', 1.5 FROM generate_series(1, 7) i",
        &[],
    )
    .await
    .unwrap();
    let live = (all.0 + 7, all.1 + 10.5);
    assert_count_sum(&rows(config, &[], total)[0], live, "live");
    assert_count_sum(
        &rows(config, &lock, total)[0],
        all,
        "the lock after new rows",
    );
    let text = plan(config, &lock, total);
    assert!(
        !text.contains("ShardScanExec") && text.contains("DataSourceExec"),
        "{text}"
    );
    // The objects' ranges prune: the last two days read the lock's exports of hot chunks only.
    let since = rfc3339(Utc::now() - Duration::days(2));
    let text = plan(
        config,
        &lock,
        &format!("{total} WHERE ts >= TIMESTAMP '{since}'"),
    );
    assert!(text.contains(&format!("locks/{name}/rev=1/")), "{text}");
    assert!(
        !text.contains("date="),
        "an archived object was opened: {text}"
    );

    // Through Flight SQL (the server keeps running across the erasure below), and with
    // QUERY_LOCK.
    let flog = s.dir.path().join("flight.log");
    let server = Server::start(config, &lock, &[], &flog).await;
    let got = adbc(&server, &[total]);
    assert_count_sum(&got["results"][0]["rows"][0], all, "the lock through ADBC");
    let out = Command::new(query_binary())
        .arg("--config")
        .arg(config)
        .args(["sql", total, "--format", "json"])
        .env("QUERY_LOCK", name)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("\"n\":{}", all.0)), "{text}");

    // No such lock: `sql` and `serve` stop at start, naming it.
    let out = query(config, &["--lock", "no-such-lock"], total);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("lock no-such-lock") && err.contains("no such dataset lock"),
        "{err}"
    );
    let slog = s.dir.path().join("serve-no-lock.log");
    let st = Command::new(query_binary())
        .arg("--config")
        .arg(config)
        .args(["--lock", "no-such-lock", "--listen", "127.0.0.1:0"])
        .args(["serve", "--flight-listen", "127.0.0.1:0"])
        .stderr(std::fs::File::create(&slog).unwrap())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(1), "{}", log_tail(&slog));
    assert!(
        log_tail(&slog).contains("lock no-such-lock"),
        "{}",
        log_tail(&slog)
    );

    // An erasure writes revision 2 without the participant: the lock reads the newest.
    let gone = totals["P0004"];
    trial(
        config,
        &[
            "participants",
            "erase",
            "P0004",
            "--reason",
            "GDPR Art. 17 request",
        ],
    );
    let rev2 = (all.0 - gone.0, all.1 - gone.1);
    assert_count_sum(&rows(config, &lock, total)[0], rev2, "revision 2");
    let got = adbc(&server, &[total]);
    assert_count_sum(&got["results"][0]["rows"][0], rev2, "the running server");
    assert!(
        log_tail(&server.log).contains("new revision"),
        "{}",
        log_tail(&server.log)
    );
    server.stop();
    assert_count_sum(
        &rows(config, &[], total)[0],
        (live.0 - gone.0, live.1 - gone.1),
        "live",
    );
    let p = rows(config, &lock, "SELECT * FROM participants");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0]["status_now"], "erased", "{p:?}");
    assert!(
        p[0].get("withdrawn_from")
            .is_none_or(serde_json::Value::is_null),
        "{p:?}"
    );
    // An object of the lock missing from the archive fails the scan, naming lock and object.
    let map = Shard::new(0, &s.dbs.shards[0], &DatabaseConfig::default()).unwrap();
    let m = vitalsink_common::datalock::load(&map, name, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.revision, 2);
    let victim = &m.objects[0].path;
    std::fs::remove_file(root.join(victim)).unwrap();
    let out = query(config, &lock, total);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("lock {name}: revision 2")) && err.contains(victim.as_str()),
        "{err}"
    );
    s.dbs.drop_all().await;
}
