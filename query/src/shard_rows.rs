//! A shard's rows into Arrow: one builder per column, by the PostgreSQL type the select list
//! gives it ([`crate::shard_scan::select_expr`], [`crate::aggregate::partial`]), read in
//! PostgreSQL's binary format; and each value's length on the wire, counted as the bytes that
//! came from the shards.

use arrow::array::{
    ArrayRef, Date32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, ListBuilder,
    StringBuilder, StringViewBuilder, TimestampMicrosecondBuilder, TimestampNanosecondBuilder,
    UInt64Builder,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::error::DataFusionError;
use std::sync::Arc;
use tokio_postgres::types::{FromSql, Type};

/// One column's builder, by the PostgreSQL type read into it.
pub(crate) enum Col {
    /// `text`.
    Text(StringBuilder),
    /// `text`, into a string view column.
    TextView(StringViewBuilder),
    /// `timestamptz` as integer microseconds ([`crate::shard_scan::select_expr`]), with the field's time zone.
    Ts(TimestampMicrosecondBuilder, Option<Arc<str>>),
    /// `timestamptz` as integer nanoseconds (`extract(epoch …) * 1e9`), with the time zone.
    TsNs(TimestampNanosecondBuilder, Option<Arc<str>>),
    /// `float8`.
    F64(Float64Builder),
    /// `smallint`.
    I16(Int16Builder),
    /// `integer`.
    I32(Int32Builder),
    /// `bigint`.
    I64(Int64Builder),
    /// `bigint` read into an unsigned column (a count; never negative).
    U64(UInt64Builder),
    /// `integer` days since 1970-01-01 (a date, as `date - date '1970-01-01'`).
    Date(Date32Builder),
    /// `text[]` (one dimension), as a list of text.
    TextList(ListBuilder<StringBuilder>),
}

/// The builders of `schema`'s columns; an error naming a column of a type a shard scan
/// cannot read.
pub(crate) fn builders(schema: &SchemaRef) -> Result<Vec<Col>, DataFusionError> {
    schema
        .fields()
        .iter()
        .map(|f| {
            Ok(match f.data_type() {
                DataType::Timestamp(TimeUnit::Microsecond, tz) => {
                    Col::Ts(TimestampMicrosecondBuilder::new(), tz.clone())
                }
                DataType::Timestamp(TimeUnit::Nanosecond, tz) => {
                    Col::TsNs(TimestampNanosecondBuilder::new(), tz.clone())
                }
                DataType::Float64 => Col::F64(Float64Builder::new()),
                DataType::Int16 => Col::I16(Int16Builder::new()),
                DataType::Int32 => Col::I32(Int32Builder::new()),
                DataType::Int64 => Col::I64(Int64Builder::new()),
                DataType::UInt64 => Col::U64(UInt64Builder::new()),
                DataType::Date32 => Col::Date(Date32Builder::new()),
                DataType::Utf8 => Col::Text(StringBuilder::new()),
                DataType::Utf8View => Col::TextView(StringViewBuilder::new()),
                DataType::List(item) if item.data_type() == &DataType::Utf8 => {
                    Col::TextList(ListBuilder::new(StringBuilder::new()).with_field(item.clone()))
                }
                other => {
                    return Err(DataFusionError::NotImplemented(format!(
                        "shard scan of column {} of type {other}",
                        f.name()
                    )))
                }
            })
        })
        .collect()
}

/// The batch of the `rows` rows appended to `cols` since the last one.
pub(crate) fn finish(
    schema: &SchemaRef,
    cols: &mut [Col],
    rows: usize,
) -> Result<RecordBatch, DataFusionError> {
    let arrays: Vec<ArrayRef> = cols
        .iter_mut()
        .map(|c| -> ArrayRef {
            match c {
                Col::Text(b) => Arc::new(b.finish()),
                Col::TextView(b) => Arc::new(b.finish()),
                Col::Ts(b, tz) => Arc::new(b.finish().with_timezone_opt(tz.clone())),
                Col::TsNs(b, tz) => Arc::new(b.finish().with_timezone_opt(tz.clone())),
                Col::F64(b) => Arc::new(b.finish()),
                Col::I16(b) => Arc::new(b.finish()),
                Col::I32(b) => Arc::new(b.finish()),
                Col::I64(b) => Arc::new(b.finish()),
                Col::U64(b) => Arc::new(b.finish()),
                Col::Date(b) => Arc::new(b.finish()),
                Col::TextList(b) => Arc::new(b.finish()),
            }
        })
        .collect();
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )?)
}

/// Appends column `i` of `row` to `col`.
pub(crate) fn append(
    col: &mut Col,
    row: &tokio_postgres::Row,
    i: usize,
) -> Result<(), tokio_postgres::Error> {
    match col {
        Col::Text(b) => b.append_option(row.try_get::<_, Option<&str>>(i)?),
        Col::TextView(b) => b.append_option(row.try_get::<_, Option<&str>>(i)?),
        Col::Ts(b, _) => b.append_option(row.try_get::<_, Option<i64>>(i)?),
        Col::TsNs(b, _) => b.append_option(row.try_get::<_, Option<i64>>(i)?),
        Col::F64(b) => b.append_option(row.try_get::<_, Option<f64>>(i)?),
        Col::I16(b) => b.append_option(row.try_get::<_, Option<i16>>(i)?),
        Col::I32(b) => b.append_option(row.try_get::<_, Option<i32>>(i)?),
        Col::I64(b) => b.append_option(row.try_get::<_, Option<i64>>(i)?),
        Col::U64(b) => b.append_option(
            row.try_get::<_, Option<i64>>(i)?
                .map(|v| u64::try_from(v).unwrap_or_default()),
        ),
        Col::Date(b) => b.append_option(row.try_get::<_, Option<i32>>(i)?),
        Col::TextList(b) => match row.try_get::<_, Option<Vec<Option<&str>>>>(i)? {
            Some(items) => {
                for item in items {
                    b.values().append_option(item);
                }
                b.append(true);
            }
            None => b.append(false),
        },
    }
    Ok(())
}

/// The length of a value as it came over the wire (binary format).
struct WireLen(usize);

impl<'a> FromSql<'a> for WireLen {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Self(raw.len()))
    }

    fn from_sql_null(_ty: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Self(0))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

/// Bytes of `row`'s values.
pub(crate) fn row_bytes(row: &tokio_postgres::Row) -> u64 {
    (0..row.len())
        .map(|i| row.try_get::<_, WireLen>(i).map_or(0, |w| w.0 as u64))
        .sum()
}
