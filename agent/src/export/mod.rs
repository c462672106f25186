//! The export stage: finished spans leave the agent here, either to an OpenTelemetry Collector
//! over OTLP (gRPC or HTTP/protobuf) or, with no endpoint configured, as readable lines on stdout.
//!
//! The data path hands spans to a [`SpanSender`], which never blocks: a bounded queue sits in
//! front of one exporter task, and a full queue drops (and counts) the span. This module owns
//! the queue and start-up; `config`/`env` say what to do, `otlp` encodes, `client`/`otlp_http` talk to
//! the collector, `retry` decides on retries, `batch` runs the OTLP task and `console` the stdout
//! one. `metrics` (with `otlp_metrics` and `metrics_console`) exports the RED histograms the
//! same way, as a task of its own. Building spans and the counters themselves belong to `span` and `telemetry`.

mod batch;
mod client;
mod config;
mod console;
mod env;
pub mod metrics;
mod metrics_console;
#[cfg(test)]
mod metrics_tests;
mod otlp;
mod otlp_http;
mod otlp_metrics;
mod retry;
/// The span stage hands finished spans to the exporter through this.
impl crate::span::builder::SpanSink for SpanSender {
    fn emit(&mut self, span: Span) {
        self.send(span);
    }
}

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use config::{
    Compression, ConfigFieldError, EndpointError, ExportConfig, HeaderError, Protocol,
};
pub use env::{Signal, ENV_VARS};
pub use otlp::encode;

use crate::span::model::Span;
use crate::telemetry::{Counter, Telemetry};

/// Why the exporter could not be configured or started.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A field failed [`ExportConfig::validate`]; the error names the field and value.
    #[error(transparent)]
    InvalidConfig(#[from] config::ConfigFieldError),
    /// An OpenTelemetry environment variable has a malformed value.
    #[error("{var}: {reason}")]
    InvalidEnv { var: &'static str, reason: String },
    #[error("export endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        endpoint: String,
        reason: config::EndpointError,
    },
    /// The value is deliberately not part of the error: headers usually carry credentials.
    #[error("export header {name:?}: {reason}")]
    InvalidHeader { name: String, reason: String },
    #[error("reading TLS file {path:?}: {source}")]
    TlsFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS setup failed: {reason}")]
    Tls { reason: String },
    #[error("export must be started from within a tokio runtime")]
    NoRuntime,
    #[error("starting the console exporter thread: {source}")]
    Thread { source: std::io::Error },
}

/// The data path's handle to the exporter. Cheap to clone; [`send`](Self::send) never blocks.
/// When every clone is dropped, the exporter flushes what it holds and its task completes.
#[derive(Clone)]
pub struct SpanSender {
    inner: Arc<SenderInner>,
}

struct SenderInner {
    tx: mpsc::Sender<Span>,
    telemetry: Arc<Telemetry>,
    /// Whether a drop has been logged: the first one is worth a warning, the rest are covered by
    /// the periodic counter summary.
    warned: AtomicBool,
    /// Dropped together with the last `SpanSender`, which tells the exporter that shutdown has
    /// begun even while it is busy retrying and not reading the queue.
    _gone: oneshot::Sender<()>,
}

impl SpanSender {
    /// Queues a finished span for export, or drops and counts it if the queue is full.
    pub fn send(&self, span: Span) {
        let inner = &*self.inner;
        let reason = match inner.tx.try_send(span) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(_)) => {
                "the export queue is full (collector slow or down?)"
            }
            Err(mpsc::error::TrySendError::Closed(_)) => "the exporter has stopped",
        };
        inner.telemetry.incr(Counter::SpansQueueDropped);
        if !inner.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                counter = Counter::SpansQueueDropped.name(),
                "dropping spans: {reason}; further drops are only counted"
            );
        }
    }
}

/// Starts the exporter task on the current tokio runtime: OTLP to `cfg.endpoint`, or the
/// console when it is unset. Never connects eagerly, so a collector that is down does not fail
/// start-up. When every [`SpanSender`] is dropped the task sends what it holds (bounded by
/// `cfg.shutdown_timeout_ms`) and the `JoinHandle` completes.
pub fn spawn(
    cfg: &ExportConfig,
    telemetry: Arc<Telemetry>,
) -> Result<(SpanSender, JoinHandle<()>), ExportError> {
    cfg.validate()?;
    tokio::runtime::Handle::try_current().map_err(|_| ExportError::NoRuntime)?;
    let (tx, rx) = mpsc::channel(cfg.queue_size);
    let (gone_tx, gone_rx) = oneshot::channel();
    let shutdown_timeout = Duration::from_millis(cfg.shutdown_timeout_ms);
    let handle = match &cfg.endpoint {
        None => {
            let handle = console::spawn(rx, gone_rx, shutdown_timeout, telemetry.clone())?;
            tracing::info!("exporting spans to the console (no export endpoint configured)");
            handle
        }
        Some(endpoint) => {
            let client = client::Client::new(cfg, endpoint)?;
            let settings = batch::Settings {
                batch_size: cfg.batch_size,
                batch_timeout: Duration::from_millis(cfg.batch_timeout_ms),
                call_timeout: Duration::from_millis(cfg.timeout_ms),
                backoff: retry::Backoff::with_max_elapsed(Duration::from_millis(
                    cfg.max_retry_elapsed_ms,
                )),
                shutdown_timeout,
                max_in_flight: cfg.max_concurrent_exports,
            };
            let exporter = batch::Exporter::new(rx, gone_rx, client, telemetry.clone(), settings);
            tracing::info!(
                endpoint = %config::redacted(endpoint),
                protocol = cfg.protocol.as_str(),
                headers = cfg.headers.len(),
                "exporting spans over OTLP"
            );
            tokio::spawn(exporter.run())
        }
    };
    let sender = SpanSender {
        inner: Arc::new(SenderInner {
            tx,
            telemetry,
            warned: AtomicBool::new(false),
            _gone: gone_tx,
        }),
    };
    Ok((sender, handle))
}
