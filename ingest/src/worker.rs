//! The ingest worker: wires the consumer, the data path ([`crate::data`]) and the control
//! plane ([`crate::control`]), runs the consume loop, and shuts down.
//!
//! Shutdown (SIGTERM/SIGINT or the token): stop fetching, flush every buffer, let the
//! writers commit, commit the progress to Kafka, leave the group — all within
//! `ingest.shutdown_deadline`, after which the process exits anyway (whatever was not
//! committed is simply consumed again by the next owner; nothing is lost). A permanent error
//! ([`crate::fatal`]) shuts down the same way, then the worker leaves the consumer group and
//! waits, failed and not ready, until SIGTERM; [`run`] then returns the error (exit 1).
//!
//! The parts, in the order they run: start-up (`start`: migrations, shard map, topics,
//! writers, consumer, pipeline), the consume loop (`consume`: records, assignment changes,
//! dead letters, age flushes, progress commits, readiness, the watch for a worker left
//! without partitions in `starvation`) and shutdown (`shutdown`: drain
//! within the deadline, then the failed state after a permanent error).

mod consume;
mod shutdown;
mod start;
mod starvation;

use tokio_util::sync::CancellationToken;
use vitalsink_common::Config;

use crate::error::Result;

pub use start::{consumer_config, DEFAULT_LISTEN};

/// Runs the worker until `shutdown` is cancelled.
///
/// # Errors
/// Start-up failures: Kafka clients that cannot be built, topics that cannot be created, the
/// metrics port taken, migrations that fail permanently. Once running,
/// [`crate::Error::Permanent`] when an error that retrying cannot fix stopped it (returned at
/// SIGTERM; until then the worker is up in its failed state). Shard and broker outages are
/// not errors: writes and dead letters wait and retry.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<()> {
    // Cancelled when the shutdown deadline has passed: writers give up their retries.
    let abort = CancellationToken::new();
    let _abort_on_return = abort.clone().drop_guard();
    let Some(mut worker) = start::start(&cfg, &shutdown, abort).await? else {
        return Ok(()); // shut down while the map shard did not answer
    };
    consume::consume(&mut worker, &cfg.kafka.topic, cfg.ingest.unassigned_alarm).await;
    shutdown::drain(&mut worker, &cfg).await;
    shutdown::finish(worker, &shutdown).await
}
