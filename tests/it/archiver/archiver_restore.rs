//! Issue 4: `restore --from --to [--participant …]` brings an archived time range back into
//! the shards exactly once: the first restore inserts exactly the original rows of the
//! window, a second identical one inserts nothing, an overlapping one only what is missing,
//! and the restored range is not archived a second time by the next `run`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::Duration;
use vitalsink_tests::archive_run::{
    aged_start, assert_totals_eq, load, parquet_objects, window_totals, ArchiveSetup, ROUND_TRIP,
};
use vitalsink_tests::Stack;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_brings_a_range_back_exactly_once() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let setup = ArchiveSetup::new(&stack, "t_arch_restore", false, "").await;
    load(&setup.dbs.shards, ROUND_TRIP).await;
    let shards = &setup.dbs.shards;
    let (d1, d3, d4) = (
        aged_start() + Duration::days(1),
        aged_start() + Duration::days(3),
        aged_start() + Duration::days(4),
    );
    let want_13 = window_totals(shards, d1, d3).await;
    let want_34 = window_totals(shards, d3, d4).await;
    let rows_13: i64 = want_13.values().map(|t| t.0).sum();
    assert!(rows_13 > 0);
    setup.ok(&["run"]);
    assert!(window_totals(shards, d1, d4).await.is_empty(), "archived");
    let objects = parquet_objects(&setup.root).await;

    let (f, t) = (d1.to_rfc3339(), d3.to_rfc3339());
    let first = json(&setup.ok(&["restore", "--from", &f, "--to", &t]));
    assert_eq!(first["inserted"].as_i64(), Some(rows_13), "{first}");
    assert_eq!(first["skipped"].as_i64(), Some(0), "{first}");
    assert_totals_eq(
        &window_totals(shards, d1, d3).await,
        &want_13,
        "after the first restore",
    );

    let second = json(&setup.ok(&["restore", "--from", &f, "--to", &t]));
    assert_eq!(second["inserted"].as_i64(), Some(0), "{second}");
    assert_eq!(second["skipped"].as_i64(), Some(rows_13), "{second}");
    assert_totals_eq(
        &window_totals(shards, d1, d3).await,
        &want_13,
        "after the second restore",
    );

    // Overlapping window, two participants: only their day-3 rows are new.
    let who = ["P0003", "P0010"];
    let t4 = d4.to_rfc3339();
    let d2 = (d1 + Duration::days(1)).to_rfc3339();
    let third = json(&setup.ok(&[
        "restore",
        "--from",
        &d2,
        "--to",
        &t4,
        "--participant",
        who[0],
        "--participant",
        who[1],
    ]));
    let want_new: i64 = who.iter().map(|p| want_34[*p].0).sum();
    assert_eq!(third["inserted"].as_i64(), Some(want_new), "{third}");
    let got_34 = window_totals(shards, d3, d4).await;
    assert_eq!(
        got_34.len(),
        2,
        "only the two participants in day 3: {got_34:?}"
    );
    for p in who {
        assert_eq!(got_34.get(p), want_34.get(p), "{p} day 3");
    }
    assert_totals_eq(
        &window_totals(shards, d1, d3).await,
        &want_13,
        "days 1-2 unchanged",
    );

    // The restored range is held: the next run archives nothing and writes no object.
    let run = json(&setup.ok(&["run"]));
    assert_eq!(run["archived"].as_i64(), Some(0), "{run}");
    assert!(run["held"].as_i64() > Some(0), "{run}");
    assert_eq!(parquet_objects(&setup.root).await, objects);
    setup.dbs.drop_all().await;
}
