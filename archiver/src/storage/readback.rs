//! Reading an archived object back: streamed row group by row group, its rows hashed with the
//! same [`crate::export::checksum::Digester`] the export used, and compared with what the log or
//! manifest recorded.

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
use crate::export::format::keys;
use crate::state::log::LogRow;
use crate::storage::store::Archive;

/// Rows per decoded batch while reading back.
const READ_BATCH_ROWS: usize = 65_536;

/// What an object holds: size, footer key-value metadata and the summary of its rows.
#[derive(Debug, Clone)]
pub struct ReadBack {
    /// Object size, bytes.
    pub bytes: u64,
    /// Footer key-value metadata.
    pub kv: BTreeMap<String, String>,
    /// Rows, ts range and checksum recomputed from the rows.
    pub summary: Summary,
}

/// Reads `path` completely, hashing its rows with `algorithm` (the one the recorded
/// checksum names: [`Algorithm::of`]).
///
/// # Errors
/// [`Error::Store`] (e.g. `NotFound`), [`Error::Parquet`] for an unreadable file,
/// [`Error::Verify`] for columns of the wrong type.
pub async fn read(archive: &Archive, path: &Path, algorithm: Algorithm) -> Result<ReadBack> {
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
    let mut d = Digester::new(algorithm);
    while let Some(b) = stream.try_next().await? {
        d.update(&b)?;
    }
    Ok(ReadBack {
        bytes: meta.size,
        kv,
        summary: d.finish(),
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
    Ok(())
}
