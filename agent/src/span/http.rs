//! HTTP spans: name and attributes per the stable OpenTelemetry HTTP semantic conventions.
//!
//! Owns what an HTTP exchange looks like as a span (name, attributes, status); the parent rules
//! are `builder`'s, redaction helpers are `url`'s, the route heuristic is `route`'s.

use std::net::IpAddr;
use std::sync::Arc;

use super::builder::{ip_of, Inflight, SpanOptions};
use super::model::{Attribute, Resource, Span, SpanKind, StatusCode};
use super::route::route_template;
use super::url::{full_url, redact_query, split_target};
use crate::protocol::{HttpOutcome, Request};

pub(super) fn span(
    inf: Inflight,
    start_unix_nano: u64,
    end_unix_nano: u64,
    outcome: HttpOutcome,
    request_body_size: u64,
    resource: Arc<Resource>,
    opts: &SpanOptions,
) -> Span {
    let Request::Http(r) = &inf.request else {
        unreachable!("builder dispatches by request kind")
    };
    let server = inf.kind == SpanKind::Server;
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
    let scheme = if inf.meta.tls { "https" } else { "http" };
    attrs.push(Attribute::new("url.scheme", scheme));
    let (host_hdr, port_hdr) = split_host(r.host.as_deref());
    let local_ip = ip_of(&inf.meta.local).to_string();
    let remote_ip = ip_of(&inf.meta.remote).to_string();
    if server {
        attrs.push(Attribute::new(
            "server.address",
            host_hdr
                .map(str::to_owned)
                .unwrap_or_else(|| local_ip.clone()),
        ));
        attrs.push(Attribute::new(
            "server.port",
            i64::from(port_hdr.unwrap_or(inf.meta.local.port)),
        ));
        attrs.push(Attribute::new("client.address", remote_ip.clone()));
        attrs.push(Attribute::new(
            "client.port",
            i64::from(inf.meta.remote.port),
        ));
    } else {
        let host = host_hdr
            .map(str::to_owned)
            .unwrap_or_else(|| remote_ip.clone());
        let port = port_hdr.unwrap_or(inf.meta.remote.port);
        attrs.push(Attribute::new("server.address", host.clone()));
        attrs.push(Attribute::new("server.port", i64::from(port)));
        let default_port = if inf.meta.tls { 443 } else { 80 };
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
    push_network(&mut attrs, &inf);
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
    inf.finish(
        name,
        (start_unix_nano, end_unix_nano),
        (status, message),
        attrs,
        resource,
    )
}

/// `network.*` attributes every protocol's span carries.
pub(super) fn push_network(attrs: &mut Vec<Attribute>, inf: &Inflight) {
    let remote = ip_of(&inf.meta.remote);
    attrs.push(Attribute::new("network.peer.address", remote.to_string()));
    attrs.push(Attribute::new(
        "network.peer.port",
        i64::from(inf.meta.remote.port),
    ));
    attrs.push(Attribute::new(
        "network.local.address",
        ip_of(&inf.meta.local).to_string(),
    ));
    attrs.push(Attribute::new(
        "network.local.port",
        i64::from(inf.meta.local.port),
    ));
    attrs.push(Attribute::new("network.transport", "tcp"));
    attrs.push(Attribute::new(
        "network.type",
        if matches!(remote, IpAddr::V4(_)) {
            "ipv4"
        } else {
            "ipv6"
        },
    ));
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
