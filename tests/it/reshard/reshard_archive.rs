//! Issue 12, point 5: the archive across a shard move. Rows archived before the move stay in
//! the archive (counted once); `restore` afterwards writes each participant's rows to the
//! shard the map names now, not to the one the object came from; `verify` still passes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;
use vitalsink_common::routing::ShardRouter;
use vitalsink_tests::archive_run::{aged_start, db_totals, load, ArchiveSetup, ROUND_TRIP};
use vitalsink_tests::ingest_run::extra_shard;
use vitalsink_tests::{connect, Stack};

#[tokio::test(flavor = "multi_thread")]
async fn restore_after_a_move_writes_to_the_shard_the_map_names_now() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let setup = ArchiveSetup::new(&stack, "t_move_arch", false, "").await;
    let want = load(&setup.dbs.shards, ROUND_TRIP).await;
    setup.ok(&["run"]);
    let left_in_db = db_totals(&setup.dbs.shards).await;
    assert!(
        left_in_db.values().map(|t| t.0).sum::<i64>() < want.values().map(|t| t.0).sum::<i64>()
    );

    // Append shard2 with reshard, then point the archiver at the three shards.
    let new = extra_shard(&stack, 2).await;
    let reshard = vitalsink_tests::ingest_run::ingest_binary().with_file_name("reshard");
    let out = Command::new(reshard)
        .arg("--config")
        .arg(&setup.config)
        .args([
            "add-shard",
            "--reason",
            "test: shard-set change",
            "--offline",
            "--name",
            "shard2",
            "--url",
            &new.url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut toml = std::fs::read_to_string(&setup.config).unwrap();
    toml.push_str(&format!(
        "[[shards]]\nname = \"shard2\"\nurl = \"{}\"\n",
        new.url
    ));
    std::fs::write(&setup.config, toml).unwrap();
    let mut three = setup.dbs.shards.clone();
    three.push(new.clone());

    // Everything archived comes back, each participant on its shard of the new epoch.
    let from = (aged_start() - chrono::Duration::days(1)).to_rfc3339();
    let to = chrono::Utc::now().to_rfc3339();
    let restored: serde_json::Value =
        serde_json::from_str(&setup.ok(&["restore", "--from", &from, "--to", &to])).unwrap();
    assert!(restored["inserted"].as_i64().unwrap() > 0, "{restored}");
    assert_eq!(
        db_totals(&three).await,
        want,
        "database = source after the restore"
    );
    let router = ShardRouter::new(3);
    let mut misplaced: BTreeMap<String, usize> = BTreeMap::new();
    for (i, s) in three.iter().enumerate() {
        for r in connect(&s.url)
            .await
            .query("SELECT DISTINCT participant_id FROM measurements", &[])
            .await
            .unwrap()
        {
            let pid: String = r.get(0);
            if router.shard_for(&pid) != i {
                misplaced.insert(pid, i);
            }
        }
    }
    assert!(
        misplaced.is_empty(),
        "participants off their routed shard: {misplaced:?}"
    );
    let moved_here: i64 = connect(&new.url)
        .await
        .query_one(
            "SELECT count(DISTINCT participant_id) FROM measurements",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(moved_here > 0, "some participants live on the new shard");
    setup.ok(&["verify"]);
    setup.dbs.drop_all().await;
}
