//! The drop's COMMIT (archiver/src/state/commit.rs) is over when a second connection sees the
//! transaction committed and unlocked, before its answer. On shard0 of the real stack, each
//! COMMIT slowed by a deferred constraint trigger that sleeps (so that the second connection
//! looks many times while the commit runs):
//!
//! - a transaction that drops a table and commits: `commit` returns Ok, and a third session
//!   then finds the table gone and the transaction committed;
//! - a transaction whose deferred trigger fails at COMMIT: `commit` returns the COMMIT's error
//!   although the second connection looked all along (the transaction is never `committed`),
//!   and the table it would have dropped is still there;
//! - without a second connection `commit` is a plain COMMIT (both cases again).
//!
//! Control: a watcher that took a transaction still running (its trigger sleeping inside the
//! COMMIT) for over returns Ok for the failing COMMIT, and the test fails at "an aborted
//! COMMIT reported as committed" (seen, with `pg_xact_status(..) IS NOT NULL OR ..`). Not
//! covered: the lock half of the look matters under synchronous replication only (the commit
//! log says committed while the backend still waits for the standby, xact.c), and this stack's
//! shards have no synchronous standby.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use vitalsink_archiver::state::commit;
use vitalsink_tests::{connect, ShardDbs, Stack};

/// How long the deferred trigger sleeps inside each COMMIT (s): 60 looks of the watcher.
const COMMIT_SLEEP_S: f64 = 0.3;

/// A table `t` whose rows fire a deferred trigger at COMMIT that sleeps [`COMMIT_SLEEP_S`] and
/// then fails when the row's `fail` is true; and a table `victim` for the drop.
async fn schema(c: &tokio_postgres::Client) {
    c.batch_execute(&format!(
        "CREATE TABLE t (fail boolean NOT NULL);
         CREATE FUNCTION slow_check() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           PERFORM pg_sleep({COMMIT_SLEEP_S});
           IF NEW.fail THEN RAISE EXCEPTION 'deferred check failed at commit'; END IF;
           RETURN NULL;
         END $$;
         CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON t DEFERRABLE INITIALLY DEFERRED
           FOR EACH ROW EXECUTE FUNCTION slow_check();"
    ))
    .await
    .unwrap();
}

/// Creates `victim` (100,000 rows), then in one transaction on `c` drops it and inserts a row
/// of `t` with `fail`; commits through [`commit::commit`] with `watch`. Returns the result
/// and the transaction's id.
async fn drop_and_commit(
    c: &tokio_postgres::Client,
    watch: Option<&tokio_postgres::Client>,
    fail: bool,
) -> (Result<(), String>, String) {
    c.batch_execute(
        "CREATE TABLE victim AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 100000) g",
    )
    .await
    .unwrap();
    c.batch_execute("BEGIN; DROP TABLE victim").await.unwrap();
    c.execute("INSERT INTO t VALUES ($1)", &[&fail])
        .await
        .unwrap();
    let xid: String = c
        .query_one("SELECT pg_current_xact_id()::text", &[])
        .await
        .unwrap()
        .get(0);
    let watch = commit::Watch::on(c, watch, "shard0").await.unwrap();
    let res = commit::commit(c.batch_execute("COMMIT"), watch, "shard0")
        .await
        .map_err(|e| e.to_string());
    (res, xid)
}

/// What a third session sees: (victim still there, the transaction's `pg_xact_status`).
async fn seen(c: &tokio_postgres::Client, xid: &str) -> (bool, String) {
    let row = c
        .query_one(
            "SELECT to_regclass('victim') IS NOT NULL, pg_xact_status($1::text::xid8)",
            &[&xid],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_drop_is_over_when_committed_and_an_aborted_commit_fails() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let dbs = ShardDbs::create(&stack, "t_drop_commit").await;
    let url = &dbs.shards[0].url;
    let (a, b, third) = (connect(url).await, connect(url).await, connect(url).await);
    schema(&a).await;

    for watch in [Some(&b), None] {
        let (res, xid) = drop_and_commit(&a, watch, false).await;
        assert_eq!(res, Ok(()), "watch {}", watch.is_some());
        // The connection answers its COMMIT before its next statement.
        a.batch_execute("SELECT 1").await.unwrap();
        assert_eq!(
            seen(&third, &xid).await,
            (false, "committed".to_string()),
            "after a committed drop (watch {})",
            watch.is_some()
        );

        let (res, xid) = drop_and_commit(&a, watch, true).await;
        let err = res.expect_err("an aborted COMMIT reported as committed");
        assert!(
            err.contains("deferred check failed at commit"),
            "the COMMIT's own error: {err}"
        );
        // PostgreSQL sends the error before it records the abort (postgres.c: the error
        // report, then AbortCurrentTransaction); the next statement's answer comes after it.
        a.batch_execute("SELECT 1").await.unwrap();
        assert_eq!(
            seen(&third, &xid).await,
            (true, "aborted".to_string()),
            "after a failed commit (watch {})",
            watch.is_some()
        );
        a.batch_execute("DROP TABLE victim").await.unwrap();
    }
    dbs.drop_all().await;
}
