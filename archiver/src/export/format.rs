//! The archive's file format: Arrow schema, Parquet writer settings, key-value metadata keys.
//!
//! Columns: the `measurements` hypertable's, in table order ([`COLUMNS`], i.e.
//! [`vitalsink_common::columns::COLUMNS`]); each Arrow field carries `PARQUET:field_id` =
//! its position plus one ([`vitalsink_common::columns::field_id`]), which parquet-rs writes as
//! the Parquet field id (so the files can be registered in an Apache Iceberg table as they are):
//!
//! | id | column | Arrow type | Parquet |
//! |---|---|---|---|
//! | 1 | `participant_id` | Utf8, not null | BYTE_ARRAY (STRING), dictionary |
//! | 2 | `metric` | Utf8, not null | BYTE_ARRAY (STRING), dictionary |
//! | 3 | `ts` | Timestamp(Microsecond, "UTC"), not null | INT64 TIMESTAMP(MICROS, isAdjustedToUTC=true), DELTA_BINARY_PACKED |
//! | 4 | `value` | Float64, not null | DOUBLE, dictionary (vitals repeat values) |
//! | 5–7 | `unit`, `device_id`, `study_id` | Utf8, nullable | BYTE_ARRAY (STRING), dictionary |
//! | 8 | `utc_offset_min` | Int16, nullable | INT32 (INT(16)), DELTA_BINARY_PACKED (one offset for long runs) |
//! | 9 | `occurrence` | Int16, nullable | INT32 (INT(16)), DELTA_BINARY_PACKED (mostly 0) |
//! | 10 | `received_at` | Timestamp(Microsecond, "UTC"), nullable | INT64 TIMESTAMP(MICROS, UTC), DELTA_BINARY_PACKED |
//! | 11 | `received_at_type` | Int16, nullable | INT32 (INT(16)), DELTA_BINARY_PACKED |
//! | 12 | `src_topic` | Utf8, nullable | BYTE_ARRAY (STRING), dictionary |
//! | 13 | `src_partition` | Int32, nullable | INT32, DELTA_BINARY_PACKED (one per participant) |
//! | 14 | `src_offset` | Int64, nullable | INT64, DELTA_BINARY_PACKED (rises with ts within a participant) |
//!
//! Columns 8–14 are the provenance of schema version 12 (schemas/README.md, "A reading's
//! identity, time and source"), NULL for rows written before it. File format versions
//! ([`FORMAT_VERSION`], footer key `vitalsink.schema_version`):
//! - `1`: columns 1–7 only, no field ids; objects archived before schema version 12. They stay
//!   as they are: verification, `restore` and `migrate-archive` read both versions ([`Columns`]
//!   has no provenance for them), and readers fill the missing columns with NULL;
//! - `2`: all 14 columns with field ids, and the footer's `vitalsink.source_ranges`.
//!
//! Microsecond UTC timestamps are what Spark, DuckDB, pandas and polars all read as
//! timezone-aware instants (Parquet format spec, LogicalTypes.md, TIMESTAMP). Rows are sorted by
//! (participant_id, metric, ts) in bytewise (`COLLATE "C"`) order, the order of Parquet's
//! min/max statistics, so row-group and page statistics prune by participant.

use arrow::array::{
    Float64Array, Int16Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::PARQUET_FIELD_ID_META_KEY;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use vitalsink_common::columns;

/// Version of this file layout, written to every file as `vitalsink.schema_version`.
pub const FORMAT_VERSION: &str = "2";

/// The file format version of objects written before the provenance columns (7 columns).
pub const FORMAT_VERSION_V1: &str = "1";

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
    /// Lineage (format version 2): per Kafka topic and partition, the smallest and largest
    /// `src_offset` of the file's rows, `topic/partition:first-last` joined by `,` in (topic,
    /// partition) order; rows without lineage are left out, so a file of rows from before
    /// schema version 12 has an empty value
    /// ([`crate::export::lineage::SourceRanges`]).
    pub const SOURCE_RANGES: &str = "vitalsink.source_ranges";
}

/// The columns in file order, as selected from the chunk: the hypertable's
/// ([`vitalsink_common::columns::COLUMNS`]).
pub use vitalsink_common::columns::COLUMNS;

/// Columns of a format version 1 object (the first seven of [`COLUMNS`]).
pub const V1_COLUMNS: usize = columns::V1_COLUMNS;

/// The Arrow schema of an archive file (format version [`FORMAT_VERSION`]): every column of
/// [`COLUMNS`] with its `PARQUET:field_id`.
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(
                COLUMNS
                    .iter()
                    .map(|name| {
                        let id = columns::field_id(name).unwrap_or_default();
                        field(name).with_metadata(HashMap::from([(
                            PARQUET_FIELD_ID_META_KEY.to_string(),
                            id.to_string(),
                        )]))
                    })
                    .collect::<Vec<_>>(),
            ))
        })
        .clone()
}

/// The Arrow schema of a format version 1 object: the first seven columns, no field ids.
pub fn schema_v1() -> SchemaRef {
    Arc::new(Schema::new(
        COLUMNS[..V1_COLUMNS]
            .iter()
            .map(|name| field(name))
            .collect::<Vec<_>>(),
    ))
}

/// The Arrow field of column `name` (without metadata).
fn field(name: &str) -> Field {
    let utc = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    match name {
        "participant_id" | "metric" => Field::new(name, DataType::Utf8, false),
        "ts" => Field::new(name, utc(), false),
        "value" => Field::new(name, DataType::Float64, false),
        "utc_offset_min" | "occurrence" | "received_at_type" => {
            Field::new(name, DataType::Int16, true)
        }
        "received_at" => Field::new(name, utc(), true),
        "src_partition" => Field::new(name, DataType::Int32, true),
        "src_offset" => Field::new(name, DataType::Int64, true),
        // unit, device_id, study_id, src_topic
        _ => Field::new(name, DataType::Utf8, true),
    }
}

/// Writer settings: zstd level 3, `row_group_rows` rows per row group, dictionary encoding for
/// strings and values, DELTA_BINARY_PACKED for every integer column (sorted or nearly sorted
/// integers compress to a few bits a row, and the small provenance integers, constant over
/// long runs of a participant's rows, to almost nothing), page statistics, the sort order
/// declared as `sorting_columns`, and `kv` in the footer.
///
/// The small integers (`utc_offset_min`, `occurrence`, `received_at_type`, `src_partition`)
/// were dictionary-encoded before: on 5 M rows of the `archive_export` bench's data the
/// dictionary's per-value hashing cost 6 % of the merge-and-encode phase (0.92–1.01 s against
/// 1.01–1.08 s, three interleaved `archiver run`s each) for 0.2 % fewer bytes (6.12 against
/// 6.14 MB). Objects written either way read the same: the encoding is per column chunk.
pub fn writer_properties(row_group_rows: usize, kv: Vec<KeyValue>) -> WriterProperties {
    let zstd = ZstdLevel::try_new(3).map_or(Compression::SNAPPY, Compression::ZSTD);
    let mut b = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(zstd)
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_dictionary_enabled(true);
    for delta in [
        "ts",
        "received_at",
        "src_offset",
        "utc_offset_min",
        "occurrence",
        "received_at_type",
        "src_partition",
    ] {
        let c = ColumnPath::from(delta);
        b = b
            .set_column_dictionary_enabled(c.clone(), false)
            .set_column_encoding(c, Encoding::DELTA_BINARY_PACKED);
    }
    b.set_statistics_enabled(EnabledStatistics::Page)
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

/// Typed views of the columns of one batch of the archive schema, of either format version;
/// the string columns as `S`: plain `Utf8` arrays ([`Columns::of`]) or `Dictionary(Int32,
/// Utf8)` ones, as verification reads them back ([`Columns::of_dict`]).
#[derive(Debug)]
pub struct Columns<'a, S = &'a StringArray> {
    /// `participant_id`.
    pub pid: S,
    /// `metric`.
    pub metric: S,
    /// `ts`, µs since the Unix epoch.
    pub ts: &'a TimestampMicrosecondArray,
    /// `value`.
    pub value: &'a Float64Array,
    /// `unit`, `device_id`, `study_id`.
    pub opt: [S; 3],
    /// The provenance columns; `None` for a format version 1 batch (7 columns), whose rows
    /// have none (NULL in all of them).
    pub prov: Option<ProvColumns<'a, S>>,
}

/// The provenance columns of a batch (format version 2).
#[derive(Debug)]
pub struct ProvColumns<'a, S = &'a StringArray> {
    /// `utc_offset_min`.
    pub utc_offset_min: &'a Int16Array,
    /// `occurrence`.
    pub occurrence: &'a Int16Array,
    /// `received_at`, µs since the Unix epoch.
    pub received_at: &'a TimestampMicrosecondArray,
    /// `received_at_type`.
    pub received_at_type: &'a Int16Array,
    /// `src_topic`.
    pub src_topic: S,
    /// `src_partition`.
    pub src_partition: &'a Int32Array,
    /// `src_offset`.
    pub src_offset: &'a Int64Array,
}

/// A dictionary-encoded string column of a batch.
pub type DictStrings<'a> =
    arrow::array::TypedDictionaryArray<'a, arrow::datatypes::Int32Type, StringArray>;

impl<'a> Columns<'a> {
    /// The columns of `batch`, strings plain.
    ///
    /// # Errors
    /// [`crate::Error::Verify`] naming `what` when the batch does not have the columns (names
    /// and types) of either format version.
    pub fn of(batch: &'a RecordBatch, what: &str) -> crate::Result<Self> {
        use arrow::array::AsArray;
        typed(batch, what, |a| a.as_string_opt::<i32>())
    }
}

impl<'a> Columns<'a, DictStrings<'a>> {
    /// The columns of `batch`, strings as `Dictionary(Int32, Utf8)`.
    ///
    /// # Errors
    /// As [`Columns::of`].
    pub fn of_dict(batch: &'a RecordBatch, what: &str) -> crate::Result<Self> {
        use arrow::array::AsArray;
        typed(batch, what, |a| {
            a.as_dictionary_opt::<arrow::datatypes::Int32Type>()
                .and_then(|d| d.downcast_dict::<StringArray>())
        })
    }
}

/// The columns of `batch` (7 or 14 of [`COLUMNS`], in order) with the string columns taken by
/// `strings`.
fn typed<'a, S>(
    batch: &'a RecordBatch,
    what: &str,
    strings: impl Fn(&'a arrow::array::ArrayRef) -> Option<S>,
) -> crate::Result<Columns<'a, S>> {
    use arrow::array::AsArray;
    use arrow::datatypes::{
        Float64Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
    };
    let bad = || crate::Error::Verify {
        object: what.to_string(),
        message: "columns do not have the archive schema's names and types".into(),
    };
    let n = batch.num_columns();
    let schema = batch.schema();
    if (n != V1_COLUMNS && n != COLUMNS.len())
        || schema
            .fields()
            .iter()
            .zip(COLUMNS)
            .any(|(f, name)| f.name() != name)
    {
        return Err(bad());
    }
    let s = |i: usize| strings(batch.column(i)).ok_or_else(bad);
    let ts = |i: usize| {
        batch
            .column(i)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(bad)
    };
    let i16s = |i: usize| {
        batch
            .column(i)
            .as_primitive_opt::<Int16Type>()
            .ok_or_else(bad)
    };
    let prov = if n == COLUMNS.len() {
        Some(ProvColumns {
            utc_offset_min: i16s(7)?,
            occurrence: i16s(8)?,
            received_at: ts(9)?,
            received_at_type: i16s(10)?,
            src_topic: s(11)?,
            src_partition: batch
                .column(12)
                .as_primitive_opt::<Int32Type>()
                .ok_or_else(bad)?,
            src_offset: batch
                .column(13)
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(bad)?,
        })
    } else {
        None
    };
    Ok(Columns {
        pid: s(0)?,
        metric: s(1)?,
        ts: ts(2)?,
        value: batch
            .column(3)
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(bad)?,
        opt: [s(4)?, s(5)?, s(6)?],
        prov,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
