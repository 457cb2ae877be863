//! The metrics and health HTTP server both binaries run: `GET /metrics` (Prometheus text
//! format), `GET /healthz` (200 while the process runs) and `GET /readyz` (200 when the
//! binary says it is ready, else 503 with the reason).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// Readiness shared between a binary's workers and `/readyz`: `None` when ready, otherwise
/// why not.
#[derive(Debug, Clone)]
pub struct Readiness(Arc<Mutex<Option<String>>>);

impl Readiness {
    /// Not ready, with `reason`.
    pub fn new(reason: &str) -> Self {
        Self(Arc::new(Mutex::new(Some(reason.to_string()))))
    }

    /// Sets the state: `None` is ready.
    pub fn set(&self, not_ready: Option<String>) {
        if let Ok(mut g) = self.0.lock() {
            *g = not_ready;
        }
    }

    /// `None` when ready, otherwise the reason.
    pub fn get(&self) -> Option<String> {
        self.0
            .lock()
            .map(|g| g.clone())
            .unwrap_or_else(|_| Some("poisoned".into()))
    }
}

/// Installs the global Prometheus recorder for the `metrics` facade. Idempotent: a second call
/// returns a handle to a fresh recorder that is not global (only tests start twice).
///
/// Flush latencies use the buckets in seconds below (1 ms … 30 s).
pub fn install_recorder() -> PrometheusHandle {
    let builder = PrometheusBuilder::new()
        .set_buckets(&[
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ])
        .unwrap_or_else(|_| PrometheusBuilder::new());
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    let _ = metrics::set_global_recorder(recorder);
    handle
}

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    ready: Readiness,
}

/// Serves the endpoints on `listen` until `shutdown` is cancelled.
///
/// # Errors
/// [`Error::Config`] naming `observability.listen` when the address cannot be bound.
pub async fn serve(
    listen: &str,
    metrics: PrometheusHandle,
    ready: Readiness,
    shutdown: CancellationToken,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::Config {
            key: "observability.listen".into(),
            message: format!("cannot bind {listen}: {e}"),
        })?;
    let bound = listener
        .local_addr()
        .map_or_else(|_| listen.to_string(), |a| a.to_string());
    // `addr` is the bound address (the port chosen when `listen` asks for port 0).
    tracing::info!(%listen, addr = %bound, "metrics and health endpoints up");
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(s): State<AppState>| async move { s.metrics.render() }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(s): State<AppState>| async move {
                match s.ready.get() {
                    None => (StatusCode::OK, "ready\n".to_string()),
                    Some(why) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: {why}\n"),
                    ),
                }
            }),
        )
        .with_state(AppState { metrics, ready });
    tokio::spawn(async move {
        let res = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}

/// A token cancelled on the first SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        t.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => tracing::info!("SIGINT: shutting down"),
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        t.cancel();
    });
    token
}
