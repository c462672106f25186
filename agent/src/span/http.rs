//! HTTP spans: name and attributes per the stable OpenTelemetry HTTP semantic conventions.
//!
//! Owns what an HTTP exchange looks like as a span (name, attributes, status); the parent rules
//! are `builder`'s, redaction helpers are `url`'s, the route heuristic is `route`'s.

use super::model::{Attribute, StatusCode};
use super::network::{ip_string, push_network};
use super::parts::{Exchange, SpanOptions, SpanParts};
use super::route::route_template;
use super::url::{full_url, redact_query, split_target};
use crate::protocol::{HttpEnd, HttpOutcome, HttpRequest};

/// The span of an HTTP/1 exchange.
pub(super) fn span(
    r: &HttpRequest,
    HttpEnd {
        outcome,
        request_body_size,
    }: HttpEnd,
    ex: &Exchange<'_>,
    opts: &SpanOptions,
) -> SpanParts {
    let server = ex.server();
    let meta = ex.meta;
    let target = split_target(&r.target);
    let mut attrs = Vec::with_capacity(24);
    let method = known_method(&r.method);
    attrs.push(Attribute::new(
        "http.request.method",
        method.unwrap_or("_OTHER"),
    ));
    if method.is_none() {
        attrs.push(Attribute::new(
            "http.request.method_original",
            r.method.as_str(),
        ));
    }
    attrs.push(Attribute::new("url.path", target.path));
    if let Some(q) = target.query {
        let q = if opts.redact_query {
            redact_query(q)
        } else {
            q.to_owned()
        };
        attrs.push(Attribute::new("url.query", q));
    }
    let scheme = if meta.tls { "https" } else { "http" };
    attrs.push(Attribute::new("url.scheme", scheme));
    let (host_hdr, port_hdr) = split_host(r.host.as_deref());
    let local_ip = ip_string(&meta.local);
    let remote_ip = ip_string(&meta.remote);
    if server {
        attrs.push(Attribute::new(
            "server.address",
            host_hdr
                .map(str::to_owned)
                .unwrap_or_else(|| local_ip.clone()),
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
        let default_port = if meta.tls { 443 } else { 80 };
        let shown_port = (port != default_port).then_some(port);
        attrs.push(Attribute::new(
            "url.full",
            full_url(
                scheme,
                &host,
                shown_port,
                target.path,
                target.query,
                opts.redact_query,
            ),
        ));
    }
    push_network(&mut attrs, meta);
    if let Some(ua) = &r.user_agent {
        attrs.push(Attribute::new("user_agent.original", ua.as_str()));
    }
    if request_body_size > 0 {
        attrs.push(Attribute::new(
            "http.request.body.size",
            request_body_size as i64,
        ));
    }
    let (status, message, version) = match outcome {
        HttpOutcome::Response {
            status,
            version_minor,
            response_body_size,
        } => {
            attrs.push(Attribute::new(
                "http.response.status_code",
                i64::from(status),
            ));
            attrs.push(Attribute::new(
                "http.response.body.size",
                response_body_size as i64,
            ));
            // OTel HTTP conventions: 5xx is an error for servers; 4xx too for clients.
            let error = status >= 500 || (!server && status >= 400);
            if error {
                attrs.push(Attribute::new("error.type", status.to_string()));
            }
            (
                if error {
                    StatusCode::Error
                } else {
                    StatusCode::Unset
                },
                None,
                version_minor,
            )
        }
        HttpOutcome::Aborted => {
            attrs.push(Attribute::new("error.type", "response_incomplete"));
            let msg = "connection closed before the response completed".to_owned();
            (StatusCode::Error, Some(msg), r.version_minor)
        }
    };
    attrs.push(Attribute::new(
        "network.protocol.version",
        if version == 0 { "1.0" } else { "1.1" },
    ));
    let name = match route_template(target.path) {
        Some(route) => format!("{} {route}", method.unwrap_or("HTTP")),
        None => method.unwrap_or("HTTP").to_owned(),
    };
    SpanParts {
        name,
        status,
        status_message: message,
        attributes: attrs,
    }
}

/// The method as the conventions name it, or None for `_OTHER` (keeps span-name cardinality low).
pub(super) fn known_method(m: &str) -> Option<&'static str> {
    const KNOWN: &[&str] = &[
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN.iter().copied().find(|k| *k == m)
}

/// `host[:port]` (or `[v6]:port`) from a Host header.
pub(super) fn split_host(h: Option<&str>) -> (Option<&str>, Option<u16>) {
    let Some(h) = h.map(str::trim).filter(|h| !h.is_empty()) else {
        return (None, None);
    };
    if let Some(rest) = h.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return (Some(h), None);
        };
        return (
            Some(v6),
            after.strip_prefix(':').and_then(|p| p.parse().ok()),
        );
    }
    match h.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(p) => (Some(host), Some(p)),
            Err(_) => (Some(h), None),
        },
        _ => (Some(h), None),
    }
}
