//! Which end-to-end tests may run at the same time (issue 29).
//!
//! All end-to-end tests are one binary (`tests/it/main.rs`), and libtest runs its tests on
//! `RUST_TEST_THREADS` threads (default: one per core; `dev/test` sets the count). Most tests
//! only add things of their own to the shared local stack (a fresh database on every shard,
//! a unique topic, object prefix and consumer group, ports picked by the kernel), so they run
//! side by side. A few take a shared thing away from everyone while they run: they stop shard
//! 1 of the stack (`dev/stack stop-shard 1`), promote its standby in its place, or assert a
//! wall-clock bound that a busy CPU breaks. Those hold [`exclusive`]; every other test that
//! uses the plain stack holds [`shared`] for its whole body, so an exclusive test runs alone
//! and nothing starts while it runs.
//!
//! The lock is process-wide (one `tokio::sync::RwLock`, fair: a waiting exclusive test holds
//! back tests that start after it, so it is not starved) and held across each test's own
//! tokio runtime. It does not coordinate two test processes: run one suite at a time against
//! one stack. Take it once per test, as the first statement (a second `shared` in the same
//! test behind a waiting `exclusive` would deadlock).

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

static STACK: RwLock<()> = RwLock::const_new(());

/// Held by a test that uses the shared stack without taking anything away from other tests;
/// many at a time. Bind it for the whole test: `let _stack = stack_lock::shared().await;`.
pub async fn shared() -> RwLockReadGuard<'static, ()> {
    STACK.read().await
}

/// Held by a test that disturbs the shared stack (stops a shard, promotes a standby) or
/// asserts a timing that needs the CPU to itself: waits until every running test has ended,
/// then runs alone. Bind it for the whole test: `let _stack = stack_lock::exclusive().await;`.
pub async fn exclusive() -> RwLockWriteGuard<'static, ()> {
    STACK.write().await
}
