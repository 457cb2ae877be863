//! Test-only crash points: with `RESHARD_CRASH_AT=<point>` the process aborts (as a
//! SIGKILL would end it) right after that point, so the crash tests can stop a move in each
//! phase. Points: `cutover` (online: cut-over records published, before all partitions
//! have passed them), `copy` (one participant copied), `verify` (all verified, before the
//! switch), `switch` (the new shard's offsets written, before the new epoch), `delete` (one
//! participant deleted from its old shard). A mock of nothing: the move really dies there.

/// Aborts the process if `RESHARD_CRASH_AT` names `point`.
pub fn point(point: &str) {
    if std::env::var("RESHARD_CRASH_AT").is_ok_and(|v| v == point) {
        tracing::warn!(point, "RESHARD_CRASH_AT: aborting");
        std::process::abort();
    }
}
