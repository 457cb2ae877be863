//! The COMMIT of a chunk's drop, over as soon as the transaction is over for every other
//! session, rather than when the committing backend has deleted the dropped files.
//!
//! PostgreSQL deletes a dropped relation's files in the committing backend *after* the commit:
//! `CommitTransaction` (src/backend/access/transam/xact.c) writes and flushes the commit
//! record, marks the transaction committed in the commit log, waits for synchronous
//! replication if configured, ends it in the proc array and releases its locks, and only then
//! calls `smgrDoPendingDeletes`, "since this may take many seconds". Its `CommandComplete`
//! comes after that. Deleting a 5 M-row chunk's files (truncating them, which evicts their
//! cached pages and frees their blocks) took 300 ms of a 3 s `archiver run` on the benchmark's
//! host, a tenth of the run, spent after the drop is durable, visible and unlocked.
//!
//! [`commit`] sends the COMMIT and, on a second connection to the same shard, looks every
//! [`POLL`] whether the transaction is committed (`pg_xact_status`) and has released its
//! locks (its `transactionid` lock has left `pg_locks`). Both hold exactly when the backend has
//! reached the file deletion: the commit is then as final as its `CommandComplete` would say.
//! The answer that follows is left to the connection (a later statement on it waits for it).
//! If the run ends first, the backend finishes deleting the files, finds the connection
//! closed and exits.

use std::future::Future;
use std::time::Duration;

use crate::error::{pg, Result};

/// How often the second connection looks whether the transaction is over: one statement
/// (~0.2 ms on an idle shard) per 5 ms, for the few hundred ms the deletion takes.
pub const POLL: Duration = Duration::from_millis(5);

/// The open transaction's id (`xid8` as text); assigns one if it has none yet.
const XID_SQL: &str = "SELECT pg_current_xact_id()::text";

/// Whether the transaction `$1` (`xid8` as text) is committed and holds no lock any more: its
/// own `transactionid` lock goes with its other locks, after the proc array no longer shows it
/// running (xact.c `CommitTransaction`). NULL (an xid too old for the commit log) counts as no.
const OVER_SQL: &str = "SELECT pg_xact_status($1::text::xid8) = 'committed' \
     AND NOT EXISTS (SELECT 1 FROM pg_locks \
                     WHERE locktype = 'transactionid' AND transactionid = xid($1::text::xid8))";

/// A look-out for one transaction's end: an idle connection to its shard and the
/// transaction's id (`xid8` as text).
#[derive(Debug)]
pub struct Watch<'a> {
    from: &'a tokio_postgres::Client,
    xid: String,
}

impl<'a> Watch<'a> {
    /// A look-out from `from` (a connection to the same shard, idle) for the transaction open
    /// on `c`, whose id it asks for (one statement on `c`); `None`, and no statement, without
    /// `from`.
    ///
    /// # Errors
    /// [`crate::error::Error::Postgres`] from the statement.
    pub async fn on(
        c: &impl tokio_postgres::GenericClient,
        from: Option<&'a tokio_postgres::Client>,
        shard: &str,
    ) -> Result<Option<Self>> {
        let Some(from) = from else {
            return Ok(None);
        };
        let row = c.query_one(XID_SQL, &[]).await.map_err(pg(shard))?;
        let xid = row.try_get(0).map_err(pg(shard))?;
        Ok(Some(Self { from, xid }))
    }
}

/// Awaits `commit` (the COMMIT of the watched transaction, on its own connection) until it
/// answers, or until `watch` sees the transaction committed and its locks released, whichever
/// comes first. With `watch` `None`, or once a look fails (the failure is logged at debug), it
/// awaits the answer alone.
///
/// # Errors
/// [`crate::error::Error::Postgres`] from the COMMIT, as its own answer says; a failed look is
/// not an error.
pub async fn commit<F>(commit: F, watch: Option<Watch<'_>>, shard: &str) -> Result<()>
where
    F: Future<Output = std::result::Result<(), tokio_postgres::Error>>,
{
    let mut commit = std::pin::pin!(commit);
    let Some(Watch { from, xid }) = watch else {
        return commit.await.map_err(pg(shard));
    };
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&xid];
    loop {
        tokio::select! {
            res = &mut commit => return res.map_err(pg(shard)),
            () = tokio::time::sleep(POLL) => {}
        }
        let look = tokio::select! {
            res = &mut commit => return res.map_err(pg(shard)),
            look = from.query_one(OVER_SQL, &params) => look,
        };
        match look.and_then(|row| row.try_get::<_, Option<bool>>(0)) {
            Ok(Some(true)) => {
                tracing::debug!(
                    shard,
                    xid,
                    "drop committed and unlocked; the backend deletes the chunk's files on its own"
                );
                return Ok(());
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(shard, error = %vitalsink_common::error::describe_postgres(&e), "looking at the drop's commit failed; waiting for its answer");
                return commit.await.map_err(pg(shard));
            }
        }
    }
}
