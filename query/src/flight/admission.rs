//! Runaway work ends: at most `--max-concurrent-queries` statements run at once, later ones
//! wait up to `--queue-timeout` for a slot and are then answered `RESOURCE_EXHAUSTED`; each
//! running statement is registered under its ticket so that the client's `CancelFlightInfo`
//! (Flight's action, and Flight SQL's older `CancelQuery`) can stop it.
//!
//! Stopping is dropping: the result stream of a statement is dropped when it is cancelled,
//! times out or the client goes away, and with it DataFusion's operators (their spawned
//! tasks are aborted on drop), the archive's readers, and each shard's reader (which sees
//! its channel closed and drops its connection, ending the shard's query).
//!
//! The memory guard ([`super::memory`]) stops every running statement the same way, with
//! [`Stop::Memory`] as the reason.
//!
//! Gauges: `vitalsink_query_running` (statements holding a slot), `vitalsink_query_queued`
//! (statements waiting for one).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::error::Error;

/// Default of `--max-concurrent-queries`: 4 (each statement already runs on every core; more
/// at once only share the cores and the memory pool thinner).
pub const DEFAULT_MAX_CONCURRENT: usize = 4;
/// Default of `--queue-timeout`: 30 s.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a running statement was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Its client cancelled it.
    Client,
    /// The server's resident memory passed its bound (bytes).
    Memory {
        /// Resident set size seen, bytes.
        rss: u64,
        /// The bound, bytes.
        limit: u64,
    },
}

struct Running {
    user: String,
    ticket: Vec<u8>,
    token: CancellationToken,
    why: Arc<OnceLock<Stop>>,
}

impl Running {
    fn stop(&self, why: Stop) {
        let _ = self.why.set(why);
        self.token.cancel();
    }
}

/// The slots and the running statements of one server.
pub struct Admission {
    slots: Arc<Semaphore>,
    max: usize,
    queue_timeout: Duration,
    next: AtomicU64,
    running: Mutex<HashMap<u64, Running>>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("max", &self.max)
            .field("queue_timeout", &self.queue_timeout)
            .finish()
    }
}

/// A running statement's registration; dropping it unregisters it.
pub struct Registration {
    admission: Arc<Admission>,
    id: u64,
    token: CancellationToken,
    why: Arc<OnceLock<Stop>>,
}

impl Registration {
    /// Cancelled when the statement is stopped ([`Registration::error`] says why).
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// The error a stopped statement ends with: [`Error::Cancelled`] for its client,
    /// [`Error::Memory`] for the memory guard.
    pub fn error(&self) -> Error {
        match self.why.get() {
            Some(Stop::Memory { rss, limit }) => Error::Memory(format!(
                "the server's resident memory reached {} MiB, over its bound of {} MiB \
                 (--memory-bytes plus the process's own); every running statement was stopped",
                rss >> 20,
                limit >> 20
            )),
            _ => Error::Cancelled,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut r) = self.admission.running.lock() {
            r.remove(&self.id);
        }
    }
}

/// A slot; dropping it frees the slot.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!("vitalsink_query_running").decrement(1.0);
    }
}

impl Admission {
    /// `max` slots (at least 1), waited for at most `queue_timeout`.
    pub fn new(max: usize, queue_timeout: Duration) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            queue_timeout,
            next: AtomicU64::new(0),
            running: Mutex::new(HashMap::new()),
        })
    }

    /// Waits for a slot.
    ///
    /// # Errors
    /// [`Error::Busy`] when none freed up within the queue timeout.
    pub async fn admit(&self) -> Result<Slot, Error> {
        metrics::gauge!("vitalsink_query_queued").increment(1.0);
        let got =
            tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await;
        metrics::gauge!("vitalsink_query_queued").decrement(1.0);
        match got {
            Ok(Ok(permit)) => {
                metrics::gauge!("vitalsink_query_running").increment(1.0);
                Ok(Slot { _permit: permit })
            }
            _ => Err(Error::Busy {
                running: self.max,
                waited: self.queue_timeout,
            }),
        }
    }

    /// Registers `user`'s statement of `ticket` (the bytes of the Flight ticket it runs
    /// under) as running.
    pub fn register(self: &Arc<Self>, user: &str, ticket: &[u8]) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        let why = Arc::new(OnceLock::new());
        if let Ok(mut r) = self.running.lock() {
            r.insert(
                id,
                Running {
                    user: user.to_string(),
                    ticket: ticket.to_vec(),
                    token: token.clone(),
                    why: why.clone(),
                },
            );
        }
        Registration {
            admission: self.clone(),
            id,
            token,
            why,
        }
    }

    /// Stops every running statement for `why`; returns how many.
    pub fn stop_all(&self, why: Stop) -> usize {
        let Ok(r) = self.running.lock() else {
            return 0;
        };
        for run in r.values() {
            run.stop(why);
        }
        r.len()
    }

    /// Cancels `user`'s running statements under any of `tickets` (a user cancels only their
    /// own); returns how many.
    pub fn cancel(&self, user: &str, tickets: &[Vec<u8>]) -> usize {
        let Ok(r) = self.running.lock() else {
            return 0;
        };
        let mut n = 0;
        for run in r.values() {
            if run.user == user && tickets.contains(&run.ticket) {
                run.stop(Stop::Client);
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_queue_then_refuse_and_cancel_is_per_user() {
        let a = Admission::new(1, Duration::from_millis(50));
        let first = a.admit().await.unwrap();
        assert!(matches!(
            a.admit().await,
            Err(Error::Busy { running: 1, .. })
        ));
        drop(first);
        let _second = a.admit().await.unwrap();

        let r = a.register("alice", b"t1");
        assert_eq!(a.cancel("bob", &[b"t1".to_vec()]), 0);
        assert!(!r.token().is_cancelled());
        assert_eq!(a.cancel("alice", &[b"t2".to_vec(), b"t1".to_vec()]), 1);
        assert!(r.token().is_cancelled());
        assert!(matches!(r.error(), Error::Cancelled));
        drop(r);
        assert_eq!(a.cancel("alice", &[b"t1".to_vec()]), 0);
        let r = a.register("bob", b"t3");
        assert_eq!(
            a.stop_all(Stop::Memory {
                rss: 2 << 30,
                limit: 1 << 30
            }),
            1
        );
        assert!(matches!(r.error(), Error::Memory(m) if m.contains("2048 MiB")));
    }
}
