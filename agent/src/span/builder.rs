//! Turning request/response events into spans with W3C trace context.
//!
//! Owns: the exchanges in flight (span ids are assigned when a request starts, so work done
//! while handling it can point at it), what each thread is handling, and the parent rules:
//!
//! - CLIENT span (HTTP, PostgreSQL) and PRODUCER span (AMQP publish): the SERVER or CONSUMER
//!   span its thread is handling (thread-based in-process propagation: what a thread sends
//!   while it handles a request or a message is part of it) — unless the request carries a
//!   valid `traceparent` of another trace (the app is instrumented, or set one), which then
//!   decides trace and parent; a header of the same trace was forwarded as received and the
//!   handled span is the finer parent. Otherwise the header; otherwise a new trace.
//! - SERVER span (HTTP): when the other end of the connection is a traced process on this node
//!   (same 4-tuple mirrored), the oldest unanswered CLIENT request on that connection is its
//!   parent ("same-node stitching", no header needed) — unless the request carries a
//!   `traceparent` of a different trace, which then wins; otherwise the header; otherwise a
//!   new trace.
//! - CONSUMER span (AMQP deliver/get): the PRODUCER span of the same message seen on this node
//!   (matched by content fingerprint, see `messaging`) when it agrees with the message's
//!   `traceparent` header or there is none; otherwise the header; otherwise a new trace.
//! - Malformed headers count as absent (W3C Trace Context §4.3) and are counted.
//!
//! The server side of PostgreSQL and the broker side of AMQP read the same bytes as their
//! clients; by default they produce no spans (the client's span already describes the call).
//!
//! Does not own: parsing (`protocol`), connection state (`conn`), attribute details
//! (`http`, `db`, `messaging`), resource metadata (`enrich`) or delivery (`export`).

use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::sync::Arc;

use agent_common::Role;

use super::context::{new_span_id, new_trace_id, parse_traceparent, parse_tracestate};
use super::injected::{Found, Injected, Injections};
use super::messaging::PublishIndex;
use super::model::{
    Attribute, ProcessTraits, Resource, Span, SpanContext, SpanId, SpanKind, StatusCode,
};
use super::parts::{Exchange, SpanParts};
use super::{db, http, http2, messaging};
use crate::conn::{ConnMeta, ConnTable};
use crate::protocol::{Flow, L7Event, Outcome, Request};
use crate::telemetry::red::Recorder;
use crate::telemetry::{Counter, Telemetry};

pub use super::parts::SpanOptions;

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

/// An exchange whose span has ids but no end yet.
#[derive(Debug)]
struct Inflight {
    pub ctx: SpanContext,
    pub parent: Option<SpanId>,
    pub kind: SpanKind,
    pub start_ns: u64,
    pub tid: u32,
    /// The goroutine it started on (Go programs; 0 when not known).
    pub goroutine: u64,
    pub request: Request,
    pub meta: ConnMeta,
    /// A CLIENT request already chosen as the parent of a same-node SERVER span.
    pub claimed: bool,
    /// An OpenTelemetry SDK in the process reports this exchange itself: no span of ours.
    pub sdk_reported: bool,
    /// For an SDK-reported call: the context its `traceparent` carried, which is the SDK's
    /// own span — what the call's children (the server it reached) hang under.
    pub sdk_context: Option<SpanContext>,
}

impl Inflight {
    /// The context this exchange's children derive theirs from: its own span, or for one the
    /// SDK reports, the SDK's span when known (never a span of ours that will not exist).
    fn for_children(&self) -> Option<&SpanContext> {
        if self.sdk_reported {
            self.sdk_context.as_ref()
        } else {
            Some(&self.ctx)
        }
    }
}

impl Inflight {
    /// The finished span: this exchange's ids, parent and kind, with what the protocol's span
    /// function made of it.
    fn finish(
        self,
        SpanParts {
            name,
            status,
            status_message,
            attributes,
        }: SpanParts,
        (start_unix_nano, end_unix_nano): (u64, u64),
        resource: Arc<Resource>,
    ) -> Span {
        Span {
            context: self.ctx,
            parent_span_id: self.parent,
            name,
            kind: self.kind,
            start_unix_nano,
            end_unix_nano,
            status,
            status_message,
            attributes,
            resource,
        }
    }
}

/// Where finished spans go.
pub trait SpanSink {
    fn emit(&mut self, span: Span);
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
    /// Whether `pid`'s resource is at hand already (false: worth reading it ahead, off the
    /// data path, see `enrich::worker`).
    fn known(&self, _pid: u32) -> bool {
        true
    }
    /// Whether `pid`'s cached resource is worth reading again (its pod's metadata arrived
    /// since it was built, see `enrich::ResourceCache::contains`).
    fn stale(&self, _pid: u32) -> bool {
        false
    }
    /// `pid`'s resource and traits, read ahead.
    fn provide(&mut self, _pid: u32, _resource: Arc<Resource>, _traits: ProcessTraits) {}
    /// What else the span stage must know of `pid`: whether its requests move between OS
    /// threads (Go: a thread then says nothing about which request it works for, see `work`),
    /// whether an OpenTelemetry SDK in it reports its own spans.
    fn traits(&mut self, _pid: u32, _comm: &str) -> ProcessTraits {
        ProcessTraits::default()
    }
    /// What the selection rules trace of `pid` (the `selection` config); all when not known
    /// yet. Called on the data path: a lookup, never a procfs read.
    fn protocols(&self, _pid: u32) -> crate::protocol::ProtocolSet {
        crate::protocol::ProtocolSet::ALL
    }
}

pub use super::work::LINGER_NS;

/// Set (true) on a span the sampler dropped but [`SpanOptions::keep_errors`] kept.
pub const KEPT_ERROR_ATTRIBUTE: &str = "ebpf_agent.sampling.kept_error";
/// W3C Trace Context: the `sampled` trace flag.
const SAMPLED: u8 = 1;
use super::work::{Cause, Scope, Work};

/// The thread (and goroutine) a request started on, and where the request a call was made
/// for is looked for (see `work`).
#[derive(Clone, Copy)]
struct Origin {
    tid: u32,
    goroutine: u64,
    scope: Scope,
    /// An OpenTelemetry SDK in the process reports spans, and the agent defers to it.
    sdk: bool,
}

/// Longest an exchange may stay open on a live connection before its entry is dropped: an hour
/// covers long polls and most streaming RPCs; a longer one loses its span (counted).
pub const MAX_INFLIGHT_NS: u64 = 3600 * 1_000_000_000;

pub struct SpanBuilder {
    /// Keyed by kernel-minted connection ids and parser sequence numbers (no peer chooses
    /// them): a fast non-keyed hash is safe.
    inflight: FxHashMap<(u64, u64), Inflight>,
    /// Per connection, its in-flight sequence numbers in request order.
    by_conn: FxHashMap<u64, VecDeque<u64>>,
    /// Which requests each thread and process is working for (see `work`).
    work: Work,
    published: PublishIndex,
    clock: Clock,
    opts: SpanOptions,
    telemetry: Arc<Telemetry>,
    /// RED metrics, recorded from every finished span (see `telemetry::red`).
    red: Recorder,
    /// Ids the kernel wrote into requests, for their client spans (see `injected`).
    injections: Injections,
}

impl SpanBuilder {
    pub fn new(clock: Clock, opts: SpanOptions, telemetry: Arc<Telemetry>) -> Self {
        Self {
            inflight: FxHashMap::default(),
            by_conn: FxHashMap::default(),
            work: Work::default(),
            published: PublishIndex::default(),
            clock,
            opts,
            red: Recorder::new(telemetry.clone()),
            telemetry,
            injections: Injections::default(),
        }
    }

    /// The kernel wrote a traceparent into the request that starts in the bytes of the
    /// syscall entered at `enter_ns` on `conn_id`: its client span takes these ids.
    pub fn injected(&mut self, conn_id: u64, enter_ns: u64, ids: Injected, now_ns: u64) {
        if !self.injections.note(conn_id, enter_ns, ids, now_ns) {
            self.telemetry.incr(Counter::InjectUnclaimed);
        }
    }

    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Threads currently attributed to a span (bounded: see [`LINGER_NS`]).
    pub fn handling(&self) -> usize {
        self.work.threads()
    }

    /// Goroutine `parent` of Go program `pid` started goroutine `child` (see `work`).
    pub fn go_spawned(&mut self, pid: u32, parent: u64, child: u64) {
        self.telemetry
            .incr(match self.work.spawned(pid, parent, child) {
                super::work::Spawn::Inherits => Counter::GoSpawnInherits,
                super::work::Spawn::NoCause => Counter::GoSpawnNoCause,
                super::work::Spawn::Full => Counter::GoSpawnTableFull,
            });
    }

    /// The process exited: its threads work for nothing any more.
    pub fn process_exit(&mut self, pid: u32) {
        self.work.process_exit(pid);
    }

    /// Periodic housekeeping: threads lingering on ended spans for too long, and exchanges
    /// that can no longer end — their connection is gone (`live` says which still exist) or
    /// they have been open for longer than [`MAX_INFLIGHT_NS`]. Parsers end every exchange
    /// they started when their connection closes or they are replaced, so these are leaks
    /// this sweep bounds, dropped and counted.
    pub fn sweep(&mut self, now_ns: u64, live: impl Fn(u64) -> bool) {
        let stale: Vec<(u64, u64)> = self
            .inflight
            .iter()
            .filter(|(&(conn, _), i)| {
                !live(conn) || now_ns.saturating_sub(i.start_ns) >= MAX_INFLIGHT_NS
            })
            .map(|(k, _)| *k)
            .collect();
        for &(conn, seq) in &stale {
            self.take(conn, seq, None);
        }
        if !stale.is_empty() {
            self.telemetry
                .add(Counter::SpansDroppedStale, stale.len() as u64);
        }
        self.work.sweep(now_ns);
        let unclaimed = self.injections.sweep(now_ns);
        self.telemetry.add(Counter::InjectUnclaimed, unclaimed);
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
                goroutine,
                start_ns,
                request,
            } => {
                let traits = resources.traits(meta.pid, meta.comm_str());
                // Only a Go program's records name a goroutine (the kernel reads it only for
                // processes marked as Go), but a record that predates a pid's reuse might.
                let goroutine = if traits.threads_migrate { goroutine } else { 0 };
                let scope = match (traits.threads_migrate, goroutine) {
                    (false, _) => Scope::Thread,
                    (true, 0) => Scope::Process,
                    (true, g) => Scope::Goroutine(g),
                };
                let from = Origin {
                    tid,
                    goroutine,
                    scope,
                    sdk: traits.sdk_traces && self.opts.defer_to_sdk,
                };
                self.start(meta, seq, from, start_ns, request, conns);
            }
            L7Event::ExchangeEnd {
                seq,
                end_ns,
                outcome,
            } => {
                if let Some(mut span) = self.end(meta, seq, end_ns, outcome, resources) {
                    self.telemetry.incr(Counter::SpansCreated);
                    let sampled = span.context.flags & SAMPLED != 0;
                    let exported =
                        sampled || (self.opts.keep_errors && span.status == StatusCode::Error);
                    // Before sampling: RED metrics count every request; only an exported
                    // span's ids become an exemplar (the backend has its trace).
                    self.red.record(&span, exported);
                    if !exported {
                        self.telemetry.incr(Counter::SpansSampledOut);
                        return;
                    }
                    if !sampled {
                        span.attributes
                            .push(Attribute::new(KEPT_ERROR_ATTRIBUTE, true));
                    }
                    sink.emit(span);
                }
            }
        }
    }

    fn start(
        &mut self,
        meta: &ConnMeta,
        seq: u64,
        Origin {
            tid,
            goroutine,
            scope,
            sdk,
        }: Origin,
        start_ns: u64,
        request: Request,
        conns: &ConnTable,
    ) {
        let protocol = request.protocol();
        let server_side = meta.role == Role::Server;
        if server_side && !protocol.server_side_spans() {
            // The database and the broker read the same bytes as their clients: the client's
            // span describes the call; a second one from the server's side would double it.
            return;
        }
        let kind = match request.flow() {
            Flow::Call if server_side => SpanKind::Server,
            Flow::Call => SpanKind::Client,
            Flow::Send => SpanKind::Producer,
            Flow::Receive => SpanKind::Consumer,
        };
        let (traceparent, tracestate) = request.trace_headers();
        let header = self.header_context(traceparent, tracestate);
        // In a process whose SDK reports spans, the SDK's server and consumer instrumentation
        // reports what it receives and its client instrumentation what carries its traceparent
        // (a call whose protocol carries no context, a database call, is trusted to the SDK's
        // instrumentation of it).
        let sdk_reported = sdk
            && match kind {
                SpanKind::Server | SpanKind::Consumer => true,
                // The SDK's own exports carry no header and it never traces them on purpose
                // (its instrumentation is suppressed for them): its telemetry, not the app's.
                _ => !protocol.carries_context() || header.is_some() || is_otlp_export(&request),
            };
        let sdk_context = header
            .clone()
            .filter(|_| sdk_reported && matches!(kind, SpanKind::Client | SpanKind::Producer));
        let injected = match kind {
            SpanKind::Client => match self.injections.take(meta.conn_id, start_ns) {
                Found::Ids(ids) => Some(ids),
                Found::Pipelined => {
                    self.telemetry.incr(Counter::InjectPipelinedNotInjected);
                    None
                }
                Found::None => None,
            },
            _ => None,
        };
        if let Some(ids) = injected {
            // The kernel wrote these ids into the request: the span must be the one the
            // server was told about.
            return self.adopt(meta, seq, tid, goroutine, scope, start_ns, request, ids);
        }
        let (ctx, parent) = match kind {
            // A multiplexed protocol's streams are numbered alike by both ends: match the
            // stream exactly; otherwise requests are answered in order, so the oldest
            // unmatched request is the one.
            SpanKind::Server => {
                let same_seq = protocol.multiplexed().then_some(seq);
                self.server_parent(meta, header, conns, same_seq, &request, start_ns)
            }
            SpanKind::Consumer => {
                let producer = request
                    .fingerprint()
                    .and_then(|fp| self.published.link(fp, start_ns));
                match (producer, header) {
                    (Some(p), h) if h.as_ref().is_none_or(|h| h.trace_id == p.trace_id) => {
                        (with_new_span(&p), Some(p.span_id))
                    }
                    (_, Some(h)) => (with_new_span(&h), Some(h.span_id)),
                    (_, None) => (new_root(), None),
                }
            }
            // A header of the trace the thread is already working in was most likely forwarded
            // as received (naive propagation by an uninstrumented app): the span the thread
            // handles is the finer parent. A header of another trace is the app's own word.
            _ => match (header, self.cause(tid, meta.pid, scope)) {
                (Some(h), Some(hd)) if h.trace_id != hd.trace_id => {
                    (with_new_span(&h), Some(h.span_id))
                }
                (_, Some(hd)) => (with_new_span(&hd), Some(hd.span_id)),
                (Some(h), None) => (with_new_span(&h), Some(h.span_id)),
                (None, None) => (new_root(), None),
            },
        };
        // The decision is made here, once, and travels in the flags to everything that
        // derives its context from this span.
        let mut ctx = ctx;
        let parent_sampled = parent.map(|_| ctx.flags & SAMPLED != 0);
        ctx.flags = (ctx.flags & !SAMPLED)
            | u8::from(self.opts.sampler.sampled(parent_sampled, &ctx.trace_id));
        if let Some(fp) = request.fingerprint().filter(|_| kind == SpanKind::Producer) {
            // What a delivery of this message on this node will hang under.
            let linked = if sdk_reported {
                sdk_context.clone()
            } else {
                Some(ctx.clone())
            };
            if let Some(linked) = linked {
                self.published.record(fp, linked, start_ns);
            }
        }
        if matches!(kind, SpanKind::Server | SpanKind::Consumer) {
            self.work
                .started(tid, meta.pid, goroutine, (meta.conn_id, seq));
        }
        self.track(
            seq,
            Inflight {
                ctx,
                parent,
                kind,
                start_ns,
                tid,
                goroutine,
                request,
                meta: *meta,
                claimed: false,
                sdk_reported,
                sdk_context,
            },
        );
    }

    /// Holds a started exchange until its end.
    fn track(&mut self, seq: u64, inf: Inflight) {
        let conn_id = inf.meta.conn_id;
        self.by_conn.entry(conn_id).or_default().push_back(seq);
        self.inflight.insert((conn_id, seq), inf);
    }

    /// Starts the client span of a request the kernel wrote a traceparent into: exactly the
    /// kernel's trace id, span id and sampled flag (the server, maybe on another node, was
    /// told them). Its parent is the in-process cause when that is a span of the same trace;
    /// a cause of another trace means the two sides disagree about what the call is for, and
    /// a wrong parent is worse than none: no parent, counted.
    #[allow(clippy::too_many_arguments)] // the pieces of `start` this branch needs, no more
    fn adopt(
        &mut self,
        meta: &ConnMeta,
        seq: u64,
        tid: u32,
        goroutine: u64,
        scope: Scope,
        start_ns: u64,
        request: Request,
        ids: Injected,
    ) {
        let parent = match self.cause(tid, meta.pid, scope) {
            Some(c) if c.trace_id == ids.trace_id => Some(c.span_id),
            Some(_) => {
                self.telemetry.incr(Counter::InjectCauseMismatch);
                None
            }
            None => None,
        };
        self.telemetry.incr(Counter::InjectAdopted);
        let ctx = SpanContext {
            trace_id: ids.trace_id,
            span_id: ids.span_id,
            flags: ids.flags,
            trace_state: None,
        };
        self.track(
            seq,
            Inflight {
                ctx,
                parent,
                kind: SpanKind::Client,
                start_ns,
                tid,
                goroutine,
                request,
                meta: *meta,
                claimed: false,
                sdk_reported: false,
                sdk_context: None,
            },
        );
    }

    /// The context of the request that caused a call made now on `tid` of `pid`, when it can
    /// be known (see `work`); an ambiguous cause is counted.
    fn cause(&self, tid: u32, pid: u32, scope: Scope) -> Option<SpanContext> {
        match self.work.cause(tid, pid, scope) {
            Cause::One(key) => self
                .inflight
                .get(&key)
                .and_then(Inflight::for_children)
                .cloned(),
            Cause::Lingering(ctx) => Some(ctx),
            Cause::Nothing => None,
            Cause::Ambiguous => {
                self.telemetry.incr(match scope {
                    Scope::Thread => Counter::ParentAmbiguousThread,
                    Scope::Goroutine(g) if self.work.goroutine_busy(pid, g) => {
                        Counter::ParentAmbiguousGoroutine
                    }
                    Scope::Goroutine(_) | Scope::Process => Counter::ParentAmbiguousProcess,
                });
                None
            }
        }
    }

    /// The caller's context from `traceparent`/`tracestate`, or None (absent or malformed).
    fn header_context(
        &self,
        traceparent: Option<&str>,
        tracestate: Option<&str>,
    ) -> Option<SpanContext> {
        let tp = traceparent?;
        let Ok(tp) = parse_traceparent(tp.trim()) else {
            self.telemetry.incr(Counter::TraceparentInvalid);
            return None;
        };
        let trace_state = match tracestate.map(parse_tracestate) {
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

    /// A SERVER span's context: the client span's on this node when stitched, else the
    /// header's, else a new root (see `server_root`).
    #[allow(clippy::too_many_arguments)] // the pieces of `start` this decision needs
    fn server_parent(
        &mut self,
        meta: &ConnMeta,
        header: Option<SpanContext>,
        conns: &ConnTable,
        same_seq: Option<u64>,
        request: &Request,
        start_ns: u64,
    ) -> (SpanContext, Option<SpanId>) {
        if let Some(peer) = conns.peer_of(meta).filter(|p| p.role == Role::Client) {
            let unclaimed = |s: &u64| {
                self.inflight
                    .get(&(peer.conn_id, *s))
                    .is_some_and(|i| !i.claimed)
            };
            let candidate = match same_seq {
                Some(s) => Some(s).filter(unclaimed),
                None => self
                    .by_conn
                    .get(&peer.conn_id)
                    .and_then(|seqs| seqs.iter().copied().find(unclaimed)),
            };
            if let Some(s) = candidate {
                let client = self
                    .inflight
                    .get_mut(&(peer.conn_id, s))
                    .expect("found above");
                // Both ends parsed the same bytes, so the same request; when they did not, a
                // record of one end was lost (its ring buffer was full) and the candidate is
                // another request: no parent rather than a wrong one.
                if !same_request(&client.request, request) {
                    self.telemetry.incr(Counter::SpansStitchRefused);
                    return match header {
                        Some(h) => (with_new_span(&h), Some(h.span_id)),
                        None => (self.server_root(meta.conn_id, start_ns), None),
                    };
                }
                // The client's span, or the SDK's when the SDK reports the call.
                if let Some(c) = client
                    .for_children()
                    .filter(|c| header.as_ref().is_none_or(|h| h.trace_id == c.trace_id))
                    .cloned()
                {
                    client.claimed = true;
                    self.telemetry.incr(Counter::SpansStitched);
                    return (with_new_span(&c), Some(c.span_id));
                }
            }
        }
        match header {
            Some(h) => (with_new_span(&h), Some(h.span_id)),
            None => (self.server_root(meta.conn_id, start_ns), None),
        }
    }

    /// A new trace for a request that came without context: derived from the connection and
    /// the request's first record time when injection is on (the kernel wrote the same id into
    /// the calls its thread made for it, see `agent_common::derive_trace_id`), else drawn.
    fn server_root(&self, conn_id: u64, start_ns: u64) -> SpanContext {
        match self.opts.derive_roots {
            Some(secret) => SpanContext {
                trace_id: agent_common::derive_trace_id(secret, conn_id, start_ns),
                span_id: new_span_id(),
                flags: 1,
                trace_state: None,
            },
            None => new_root(),
        }
    }

    /// Removes exchange `seq` of `conn_id` and its thread's attribution to it (kept, marked
    /// ended at `linger_from`, when the thread's work for it goes on).
    fn take(&mut self, conn_id: u64, seq: u64, linger_from: Option<u64>) -> Option<Inflight> {
        let inf = self.inflight.remove(&(conn_id, seq))?;
        if let Some(q) = self.by_conn.get_mut(&conn_id) {
            q.retain(|s| *s != seq);
            if q.is_empty() {
                self.by_conn.remove(&conn_id);
            }
        }
        if matches!(inf.kind, SpanKind::Server | SpanKind::Consumer) {
            let linger = linger_from.and_then(|ns| Some((inf.for_children()?.clone(), ns)));
            self.work.ended(
                (inf.tid, inf.meta.pid, inf.goroutine),
                (conn_id, seq),
                linger,
            );
        }
        Some(inf)
    }

    fn end(
        &mut self,
        meta: &ConnMeta,
        seq: u64,
        end_ns: u64,
        outcome: Outcome,
        resources: &mut impl Resources,
    ) -> Option<Span> {
        // A message consumed without ack is processed after it arrived: its thread keeps
        // working for it until it starts on something else.
        let work_follows = outcome.work_follows();
        let inf = self.take(meta.conn_id, seq, work_follows.then_some(end_ns))?;
        if inf.sdk_reported {
            self.telemetry.incr(Counter::SpansLeftToSdk);
            return None;
        }
        let ex = Exchange {
            meta: &inf.meta,
            kind: inf.kind,
        };
        let opts = &self.opts;
        // The one place that knows every protocol's span function: each takes exactly its
        // own request and outcome.
        let parts = match (&inf.request, outcome) {
            (Request::Http1(r), Outcome::Http1(o)) => http::span(r, o, &ex, opts),
            (Request::Http2(r), Outcome::Http2(o)) => http2::span(r, o, &ex, opts),
            // An HTTP/1.1 request whose server switched to HTTP/2 (`Upgrade: h2c`).
            (Request::Http1(r), Outcome::Http2(o)) => http2::upgraded_span(r, o, &ex, opts),
            (Request::Postgres(st), Outcome::Postgres(o)) => db::span(st, o, &ex, opts),
            (Request::Amqp(m), Outcome::Amqp(o)) => messaging::span(m, o, &ex),
            (r, o) => {
                // A parser bug, not bad input: counted, and no span rather than a wrong one.
                tracing::debug!(
                    "a {} exchange ended with a {} outcome: {o:?}",
                    r.protocol(),
                    o.protocol()
                );
                self.telemetry.incr(Counter::SpansMismatched);
                return None;
            }
        };
        let mut parts = parts;
        if meta.gaps != inf.meta.gaps {
            mark_gap(&mut parts);
        }
        let resource = resources.resource(meta.pid, meta.comm_str());
        let start = self.clock.to_unix(inf.start_ns);
        let end = self.clock.to_unix(end_ns.max(inf.start_ns));
        Some(inf.finish(parts, (start, end), resource))
    }
}

/// Whether a client's request and a server's request on the other end of its connection can
/// be the same one: the fields both ends parse from the same bytes agree.
fn same_request(client: &Request, server: &Request) -> bool {
    match (client, server) {
        (Request::Http1(c), Request::Http1(s)) => c.method == s.method && c.target == s.target,
        // Matched by stream id, which both ends see alike whatever was lost (and one end may
        // not have decoded the headers another did: HPACK state after joining midway).
        (c, s) => c.protocol() == s.protocol(),
    }
}

/// Set (true) on a span whose exchange was cut by a gap in the capture: records of its
/// connection were lost (the kernel's ring buffer was full) or its close was never seen.
pub const CAPTURE_GAP_ATTRIBUTE: &str = "ebpf_agent.capture.gap";
/// The status message of such a span.
pub const CAPTURE_GAP_MESSAGE: &str =
    "bytes of the connection were lost to the capture before the response completed";

/// The exchange straddled a gap, so the parser ended it aborted (it never reports one it
/// could not see whole as complete): say why, instead of blaming a close.
fn mark_gap(parts: &mut SpanParts) {
    if parts.status == StatusCode::Error {
        parts.status_message = Some(CAPTURE_GAP_MESSAGE.to_owned());
    }
    parts
        .attributes
        .push(Attribute::new(CAPTURE_GAP_ATTRIBUTE, true));
}

/// An OTLP export call: gRPC to a `opentelemetry.proto.collector.*` service, or OTLP/HTTP's
/// `POST /v1/{traces,metrics,logs}` (the OTLP specification's default paths).
fn is_otlp_export(request: &Request) -> bool {
    match request {
        Request::Http2(r) => r
            .path
            .as_deref()
            .is_some_and(|p| p.starts_with("/opentelemetry.proto.collector.")),
        Request::Http1(r) => {
            r.method == "POST"
                && matches!(
                    r.target.split('?').next(),
                    Some("/v1/traces" | "/v1/metrics" | "/v1/logs")
                )
        }
        _ => false,
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

#[cfg(test)]
mod tests;
