//! Prepared statements, stateless: the handle carries the statement and, once bound, its
//! parameter values, so any server of a fleet can answer it and nothing is held between
//! calls (the Flight SQL spec allows `DoPut` to return an updated handle for exactly this).
//!
//! Handle layout (bytes): `vsq1`, the SQL's length as a big-endian `u32`, the SQL (UTF-8),
//! then optionally an Arrow IPC stream holding one row of parameter values, `$1` first.

use arrow::datatypes::{Field, Schema};
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow::record_batch::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    CommandPreparedStatementQuery, DoPutPreparedStatementResult,
};
use arrow_flight::{IpcMessage, SchemaAsIpc};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::dataframe::DataFrame;
use futures::TryStreamExt;
use tonic::Status;

use crate::engine::Engine;
use crate::error::Error;

const MAGIC: &[u8] = b"vsq1";

fn bad(what: &str) -> Error {
    Error::Engine(datafusion::error::DataFusionError::Plan(format!(
        "prepared statement: {what}"
    )))
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Output(e.to_string())
}

fn encode(sql: &str, params: Option<&RecordBatch>) -> Result<Vec<u8>, Error> {
    let len = u32::try_from(sql.len()).map_err(|_| bad("statement too long"))?;
    let mut out = Vec::with_capacity(8 + sql.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(sql.as_bytes());
    if let Some(b) = params {
        let mut w = StreamWriter::try_new(&mut out, &b.schema()).map_err(internal)?;
        w.write(b).map_err(internal)?;
        w.finish().map_err(internal)?;
    }
    Ok(out)
}

/// Splits a handle into its SQL and parameter values.
fn decode(handle: &[u8]) -> Result<(String, Vec<ScalarValue>), Error> {
    let rest = handle
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("unknown handle"))?;
    let (len, rest) = rest
        .split_at_checked(4)
        .ok_or_else(|| bad("short handle"))?;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let (sql, ipc) = rest
        .split_at_checked(len)
        .ok_or_else(|| bad("short handle"))?;
    let sql = String::from_utf8(sql.to_vec()).map_err(|_| bad("statement is not UTF-8"))?;
    let mut params = Vec::new();
    if !ipc.is_empty() {
        let reader = arrow::ipc::reader::StreamReader::try_new(ipc, None)
            .map_err(|e| bad(&e.to_string()))?;
        for b in reader {
            let b = b.map_err(|e| bad(&e.to_string()))?;
            for col in b.columns() {
                params.push(ScalarValue::try_from_array(col, 0).map_err(|e| bad(&e.to_string()))?);
            }
        }
    }
    Ok((sql, params))
}

/// The statement a handle carries and its bound parameters by position and type, never
/// their values (for the access record); an empty statement when the handle is not ours.
pub fn describe(handle: &[u8]) -> (String, Vec<String>) {
    decode(handle)
        .map(|(sql, params)| {
            let masked = params
                .iter()
                .enumerate()
                .map(|(i, v)| format!("${}: {} (masked)", i + 1, v.data_type()))
                .collect();
            (sql, masked)
        })
        .unwrap_or_default()
}

/// `CreatePreparedStatement`: plans the SQL (its errors come back now, as for a statement)
/// and returns the result schema and the parameters' schema (`$1`, `$2`, … with the types the
/// planner inferred, `Null` where it could not).
///
/// # Errors
/// [`Error::Refused`] for a statement that is not a read; the engine's error for invalid SQL
/// or an unknown column.
pub async fn create(
    engine: &Engine,
    query: &ActionCreatePreparedStatementRequest,
) -> Result<ActionCreatePreparedStatementResult, Error> {
    let df = engine.plan(&query.query).await?;
    let mut types: Vec<(usize, Field)> = df
        .logical_plan()
        .get_parameter_types()
        .map_err(Error::Engine)?
        .into_iter()
        .map(|(name, t)| {
            let n = name
                .trim_start_matches('$')
                .parse::<usize>()
                .unwrap_or(usize::MAX);
            (
                n,
                Field::new(name, t.unwrap_or(arrow::datatypes::DataType::Null), true),
            )
        })
        .collect();
    types.sort_by_key(|(n, _)| *n);
    let params = Schema::new(types.into_iter().map(|(_, f)| f).collect::<Vec<_>>());
    let ipc = |s: &Schema| -> Result<bytes::Bytes, Error> {
        let IpcMessage(b) = SchemaAsIpc::new(s, &IpcWriteOptions::default())
            .try_into()
            .map_err(|e: arrow::error::ArrowError| internal(e))?;
        Ok(b)
    };
    Ok(ActionCreatePreparedStatementResult {
        prepared_statement_handle: encode(&query.query, None)?.into(),
        dataset_schema: ipc(df.schema().as_arrow())?,
        parameter_schema: ipc(&params)?,
    })
}

/// `DoPut` of parameter values: one row (`$1` is the first column); returns the handle with
/// those values bound.
///
/// # Errors
/// `InvalidArgument` for a handle that is not ours, or more than one row of values (a query
/// runs once per handle).
pub async fn bind(
    query: CommandPreparedStatementQuery,
    data: PeekableFlightDataStream,
) -> Result<DoPutPreparedStatementResult, Status> {
    bind_values(query, data)
        .await
        .map_err(|e| super::statement::status(&e))
}

async fn bind_values(
    query: CommandPreparedStatementQuery,
    data: PeekableFlightDataStream,
) -> Result<DoPutPreparedStatementResult, Error> {
    let (sql, _) = decode(&query.prepared_statement_handle)?;
    let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(
        data.map_err(|s| FlightError::Tonic(Box::new(s))),
    )
    .try_collect()
    .await
    .map_err(|e| bad(&e.to_string()))?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let batch = match (rows, batches.into_iter().find(|b| b.num_rows() > 0)) {
        (0, _) | (_, None) => None,
        (1, Some(b)) => Some(b),
        _ => return Err(bad("a query takes one row of parameter values")),
    };
    Ok(DoPutPreparedStatementResult {
        prepared_statement_handle: Some(encode(&sql, batch.as_ref())?.into()),
    })
}

/// Plans the statement of `handle` with its bound values.
///
/// # Errors
/// [`Error::Refused`] for a statement that is not a read (a hand-made handle gets no further
/// than a statement); [`Error::Engine`]: not our handle, the engine's error for the SQL, or
/// values that do not fit the parameters.
pub async fn plan(engine: &Engine, handle: &[u8]) -> Result<DataFrame, Error> {
    let (sql, params) = decode(handle)?;
    let df = engine.plan(&sql).await?;
    if params.is_empty() {
        return Ok(df);
    }
    df.with_param_values(ParamValues::List(
        params.into_iter().map(Into::into).collect(),
    ))
    .map_err(Error::Engine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn handle_round_trips_sql_and_values() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("$1", arrow::datatypes::DataType::Utf8, false),
            Field::new("$2", arrow::datatypes::DataType::Int64, false),
        ]));
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["p-1"])),
                Arc::new(Int64Array::from(vec![7])),
            ],
        )
        .unwrap();
        let h = encode("SELECT $1, $2", Some(&b)).unwrap();
        let (sql, params) = decode(&h).unwrap();
        assert_eq!(sql, "SELECT $1, $2");
        assert_eq!(
            params,
            vec![
                ScalarValue::Utf8(Some("p-1".into())),
                ScalarValue::Int64(Some(7))
            ]
        );
        assert_eq!(
            decode(&encode("SELECT 1", None).unwrap()).unwrap().1,
            vec![]
        );
        assert!(decode(b"nope").is_err());
    }
}
