//! The agent's own HTTP endpoint on `telemetry.listen`: `/metrics` (see `metrics.rs`),
//! `/healthz` (liveness) and `/readyz` (readiness, see `health.rs`). It owns the socket, the
//! HTTP/1 server and the routing; what is measured and judged lives beside it.
//!
//! It runs on the agent's tokio runtime as one accept task plus one short task per connection,
//! and is bounded so that a misbehaving client costs little: at most [`Limits::connections`]
//! connections at once (more wait in the kernel's backlog), each closed after one response,
//! a deadline for the request head and one for the whole connection, a small read buffer, and
//! request bodies never read. Failed connections are counted
//! (`agent_telemetry_http_errors_total`); nothing a client sends can make it panic.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::metrics::{Format, Metrics};
use super::{Counter, Telemetry};
use crate::config::TelemetryConfig;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("{0}")]
    Config(String),
    // `error`, not `source`: the message already says it, and anyhow would say it twice.
    #[error(
        "telemetry.listen: cannot listen on {addr}: {error} (set another address, or \"\" to turn the endpoint off)"
    )]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// The running endpoint.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    /// The address it is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listening socket (and waits until it is closed). Needed before the agent
    /// forks at exit (`release_in_background`): a child inheriting the socket would keep the
    /// port bound after the agent is gone, and the next agent could not start.
    pub async fn stop(self) {
        self.accept.abort();
        let _ = self.accept.await;
    }
}

/// Bounds on what clients may cost.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once.
    pub connections: usize,
    /// Time a client has to send its request head.
    pub header_timeout: Duration,
    /// Time a connection may last in all.
    pub connection_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: 4,
            header_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(10),
        }
    }
}

/// hyper's smallest allowed read buffer: far more than any request line and headers we answer.
const MAX_BUF: usize = 8192;

/// Starts the endpoint if `telemetry.listen` names an address: binds now (so a port in use fails
/// start-up with a message naming the field) and serves from a spawned task for the rest of the
/// runtime's life or until [`Endpoint::stop`]; `None` when the endpoint is off.
pub async fn start(
    cfg: &TelemetryConfig,
    telemetry: Arc<Telemetry>,
) -> Result<Option<Endpoint>, EndpointError> {
    let Some(addr) = cfg.listen_addr().map_err(EndpointError::Config)? else {
        tracing::info!("no metrics or health endpoint (telemetry.listen is empty)");
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|error| EndpointError::Bind { addr, error })?;
    let bound = listener.local_addr().unwrap_or(addr);
    if !bound.ip().is_loopback() {
        tracing::warn!(
            "the agent listens on a non-loopback address, {bound} (telemetry.listen): /metrics, \
             /healthz and /readyz are reachable from other hosts"
        );
    }
    tracing::info!("serving /metrics, /healthz and /readyz on http://{bound}");
    let grace = match cfg.unready_after_export_failing_secs {
        0 => None,
        s => Some(Duration::from_secs(s)),
    };
    let state = Arc::new(State::new(telemetry, grace));
    let accept = tokio::spawn(serve(listener, state, Limits::default()));
    Ok(Some(Endpoint {
        addr: bound,
        accept,
    }))
}

/// What every request needs.
pub struct State {
    telemetry: Arc<Telemetry>,
    metrics: Metrics,
    export_grace: Option<Duration>,
    accept_error_logged: AtomicBool,
}

impl State {
    pub fn new(telemetry: Arc<Telemetry>, export_grace: Option<Duration>) -> Self {
        Self {
            metrics: Metrics::new(telemetry.clone()),
            telemetry,
            export_grace,
            accept_error_logged: AtomicBool::new(false),
        }
    }

    /// The answer to one request, from its method, path and `Accept` header alone.
    pub fn respond(
        &self,
        method: &Method,
        path: &str,
        accept: Option<&str>,
    ) -> Response<Full<Bytes>> {
        const TEXT: &str = "text/plain; charset=utf-8";
        let health = self.telemetry.health();
        if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
            return reply(
                StatusCode::NOT_FOUND,
                TEXT,
                "not found: try /metrics, /healthz or /readyz\n".into(),
            );
        }
        if method != Method::GET && method != Method::HEAD {
            let mut r = reply(
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT,
                "only GET and HEAD\n".into(),
            );
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let verdict = match path {
            "/metrics" => {
                let format = Format::negotiate(accept);
                return reply(
                    StatusCode::OK,
                    format.content_type(),
                    self.metrics.render(format),
                );
            }
            "/healthz" => health.liveness(),
            _ => health.readiness(self.export_grace),
        };
        match verdict {
            Ok(state) => reply(StatusCode::OK, TEXT, format!("{state}\n")),
            Err(why) => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{why}\n")),
        }
    }

    fn failed(&self, what: &str, why: &dyn std::fmt::Display) {
        self.telemetry.incr(Counter::TelemetryHttpErrors);
        tracing::debug!(
            counter = Counter::TelemetryHttpErrors.name(),
            "metrics/health endpoint: {what}: {why}"
        );
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Accepts connections for as long as the runtime runs.
pub async fn serve(listener: TcpListener, state: Arc<State>, limits: Limits) {
    let permits = Arc::new(Semaphore::new(limits.connections.max(1)));
    loop {
        // Taken before accepting, so connections beyond the bound wait in the backlog.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: count, say so once, and back off
                // instead of spinning on an error that will be there again at once.
                state.failed("accepting a connection", &e);
                if !state.accept_error_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        counter = Counter::TelemetryHttpErrors.name(),
                        "metrics/health endpoint cannot accept connections: {e}; further errors are only counted"
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(|req: Request<hyper::body::Incoming>| {
                let accept = req
                    .headers()
                    .get(http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok());
                let resp = state.respond(req.method(), req.uri().path(), accept);
                // The body is never polled: request bodies are ignored.
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(false)
                .max_buf_size(MAX_BUF)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(limits.connection_timeout, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => state.failed("serving a connection", &e),
                Err(_) => state.failed(
                    "serving a connection",
                    &"took longer than the connection timeout",
                ),
            }
        });
    }
}

#[cfg(test)]
mod tests;
