//! Each shard of a run archived on a tokio current-thread runtime of its own, on an OS thread
//! of its own ([`ShardRuntimes`]).
//!
//! Why: a shard's async work is its connections' tasks (tokio-postgres drives each connection
//! on a task of its own, which hands every batch of COPY messages to the task reading them)
//! and the shard's task itself. On the process's multi-thread runtime those hand-overs wake
//! tasks across worker threads; on one thread they do not. Measured on a 5 M-row chunk (2-CPU
//! VM, 9 interleaved runs each): the whole process on a current-thread runtime took a median
//! 4.68 s and 4.2–4.4 CPU-s per run, against 4.87 s and 4.6–5.0 CPU-s on the multi-thread
//! one. One runtime per shard keeps shards archived at once (`archive.shard_concurrency`) on
//! as many threads; the CPU-heavy stages (decoding, merging, encoding, hashing) run on each
//! runtime's blocking threads as before. Measured as built here (7 interleaved runs each, the
//! same chunk): 4.03 against 4.16 CPU-s a run (medians), the wall time within this VM's noise
//! (medians 4.67 and 4.66 s).
//!
//! A current-thread runtime runs its tasks only while its thread drives it, and a connection
//! opened on it (a pooled PostgreSQL connection, an object store's HTTP connection) is served
//! by a task on it. Another shard may take such a connection from a pool shared by the run
//! (the map shard's, for the audit trail), so every runtime of a run is driven until the
//! whole run has ended ([`ShardRuntimes::end`]); the connections it opened then close. The run
//! closes the pools' idle connections before that (`Shard::close_idle`), so the next run
//! (the daemon's) opens new ones on its own runtimes.

use std::future::Future;
use std::thread::JoinHandle;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::error::Result;

/// The runtimes of one run's shards. Dropped before [`ShardRuntimes::end`] (the run's future
/// dropped, as the daemon does on shutdown), it stops every shard's work at its next await
/// point, as aborting a task would.
#[derive(Debug, Default)]
pub struct ShardRuntimes {
    /// Cancelled when the run has ended: each thread stops driving its runtime.
    ended: CancellationToken,
    /// Cancelled when the run is dropped: each shard's future is dropped.
    aborted: CancellationToken,
    threads: Vec<JoinHandle<()>>,
}

impl ShardRuntimes {
    /// Runs the future `work()` makes on a new current-thread runtime on a thread named
    /// `shard-<name>`; the receiver gets its output. It gets none when the future panicked
    /// or the run was dropped first.
    ///
    /// # Errors
    /// [`crate::Error::Io`] when the runtime or the thread cannot be made.
    pub fn spawn<T, F, Fut>(&mut self, name: &str, work: F) -> Result<oneshot::Receiver<T>>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (tx, rx) = oneshot::channel();
        let (ended, aborted) = (self.ended.clone(), self.aborted.clone());
        let thread = std::thread::Builder::new()
            .name(format!("shard-{name}"))
            .spawn(move || {
                let out = rt.block_on(async {
                    tokio::select! {
                        out = work() => Some(out),
                        _ = aborted.cancelled() => None,
                    }
                });
                if let Some(out) = out {
                    let _ = tx.send(out);
                }
                // Serve the connections this runtime opened until the run has ended.
                rt.block_on(ended.cancelled());
            })?;
        self.threads.push(thread);
        Ok(rx)
    }

    /// Ends the run's runtimes (closing the connections they opened) and waits for their
    /// threads.
    pub async fn end(mut self) {
        self.ended.cancel();
        let threads = std::mem::take(&mut self.threads);
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                if t.join().is_err() {
                    tracing::error!("a shard's runtime thread panicked");
                }
            }
        })
        .await;
        if let Err(e) = joined {
            tracing::error!(error = %e, "waiting for the shards' runtime threads failed");
        }
    }
}

impl Drop for ShardRuntimes {
    fn drop(&mut self) {
        self.aborted.cancel();
        self.ended.cancel();
    }
}
