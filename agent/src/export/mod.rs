//! The export stage: finished spans leave the agent here, either to an OpenTelemetry Collector
//! over OTLP (gRPC or HTTP/protobuf) or, with no endpoint configured, as readable lines on stdout.
//!
//! Being written: so far the configuration (`config`, `env`), the OTLP encoding (`otlp`) and the
//! retry policy (`retry`); the exporter tasks and `spawn` follow.

mod config;
mod env;
mod otlp;
mod retry;

use std::path::PathBuf;

pub use config::{Compression, ExportConfig, Protocol};
pub use env::ENV_VARS;
pub use otlp::encode;
// Public until the exporter task that uses it lands.
pub use retry::{code_for_http_status, decide, Backoff, Retry};

/// Why the exporter could not be configured or started.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A field failed [`ExportConfig::validate`]; `reason` names the field and value.
    #[error("{reason}")]
    InvalidConfig { reason: String },
    /// An OpenTelemetry environment variable has a malformed value.
    #[error("{var}: {reason}")]
    InvalidEnv { var: &'static str, reason: String },
    #[error("export endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
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
