//! Reading a chunk into sorted runs ([`crate::export::merge::Run`]) on several connections at once.
//!
//! Inside one REPEATABLE READ snapshot, which the main connection exports
//! (`pg_export_snapshot()`) and every helper connection imports (`SET TRANSACTION SNAPSHOT`;
//! PostgreSQL docs, "Snapshot Synchronization Functions"), so that all of them see the same
//! rows:
//! - the chunk's heap pages are split into one contiguous block range per reader, each read
//!   with `COPY (SELECT … WHERE ctid >= '(lo,0)' AND ctid < '(hi,0)') TO STDOUT (FORMAT
//!   binary)` (a TID range scan, PostgreSQL 14+; the last range is open-ended; a chunk of
//!   fewer than 2 × 64 pages is read whole by one reader);
//! - each reader's async task only gathers COPY messages (one per row) into 1 MiB blocks
//!   and hands them over a bounded channel to a blocking thread of its own, which decodes
//!   them into a [`RunBuffer`] of at most `sort_buffer_rows / readers` rows, sorts it and
//!   writes it to a temporary file (`TMPDIR`) each time it fills; its last run stays in
//!   memory. A chunk that one reader reads without spilling stays one run sorted in memory
//!   and not encoded, which needs no merge ([`Sorted::InMemory`]). So the shard's backends
//!   and the archiver's decoding and sorting all run at once.
//!
//! The rate limit is taken in the async task for the rows its thread has decoded, so the
//! reading never gets more than the channel (about 16,000 rows of 14 columns) ahead of it.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::error::{pg, Error, Result};
use crate::export::catalog::Chunk;
use crate::export::format;
use crate::export::merge::Run;
use crate::export::pgcopy::CopyDecoder;
use crate::export::ratelimit::RowLimiter;
use crate::export::sort::{RunBuffer, SortedRun};

/// Bytes of COPY messages gathered before they are handed to the decoding thread. 1 MiB
/// rather than 256 KiB (and 64 KiB before that): fewer hand-overs and thread wake-ups on a
/// machine whose cores the shard's backends share (5 M rows, three interleaved runs each:
/// reading 2.94–3.03 s against 3.18–3.71 s with 256 KiB blocks).
const BLOCK_BYTES: usize = 1 << 20;
/// Blocks in flight per reader: with the one being filled, about 3 MiB per reader.
const CHANNEL_BLOCKS: usize = 2;
/// Heap pages (8 KiB) a reader gets at least; smaller chunks are read by fewer readers.
const MIN_PAGES_PER_READER: i64 = 64;

/// Most readers used for one chunk: the machine's cores, at most 4. Each is one more
/// connection to the shard while a chunk is read.
pub fn max_readers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Begins the snapshot on `main` — a new one, or `snapshot`, one another session exported —
/// and, when there are `helpers`, shares it with them; returns the helpers that joined it.
/// Every connection returned must end its transaction ([`end`]).
///
/// # Errors
/// [`Error::Postgres`] when `main` cannot begin or import `snapshot`. A helper that cannot
/// join is left out (and logged).
pub async fn begin<'a>(
    main: &Client,
    helpers: &[&'a Client],
    snapshot: Option<&str>,
    shard: &str,
) -> Result<Vec<&'a Client>> {
    // JIT compilation only costs time on these plain scans (about 1 s on 5M rows). `SET
    // LOCAL`: a session-level `SET` would outlive the transaction, and behind a transaction
    // pooler reach the next client of the server connection (README, "PgBouncer").
    let begin = match snapshot {
        None => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL jit = off".to_string(),
        Some(id) => format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
             SET TRANSACTION SNAPSHOT '{}'; SET LOCAL jit = off",
            id.replace('\'', "''")
        ),
    };
    if let Err(e) = main.batch_execute(&begin).await {
        let _ = main.batch_execute("ROLLBACK").await;
        return Err(pg(shard)(e));
    }
    if helpers.is_empty() {
        return Ok(Vec::new());
    }
    let snapshot: String = match main.query_one("SELECT pg_export_snapshot()", &[]).await {
        Ok(row) => row.get(0),
        Err(e) => {
            let _ = main.batch_execute("ROLLBACK").await;
            return Err(pg(shard)(e));
        }
    };
    let mut joined = Vec::new();
    for h in helpers {
        let sql = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
             SET TRANSACTION SNAPSHOT '{}'; SET LOCAL jit = off",
            snapshot.replace('\'', "''")
        );
        match h.batch_execute(&sql).await {
            Ok(()) => joined.push(*h),
            Err(e) => {
                tracing::warn!(shard, error = %e, "a helper connection could not join the snapshot; reading with fewer");
                let _ = h.batch_execute("ROLLBACK").await;
            }
        }
    }
    Ok(joined)
}

/// Ends the transactions begun by [`begin`]: COMMIT when `ok`, else ROLLBACK.
///
/// # Errors
/// [`Error::Postgres`] of the first connection that fails.
pub async fn end(conns: &[&Client], ok: bool, shard: &str) -> Result<()> {
    let sql = if ok { "COMMIT" } else { "ROLLBACK" };
    let mut first = Ok(());
    for c in conns {
        let r = c.batch_execute(sql).await.map_err(pg(shard));
        if first.is_ok() {
            first = r;
        }
    }
    first
}

/// The `WHERE` clause of block range `i` of `n` over `pages` pages.
fn ctid_range(i: usize, n: usize, pages: i64) -> String {
    let at = |k: usize| pages * k as i64 / n as i64;
    match (i, n) {
        (_, 1) => String::new(),
        (0, _) => format!(" WHERE ctid < '({},0)'::tid", at(1)),
        (i, n) if i + 1 == n => format!(" WHERE ctid >= '({},0)'::tid", at(i)),
        (i, _) => format!(
            " WHERE ctid >= '({},0)'::tid AND ctid < '({},0)'::tid",
            at(i),
            at(i + 1)
        ),
    }
}

/// What reading a chunk produced.
#[derive(Debug)]
pub enum Sorted {
    /// The whole chunk in one run sorted in memory: it fit in the sort buffer and one reader
    /// read it. Goes straight into batches.
    InMemory(SortedRun),
    /// Sorted runs to merge ([`crate::export::merge`]).
    Runs(Vec<Run>),
}

/// Reads `chunk` on `conns` (inside the snapshot of [`begin`]) into sorted runs of at most
/// `sort_buffer_rows` rows in all at any time.
///
/// # Errors
/// [`Error::Postgres`], [`Error::Copy`], [`Error::Io`] (temporary files).
pub async fn read_runs(
    conns: &[&Client],
    shard: &str,
    chunk: &Chunk,
    sort_buffer_rows: usize,
    limiter: &RowLimiter,
) -> Result<Sorted> {
    let Some(main) = conns.first() else {
        return Ok(Sorted::Runs(Vec::new()));
    };
    let ident = chunk.ident();
    let pages: i64 = main
        .query_one(
            &format!(
                "SELECT (pg_relation_size('{}'::regclass) / current_setting('block_size')::int)::bigint",
                ident.replace('\'', "''")
            ),
            &[],
        )
        .await
        .map_err(pg(shard))?
        .get(0);
    let n = (pages / MIN_PAGES_PER_READER).clamp(1, conns.len() as i64) as usize;
    let run_rows = (sort_buffer_rows / n).max(1);
    // Room for the reader's share of the chunk's estimated rows (`reltuples`, -1 before the
    // first ANALYZE) plus 1/16, at most a run: the buffer then fills without regrowing.
    let share = usize::try_from(chunk.est_rows).unwrap_or(0) / n;
    let capacity = (share + share / 16).min(run_rows);
    let what = chunk.qualified();
    tracing::debug!(shard, chunk = %what, pages, readers = n, run_rows, "reading");
    let cols = format::COLUMNS.join(", ");
    let mut workers = Vec::with_capacity(n);
    let mut forwards = Vec::with_capacity(n);
    for (i, c) in conns.iter().take(n).enumerate() {
        let sql = format!(
            "COPY (SELECT {cols} FROM {ident}{}) TO STDOUT (FORMAT binary)",
            ctid_range(i, n, pages)
        );
        let (tx, rx) = mpsc::channel(CHANNEL_BLOCKS);
        let decoded = Arc::new(AtomicU64::new(0));
        let (w, d) = (what.clone(), decoded.clone());
        let alone = n == 1;
        workers.push(tokio::task::spawn_blocking(move || {
            sort_runs(rx, &w, run_rows, capacity, &d, alone)
        }));
        forwards.push(forward(c, sql, shard, tx, limiter, decoded));
    }
    let forwarded = futures::future::join_all(forwards).await;
    let mut runs = Vec::new();
    let mut first_err = None;
    for (f, w) in forwarded.into_iter().zip(workers) {
        let w = w.await.map_err(|e| Error::Copy {
            chunk: what.clone(),
            message: format!("sort thread: {e}"),
        });
        match (f, w) {
            (Ok((acquired, decoded)), Ok(Ok(r))) => {
                let left = decoded.load(Ordering::Relaxed).saturating_sub(acquired);
                limiter.acquire(left as usize).await;
                match r {
                    // Only a reader that read the whole chunk keeps its run unencoded.
                    Sorted::InMemory(one) => return Ok(Sorted::InMemory(one)),
                    Sorted::Runs(r) => runs.extend(r),
                }
            }
            // The reading error comes first: a worker whose input stopped only reports the
            // missing end marker.
            (Err(e), _) | (Ok(_), Err(e)) | (Ok(_), Ok(Err(e))) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(Sorted::Runs(runs)),
    }
}

/// Streams one COPY into blocks for the decoding thread; returns the rows it acquired from
/// the rate limit and the thread's decoded-rows counter.
async fn forward(
    c: &Client,
    sql: String,
    shard: &str,
    tx: mpsc::Sender<Bytes>,
    limiter: &RowLimiter,
    decoded: Arc<AtomicU64>,
) -> Result<(u64, Arc<AtomicU64>)> {
    let stream = c.copy_out(sql.as_str()).await.map_err(pg(shard))?;
    let mut stream = std::pin::pin!(stream);
    let mut block = BytesMut::with_capacity(BLOCK_BYTES);
    let mut acquired = 0u64;
    while let Some(m) = stream.next().await {
        let m = m.map_err(pg(shard))?;
        // A block is handed over before a message would overflow it: growing it would
        // reallocate and copy the whole block. (A message larger than a block grows it.)
        if block.len() + m.len() > BLOCK_BYTES && !block.is_empty() {
            if tx.send(block.split().freeze()).await.is_err() {
                // The thread failed; its error is reported.
                return Ok((acquired, decoded));
            }
            block.reserve(BLOCK_BYTES);
            let now = decoded.load(Ordering::Relaxed);
            limiter.acquire(now.saturating_sub(acquired) as usize).await;
            acquired = acquired.max(now);
        }
        block.extend_from_slice(&m);
    }
    if !block.is_empty() {
        let _ = tx.send(block.freeze()).await;
    }
    tracing::debug!(shard, sql = %sql, "COPY received");
    Ok((acquired, decoded))
}

/// The decoding thread of one reader: COPY blocks → run buffer (room for `capacity` rows
/// from the start) → sorted runs. When it is
/// `alone` (reads the whole chunk) and spilled nothing, its one run stays unencoded
/// ([`Sorted::InMemory`]); otherwise its last run is encoded in memory for the merge, here
/// on the blocking thread.
fn sort_runs(
    mut rx: mpsc::Receiver<Bytes>,
    what: &str,
    run_rows: usize,
    capacity: usize,
    decoded: &AtomicU64,
    alone: bool,
) -> Result<Sorted> {
    let mut dec = CopyDecoder::new(what);
    let mut buf = RunBuffer::with_capacity(capacity);
    let mut runs = Vec::new();
    while let Some(block) = rx.blocking_recv() {
        let n = dec.push_each_tuple(&block, |t, spans| {
            buf.push_tuple(t, spans, what)?;
            if buf.len() >= run_rows {
                runs.push(Run::spill(|w| buf.write_sorted(w))?);
            }
            Ok(())
        })?;
        decoded.fetch_add(n as u64, Ordering::Relaxed);
    }
    if !dec.ended() {
        return Err(Error::Copy {
            chunk: what.to_string(),
            message: "stream ended without the end-of-data marker".into(),
        });
    }
    tracing::debug!(chunk = what, spilled = runs.len(), "decoded");
    if buf.is_empty() {
        return Ok(Sorted::Runs(runs));
    }
    let last = buf.take_sorted();
    if alone && runs.is_empty() {
        return Ok(Sorted::InMemory(last));
    }
    runs.push(Run::Memory(Cursor::new(last.write(Vec::new())?)));
    Ok(Sorted::Runs(runs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ranges_cover_every_page_once() {
        assert_eq!(ctid_range(0, 1, 10), "");
        assert_eq!(ctid_range(0, 3, 10), " WHERE ctid < '(3,0)'::tid");
        assert_eq!(
            ctid_range(1, 3, 10),
            " WHERE ctid >= '(3,0)'::tid AND ctid < '(6,0)'::tid"
        );
        assert_eq!(ctid_range(2, 3, 10), " WHERE ctid >= '(6,0)'::tid");
    }
}
