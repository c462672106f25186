//! The `export:` section of the agent's YAML configuration: where spans go (an OTLP collector
//! or the console), how they are batched, retried and secured, and the checks that reject a bad
//! value before anything starts.
//!
//! The `///` comments on [`ExportConfig`]'s fields are the user-facing configuration reference.
//! Reading the standard `OTEL_EXPORTER_OTLP_*` environment variables lives in `env.rs`; turning
//! a validated config into a running exporter lives in `mod.rs`. Values here are plain data: the
//! caller layers defaults < YAML file < environment < CLI flags by mutating fields.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Wire protocol used to reach the collector (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// OTLP over gRPC (collector port 4317).
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP over HTTP/1.1 with a binary protobuf body (collector port 4318).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl Protocol {
    /// The spelling used in config files and `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// Payload compression (`OTEL_EXPORTER_OTLP_COMPRESSION`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Send uncompressed.
    #[default]
    None,
    /// gzip the payload (gRPC message compression, or `Content-Encoding: gzip` over HTTP).
    Gzip,
}

/// Where and how finished spans leave the agent.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// OTLP collector URL, e.g. `http://127.0.0.1:4317` (gRPC) or `http://127.0.0.1:4318`
    /// (http/protobuf). `https://` enables TLS. For gRPC any path is ignored; for http/protobuf
    /// this is the URL spans are POSTed to, and `/v1/traces` is appended when it has no path.
    /// Unset: spans are printed to stdout, one line each, instead of exported.
    pub endpoint: Option<String>,
    /// OTLP transport: `grpc` or `http/protobuf`.
    pub protocol: Protocol,
    /// Extra headers sent with every export call (gRPC metadata or HTTP headers), e.g. an
    /// authentication token. Names are case-insensitive; values must be printable ASCII.
    pub headers: BTreeMap<String, String>,
    /// Payload compression: `none` or `gzip`.
    pub compression: Compression,
    /// Deadline of one export call, in milliseconds (connecting included).
    pub timeout_ms: u64,
    /// Spans waiting to be exported, at most. When full, new spans are dropped and counted
    /// (`agent_spans_dropped_queue_full_total`) rather than slowing the capture path.
    pub queue_size: usize,
    /// Spans sent per export call, at most. A batch is sent as soon as it is full.
    pub batch_size: usize,
    /// A batch that is not full is sent this many milliseconds after its first span arrived.
    pub batch_timeout_ms: u64,
    /// Batches being sent (or waiting to be retried) at once, 1..=64. More keep a collector
    /// that takes milliseconds per call fed: one in flight caps the export at
    /// `batch_size` / call latency (measured in benches/export.rs).
    pub max_concurrent_exports: usize,
    /// How long one batch is retried after retryable failures (collector unavailable,
    /// throttling, ...), in milliseconds, before it is dropped and counted. 0 disables retries.
    pub max_retry_elapsed_ms: u64,
    /// On shutdown, how long to keep sending the spans still held, in milliseconds.
    pub shutdown_timeout_ms: u64,
    /// PEM file of the CA certificate(s) trusted for an `https://` endpoint, instead of the
    /// system's trust store.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain for mutual TLS; requires `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`, for mutual TLS.
    pub client_key_file: Option<PathBuf>,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            protocol: Protocol::Grpc,
            headers: BTreeMap::new(),
            compression: Compression::None,
            // The OTLP exporter spec's default for OTEL_EXPORTER_OTLP_TIMEOUT.
            timeout_ms: 10_000,
            queue_size: 4096,
            batch_size: 512,
            batch_timeout_ms: 1000,
            max_concurrent_exports: 4,
            max_retry_elapsed_ms: 30_000,
            shutdown_timeout_ms: 5000,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
        }
    }
}

// Header values are usually credentials: keep them out of logs that print the config.
impl fmt::Debug for ExportConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: BTreeMap<&str, &str> = self
            .headers
            .keys()
            .map(|k| (k.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("ExportConfig")
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field("headers", &headers)
            .field("compression", &self.compression)
            .field("timeout_ms", &self.timeout_ms)
            .field("queue_size", &self.queue_size)
            .field("batch_size", &self.batch_size)
            .field("batch_timeout_ms", &self.batch_timeout_ms)
            .field("max_concurrent_exports", &self.max_concurrent_exports)
            .field("max_retry_elapsed_ms", &self.max_retry_elapsed_ms)
            .field("shutdown_timeout_ms", &self.shutdown_timeout_ms)
            .field("ca_file", &self.ca_file)
            .field("client_cert_file", &self.client_cert_file)
            .field("client_key_file", &self.client_key_file)
            .finish()
    }
}

const HOUR_MS: u64 = 3_600_000;

/// A setting of the `export` section that cannot be used; the message names the field and
/// the offending value (never a header's value: it is usually a credential).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigFieldError {
    #[error("export.endpoint: {reason}, got {endpoint:?}")]
    Endpoint {
        endpoint: String,
        reason: EndpointError,
    },
    #[error("export.headers: {0}")]
    Header(HeaderError),
    #[error("export.{field}: must be {range}, got {value}")]
    OutOfRange {
        field: &'static str,
        range: String,
        value: String,
    },
    #[error("export.{missing}: required with {given} {path:?}, got none")]
    Unpaired {
        missing: &'static str,
        given: &'static str,
        path: String,
    },
}

/// Why an endpoint URL is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("not a URL ({0})")]
    NotAUrl(String),
    #[error("must start with http:// or https://")]
    Scheme,
    #[error("has no host")]
    NoHost,
}

/// Why a configured header is unusable (its value is never part of the message).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("{0:?} is not a valid header name")]
    Name(String),
    #[error("the value of {0:?} has characters not allowed in a header (printable ASCII only)")]
    Value(String),
    #[error("{0:?}: binary (-bin) gRPC metadata is not supported")]
    BinaryGrpc(String),
}

impl ExportConfig {
    /// Checks every field; the error names the field and the offending value.
    pub fn validate(&self) -> Result<(), ConfigFieldError> {
        if let Some(endpoint) = &self.endpoint {
            parse_endpoint(endpoint).map_err(|reason| ConfigFieldError::Endpoint {
                endpoint: endpoint.clone(),
                reason,
            })?;
        }
        for (name, value) in &self.headers {
            check_header(self.protocol, name, value).map_err(ConfigFieldError::Header)?;
        }
        in_range("timeout_ms", self.timeout_ms, 1..=HOUR_MS)?;
        in_range("queue_size", self.queue_size, 1..=1 << 20)?;
        in_range("batch_size", self.batch_size, 1..=65_536)?;
        in_range("batch_timeout_ms", self.batch_timeout_ms, 1..=HOUR_MS)?;
        in_range(
            "max_concurrent_exports",
            self.max_concurrent_exports,
            1..=64,
        )?;
        in_range(
            "max_retry_elapsed_ms",
            self.max_retry_elapsed_ms,
            0..=24 * HOUR_MS,
        )?;
        in_range("shutdown_timeout_ms", self.shutdown_timeout_ms, 0..=HOUR_MS)?;
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), None) => Err(ConfigFieldError::Unpaired {
                missing: "client_key_file",
                given: "client_cert_file",
                path: cert.display().to_string(),
            }),
            (None, Some(key)) => Err(ConfigFieldError::Unpaired {
                missing: "client_cert_file",
                given: "client_key_file",
                path: key.display().to_string(),
            }),
            _ => Ok(()),
        }
    }
}

fn in_range<T: PartialOrd + fmt::Display>(
    field: &'static str,
    value: T,
    range: RangeInclusive<T>,
) -> Result<(), ConfigFieldError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ConfigFieldError::OutOfRange {
            field,
            range: format!("{}..={}", range.start(), range.end()),
            value: value.to_string(),
        })
    }
}

/// Parses an endpoint URL, requiring an `http` or `https` scheme and a host: the OTLP exporter
/// spec says the endpoint "MUST" carry a scheme, and a scheme-less `host:port` would otherwise
/// parse as something surprising.
pub(crate) fn parse_endpoint(endpoint: &str) -> Result<http::Uri, EndpointError> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e: http::uri::InvalidUri| EndpointError::NotAUrl(e.to_string()))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(EndpointError::Scheme),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(EndpointError::NoHost);
    }
    Ok(uri)
}

/// `endpoint` for logs: a `user:password@` in the URL is replaced by `***@`.
pub(crate) fn redacted(endpoint: &str) -> String {
    let start = endpoint.find("://").map_or(0, |i| i + 3);
    let end = endpoint[start..]
        .find(['/', '?', '#'])
        .map_or(endpoint.len(), |i| start + i);
    match endpoint[start..end].rfind('@') {
        Some(at) => format!("{}***{}", &endpoint[..start], &endpoint[start + at..]),
        None => endpoint.to_owned(),
    }
}

/// A header must be a valid HTTP header; over gRPC also a valid ASCII metadata entry, which
/// rules out the `-bin` suffix reserved for binary metadata.
pub(crate) fn check_header(protocol: Protocol, name: &str, value: &str) -> Result<(), HeaderError> {
    http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| HeaderError::Name(name.into()))?;
    // Do not echo the value: it is usually a credential.
    http::HeaderValue::from_str(value).map_err(|_| HeaderError::Value(name.into()))?;
    if protocol == Protocol::Grpc && name.to_ascii_lowercase().ends_with("-bin") {
        return Err(HeaderError::BinaryGrpc(name.into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values_and_valid() {
        let c = ExportConfig::default();
        assert_eq!(c.endpoint, None);
        assert_eq!(c.protocol, Protocol::Grpc);
        assert_eq!(c.compression, Compression::None);
        assert_eq!(
            (
                c.timeout_ms,
                c.queue_size,
                c.batch_size,
                c.batch_timeout_ms,
                c.max_retry_elapsed_ms,
                c.shutdown_timeout_ms
            ),
            (10_000, 4096, 512, 1000, 30_000, 5000)
        );
        assert!(c.headers.is_empty());
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn validate_names_field_and_value() {
        type Case = (fn(&mut ExportConfig), &'static str);
        let cases: Vec<Case> = vec![
            (
                |c| c.batch_size = 0,
                "export.batch_size: must be 1..=65536, got 0",
            ),
            (
                |c| c.batch_size = 70_000,
                "export.batch_size: must be 1..=65536, got 70000",
            ),
            (
                |c| c.queue_size = 0,
                "export.queue_size: must be 1..=1048576, got 0",
            ),
            (
                |c| c.timeout_ms = 0,
                "export.timeout_ms: must be 1..=3600000, got 0",
            ),
            (
                |c| c.batch_timeout_ms = 0,
                "export.batch_timeout_ms: must be 1..=3600000, got 0",
            ),
            (
                |c| c.max_retry_elapsed_ms = u64::MAX,
                "export.max_retry_elapsed_ms: must be 0..=86400000, got 18446744073709551615",
            ),
            (
                |c| c.shutdown_timeout_ms = 3_600_001,
                "export.shutdown_timeout_ms: must be 0..=3600000, got 3600001",
            ),
            (
                |c| c.endpoint = Some("localhost:4317".into()),
                "export.endpoint: must start with http:// or https://, got \"localhost:4317\"",
            ),
            (
                |c| c.endpoint = Some("ftp://x:1".into()),
                "export.endpoint: must start with http:// or https://, got \"ftp://x:1\"",
            ),
            (
                |c| c.endpoint = Some("http://".into()),
                "export.endpoint: not a URL",
            ),
            (
                |c| {
                    c.headers.insert("bad name".into(), "v".into());
                },
                "export.headers: \"bad name\" is not a valid header name",
            ),
            (
                |c| {
                    c.headers.insert("auth".into(), "line\nbreak".into());
                },
                "export.headers: the value of \"auth\" has characters not allowed",
            ),
            (
                |c| {
                    c.headers.insert("x-trace-bin".into(), "v".into());
                },
                "export.headers: \"x-trace-bin\": binary (-bin) gRPC metadata is not supported",
            ),
            (
                |c| c.client_cert_file = Some("/c.pem".into()),
                "export.client_key_file: required with client_cert_file \"/c.pem\", got none",
            ),
            (
                |c| c.client_key_file = Some("/k.pem".into()),
                "export.client_cert_file: required with client_key_file \"/k.pem\", got none",
            ),
        ];
        for (mutate, want) in cases {
            let mut c = ExportConfig::default();
            mutate(&mut c);
            let got = c.validate().expect_err(want).to_string();
            assert!(got.starts_with(want), "got {got:?}, want prefix {want:?}");
        }
        let mut ok = ExportConfig {
            endpoint: Some("https://collector.example:4317/".into()),
            ..Default::default()
        };
        ok.headers
            .insert("Authorization".into(), "Bearer abc".into());
        ok.max_retry_elapsed_ms = 0;
        ok.shutdown_timeout_ms = 0;
        assert_eq!(ok.validate(), Ok(()));
        // `-bin` is only special to gRPC.
        let http = ExportConfig {
            protocol: Protocol::HttpProtobuf,
            headers: [("x-bin".to_owned(), "v".to_owned())].into(),
            ..Default::default()
        };
        assert_eq!(http.validate(), Ok(()));
    }

    #[test]
    fn yaml_round_trip_and_typos_rejected() {
        let yaml = "\
endpoint: https://collector:4318
protocol: http/protobuf
headers:
  api-key: secret
compression: gzip
batch_size: 100
ca_file: /etc/ca.pem
";
        let c: ExportConfig = serde_yaml_ng::from_str(yaml).expect("parses");
        assert_eq!(c.endpoint.as_deref(), Some("https://collector:4318"));
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(c.headers["api-key"], "secret");
        assert_eq!(c.batch_size, 100);
        // Unset fields keep their defaults.
        assert_eq!(c.queue_size, 4096);
        let back: ExportConfig =
            serde_yaml_ng::from_str(&serde_yaml_ng::to_string(&c).expect("serialises"))
                .expect("reparses");
        assert_eq!(back, c);

        let empty: ExportConfig = serde_yaml_ng::from_str("{}").expect("parses");
        assert_eq!(empty, ExportConfig::default());

        let err = serde_yaml_ng::from_str::<ExportConfig>("batch_sise: 10\n").expect_err("typo");
        assert!(
            err.to_string().contains("unknown field `batch_sise`"),
            "{err}"
        );
        let err = serde_yaml_ng::from_str::<ExportConfig>("protocol: http/json\n")
            .expect_err("bad protocol");
        assert!(err.to_string().contains("http/json"), "{err}");
    }

    #[test]
    fn endpoint_credentials_are_redacted_for_logs() {
        assert_eq!(
            redacted("https://user:pw@c:4317/x@y"),
            "https://***@c:4317/x@y"
        );
        assert_eq!(redacted("http://c:4317"), "http://c:4317");
        assert_eq!(redacted("c@d"), "***@d");
    }

    #[test]
    fn debug_redacts_header_values() {
        let c = ExportConfig {
            headers: [("api-key".to_owned(), "s3cr3t".to_owned())].into(),
            ..Default::default()
        };
        let dbg = format!("{c:?}");
        assert!(dbg.contains("api-key") && !dbg.contains("s3cr3t"), "{dbg}");
    }
}
