//! Turning request/response events into spans with W3C trace context.
//!
//! Owns: the exchanges in flight (span ids are assigned when a request starts, so work done
//! while handling it can point at it), which server request each thread is handling, and the
//! parent rules:
//!
//! - CLIENT span: the request's own valid `traceparent` (the app is instrumented, or the caller
//!   set one) decides its trace and parent; otherwise the SERVER span its thread is handling
//!   (thread-based in-process propagation: what a thread sends while it handles a request is
//!   part of that request); otherwise it starts a trace.
//! - SERVER span: when the other end of the connection is a traced process on this node (same
//!   4-tuple mirrored), the oldest unanswered CLIENT request on that connection is its parent
//!   ("same-node stitching", no header needed) — unless the request carries a `traceparent` of
//!   a different trace, which then wins; otherwise the header; otherwise a new trace. Malformed
//!   headers count as absent (W3C Trace Context §4.3) and are counted.
//!
//! Does not own: parsing (`protocol`), connection state (`conn`), resource metadata (`enrich`)
//! or delivery (`export`).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use agent_common::{Role, SockAddr};

use super::context::{new_span_id, new_trace_id, parse_traceparent, parse_tracestate};
use super::model::{Attribute, Resource, Span, SpanContext, SpanId, SpanKind, StatusCode};
use super::route::route_template;
use super::url::{full_url, redact_query, split_target};
use crate::conn::{ConnMeta, ConnTable};
use crate::protocol::{HttpOutcome, HttpRequest, L7Event, Outcome, Request};
use crate::telemetry::{Counter, Telemetry};

/// CLOCK_MONOTONIC (what the kernel stamps) to Unix time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset_ns: i128,
}

impl Clock {
    pub fn now() -> Self {
        let mono = read_clock(libc::CLOCK_MONOTONIC);
        let real = read_clock(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real as i128 - mono as i128,
        }
    }

    pub fn fixed(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    pub fn to_unix(&self, mono_ns: u64) -> u64 {
        (mono_ns as i128 + self.offset_ns).max(0) as u64
    }
}

/// Nanoseconds of a clock (CLOCK_MONOTONIC matches bpf_ktime_get_ns).
pub fn read_clock(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the valid timespec we pass.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// IPv4-mapped addresses back to IPv4.
pub fn ip_of(a: &SockAddr) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(a.addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

#[derive(Debug)]
struct Inflight {
    ctx: SpanContext,
    parent: Option<SpanId>,
    kind: SpanKind,
    start_ns: u64,
    tid: u32,
    request: HttpRequest,
    meta: ConnMeta,
    /// A CLIENT request already chosen as the parent of a same-node SERVER span.
    claimed: bool,
}

/// Where finished spans go.
pub trait SpanSink {
    fn emit(&mut self, span: Span);
}

impl SpanSink for crate::export::SpanSender {
    fn emit(&mut self, span: Span) {
        self.send(span);
    }
}

impl SpanSink for Vec<Span> {
    fn emit(&mut self, span: Span) {
        self.push(span);
    }
}

/// Where resources come from (the real one reads /proc; tests use fixed ones).
pub trait Resources {
    /// The resource of process `pid`; `comm` names it if it has already exited.
    fn resource(&mut self, pid: u32, comm: &str) -> Arc<Resource>;
    /// The process exited; its pid may be reused.
    fn forget(&mut self, _pid: u32) {}
}

impl Resources for crate::enrich::ResourceCache {
    fn resource(&mut self, pid: u32, comm: &str) -> Arc<Resource> {
        self.get_or_comm(pid, comm)
    }
    fn forget(&mut self, pid: u32) {
        crate::enrich::ResourceCache::forget(self, pid);
    }
}

pub struct SpanBuilder {
    inflight: HashMap<(u64, u64), Inflight>,
    /// Per connection, its in-flight sequence numbers in request order.
    by_conn: HashMap<u64, VecDeque<u64>>,
    /// Thread id → the server exchange it is handling.
    handling: HashMap<u32, (u64, u64)>,
    clock: Clock,
    redact_query: bool,
    telemetry: Arc<Telemetry>,
}

impl SpanBuilder {
    pub fn new(clock: Clock, redact_query: bool, telemetry: Arc<Telemetry>) -> Self {
        Self {
            inflight: HashMap::new(),
            by_conn: HashMap::new(),
            handling: HashMap::new(),
            clock,
            redact_query,
            telemetry,
        }
    }

    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Handles one parser event of connection `meta`.
    pub fn handle(
        &mut self,
        meta: &ConnMeta,
        ev: L7Event,
        conns: &ConnTable,
        resources: &mut impl Resources,
        sink: &mut impl SpanSink,
    ) {
        match ev {
            L7Event::RequestStart {
                seq,
                tid,
                start_ns,
                request: Request::Http(request),
            } => {
                self.start(meta, seq, tid, start_ns, request, conns);
            }
            // PostgreSQL and AMQP spans: being built (issue 3).
            L7Event::RequestStart { .. } => {}
            L7Event::ExchangeEnd {
                seq,
                end_ns,
                outcome,
            } => {
                if let Some(span) = self.end(meta, seq, end_ns, outcome, resources) {
                    self.telemetry.incr(Counter::SpansCreated);
                    sink.emit(span);
                }
            }
        }
    }

    fn start(
        &mut self,
        meta: &ConnMeta,
        seq: u64,
        tid: u32,
        start_ns: u64,
        request: HttpRequest,
        conns: &ConnTable,
    ) {
        let kind = if meta.role == Role::Server {
            SpanKind::Server
        } else {
            SpanKind::Client
        };
        let header = self.header_context(&request);
        let (ctx, parent) = match kind {
            SpanKind::Server => self.server_parent(meta, header, conns),
            _ => match header {
                Some(h) => (with_new_span(&h), Some(h.span_id)),
                None => match self.handling.get(&tid).and_then(|k| self.inflight.get(k)) {
                    Some(srv) => (with_new_span(&srv.ctx), Some(srv.ctx.span_id)),
                    None => (new_root(), None),
                },
            },
        };
        if kind == SpanKind::Server {
            self.handling.insert(tid, (meta.conn_id, seq));
        }
        self.by_conn.entry(meta.conn_id).or_default().push_back(seq);
        self.inflight.insert(
            (meta.conn_id, seq),
            Inflight {
                ctx,
                parent,
                kind,
                start_ns,
                tid,
                request,
                meta: *meta,
                claimed: false,
            },
        );
    }

    /// The caller's context from `traceparent`/`tracestate`, or None (absent or malformed).
    fn header_context(&self, r: &HttpRequest) -> Option<SpanContext> {
        let tp = r.traceparent.as_deref()?;
        let Ok(tp) = parse_traceparent(tp.trim()) else {
            self.telemetry.incr(Counter::TraceparentInvalid);
            return None;
        };
        let trace_state = match r.tracestate.as_deref().map(parse_tracestate) {
            Some(Ok(s)) if !s.is_empty() => Some(s),
            Some(Err(_)) => {
                self.telemetry.incr(Counter::TraceparentInvalid);
                None
            }
            _ => None,
        };
        // span_id here is the caller's span: the parent of whatever we create from it.
        Some(SpanContext {
            trace_id: tp.trace_id,
            span_id: tp.parent_id,
            flags: tp.flags,
            trace_state,
        })
    }

    fn server_parent(
        &mut self,
        meta: &ConnMeta,
        header: Option<SpanContext>,
        conns: &ConnTable,
    ) -> (SpanContext, Option<SpanId>) {
        if let Some(peer) = conns.peer_of(meta).filter(|p| p.role == Role::Client) {
            let candidate = self.by_conn.get(&peer.conn_id).and_then(|seqs| {
                seqs.iter().copied().find(|s| {
                    self.inflight
                        .get(&(peer.conn_id, *s))
                        .is_some_and(|i| !i.claimed)
                })
            });
            if let Some(s) = candidate {
                let client = self
                    .inflight
                    .get_mut(&(peer.conn_id, s))
                    .expect("found above");
                if header
                    .as_ref()
                    .is_none_or(|h| h.trace_id == client.ctx.trace_id)
                {
                    client.claimed = true;
                    self.telemetry.incr(Counter::SpansStitched);
                    return (with_new_span(&client.ctx), Some(client.ctx.span_id));
                }
            }
        }
        match header {
            Some(h) => (with_new_span(&h), Some(h.span_id)),
            None => (new_root(), None),
        }
    }

    fn end(
        &mut self,
        meta: &ConnMeta,
        seq: u64,
        end_ns: u64,
        outcome: Outcome,
        resources: &mut impl Resources,
    ) -> Option<Span> {
        let inf = self.inflight.remove(&(meta.conn_id, seq))?;
        if let Some(q) = self.by_conn.get_mut(&meta.conn_id) {
            q.retain(|s| *s != seq);
            if q.is_empty() {
                self.by_conn.remove(&meta.conn_id);
            }
        }
        if self.handling.get(&inf.tid) == Some(&(meta.conn_id, seq)) {
            self.handling.remove(&inf.tid);
        }
        let Outcome::Http {
            outcome,
            request_body_size,
        } = outcome
        else {
            return None;
        };
        if outcome == HttpOutcome::Aborted {
            self.telemetry.incr(Counter::Http1Aborted);
        }
        let resource = resources.resource(meta.pid, meta.comm_str());
        Some(self.http_span(inf, end_ns, outcome, request_body_size, resource))
    }

    fn http_span(
        &self,
        inf: Inflight,
        end_ns: u64,
        outcome: HttpOutcome,
        request_body_size: u64,
        resource: Arc<Resource>,
    ) -> Span {
        let r = &inf.request;
        let server = inf.kind == SpanKind::Server;
        let target = split_target(&r.target);
        let mut attrs = Vec::with_capacity(20);
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
            let q = if self.redact_query {
                redact_query(q)
            } else {
                q.to_owned()
            };
            attrs.push(Attribute::new("url.query", q));
        }
        attrs.push(Attribute::new("url.scheme", "http"));
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
            let shown_port = (port != 80).then_some(port);
            attrs.push(Attribute::new(
                "url.full",
                full_url(
                    "http",
                    &host,
                    shown_port,
                    target.path,
                    target.query,
                    self.redact_query,
                ),
            ));
        }
        attrs.push(Attribute::new("network.peer.address", remote_ip));
        attrs.push(Attribute::new(
            "network.peer.port",
            i64::from(inf.meta.remote.port),
        ));
        attrs.push(Attribute::new("network.local.address", local_ip));
        attrs.push(Attribute::new(
            "network.local.port",
            i64::from(inf.meta.local.port),
        ));
        attrs.push(Attribute::new("network.transport", "tcp"));
        let ipv4 = matches!(ip_of(&inf.meta.remote), IpAddr::V4(_));
        attrs.push(Attribute::new(
            "network.type",
            if ipv4 { "ipv4" } else { "ipv6" },
        ));
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
        Span {
            context: inf.ctx,
            parent_span_id: inf.parent,
            name,
            kind: inf.kind,
            start_unix_nano: self.clock.to_unix(inf.start_ns),
            end_unix_nano: self.clock.to_unix(end_ns.max(inf.start_ns)),
            status,
            status_message: message,
            attributes: attrs,
            resource,
        }
    }
}

fn with_new_span(parent: &SpanContext) -> SpanContext {
    SpanContext {
        trace_id: parent.trace_id,
        span_id: new_span_id(),
        flags: parent.flags,
        trace_state: parent.trace_state.clone(),
    }
}

fn new_root() -> SpanContext {
    SpanContext {
        trace_id: new_trace_id(),
        span_id: new_span_id(),
        flags: 1,
        trace_state: None,
    }
}

/// The method as the conventions name it, or None for `_OTHER` (keeps span-name cardinality low).
fn known_method(m: &str) -> Option<&'static str> {
    const KNOWN: &[&str] = &[
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN.iter().copied().find(|k| *k == m)
}

/// `host[:port]` (or `[v6]:port`) from a Host header.
fn split_host(h: Option<&str>) -> (Option<&str>, Option<u16>) {
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

#[cfg(test)]
mod tests;
