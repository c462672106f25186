//! One export call to an OTLP collector: the gRPC transport (tonic's generated
//! `TraceServiceClient`), the shared result types, and loading the TLS files both transports use.
//! The OTLP/HTTP transport is in `otlp_http.rs`.
//!
//! A call either succeeds ([`Accepted`], possibly with a partial-success rejection) or fails
//! ([`Failure`], carrying the gRPC code and any server-requested delay for `retry::decide`).
//! Connections are lazy: building a client never touches the network, so the agent starts even
//! when the collector is down. Whether to retry, batching and counting are `batch.rs`'s job.

use std::path::Path;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;
use tonic_types::StatusExt as _;

use super::config::{parse_endpoint, Compression, EndpointError, ExportConfig, Protocol};
use super::otlp::encode;
use super::otlp_http::HttpClient;
use super::ExportError;
use crate::span::model::Span;

/// The collector's answer to a successful call.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Accepted {
    /// Spans the collector says it rejected (OTLP partial success).
    pub rejected: u64,
    /// The collector's explanation; may be set even when nothing was rejected (a warning).
    pub message: String,
}

impl Accepted {
    pub(crate) fn from_response(resp: ExportTraceServiceResponse) -> Self {
        match resp.partial_success {
            Some(p) => Self {
                rejected: u64::try_from(p.rejected_spans).unwrap_or(0),
                message: p.error_message,
            },
            None => Self::default(),
        }
    }
}

/// A failed call.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: Code,
    pub message: String,
    /// Delay requested by the server (gRPC `RetryInfo`, HTTP `Retry-After`). `Some(ZERO)` when
    /// it sent `RetryInfo` without a delay: still a signal that retrying is welcome.
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub(crate) fn from_status(status: &tonic::Status) -> Self {
        let mut message = status.message().to_owned();
        // Transport errors keep the useful part ("connection refused") in the source chain.
        if let Some(source) = std::error::Error::source(status) {
            message.push_str(": ");
            message.push_str(&error_chain(source));
        }
        let retry_after = status
            .get_details_retry_info()
            .map(|info| info.retry_delay.unwrap_or(Duration::ZERO));
        Self {
            code: status.code(),
            message,
            retry_after,
        }
    }

    pub(crate) fn timed_out(timeout: Duration) -> Self {
        Self {
            code: Code::DeadlineExceeded,
            message: format!("no answer within {timeout:?}"),
            retry_after: None,
        }
    }
}

/// An OTLP client for either transport.
// One instance per exporter: the variants' size difference costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub(crate) enum Client {
    Grpc(GrpcClient),
    Http(HttpClient),
}

impl Client {
    /// Builds the client for `cfg.endpoint` (which must be set and valid). Reads TLS files and
    /// checks headers now, so mistakes surface at start-up, but does not connect.
    pub(crate) fn new(cfg: &ExportConfig, endpoint: &str) -> Result<Self, ExportError> {
        let uri = parse_endpoint(endpoint).map_err(|reason| ExportError::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            reason,
        })?;
        let tls = TlsFiles::load(cfg)?;
        if uri.scheme_str() != Some("https") && tls.is_some() {
            tracing::warn!(
                endpoint,
                "TLS files are configured but the endpoint is not https://; they are ignored"
            );
        }
        Ok(match cfg.protocol {
            Protocol::Grpc => Client::Grpc(GrpcClient::new(cfg, uri, tls)?),
            Protocol::HttpProtobuf => Client::Http(HttpClient::new(cfg, uri, tls)?),
        })
    }

    /// Sends `spans` once. `timeout` bounds the whole call, connecting included.
    pub(crate) async fn export(
        &mut self,
        spans: &[Span],
        timeout: Duration,
    ) -> Result<Accepted, Failure> {
        match self {
            Client::Grpc(c) => c.export(spans, timeout).await,
            Client::Http(c) => c.export(spans, timeout).await,
        }
    }
}

/// `User-Agent` as the OTLP exporter spec recommends: identify the exporter and its version.
pub(crate) fn user_agent() -> String {
    format!("ebpf-agent-otlp-exporter/{}", env!("CARGO_PKG_VERSION"))
}

#[derive(Clone)]
pub(crate) struct GrpcClient {
    client: TraceServiceClient<Channel>,
    metadata: MetadataMap,
}

impl GrpcClient {
    fn new(cfg: &ExportConfig, uri: http::Uri, tls: Option<TlsFiles>) -> Result<Self, ExportError> {
        let (channel, metadata) = grpc_channel(cfg, &uri, tls.as_ref())?;
        let mut client = TraceServiceClient::new(channel);
        if cfg.compression == Compression::Gzip {
            client = client
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        Ok(Self { client, metadata })
    }

    async fn export(&mut self, spans: &[Span], timeout: Duration) -> Result<Accepted, Failure> {
        let mut request = tonic::Request::new(encode(spans));
        *request.metadata_mut() = self.metadata.clone();
        // Tells the server our deadline (grpc-timeout); the local timeout enforces it even if
        // the connection hangs before any response.
        request.set_timeout(timeout);
        match tokio::time::timeout(timeout, self.client.export(request)).await {
            Err(_) => Err(Failure::timed_out(timeout)),
            Ok(Err(status)) => Err(Failure::from_status(&status)),
            Ok(Ok(response)) => Ok(Accepted::from_response(response.into_inner())),
        }
    }
}

/// A lazy gRPC channel to the collector at `uri` with the configured TLS, and the configured
/// headers as metadata: shared by the trace and the metrics clients, so both signals honour
/// the same `export.*` settings.
pub(crate) fn grpc_channel(
    cfg: &ExportConfig,
    uri: &http::Uri,
    tls: Option<&TlsFiles>,
) -> Result<(Channel, MetadataMap), ExportError> {
    let endpoint_err = |reason: EndpointError| ExportError::InvalidEndpoint {
        endpoint: uri.to_string(),
        reason,
    };
    let https = uri.scheme_str() == Some("https");
    // gRPC ignores the path: the method path is fixed by the service definition.
    let origin = match uri.authority() {
        Some(authority) => format!("{}://{authority}", if https { "https" } else { "http" }),
        None => return Err(endpoint_err(EndpointError::NoHost)),
    };
    let mut endpoint = Endpoint::from_shared(origin)
        .map_err(|e| endpoint_err(EndpointError::NotAUrl(e.to_string())))?
        .user_agent(user_agent())
        .map_err(|e| endpoint_err(EndpointError::NotAUrl(e.to_string())))?
        .connect_timeout(Duration::from_millis(cfg.timeout_ms))
        // Notice a collector that vanished without closing the connection.
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    if https {
        let mut tls_config = ClientTlsConfig::new();
        tls_config = match tls.and_then(|t| t.ca.as_ref()) {
            Some(ca) => tls_config.ca_certificate(Certificate::from_pem(ca)),
            None => tls_config.with_native_roots(),
        };
        if let Some((cert, key)) = tls.and_then(|t| t.identity.as_ref()) {
            tls_config = tls_config.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint
            .tls_config(tls_config)
            .map_err(|e| ExportError::Tls {
                reason: error_chain(&e),
            })?;
    }
    let channel = endpoint.connect_lazy();
    let mut metadata = MetadataMap::new();
    for (name, value) in &cfg.headers {
        let bad = |reason: &str| ExportError::InvalidHeader {
            name: name.clone(),
            reason: reason.to_owned(),
        };
        let key: AsciiMetadataKey = name
            .parse()
            .map_err(|_| bad("not a valid gRPC metadata key"))?;
        let value: AsciiMetadataValue = value
            .parse()
            .map_err(|_| bad("value has characters not allowed in gRPC metadata"))?;
        metadata.insert(key, value);
    }
    Ok((channel, metadata))
}

/// PEM bytes of the configured TLS files.
pub(crate) struct TlsFiles {
    pub ca: Option<Vec<u8>>,
    /// Client certificate chain and key, for mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsFiles {
    pub(crate) fn load(cfg: &ExportConfig) -> Result<Option<Self>, ExportError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| ExportError::TlsFile {
                path: path.to_owned(),
                source,
            })
        };
        let ca = cfg.ca_file.as_deref().map(read).transpose()?;
        let identity = match (&cfg.client_cert_file, &cfg.client_key_file) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            (None, None) => None,
            _ => {
                return Err(ExportError::Tls {
                    reason: "client_cert_file and client_key_file go together".into(),
                })
            }
        };
        Ok((ca.is_some() || identity.is_some()).then_some(Self { ca, identity }))
    }
}

/// `e` and its sources, joined: library errors often say "transport error" at the top and the
/// actual cause three levels down.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
