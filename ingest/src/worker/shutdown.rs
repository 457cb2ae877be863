//! Shutdown (SIGTERM/SIGINT or a permanent error): flush within the deadline, commit, leave
//! the group; after a permanent error, the failed state until SIGTERM.

use rdkafka::consumer::Consumer;
use tokio_util::sync::CancellationToken;
use vitalsink_common::Config;

use super::consume::{commit_progress, on_assignment};
use super::start::Worker;
use crate::error::{Error, Result};

/// Applies the assignment changes still queued, flushes every buffer, closes the writers'
/// channels and waits for them, all within `ingest.shutdown_deadline`; then commits the
/// progress to Kafka and leaves the group. Past the deadline the writers are aborted
/// instead (what was not committed is consumed again by the next owner; nothing is lost).
pub(super) async fn drain(w: &mut Worker, cfg: &Config) {
    w.ready.set(Some("shutting down".into()));
    tracing::info!("shutdown: flushing");
    let Worker {
        ctl,
        pipeline,
        events,
        ..
    } = &mut *w;
    let drain = async {
        while let Ok(a) = events.try_recv() {
            on_assignment(ctl, pipeline, a).await;
        }
        pipeline.flush_all().await;
        pipeline.close();
        ctl.fleet.join().await;
    };
    if tokio::time::timeout(cfg.ingest.shutdown_deadline, drain)
        .await
        .is_err()
    {
        w.abort.cancel();
        tracing::warn!(deadline = ?cfg.ingest.shutdown_deadline, "shutdown deadline passed; unflushed rows will be consumed again");
    } else {
        commit_progress(
            &w.consumer,
            &cfg.kafka.topic,
            &w.progress,
            &w.pipeline.assigned(),
        );
        w.consumer.unsubscribe();
        tracing::info!("shutdown complete");
    }
}

/// `Ok` unless a permanent error stopped the worker. Then the worker is failed: its
/// partitions go to the other workers of the group (closing the consumer leaves it), and it
/// stays up, not ready, so that `/readyz` and `/metrics` show the error until an operator has
/// fixed the cause and stops it — a restart loop would be a retry of what retrying cannot
/// fix. Kafka Connect keeps a failed task the same way.
///
/// # Errors
/// [`Error::Permanent`], once `shutdown` is cancelled.
pub(super) async fn finish(w: Worker, shutdown: &CancellationToken) -> Result<()> {
    let Some(e) = w.fatal.first() else {
        return Ok(());
    };
    drop(w.consumer);
    crate::metrics::failed();
    w.ready.set(Some(format!("failed: {e}")));
    tracing::error!(error = %e, "worker failed: consumption stopped and its partitions released; /metrics and /readyz stay up until SIGTERM");
    shutdown.cancelled().await;
    Err(Error::Permanent(e))
}
