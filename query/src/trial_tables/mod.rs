//! The trial's own tables beside `measurements` (`schemas/sql/0014_trial.sql`), read from the
//! map shard (the first configured shard) in both `query sql` and Flight SQL:
//!
//! - **`audit_log`** ([`audit::schema`]): the audit trail, one row per operator action, in
//!   `seq` order: `seq` (Int64), `at` (timestamp µs UTC, the map shard's transaction time),
//!   `os_user`, `db_role`, `host`, `action`, `command` (secrets masked), `reason` (NULL when
//!   none was given), `participants` (a list of utf8: pyarrow, pandas (an object column of
//!   arrays), polars and DuckDB read it as a list; SQL: `array_has(participants, 'P1')`,
//!   `unnest(participants)`), `details` (utf8, the JSON object text exactly as hashed:
//!   `json_get`-style functions are not in the engine, parse it in the client),
//!   `prev_hash`, `hash` (64 lower-case hex digits). `vitalsink_common::audit` has the
//!   meaning of each column; `trial audit verify` checks the chain.
//! - **`participant_status_changes`** ([`status::changes_schema`]): the raw rows of
//!   `participant_status`: `seq`, `participant_id`, `status` (`active` | `withdrawn` |
//!   `erased`), `effective_at` (timestamp µs UTC, the readings' own time from which it
//!   applies), `recorded_at`, `reason`, `audit_seq` (the `audit_log.seq` that recorded it,
//!   NULL when none).
//! - **`participants`** ([`status::participants_schema`]): one row per participant with a
//!   status change: `participant_id`, `status_now` (`active` | `withdrawn` | `erased`, by the
//!   rule ingest applies, `vitalsink_common::participants::Statuses`, at the time of the
//!   scan), `withdrawn_from` (timestamp µs UTC: when the withdrawal in force now took effect;
//!   NULL unless `status_now = 'withdrawn'`), `changes` (Int64, how many changes were
//!   recorded). So an analysis excludes withdrawn and erased participants with
//!   `WHERE participant_id NOT IN (SELECT participant_id FROM participants WHERE status_now
//!   <> 'active')`.
//!
//! Each scan runs one `SELECT` on a session of its own on the map shard's primary (these
//! tables are small and a replica may lag a status change just recorded); `audit_log` and
//! `participant_status_changes` stream through [`crate::shard_scan::ShardScanExec`], as a
//! shard's part of a `measurements` scan does, with filters on their integer and timestamp
//! columns pushed into the `WHERE` ([`crate::pushdown::to_sql_over`]; every filter is applied
//! again by the engine). The reader role `vitalsink_reader` may read all three tables.
//! With `--lock` ([`crate::locked`]) they still show the map shard's current state.

pub mod audit;
pub mod status;

use arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use std::sync::Arc;
use vitalsink_common::config::{DatabaseConfig, ShardConfig};
use vitalsink_common::Config;

use crate::error::Result;
use crate::shard_scan::ShardScanExec;

/// Names of the tables this module adds to the catalog.
pub const TABLES: &[&str] = &["audit_log", "participant_status_changes", "participants"];

/// The map shard these tables are read from: where to connect, and how.
#[derive(Debug, Clone)]
pub struct MapShard {
    shard: Option<ShardConfig>,
    db: DatabaseConfig,
}

impl MapShard {
    /// The first of `cfg`'s shards (none configured: every scan fails naming that).
    pub fn of(cfg: &Config) -> Self {
        Self {
            shard: cfg.shards.first().cloned(),
            db: cfg.database.clone(),
        }
    }

    /// A session of its own on the map shard's primary; returns it with the shard's name.
    ///
    /// # Errors
    /// [`crate::Error::Shard`] naming the shard when it does not answer; a shard-map error
    /// when no shard is configured.
    pub async fn session(&self) -> Result<(tokio_postgres::Client, String)> {
        let Some(s) = &self.shard else {
            return Err(vitalsink_common::Error::ShardMap("no shards configured".into()).into());
        };
        let c = crate::sessions::connect(&s.name, &s.url, &self.db).await?;
        Ok((c, s.name.clone()))
    }
}

/// The `(name, provider)` pairs of [`TABLES`] over `cfg`'s map shard, for the catalog.
pub fn tables(cfg: &Config) -> Vec<(String, Arc<dyn TableProvider>)> {
    let map = MapShard::of(cfg);
    vec![
        (
            "audit_log".to_string(),
            Arc::new(audit::table(map.clone())) as Arc<dyn TableProvider>,
        ),
        (
            "participant_status_changes".to_string(),
            Arc::new(status::changes_table(map.clone())),
        ),
        (
            "participants".to_string(),
            Arc::new(status::Participants::new(map)),
        ),
    ]
}

/// A timestamp column: µs, UTC.
pub(crate) fn ts_field(name: &str, nullable: bool) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        nullable,
    )
}

/// A table of the map shard read with one `SELECT` per scan.
#[derive(Debug)]
pub struct SqlTable {
    /// The table's name in PostgreSQL.
    table: &'static str,
    schema: SchemaRef,
    /// Columns whose filters are written into the `WHERE` (integers and timestamps only).
    pushable: &'static [&'static str],
    /// `ORDER BY` of the `SELECT`.
    order_by: &'static str,
    map: MapShard,
}

impl SqlTable {
    /// `table` of the map shard with `schema` (its columns by name, a subset of the
    /// table's), filters on `pushable` pushed down, rows in `order_by` order.
    pub fn new(
        table: &'static str,
        schema: SchemaRef,
        pushable: &'static [&'static str],
        order_by: &'static str,
        map: MapShard,
    ) -> Self {
        Self {
            table,
            schema,
            pushable,
            order_by,
            map,
        }
    }

    /// The `SELECT` of `projected`'s columns with `filters` where they can be written.
    pub fn sql(&self, projected: &SchemaRef, filters: &[Expr]) -> String {
        let select = if projected.fields().is_empty() {
            "1".to_string()
        } else {
            projected
                .fields()
                .iter()
                .map(|f| select_expr(f))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let terms: Vec<String> = filters
            .iter()
            .filter_map(|f| crate::pushdown::to_sql_over(f, self.pushable))
            .collect();
        let where_ = if terms.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", terms.join(" AND "))
        };
        format!(
            "SELECT {select} FROM {}{where_} ORDER BY {}",
            self.table, self.order_by
        )
    }
}

/// The `SELECT` list entry of a column, quoted: a timestamp as integer microseconds (exact;
/// NULL stays NULL), any other column as it is.
fn select_expr(field: &Field) -> String {
    let name = format!("\"{}\"", field.name().replace('"', "\"\""));
    if matches!(field.data_type(), DataType::Timestamp(_, _)) {
        format!("(extract(epoch FROM {name}) * 1000000)::int8")
    } else {
        name
    }
}

#[async_trait]
impl TableProvider for SqlTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// `Inexact`: the filters on integer and timestamp columns narrow the `SELECT`; the
    /// engine applies every filter again.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let projected: SchemaRef = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let sql = self.sql(&projected, filters);
        let (client, shard) = self.map.session().await?;
        Ok(Arc::new(ShardScanExec::with_sql(
            format!("{shard} (primary)"),
            sql,
            projected,
            client,
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};
    use datafusion::scalar::ScalarValue;

    #[test]
    fn integer_and_time_filters_go_into_the_select_text_ones_stay() {
        let t = audit::table(MapShard {
            shard: None,
            db: DatabaseConfig::default(),
        });
        let schema = t.schema();
        let at = Expr::Literal(
            ScalarValue::TimestampMicrosecond(Some(1_000_000), Some("UTC".into())),
            None,
        );
        let sql = t.sql(
            &Arc::new(schema.project(&[0, 1, 8]).unwrap()),
            &[
                col("seq").gt_eq(lit(2i64)),
                col("at").lt(at),
                col("action").gt(lit("m")),
            ],
        );
        assert_eq!(
            sql,
            "SELECT \"seq\", (extract(epoch FROM \"at\") * 1000000)::int8, \"participants\" \
             FROM audit_log WHERE (seq >= 2) AND (at < '1970-01-01T00:00:01.000000Z'::timestamptz) \
             ORDER BY seq"
        );
        let none = t.sql(&Arc::new(schema.project(&[]).unwrap()), &[]);
        assert_eq!(none, "SELECT 1 FROM audit_log ORDER BY seq");
    }
}
