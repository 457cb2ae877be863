//! `reshard plan` (issue 12, first step): over real shards written by a real worker, which
//! participants a change moves — checked against the Python reference of `schemas/ROUTING.md`
//! (the documented rule, not our Rust) — and the changes jump hash cannot honour, refused at
//! once with nothing changed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;
use vitalsink_tests::ingest_run::{extra_shard, loaded, IngestSetup};
use vitalsink_tests::routing_reference::python_routes;
use vitalsink_tests::Stack;

/// The `reshard` binary next to the test's `ingest`.
fn reshard(args: &[&str]) -> std::process::Output {
    let bin = vitalsink_tests::ingest_run::ingest_binary().with_file_name("reshard");
    assert!(
        bin.exists(),
        "{} missing: dev/test builds it",
        bin.display()
    );
    Command::new(bin).args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_moves_what_the_documented_routing_says_and_refuses_the_rest() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let (dbs, setup, dir, data) = loaded(&stack, "t_plan").await;
    let cfg = setup.config.to_str().unwrap();

    // Append a third shard (an empty database on the second server).
    let new_url = extra_shard(&stack, 2).await.url;
    let out = reshard(&[
        "--config",
        cfg,
        "plan",
        "add-shard",
        "--name",
        "shard2",
        "--url",
        &new_url,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let participants: Vec<&String> = data.expected.keys().collect();
    let before = python_routes(&participants, 2);
    let after = python_routes(&participants, 3);
    let want: BTreeMap<String, (String, i64)> = data
        .expected
        .iter()
        .filter(|(p, _)| after[*p] != before[*p])
        .map(|(p, (rows, _))| (p.clone(), (format!("shard{}", before[p]), *rows)))
        .collect();
    let got: BTreeMap<String, (String, i64)> = plan["moves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(
                m["to"], "shard2",
                "jump hash moves only to the new shard: {m}"
            );
            (
                m["participant_id"].as_str().unwrap().to_string(),
                (
                    m["from"].as_str().unwrap().to_string(),
                    m["rows"].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got, want, "moving participants, their old shard and rows");
    let share = want.len() as f64 / participants.len() as f64;
    assert!((0.25..0.42).contains(&share), "about 1/3 move: {share}");
    assert_eq!(plan["rows_seen"].as_i64().unwrap(), data.readings);

    // Remove the last shard: all its participants go to shard0.
    let out = reshard(&[
        "--config",
        cfg,
        "plan",
        "remove-shard",
        "--name",
        "shard1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let on_last = before.values().filter(|&&s| s == 1).count();
    assert_eq!(plan["moves"].as_array().unwrap().len(), on_last);

    // Refused at once, naming why; the map is unchanged.
    let map_before = reshard(&["--config", cfg, "map"]).stdout;
    for (args, why) in [
        (
            vec!["plan", "remove-shard", "--name", "shard0"],
            "only remove the last shard",
        ),
        (
            vec![
                "plan",
                "add-shard",
                "--name",
                "shard1",
                "--url",
                new_url.as_str(),
            ],
            "already in the shard map",
        ),
    ] {
        let mut a = vec!["--config", cfg];
        a.extend(args);
        let out = reshard(&a);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(why), "{why}: {stderr}");
    }
    // A stale configuration is refused as the workers refuse it.
    let mut three = dbs.shards.clone();
    three.push(vitalsink_common::config::ShardConfig {
        name: "shard2".into(),
        url: new_url.clone(),
        replicas: Vec::new(),
    });
    let stale = IngestSetup::for_group(&setup, &three, dir.path());
    let out = reshard(&[
        "--config",
        stale.config.to_str().unwrap(),
        "plan",
        "remove-shard",
        "--name",
        "shard2",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to write"));
    assert_eq!(
        reshard(&["--config", cfg, "map"]).stdout,
        map_before,
        "nothing changed"
    );
    dbs.drop_all().await;
}
