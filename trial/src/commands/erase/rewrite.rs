//! Rewriting one Parquet object without one participant's rows: read in batches, filter,
//! hash ([`vitalsink_archiver::export::checksum`]) and encode with the archive's writer
//! properties into a new object, keeping the file's schema (format version 1 or 2, field ids)
//! and its `vitalsink.*` footer keys, with the rows, checksum, ts range and source ranges of
//! what was written. Memory: one batch and the row group being encoded, whatever the object's
//! size.

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::compute::kernels::cmp::neq;
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::DataType;
use futures::TryStreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use parquet::arrow::{AsyncArrowWriter, ParquetRecordBatchStreamBuilder};
use vitalsink_archiver::export::checksum::{Algorithm, Digester, Summary};
use vitalsink_archiver::export::format::{self, keys, kv};
use vitalsink_archiver::storage::objreader::ObjectReader;
use vitalsink_archiver::storage::store::Archive;
use vitalsink_common::config::ArchiveConfig;

use crate::error::{Error, Result};

/// Rows per batch read.
const BATCH_ROWS: usize = 65_536;

/// What a rewrite wrote.
#[derive(Debug, Clone)]
pub struct Rewritten {
    /// Rows of the old object.
    pub rows_before: u64,
    /// Rows, ts range, checksum and source ranges of the new one.
    pub summary: Summary,
    /// Size of the new object, bytes.
    pub bytes: u64,
}

/// Whether `path` may hold rows of `participant`, by its row groups' `participant_id`
/// statistics (min ≤ participant ≤ max in some row group; no statistics: maybe).
///
/// # Errors
/// [`Error::Archive`] when the footer cannot be read.
pub async fn may_hold(archive: &Archive, path: &Path, participant: &str) -> Result<bool> {
    let size = archive
        .store
        .head(path)
        .await
        .map_err(vitalsink_archiver::Error::from)?
        .size;
    let mut reader = ObjectReader::new(archive.store.clone(), path.clone(), size);
    let meta = parquet::arrow::async_reader::AsyncFileReader::get_metadata(&mut reader, None)
        .await
        .map_err(vitalsink_archiver::Error::from)?;
    let Some(col) = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.name() == "participant_id")
    else {
        return Ok(true);
    };
    for rg in meta.row_groups() {
        match rg.column(col).statistics() {
            Some(parquet::file::statistics::Statistics::ByteArray(s)) => {
                let (Some(lo), Some(hi)) = (s.min_opt(), s.max_opt()) else {
                    return Ok(true);
                };
                let p = participant.as_bytes();
                if lo.data() <= p && p <= hi.data() {
                    return Ok(true);
                }
            }
            _ => return Ok(true),
        }
    }
    Ok(false)
}

/// Writes `to` as `from` without the rows of `participant`.
///
/// # Errors
/// [`Error::Archive`] when reading or writing fails (the upload is aborted).
pub async fn rewrite(
    archive: &Archive,
    cfg: &ArchiveConfig,
    from: &Path,
    to: &Path,
    participant: &str,
) -> Result<Rewritten> {
    let arch = |e: vitalsink_archiver::Error| Error::Archive(e);
    let size = archive
        .store
        .head(from)
        .await
        .map_err(|e| arch(e.into()))?
        .size;
    let reader = ObjectReader::new(archive.store.clone(), from.clone(), size);
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| arch(e.into()))?
        .with_batch_size(BATCH_ROWS);
    let schema = builder.schema().clone();
    let mut footer: Vec<parquet::file::metadata::KeyValue> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|v| {
            v.iter()
                .filter(|k| {
                    k.key.starts_with("vitalsink.")
                        && ![
                            keys::ROWS,
                            keys::CHECKSUM,
                            keys::SOURCE_RANGES,
                            keys::MIN_TS,
                            keys::MAX_TS,
                        ]
                        .contains(&k.key.as_str())
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    footer.push(kv("vitalsink.rewritten_from", from.to_string()));
    let mut stream = builder.build().map_err(|e| arch(e.into()))?;
    let props = format::writer_properties(cfg.row_group_rows, footer);
    let buf = BufWriter::with_capacity(archive.store.clone(), to.clone(), cfg.part_size_bytes)
        .with_max_concurrency(cfg.upload_concurrency);
    let mut w = AsyncArrowWriter::try_new(buf, schema, Some(props)).map_err(|e| arch(e.into()))?;
    let mut digest = Digester::new(Algorithm::default());
    let mut rows_before = 0u64;
    let res: Result<()> = async {
        while let Some(b) = stream.try_next().await.map_err(|e| arch(e.into()))? {
            rows_before += b.num_rows() as u64;
            let kept = without(&b, participant)?;
            if kept.num_rows() > 0 {
                digest.update(&kept).map_err(arch)?;
                w.write(&kept).await.map_err(|e| arch(e.into()))?;
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = res {
        let mut b = w.into_inner();
        let _ = b.abort().await;
        return Err(e);
    }
    let s = digest.finish();
    w.append_key_value_metadata(kv(keys::ROWS, s.rows.to_string()));
    w.append_key_value_metadata(kv(keys::CHECKSUM, s.checksum.clone()));
    w.append_key_value_metadata(kv(keys::SOURCE_RANGES, s.source_ranges.clone()));
    if let (Some(lo), Some(hi)) = (s.min_ts, s.max_ts) {
        w.append_key_value_metadata(kv(keys::MIN_TS, vitalsink_archiver::export::rfc3339(lo)));
        w.append_key_value_metadata(kv(keys::MAX_TS, vitalsink_archiver::export::rfc3339(hi)));
    }
    w.finish().await.map_err(|e| arch(e.into()))?;
    Ok(Rewritten {
        rows_before,
        bytes: w.bytes_written() as u64,
        summary: s,
    })
}

/// `b` without the rows whose `participant_id` is `participant`.
fn without(b: &RecordBatch, participant: &str) -> Result<RecordBatch> {
    let bad = |m: String| Error::Failed(format!("rewriting: {m}"));
    let col = b
        .column_by_name("participant_id")
        .ok_or_else(|| bad("no participant_id column".into()))?;
    let col = if col.data_type() == &DataType::Utf8 {
        col.clone()
    } else {
        cast(col, &DataType::Utf8).map_err(|e| bad(e.to_string()))?
    };
    let p = StringArray::new_scalar(participant);
    let keep = neq(&col, &p).map_err(|e| bad(e.to_string()))?;
    if keep.null_count() == 0 && keep.true_count() == b.num_rows() {
        return Ok(b.clone());
    }
    filter_record_batch(b, &keep).map_err(|e| bad(e.to_string()))
}
