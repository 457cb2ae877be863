//! The Arrow Flight SQL server (`query serve`): analysts connect with ADBC
//! (`adbc-driver-flightsql`) or the Flight SQL JDBC driver and get Arrow straight into
//! pandas, polars or their tool.
//!
//! Follow one statement: the interceptor ([`auth::Auth::check`]) names the caller;
//! `GetFlightInfo(CommandStatementQuery)` plans it ([`crate::engine::Engine::plan`]: reads
//! only, else `PERMISSION_DENIED`; the result's schema without reading any shard) and
//! answers with one endpoint whose ticket carries the statement ([`statement`]); `DoGet` on
//! that ticket waits for a slot ([`admission`]), plans it again, runs it over a fresh snapshot
//! of the shards and archive, and streams the batches as they come, within the engine's
//! memory pool and the statement timeout, until the client cancels or goes away; every
//! statement leaves an access record ([`crate::access`]). Prepared statements (with
//! `$1`-style parameters, what JDBC's `PreparedStatement` and ADBC's `bind` send) are in
//! [`prepared`]; the catalog calls tools make on connecting (`GetCatalogs`, `GetDbSchemas`,
//! `GetTables`, `GetTableTypes`, `GetSqlInfo`) in [`catalog`].
//!
//! Errors ([`statement::status`]): a statement that is not a read `PERMISSION_DENIED`;
//! invalid SQL `INVALID_ARGUMENT`; a shard that does not answer `UNAVAILABLE` naming it; the
//! memory pool or a full server `RESOURCE_EXHAUSTED`; the statement timeout
//! `DEADLINE_EXCEEDED`; a cancelled statement `CANCELLED`.
//!
//! Metrics: `vitalsink_query_statements_total{outcome="ok|refused|invalid|unavailable|memory|
//! timeout|busy|cancelled|error"}`, `vitalsink_query_rows_total`, `vitalsink_query_seconds`
//! (histogram, from the statement's start to its end), `vitalsink_query_running`,
//! `vitalsink_query_queued`, `vitalsink_query_logins_total{outcome="ok|refused"}`.

pub mod admission;
pub mod auth;
pub mod catalog;
pub mod memory;
pub mod prepared;
pub mod server;
pub mod statement;
pub mod users;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, CommandGetCatalogs,
    CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandPreparedStatementQuery, CommandStatementQuery, DoPutPreparedStatementResult,
    ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus,
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, Ticket,
};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use auth::user_of;
use statement::Runner;

/// Flight's action that cancels the statements of a `FlightInfo`.
const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";

/// The service: the engine (each statement plans in a session state of its own and takes its
/// own snapshot), the slots, the accounts.
pub struct Service {
    runner: Runner,
    auth: auth::Auth,
}

type DoGetStream = <Service as FlightService>::DoGetStream;
type DoActionStream = <Service as FlightService>::DoActionStream;

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
    /// The service of `runner`'s statements for the callers `auth` lets in.
    pub(crate) fn new(runner: Runner, auth: auth::Auth) -> Self {
        Self { runner, auth }
    }

    /// Cancels the caller's running statements of `info`'s endpoints; how many.
    fn cancel(&self, user: &str, info: &FlightInfo) -> usize {
        let tickets: Vec<Vec<u8>> = info
            .endpoint
            .iter()
            .filter_map(|e| e.ticket.as_ref().map(|t| t.ticket.to_vec()))
            .collect();
        let n = self.runner.admission.cancel(user, &tickets);
        tracing::info!(%user, cancelled = n, "cancel requested");
        n
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
        let user = user_of(&request);
        let sql = query.query;
        let df = self
            .runner
            .describe(&user, &sql, Vec::new(), self.runner.engine.plan(&sql))
            .await?;
        let ticket = TicketStatementQuery {
            statement_handle: statement::handle_of(&sql).into(),
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
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let user = user_of(&request);
        let sql = statement::sql_of(&ticket.statement_handle)?;
        let raw = request.into_inner().ticket;
        self.runner
            .run(&user, &sql, Vec::new(), &raw, self.runner.engine.plan(&sql))
            .await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let user = user_of(&request);
        let created = prepared::create(&self.runner.engine, &query).await;
        self.runner
            .describe(&user, &query.query, Vec::new(), async { created })
            .await
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
        let user = user_of(&request);
        let (sql, params) = prepared::describe(&cmd.prepared_statement_handle);
        let plan = prepared::plan(&self.runner.engine, &cmd.prepared_statement_handle);
        let df = self.runner.describe(&user, &sql, params, plan).await?;
        info_for(
            df.schema().as_arrow(),
            cmd.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let user = user_of(&request);
        let handle = &query.prepared_statement_handle;
        let (sql, params) = prepared::describe(handle);
        let raw = request.into_inner().ticket;
        let plan = prepared::plan(&self.runner.engine, handle);
        self.runner.run(&user, &sql, params, &raw, plan).await
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
        catalog::catalogs(&self.runner.engine.context(), query)
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
        catalog::schemas(&self.runner.engine.context(), query)
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
        catalog::tables(&self.runner.engine.context(), query).await
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

    /// Flight SQL's older cancel action: the serialized `FlightInfo` of the statement.
    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let info = FlightInfo::decode(query.info)
            .map_err(|e| Status::invalid_argument(format!("CancelQuery: {e}")))?;
        // `ActionCancelQueryResult.CancelResult` (arrow-flight does not export the enum):
        // CANCEL_RESULT_CANCELLED = 1, CANCEL_RESULT_NOT_CANCELLABLE = 3.
        let result = if self.cancel(&user_of(&request), &info) > 0 {
            1
        } else {
            3
        };
        Ok(ActionCancelQueryResult { result })
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(vec![Ok(ActionType {
            r#type: CANCEL_FLIGHT_INFO.into(),
            description: "Cancel the running statements of a FlightInfo (the caller's own)".into(),
        })])
    }

    /// `CancelFlightInfo`: stops the caller's running statements of the `FlightInfo`;
    /// `NOT_CANCELLABLE` when none runs (finished, not started, or another user's).
    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<DoActionStream>, Status> {
        if request.get_ref().r#type != CANCEL_FLIGHT_INFO {
            return Err(Status::invalid_argument(format!(
                "unknown action {:?}",
                request.get_ref().r#type
            )));
        }
        let info = CancelFlightInfoRequest::decode(request.get_ref().body.clone())
            .ok()
            .and_then(|r| r.info)
            .ok_or_else(|| Status::invalid_argument("CancelFlightInfo: no FlightInfo"))?;
        let status = if self.cancel(&user_of(&request), &info) > 0 {
            CancelStatus::Cancelled
        } else {
            CancelStatus::NotCancellable
        };
        let body = CancelFlightInfoResult::new(status).encode_to_vec();
        let out = futures::stream::iter([Ok(arrow_flight::Result { body: body.into() })]);
        Ok(Response::new(Box::pin(out)))
    }
}

pub use server::{serve, Listen};
