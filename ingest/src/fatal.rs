//! How a permanent error stops the worker: loudly, once, with the error named.
//!
//! Every retry loop of the worker ([`crate::data::writer::ShardWriter::run`], the
//! resume-offset query of a rebalance in [`crate::control::rebalance`], the dead-letter
//! producer in [`crate::data::dlq`], the start-up migrations in [`crate::worker`]) asks
//! [`vitalsink_common::retry`] whether an error is transient. A permanent one (permission
//! denied, a missing table, a constraint, a wrong password, a topic the producer may not
//! write) is raised here: it is logged at error level, counted in
//! `vitalsink_ingest_permanent_errors_total{stage, kind}`, and the worker shuts down as on
//! SIGTERM — the other shards flush, nothing uncommitted is claimed — then leaves the
//! consumer group and stays up, failed (`vitalsink_ingest_failed` = 1, `/readyz` 503
//! `failed: <error>`), until SIGTERM ends it with exit code 1. Kafka Connect does the same
//! with a task whose error tolerance is `none` (it stops in state FAILED instead of skipping
//! records, and stays so until restarted).

use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// The first permanent error raised, and the token that stops the worker.
#[derive(Debug, Clone)]
pub struct Fatal {
    stop: CancellationToken,
    first: Arc<Mutex<Option<String>>>,
}

impl Fatal {
    /// Raising cancels `stop`.
    pub fn new(stop: CancellationToken) -> Self {
        Self {
            stop,
            first: Arc::new(Mutex::new(None)),
        }
    }

    /// Records a permanent error of `stage` (`write`, `resume`, `dead_letter`, `migrate`,
    /// `statuses`, `rewind`, …) of machine kind `kind` (a SQLSTATE such as `42501`, or a Kafka
    /// error code name), logs it at error level, counts it and stops the worker.
    pub fn raise(&self, stage: &'static str, kind: &str, error: &dyn std::fmt::Display) {
        crate::metrics::permanent_error(stage, kind);
        tracing::error!(stage, kind, error = %error, "permanent error: retrying cannot fix it; stopping the worker");
        if let Ok(mut g) = self.first.lock() {
            g.get_or_insert_with(|| format!("{stage}: {error}"));
        }
        self.stop.cancel();
    }

    /// The first error raised, if any.
    pub fn first(&self) -> Option<String> {
        self.first.lock().ok().and_then(|g| g.clone())
    }
}
