//! The Arrow Flight SQL server (`query serve`): analysts connect with ADBC
//! (`adbc-driver-flightsql`) or the Flight SQL JDBC driver and get Arrow straight into
//! pandas, polars or their tool.
//!
//! Follow one statement: `GetFlightInfo(CommandStatementQuery)` plans it (which checks the
//! SQL and gives the result's schema without reading any shard) and answers with one
//! endpoint whose ticket carries the statement; `DoGet` on that ticket plans it again, runs it
//! over a fresh snapshot of the shards and archive, and streams the batches as they come,
//! within the engine's memory pool. Prepared statements (with `$1`-style parameters, what
//! JDBC's `PreparedStatement` and ADBC's `bind` send) are in [`prepared`]; the catalog calls
//! tools make on connecting (`GetCatalogs`, `GetDbSchemas`, `GetTables`, `GetTableTypes`,
//! `GetSqlInfo`) in [`catalog`].
//!
//! Errors are the engine's (invalid SQL, an unknown column, a memory limit) as
//! `InvalidArgument`, a shard that does not answer as `Unavailable` naming it.
//!
//! Metrics: `vitalsink_query_statements_total{outcome="ok|invalid|memory|unavailable|error"}`,
//! `vitalsink_query_rows_total`, `vitalsink_query_seconds` (histogram, from `DoGet` to the
//! last batch).

pub mod auth;
pub mod catalog;
pub mod prepared;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    Ticket,
};
use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::error::Error;

/// The service: one engine session shared by all requests (each statement takes its own
/// snapshot).
pub struct Service {
    ctx: SessionContext,
    auth: auth::Auth,
}

/// How the server listens: TLS identity and who may connect.
#[derive(Debug)]
pub struct Listen {
    /// Address to bind.
    pub addr: SocketAddr,
    /// PEM certificate chain and private key for TLS; `None` serves plain gRPC.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// Accounts ([`auth::Auth`]).
    pub auth: auth::Auth,
}

type DoGetStream = <Service as FlightService>::DoGetStream;

fn status(e: Error) -> Status {
    let (outcome, s) = match e {
        Error::Shard { .. } => ("unavailable", Status::unavailable(e.to_string())),
        Error::Engine(_) => ("invalid", Status::invalid_argument(e.to_string())),
        Error::Memory(_) => ("memory", Status::resource_exhausted(e.to_string())),
        other => ("error", Status::internal(other.to_string())),
    };
    metrics::counter!("vitalsink_query_statements_total", "outcome" => outcome).increment(1);
    s
}

fn engine_status(e: datafusion::error::DataFusionError) -> Status {
    status(crate::engine::unwrap_external(e))
}

/// A `FlightInfo` with one endpoint whose ticket is `ticket`, for a result of `schema`.
fn info_for(
    schema: &arrow::datatypes::Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket {
        ticket: ticket.into(),
    });
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(endpoint)
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

impl Service {
    async fn plan(&self, sql: &str) -> Result<DataFrame, Status> {
        self.ctx.sql(sql).await.map_err(engine_status)
    }

    /// Runs `df` and streams its batches, counting rows and time.
    async fn stream(&self, df: DataFrame) -> Result<Response<DoGetStream>, Status> {
        let started = std::time::Instant::now();
        let schema = df.schema().as_arrow().clone();
        let stream = df.execute_stream().await.map_err(engine_status)?;
        let failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = failed.clone();
        let batches = stream
            .inspect(move |b| match b {
                Ok(b) => {
                    metrics::counter!("vitalsink_query_rows_total").increment(b.num_rows() as u64);
                }
                Err(_) => seen.store(true, std::sync::atomic::Ordering::Relaxed),
            })
            .map_err(|e| arrow_flight::error::FlightError::Tonic(Box::new(engine_status(e))))
            .chain(
                futures::stream::once(async move {
                    if !failed.load(std::sync::atomic::Ordering::Relaxed) {
                        metrics::counter!("vitalsink_query_statements_total", "outcome" => "ok")
                            .increment(1);
                    }
                    metrics::histogram!("vitalsink_query_seconds")
                        .record(started.elapsed().as_secs_f64());
                })
                .filter_map(|()| async { None }),
            );
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(std::sync::Arc::new(schema))
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(flight.boxed()))
    }
}

#[tonic::async_trait]
impl FlightSqlService for Service {
    type FlightService = Service;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<
            std::pin::Pin<
                Box<dyn futures::Stream<Item = Result<HandshakeResponse, Status>> + Send>,
            >,
        >,
        Status,
    > {
        let bearer = self.auth.handshake(&request)?;
        let token = bearer.trim_start_matches("Bearer ").as_bytes().to_vec();
        let out = futures::stream::iter(vec![Ok(HandshakeResponse {
            protocol_version: 0,
            payload: token.into(),
        })]);
        let mut resp: Response<std::pin::Pin<Box<dyn futures::Stream<Item = _> + Send>>> =
            Response::new(Box::pin(out));
        let value = bearer
            .parse()
            .map_err(|_| Status::internal("token is not a header value"))?;
        resp.metadata_mut().insert("authorization", value);
        Ok(resp)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let df = self.plan(&query.query).await?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        info_for(
            df.schema().as_arrow(),
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let sql = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("the ticket is not a statement"))?;
        tracing::info!(%sql, "query");
        let df = self.plan(&sql).await?;
        self.stream(df).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        prepared::create(&self.ctx, query).await
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        prepared::bind(query, request.into_inner()).await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let df = prepared::plan(&self.ctx, &cmd.prepared_statement_handle).await?;
        info_for(
            df.schema().as_arrow(),
            cmd.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let df = prepared::plan(&self.ctx, &query.prepared_statement_handle).await?;
        tracing::info!(sql = %prepared::sql_of(&query.prepared_statement_handle), "prepared query");
        self.stream(df).await
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        // Handles carry the statement itself: nothing is held on the server.
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        info_for(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        catalog::catalogs(&self.ctx, query)
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        info_for(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        catalog::schemas(&self.ctx, query)
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        info_for(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        catalog::tables(&self.ctx, query).await
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        info_for(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        catalog::table_types(query)
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(catalog::sql_info()?).schema();
        info_for(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        catalog::sql_info_batch(query)
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// Serves Flight SQL as `listen` says until `shutdown`.
///
/// # Errors
/// [`Error::Output`] when the address cannot be bound or the TLS identity is not usable.
pub async fn serve(
    ctx: SessionContext,
    listen: Listen,
    shutdown: CancellationToken,
) -> crate::Result<()> {
    let addr = listen.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Output(format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Output(e.to_string()))?;
    let mut builder = tonic::transport::Server::builder();
    if let Some((cert, key)) = &listen.tls {
        let identity = tonic::transport::Identity::from_pem(cert, key);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| Error::Output(format!("Flight SQL TLS: {e}")))?;
    }
    tracing::info!(
        listen = %addr,
        addr = %local,
        tls = listen.tls.is_some(),
        password = listen.auth.required(),
        "Flight SQL up"
    );
    let check = listen.auth.clone();
    let service = FlightServiceServer::with_interceptor(
        Service {
            ctx,
            auth: listen.auth,
        },
        move |r| check.check(r),
    );
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    builder
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
        .map_err(|e| Error::Output(e.to_string()))
}
