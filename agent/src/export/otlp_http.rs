//! The OTLP/HTTP transport (`http/protobuf`): one POST of a binary protobuf
//! `ExportTraceServiceRequest` per call, over hyper with rustls for `https://`.
//!
//! Follows the OTLP/HTTP spec (<https://opentelemetry.io/docs/specs/otlp/#otlphttp>): the
//! response body of a 2xx is an `ExportTraceServiceResponse` (partial success), of a failure a
//! `google.rpc.Status`; 429/502/503/504 are retryable (mapped to UNAVAILABLE by
//! `retry::code_for_http_status`) and `Retry-After` is honoured. Retry policy and batching are
//! not here; the gRPC transport and shared types are in `client.rs`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER, USER_AGENT,
};
use http::{Request, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::Code;

use super::client::{error_chain, user_agent, Accepted, Failure, TlsFiles};
use super::config::{Compression, EndpointError, ExportConfig};
use super::otlp::encode;
use super::retry::code_for_http_status;
use super::ExportError;
use crate::span::model::Span;

/// Collector answers are tiny; anything bigger than this is not an OTLP response.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

#[derive(Clone)]
pub(crate) struct HttpClient {
    client: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: Uri,
    headers: HeaderMap,
}

impl HttpClient {
    pub(crate) fn new(
        cfg: &ExportConfig,
        uri: Uri,
        tls: Option<TlsFiles>,
    ) -> Result<Self, ExportError> {
        // A bare `http://host:4318` means the standard traces path (config reference).
        let uri = if matches!(uri.path(), "" | "/") && uri.query().is_none() {
            let with_path = format!(
                "{}://{}/v1/traces",
                uri.scheme_str().unwrap_or("http"),
                uri.authority().map_or("", |a| a.as_str())
            );
            with_path
                .parse()
                .map_err(|e: http::uri::InvalidUri| ExportError::InvalidEndpoint {
                    endpoint: uri.to_string(),
                    reason: EndpointError::NotAUrl(e.to_string()),
                })?
        } else {
            uri
        };

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_millis(cfg.timeout_ms)));
        http.set_nodelay(true);
        let tls_config = if uri.scheme_str() == Some("https") {
            rustls_config(tls)?
        } else {
            plain_rustls_config()?
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = HyperClient::builder(TokioExecutor::new()).build(connector);

        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        if let Ok(ua) = HeaderValue::from_str(&user_agent()) {
            headers.insert(USER_AGENT, ua);
        }
        if cfg.compression == Compression::Gzip {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        for (name, value) in &cfg.headers {
            let bad = |reason: &str| ExportError::InvalidHeader {
                name: name.clone(),
                reason: reason.to_owned(),
            };
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad("not a valid HTTP header name"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| bad("value has characters not allowed in a header"))?;
            headers.insert(name, value);
        }
        Ok(Self {
            client,
            uri,
            headers,
        })
    }

    pub(crate) async fn export(
        &mut self,
        spans: &[Span],
        timeout: Duration,
    ) -> Result<Accepted, Failure> {
        let body = self.post(encode(spans).encode_to_vec(), timeout).await?;
        // The data is in; an unreadable answer only loses the partial-success details.
        Ok(ExportTraceServiceResponse::decode(body)
            .map(Accepted::from_response)
            .unwrap_or_default())
    }

    /// POSTs one protobuf request body; on a 2xx, returns the response body (the signal's
    /// `Export*ServiceResponse`, for the caller to decode).
    pub(crate) async fn post(
        &mut self,
        mut body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Bytes, Failure> {
        if self.headers.contains_key(CONTENT_ENCODING) {
            body = gzip(&body).map_err(|e| Failure {
                code: Code::Internal,
                message: format!("gzip: {e}"),
                retry_after: None,
            })?;
        }
        let mut request = Request::post(self.uri.clone())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure {
                code: Code::Internal,
                message: e.to_string(),
                retry_after: None,
            })?;
        *request.headers_mut() = self.headers.clone();
        match tokio::time::timeout(timeout, self.round_trip(request)).await {
            Err(_) => Err(Failure::timed_out(timeout)),
            Ok(result) => result,
        }
    }

    async fn round_trip(&self, request: Request<Full<Bytes>>) -> Result<Bytes, Failure> {
        let response = self.client.request(request).await.map_err(|e| Failure {
            // Could not connect or the connection broke: the collector may come back.
            code: Code::Unavailable,
            message: error_chain(&e),
            retry_after: None,
        })?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes());
        let status = parts.status.as_u16();
        if parts.status.is_success() {
            return Ok(body.unwrap_or_default());
        }
        let detail = match body {
            Ok(b) => match tonic_types::Status::decode(b.clone()) {
                Ok(s) if !s.message.is_empty() => s.message,
                // Not a Status: show the start of whatever it is, on one line.
                _ => String::from_utf8_lossy(&b[..b.len().min(200)])
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect(),
            },
            Err(e) => format!("unreadable body: {e}"),
        };
        Err(Failure {
            code: code_for_http_status(status),
            message: format!("HTTP {status}: {detail}")
                .trim_end_matches([' ', ':'])
                .to_owned(),
            retry_after: parts.headers.get(RETRY_AFTER).and_then(parse_retry_after),
        })
    }
}

/// `Retry-After` as delay-seconds. The HTTP-date form is not honoured (collectors send seconds);
/// the normal backoff applies instead.
fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    value
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
        .map(Duration::from_secs)
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(data)?;
    encoder.finish()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(reason: impl std::fmt::Display) -> ExportError {
    ExportError::Tls {
        reason: reason.to_string(),
    }
}

/// Never used to connect (the endpoint is plain http); the connector type just needs one.
fn plain_rustls_config() -> Result<rustls::ClientConfig, ExportError> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

/// Trusts the configured CA file, else the system's trust store; presents the client
/// certificate when configured.
fn rustls_config(tls: Option<TlsFiles>) -> Result<rustls::ClientConfig, ExportError> {
    let mut roots = rustls::RootCertStore::empty();
    match tls.as_ref().and_then(|t| t.ca.as_deref()) {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots
                    .add(cert.map_err(|e| tls_err(format!("ca_file: {e}")))?)
                    .map_err(|e| tls_err(format!("ca_file: {e}")))?;
            }
            if roots.is_empty() {
                return Err(tls_err("ca_file: no certificate found"));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                let errors: Vec<String> = native.errors.iter().map(ToString::to_string).collect();
                return Err(tls_err(format!(
                    "no usable system CA certificates ({}); set ca_file",
                    errors.join("; ")
                )));
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_root_certificates(roots);
    match tls.and_then(|t| t.identity) {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls_err(format!("client_cert_file: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(&key)
                .map_err(|e| tls_err(format!("client_key_file: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_err(format!("client certificate: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds() {
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("7")),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static(" 0 ")),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
    }

    #[test]
    fn bare_endpoint_gets_the_traces_path() {
        let cfg = ExportConfig::default();
        for (given, want) in [
            ("http://c:4318", "http://c:4318/v1/traces"),
            ("http://c:4318/", "http://c:4318/v1/traces"),
            ("http://c:4318/custom/path", "http://c:4318/custom/path"),
        ] {
            let client = HttpClient::new(&cfg, given.parse().expect("uri"), None).expect("client");
            assert_eq!(client.uri.to_string(), want);
        }
    }

    #[test]
    fn bad_ca_file_is_a_clear_error() {
        let tls = TlsFiles {
            ca: Some(b"not a pem".to_vec()),
            identity: None,
        };
        let err = rustls_config(Some(tls)).expect_err("no certs");
        assert_eq!(
            err.to_string(),
            "TLS setup failed: ca_file: no certificate found"
        );
    }
}
