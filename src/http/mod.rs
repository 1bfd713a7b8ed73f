//! The operations endpoint: `/healthz` (alive), `/readyz` (database and broker reachable),
//! `/metrics` (Prometheus). Later the inbox API joins this router.

use std::net::SocketAddr;

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::queue::BrokerStatus;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub store: Store,
    pub broker: BrokerStatus,
    pub metrics: Metrics,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Binds `addr` and serves until shutdown. Returns the bound address (port 0 picks one).
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_router(addr, router(state), shutdown, "HTTP").await
}

/// Binds `addr` and serves `app` until shutdown, finishing requests in flight; the ops
/// listener and the API listener (`what` names it in the log) both run this way.
pub async fn serve_router(
    addr: SocketAddr,
    app: Router,
    mut shutdown: Shutdown,
    what: &'static str,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.recv().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "{what} server stopped");
        }
    });
    Ok((bound, task))
}

/// How long `/readyz` waits for the database. A probe must answer quickly: with the
/// database down, a ping would otherwise wait out the pool's acquire timeout (10 s by
/// default), longer than a Kubernetes probe's own timeout, and the outage would show as a
/// probe failure instead of a clear 503.
pub const DATABASE_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    readiness(&s.store, s.broker.is_connected()).await
}

/// `/readyz`: 200 when the database answers (within [`DATABASE_CHECK_TIMEOUT`]) and the
/// broker is connected, else 503; the body says which is down.
pub async fn readiness(store: &Store, broker: bool) -> impl IntoResponse + use<> {
    let db = tokio::time::timeout(DATABASE_CHECK_TIMEOUT, store.ping())
        .await
        .unwrap_or(false);
    let body = format!(
        "{{\"database\":\"{}\",\"broker\":\"{}\"}}\n",
        if db { "up" } else { "down" },
        if broker { "up" } else { "down" }
    );
    let code = if db && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, [("content-type", "application/json")], body)
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    let (in_use, size) = s.store.pool_in_use();
    s.metrics
        .db_pool
        .with_label_values(&["in_use"])
        .set(i64::from(in_use));
    s.metrics
        .db_pool
        .with_label_values(&["idle"])
        .set(i64::from(size.saturating_sub(in_use)));
    s.metrics
        .broker_connected
        .set(i64::from(s.broker.is_connected()));
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}
