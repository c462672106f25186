//! Layering the standard OpenTelemetry exporter environment variables over an [`ExportConfig`].
//!
//! Follows the OTLP exporter configuration spec
//! (<https://opentelemetry.io/docs/specs/otel/protocol/exporter/>) and the general environment
//! variable spec (<https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/>):
//! a `OTEL_EXPORTER_OTLP_TRACES_*` variable wins over its generic `OTEL_EXPORTER_OTLP_*` twin,
//! and an empty value counts as unset. The environment is read through a closure so tests never
//! touch the process environment. Checking the resulting values is `ExportConfig::validate`'s job.

use percent_encoding::percent_decode_str;

use super::config::{Compression, ExportConfig, Protocol};
use super::ExportError;

/// The signal an exporter sends: which signal-specific variables override the generic ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `OTEL_EXPORTER_OTLP_TRACES_*`, spans to `/v1/traces`.
    Traces,
    /// `OTEL_EXPORTER_OTLP_METRICS_*`, the RED metrics to `/v1/metrics`.
    Metrics,
}

impl Signal {
    /// The OTLP/HTTP path the spec appends to a generic (base) endpoint.
    fn http_path(self) -> &'static str {
        match self {
            Self::Traces => "v1/traces",
            Self::Metrics => "v1/metrics",
        }
    }
}

/// A variable and its signal-specific overrides.
struct Var {
    traces: &'static str,
    metrics: &'static str,
    generic: &'static str,
}

impl Var {
    fn specific(&self, signal: Signal) -> &'static str {
        match signal {
            Signal::Traces => self.traces,
            Signal::Metrics => self.metrics,
        }
    }
}

const ENDPOINT: Var = Var {
    traces: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    metrics: "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    generic: "OTEL_EXPORTER_OTLP_ENDPOINT",
};
const PROTOCOL: Var = Var {
    traces: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    metrics: "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    generic: "OTEL_EXPORTER_OTLP_PROTOCOL",
};
const HEADERS: Var = Var {
    traces: "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    metrics: "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    generic: "OTEL_EXPORTER_OTLP_HEADERS",
};
const TIMEOUT: Var = Var {
    traces: "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    metrics: "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
    generic: "OTEL_EXPORTER_OTLP_TIMEOUT",
};
const COMPRESSION: Var = Var {
    traces: "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    metrics: "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
    generic: "OTEL_EXPORTER_OTLP_COMPRESSION",
};
const INSECURE: Var = Var {
    traces: "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
    metrics: "OTEL_EXPORTER_OTLP_METRICS_INSECURE",
    generic: "OTEL_EXPORTER_OTLP_INSECURE",
};
const CERTIFICATE: Var = Var {
    traces: "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    metrics: "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
    generic: "OTEL_EXPORTER_OTLP_CERTIFICATE",
};
const CLIENT_KEY: Var = Var {
    traces: "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
    metrics: "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY",
    generic: "OTEL_EXPORTER_OTLP_CLIENT_KEY",
};
const CLIENT_CERTIFICATE: Var = Var {
    traces: "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
    metrics: "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE",
    generic: "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
};

/// Every variable [`ExportConfig::apply_env`] reads, for `--help` text and docs.
pub const ENV_VARS: &[&str] = &[
    ENDPOINT.traces,
    ENDPOINT.metrics,
    ENDPOINT.generic,
    PROTOCOL.traces,
    PROTOCOL.metrics,
    PROTOCOL.generic,
    HEADERS.traces,
    HEADERS.metrics,
    HEADERS.generic,
    TIMEOUT.traces,
    TIMEOUT.metrics,
    TIMEOUT.generic,
    COMPRESSION.traces,
    COMPRESSION.metrics,
    COMPRESSION.generic,
    INSECURE.traces,
    INSECURE.metrics,
    INSECURE.generic,
    CERTIFICATE.traces,
    CERTIFICATE.metrics,
    CERTIFICATE.generic,
    CLIENT_KEY.traces,
    CLIENT_KEY.metrics,
    CLIENT_KEY.generic,
    CLIENT_CERTIFICATE.traces,
    CLIENT_CERTIFICATE.metrics,
    CLIENT_CERTIFICATE.generic,
];

impl ExportConfig {
    /// Overrides fields from the standard `OTEL_EXPORTER_OTLP_[TRACES_]*` variables that are set.
    ///
    /// `env` looks a variable up (pass `|k| std::env::var(k).ok()` in production). Headers from
    /// the environment are merged over the configured ones, key by key. A malformed value is an
    /// error naming the variable.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ExportError> {
        self.apply_signal_env(Signal::Traces, env).map(|_| ())
    }

    /// [`apply_env`](Self::apply_env) for `signal`: its `OTEL_EXPORTER_OTLP_<SIGNAL>_*`
    /// variables win over the generic ones. Returns whether the endpoint came from the
    /// environment (then it is final: a generic one for OTLP/HTTP already has the signal's
    /// path appended, a signal-specific one is used as is).
    pub fn apply_signal_env(
        &mut self,
        signal: Signal,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<bool, ExportError> {
        // Spec: "The SDK MUST interpret an empty value of an environment variable the same way
        // as when the variable is unset."
        let lookup = |v: &Var| -> Option<(&'static str, String)> {
            [v.specific(signal), v.generic]
                .into_iter()
                .find_map(|name| {
                    env(name)
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .map(|s| (name, s))
                })
        };

        // Protocol first: how the generic endpoint is read depends on it.
        if let Some((var, value)) = lookup(&PROTOCOL) {
            self.protocol = match value.as_str() {
                "grpc" => Protocol::Grpc,
                "http/protobuf" => Protocol::HttpProtobuf,
                "http/json" => {
                    return Err(invalid(
                        var,
                        &value,
                        "http/json is not supported, use grpc or http/protobuf",
                    ))
                }
                _ => return Err(invalid(var, &value, "expected grpc or http/protobuf")),
            };
        }

        let endpoint = lookup(&ENDPOINT);
        let from_env = endpoint.is_some();
        if let Some((var, value)) = endpoint {
            let value = if var == ENDPOINT.generic && self.protocol == Protocol::HttpProtobuf {
                // Spec: the generic endpoint is a base URL to which `v1/traces` (`v1/metrics`)
                // is appended; the signal-specific one is used as is.
                format!("{}/{}", value.trim_end_matches('/'), signal.http_path())
            } else {
                value
            };
            self.endpoint = Some(
                if value.contains("://") || self.protocol != Protocol::Grpc {
                    value
                } else {
                    // Spec: OTEL_EXPORTER_OTLP_INSECURE "only applies to OTLP/gRPC when an endpoint is
                    // provided without the http or https scheme"; secure is the default.
                    let scheme = if lookup(&INSECURE).is_some_and(|(var, v)| parse_bool(var, &v)) {
                        "http"
                    } else {
                        "https"
                    };
                    format!("{scheme}://{value}")
                },
            );
        }

        if let Some((var, value)) = lookup(&HEADERS) {
            for (name, value) in parse_headers(var, &value)? {
                self.headers.insert(name, value);
            }
        }

        if let Some((var, value)) = lookup(&TIMEOUT) {
            // Spec: an integer number of milliseconds.
            self.timeout_ms = value
                .parse()
                .map_err(|_| invalid(var, &value, "expected a whole number of milliseconds"))?;
        }

        if let Some((var, value)) = lookup(&COMPRESSION) {
            self.compression = match value.as_str() {
                "gzip" => Compression::Gzip,
                "none" => Compression::None,
                _ => return Err(invalid(var, &value, "expected gzip or none")),
            };
        }

        if let Some((_, path)) = lookup(&CERTIFICATE) {
            self.ca_file = Some(path.into());
        }
        if let Some((_, path)) = lookup(&CLIENT_CERTIFICATE) {
            self.client_cert_file = Some(path.into());
        }
        if let Some((_, path)) = lookup(&CLIENT_KEY) {
            self.client_key_file = Some(path.into());
        }
        Ok(from_env)
    }
}

fn invalid(var: &'static str, value: &str, reason: &str) -> ExportError {
    ExportError::InvalidEnv {
        var,
        reason: format!("{reason}, got {value:?}"),
    }
}

/// Spec: only a case-insensitive "true" is true; anything else is false, and values other than
/// "false" deserve a warning.
fn parse_bool(var: &str, value: &str) -> bool {
    if value.eq_ignore_ascii_case("true") {
        true
    } else {
        if !value.eq_ignore_ascii_case("false") {
            tracing::warn!(
                var,
                value,
                "not a boolean (true/false); treating it as false"
            );
        }
        false
    }
}

/// Parses a `key1=value1,key2=value2` header list as the spec defines it (the W3C Baggage
/// format without properties): entries and their sides are whitespace-trimmed, values are
/// percent-decoded, empty entries are skipped. Errors name the variable and the entry but never
/// echo a value, which is usually a credential.
pub(crate) fn parse_headers(
    var: &'static str,
    raw: &str,
) -> Result<Vec<(String, String)>, ExportError> {
    let bad = |reason: String| ExportError::InvalidEnv { var, reason };
    let mut out = Vec::new();
    for (i, entry) in raw.split(',').enumerate().map(|(i, e)| (i + 1, e.trim())) {
        if entry.is_empty() {
            continue;
        }
        let Some((name, value)) = entry.split_once('=') else {
            return Err(bad(format!(
                "header entry {i} has no '=' (expected key=value)"
            )));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(bad(format!("header entry {i} has an empty key")));
        }
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(bad(format!(
                "header entry {i}: {name:?} is not a valid header name"
            )));
        }
        let value = percent_decode_str(value.trim())
            .decode_utf8()
            .map_err(|_| {
                bad(format!(
                    "header entry {i} ({name:?}): value is not UTF-8 once percent-decoded"
                ))
            })?;
        if http::HeaderValue::from_str(&value).is_err() {
            return Err(bad(format!(
                "header entry {i} ({name:?}): value has characters not allowed in a header"
            )));
        }
        out.push((name.to_owned(), value.into_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        move |k| map.get(k).map(|v| (*v).to_owned())
    }

    fn applied(pairs: &[(&str, &str)]) -> Result<ExportConfig, ExportError> {
        let mut c = ExportConfig::default();
        c.apply_env(env_of(pairs)).map(|()| c)
    }

    fn err_text(pairs: &[(&str, &str)]) -> String {
        applied(pairs).expect_err("should fail").to_string()
    }

    #[test]
    fn nothing_set_changes_nothing() {
        assert_eq!(applied(&[]).expect("ok"), ExportConfig::default());
        // Empty counts as unset.
        assert_eq!(
            applied(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", " "),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "")
            ])
            .expect("ok"),
            ExportConfig::default()
        );
    }

    #[test]
    fn traces_specific_wins_over_generic() {
        let c = applied(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=generic"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "b=traces"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/generic.pem"),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces.pem"),
        ])
        .expect("ok");
        assert_eq!(c.endpoint.as_deref(), Some("http://traces:4317"));
        assert_eq!(c.timeout_ms, 2500);
        // The traces list replaces the generic one rather than merging with it.
        assert_eq!(
            c.headers.iter().collect::<Vec<_>>(),
            vec![(&"b".to_owned(), &"traces".to_owned())]
        );
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(
            c.ca_file.as_deref(),
            Some(std::path::Path::new("/traces.pem"))
        );

        let c = applied(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
        ])
        .expect("ok");
        assert_eq!(c.endpoint.as_deref(), Some("http://generic:4317"));
        assert_eq!(c.timeout_ms, 1000);
    }

    #[test]
    fn env_headers_merge_over_configured_ones() {
        let mut c = ExportConfig::default();
        c.headers.insert("a".into(), "yaml".into());
        c.headers.insert("keep".into(), "yaml".into());
        c.apply_env(env_of(&[("OTEL_EXPORTER_OTLP_HEADERS", "a=env")]))
            .expect("ok");
        assert_eq!(c.headers["a"], "env");
        assert_eq!(c.headers["keep"], "yaml");
    }

    #[test]
    fn headers_are_trimmed_and_percent_decoded() {
        let got = parse_headers(
            "V",
            " api-key = a%20b%3Dc , ,x=,Authorization=Basic%20dXNlcg==",
        )
        .expect("ok");
        assert_eq!(
            got,
            vec![
                ("api-key".to_owned(), "a b=c".to_owned()),
                ("x".to_owned(), String::new()),
                // Only the first '=' separates; later ones belong to the value.
                ("Authorization".to_owned(), "Basic dXNlcg==".to_owned()),
            ]
        );
        assert_eq!(parse_headers("V", "").expect("ok"), vec![]);
    }

    #[test]
    fn malformed_headers_name_the_variable() {
        for (raw, want) in [
            ("a=1,secret-token", "OTEL_EXPORTER_OTLP_TRACES_HEADERS: header entry 2 has no '='"),
            ("=v", "OTEL_EXPORTER_OTLP_TRACES_HEADERS: header entry 1 has an empty key"),
            ("a b=v", "OTEL_EXPORTER_OTLP_TRACES_HEADERS: header entry 1: \"a b\" is not a valid header name"),
            ("k=%ff", "OTEL_EXPORTER_OTLP_TRACES_HEADERS: header entry 1 (\"k\"): value is not UTF-8"),
            ("k=a%0Ab", "OTEL_EXPORTER_OTLP_TRACES_HEADERS: header entry 1 (\"k\"): value has characters not allowed"),
        ] {
            let got = err_text(&[("OTEL_EXPORTER_OTLP_TRACES_HEADERS", raw)]);
            assert!(got.starts_with(want), "{raw:?}: got {got:?}");
            assert!(!got.contains("secret-token"), "values must not be echoed: {got}");
        }
        let got = err_text(&[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")]);
        assert!(got.starts_with("OTEL_EXPORTER_OTLP_HEADERS: "), "{got}");
    }

    #[test]
    fn protocol_values() {
        assert_eq!(
            applied(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])
                .expect("ok")
                .protocol,
            Protocol::Grpc
        );
        assert_eq!(
            applied(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
            ])
            .expect("ok")
            .protocol,
            Protocol::HttpProtobuf
        );
        assert_eq!(
            err_text(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]),
            "OTEL_EXPORTER_OTLP_PROTOCOL: http/json is not supported, use grpc or http/protobuf, got \"http/json\""
        );
        assert_eq!(
            err_text(&[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift")]),
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: expected grpc or http/protobuf, got \"thrift\""
        );
    }

    #[test]
    fn http_endpoints_follow_the_per_signal_path_rules() {
        let http = ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
        let c = applied(&[http, ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]).expect("ok");
        assert_eq!(c.endpoint.as_deref(), Some("http://c:4318/v1/traces"));
        let c = applied(&[http, ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://gw/otlp/")]).expect("ok");
        assert_eq!(c.endpoint.as_deref(), Some("http://gw/otlp/v1/traces"));
        let c = applied(&[
            http,
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://gw/custom"),
        ])
        .expect("ok");
        assert_eq!(c.endpoint.as_deref(), Some("http://gw/custom"));
        // gRPC ignores paths, so the generic endpoint is taken as is.
        let c = applied(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317/")]).expect("ok");
        assert_eq!(c.endpoint.as_deref(), Some("http://c:4317/"));
    }

    #[test]
    fn insecure_only_picks_the_scheme_of_scheme_less_grpc_endpoints() {
        let c = applied(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]).expect("ok");
        assert_eq!(c.endpoint.as_deref(), Some("https://collector:4317"));
        let c = applied(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "TRUE"),
        ])
        .expect("ok");
        assert_eq!(c.endpoint.as_deref(), Some("http://collector:4317"));
        let c = applied(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
        ])
        .expect("ok");
        assert_eq!(c.endpoint.as_deref(), Some("https://c:4317"));
        let c = applied(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4317"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "yes"),
        ])
        .expect("ok");
        assert_eq!(c.endpoint.as_deref(), Some("https://c:4317"));
    }

    #[test]
    fn timeout_compression_and_tls_files() {
        assert_eq!(
            err_text(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]),
            "OTEL_EXPORTER_OTLP_TIMEOUT: expected a whole number of milliseconds, got \"10s\""
        );
        assert_eq!(
            err_text(&[("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")]),
            "OTEL_EXPORTER_OTLP_COMPRESSION: expected gzip or none, got \"zstd\""
        );
        let c = applied(&[
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/c.pem"),
            ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "/k.pem"),
        ])
        .expect("ok");
        assert_eq!(
            c.client_cert_file.as_deref(),
            Some(std::path::Path::new("/c.pem"))
        );
        assert_eq!(
            c.client_key_file.as_deref(),
            Some(std::path::Path::new("/k.pem"))
        );
    }
}
