//! The agent's HTTP endpoint (`--http ADDR`): status, probes, metrics and the manual trigger,
//! safe to expose on 0.0.0.0.
//!
//! - `GET /status`, `/healthz`, `/readyz`, `/metrics` are open: they only read.
//! - `POST /trigger` starts a round (push/pull agents only). It is off unless a token is
//!   configured (`--http-token-file`; 403 otherwise), needs `Authorization: Bearer TOKEN`
//!   (compared in constant time; 401 otherwise), and accepts at most one trigger per
//!   [`TRIGGER_INTERVAL`] (429 with `Retry-After` otherwise), so a neighbour cannot run rounds
//!   and `--pre-round` hooks back to back or rotate good snapshots out of retention.
//! - Connections are capped at [`MAX_HTTP_CONNECTIONS`] (more are closed at once), a
//!   connection that sends nothing (no request, or no next request on a kept-alive one) for
//!   [`HEADER_TIMEOUT`] is closed, and none lives longer than [`CONNECTION_LIFETIME`]
//!   (slow senders), so idle or slow connections cannot exhaust the process's descriptors.
//!   Accept errors (EMFILE) back off instead of spinning.
//!
//! Those four are the defaults of [`HttpLimits`] (`--http-max-connections`,
//! `--http-header-timeout`, `--http-lifetime`, `--trigger-interval`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ferry_transport::idle::Idle;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

use super::status::Agent;

/// Accepted triggers are at least this far apart.
pub const TRIGGER_INTERVAL: Duration = Duration::from_secs(10);
/// HTTP connections open at once; more are closed as soon as they are accepted.
pub const MAX_HTTP_CONNECTIONS: usize = 32;
/// A connection that sends nothing for this long (its request headers, or its next request)
/// is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer than this (a client sending a byte every few seconds).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// What the endpoint needs besides the agent.
#[derive(Debug, Clone, Default)]
pub struct HttpConfig {
    /// The bearer token of `POST /trigger` (`--http-token-file`); `None` turns it off.
    pub token: Option<String>,
    /// Its connection limits and trigger rate.
    pub limits: HttpLimits,
}

/// The endpoint's bounds on its clients; the defaults are the constants above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once (`--http-max-connections`); more are closed when accepted.
    pub max_connections: usize,
    /// Silence after which a connection is closed (`--http-header-timeout`).
    pub header_timeout: Duration,
    /// Longest a connection lives (`--http-lifetime`).
    pub lifetime: Duration,
    /// Least time between two accepted triggers (`--trigger-interval`).
    pub trigger_interval: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: MAX_HTTP_CONNECTIONS,
            header_timeout: HEADER_TIMEOUT,
            lifetime: CONNECTION_LIFETIME,
            trigger_interval: TRIGGER_INTERVAL,
        }
    }
}

struct Endpoint {
    agent: Arc<Agent>,
    token: Option<blake3::Hash>,
    trigger_interval: Duration,
    last_trigger: Mutex<Option<Instant>>,
}

/// Serves `/status`, `/healthz`, `/readyz`, `/metrics` and `POST /trigger` on `listener`
/// until the process ends.
///
/// # Errors
/// When serving fails.
pub async fn serve_http(
    listener: TcpListener,
    agent: Arc<Agent>,
    cfg: HttpConfig,
) -> std::io::Result<()> {
    let ep = Arc::new(Endpoint {
        agent,
        token: cfg.token.as_deref().map(|t| blake3::hash(t.as_bytes())),
        trigger_interval: cfg.limits.trigger_interval,
        last_trigger: Mutex::new(None),
    });
    let app = Router::new()
        .route(
            "/status",
            get(|State(e): State<Arc<Endpoint>>| async move { Json(e.agent.status()) }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(e): State<Arc<Endpoint>>| async move {
                if e.agent.ready() {
                    (StatusCode::OK, "ready: the last round succeeded\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready: no successful last round\n")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(e): State<Arc<Endpoint>>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    e.agent.metrics_text(),
                )
            }),
        )
        .route("/trigger", post(trigger))
        .with_state(ep);
    let listener = Guarded {
        inner: listener,
        slots: Arc::new(Semaphore::new(cfg.limits.max_connections)),
        limits: cfg.limits,
        backoff: Duration::ZERO,
    };
    axum::serve(listener, app).await
}

async fn trigger(State(e): State<Arc<Endpoint>>, headers: HeaderMap) -> Response {
    if !e.agent.schedules() {
        return (StatusCode::CONFLICT, "this agent serves rounds; trigger the source's agent\n")
            .into_response();
    }
    let Some(want) = e.token else {
        return (
            StatusCode::FORBIDDEN,
            "POST /trigger is off: start the agent with --http-token-file FILE and send \
             'Authorization: Bearer <the file's token>'\n",
        )
            .into_response();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // blake3::Hash compares in constant time; hashing first also hides the token's length.
    if given.map(|g| blake3::hash(g.as_bytes())) != Some(want) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "POST /trigger needs 'Authorization: Bearer <token>' with the --http-token-file token\n",
        )
            .into_response();
    }
    let now = Instant::now();
    {
        let mut last = crate::lock(&e.last_trigger);
        if let Some(wait) = last.map(|t| e.trigger_interval.saturating_sub(now - t)) {
            if !wait.is_zero() {
                let secs = wait.as_secs().max(1);
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, secs.to_string())],
                    format!(
                        "a trigger was accepted less than {} ago; retry in {secs} s\n",
                        humantime::format_duration(e.trigger_interval)
                    ),
                )
                    .into_response();
            }
        }
        *last = Some(now);
    }
    e.agent.trigger();
    (StatusCode::ACCEPTED, "a round starts now (or right after the current one)\n").into_response()
}

/// The listener: a cap on open connections, each connection's time limits, and back-off on
/// accept errors.
struct Guarded {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    limits: HttpLimits,
    backoff: Duration,
}

impl axum::serve::Listener for Guarded {
    type Io = Limited;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Limited, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((sock, addr)) => {
                    self.backoff = Duration::ZERO;
                    // Over the cap the connection is closed at once: its descriptor is what a
                    // flood of idle connections would exhaust.
                    let Ok(permit) = self.slots.clone().try_acquire_owned() else { continue };
                    let _ = sock.set_nodelay(true);
                    return (Limited::new(sock, permit, &self.limits), addr);
                }
                Err(e) => ferry_transport::net::accept_backoff(&e, &mut self.backoff).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// One HTTP connection: closed after its header timeout without a byte either way, and at
/// the end of its lifetime in any case; holds its slot until dropped.
struct Limited {
    inner: Idle<TcpStream>,
    end: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl Limited {
    fn new(sock: TcpStream, permit: OwnedSemaphorePermit, limits: &HttpLimits) -> Limited {
        Limited {
            inner: Idle::new(sock, limits.header_timeout),
            end: Box::pin(tokio::time::sleep(limits.lifetime)),
            _permit: permit,
        }
    }

    fn over(&mut self, cx: &mut Context<'_>) -> bool {
        self.end.as_mut().poll(cx).is_ready()
    }
}

fn too_long() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "HTTP connection open too long")
}

impl AsyncRead for Limited {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.over(cx) {
            return Poll::Ready(Err(too_long()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.over(cx) {
            return Poll::Ready(Err(too_long()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
