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
//! `memory`). Freed memory goes back to the system at once: the binary's allocator is
//! mimalloc, which returns freed pages (glibc's malloc kept 760 MiB resident after that
//! statement was stopped).
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
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(rss) = resident_bytes() else {
            continue;
        };
        metrics::gauge!("vitalsink_query_resident_bytes").set(rss as f64);
        if rss > limit {
            let n = admission.stop_all(Stop::Memory { rss, limit });
            if n > 0 {
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
}
