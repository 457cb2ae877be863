//! The memory guard: the server's resident set size (RSS) stays under its bound even where
//! DataFusion's memory pool does not see an allocation.
//!
//! The pool (`--memory-bytes`) bounds what operators reserve: sort buffers, hash tables, a
//! join's build side. Some allocations are not reserved: a join's build side of batches
//! without columns (`SELECT count(*) FROM measurements a, measurements b, measurements c`
//! collects N² rows of zero-column batches whose reserved size is 0; measured here: 1 GiB
//! RSS in 20 s under a 256 MiB pool, growing), the batches in flight between operators, the
//! Parquet decoder's pages. The guard reads `VmRSS` of `/proc/self/status` every
//! [`PERIOD`] and, when it exceeds `--memory-bytes` + [`PROCESS_BYTES`], stops every running
//! statement ([`super::admission::Stop::Memory`]: `RESOURCE_EXHAUSTED` to their clients, outcome
//! `memory`). The binary's allocator is mimalloc, which returns freed pages to the system
//! (glibc's malloc kept 760 MiB resident after that statement was stopped), but not always
//! within one period: RSS stayed at 257 MiB for over a second after a stop once, and the next
//! statement, a small one, was stopped too. So after a stop the RSS it leaves is a floor: while
//! RSS stays over the bound, the guard stops statements again only when RSS grows past that
//! floor by [`SETTLE_BYTES`] (new memory, not the stopped statements' memory on its way back);
//! the floor goes once RSS is under the bound again. Until then the bound is in effect the
//! floor plus [`SETTLE_BYTES`].
//!
//! Gauge: `vitalsink_query_resident_bytes`; counter: `vitalsink_query_memory_stops_total`.

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::admission::{Admission, Stop};

/// What the process holds besides the pool, bytes: the binary and its runtime (75 MiB
/// resident at start, debug build), connection and Flight buffers, the archive's Parquet
/// metadata, Argon2 verifications (19 MiB each, at most one per runtime thread), and how far
/// RSS may grow within one [`PERIOD`]. Measured in `query_server_guard`: 160-190 MiB after
/// 20 logins, hostile statements and the catalog calls (README, "Querying").
pub const PROCESS_BYTES: u64 = 192 << 20;

/// Growth over the RSS left by the last stop that counts as new memory, bytes: room for the
/// statements after a stop while the stopped ones' pages still count in RSS (a GROUP BY over
/// every participant grew RSS by more than 8 MiB over that floor in `query_server_guard`). It
/// is below the test's reaction allowance (64 MiB), so the peak stays under its bound.
pub const SETTLE_BYTES: u64 = 48 << 20;

/// How often the guard reads RSS.
pub const PERIOD: Duration = Duration::from_millis(100);

/// The process's resident set size, bytes (`VmRSS` in `/proc/self/status`).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Watches RSS against `limit` bytes until `shutdown`.
pub async fn guard(admission: Arc<Admission>, limit: u64, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // RSS right after the last stop, while it stays over the bound.
    let mut floor: Option<u64> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(rss) = resident_bytes() else {
            continue;
        };
        metrics::gauge!("vitalsink_query_resident_bytes").set(rss as f64);
        if rss <= limit {
            floor = None;
            continue;
        }
        if floor.is_some_and(|f| rss <= f + SETTLE_BYTES) {
            continue; // the stopped statements' memory, not returned yet
        }
        let n = admission.stop_all(Stop::Memory { rss, limit });
        if n > 0 {
            floor = Some(rss);
            metrics::counter!("vitalsink_query_memory_stops_total").increment(n as u64);
            tracing::warn!(
                rss_mib = rss >> 20,
                limit_mib = limit >> 20,
                stopped = n,
                "resident memory over the bound: running statements stopped"
            );
        }
    }
}
