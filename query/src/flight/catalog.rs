//! The Flight SQL catalog calls that ADBC's `adbc_get_objects`, JDBC's `DatabaseMetaData`
//! and BI tools make on connecting: the engine's own catalogs, schemas and tables (the
//! `measurements` table and the trial tables of [`crate::trial_tables`] in
//! `datafusion.public`, plus DataFusion's `information_schema` views), their Arrow schemas,
//! and the server's `SqlInfo`. Filters (catalog, schema and table patterns, table types) are
//! applied by arrow-flight's builders, as the spec defines them.

use arrow::record_batch::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, SqlInfo,
};
use datafusion::datasource::TableType;
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use std::sync::OnceLock;
use tonic::{Response, Status};

use super::DoGetStream;

fn one_batch<E: std::fmt::Display>(
    batch: Result<RecordBatch, E>,
) -> Result<Response<DoGetStream>, Status> {
    let batch = batch.map_err(|e| Status::internal(e.to_string()))?;
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(batch.schema())
        .build(futures::stream::once(async { Ok(batch) }))
        .map_err(Status::from);
    Ok(Response::new(stream.boxed()))
}

/// `(catalog, schema)` pairs of the session, in name order.
fn schema_names(ctx: &SessionContext) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut catalogs = ctx.catalog_names();
    catalogs.sort();
    for c in catalogs {
        if let Some(cat) = ctx.catalog(&c) {
            let mut names = cat.schema_names();
            names.sort();
            out.extend(names.into_iter().map(|s| (c.clone(), s)));
        }
    }
    out
}

fn table_type(t: TableType) -> &'static str {
    match t {
        TableType::Base => "TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

/// `GetCatalogs`.
///
/// # Errors
/// `Internal` when the result cannot be built.
pub fn catalogs(
    ctx: &SessionContext,
    query: CommandGetCatalogs,
) -> Result<Response<DoGetStream>, Status> {
    let mut b = query.into_builder();
    let mut names = ctx.catalog_names();
    names.sort();
    for c in names {
        b.append(c);
    }
    one_batch(b.build())
}

/// `GetDbSchemas`.
///
/// # Errors
/// `Internal` when the result cannot be built.
pub fn schemas(
    ctx: &SessionContext,
    query: CommandGetDbSchemas,
) -> Result<Response<DoGetStream>, Status> {
    let mut b = query.into_builder();
    for (c, s) in schema_names(ctx) {
        b.append(c, s);
    }
    one_batch(b.build())
}

/// `GetTables`, with each table's Arrow schema when the client asks for it.
///
/// # Errors
/// `Internal` when a table cannot be opened or the result cannot be built.
pub async fn tables(
    ctx: &SessionContext,
    query: CommandGetTables,
) -> Result<Response<DoGetStream>, Status> {
    let mut b = query.into_builder();
    for (c, s) in schema_names(ctx) {
        let Some(schema) = ctx.catalog(&c).and_then(|cat| cat.schema(&s)) else {
            continue;
        };
        let mut names = schema.table_names();
        names.sort();
        for t in names {
            let Some(table) = schema
                .table(&t)
                .await
                .map_err(|e| Status::internal(e.to_string()))?
            else {
                continue;
            };
            b.append(&c, &s, &t, table_type(table.table_type()), &table.schema())
                .map_err(|e| Status::internal(e.to_string()))?;
        }
    }
    one_batch(b.build())
}

/// `GetTableTypes`.
///
/// # Errors
/// `Internal` when the result cannot be built.
pub fn table_types(query: CommandGetTableTypes) -> Result<Response<DoGetStream>, Status> {
    let mut b = query.into_builder();
    for t in ["TABLE", "VIEW", "LOCAL TEMPORARY"] {
        b.append(t);
    }
    one_batch(b.build())
}

/// The server's `SqlInfo`: its name and version, read-only, SQL without transactions or
/// Substrait, statements cancellable (`CancelFlightInfo`).
///
/// # Errors
/// `Internal` when the table cannot be built (never in practice: its values are fixed).
pub fn sql_info() -> Result<&'static SqlInfoData, Status> {
    static INFO: OnceLock<Option<SqlInfoData>> = OnceLock::new();
    INFO.get_or_init(|| {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "vitalsink-query");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
        b.append(SqlInfo::FlightSqlServerReadOnly, true);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        b.append(SqlInfo::FlightSqlServerTransaction, 0_i32);
        b.append(SqlInfo::FlightSqlServerCancel, true);
        b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        b.build().ok()
    })
    .as_ref()
    .ok_or_else(|| Status::internal("SqlInfo could not be built"))
}

/// `GetSqlInfo`: the requested entries of [`sql_info`] (all when none are named).
///
/// # Errors
/// `Internal` when the result cannot be built.
pub fn sql_info_batch(query: CommandGetSqlInfo) -> Result<Response<DoGetStream>, Status> {
    one_batch(query.into_builder(sql_info()?).build())
}
