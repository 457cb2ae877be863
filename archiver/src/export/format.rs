//! The archive's file format: Arrow schema, Parquet writer settings, key-value metadata keys.
//!
//! Columns (the `measurements` hypertable, `schemas/sql/0001_measurements.sql`):
//!
//! | column | Arrow type | Parquet |
//! |---|---|---|
//! | `participant_id` | Utf8, not null | BYTE_ARRAY (STRING), dictionary |
//! | `metric` | Utf8, not null | BYTE_ARRAY (STRING), dictionary |
//! | `ts` | Timestamp(Microsecond, "UTC"), not null | INT64 TIMESTAMP(MICROS, isAdjustedToUTC=true), delta-encoded |
//! | `value` | Float64, not null | DOUBLE, dictionary (vitals repeat values) |
//! | `unit`, `device_id`, `study_id` | Utf8, nullable | BYTE_ARRAY (STRING), dictionary |
//!
//! Microsecond UTC timestamps are what Spark, DuckDB, pandas and polars all read as
//! timezone-aware instants (Parquet format spec, LogicalTypes.md, TIMESTAMP). Rows are sorted by
//! (participant_id, metric, ts) in bytewise (`COLLATE "C"`) order, the order of Parquet's
//! min/max statistics, so row-group and page statistics prune by participant.

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;
use std::sync::Arc;

/// Version of this file layout, written to every file as `vitalsink.schema_version`.
pub const FORMAT_VERSION: &str = "1";

/// Key-value metadata keys written to every file's footer.
pub mod keys {
    /// Source shard name.
    pub const SHARD: &str = "vitalsink.shard";
    /// Source chunk, `schema.name`.
    pub const CHUNK: &str = "vitalsink.chunk";
    /// Chunk range start, RFC 3339.
    pub const RANGE_START: &str = "vitalsink.range_start";
    /// Chunk range end (exclusive), RFC 3339.
    pub const RANGE_END: &str = "vitalsink.range_end";
    /// Rows in the file.
    pub const ROWS: &str = "vitalsink.rows";
    /// Smallest `ts`, RFC 3339 (absent for an empty chunk).
    pub const MIN_TS: &str = "vitalsink.min_ts";
    /// Largest `ts`, RFC 3339.
    pub const MAX_TS: &str = "vitalsink.max_ts";
    /// Content checksum, see [`crate::export::checksum`].
    pub const CHECKSUM: &str = "vitalsink.checksum";
    /// The archive file format version ([`super::FORMAT_VERSION`]).
    pub const SCHEMA_VERSION: &str = "vitalsink.schema_version";
    /// The shard's database schema version.
    pub const DB_SCHEMA_VERSION: &str = "vitalsink.db_schema_version";
    /// Attempt id that named the file.
    pub const ATTEMPT: &str = "vitalsink.attempt";
}

/// The columns in file order, as selected from the chunk.
pub const COLUMNS: [&str; 7] = [
    "participant_id",
    "metric",
    "ts",
    "value",
    "unit",
    "device_id",
    "study_id",
];

/// The Arrow schema of an archive file.
pub fn schema() -> SchemaRef {
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("participant_id", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("ts", utc, false),
        Field::new("value", DataType::Float64, false),
        Field::new("unit", DataType::Utf8, true),
        Field::new("device_id", DataType::Utf8, true),
        Field::new("study_id", DataType::Utf8, true),
    ]))
}

/// Writer settings: zstd level 3, `row_group_rows` rows per row group, dictionary encoding for
/// strings and values, DELTA_BINARY_PACKED for `ts` (sorted timestamps compress to a few bits
/// a row), page statistics, the sort order declared as `sorting_columns`, and `kv` in the
/// footer.
pub fn writer_properties(row_group_rows: usize, kv: Vec<KeyValue>) -> WriterProperties {
    let zstd = ZstdLevel::try_new(3).map_or(Compression::SNAPPY, Compression::ZSTD);
    let ts = ColumnPath::from("ts");
    WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(zstd)
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_dictionary_enabled(true)
        .set_column_dictionary_enabled(ts.clone(), false)
        .set_column_encoding(ts, Encoding::DELTA_BINARY_PACKED)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(Some(
            (0..3)
                .map(|i| SortingColumn {
                    column_idx: i,
                    descending: false,
                    nulls_first: false,
                })
                .collect(),
        ))
        .set_created_by(format!("vitalsink-archiver {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(kv))
        .build()
}

/// A key-value metadata entry.
pub fn kv(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue::new(key.to_string(), value.into())
}

/// Typed views of the columns of one batch of the archive schema; the string columns as `S`:
/// plain `Utf8` arrays ([`Columns::of`]) or `Dictionary(Int32, Utf8)` ones, as verification
/// reads them back ([`Columns::of_dict`]).
#[derive(Debug)]
pub struct Columns<'a, S = &'a arrow::array::StringArray> {
    /// `participant_id`.
    pub pid: S,
    /// `metric`.
    pub metric: S,
    /// `ts`, µs since the Unix epoch.
    pub ts: &'a arrow::array::TimestampMicrosecondArray,
    /// `value`.
    pub value: &'a arrow::array::Float64Array,
    /// `unit`, `device_id`, `study_id`.
    pub opt: [S; 3],
}

/// A dictionary-encoded string column of a batch.
pub type DictStrings<'a> =
    arrow::array::TypedDictionaryArray<'a, arrow::datatypes::Int32Type, arrow::array::StringArray>;

impl<'a> Columns<'a> {
    /// The columns of `batch`, strings plain.
    ///
    /// # Errors
    /// [`crate::Error::Verify`] naming `what` when the batch does not have the archive
    /// schema's column types.
    pub fn of(batch: &'a arrow::array::RecordBatch, what: &str) -> crate::Result<Self> {
        use arrow::array::AsArray;
        typed(batch, what, |a| a.as_string_opt::<i32>())
    }
}

impl<'a> Columns<'a, DictStrings<'a>> {
    /// The columns of `batch`, strings as `Dictionary(Int32, Utf8)`.
    ///
    /// # Errors
    /// As [`Columns::of`].
    pub fn of_dict(batch: &'a arrow::array::RecordBatch, what: &str) -> crate::Result<Self> {
        use arrow::array::AsArray;
        typed(batch, what, |a| {
            a.as_dictionary_opt::<arrow::datatypes::Int32Type>()
                .and_then(|d| d.downcast_dict::<arrow::array::StringArray>())
        })
    }
}

/// The columns of `batch` with the string columns taken by `strings`.
fn typed<'a, S>(
    batch: &'a arrow::array::RecordBatch,
    what: &str,
    strings: impl Fn(&'a arrow::array::ArrayRef) -> Option<S>,
) -> crate::Result<Columns<'a, S>> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, TimestampMicrosecondType};
    let bad = || crate::Error::Verify {
        object: what.to_string(),
        message: "columns do not have the archive schema's types".into(),
    };
    if batch.num_columns() != COLUMNS.len() {
        return Err(bad());
    }
    let s = |i: usize| strings(batch.column(i)).ok_or_else(bad);
    Ok(Columns {
        pid: s(0)?,
        metric: s(1)?,
        ts: batch
            .column(2)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(bad)?,
        value: batch
            .column(3)
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(bad)?,
        opt: [s(4)?, s(5)?, s(6)?],
    })
}
