//! Issue 26, the operator actions' audit entries: every action that creates, changes, moves or
//! deletes records appends one entry to `audit_log` on the map shard, with what it touched
//! (counts and checksums) and why.
//!
//! One deployment of two shards goes through:
//! 1. `archiver migrate` on the fresh databases: one `schema.migrate` entry per shard;
//! 2. `archiver run --older-than 43d --reason …`: one `archive.drop` entry per chunk dropped,
//!    each matching the chunk's `dropped` log row (object, rows, checksum);
//! 3. a run whose appends the map shard refuses (a test trigger): the chunks are dropped, the
//!    run exits 1; the next run (default reason) appends its own entries and recovers the
//!    missing ones (`recovered`), so every drop has exactly one entry;
//! 4. `migrate-archive --reason …` over objects put back under their old names: one
//!    `archive.migrate` entry listing the renames;
//! 5. `reshard add-shard` without `--reason` is refused; with it (offline), one
//!    `schema.migrate` entry for the new shard and one `reshard.move` entry whose
//!    participants, rows and checksums are what the new shard holds, and the map shard's
//!    `participant_status` rows are on the new shard;
//! 6. two `restore --reason …` (all participants, then two): one `archive.restore` entry each
//!    with the rows restored per shard;
//! 7. a last `run` copies the trail into the archive.
//!
//! Then: the chain verifies from the genesis, every entry names its OS user, host, database
//! role, command and reason, the copies in the archive (`audit/trail-…jsonl`) hold exactly
//! the table's entries; a role without `INSERT` on `audit_log` (the reader) cannot append,
//! and the owner cannot update, delete or truncate it (SQLSTATE 42501, the triggers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use chrono::Duration;
use serde_json::{json, Value};
use vitalsink_common::audit::{self, action, Entry, Record, GENESIS};
use vitalsink_common::config::{DatabaseConfig, ShardConfig};
use vitalsink_common::db::Shard;
use vitalsink_common::migrate::{latest_version, MIGRATIONS};
use vitalsink_tests::archive_run::{aged_start, load, window_totals, ArchiveSetup, ROUND_TRIP};
use vitalsink_tests::ingest_run::extra_shard;
use vitalsink_tests::roles::{ensure_login_users, sqlstate};
use vitalsink_tests::{connect, Stack};

/// Login user in the reader group role (shared with the security tests).
const READER: &str = "vs_test_reader";

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// Every entry of the trail on the map shard, in `seq` order.
async fn trail(map_url: &str) -> Vec<Entry> {
    connect(map_url)
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

fn details(e: &Entry) -> Value {
    json_of(&e.details)
}

fn of_action<'a>(entries: &'a [Entry], act: &str) -> Vec<&'a Entry> {
    entries.iter().filter(|e| e.action == act).collect()
}

/// The `dropped` rows of a shard: (chunk `schema.name`, attempt) → (object, rows, checksum).
async fn dropped_rows(shard: &ShardConfig) -> BTreeMap<(String, String), (String, i64, String)> {
    connect(&shard.url)
        .await
        .query(
            "SELECT chunk_schema || '.' || chunk_name, attempt, object_path, rows, checksum
               FROM archive_log WHERE step = 'dropped'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3), r.get(4))))
        .collect()
}

/// Puts every live object of `shard` back under the name archives had before the `part-…`
/// layout (as `ArchiveSetup::make_legacy` does, without downgrading the schema): the object,
/// its log rows and its manifest entries. Returns (current name, old name) per object.
async fn legacy_names(setup: &ArchiveSetup, shard: &ShardConfig) -> Vec<(String, String)> {
    use futures::TryStreamExt;
    use object_store::path::Path as ObjPath;
    use object_store::{ObjectStoreExt, PutPayload};
    let store = setup.root.store();
    let c = connect(&shard.url).await;
    let mut renamed = Vec::new();
    for r in c
        .query(
            "SELECT object_path, chunk_name, attempt FROM archive_log WHERE step = 'dropped'",
            &[],
        )
        .await
        .unwrap()
    {
        let new: String = r.get(0);
        let (dir, _) = new.rsplit_once('/').unwrap();
        let old = format!(
            "{dir}/{}-{}.parquet",
            r.get::<_, String>(1),
            r.get::<_, String>(2)
        );
        store
            .rename(&ObjPath::from(new.as_str()), &ObjPath::from(old.as_str()))
            .await
            .unwrap();
        c.execute(
            "UPDATE archive_log SET object_path = $2 WHERE object_path = $1",
            &[&new, &old],
        )
        .await
        .unwrap();
        renamed.push((new, old));
    }
    let dir = ObjPath::from(format!("manifest/shard={}", shard.name));
    let entries: Vec<ObjPath> = store
        .list(Some(&dir))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .unwrap();
    for e in entries {
        let body = store.get(&e).await.unwrap().bytes().await.unwrap();
        let mut text = String::from_utf8(body.to_vec()).unwrap();
        for (new, old) in &renamed {
            text = text.replace(
                &format!("\"object_path\":\"{new}\""),
                &format!("\"object_path\":\"{old}\""),
            );
        }
        if text.as_bytes() != body.as_ref() {
            store
                .put(&e, PutPayload::from(text.into_bytes()))
                .await
                .unwrap();
        }
    }
    renamed.sort();
    renamed
}

/// The copies of the trail in the archive, concatenated in name order.
async fn archived_trail(setup: &ArchiveSetup) -> (Vec<String>, Vec<Entry>) {
    use futures::TryStreamExt;
    use object_store::path::Path as ObjPath;
    use object_store::ObjectStoreExt;
    let store = setup.root.store();
    let mut names: Vec<ObjPath> = store
        .list(Some(&ObjPath::from("audit")))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .unwrap();
    names.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
    let mut entries = Vec::new();
    for n in &names {
        let body = store.get(n).await.unwrap().bytes().await.unwrap();
        for line in String::from_utf8(body.to_vec()).unwrap().lines() {
            if !line.trim().is_empty() {
                entries.push(serde_json::from_str::<Entry>(line).unwrap());
            }
        }
    }
    (names.iter().map(ToString::to_string).collect(), entries)
}

fn reshard(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    let bin = vitalsink_tests::ingest_run::ingest_binary().with_file_name("reshard");
    Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

/// Checks a drop entry against the chunk's `dropped` log row; returns its object rows.
fn check_drop(e: &Entry, logged: &BTreeMap<(String, String), (String, i64, String)>) -> i64 {
    let d = details(e);
    let key = (
        d["chunk"].as_str().unwrap().to_string(),
        d["attempt"].as_str().unwrap().to_string(),
    );
    let (object, rows, checksum) = logged
        .get(&key)
        .unwrap_or_else(|| panic!("entry {} names no dropped chunk: {d}", e.seq));
    assert_eq!(d["object"].as_str(), Some(object.as_str()), "{d}");
    assert_eq!(d["object_rows"].as_i64(), Some(*rows), "{d}");
    assert_eq!(d["checksum"].as_str(), Some(checksum.as_str()), "{d}");
    assert_eq!(d["rows_after"].as_i64(), Some(0), "{d}");
    assert!(*rows > 0, "{d}");
    if d["recovered"] == json!(false) {
        let dups = d["duplicates_dropped"].as_i64().unwrap();
        assert_eq!(d["rows_before"].as_i64(), Some(rows + dups), "{d}");
    } else {
        assert_eq!(d["rows_before"], Value::Null, "{d}");
    }
    assert!(e.participants.is_empty(), "{e:?}");
    *rows
}

#[tokio::test(flavor = "multi_thread")]
async fn every_operator_action_appends_one_verifiable_entry() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    // 1. `archiver migrate` on fresh databases (ArchiveSetup::new runs it).
    let setup = ArchiveSetup::new(&stack, "t_audit_actions", false, "").await;
    let shards = setup.dbs.shards.clone();
    let map_url = shards[0].url.clone();
    let entries = trail(&map_url).await;
    let all_files: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
    assert_eq!(entries.len(), 2, "{entries:#?}");
    for (e, s) in entries.iter().zip(&shards) {
        assert_eq!(e.action, action::MIGRATE);
        let d = details(e);
        assert_eq!(d["shard"].as_str(), Some(s.name.as_str()), "{d}");
        assert_eq!(d["from"].as_i64(), Some(0), "{d}");
        assert_eq!(d["to"].as_i64(), Some(i64::from(latest_version())), "{d}");
        assert_eq!(d["applied"], json!(all_files), "{d}");
        assert!(e.command.contains("migrate"), "{}", e.command);
    }
    // A second migrate applies nothing and appends nothing.
    setup.ok(&["migrate"]);
    assert_eq!(trail(&map_url).await.len(), 2);

    load(&shards, ROUND_TRIP).await;

    // 2. A run with a reason: two chunks per shard (45 and 44 days ago) are older than 43d.
    let r1 = "test: archive the first two days";
    let run1 = json_of(&setup.ok(&["run", "--older-than", "43d", "--reason", r1]));
    assert_eq!(run1["archived"].as_i64(), Some(4), "{run1}");
    assert_eq!(run1["unaudited"].as_i64(), Some(0), "{run1}");
    let entries = trail(&map_url).await;
    let drops1: Vec<&Entry> = of_action(&entries, action::ARCHIVE_DROP);
    assert_eq!(drops1.len(), 4, "{entries:#?}");
    let mut logged = BTreeMap::new();
    for s in &shards {
        logged.extend(dropped_rows(s).await);
    }
    let rows1: i64 = drops1.iter().map(|e| check_drop(e, &logged)).sum();
    assert_eq!(Some(rows1), run1["rows"].as_i64(), "{run1}");
    assert!(drops1.iter().all(|e| e.reason.as_deref() == Some(r1)));
    assert!(drops1
        .iter()
        .all(|e| e.command.contains(" run ") && e.command.contains(r1)));

    // 3. The map shard refuses every append: the chunks are dropped, the run fails.
    let admin = connect(&map_url).await;
    admin
        .batch_execute(
            "CREATE FUNCTION test_refuse_audit() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN RAISE EXCEPTION 'test: audit appends refused'; END $$;
             CREATE TRIGGER test_refuse_audit BEFORE INSERT ON audit_log
                 FOR EACH ROW EXECUTE FUNCTION test_refuse_audit()",
        )
        .await
        .unwrap();
    let refused = setup.archiver(&["run", "--older-than", "42d"], &[]);
    assert!(!refused.status.success(), "{}", setup.log_tail());
    assert!(
        setup.log_tail().contains("no audit entry"),
        "{}",
        setup.log_tail()
    );
    let mut dropped_now = 0;
    for s in &shards {
        dropped_now += dropped_rows(s).await.len();
    }
    assert_eq!(dropped_now, 6, "the third day's chunks are dropped anyway");
    assert_eq!(
        of_action(&trail(&map_url).await, action::ARCHIVE_DROP).len(),
        4
    );
    admin
        .batch_execute(
            "DROP TRIGGER test_refuse_audit ON audit_log; DROP FUNCTION test_refuse_audit()",
        )
        .await
        .unwrap();
    // The next run (default reason) appends its own entries and recovers the two missing.
    let run3 = json_of(&setup.ok(&["run"]));
    assert_eq!(run3["archived"].as_i64(), Some(4), "{run3}");
    let entries = trail(&map_url).await;
    let drops: Vec<&Entry> = of_action(&entries, action::ARCHIVE_DROP);
    let mut logged = BTreeMap::new();
    for s in &shards {
        logged.extend(dropped_rows(s).await);
    }
    assert_eq!(logged.len(), 10);
    assert_eq!(drops.len(), 10, "one entry per drop: {entries:#?}");
    let keys: BTreeSet<(String, String, String)> = drops
        .iter()
        .map(|e| {
            let d = details(e);
            (
                d["shard"].as_str().unwrap().to_string(),
                d["chunk"].as_str().unwrap().to_string(),
                d["attempt"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(keys.len(), 10, "no drop has two entries");
    for e in &drops {
        check_drop(e, &logged);
    }
    let recovered: Vec<&&Entry> = drops
        .iter()
        .filter(|e| details(e)["recovered"] == json!(true))
        .collect();
    assert_eq!(recovered.len(), 2, "{drops:#?}");
    for e in drops.iter().skip(4) {
        let reason = e.reason.as_deref().unwrap_or_default();
        assert!(
            reason.starts_with("scheduled archiving: chunks older than 30"),
            "{reason}"
        );
    }

    // 4. migrate-archive over the map shard's objects under their old names.
    let legacy = legacy_names(&setup, &shards[0]).await;
    assert_eq!(legacy.len(), 5, "{legacy:?}");
    let r4 = "test: rename objects hidden from pandas";
    let migrated = json_of(&setup.ok(&["migrate-archive", "--reason", r4]));
    assert_eq!(
        migrated["renamed"].as_array().map(Vec::len),
        Some(5),
        "{migrated}"
    );
    let entries = trail(&map_url).await;
    let mig = of_action(&entries, action::ARCHIVE_MIGRATE);
    assert_eq!(mig.len(), 1, "{entries:#?}");
    assert_eq!(mig[0].reason.as_deref(), Some(r4));
    let d = details(mig[0]);
    assert_eq!(d["renamed"].as_i64(), Some(5), "{d}");
    let mut renames: Vec<(String, String)> = d["renames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["shard"].as_str(), Some("shard0"), "{r}");
            (
                r["to"].as_str().unwrap().to_string(),
                r["from"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    renames.sort();
    assert_eq!(renames, legacy, "{d}");
    // Nothing left to rename: no entry.
    setup.ok(&["migrate-archive", "--reason", r4]);
    assert_eq!(
        of_action(&trail(&map_url).await, action::ARCHIVE_MIGRATE).len(),
        1
    );

    // 5. add-shard: refused without a reason; with one, its entries and the status copy.
    let new = extra_shard(&stack, 2).await;
    let add = [
        "add-shard",
        "--offline",
        "--name",
        "shard2",
        "--url",
        new.url.as_str(),
    ];
    let out = reshard(&setup.config, &add);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--reason"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before_add = trail(&map_url).await.len();
    for s in &shards {
        connect(&s.url)
            .await
            .batch_execute(
                "INSERT INTO participant_status (seq, participant_id, status, effective_at, reason)
                 VALUES (1, 'P0003', 'withdrawn', '2026-01-02T03:04:05.678901Z', 'test: consent'),
                        (2, 'P0003', 'active', 'infinity', 'test: reinstated')",
            )
            .await
            .unwrap();
    }
    let r5 = "test: a third shard for growth";
    let mut with_reason = add.to_vec();
    with_reason.extend(["--reason", r5]);
    let out = reshard(&setup.config, &with_reason);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries = trail(&map_url).await;
    let added: Vec<&Entry> = entries[before_add..].iter().collect();
    assert_eq!(added.len(), 2, "{added:#?}");
    assert_eq!(added[0].action, action::MIGRATE);
    assert_eq!(details(added[0])["shard"].as_str(), Some("shard2"));
    assert_eq!(details(added[0])["from"].as_i64(), Some(0));
    let mv = added[1];
    assert_eq!(mv.action, action::RESHARD_MOVE);
    assert_eq!(mv.reason.as_deref(), Some(r5));
    assert!(mv.command.contains("add-shard"), "{}", mv.command);
    let d = details(mv);
    assert_eq!(d["kind"].as_str(), Some("add"), "{d}");
    assert_eq!(d["epoch_before"].as_i64(), Some(1), "{d}");
    assert_eq!(d["epoch_after"].as_i64(), Some(2), "{d}");
    assert_eq!(d["from_shards"], json!(["shard0", "shard1"]), "{d}");
    assert_eq!(d["to_shards"], json!(["shard0", "shard1", "shard2"]), "{d}");
    let nc = connect(&new.url).await;
    nc.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let on_new: BTreeMap<String, i64> = nc
        .query(
            "SELECT participant_id, count(*) FROM measurements GROUP BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(!on_new.is_empty());
    assert_eq!(
        mv.participants,
        on_new.keys().cloned().collect::<Vec<_>>(),
        "the entry names the participants the new shard now holds"
    );
    assert_eq!(d["participants_moved"].as_u64(), Some(on_new.len() as u64));
    assert_eq!(
        d["rows_moved"].as_i64(),
        Some(on_new.values().sum::<i64>()),
        "{d}"
    );
    assert_eq!(
        d["verified_deleted"].as_u64(),
        Some(on_new.len() as u64),
        "{d}"
    );
    for m in d["moved"].as_array().unwrap() {
        let p = m["participant"].as_str().unwrap();
        assert_eq!(m["rows"].as_i64(), on_new.get(p).copied(), "{m}");
        assert_eq!(m["to"].as_str(), Some("shard2"), "{m}");
        assert_eq!(m["source_deleted"], json!(true), "{m}");
        assert!(!m["checksum"].as_str().unwrap().is_empty(), "{m}");
        let from = m["from"].as_str().unwrap();
        let left: i64 = connect(&shards[if from == "shard0" { 0 } else { 1 }].url)
            .await
            .query_one(
                "SELECT count(*) FROM measurements WHERE participant_id = $1",
                &[&p],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "{p} left on {from}");
    }
    assert_eq!(
        d["participant_status"],
        json!({"copied_now": 2, "rows_on_new_shard": 2}),
        "{d}"
    );
    let statuses: Vec<(i64, String, String, String)> = nc
        .query(
            "SELECT seq, participant_id, status, to_json(effective_at) #>> '{}'
               FROM participant_status ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (
                1,
                "P0003".to_string(),
                "withdrawn".to_string(),
                "2026-01-02T03:04:05.678901+00:00".to_string()
            ),
            (
                2,
                "P0003".to_string(),
                "active".to_string(),
                "infinity".to_string()
            ),
        ]
    );
    let mut toml = std::fs::read_to_string(&setup.config).unwrap();
    toml.push_str(&format!(
        "[[shards]]\nname = \"shard2\"\nurl = \"{}\"\n",
        new.url
    ));
    std::fs::write(&setup.config, toml).unwrap();
    let mut three = shards.clone();
    three.push(new.clone());

    // 6. Restores: a day for everyone, then the next day for two participants.
    let (d1, d2, d3) = (
        aged_start() + Duration::days(1),
        aged_start() + Duration::days(2),
        aged_start() + Duration::days(3),
    );
    let r6 = "test: bring day 1 back for a query";
    let first = json_of(&setup.ok(&[
        "restore",
        "--from",
        &d1.to_rfc3339(),
        "--to",
        &d2.to_rfc3339(),
        "--reason",
        r6,
    ]));
    assert!(first["inserted"].as_i64() > Some(0), "{first}");
    let back: i64 = window_totals(&three, d1, d2)
        .await
        .values()
        .map(|t| t.0)
        .sum();
    assert_eq!(first["inserted"].as_i64(), Some(back), "{first}");
    let who = ["P0010", "P0003"];
    let second = json_of(&setup.ok(&[
        "restore",
        "--from",
        &d2.to_rfc3339(),
        "--to",
        &d3.to_rfc3339(),
        "--participant",
        who[0],
        "--participant",
        who[1],
        "--reason",
        r6,
    ]));
    assert!(second["inserted"].as_i64() > Some(0), "{second}");
    let entries = trail(&map_url).await;
    let restores = of_action(&entries, action::ARCHIVE_RESTORE);
    assert_eq!(restores.len(), 2, "{entries:#?}");
    for (e, report) in restores.iter().zip([&first, &second]) {
        let d = details(e);
        assert_eq!(e.reason.as_deref(), Some(r6));
        assert_eq!(d["completed"], json!(true), "{d}");
        assert_eq!(d["rows_inserted"], report["inserted"], "{d}");
        assert_eq!(d["rows_matched"], report["matched"], "{d}");
        assert_eq!(d["rows_skipped"], report["skipped"], "{d}");
        assert_eq!(d["objects_read"], report["objects"], "{d}");
        assert_eq!(
            d["objects"].as_array().unwrap().len() as i64,
            report["objects"].as_i64().unwrap(),
            "{d}"
        );
        let per_shard: i64 = d["shards"]
            .as_object()
            .unwrap()
            .values()
            .map(|s| s["rows_inserted"].as_i64().unwrap())
            .sum();
        assert_eq!(Some(per_shard), report["inserted"].as_i64(), "{d}");
    }
    assert!(restores[0].participants.is_empty());
    assert_eq!(details(restores[0])["participants_filter"], Value::Null);
    assert_eq!(restores[1].participants, vec!["P0003", "P0010"]);
    assert_eq!(
        details(restores[1])["participants_filter"],
        json!(["P0003", "P0010"])
    );
    assert_eq!(
        details(restores[0])["from"]
            .as_str()
            .map(|s| s.parse::<chrono::DateTime<chrono::Utc>>().unwrap()),
        Some(d1)
    );

    // 7. A last run archives nothing and copies the trail.
    let last = json_of(&setup.ok(&["run"]));
    assert_eq!(last["archived"].as_i64(), Some(0), "{last}");

    let entries = trail(&map_url).await;
    assert_eq!(
        audit::verify(&entries, 1, GENESIS),
        vec![],
        "the chain verifies"
    );
    let mut by_action: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &entries {
        *by_action.entry(e.action.as_str()).or_default() += 1;
        for (what, v) in [
            ("os_user", &e.os_user),
            ("db_role", &e.db_role),
            ("host", &e.host),
            ("command", &e.command),
        ] {
            assert!(!v.trim().is_empty(), "entry {} has no {what}: {e:?}", e.seq);
        }
        assert!(
            e.reason.as_deref().is_some_and(|r| !r.trim().is_empty()),
            "entry {} has no reason: {e:?}",
            e.seq
        );
        assert_eq!(e.db_role, "postgres", "{e:?}");
    }
    assert_eq!(
        by_action,
        BTreeMap::from([
            (action::MIGRATE, 3),
            (action::ARCHIVE_DROP, 10),
            (action::ARCHIVE_MIGRATE, 1),
            (action::RESHARD_MOVE, 1),
            (action::ARCHIVE_RESTORE, 2),
        ])
    );
    let (names, copied) = archived_trail(&setup).await;
    assert!(
        !names.is_empty() && names.iter().all(|n| n.starts_with("audit/trail-")),
        "{names:?}"
    );
    assert_eq!(
        copied, entries,
        "the archive's copies are the table's entries"
    );

    // A role without INSERT on audit_log cannot append; the owner cannot change the trail.
    ensure_login_users(&stack, &[(READER, "vitalsink_reader")]).await;
    let reader = Shard::new(
        0,
        &ShardConfig {
            name: "shard0".into(),
            url: map_url.replace("user=postgres", &format!("user={READER}")),
            replicas: Vec::new(),
        },
        &DatabaseConfig::default(),
    )
    .unwrap();
    let refused = audit::append(
        &reader,
        &Record::new(action::ARCHIVE_RESTORE, json!({"test": true})).reason(Some("test")),
    )
    .await
    .unwrap_err();
    match &refused {
        vitalsink_common::Error::Postgres { source, .. } => {
            assert_eq!(source.code().map(|c| c.code()), Some("42501"), "{refused}")
        }
        other => panic!("expected SQLSTATE 42501, got {other}"),
    }
    for sql in [
        "UPDATE audit_log SET reason = 'changed' WHERE seq = 1",
        "DELETE FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log)",
        "TRUNCATE audit_log",
    ] {
        assert_eq!(
            sqlstate(&admin, sql).await.as_deref(),
            Some("42501"),
            "{sql}"
        );
    }
    assert_eq!(trail(&map_url).await, entries, "the trail is unchanged");

    // An auditor sees exactly these entries, the moves and renames included, through `trial
    // audit list` and `query`'s `audit_log`.
    let listed = Command::new(vitalsink_tests::trial_run::trial_binary())
        .arg("--config")
        .arg(&setup.config)
        .args(["audit", "list"])
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let queried = Command::new(vitalsink_tests::query_run::query_binary())
        .arg("--config")
        .arg(&setup.config)
        .args([
            "sql",
            "SELECT seq, action, os_user, reason, hash FROM audit_log ORDER BY seq",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        queried.status.success(),
        "{}",
        String::from_utf8_lossy(&queried.stderr)
    );
    for (what, out) in [("audit list", &listed.stdout), ("query", &queried.stdout)] {
        let rows: Vec<Value> = String::from_utf8_lossy(out)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(json_of)
            .collect();
        assert_eq!(rows.len(), entries.len(), "{what}");
        for (r, e) in rows.iter().zip(&entries) {
            assert_eq!(
                (r["seq"].as_i64(), r["action"].as_str(), r["hash"].as_str()),
                (Some(e.seq), Some(e.action.as_str()), Some(e.hash.as_str())),
                "{what}"
            );
            assert_eq!(r["os_user"].as_str(), Some(e.os_user.as_str()), "{what}");
            assert_eq!(r["reason"].as_str(), e.reason.as_deref(), "{what}");
        }
    }

    setup.dbs.drop_all().await;
    let db = new.url.split("dbname=").nth(1).unwrap().trim().to_string();
    connect(stack.shard_urls.last().unwrap())
        .await
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .unwrap();
}
