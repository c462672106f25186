//! HTTP/2 streams as spans: the HTTP conventions with `network.protocol.version=2`, and for
//! gRPC (content-type `application/grpc…`) the RPC conventions: `rpc.system=grpc`,
//! `rpc.service`, `rpc.method`, `rpc.grpc.status_code`, span name `{package.Service}/{Method}`,
//! status per the RPC conventions (a server errs only for codes meaning it failed; a client for
//! anything but OK).

use super::http::{known_method, split_host};
use super::model::{Attribute, StatusCode};
use super::network::{ip_string, push_network};
use super::parts::{Exchange, SpanOptions, SpanParts};
use super::route::route_template;
use super::url::{full_url, redact_query, split_target};
use crate::protocol::{H2End, H2Outcome, H2Request, HttpRequest};

/// gRPC codes that mean the server failed (OTel RPC conventions, gRPC status codes).
const SERVER_ERRORS: &[u32] = &[2, 4, 12, 13, 14, 15]; // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS

/// The span of an HTTP/1.1 request with `Upgrade: h2c` that the server answered by switching
/// to HTTP/2: the response came on stream 1 (RFC 7540 §3.2), so the exchange ends with an
/// HTTP/2 outcome while it started as an HTTP/1 request.
///
/// It is reported as an HTTP/2 exchange, `network.protocol.version=2`: what the span describes
/// is the request as answered, and it was answered over HTTP/2 (the server handles it as
/// stream 1 of the new connection: Go's `h2c` hands it to the handler as an `HTTP/2.0`
/// request, for instance), like every later request on the connection. The request head's
/// fields map onto the pseudo-headers an HTTP/2 request would carry (RFC 9113 §8.3.1): the
/// target as `:path`, `Host` as `:authority`, scheme `http` (h2c is HTTP/2 over cleartext).
pub(super) fn upgraded_span(
    r: &HttpRequest,
    end: H2End,
    ex: &Exchange<'_>,
    opts: &SpanOptions,
) -> SpanParts {
    span(&upgrade_request(r), end, ex, opts)
}

fn upgrade_request(r: &HttpRequest) -> H2Request {
    H2Request {
        stream_id: 1,
        method: Some(r.method.clone()),
        path: Some(r.target.clone()),
        authority: r.host.clone(),
        scheme: Some("http".to_owned()),
        user_agent: r.user_agent.clone(),
        content_type: None,
        traceparent: r.traceparent.clone(),
        tracestate: r.tracestate.clone(),
        unknown_fields: 0,
    }
}

/// The span of an HTTP/2 stream (a gRPC call when its content-type says so).
pub(super) fn span(
    r: &H2Request,
    H2End {
        outcome,
        request_body_size,
    }: H2End,
    ex: &Exchange<'_>,
    opts: &SpanOptions,
) -> SpanParts {
    let server = ex.server();
    let meta = ex.meta;
    let grpc = r
        .content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/grpc"));
    let target = split_target(r.path.as_deref().unwrap_or(""));
    let method = r.method.as_deref().and_then(known_method);
    let mut attrs = Vec::with_capacity(24);
    attrs.push(Attribute::new(
        "http.request.method",
        method.unwrap_or("_OTHER"),
    ));
    if let (None, Some(m)) = (method, &r.method) {
        attrs.push(Attribute::new("http.request.method_original", m.as_str()));
    }
    if r.path.is_some() {
        attrs.push(Attribute::new("url.path", target.path));
    }
    if let Some(q) = target.query {
        let q = if opts.redact_query {
            redact_query(q)
        } else {
            q.to_owned()
        };
        attrs.push(Attribute::new("url.query", q));
    }
    let scheme = r
        .scheme
        .as_deref()
        .unwrap_or(if meta.tls { "https" } else { "http" });
    attrs.push(Attribute::new("url.scheme", scheme));
    let (host_hdr, port_hdr) = split_host(r.authority.as_deref());
    let remote_ip = ip_string(&meta.remote);
    if server {
        let local_ip = ip_string(&meta.local);
        attrs.push(Attribute::new(
            "server.address",
            host_hdr.map(str::to_owned).unwrap_or(local_ip),
        ));
        attrs.push(Attribute::new(
            "server.port",
            i64::from(port_hdr.unwrap_or(meta.local.port)),
        ));
        attrs.push(Attribute::new("client.address", remote_ip.clone()));
        attrs.push(Attribute::new("client.port", i64::from(meta.remote.port)));
    } else {
        let host = host_hdr
            .map(str::to_owned)
            .unwrap_or_else(|| remote_ip.clone());
        let port = port_hdr.unwrap_or(meta.remote.port);
        attrs.push(Attribute::new("server.address", host.clone()));
        attrs.push(Attribute::new("server.port", i64::from(port)));
        if r.path.is_some() {
            let url = full_url(
                scheme,
                &host,
                Some(port),
                target.path,
                target.query,
                opts.redact_query,
            );
            attrs.push(Attribute::new("url.full", url));
        }
    }
    push_network(&mut attrs, meta);
    attrs.push(Attribute::new("network.protocol.version", "2"));
    if let Some(ua) = &r.user_agent {
        attrs.push(Attribute::new("user_agent.original", ua.as_str()));
    }
    if request_body_size > 0 {
        attrs.push(Attribute::new(
            "http.request.body.size",
            request_body_size as i64,
        ));
    }
    if r.unknown_fields > 0 {
        // Joined the connection midway: some HPACK references could not be resolved.
        attrs.push(Attribute::new(
            "http.request.header_fields_undecodable",
            i64::from(r.unknown_fields),
        ));
    }
    let rpc = match target
        .path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
    {
        Some((s, m)) if grpc && !s.is_empty() && !m.is_empty() && !m.contains('/') => Some((s, m)),
        _ => None,
    };
    if grpc {
        attrs.push(Attribute::new("rpc.system", "grpc"));
        if let Some((s, m)) = rpc {
            attrs.push(Attribute::new("rpc.service", s));
            attrs.push(Attribute::new("rpc.method", m));
        }
    }
    let (status, message) = match outcome {
        H2Outcome::Response {
            status,
            grpc_status,
            response_body_size,
        } => {
            if let Some(code) = status {
                attrs.push(Attribute::new("http.response.status_code", i64::from(code)));
            }
            attrs.push(Attribute::new(
                "http.response.body.size",
                response_body_size as i64,
            ));
            match (grpc, grpc_status) {
                (true, Some(g)) => {
                    attrs.push(Attribute::new("rpc.grpc.status_code", i64::from(g)));
                    if (server && SERVER_ERRORS.contains(&g)) || (!server && g != 0) {
                        attrs.push(Attribute::new("error.type", g.to_string()));
                        (StatusCode::Error, Some(format!("grpc-status {g}")))
                    } else {
                        (StatusCode::Unset, None)
                    }
                }
                (true, None) => {
                    attrs.push(Attribute::new("error.type", "grpc_status_missing"));
                    (
                        StatusCode::Error,
                        Some("gRPC response without grpc-status".to_owned()),
                    )
                }
                (false, _) => {
                    let code = status.unwrap_or(0);
                    let error = code >= 500 || (!server && code >= 400);
                    if error {
                        attrs.push(Attribute::new("error.type", code.to_string()));
                    }
                    (
                        if error {
                            StatusCode::Error
                        } else {
                            StatusCode::Unset
                        },
                        None,
                    )
                }
            }
        }
        H2Outcome::Reset { error_code } => {
            attrs.push(Attribute::new("error.type", format!("h2_rst_{error_code}")));
            (
                StatusCode::Error,
                Some(format!("stream reset (HTTP/2 error code {error_code})")),
            )
        }
        H2Outcome::Aborted => {
            attrs.push(Attribute::new("error.type", "response_incomplete"));
            (
                StatusCode::Error,
                Some("connection closed before the response completed".to_owned()),
            )
        }
    };
    let name = match rpc {
        Some((s, m)) => format!("{s}/{m}"),
        None => match r.path.as_deref().and_then(|_| route_template(target.path)) {
            Some(route) => format!("{} {route}", method.unwrap_or("HTTP")),
            None => method.unwrap_or("HTTP").to_owned(),
        },
    };
    SpanParts {
        name,
        status,
        status_message: message,
        attributes: attrs,
    }
}
