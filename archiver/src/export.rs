//! Exporting one chunk to one Parquet object, streamed with bounded memory:
//!
//! ```text
//! COPY (SELECT … FROM chunk) TO STDOUT (FORMAT binary), rate-limited
//!   → sorted by (participant_id, metric, ts) in buckets of sort_buffer_rows (crate::sort)
//!   → RecordBatch of batch_rows rows → checksum
//!   → channel (2 batches) → AsyncArrowWriter (row groups of row_group_rows rows)
//!   → object_store BufWriter (multipart upload in part_size_bytes parts)
//! ```
//!
//! Decoding and hashing run on the calling task, Parquet encoding on a spawned one, so the two
//! use both cores. The footer's key-value metadata names the shard, chunk, range, rows,
//! ts range, checksum and format versions ([`crate::format::keys`]). On any error the
//! multipart upload is aborted, so no partial object becomes visible.

use arrow::array::RecordBatch;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use std::time::Instant;
use tokio::sync::mpsc;
use vitalsink_common::config::ArchiveConfig;

use crate::catalog::Chunk;
use crate::checksum::{Digester, Summary};
use crate::error::{pg, Error, Result};
use crate::fault::{self, CrashPoint};
use crate::format::{self, keys, kv};
use crate::pgcopy::{BatchBuilder, CopyDecoder};
use crate::progress::Progress;
use crate::ratelimit::RowLimiter;
use crate::sort;
use crate::store::Archive;

/// Batches in flight between the decoder and the Parquet encoder.
const CHANNEL_BATCHES: usize = 2;

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

type Writer = AsyncArrowWriter<BufWriter>;

/// Streams `t.chunk` from `client` into a new Parquet object at `t.path`.
///
/// # Errors
/// [`Error::Postgres`] when the COPY fails, [`Error::Copy`] on a malformed stream,
/// [`Error::Parquet`]/[`Error::Store`] when writing fails. The upload is aborted then.
pub async fn export(
    client: &tokio_postgres::Client,
    archive: &Archive,
    cfg: &ArchiveConfig,
    t: &Target<'_>,
    limiter: &RowLimiter,
    progress: &Progress,
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
    let buf = BufWriter::with_capacity(archive.store.clone(), t.path.clone(), cfg.part_size_bytes)
        .with_max_concurrency(cfg.upload_concurrency);
    let writer = AsyncArrowWriter::try_new(buf, format::schema(), Some(props))?;
    let (tx, rx) = mpsc::channel::<RecordBatch>(CHANNEL_BATCHES);
    let part_size = cfg.part_size_bytes;
    let encoder = tokio::spawn(encode(writer, rx, part_size));

    let read = read_chunk(client, t, cfg, limiter, progress, &tx).await;
    drop(tx);
    let (mut writer, encoded) = encoder.await.map_err(|e| Error::Copy {
        chunk: t.chunk.qualified(),
        message: format!("encoder task: {e}"),
    })?;
    let finished = match (read, encoded) {
        (Ok(summary), Ok(())) => finish(&mut writer, &summary)
            .await
            .map(|bytes| (summary, bytes)),
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
    };
    match finished {
        Ok((summary, bytes)) => Ok(Exported {
            summary,
            bytes,
            took: started.elapsed(),
        }),
        Err(e) => {
            let mut buf = writer.into_inner();
            if let Err(a) = buf.abort().await {
                tracing::warn!(object = %t.path, error = %a, "aborting the upload failed");
            }
            Err(e)
        }
    }
}

/// Encodes batches until the channel closes; hands the writer back for finishing or abort.
async fn encode(
    mut w: Writer,
    mut rx: mpsc::Receiver<RecordBatch>,
    part_size: usize,
) -> (Writer, Result<()>) {
    while let Some(b) = rx.recv().await {
        if let Err(e) = w.write(&b).await {
            return (w, Err(e.into()));
        }
        if w.bytes_written() > part_size {
            fault::maybe_crash(CrashPoint::MidUpload).await;
        }
    }
    (w, Ok(()))
}

/// Adds the summary to the footer and completes the upload; returns the object's size.
async fn finish(w: &mut Writer, s: &Summary) -> Result<u64> {
    w.append_key_value_metadata(kv(keys::ROWS, s.rows.to_string()));
    w.append_key_value_metadata(kv(keys::CHECKSUM, s.checksum.clone()));
    if let (Some(lo), Some(hi)) = (s.min_ts, s.max_ts) {
        w.append_key_value_metadata(kv(keys::MIN_TS, rfc3339(lo)));
        w.append_key_value_metadata(kv(keys::MAX_TS, rfc3339(hi)));
    }
    w.finish().await?;
    Ok(w.bytes_written() as u64)
}

/// Reads the chunk in (participant_id, metric, ts) order ([`crate::sort`]) inside one
/// REPEATABLE READ snapshot and sends it as batches; returns their summary.
async fn read_chunk(
    client: &tokio_postgres::Client,
    t: &Target<'_>,
    cfg: &ArchiveConfig,
    limiter: &RowLimiter,
    progress: &Progress,
    tx: &mpsc::Sender<RecordBatch>,
) -> Result<Summary> {
    // JIT compilation only costs time on these plain scans (about 1 s on 5M rows).
    client
        .batch_execute("SET jit = off; BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(pg(t.shard))?;
    let res = read_sorted(client, t, cfg, limiter, progress, tx).await;
    let end = client
        .batch_execute(if res.is_ok() { "COMMIT" } else { "ROLLBACK" })
        .await
        .map_err(pg(t.shard));
    let summary = res?;
    end?;
    Ok(summary)
}

async fn read_sorted(
    client: &tokio_postgres::Client,
    t: &Target<'_>,
    cfg: &ArchiveConfig,
    limiter: &RowLimiter,
    progress: &Progress,
    tx: &mpsc::Sender<RecordBatch>,
) -> Result<Summary> {
    let what = t.chunk.qualified();
    let batch_rows = cfg.batch_rows;
    let plan = sort::plan(client, t.shard, t.chunk, cfg.sort_buffer_rows).await?;
    let files = sort::spill(client, t.shard, t.chunk, &plan, async |n| {
        limiter.acquire(n).await
    })
    .await?;
    let mut digest = Digester::default();
    let mut builder = BatchBuilder::new(batch_rows);
    let mut emit = async |b: &mut BatchBuilder| -> Result<()> {
        let batch = b.finish()?;
        digest.update(&batch)?;
        progress.inc(batch.num_rows() as u64);
        // A closed channel means the encoder failed; its error is reported instead.
        let _ = tx.send(batch).await;
        Ok(())
    };
    for (bucket, file) in plan.buckets.iter().zip(files) {
        match (bucket, file) {
            (sort::Bucket::Spill { .. }, Some(f)) => {
                sort::sorted_batches(f, &what, batch_rows, &mut builder, &mut emit).await?;
            }
            (sort::Bucket::Participant(pid), _) => {
                let sql = format!(
                    "COPY (SELECT {} FROM {} WHERE participant_id = '{}' \
                     ORDER BY metric COLLATE \"C\", ts) TO STDOUT (FORMAT binary)",
                    sort::columns(),
                    t.chunk.ident(),
                    pid.replace('\'', "''")
                );
                let stream = client.copy_out(sql.as_str()).await.map_err(pg(t.shard))?;
                let mut stream = std::pin::pin!(stream);
                let mut dec = CopyDecoder::new(&what);
                while let Some(data) = stream.next().await {
                    dec.push(&data.map_err(pg(t.shard))?);
                    loop {
                        let room = batch_rows - builder.len();
                        let n = dec.decode(&mut builder, room)?;
                        limiter.acquire(n).await;
                        if builder.len() < batch_rows {
                            break;
                        }
                        emit(&mut builder).await?;
                    }
                }
                if !dec.ended() {
                    return Err(Error::Copy {
                        chunk: what,
                        message: "stream ended without the end-of-data marker".into(),
                    });
                }
            }
            (sort::Bucket::Spill { .. }, None) => {}
        }
    }
    if !builder.is_empty() {
        emit(&mut builder).await?;
    }
    Ok(digest.finish())
}
