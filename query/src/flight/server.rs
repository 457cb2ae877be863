//! Serving: binds the Flight SQL port (TLS when configured), starts the memory guard
//! ([`super::memory`]) and serves [`super::Service`] behind the authentication interceptor
//! ([`super::auth::Auth::check`]) until shutdown.

use arrow_flight::flight_service_server::FlightServiceServer;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use super::statement::Runner;
use super::{admission, auth, memory, Service};
use crate::error::Error;

/// How the server listens: TLS identity and who may connect.
#[derive(Debug)]
pub struct Listen {
    /// Address to bind.
    pub addr: SocketAddr,
    /// PEM certificate chain and private key for TLS; `None` serves plain gRPC.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// Accounts ([`auth::Auth`]).
    pub auth: auth::Auth,
    /// Slots and running statements ([`admission::Admission`]).
    pub admission: Arc<admission::Admission>,
    /// Where access records go.
    pub access: Arc<crate::access::AccessLog>,
}

/// Serves Flight SQL as `listen` says until `shutdown`.
///
/// # Errors
/// [`Error::Output`] when the address cannot be bound or the TLS identity is not usable.
pub async fn serve(
    engine: Arc<crate::engine::Engine>,
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
    let limits = engine.limits();
    tracing::info!(
        listen = %addr,
        addr = %local,
        tls = listen.tls.is_some(),
        password = listen.auth.required(),
        memory_bytes = limits.memory_bytes,
        statement_timeout = %humantime::format_duration(limits.statement_timeout),
        admission = ?listen.admission,
        "Flight SQL up"
    );
    let limit = limits.memory_bytes as u64 + memory::PROCESS_BYTES;
    tokio::spawn(memory::guard(
        listen.admission.clone(),
        limit,
        shutdown.clone(),
    ));
    let check = listen.auth.clone();
    let service = FlightServiceServer::with_interceptor(
        Service::new(
            Runner {
                engine,
                admission: listen.admission,
                log: listen.access,
            },
            listen.auth,
        ),
        move |r| check.check(r),
    );
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    builder
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
        .map_err(|e| Error::Output(e.to_string()))
}
