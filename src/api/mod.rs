//! The inbox HTTP API (`/api/v1/`): the one public read/write surface of the product.
//!
//! Reads come straight from the store; writes publish the contract's jobs with confirms,
//! exactly as any other tool would, and answer `202 Accepted` with the job ids (or, with
//! `?wait=`, the result once the worker committed it). The API holds no state of its own
//! beyond a broker connection, so any number of `gochat api` processes can run behind a
//! load balancer.
//!
//! | file | what |
//! | --- | --- |
//! | `auth.rs` | API keys as Bearer tokens: read and write scopes |
//! | `problem.rs` | every error as `application/problem+json` |
//! | `params.rs`, `body.rs`, `cursor.rs` | query strings, JSON bodies, page cursors |
//! | `threads.rs` | the inbox, a thread, its feed, a customer's inbox |
//! | `files.rs` | attachment and raw-mail downloads |
//! | `writes.rs` | replies, comments, thread changes, customers: jobs |
//! | `openapi.rs` | the OpenAPI 3.1 document |

mod auth;
mod body;
mod cursor;
mod files;
pub mod openapi;
mod params;
pub mod problem;
mod threads;
mod writes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::clock::SharedClock;
use crate::config::ApiConfig;
use crate::lifecycle::Lifecycles;
use crate::queue::SharedPublisher;
use crate::shutdown::Shutdown;
use crate::store::Store;
use problem::Problem;
pub use threads::LIST_PARAMS;

/// The cursor of the page that starts after the thread updated at `at` with id `id` (for
/// benchmarks and tools that know a position).
pub fn cursor_for(at: chrono::DateTime<chrono::Utc>, id: uuid::Uuid) -> String {
    cursor::Cursor { at, id }.encode()
}

/// What every handler reads. Cheap to clone.
#[derive(Clone)]
pub struct ApiState(Arc<Inner>);

pub struct Inner {
    pub store: Store,
    pub jobs: Arc<SharedPublisher>,
    /// For status colours and the transitions a thread allows; read at start, swapped
    /// whole on reload (SIGHUP, see [`Running::reload`]).
    pub lifecycles: std::sync::RwLock<Arc<Lifecycles>>,
    pub config: ApiConfig,
    pub clock: SharedClock,
}

impl ApiState {
    pub fn new(inner: Inner) -> ApiState {
        ApiState(Arc::new(inner))
    }
}

impl Inner {
    /// The lifecycles in force now.
    pub fn lifecycles(&self) -> Arc<Lifecycles> {
        match self.lifecycles.read() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl std::ops::Deref for ApiState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Every route of the API, with its limits: body size, handler timeout, problem+json for
/// unknown paths and methods.
pub fn router(state: ApiState) -> Router {
    let timeout = state.config.request_timeout;
    let max_body = usize::try_from(state.config.max_body).unwrap_or(usize::MAX);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .merge(threads::routes())
        .merge(files::routes())
        .merge(writes::routes())
        .fallback(|| async { Problem::not_found("no such endpoint; see /api/v1/openapi.json") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "this endpoint does not take that method; see /api/v1/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(timeout, with_timeout))
        .layer(middleware::from_fn(common_headers))
        .with_state(state)
}

/// Binds `addr` and serves the API until shutdown, finishing requests in flight. Returns
/// the bound address (port 0 picks one).
pub async fn serve(
    addr: SocketAddr,
    state: ApiState,
    shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    crate::http::serve_router(addr, router(state), shutdown, "API").await
}

/// A handler that runs past `api.request_timeout` is dropped and answered 503: a stuck
/// database must not hold connections (and the client) forever.
async fn with_timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(%path, "API request timed out");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the request took longer than {}; try again",
                    humantime::format_duration(limit)
                ),
            )
            .into_response()
        }
    }
}

/// Headers every answer carries: no content sniffing, no caching of private data, and
/// axum's own plain-text rejections (a body over the limit, say) turned into problems.
async fn common_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let plain_error = response.status().is_client_error()
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
    if plain_error {
        let status = response.status();
        let detail = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "the request body is larger than api.max_body",
            _ => "the request could not be read",
        };
        response = Problem::new(status, detail).into_response();
    }
    let h = response.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn readyz(State(s): State<ApiState>) -> Response {
    crate::http::readiness(&s.store, s.jobs.is_connected())
        .await
        .into_response()
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the workflows in {dir} are invalid:\n{problems}")]
    Workflows {
        dir: String,
        problems: crate::workflow::LoadError,
    },
    #[error("cannot listen on {addr} (api.addr / GOCHAT_API_ADDR): {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running API listener.
pub struct Running {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    jobs: Arc<SharedPublisher>,
    state: ApiState,
}

impl Running {
    /// Loads `dir`'s workflow set again (SIGHUP) and, if all of it is valid, puts its
    /// lifecycles in force: status colours and allowed moves follow what ops changed,
    /// as the worker's own reload does. An invalid set changes nothing.
    pub fn reload(&self, dir: &std::path::Path) -> Result<(), crate::workflow::LoadError> {
        let set = crate::workflow::WorkflowSet::load(dir)?;
        let mut current = match self.state.lifecycles.write() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        *current = set.lifecycles.clone();
        Ok(())
    }

    /// Waits for the server to finish its requests (after `shutdown` fired), then closes
    /// the broker connection.
    pub async fn stopped(self) {
        let _ = self.task.await;
        self.jobs.close().await;
    }
}

/// Loads the lifecycles, starts the broker connection and serves the API on `api.addr`
/// with `store` until `shutdown`: what `gochat api` and `gochat run` (with `api.enabled`)
/// both do.
pub async fn start(
    config: &crate::config::Config,
    store: Store,
    clock: SharedClock,
    shutdown: Shutdown,
) -> Result<Running, StartError> {
    let set = crate::workflow::WorkflowSet::load(&config.workflows.dir).map_err(|problems| {
        StartError::Workflows {
            dir: config.workflows.dir.display().to_string(),
            problems,
        }
    })?;
    let jobs = Arc::new(SharedPublisher::start(&config.amqp, "gochat api"));
    let state = ApiState::new(Inner {
        store,
        jobs: jobs.clone(),
        lifecycles: std::sync::RwLock::new(set.lifecycles.clone()),
        config: config.api.clone(),
        clock,
    });
    let (addr, task) = serve(config.api.addr, state.clone(), shutdown)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.api.addr,
            source,
        })?;
    Ok(Running {
        addr,
        task,
        jobs,
        state,
    })
}
