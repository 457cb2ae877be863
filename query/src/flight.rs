//! The Arrow Flight SQL server (`query serve`): analysts connect with ADBC
//! (`adbc-driver-flightsql`) or the Flight SQL JDBC driver and get Arrow straight into
//! pandas, polars or their tool.
//!
//! A statement arrives as `GetFlightInfo(CommandStatementQuery)`: it is planned (which checks
//! the SQL and gives the result's schema without reading any shard) and answered with one
//! endpoint whose ticket carries the statement. `DoGet` on that ticket plans it again, runs it
//! over a fresh snapshot of the shards and archive, and streams the batches as they come,
//! within the engine's memory pool. Errors are the engine's (invalid SQL, an unknown column)
//! as `InvalidArgument`, a shard that does not answer as `Unavailable` naming it.

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt, SqlInfo, TicketStatementQuery};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::error::Error;

/// The service: one engine session shared by all requests (each statement takes its own
/// snapshot).
pub struct Service {
    ctx: SessionContext,
}

fn status(e: Error) -> Status {
    match e {
        Error::Shard { .. } => Status::unavailable(e.to_string()),
        Error::Engine(_) => Status::invalid_argument(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

impl Service {
    async fn plan(&self, sql: &str) -> Result<datafusion::dataframe::DataFrame, Status> {
        self.ctx
            .sql(sql)
            .await
            .map_err(|e| status(crate::engine::unwrap_external(e)))
    }
}

#[tonic::async_trait]
impl FlightSqlService for Service {
    type FlightService = Service;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let df = self.plan(&query.query).await?;
        let schema = df.schema().as_arrow().clone();
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        let endpoint = FlightEndpoint::new().with_ticket(Ticket {
            ticket: ticket.as_any().encode_to_vec().into(),
        });
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(endpoint)
            .with_descriptor(request.into_inner());
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let sql = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("the ticket is not a statement"))?;
        tracing::info!(%sql, "query");
        let df = self.plan(&sql).await?;
        let schema = df.schema().as_arrow().clone();
        let stream = df
            .execute_stream()
            .await
            .map_err(|e| status(crate::engine::unwrap_external(e)))?;
        let batches = stream.map_err(|e| {
            arrow_flight::error::FlightError::Tonic(Box::new(status(
                crate::engine::unwrap_external(e),
            )))
        });
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(std::sync::Arc::new(schema))
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(flight.boxed()))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// Serves Flight SQL on `addr` until `shutdown`.
///
/// # Errors
/// [`Error::Output`] when the address cannot be bound.
pub async fn serve(
    ctx: SessionContext,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> crate::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Output(format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Output(e.to_string()))?;
    tracing::info!(listen = %addr, addr = %local, "Flight SQL up");
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tonic::transport::Server::builder()
        .add_service(FlightServiceServer::new(Service { ctx }))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
        .map_err(|e| Error::Output(e.to_string()))
}
