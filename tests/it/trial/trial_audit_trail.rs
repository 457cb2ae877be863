//! Issue 26, the audit trail as an auditor reads it: every action appears in `trial audit
//! list` and in `query`'s `audit_log` with user, role, host, reason and counts; `audit verify`
//! passes, and fails after the table's owner, in psql, alters, deletes or reorders an entry (or
//! removes the last one), and passes again once the entry is put back.
//!
//! One deployment (tests/src/trial_run.rs: `archiver migrate`, `archiver run` twice around a
//! `lock create`) then goes through `participants withdraw`, `reinstate`, `erase` (which
//! revises the lock) and `archiver restore`; `reshard` moves and `migrate-archive` have their
//! entries checked in `trial_audit_actions.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;
use vitalsink_common::audit::Entry;
use vitalsink_tests::trial_run::{Deployment, VICTIM};
use vitalsink_tests::{connect, Stack};

/// Every entry of the table, in `seq` order.
async fn table(d: &Deployment) -> Vec<Entry> {
    connect(&d.setup.dbs.shards[0].url)
        .await
        .query(
            "SELECT seq, at, os_user, db_role, host, action, command, reason, participants,
                    details, prev_hash, hash
               FROM audit_log ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(Entry::from_row)
        .collect()
}

/// Runs `sql` with psql as the table's owner (the shard URL's `user=postgres`).
fn psql(d: &Deployment, sql: &str) {
    let out = Command::new("psql")
        .arg(&d.setup.dbs.shards[0].url)
        .args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The owner's change with the append-only triggers switched off for it.
fn tamper(d: &Deployment, sql: &str) {
    psql(
        d,
        &format!(
            "BEGIN; ALTER TABLE audit_log DISABLE TRIGGER USER; {sql}; \
             ALTER TABLE audit_log ENABLE TRIGGER USER; COMMIT"
        ),
    );
}

/// `trial audit verify`: exit status and its report.
fn verify(d: &Deployment) -> (bool, Value) {
    let out = d.trial(&["audit", "verify"], &[]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let report = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("audit verify printed {text:?}: {e}"));
    (out.status.success(), report)
}

fn first_break(report: &Value) -> i64 {
    report["breaks"][0]["seq"].as_i64().unwrap_or(-1)
}

fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The SQL that puts `e` back as it was.
fn reinsert(e: &Entry) -> String {
    let parts = e
        .participants
        .iter()
        .map(|p| sql_literal(p))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "INSERT INTO audit_log (seq, at, os_user, db_role, host, action, command, reason,
                                participants, details, prev_hash, hash)
         VALUES ({}, {}::timestamptz, {}, {}, {}, {}, {}, {}, ARRAY[{parts}]::text[], {}, {}, {})",
        e.seq,
        sql_literal(&e.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        sql_literal(&e.os_user),
        sql_literal(&e.db_role),
        sql_literal(&e.host),
        sql_literal(&e.action),
        sql_literal(&e.command),
        e.reason
            .as_deref()
            .map_or_else(|| "NULL".to_string(), sql_literal),
        sql_literal(&e.details),
        sql_literal(&e.prev_hash),
        sql_literal(&e.hash),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_action_is_listed_and_any_tampering_is_found() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let d = Deployment::build(&stack, "t_audit_trail", false).await;
    d.trial_json(&[
        "participants",
        "withdraw",
        "P0001",
        "--effective",
        "2026-01-01T00:00:00+05:45",
        "--reason",
        "consent withdrawn at visit 4",
    ]);
    d.trial_json(&[
        "participants",
        "reinstate",
        "P0001",
        "--effective",
        "2026-02-01",
        "--reason",
        "re-consented",
    ]);
    let erased = d.trial_json(&[
        "participants",
        "erase",
        VICTIM,
        "--reason",
        "sub-study consent withdrawn",
    ]);
    let day = vitalsink_tests::archive_run::aged_start().date_naive();
    let (from, to) = (day.to_string(), (day + chrono::Days::new(1)).to_string());
    d.setup.ok(&[
        "restore",
        "--from",
        &from,
        "--to",
        &to,
        "--participant",
        "P0002",
        "--reason",
        "source data verification of one day",
    ]);
    // The restore's own round copies the trail; a `trial` command copies it too.
    d.trial_ok(&["participants", "list"]);

    let entries = table(&d).await;
    let actions: BTreeSet<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    for want in [
        "schema.migrate",
        "archive.drop",
        "lock.create",
        "participant.withdraw",
        "participant.reinstate",
        "participant.erase",
        "lock.revise",
        "archive.restore",
    ] {
        assert!(actions.contains(want), "no {want} entry: {actions:?}");
    }
    for e in &entries {
        assert!(
            !e.os_user.is_empty() && !e.db_role.is_empty() && !e.host.is_empty(),
            "{e:?}"
        );
        assert!(
            e.reason.as_deref().is_some_and(|r| !r.trim().is_empty()),
            "entry {} ({}) has no reason",
            e.seq,
            e.action
        );
        let details: Value = serde_json::from_str(&e.details).unwrap();
        assert!(details.is_object(), "{}", e.details);
    }
    // Counts, by action.
    let by = |a: &str| entries.iter().find(|e| e.action == a).unwrap();
    let erase: Value = serde_json::from_str(&by("participant.erase").details).unwrap();
    assert_eq!(
        erase, erased["details"],
        "the entry is what the command printed"
    );
    assert!(erase["hot_rows_erased"].as_i64().unwrap() > 0, "{erase}");
    assert!(
        erase["archived_rows_erased"].as_i64().unwrap() > 0,
        "{erase}"
    );
    assert_eq!(
        by("participant.erase").participants,
        vec![VICTIM.to_string()]
    );
    let drop: Value = serde_json::from_str(&by("archive.drop").details).unwrap();
    assert!(drop["object_rows"].as_i64().unwrap() > 0, "{drop}");
    let restore: Value = serde_json::from_str(&by("archive.restore").details).unwrap();
    assert!(restore.to_string().contains("P0002"), "{restore}");
    assert_eq!(
        by("participant.withdraw").reason.as_deref(),
        Some("consent withdrawn at visit 4")
    );

    // `trial audit list` gives the table's entries, and filters them.
    let listed = d.trial_lines(&["audit", "list"]);
    assert_eq!(listed.len(), entries.len());
    for (l, e) in listed.iter().zip(&entries) {
        assert_eq!(l["seq"].as_i64(), Some(e.seq));
        assert_eq!(l["hash"].as_str(), Some(e.hash.as_str()));
        assert_eq!(l["os_user"].as_str(), Some(e.os_user.as_str()));
        assert_eq!(l["reason"].as_str(), e.reason.as_deref());
        assert!(l["details"].is_object(), "{l}");
    }
    let part = d.trial_lines(&["audit", "list", "--action", "participant."]);
    assert_eq!(part.len(), 3, "{part:?}");
    let victim = d.trial_lines(&["audit", "list", "--participant", VICTIM]);
    assert!(
        victim.iter().any(|l| l["action"] == "participant.erase"),
        "{victim:?}"
    );
    assert!(victim
        .iter()
        .all(|l| l["participants"].to_string().contains(VICTIM)));
    let mine = d.trial_lines(&["audit", "list", "--user", &entries[0].os_user]);
    assert_eq!(mine.len(), entries.len());
    assert!(d
        .trial_lines(&["audit", "list", "--user", "nobody-else"])
        .is_empty());
    assert!(d
        .trial_lines(&["audit", "list", "--since", "2999-01-01"])
        .is_empty());
    let csv = d.trial_ok(&["audit", "list", "--format", "csv"]);
    assert!(
        csv.starts_with("seq,at,os_user,db_role,host,action,"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), entries.len() + 1, "{csv}");

    // `query`'s audit_log: the same entries.
    let rows = d.query(
        &[],
        "SELECT seq, action, os_user, db_role, host, reason, hash FROM audit_log ORDER BY seq",
    );
    assert_eq!(rows.len(), entries.len());
    for (r, e) in rows.iter().zip(&entries) {
        assert_eq!(r["seq"].as_i64(), Some(e.seq));
        assert_eq!(r["action"].as_str(), Some(e.action.as_str()));
        assert_eq!(r["db_role"].as_str(), Some(e.db_role.as_str()));
        assert_eq!(r["host"].as_str(), Some(e.host.as_str()));
        assert_eq!(r["hash"].as_str(), Some(e.hash.as_str()));
    }

    // Tampering by the owner, in psql.
    let (ok, r) = verify(&d);
    assert!(ok, "the untouched trail verifies: {r}");
    assert_eq!(r["entries"].as_u64(), Some(entries.len() as u64));
    assert_eq!(r["copied"].as_u64(), Some(entries.len() as u64), "{r}");

    let target = &entries[2];
    tamper(
        &d,
        &format!(
            "UPDATE audit_log SET reason = 'nothing to see' WHERE seq = {}",
            target.seq
        ),
    );
    let (ok, r) = verify(&d);
    assert!(!ok && first_break(&r) == target.seq, "altered: {r}");
    tamper(
        &d,
        &format!(
            "UPDATE audit_log SET reason = {} WHERE seq = {}",
            sql_literal(target.reason.as_deref().unwrap()),
            target.seq
        ),
    );
    assert!(verify(&d).0, "restored after the alteration");

    let gone = &entries[3];
    tamper(
        &d,
        &format!("DELETE FROM audit_log WHERE seq = {}", gone.seq),
    );
    let (ok, r) = verify(&d);
    assert!(!ok && first_break(&r) == gone.seq, "deleted: {r}");
    tamper(&d, &reinsert(gone));
    assert!(verify(&d).0, "restored after the deletion");

    let (a, b) = (&entries[4], &entries[5]);
    tamper(
        &d,
        &format!(
            "UPDATE audit_log SET seq = 1000000000 WHERE seq = {a}; \
             UPDATE audit_log SET seq = {a} WHERE seq = {b}; \
             UPDATE audit_log SET seq = {b} WHERE seq = 1000000000",
            a = a.seq,
            b = b.seq
        ),
    );
    let (ok, r) = verify(&d);
    assert!(!ok && first_break(&r) == a.seq, "reordered: {r}");
    tamper(
        &d,
        &format!(
            "UPDATE audit_log SET seq = 1000000000 WHERE seq = {a}; \
             UPDATE audit_log SET seq = {a} WHERE seq = {b}; \
             UPDATE audit_log SET seq = {b} WHERE seq = 1000000000",
            a = a.seq,
            b = b.seq
        ),
    );
    assert!(verify(&d).0, "restored after the reordering");

    // The last entry: the chain alone cannot tell, the archive's copy can.
    let last = entries.last().unwrap();
    tamper(
        &d,
        &format!("DELETE FROM audit_log WHERE seq = {}", last.seq),
    );
    let (ok, r) = verify(&d);
    assert!(
        !ok && first_break(&r) == last.seq,
        "last entry deleted: {r}"
    );
    tamper(&d, &reinsert(last));
    let (ok, r) = verify(&d);
    assert!(ok, "restored: {r}");
    d.setup.dbs.drop_all().await;
}
