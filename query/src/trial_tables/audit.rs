//! The `audit_log` table: the audit trail of the map shard (`vitalsink_common::audit`), one
//! row per entry in `seq` order; filters on `seq` and `at` are pushed into the `SELECT` (both
//! indexed).

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use std::sync::Arc;

use super::{ts_field, MapShard, SqlTable};

/// The table's schema, in the trail's column order: `seq` Int64, `at` Timestamp(µs, UTC),
/// `os_user`, `db_role`, `host`, `action`, `command` Utf8, `reason` Utf8 (nullable),
/// `participants` List(Utf8) (sorted, empty when none), `details` Utf8 (JSON object text),
/// `prev_hash`, `hash` Utf8. Every column but `reason` is NOT NULL, as in the database.
pub fn schema() -> SchemaRef {
    let text = |n: &str| Field::new(n, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        ts_field("at", false),
        text("os_user"),
        text("db_role"),
        text("host"),
        text("action"),
        text("command"),
        Field::new("reason", DataType::Utf8, true),
        Field::new(
            "participants",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            false,
        ),
        text("details"),
        text("prev_hash"),
        text("hash"),
    ]))
}

/// The `audit_log` table of `map`.
pub fn table(map: MapShard) -> SqlTable {
    SqlTable::new("audit_log", schema(), &["seq", "at"], "seq", map)
}
