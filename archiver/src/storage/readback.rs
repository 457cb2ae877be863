//! Reading an archived object back: streamed row group by row group, its rows hashed (on a
//! thread of their own, while the next batch decodes) with the same
//! [`crate::export::checksum::Digester`] the export used, and compared with what the log or
//! manifest recorded. Objects of either file format version ([`crate::export::format`]) are
//! read as they are: 7 columns (version 1, the old checksum encoding) or 14 (version 2, with
//! provenance and source ranges).

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::export::checksum::{Algorithm, Digester, Summary};
use crate::export::format::{self, keys};
use crate::state::log::LogRow;
use crate::storage::store::Archive;

/// Rows per decoded batch while reading back.
const READ_BATCH_ROWS: usize = 65_536;
/// Decoded batches waiting to be hashed: memory is this many batches of [`READ_BATCH_ROWS`]
/// rows (and the row group being decoded), whatever the object's size.
const HASH_QUEUE_BATCHES: usize = 2;

/// What an object holds: size, footer key-value metadata and the summary of its rows.
#[derive(Debug, Clone)]
pub struct ReadBack {
    /// Object size, bytes.
    pub bytes: u64,
    /// Footer key-value metadata.
    pub kv: BTreeMap<String, String>,
    /// Rows, ts range, checksum and source ranges recomputed from the rows.
    pub summary: Summary,
    /// Columns of the file.
    pub columns: usize,
}

/// Reads `path` completely, hashing its rows with `algorithm` (the one the recorded
/// checksum names: [`Algorithm::of`]).
///
/// # Errors
/// [`Error::Store`] (e.g. `NotFound`), [`Error::Parquet`] for an unreadable file,
/// [`Error::Verify`] for columns of the wrong type.
pub async fn read(archive: &Archive, path: &Path, algorithm: Algorithm) -> Result<ReadBack> {
    let started = std::time::Instant::now();
    let meta = archive.store.head(path).await?;
    let mut reader = crate::storage::objreader::ObjectReader::new(
        archive.store.clone(),
        path.clone(),
        meta.size,
    );
    let plain = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new()).await?;
    // The string columns as the dictionaries they are stored as: the rows hash the same, and
    // no string is copied out of its dictionary page per row. A file whose schema the hint
    // does not fit is read as it is (the digest then names what is wrong).
    let dict = ArrowReaderOptions::new().with_schema(dictionary_strings(plain.schema()));
    let meta_dict = ArrowReaderMetadata::try_new(plain.metadata().clone(), dict).unwrap_or(plain);
    let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta_dict);
    let columns = builder.schema().fields().len();
    let kv = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|v| {
            v.iter()
                .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let mut stream = builder.with_batch_size(READ_BATCH_ROWS).build()?;
    // Decoding (here) and hashing (on a blocking thread) overlap, as they do in the export;
    // the batches in between are bounded by the channel.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<RecordBatch>(HASH_QUEUE_BATCHES);
    let hasher = tokio::task::spawn_blocking(move || -> Result<Summary> {
        let mut d = Digester::new(algorithm);
        while let Some(b) = rx.blocking_recv() {
            d.update(&b)?;
        }
        Ok(d.finish())
    });
    let decoded = async {
        while let Some(b) = stream.try_next().await? {
            if tx.send(b).await.is_err() {
                // The hasher stopped on an error; it is reported below.
                break;
            }
        }
        Ok::<(), Error>(())
    }
    .await;
    drop(tx);
    let decoding = started.elapsed();
    let hashed = hasher.await.map_err(|e| Error::Verify {
        object: path.to_string(),
        message: format!("checksum thread: {e}"),
    })?;
    // Which of the two bounds the read-back (decoding here, or the checksum thread after the
    // last batch); README, "Archiver speed with provenance".
    tracing::debug!(object = %path, decoding_ms = decoding.as_millis() as u64, total_ms = started.elapsed().as_millis() as u64, "read back");
    // A decoding error first: the hasher only saw the batches before it.
    decoded?;
    Ok(ReadBack {
        bytes: meta.size,
        kv,
        summary: hashed?,
        columns,
    })
}

/// `schema` with every `Utf8` field read as `Dictionary(Int32, Utf8)`.
fn dictionary_strings(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Dictionary(
                Box::new(DataType::Int32),
                Box::new(DataType::Utf8),
            )),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Compares what was read with the log row that describes the object (`written` or later).
///
/// # Errors
/// [`Error::Verify`] naming the first difference.
pub fn compare(path: &str, rb: &ReadBack, expected: &LogRow) -> Result<()> {
    let bad = |message: String| {
        Err(Error::Verify {
            object: path.to_string(),
            message,
        })
    };
    let micros = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.timestamp_micros());
    if expected.bytes != Some(rb.bytes as i64) {
        return bad(format!(
            "size {} bytes, recorded {:?}",
            rb.bytes, expected.bytes
        ));
    }
    if expected.rows != Some(rb.summary.rows as i64) {
        return bad(format!(
            "{} rows, recorded {:?}",
            rb.summary.rows, expected.rows
        ));
    }
    if expected.checksum.as_deref() != Some(rb.summary.checksum.as_str()) {
        return bad(format!(
            "checksum {}, recorded {:?}",
            rb.summary.checksum, expected.checksum
        ));
    }
    if micros(expected.min_ts) != rb.summary.min_ts || micros(expected.max_ts) != rb.summary.max_ts
    {
        return bad(format!(
            "ts range {:?}..{:?}, recorded {:?}..{:?}",
            rb.summary.min_ts, rb.summary.max_ts, expected.min_ts, expected.max_ts
        ));
    }
    if rb.kv.get(keys::ROWS) != Some(&rb.summary.rows.to_string())
        || rb.kv.get(keys::CHECKSUM) != Some(&rb.summary.checksum)
    {
        return bad("footer metadata does not match the rows".into());
    }
    let want_columns = match rb.kv.get(keys::SCHEMA_VERSION).map(String::as_str) {
        Some(format::FORMAT_VERSION_V1) => Some(format::V1_COLUMNS),
        Some(format::FORMAT_VERSION) => Some(format::COLUMNS.len()),
        _ => None,
    };
    if want_columns.is_some_and(|n| n != rb.columns) {
        return bad(format!(
            "{} columns, but the footer says file format version {:?}",
            rb.columns,
            rb.kv.get(keys::SCHEMA_VERSION)
        ));
    }
    if let Some(recorded) = &expected.source_ranges {
        if *recorded != rb.summary.source_ranges || rb.kv.get(keys::SOURCE_RANGES) != Some(recorded)
        {
            return bad(format!(
                "source ranges {:?} (footer {:?}), recorded {recorded:?}",
                rb.summary.source_ranges,
                rb.kv.get(keys::SOURCE_RANGES)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::export::catalog::Chunk;
    use crate::export::format::kv;
    use crate::export::pgcopy::BatchBuilder;
    use crate::export::prov::Prov;
    use crate::state::log::Step;
    use arrow::array::{Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
    use object_store::memory::InMemory;
    use object_store::PutPayload;
    use parquet::arrow::ArrowWriter;

    fn archive() -> Archive {
        Archive {
            store: Arc::new(InMemory::new()),
            root: "memory:///".into(),
            local_dir: None,
        }
    }

    /// Writes `batch` as the object `path` with `props`; returns its size.
    async fn put(
        a: &Archive,
        path: &Path,
        batch: &RecordBatch,
        props: parquet::file::properties::WriterProperties,
    ) -> u64 {
        let mut buf = Vec::new();
        let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
        let n = buf.len() as u64;
        a.store.put(path, PutPayload::from(buf)).await.unwrap();
        n
    }

    /// The log row recording an object of `rows` rows, `bytes` bytes, ts 1..=2.
    fn recorded(bytes: u64, checksum: &str, source_ranges: Option<&str>) -> LogRow {
        let t = |s| chrono::DateTime::from_timestamp(s, 0);
        let chunk = Chunk {
            schema: "s".into(),
            name: "c".into(),
            range_start: t(0).unwrap(),
            range_end: t(10).unwrap(),
            bytes: 0,
            est_rows: 0,
        };
        let mut row = LogRow::new("r", "a", &chunk, Step::Written);
        row.bytes = Some(bytes as i64);
        row.rows = Some(2);
        row.checksum = Some(checksum.to_string());
        row.min_ts = t(1);
        row.max_ts = t(2);
        row.source_ranges = source_ranges.map(str::to_string);
        row
    }

    #[tokio::test]
    async fn an_object_of_format_version_1_still_verifies() {
        // As the archiver wrote it before the provenance columns: seven columns, no field ids,
        // the checksum over the old encoding (written out here by hand), SHA-256.
        let batch = RecordBatch::try_new(
            format::schema_v1(),
            vec![
                Arc::new(StringArray::from(vec!["P1", "P1"])),
                Arc::new(StringArray::from(vec!["hr", "hr"])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![1_000_000, 2_000_000])
                        .with_timezone("UTC"),
                ),
                Arc::new(Float64Array::from(vec![60.0, 61.5])),
                Arc::new(StringArray::from(vec![Some("bpm"), None])),
                Arc::new(StringArray::from(vec![None::<&str>, None])),
                Arc::new(StringArray::from(vec![Some("S"), Some("S")])),
            ],
        )
        .unwrap();
        let mut canonical = Vec::new();
        for (ts, v, unit) in [
            (1_000_000i64, 60.0f64, Some("bpm")),
            (2_000_000, 61.5, None),
        ] {
            canonical.extend(2u32.to_le_bytes());
            canonical.extend(b"P1");
            canonical.extend(2u32.to_le_bytes());
            canonical.extend(b"hr");
            canonical.extend(ts.to_le_bytes());
            canonical.extend(v.to_bits().to_le_bytes());
            match unit {
                Some(u) => {
                    canonical.push(1);
                    canonical.extend((u.len() as u32).to_le_bytes());
                    canonical.extend(u.as_bytes());
                }
                None => canonical.push(0),
            }
            canonical.push(0);
            canonical.extend([1, 1, 0, 0, 0, b'S']);
        }
        let hex: String = <sha2::Sha256 as sha2::Digest>::digest(&canonical)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let checksum = format!("sha256:{hex}");
        let props = parquet::file::properties::WriterProperties::builder()
            .set_key_value_metadata(Some(vec![
                kv(keys::SCHEMA_VERSION, "1"),
                kv(keys::ROWS, "2"),
                kv(keys::CHECKSUM, checksum.clone()),
            ]))
            .build();
        let a = archive();
        let path = Path::from("measurements/old.parquet");
        let bytes = put(&a, &path, &batch, props).await;
        let rb = read(&a, &path, Algorithm::of(Some(&checksum)))
            .await
            .unwrap();
        assert_eq!(rb.columns, format::V1_COLUMNS);
        assert_eq!(rb.summary.checksum, checksum);
        compare(path.as_ref(), &rb, &recorded(bytes, &checksum, None)).unwrap();
        // A record that names source ranges does not match an object without any.
        let lying = recorded(bytes, &checksum, Some("vitals/0:1-2"));
        assert!(compare(path.as_ref(), &rb, &lying).is_err());
    }

    #[tokio::test]
    async fn an_object_of_format_version_2_verifies_with_its_source_ranges() {
        let mut b = BatchBuilder::new(2);
        let p =
            |o| Prov::from_options([Some(0), Some(0), Some(3_000_000), Some(1), Some(4), Some(o)]);
        let strs = [Some("P1"), Some("hr"), None, None, None, Some("vitals")];
        b.append(strs, 1_000_000, 60.0, &p(17));
        b.append(strs, 2_000_000, 61.0, &p(12));
        let batch = b.finish().unwrap();
        let mut d = Digester::default();
        d.update(&batch).unwrap();
        let s = d.finish();
        assert_eq!(s.source_ranges, "vitals/4:12-17");
        let footer = |version: &str| {
            vec![
                kv(keys::SCHEMA_VERSION, version),
                kv(keys::ROWS, "2"),
                kv(keys::CHECKSUM, s.checksum.clone()),
                kv(keys::SOURCE_RANGES, s.source_ranges.clone()),
            ]
        };
        let a = archive();
        let path = Path::from("measurements/new.parquet");
        let props = format::writer_properties(1024, footer(format::FORMAT_VERSION));
        let bytes = put(&a, &path, &batch, props).await;
        let rb = read(&a, &path, Algorithm::default()).await.unwrap();
        assert_eq!(rb.columns, format::COLUMNS.len());
        let row = recorded(bytes, &s.checksum, Some("vitals/4:12-17"));
        compare(path.as_ref(), &rb, &row).unwrap();
        // A footer that calls the 14 columns version 1 is refused.
        let props = format::writer_properties(1024, footer("1"));
        let bytes = put(&a, &path, &batch, props).await;
        let rb = read(&a, &path, Algorithm::default()).await.unwrap();
        let row = recorded(bytes, &s.checksum, Some("vitals/4:12-17"));
        assert!(compare(path.as_ref(), &rb, &row).is_err());
    }
}
