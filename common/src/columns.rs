//! The columns of the `measurements` hypertable, in table order: the one list that the ingest
//! COPY, the archive's Parquet schema, restore, shard moves and `query` agree on.
//!
//! The first seven are schema version 1 (`schemas/sql/0001_measurements.sql`); the last seven
//! came with schema version 12 (`schemas/sql/0012_provenance.sql`) and are NULL in rows
//! written before it. `schemas/README.md`, "A reading's identity, time and source", says what
//! each means.

/// Every column, in table order. A Parquet object's `PARQUET:field_id` of a column is its
/// position here plus one ([`field_id`]).
pub const COLUMNS: [&str; 14] = [
    "participant_id",
    "metric",
    "ts",
    "value",
    "unit",
    "device_id",
    "study_id",
    "utc_offset_min",
    "occurrence",
    "received_at",
    "received_at_type",
    "src_topic",
    "src_partition",
    "src_offset",
];

/// The PostgreSQL type of each of [`COLUMNS`], in the same order.
pub const COLUMN_TYPES: [&str; 14] = [
    "text",
    "text",
    "timestamptz",
    "double precision",
    "text",
    "text",
    "text",
    "smallint",
    "smallint",
    "timestamptz",
    "smallint",
    "text",
    "integer",
    "bigint",
];

/// Columns of schema version 1 (the first seven of [`COLUMNS`]), what rows and archive
/// objects from before schema version 12 have.
pub const V1_COLUMNS: usize = 7;

/// The schema version that added the provenance columns.
pub const PROVENANCE_SCHEMA_VERSION: i32 = 12;

/// `received_at_type` of a record whose timestamp the producer set (KIP-32 CreateTime).
pub const RECEIVED_CREATE_TIME: i16 = 0;
/// `received_at_type` of a record whose timestamp the broker set (KIP-32 LogAppendTime).
pub const RECEIVED_LOG_APPEND_TIME: i16 = 1;

/// The columns as a comma-separated SQL list, in table order.
pub fn column_list() -> String {
    COLUMNS.join(", ")
}

/// The columns with their types, `name type, …`: a table of the same shape as
/// `measurements` without reading it (`CREATE TABLE … (LIKE measurements)` needs `SELECT` on
/// it, which the ingest role does not have; schemas/ROLES.md).
pub fn column_defs() -> String {
    COLUMNS
        .iter()
        .zip(COLUMN_TYPES)
        .map(|(c, t)| format!("{c} {t}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The Parquet field id of `column` (1-based position in [`COLUMNS`]), `None` for another
/// name. Field ids let the same files be registered in an Apache Iceberg table later without
/// rewriting them (Iceberg spec, "Column Projection": readers match columns by field id).
pub fn field_id(column: &str) -> Option<i32> {
    COLUMNS
        .iter()
        .position(|c| *c == column)
        .and_then(|i| i32::try_from(i + 1).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_ids_are_positions_from_one() {
        assert_eq!(field_id("participant_id"), Some(1));
        assert_eq!(field_id("src_offset"), Some(14));
        assert_eq!(field_id("nope"), None);
        assert!(column_list().starts_with("participant_id, metric, ts, value"));
        assert!(column_defs().ends_with("src_partition integer, src_offset bigint"));
    }
}
