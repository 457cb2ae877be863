//! One statement over Flight SQL, from its ticket to its last batch: a slot
//! ([`super::admission`]), the plan within the statement timeout, then the result stream,
//! which ends at the last batch, at the deadline (`DEADLINE_EXCEEDED`), at the client's
//! `CancelFlightInfo` (`CANCELLED`) or when the client goes away; each way it is recorded
//! ([`crate::access`]) and its work dropped.
//!
//! A statement's ticket carries the statement itself, so any server of a fleet can answer
//! it and nothing is held between `GetFlightInfo` and `DoGet`: `vst1`, 16 random bytes (so
//! that `CancelFlightInfo` names one execution), then the SQL (UTF-8). The SQL is checked
//! again at `DoGet` ([`crate::engine::Engine::plan`]): a hand-made ticket gets no further than
//! a statement.

use arrow::datatypes::SchemaRef;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use datafusion::dataframe::DataFrame;
use datafusion::execution::SendableRecordBatchStream;
use futures::{Stream, StreamExt, TryStreamExt};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tonic::{Response, Status};

use super::admission::{Admission, Registration, Slot};
use super::DoGetStream;
use crate::access::{AccessLog, Record};
use crate::engine::{unwrap_external, Engine};
use crate::error::{Error, Result};

const MAGIC: &[u8] = b"vst1";
const ID_BYTES: usize = 16;

/// The ticket handle of `sql`.
pub fn handle_of(sql: &str) -> Vec<u8> {
    use rand::Rng;
    let id: [u8; ID_BYTES] = rand::rng().random();
    let mut out = Vec::with_capacity(MAGIC.len() + ID_BYTES + sql.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&id);
    out.extend_from_slice(sql.as_bytes());
    out
}

/// The SQL of a ticket handle.
///
/// # Errors
/// `InvalidArgument` when the handle is not ours or not UTF-8.
pub fn sql_of(handle: &[u8]) -> Result<String, Status> {
    handle
        .strip_prefix(MAGIC)
        .and_then(|rest| rest.get(ID_BYTES..))
        .and_then(|sql| String::from_utf8(sql.to_vec()).ok())
        .ok_or_else(|| Status::invalid_argument("the ticket is not a statement of this server"))
}

/// The gRPC status of an error: `PERMISSION_DENIED` for a refused statement,
/// `INVALID_ARGUMENT` for invalid SQL, `UNAVAILABLE` naming a shard, `RESOURCE_EXHAUSTED` for
/// the memory pool or a full server, `DEADLINE_EXCEEDED`, `CANCELLED`, `FAILED_PRECONDITION`
/// for an object of the `--lock` that cannot be read, else `INTERNAL`.
pub fn status(e: &Error) -> Status {
    let m = e.to_string();
    match e {
        Error::Refused(_) => Status::permission_denied(m),
        Error::Engine(_) => Status::invalid_argument(m),
        Error::Shard { .. } => Status::unavailable(m),
        Error::Memory(_) | Error::Busy { .. } => Status::resource_exhausted(m),
        Error::Timeout(_) => Status::deadline_exceeded(m),
        Error::Cancelled => Status::cancelled(m),
        Error::Lock { .. } => Status::failed_precondition(m),
        _ => Status::internal(m),
    }
}

/// Runs statements for the service.
#[derive(Debug)]
pub struct Runner {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Slots and running statements.
    pub admission: Arc<Admission>,
    /// Where access records go.
    pub log: Arc<AccessLog>,
}

impl Runner {
    fn refuse(&self, user: &str, sql: &str, params: Vec<String>, e: &Error) -> Status {
        if let Error::Refused(kind) = e {
            tracing::warn!(%user, %sql, %kind, "statement refused");
        }
        Record::start(self.log.clone(), user, sql, params).fail(e);
        status(e)
    }

    /// Plans for `GetFlightInfo` (the result's schema) within the statement timeout; a
    /// failure is recorded, a success is recorded when the statement runs.
    ///
    /// # Errors
    /// The status of the planning error ([`status`]).
    pub async fn describe<T>(
        &self,
        user: &str,
        sql: &str,
        params: Vec<String>,
        plan: impl Future<Output = Result<T>>,
    ) -> Result<T, Status> {
        let limit = self.engine.limits().statement_timeout;
        let planned = tokio::time::timeout(limit, plan)
            .await
            .map_err(|_| Error::Timeout(limit))
            .and_then(|r| r);
        planned.map_err(|e| self.refuse(user, sql, params, &e))
    }

    /// Runs `user`'s statement for `DoGet` under `ticket`: waits for a slot, plans and
    /// starts it within the deadline, and answers with its result stream.
    ///
    /// # Errors
    /// The status ([`status`]) of a full server, a refused or invalid statement, a shard
    /// that does not answer, the deadline or a cancellation before the first batch; later
    /// errors end the stream with their status.
    pub async fn run(
        &self,
        user: &str,
        sql: &str,
        params: Vec<String>,
        ticket: &[u8],
        plan: impl Future<Output = Result<DataFrame>>,
    ) -> Result<Response<DoGetStream>, Status> {
        let record = Record::start(self.log.clone(), user, sql, params);
        let fail = |e: Error| {
            if let Error::Refused(kind) = &e {
                tracing::warn!(%user, %sql, %kind, "statement refused");
            }
            record.fail(&e);
            status(&e)
        };
        let slot = self.admission.admit().await.map_err(fail)?;
        let reg = self.admission.register(user, ticket);
        let limit = self.engine.limits().statement_timeout;
        let deadline = Instant::now() + limit;
        let start = async {
            let df = plan.await?;
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let stream = df.execute_stream().await.map_err(unwrap_external)?;
            Ok::<_, Error>((schema, stream))
        };
        let started = tokio::select! {
            r = tokio::time::timeout_at(deadline, start) => {
                r.map_err(|_| Error::Timeout(limit)).and_then(|r| r)
            }
            () = reg.token().cancelled() => Err(reg.error()),
        };
        let (schema, stream) = started.map_err(fail)?;
        let batches = governed(Governed {
            stream,
            deadline,
            limit,
            reg,
            _slot: slot,
            record: record.clone(),
        });
        let sent = record.clone();
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .inspect(move |d| {
                if let Ok(d) = d {
                    sent.add_bytes((d.data_header.len() + d.data_body.len()) as u64);
                }
            })
            .map_err(Status::from);
        Ok(Response::new(flight.boxed()))
    }
}

/// What a running statement holds until its stream ends or is dropped.
struct Governed {
    stream: SendableRecordBatchStream,
    deadline: Instant,
    limit: Duration,
    reg: Registration,
    _slot: Slot,
    record: Arc<Record>,
}

/// The batches of `g.stream` until it ends, the deadline passes or the client cancels; after
/// an error nothing more (the state, and with it the engine's stream, is dropped at once).
fn governed(
    g: Governed,
) -> impl Stream<Item = Result<arrow::record_batch::RecordBatch, FlightError>> {
    futures::stream::unfold(Some(g), |g| async move {
        let mut g = g?;
        let next = tokio::select! {
            biased;
            () = g.reg.token().cancelled() => Err(g.reg.error()),
            () = tokio::time::sleep_until(g.deadline) => Err(Error::Timeout(g.limit)),
            b = g.stream.next() => match b {
                Some(Ok(b)) => Ok(Some(b)),
                Some(Err(e)) => Err(unwrap_external(e)),
                None => Ok(None),
            },
        };
        match next {
            Ok(Some(b)) => {
                g.record.add_rows(b.num_rows() as u64);
                metrics::counter!("vitalsink_query_rows_total").increment(b.num_rows() as u64);
                Some((Ok(b), Some(g)))
            }
            Ok(None) => {
                g.record.ok();
                None
            }
            Err(e) => {
                g.record.fail(&e);
                Some((Err(FlightError::Tonic(Box::new(status(&e)))), None))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_carry_the_statement_and_differ() {
        let a = handle_of("SELECT 1");
        let b = handle_of("SELECT 1");
        assert_ne!(a, b);
        assert_eq!(sql_of(&a).unwrap(), "SELECT 1");
        assert!(sql_of(b"SELECT 1").is_err());
    }
}
