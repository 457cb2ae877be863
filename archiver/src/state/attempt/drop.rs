//! The second half of a chunk's archiving: the drop of a chunk whose object was verified, in
//! the transaction that logs `dropped` (see [`super`] for why that is crash-safe), through
//! the SECURITY DEFINER functions of migration 9 (schemas/ROLES.md).

use object_store::path::Path;
use object_store::ObjectStoreExt;

use super::{ChunkJob, Outcome};
use crate::error::{pg, Error, Result};
use crate::export::catalog::{self, Chunk, Extent};
use crate::state::commit;
use crate::state::guard::{Guard, LOCK_TIMEOUT};
use crate::state::log::{self, LogRow, Step};

/// Locks a chunk (given as a quoted `schema.name`) in ACCESS EXCLUSIVE mode until the end of
/// the transaction. `vitalsink_lock_chunk` is migration 9's SECURITY DEFINER function: it
/// refuses any relation that is not a chunk of `measurements` (schemas/ROLES.md).
const LOCK_CHUNK_SQL: &str = "SELECT vitalsink_lock_chunk($1::text::regclass)";

/// Drops a chunk (a quoted `schema.name`) with `DROP TABLE`, which TimescaleDB allows the
/// hypertable's owner only, through migration 9's SECURITY DEFINER `vitalsink_drop_chunk`.
const DROP_CHUNK_SQL: &str = "SELECT vitalsink_drop_chunk($1::text::regclass)";

impl ChunkJob<'_> {
    /// The second half: drops the chunk whose object `verified` (from
    /// [`Self::export_verified`]) was verified, after re-checking it under the chunk's lock.
    ///
    /// # Errors
    /// As [`Self::archive`].
    pub async fn drop_verified(
        &self,
        client: &mut tokio_postgres::Client,
        chunk: &Chunk,
        verified: &LogRow,
    ) -> Result<Outcome> {
        self.drop_chunk(client, chunk, verified, false, None)
            .await?;
        Ok(outcome(verified))
    }

    /// The second half on the `guard` given to [`Self::export_verified`]: when it holds the
    /// chunk's SHARE lock, drops the chunk in the guard's transaction without a re-check;
    /// otherwise as [`Self::drop_verified`] on the guard's connection. The guard holds
    /// nothing afterwards.
    ///
    /// With `watch`, an idle connection to the shard, the drop is over once its COMMIT is
    /// ([`commit::commit`]), before the backend has deleted the chunk's files; the guard's
    /// connection answers the COMMIT later (its next statement waits for that).
    ///
    /// # Errors
    /// As [`Self::archive`].
    pub async fn drop_guarded(
        &self,
        guard: &mut Guard,
        chunk: &Chunk,
        verified: &LogRow,
        watch: Option<&tokio_postgres::Client>,
    ) -> Result<Outcome> {
        let mut held = guard.holds(chunk);
        if held {
            match guard.has_waiters(self.shard, chunk).await {
                Ok(false) => {}
                Ok(true) => {
                    tracing::info!(shard = self.shard, chunk = %chunk.name, "a writer waits for the chunk: letting it in, the drop re-checks the chunk");
                    held = false;
                }
                Err(e) => {
                    guard.release(self.shard).await;
                    return Err(e);
                }
            }
        }
        if !held {
            // Not carried into a drop that re-checks: a late writer goes in first.
            guard.release(self.shard).await;
        }
        let res = self
            .drop_chunk(guard.client_mut(), chunk, verified, held, watch)
            .await;
        // drop_chunk ended the guard's transaction, by COMMIT or ROLLBACK.
        guard.ended();
        res.map(|()| outcome(verified))
    }

    /// Locks the chunk, drops it and logs `dropped`, all in one transaction: when `held`, the
    /// one open on `client` ([`Guard`]), which has held the chunk's SHARE lock since before
    /// the export's snapshot; otherwise a new one, which re-checks the chunk against the
    /// verified object first. A `held` transaction is ended either way. `watch`: as
    /// [`Self::drop_guarded`].
    async fn drop_chunk(
        &self,
        client: &mut tokio_postgres::Client,
        chunk: &Chunk,
        verified: &LogRow,
        held: bool,
        watch: Option<&tokio_postgres::Client>,
    ) -> Result<()> {
        let path = verified.object_path.clone().unwrap_or_default();
        let head = self.archive.store.head(&Path::from(path.as_str())).await;
        if !matches!(&head, Ok(m) if Some(m.size as i64) == verified.bytes) {
            let e = Error::Verify {
                object: path.clone(),
                message: format!("object missing or resized before the drop: {head:?}"),
            };
            let c: &tokio_postgres::Client = client;
            if held {
                c.batch_execute("ROLLBACK").await.map_err(pg(self.shard))?;
            }
            self.fail(c, verified, &e).await;
            self.discard(c, verified, "object missing before the drop")
                .await?;
            return Err(e);
        }
        let d = if held {
            self.drop_held(client, chunk, verified, watch).await?
        } else {
            self.drop_checked(client, chunk, verified, &path, watch)
                .await?
        };
        self.put(&d).await;
        tracing::info!(shard = self.shard, chunk = %chunk.name, object = %path, rows = ?d.rows, held, "dropped chunk");
        if let Some(t) = self.trail {
            t.dropped(self.shard, &d).await;
        }
        Ok(())
    }

    /// The drop in the guard's open transaction on `c`: ACCESS EXCLUSIVE on top of the SHARE
    /// lock, `DROP`, the `dropped` row, COMMIT; ROLLBACK on any failure (the attempt stays
    /// `verified`, and the next run adopts it and re-checks the chunk).
    async fn drop_held(
        &self,
        c: &tokio_postgres::Client,
        chunk: &Chunk,
        verified: &LogRow,
        watch: Option<&tokio_postgres::Client>,
    ) -> Result<LogRow> {
        let res = async {
            c.execute(LOCK_CHUNK_SQL, &[&chunk.ident()])
                .await
                .map_err(pg(self.shard))?;
            c.execute(DROP_CHUNK_SQL, &[&chunk.ident()])
                .await
                .map_err(pg(self.shard))?;
            let mut d = verified.next(Step::Dropped);
            d.run_id = self.run_id.to_string();
            let d = log::insert(c, self.shard, &d).await?;
            self.mark_unmarked(c).await?;
            let watch = commit::Watch::on(c, watch, self.shard).await?;
            commit::commit(c.batch_execute("COMMIT"), watch, self.shard).await?;
            Ok(d)
        }
        .await;
        if res.is_err() {
            // After a failed COMMIT there is no transaction left; the server only warns.
            let _ = c.batch_execute("ROLLBACK").await;
        }
        res
    }

    /// The drop in a new transaction on `client`, after re-checking the chunk's count and ts
    /// range against the verified object under the lock.
    async fn drop_checked(
        &self,
        client: &mut tokio_postgres::Client,
        chunk: &Chunk,
        verified: &LogRow,
        path: &str,
        watch: Option<&tokio_postgres::Client>,
    ) -> Result<LogRow> {
        let tx = client.transaction().await.map_err(pg(self.shard))?;
        // The re-check's count runs without parallel workers: on a busy shard starting them
        // costs more CPU than they save, and the lock is held for tens of milliseconds either
        // way.
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = '{}ms'; SET LOCAL max_parallel_workers_per_gather = 0",
            LOCK_TIMEOUT.as_millis()
        ))
        .await
        .map_err(pg(self.shard))?;
        // ACCESS EXCLUSIVE, through the owner's SECURITY DEFINER function (schemas/ROLES.md):
        // the archiver's role has no privilege that allows this lock mode on a chunk.
        tx.execute(LOCK_CHUNK_SQL, &[&chunk.ident()])
            .await
            .map_err(pg(self.shard))?;
        let now = catalog::extent(&tx, self.shard, chunk).await?;
        if let Err(e) = check_extent(path, &now, verified) {
            tx.rollback().await.map_err(pg(self.shard))?;
            let c: &tokio_postgres::Client = client;
            self.fail(c, verified, &e).await;
            self.discard(c, verified, "chunk changed after verification")
                .await?;
            return Err(e);
        }
        tx.execute(DROP_CHUNK_SQL, &[&chunk.ident()])
            .await
            .map_err(pg(self.shard))?;
        let mut d = verified.next(Step::Dropped);
        d.run_id = self.run_id.to_string();
        let d = log::insert(&tx, self.shard, &d).await?;
        self.mark_unmarked(&tx).await?;
        let watch = commit::Watch::on(&tx, watch, self.shard).await?;
        commit::commit(tx.commit(), watch, self.shard).await?;
        Ok(d)
    }
}

/// What archiving the chunk of `verified` moved.
fn outcome(verified: &LogRow) -> Outcome {
    Outcome {
        rows: verified.rows.unwrap_or(0) as u64,
        bytes: verified.bytes.unwrap_or(0) as u64,
    }
}

/// The chunk as SQL sees it must match the recorded rows and ts range.
fn check_extent(path: &str, now: &Extent, rec: &LogRow) -> Result<()> {
    let micros = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.timestamp_micros());
    if Some(now.rows) != rec.rows
        || now.min_ts != micros(rec.min_ts)
        || now.max_ts != micros(rec.max_ts)
    {
        return Err(Error::Verify {
            object: path.to_string(),
            message: format!(
                "chunk now has {} rows, ts {:?}..{:?}; the object has {:?} rows, {:?}..{:?}",
                now.rows, now.min_ts, now.max_ts, rec.rows, rec.min_ts, rec.max_ts
            ),
        });
    }
    Ok(())
}
