//! Exporting one chunk to one Parquet object, streamed with bounded memory:
//!
//! ```text
//! COPY … TO STDOUT (FORMAT binary) on 1–4 connections sharing one snapshot, rate-limited
//!   → sorted runs of at most sort_buffer_rows rows in all (crate::export::readers, crate::export::sort),
//!     spilled to temporary files
//!   → k-way merge in (participant_id, metric, ts) order (crate::export::merge)
//!   → RecordBatch of batch_rows rows → checksum
//!   → channel (2 batches) → encoder: row groups of row_group_rows rows, their columns encoded
//!     on up to 4 threads (crate::export::encode)
//!   → channel (2 row groups) → object_store BufWriter (multipart upload in part_size_bytes parts)
//! ```
//!
//! The readers decode and sort on blocking threads while the shard's backends scan; the merge
//! and hashing run on a blocking thread each, the Parquet encoding on more, and the upload on
//! a task, so the stages overlap on every core. The footer's key-value metadata names the shard, chunk,
//! range, rows, ts range, checksum, format versions and the rows' source ranges (lineage,
//! gathered with the checksum, [`lineage`]) ([`crate::export::format::keys`]). On any error the multipart
//! upload is aborted, so no partial object becomes visible.
//!
//! The stage's parts: which chunks ([`catalog`]), reading them ([`readers`], [`pgcopy`]),
//! sorting ([`sort`], [`runfile`], [`merge`]), the provenance columns through all of these
//! ([`prov`]), the file ([`format`](mod@format), [`checksum`], [`encode`]) and the rate limit
//! ([`ratelimit`]). A late chunk's readings already archived are dropped before its export
//! ([`dedup`]).

pub mod arrays;
pub mod catalog;
pub mod checksum;
pub mod dedup;
pub mod encode;
pub mod format;
pub mod lineage;
pub mod merge;
pub mod pgcopy;
pub mod prov;
pub mod ratelimit;
pub mod readers;
pub mod runfile;
pub mod sort;

use arrow::array::RecordBatch;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::file::metadata::KeyValue;
use std::time::Instant;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use vitalsink_common::config::ArchiveConfig;

use crate::error::{Error, Result};
use crate::export::catalog::Chunk;
use crate::export::checksum::{Digester, Summary};
use crate::export::encode::Encoder;
use crate::export::format::{keys, kv};
use crate::export::pgcopy::BatchBuilder;
use crate::export::prov::Prov;
use crate::export::ratelimit::RowLimiter;
use crate::export::runfile::STRINGS;
use crate::fault::{self, CrashPoint};
use crate::progress::Progress;
use crate::storage::store::Archive;

/// Batches in flight between the decoder and the Parquet encoder.
const CHANNEL_BATCHES: usize = 2;
/// Encoded row groups waiting for the upload (each at most `row_group_rows` rows encoded,
/// about 1.2–2.3 bytes a row: README, "Bytes per row").
const CHANNEL_ROW_GROUPS: usize = 2;

/// What to export and where.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// Source shard name.
    pub shard: &'a str,
    /// The chunk.
    pub chunk: &'a Chunk,
    /// Object path relative to the archive root.
    pub path: Path,
    /// Attempt id.
    pub attempt: &'a str,
    /// The shard's database schema version.
    pub db_schema_version: i32,
}

/// Result of an export.
#[derive(Debug, Clone)]
pub struct Exported {
    /// Rows, ts range and checksum of what was written.
    pub summary: Summary,
    /// Size of the object, bytes.
    pub bytes: u64,
    /// Wall time of the export.
    pub took: std::time::Duration,
}

/// RFC 3339 form of µs since the Unix epoch.
pub fn rfc3339(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

/// Streams `t.chunk` from `client` into a new Parquet object at `t.path`; `helpers` are more
/// connections to the same shard that read parts of the chunk in parallel (may be empty).
///
/// # Errors
/// [`Error::Postgres`] when the COPY fails, [`Error::Copy`] on a malformed stream,
/// [`Error::Parquet`]/[`Error::Store`] when writing fails. The upload is aborted then.
pub async fn export(
    client: &tokio_postgres::Client,
    helpers: &[&tokio_postgres::Client],
    archive: &Archive,
    cfg: &ArchiveConfig,
    t: &Target<'_>,
    limiter: &RowLimiter,
    progress: &Progress,
) -> Result<Exported> {
    export_with(client, helpers, archive, cfg, t, limiter, progress, None).await
}

/// [`export`] inside a snapshot another session exported (`pg_export_snapshot()`, PostgreSQL
/// docs 9.28.5 "Snapshot Synchronization Functions"): the chunk's rows exactly as that
/// session sees them. `trial lock create` exports every chunk of a shard in one snapshot, in
/// which it also reads which objects the archive holds for the shard.
///
/// # Errors
/// As [`export`]; [`Error::Postgres`] when the snapshot is no longer held by its session.
pub async fn export_in_snapshot(
    client: &tokio_postgres::Client,
    archive: &Archive,
    cfg: &ArchiveConfig,
    t: &Target<'_>,
    limiter: &RowLimiter,
    progress: &Progress,
    snapshot: &str,
) -> Result<Exported> {
    export_with(
        client,
        &[],
        archive,
        cfg,
        t,
        limiter,
        progress,
        Some(snapshot),
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn export_with(
    client: &tokio_postgres::Client,
    helpers: &[&tokio_postgres::Client],
    archive: &Archive,
    cfg: &ArchiveConfig,
    t: &Target<'_>,
    limiter: &RowLimiter,
    progress: &Progress,
    snapshot: Option<&str>,
) -> Result<Exported> {
    let started = Instant::now();
    let base_kv = vec![
        kv(keys::SHARD, t.shard),
        kv(keys::CHUNK, t.chunk.qualified()),
        kv(keys::RANGE_START, t.chunk.range_start.to_rfc3339()),
        kv(keys::RANGE_END, t.chunk.range_end.to_rfc3339()),
        kv(keys::SCHEMA_VERSION, format::FORMAT_VERSION),
        kv(keys::DB_SCHEMA_VERSION, t.db_schema_version.to_string()),
        kv(keys::ATTEMPT, t.attempt),
    ];
    let props = format::writer_properties(cfg.row_group_rows, base_kv);
    let encoder = Encoder::new(
        format::schema(),
        props,
        cfg.row_group_rows,
        encode::threads(cfg.encode_threads),
    )?;
    let buf = BufWriter::with_capacity(archive.store.clone(), t.path.clone(), cfg.part_size_bytes)
        .with_max_concurrency(cfg.upload_concurrency);
    let (tx, rx) = mpsc::channel::<RecordBatch>(CHANNEL_BATCHES);
    let (btx, brx) = mpsc::channel::<Bytes>(CHANNEL_ROW_GROUPS);
    let encoding = tokio::task::spawn_blocking(move || encode_batches(encoder, rx, btx));
    let uploading = tokio::spawn(upload(buf, brx, cfg.part_size_bytes));

    let read = read_chunk(client, helpers, snapshot, t, cfg, limiter, progress, tx).await;
    let thread = |name: &str, e: tokio::task::JoinError| Error::Copy {
        chunk: t.chunk.qualified(),
        message: format!("{name}: {e}"),
    };
    let encoded = encoding.await.map_err(|e| thread("encoder thread", e));
    // The footer goes out through the same channel as the row groups, then the channel
    // closes and the upload task hands the upload back.
    let encoded = match (read, encoded) {
        (Ok(summary), Ok((encoder, btx, Ok(())))) => {
            match encoder.finish(footer(&summary)) {
                Ok(tail) => {
                    // A closed channel means the upload failed; its error is reported below.
                    let _ = btx.send(tail).await;
                    Ok(summary)
                }
                Err(e) => Err(e),
            }
        }
        (Err(e), _) | (Ok(_), Ok((_, _, Err(e)))) | (Ok(_), Err(e)) => Err(e),
    };
    let (mut buf, uploaded) = uploading.await.map_err(|e| thread("upload task", e))?;
    match (encoded, uploaded) {
        (Ok(summary), Ok(bytes)) => match buf.shutdown().await {
            Ok(()) => Ok(Exported {
                summary,
                bytes,
                took: started.elapsed(),
            }),
            Err(e) => {
                // Completing shuts the upload down; once that started, object_store's abort
                // panics ("Already shut down"). The attempt fails as it is: the archive log
                // records no `written` step, the next run writes the object again under a new
                // attempt, and an S3 lifecycle rule for incomplete multipart uploads removes
                // any parts left behind.
                tracing::warn!(object = %t.path, error = %e, "completing the upload failed; not aborting it");
                Err(e.into())
            }
        },
        (Err(e), _) | (Ok(_), Err(e)) => {
            if let Err(a) = buf.abort().await {
                tracing::warn!(object = %t.path, error = %a, "aborting the upload failed");
            }
            Err(e)
        }
    }
}

/// Encodes batches from `rx` until it closes, sending each finished row group's bytes to
/// `tx`; hands the encoder (for the footer) and the channel back.
fn encode_batches(
    mut encoder: Encoder,
    mut rx: mpsc::Receiver<RecordBatch>,
    tx: mpsc::Sender<Bytes>,
) -> (Encoder, mpsc::Sender<Bytes>, Result<()>) {
    while let Some(b) = rx.blocking_recv() {
        match encoder.write(&b) {
            Ok(groups) => {
                for g in groups {
                    // A closed channel means the upload failed; its error is reported instead.
                    let _ = tx.blocking_send(g);
                }
            }
            Err(e) => return (encoder, tx, Err(e)),
        }
    }
    (encoder, tx, Ok(()))
}

/// Puts the bytes from `rx` into the multipart upload `buf` until the channel closes; hands
/// the upload back (to complete or abort) with the bytes put.
async fn upload(
    mut buf: BufWriter,
    mut rx: mpsc::Receiver<Bytes>,
    part_size: usize,
) -> (BufWriter, Result<u64>) {
    let mut put = 0u64;
    while let Some(b) = rx.recv().await {
        put += b.len() as u64;
        if let Err(e) = buf.put(b).await {
            return (buf, Err(e.into()));
        }
        if put > part_size as u64 {
            fault::maybe_crash(CrashPoint::MidUpload).await;
        }
    }
    (buf, Ok(put))
}

/// The footer's entries known only once every row was hashed.
fn footer(s: &Summary) -> Vec<KeyValue> {
    let mut kvs = vec![
        kv(keys::ROWS, s.rows.to_string()),
        kv(keys::CHECKSUM, s.checksum.clone()),
        kv(keys::SOURCE_RANGES, s.source_ranges.clone()),
    ];
    if let (Some(lo), Some(hi)) = (s.min_ts, s.max_ts) {
        kvs.push(kv(keys::MIN_TS, rfc3339(lo)));
        kvs.push(kv(keys::MAX_TS, rfc3339(hi)));
    }
    kvs
}

/// Reads the chunk inside one REPEATABLE READ snapshot (shared by `helpers`) into sorted runs
/// ([`crate::export::readers`]), then merges them ([`crate::export::merge`]) on a blocking thread into
/// batches of `batch_rows` rows in (participant_id, metric, ts) order, which it hashes and
/// sends to the encoder; returns their summary.
#[allow(clippy::too_many_arguments)]
async fn read_chunk(
    client: &tokio_postgres::Client,
    helpers: &[&tokio_postgres::Client],
    snapshot: Option<&str>,
    t: &Target<'_>,
    cfg: &ArchiveConfig,
    limiter: &RowLimiter,
    progress: &Progress,
    tx: mpsc::Sender<RecordBatch>,
) -> Result<Summary> {
    let joined = readers::begin(client, helpers, snapshot, t.shard).await?;
    let mut conns = vec![client];
    conns.extend(joined);
    let res = readers::read_runs(&conns, t.shard, t.chunk, cfg.sort_buffer_rows, limiter).await;
    let end = readers::end(&conns, res.is_ok(), t.shard).await;
    let runs = res?;
    end?;
    let what = t.chunk.qualified();
    tracing::debug!(shard = t.shard, chunk = %what, in_memory = matches!(runs, readers::Sorted::InMemory(_)), "read into sorted runs");
    let thread = |name: &'static str| {
        let chunk = what.clone();
        move |e: tokio::task::JoinError| Error::Copy {
            chunk,
            message: format!("{name} thread: {e}"),
        }
    };
    // Merging and hashing each get a thread: they are the two longest stages after the read.
    let (mtx, mrx) = mpsc::channel::<RecordBatch>(CHANNEL_BATCHES);
    let (batch_rows, w) = (cfg.batch_rows, what.clone());
    let merger = tokio::task::spawn_blocking(move || merge_batches(runs, &w, batch_rows, &mtx));
    let progress = progress.clone();
    let hasher = tokio::task::spawn_blocking(move || hash_batches(mrx, &progress, &tx));
    let merged = merger.await.map_err(thread("merge"))?;
    let hashed = hasher.await.map_err(thread("checksum"))?;
    merged?;
    hashed
}

/// Merges the sorted runs into batches of `batch_rows` rows and sends them to `tx`; a chunk
/// sorted in one run in memory is cut into batches directly.
fn merge_batches(
    sorted: readers::Sorted,
    what: &str,
    batch_rows: usize,
    tx: &mpsc::Sender<RecordBatch>,
) -> Result<()> {
    let mut builder = BatchBuilder::new(batch_rows);
    let emit = |b: &mut BatchBuilder| -> Result<()> {
        // A closed channel means a later stage failed; its error is reported instead.
        let _ = tx.blocking_send(b.finish()?);
        Ok(())
    };
    let mut push = |s: [Option<&str>; STRINGS], ts: i64, value: u64, prov: &Prov| -> Result<()> {
        builder.append(s, ts, f64::from_bits(value), prov);
        if builder.len() >= batch_rows {
            emit(&mut builder)?;
        }
        Ok(())
    };
    match sorted {
        readers::Sorted::InMemory(run) => {
            run.for_each(|(s, ts, value, prov)| push(s, ts, value, prov))?;
        }
        readers::Sorted::Runs(runs) => merge::merge(runs, what, |r| {
            push(std::array::from_fn(|k| r.str(k)), r.ts, r.value, &r.prov)
        })?,
    }
    if !builder.is_empty() {
        emit(&mut builder)?;
    }
    tracing::debug!(chunk = what, "runs merged");
    Ok(())
}

/// Hashes the batches from `rx` in order and passes them on to the encoder; returns their
/// summary.
fn hash_batches(
    mut rx: mpsc::Receiver<RecordBatch>,
    progress: &Progress,
    tx: &mpsc::Sender<RecordBatch>,
) -> Result<Summary> {
    let mut digest = Digester::default();
    while let Some(batch) = rx.blocking_recv() {
        digest.update(&batch)?;
        progress.inc(batch.num_rows() as u64);
        // A closed channel means the encoder failed; its error is reported instead.
        let _ = tx.blocking_send(batch);
    }
    Ok(digest.finish())
}
