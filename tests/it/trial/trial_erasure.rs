//! Issue 26, "Erasure": `trial participants erase` removes a participant spread over both
//! shards and 8 archived days (5 archived before a dataset lock was taken, 3 after) plus the
//! last 30 hours still in the shards. Afterwards no reader finds a row of theirs (DuckDB,
//! pandas and pyarrow over the archive folder, DuckDB over every Parquet object under the root
//! including the lock's, `query` over shards + archive and `query --lock`), every other
//! participant's rows and sums are unchanged, `archiver verify`, `trial lock verify` and
//! `trial audit verify` pass, and the audit trail has one `participant.erase` entry with the
//! reason and the counts and none of the participant's values.
//!
//! Kills: the command aborts (`TRIAL_CRASH_AT`, `std::process::abort`: no destructor, no
//! flush) at each of its 7 points, and each end state is compared with that of a deployment
//! whose erasure was never killed (same objects with the same rows and checksums, same audit
//! details, same lock revision):
//! - in turn: one run per point, each resuming the previous one, then a run to the end; at
//!   every kill `query` still gives every other participant's exact rows and sums (local
//!   folder, and S3 on SeaweedFS);
//! - once each: a fresh deployment per point, killed there, the hourly `archiver run` in
//!   between, then a run to the end; and SIGKILL at growing delays until a run ends by itself;
//! - after the status step, with the archiver moving more of the victim's rows into the
//!   archive before the resuming run;
//! - SIGKILL while a rewritten object bigger than one multipart part is being uploaded to the
//!   local folder: the resumed erasure must leave no partial file for pandas or pyarrow.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::Timelike;
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::Output;
use std::time::{Duration, Instant};
use vitalsink_tests::archive_run::{assert_totals_eq, db_totals};
use vitalsink_tests::dataset::Totals;
use vitalsink_tests::ingest_run::log_tail;
use vitalsink_tests::trial_run::{
    hot_rows, victim_values, Deployment, ERASE_REASON, KILL_POINTS, LOCK, NEIGHBOUR, VICTIM,
};
use vitalsink_tests::{connect, Stack};

const SIGABRT: i32 = 6;

/// Asserts the erasure died at `point` (abort, nothing printed, the log names the point).
fn assert_killed(d: &Deployment, out: &Output, point: &str) {
    assert_eq!(
        out.status.signal(),
        Some(SIGABRT),
        "erase with TRIAL_CRASH_AT={point} should abort, got {} (stdout {:?})\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        log_tail(&d.log)
    );
    assert!(
        out.stdout.is_empty(),
        "killed at {point} yet printed {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let log = std::fs::read_to_string(&d.log).unwrap();
    let last = log
        .lines()
        .rev()
        .find(|l| l.contains("fault injection"))
        .unwrap_or_else(|| panic!("no fault injection line in the log\n{}", log_tail(&d.log)));
    assert!(last.contains(point), "{last}");
}

/// The erase run that must finish; its report.
fn erase_to_end(d: &Deployment) -> Value {
    let out = d.erase(None);
    assert!(
        out.status.success(),
        "erase: {}\n{}",
        out.status,
        log_tail(&d.log)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one JSON line: {text:?}");
    serde_json::from_str(lines[0]).unwrap()
}

/// `(finished, state)` of the victim's erasures on the map shard.
async fn erasures(d: &Deployment) -> Vec<(bool, Value)> {
    connect(&d.setup.dbs.shards[0].url)
        .await
        .query(
            "SELECT finished_at IS NOT NULL, state FROM erasures WHERE participant_id = $1
              ORDER BY id",
            &[&VICTIM],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), serde_json::from_str(r.get::<_, &str>(1)).unwrap()))
        .collect()
}

/// The newest status recorded for the victim on each shard.
async fn statuses(d: &Deployment) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for s in &d.setup.dbs.shards {
        out.push(
            connect(&s.url)
                .await
                .query_opt(
                    "SELECT status FROM participant_status WHERE participant_id = $1
                      ORDER BY seq DESC LIMIT 1",
                    &[&VICTIM],
                )
                .await
                .unwrap()
                .map(|r| r.get(0)),
        );
    }
    out
}

/// `query`'s totals without the victim.
fn others_via_query(d: &Deployment) -> Totals {
    let mut t = d.query_totals(&[]);
    t.remove(VICTIM);
    t
}

/// `path` without the attempt in an object's name (`-<YYYYMMDDTHHMMSSZ>-<8 hex>`, when the
/// archiver ran and a random id), which differs between two deployments built alike.
fn norm(path: &str) -> String {
    let (dir, file) = path.rsplit_once('/').unwrap_or(("", path));
    let parts: Vec<&str> = file.split('-').collect();
    let mut out: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < parts.len() {
        let p = parts[i];
        let stamp = p.len() == 16 && p.as_bytes()[8] == b'T' && p.ends_with('Z');
        if stamp && i + 1 < parts.len() {
            i += 2;
            continue;
        }
        out.push(p);
        i += 1;
    }
    format!("{dir}/{}", out.join("-"))
}

/// Every number in `v` (recursively) and every string.
fn leaves(v: &Value, nums: &mut Vec<f64>, texts: &mut Vec<String>) {
    match v {
        Value::Number(n) => nums.push(n.as_f64().unwrap()),
        Value::String(s) => texts.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| leaves(x, nums, texts)),
        Value::Object(o) => {
            for (k, x) in o {
                texts.push(k.clone());
                leaves(x, nums, texts);
            }
        }
        _ => {}
    }
}

/// An erasure's end state, for comparing deployments: what `query` and `query --lock` give,
/// the Parquet objects under the root with their rows, the lock revisions, the audit entry's
/// details and the shards' archive_log rows the erasure wrote.
#[derive(Debug, PartialEq)]
struct EndState {
    totals: Totals,
    lock_totals: Totals,
    files: Vec<(String, i64)>,
    lock_revisions: Vec<(i64, i64)>,
    details: Value,
    renamed: Vec<(String, String, String, i64)>,
}

/// Everything the done-when asks of a finished erasure; returns the end state.
/// `dates`: the archive's date partitions (each with one object per shard).
async fn assert_erased(d: &Deployment, report: &Value, values: &[f64], dates: usize) -> EndState {
    let shards = &d.setup.dbs.shards;
    let expected = d.expected();
    assert_eq!(report["participant"], VICTIM, "{report}");
    let details = &report["details"];
    assert_eq!(
        details["hot_rows_erased"].as_i64(),
        Some(d.victim_hot),
        "{report}"
    );
    assert_eq!(
        details["archived_rows_erased"].as_i64(),
        Some(d.victim_archived()),
        "{report}"
    );

    // The shards: no row of the victim, every other row still there.
    assert_eq!(hot_rows(shards, VICTIM).await, vec![0, 0]);
    let mut hot = d.hot_before.clone();
    hot.remove(VICTIM);
    assert_totals_eq(
        &db_totals(shards).await,
        &hot,
        "shards after the erasure vs before",
    );
    assert_eq!(
        statuses(d).await,
        vec![Some("erased".to_string()), Some("erased".to_string())],
        "status on every shard"
    );

    // The archive: rewritten objects on both shards, in 3+ days each.
    let objects = details["objects"].as_array().unwrap();
    let mut days: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for o in objects {
        let (before, after) = (
            o["rows_before"].as_i64().unwrap(),
            o["rows_after"].as_i64().unwrap(),
        );
        assert!(after <= before, "{o}");
        assert_ne!(o["checksum_after"], Value::Null, "{o}");
        if after < before {
            let path = o["before"].as_str().unwrap();
            let date = path
                .split('/')
                .find_map(|c| c.strip_prefix("date="))
                .unwrap_or_else(|| panic!("no date= in {path}"));
            days.entry(o["shard"].as_str().unwrap().to_string())
                .or_default()
                .insert(date.to_string());
        }
    }
    assert_eq!(
        days.len(),
        2,
        "victim's rows removed on both shards: {days:?}"
    );
    assert!(
        days.values().all(|d| d.len() >= 3),
        "3+ archived days per shard: {days:?}"
    );

    // `query` over shards + archive.
    assert_totals_eq(&d.query_totals(&[]), &expected, "query after the erasure");
    let hit = d.query(
        &[],
        &format!("SELECT count(*) AS n FROM measurements WHERE participant_id = '{VICTIM}'"),
    );
    assert_eq!(hit[0]["n"].as_i64(), Some(0), "query finds the victim");
    let like = d.query(
        &[],
        &format!(
            "SELECT participant_id, count(*) AS n FROM measurements
              WHERE participant_id LIKE '{VICTIM}%' GROUP BY 1"
        ),
    );
    assert_eq!(like.len(), 1, "only the neighbour is left: {like:?}");
    assert_eq!(like[0]["participant_id"], NEIGHBOUR);

    // DuckDB, pandas, pyarrow over the folder; DuckDB over every object.
    let r = d.readers();
    assert_eq!(
        r.readers.keys().map(String::as_str).collect::<Vec<_>>(),
        ["duckdb", "pandas", "pyarrow"]
    );
    let archived = |t: &Totals| {
        let mut a = expected.clone();
        for (k, (n, s)) in t {
            if let Some(e) = a.get_mut(k) {
                e.0 -= n;
                e.1 -= s;
            }
        }
        a
    };
    let mut hot_now = db_totals(shards).await;
    hot_now.remove(VICTIM);
    let want_archive = archived(&hot_now);
    for (name, read) in &r.readers {
        assert_eq!(read.error, None, "{name}");
        assert_eq!(read.victim_rows, 0, "{name} finds the victim");
        assert!(
            !read.totals.contains_key(VICTIM),
            "{name}: {:?}",
            read.totals
        );
        assert_totals_eq(
            &read.totals,
            &want_archive,
            &format!("{name} vs truth − shards"),
        );
        assert_eq!(read.shards, ["shard0", "shard1"], "{name}");
        assert_eq!(read.dates.len(), dates, "{name}: dates {:?}", read.dates);
        assert_eq!(
            read.rows,
            want_archive.values().map(|t| t.0).sum::<i64>(),
            "{name}"
        );
    }
    assert_eq!(
        r.everywhere_victim_rows, 0,
        "a Parquet object still holds the victim"
    );
    assert!(
        r.files.iter().all(|(p, _)| !p.contains("#")),
        "staging files left: {:?}",
        r.files
    );

    // archiver verify.
    let out = d.setup.archiver(&["verify"], &[]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "archiver verify: {} {text}\n{}",
        out.status,
        d.setup.log_tail()
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["good"].as_i64(),
        Some(2 * dates as i64),
        "{dates} dates × 2 shards: {v}"
    );
    for k in [
        "missing",
        "corrupt",
        "unknown",
        "pending",
        "renamed_leftovers",
    ] {
        assert_eq!(v[k].as_array().map(Vec::len), Some(0), "verify {k}: {v}");
    }

    // The lock: a second revision without the victim, which verifies.
    let revisions = d.trial_lines(&["lock", "list"]);
    let revs: Vec<(i64, i64)> = revisions
        .iter()
        .map(|r| {
            assert_eq!(r["lock"], LOCK);
            (r["revision"].as_i64().unwrap(), r["rows"].as_i64().unwrap())
        })
        .collect();
    let total: i64 = d.truth.values().map(|t| t.0).sum();
    assert_eq!(
        revs,
        [(1, total), (2, total - d.truth[VICTIM].0)],
        "lock revisions"
    );
    let lv: Value = serde_json::from_str(d.trial_ok(&["lock", "verify", LOCK]).trim()).unwrap();
    assert_eq!(lv["revision"].as_i64(), Some(2), "{lv}");
    assert_eq!(lv["problems"].as_array().map(Vec::len), Some(0), "{lv}");
    assert_totals_eq(
        &d.query_totals(&["--lock", LOCK]),
        &expected,
        "query --lock after the erasure",
    );
    // Revision 1's copies of the victim's rows are gone, so it no longer verifies.
    let old = d.trial(&["lock", "verify", LOCK, "--revision", "1"], &[]);
    assert_eq!(
        old.status.code(),
        Some(1),
        "lock verify --revision 1: {}",
        old.status
    );

    // The audit trail.
    let entries = d.trial_lines(&["audit", "list", "--participant", VICTIM]);
    let erase: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "participant.erase")
        .collect();
    assert_eq!(erase.len(), 1, "one participant.erase entry: {entries:?}");
    let e = erase[0];
    assert_eq!(e["reason"], ERASE_REASON, "{e}");
    assert_eq!(e["participants"], serde_json::json!([VICTIM]), "{e}");
    assert_eq!(e["seq"], report["audit_seq"], "{e}");
    assert_eq!(
        &e["details"], details,
        "the entry holds what the command printed"
    );
    let (mut nums, mut texts) = (Vec::new(), Vec::new());
    leaves(&e["details"], &mut nums, &mut texts);
    assert!(!texts.iter().any(|t| t == "value" || t == "values"), "{e}");
    for n in &nums {
        assert!(
            n.fract() == 0.0 && !values.contains(n),
            "a number in the erase entry that is a reading's value: {n} in {e}"
        );
    }
    for t in &texts {
        assert!(
            !t.contains(&format!("W-{VICTIM}-wrist")),
            "the victim's device id in the erase entry: {t}"
        );
        if let Ok(x) = t.parse::<f64>() {
            assert!(!values.contains(&x), "value {x} as text in the erase entry");
        }
    }
    let revise = d.trial_lines(&["audit", "list", "--action", "lock.revise"]);
    assert_eq!(revise.len(), 1, "one lock.revise entry: {revise:?}");
    assert_eq!(revise[0]["details"]["revision"].as_i64(), Some(2));
    d.trial_ok(&["audit", "verify"]);
    let plist = d.trial_lines(&["participants", "list"]);
    assert!(
        plist
            .iter()
            .any(|p| p["participant_id"] == VICTIM && p["status_now"] == "erased"),
        "{plist:?}"
    );

    // Run again: nothing more to do.
    let again = erase_to_end(d);
    assert_eq!(again["already_erased"], true, "{again}");
    assert_eq!(again["audit_seq"], report["audit_seq"], "{again}");
    assert_eq!(
        d.trial_lines(&["audit", "list", "--action", "participant.erase"])
            .len(),
        1
    );
    let done = erasures(d).await;
    assert_eq!(done.len(), 1, "one erasure: {done:?}");
    assert!(done[0].0, "finished");

    // The archive_log rows the erasure wrote.
    let mut renamed = Vec::new();
    for s in shards {
        for row in connect(&s.url)
            .await
            .query(
                "SELECT renamed_from, object_path, coalesce(checksum, ''), coalesce(rows, -1)
                   FROM archive_log WHERE step = 'renamed' AND run_id LIKE 'erasure-%'
                  ORDER BY id",
                &[],
            )
            .await
            .unwrap()
        {
            renamed.push((row.get(0), row.get(1), row.get(2), row.get(3)));
        }
    }
    assert_eq!(renamed.len(), objects.len(), "one renamed row per object");

    let mut details = details.clone();
    for o in details["objects"].as_array_mut().unwrap() {
        for k in ["before", "after"] {
            o[k] = Value::String(norm(o[k].as_str().unwrap()));
        }
    }
    let renamed = renamed
        .into_iter()
        .map(|(from, to, sum, n): (String, String, String, i64)| (norm(&from), norm(&to), sum, n))
        .collect();
    let files = r.files.iter().map(|(p, n)| (norm(p), *n)).collect();
    EndState {
        totals: d.query_totals(&[]),
        lock_totals: d.query_totals(&["--lock", LOCK]),
        files,
        lock_revisions: revs,
        details,
        renamed,
    }
}

/// Kills the erasure at each point in turn, each run resuming the previous one, then runs it to
/// the end; checks what each kill left. Returns the final report.
async fn erase_killed_in_turn(d: &Deployment) -> Value {
    let expected = d.expected();
    for point in KILL_POINTS {
        let t = Instant::now();
        let out = d.erase(Some(point));
        assert_killed(d, &out, point);
        assert_totals_eq(
            &others_via_query(d),
            &expected,
            &format!("query: other participants after the kill at {point}"),
        );
        let e = erasures(d).await;
        assert_eq!(e.len(), 1, "one erasure: {e:?}");
        assert!(!e[0].0, "killed at {point}, yet finished");
        let st = &e[0].1;
        match point {
            "after-status" => {
                assert_eq!(
                    statuses(d).await,
                    vec![Some("erased".to_string()), Some("erased".to_string())]
                );
                assert_eq!(
                    hot_rows(&d.setup.dbs.shards, VICTIM)
                        .await
                        .iter()
                        .sum::<i64>(),
                    d.victim_hot,
                    "hot rows before their step"
                );
            }
            "after-hot-delete" => {
                assert_eq!(hot_rows(&d.setup.dbs.shards, VICTIM).await, vec![0, 0]);
                assert_eq!(st["scanned"], false, "{st}");
            }
            "after-object-write" => {
                let objs = st["objects"].as_array().unwrap();
                assert_eq!(objs.len(), 16, "{st}");
                assert!(objs.iter().all(|o| o["swapped"] == false), "{st}");
            }
            "after-swap" => {
                let objs = st["objects"].as_array().unwrap();
                assert_eq!(
                    objs.iter().filter(|o| o["swapped"] == true).count(),
                    1,
                    "{st}"
                );
            }
            "after-lock-revision" => {
                assert!(st["objects"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|o| o["swapped"] == true));
                assert_eq!(d.trial_lines(&["lock", "list"]).len(), 2);
                assert_eq!(st["locks_done"], false, "{st}");
            }
            "before-delete" => {
                assert_eq!(st["locks_done"], true, "{st}");
                assert_eq!(st["deleted"], false, "{st}");
            }
            "before-audit" => {
                assert_eq!(st["deleted"], true, "{st}");
                let r = d.readers();
                assert_eq!(
                    r.everywhere_victim_rows, 0,
                    "objects deleted before the audit"
                );
                assert!(d
                    .trial_lines(&["audit", "list", "--action", "participant.erase"])
                    .is_empty());
            }
            _ => unreachable!(),
        }
        eprintln!("killed at {point}: checked in {:?}", t.elapsed());
    }
    erase_to_end(d)
}

/// A lock created before, a participant on both shards in 8 archived days and hot: the
/// erasure killed at each point in turn ends where one never killed ends (local folder).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_killed_at_each_step_in_turn_ends_as_never_killed() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let t = Instant::now();
    let clean = Deployment::build(&stack, "t_erase_clean", false).await;
    let values = victim_values(&clean.setup.dbs.shards).await;
    assert!(values.iter().all(|v| v.fract() != 0.0));
    eprintln!("deployment built in {:?}", t.elapsed());
    let t = Instant::now();
    let report = erase_to_end(&clean);
    eprintln!("erasure in {:?}: {report}", t.elapsed());
    let want = assert_erased(&clean, &report, &values, 8).await;

    let killed = Deployment::build(&stack, "t_erase_kill", false).await;
    assert_totals_eq(&killed.truth, &clean.truth, "same data");
    let report = erase_killed_in_turn(&killed).await;
    let got = assert_erased(&killed, &report, &values, 8).await;
    assert_eq!(got, want, "killed in turn vs never killed");
    eprintln!("in turn: {:?} in all", t.elapsed());

    // After the erasure the hourly archiver run changes nothing and verify still passes.
    let run: Value = serde_json::from_str(&killed.setup.ok(&["run"])).unwrap();
    assert_eq!(run["archived"].as_i64(), Some(0), "{run}");
    assert_eq!(run["failed"].as_i64(), Some(0), "{run}");
    killed.setup.ok(&["verify"]);
    let files: Vec<(String, i64)> = killed
        .readers()
        .files
        .iter()
        .map(|(p, n)| (norm(p), *n))
        .collect();
    assert_eq!(files, got.files, "archiver run after the erasure");

    killed.setup.dbs.drop_all().await;
    clean.setup.dbs.drop_all().await;
}

/// Killed once at each point, with the hourly `archiver run` before the resuming run; and
/// SIGKILLed at growing delays (so also between the steps' records, where no fault point is)
/// until a run ends by itself. Each ends where a never-killed erasure ends (local folder).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_killed_once_at_each_step_then_resumed_ends_as_never_killed() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let t = Instant::now();
    let clean = Deployment::build(&stack, "t_erase_ref", false).await;
    let values = victim_values(&clean.setup.dbs.shards).await;
    let want = assert_erased(&clean, &erase_to_end(&clean), &values, 8).await;
    for point in KILL_POINTS {
        let d = Deployment::build(&stack, "t_erase_once", false).await;
        let out = d.erase(Some(point));
        assert_killed(&d, &out, point);
        let run = d.setup.archiver(&["run"], &[]);
        assert!(
            run.status.success(),
            "archiver run after a kill at {point}: {}\n{}",
            run.status,
            d.setup.log_tail()
        );
        let run: Value = serde_json::from_slice(&run.stdout).unwrap();
        assert_eq!(run["archived"].as_i64(), Some(0), "{run}");
        assert_eq!(run["failed"].as_i64(), Some(0), "{run}");
        assert_totals_eq(
            &others_via_query(&d),
            &d.expected(),
            &format!("query: other participants after the kill at {point} and archiver run"),
        );
        let report = erase_to_end(&d);
        let got = assert_erased(&d, &report, &values, 8).await;
        assert_eq!(got, want, "killed once at {point} vs never killed");
        d.setup.dbs.drop_all().await;
        eprintln!("killed once at {point}: ok ({:?} so far)", t.elapsed());
    }

    let d = Deployment::build(&stack, "t_erase_sigkill", false).await;
    let mut kills = Vec::new();
    let mut report = None;
    for round in 1..=120u64 {
        let mut child = d.erase_command(None).spawn().unwrap();
        let delay = Duration::from_millis(15 * round);
        let start = Instant::now();
        while start.elapsed() < delay && child.try_wait().unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if child.try_wait().unwrap().is_none() {
            // The run may end by itself between `try_wait` and the signal: it is not reaped
            // yet, so `kill` still succeeds and its exit status tells which happened.
            child.kill().unwrap();
        }
        let out = child.wait_with_output().unwrap();
        if out.status.signal() == Some(9) {
            kills.push(delay.as_millis());
            continue;
        }
        assert!(out.status.success(), "{}\n{}", out.status, log_tail(&d.log));
        report = Some(serde_json::from_slice::<Value>(&out.stdout).unwrap());
        break;
    }
    let report = report.expect("the erasure never finished within 120 runs");
    assert!(
        kills.len() >= 5,
        "SIGKILLed only {} times: {kills:?}",
        kills.len()
    );
    eprintln!("SIGKILLed after {kills:?} ms, then finished");
    let got = assert_erased(&d, &report, &values, 8).await;
    assert_eq!(got, want, "SIGKILLed at growing delays vs never killed");
    d.setup.dbs.drop_all().await;
    clean.setup.dbs.drop_all().await;
    eprintln!("once at each step + SIGKILL: {:?}", t.elapsed());
}

/// On S3 (SeaweedFS): killed at each point in turn, it ends where the never-killed erasure
/// on a local folder ends (same objects, rows, checksums, audit details).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_on_s3_killed_in_turn_ends_as_never_killed() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let t = Instant::now();
    let clean = Deployment::build(&stack, "t_erase_s3ref", false).await;
    let values = victim_values(&clean.setup.dbs.shards).await;
    let want = assert_erased(&clean, &erase_to_end(&clean), &values, 8).await;
    let d = Deployment::build(&stack, "t_erase_s3", true).await;
    let report = erase_killed_in_turn(&d).await;
    let got = assert_erased(&d, &report, &values, 8).await;
    assert_eq!(got, want, "S3, killed in turn vs local, never killed");
    d.setup.dbs.drop_all().await;
    clean.setup.dbs.drop_all().await;
    eprintln!("S3: {:?}", t.elapsed());
}

/// SIGKILLed while it uploads a rewritten object bigger than one part (so LocalFileSystem's
/// staging file `<name>-e<id>.parquet#<n>` is on disk), then run again: no file is left that
/// pandas or pyarrow would open besides the archive's objects, `archiver verify` passes, and
/// the readers find every other row and none of the victim's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_killed_mid_upload_leaves_no_partial_file() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let t = Instant::now();
    let d = Deployment::bulky(&stack, "t_erase_big").await;
    eprintln!("bulky deployment built in {:?}", t.elapsed());
    let staged = |d: &Deployment| -> Vec<String> {
        d.local_files()
            .into_iter()
            .filter(|f| f.contains(".parquet#"))
            .collect()
    };
    // Kill as soon as a staging file shows; should the upload complete between seeing it and
    // the kill, the next run rewrites the next object (both are bigger than a part).
    let mut left = Vec::new();
    for _ in 0..3 {
        let mut child = d.erase_command(None).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if !staged(&d).is_empty() {
                child.kill().unwrap();
                child.wait().unwrap();
                break;
            }
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "the erasure ended ({st}) before a staging file was seen\n{}",
                    log_tail(&d.log)
                );
            }
            assert!(Instant::now() < deadline, "no staging file within 120 s");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        left = staged(&d);
        if !left.is_empty() {
            break;
        }
    }
    eprintln!("SIGKILLed while uploading, left: {left:?}");
    assert!(
        !left.is_empty(),
        "no kill landed during an upload in 3 runs"
    );
    assert!(left.iter().all(|f| f.contains("-e1.parquet#")), "{left:?}");

    let report = erase_to_end(&d);
    assert_eq!(
        report["details"]["hot_rows_erased"].as_i64(),
        Some(d.victim_hot),
        "{report}"
    );
    assert_eq!(
        report["details"]["archived_rows_erased"].as_i64(),
        Some(d.victim_archived()),
        "{report}"
    );
    let files = d.local_files();
    let stray: Vec<&String> = files
        .iter()
        .filter(|f| f.starts_with("measurements/") && !f.ends_with(".parquet"))
        .collect();
    let out = d.setup.archiver(&["verify"], &[]);
    let verify = String::from_utf8_lossy(&out.stdout).to_string();
    let r = d.readers();
    let mut hot = db_totals(&d.setup.dbs.shards).await;
    hot.remove(VICTIM);
    let mut want = d.expected();
    for (k, (n, s)) in &hot {
        let e = want.get_mut(k).unwrap();
        e.0 -= n;
        e.1 -= s;
    }
    let reads: Vec<String> = r
        .readers
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}: {} rows, victim {}, error {:?}",
                v.rows, v.victim_rows, v.error
            )
        })
        .collect();
    assert!(
        stray.is_empty(),
        "files left under measurements/ after the resumed erasure: {stray:?}\n\
         archiver verify: {} {verify}\nreaders: {reads:?}\ntrial log:\n{}",
        out.status,
        log_tail(&d.log)
    );
    assert!(
        out.status.success(),
        "archiver verify: {} {verify}",
        out.status
    );
    for (name, read) in &r.readers {
        assert_eq!(read.error, None, "{name}");
        assert_eq!(read.victim_rows, 0, "{name}");
        assert_totals_eq(&read.totals, &want, &format!("{name} vs truth − shards"));
    }
    assert_totals_eq(
        &d.query_totals(&[]),
        &d.expected(),
        "query after the erasure",
    );
    d.setup.dbs.drop_all().await;
    eprintln!("mid-upload kill: {:?}", t.elapsed());
}

/// Killed after the status step, then the archiver archives the victim's rows of yesterday
/// (`archiver run --older-than 1m`, as a run with a short window would) before the run that
/// resumes: those rows are erased from the new objects, and every count adds up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_resumed_after_the_archiver_moved_more_of_the_victim() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let mut d = Deployment::build(&stack, "t_erase_moved", false).await;
    let values = victim_values(&d.setup.dbs.shards).await;
    let out = d.erase(Some("after-status"));
    assert_killed(&d, &out, "after-status");
    // Yesterday's chunks end at midnight UTC: at least a minute ago.
    let since_midnight = chrono::Utc::now().time().num_seconds_from_midnight();
    if since_midnight < 90 {
        tokio::time::sleep(Duration::from_secs(u64::from(90 - since_midnight))).await;
    }
    let run: Value = serde_json::from_str(&d.setup.ok(&["run", "--older-than", "1m"])).unwrap();
    assert!(run["archived"].as_i64().unwrap() >= 2, "{run}");
    assert_eq!(run["failed"].as_i64(), Some(0), "{run}");
    let hot = hot_rows(&d.setup.dbs.shards, VICTIM).await;
    assert!(
        hot.iter().sum::<i64>() < d.victim_hot,
        "the archiver took some of the victim's hot rows: {hot:?} of {}",
        d.victim_hot
    );
    d.victim_hot = hot.iter().sum();
    d.hot_before = db_totals(&d.setup.dbs.shards).await;
    let days = 8 + run["archived"].as_i64().unwrap() as usize / 2;
    let report = erase_to_end(&d);
    let got = assert_erased(&d, &report, &values, days).await;
    assert_eq!(got.totals, d.expected());
    d.setup.dbs.drop_all().await;
}
