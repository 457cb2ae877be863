//! A chunk's SHARE lock, held on a connection of its own from before its export's snapshot
//! until the transaction that drops it, so that the drop needs no re-count of the chunk.
//!
//! SHARE conflicts with the ROW EXCLUSIVE lock every INSERT, UPDATE and DELETE takes, and not
//! with a SELECT's ACCESS SHARE (PostgreSQL docs, "Explicit Locking", table "Conflicting Lock
//! Modes"): the export's readers and analysts' queries go on, no row of the chunk can change.
//! The lock comes first and the export's REPEATABLE READ snapshot after it (PostgreSQL docs,
//! LOCK: a transaction that must see the rows it locked takes the lock before its first
//! query; a writer keeps its lock until its commit is visible to new snapshots), so what the
//! export reads is what the chunk holds until the guard's transaction ends. That transaction
//! then drops the chunk ([`crate::state::attempt`]): ACCESS EXCLUSIVE on top, `DROP`, the
//! `dropped` log row, commit. Until the commit, every row is in the database.
//!
//! A late row for the chunk (older than `archive.older_than`) waits while the chunk is
//! exported and verified, seconds, where before it waited for the drop alone. It must not wait
//! through the drop: by then its INSERT has locked rows of TimescaleDB's catalog for the chunk
//! (a tuple lock, so it has a transaction id) and waits for the chunk, and `DROP` deletes or
//! updates those rows, so the two deadlock (seen on this stack with psql: "deadlock detected",
//! the drop waiting for the insert's transaction, the insert for the chunk's lock). So before the drop, [`Guard::has_waiters`]
//! looks for a session waiting on the chunk; if there is one, the guard lets go (ROLLBACK),
//! the late row goes in, and the drop takes the re-checking path, which finds the chunk changed
//! and leaves it for the next run, as it did for a late row before. A writer that arrives
//! between that look and the drop's commit (milliseconds) meets the same deadlock as it would
//! have met the old drop: PostgreSQL aborts one of the two, the drop (the attempt stays
//! `verified`, re-checked next run) or the insert (ingest retries its batch).
//!
//! When the lock cannot be had in [`LOCK_TIMEOUT`] (a writer holds the chunk), or the shard's
//! schema lacks the function, the export goes on without it and the drop re-checks the chunk's
//! count and ts range under its own lock instead, as it does for an attempt adopted from an
//! earlier run.

use std::time::Duration;

use crate::export::catalog::Chunk;

/// How long taking a chunk's lock may wait, both the SHARE lock here and the drop's ACCESS
/// EXCLUSIVE lock ([`crate::state::attempt`]): ingest writing late rows into the chunk, or a
/// query reading it, holds conflicting locks.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Takes `LOCK TABLE <chunk> IN SHARE MODE` (a quoted `schema.name`) until the end of the
/// transaction. `vitalsink_share_lock_chunk` is migration 10's SECURITY DEFINER function, its
/// check as migration 11 rewrote it: it refuses any relation that is not a chunk of
/// `measurements` (schemas/ROLES.md).
const SHARE_LOCK_SQL: &str = "SELECT vitalsink_share_lock_chunk($1::text::regclass)";

/// A connection to a shard that holds at most one chunk's SHARE lock, in a transaction that
/// stays open until the drop ends it ([`Guard::ended`]) or [`Guard::release`] does.
///
/// Dropped while its transaction is open (a run aborted at shutdown), it closes its
/// connection rather than hand it back to the pool: the server then ends the transaction and
/// the lock with it.
#[derive(Debug)]
pub struct Guard {
    client: Option<deadpool_postgres::Object>,
    /// The chunk (`schema.name`) whose lock the open transaction holds; `None` with no
    /// transaction open.
    holds: Option<String>,
}

impl Guard {
    /// A guard on `client`, holding nothing.
    pub fn new(client: deadpool_postgres::Object) -> Self {
        Self {
            client: Some(client),
            holds: None,
        }
    }

    /// The connection (for the drop's statements).
    ///
    /// # Panics
    /// Never: the connection is only taken out when the guard is dropped.
    #[allow(clippy::expect_used)]
    pub fn client(&self) -> &tokio_postgres::Client {
        self.client
            .as_deref()
            .expect("a guard keeps its connection until dropped")
    }

    /// The connection, mutably (for a transaction of its own when the guard holds nothing).
    ///
    /// # Panics
    /// Never, as [`Self::client`].
    #[allow(clippy::expect_used)]
    pub fn client_mut(&mut self) -> &mut tokio_postgres::Client {
        self.client
            .as_deref_mut()
            .expect("a guard keeps its connection until dropped")
    }

    /// Whether the open transaction holds `chunk`'s SHARE lock.
    pub fn holds(&self, chunk: &Chunk) -> bool {
        self.holds.as_deref() == Some(chunk.qualified().as_str())
    }

    /// Begins a transaction and takes `chunk`'s SHARE lock, waiting at most [`LOCK_TIMEOUT`];
    /// returns whether it holds it. A guard that holds another chunk releases it first.
    /// Failing to get the lock is not an error: the export then goes on without it (logged).
    pub async fn lock(&mut self, shard: &str, chunk: &Chunk) -> bool {
        self.release(shard).await;
        let sql = format!(
            "BEGIN; SET LOCAL lock_timeout = '{}ms'",
            LOCK_TIMEOUT.as_millis()
        );
        let c = self.client();
        let res = match c.batch_execute(&sql).await {
            Ok(()) => c
                .execute(SHARE_LOCK_SQL, &[&chunk.ident()])
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        match res {
            Ok(()) => {
                self.holds = Some(chunk.qualified());
                true
            }
            Err(e) => {
                tracing::info!(shard, chunk = %chunk.name, error = %vitalsink_common::error::describe_postgres(&e), "no SHARE lock on the chunk; exporting without it, the drop re-checks the chunk");
                let _ = self.client().batch_execute("ROLLBACK").await;
                false
            }
        }
    }

    /// Ends the open transaction, if any, with ROLLBACK (the export failed, or the drop did
    /// not happen): the lock is released, nothing was changed. A failure is only logged.
    pub async fn release(&mut self, shard: &str) {
        if self.holds.take().is_some() {
            if let Err(e) = self.client().batch_execute("ROLLBACK").await {
                tracing::warn!(shard, error = %vitalsink_common::error::describe_postgres(&e), "ending a chunk lock's transaction failed");
            }
        }
    }

    /// Whether a session waits for a lock on `chunk` (`pg_locks`, readable by every role): a
    /// late writer, which the drop would deadlock with (module docs).
    ///
    /// # Errors
    /// [`crate::Error::Postgres`].
    pub async fn has_waiters(&self, shard: &str, chunk: &Chunk) -> crate::Result<bool> {
        Ok(self
            .client()
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks
                                 WHERE locktype = 'relation' AND NOT granted
                                   AND relation = $1::text::regclass)",
                &[&chunk.ident()],
            )
            .await
            .map_err(crate::error::pg(shard))?
            .get(0))
    }

    /// Records that the open transaction ended (committed or rolled back by the caller).
    pub fn ended(&mut self) {
        self.holds = None;
    }

    /// Takes the connection out of the pool and lets it go, for a connection that may still
    /// owe the answer to a statement (a drop's COMMIT, [`crate::state::commit`]): the next
    /// user of a pooled connection would wait for that answer. tokio-postgres closes the
    /// connection (Terminate) once the answer has come, or the process's exit does.
    pub fn retire(mut self) {
        if let Some(c) = self.client.take() {
            drop(deadpool_postgres::Object::take(c));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.holds.is_some() {
            if let Some(c) = self.client.take() {
                // Out of the pool: closing the connection ends the transaction on the server.
                drop(deadpool_postgres::Object::take(c));
            }
        }
    }
}
