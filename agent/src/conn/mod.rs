//! Connections in user space: per-connection state, per-direction reassembly, protocol
//! detection, and the bounded table with idle eviction.
//!
//! Owns: which connections exist (from ConnOpen records and procfs discovery), their endpoints
//! and role, the bytes each direction has delivered that no parser consumed yet, and handing
//! bytes, gaps and closes to the connection's [`ConnParser`], and counting what the parsers
//! report per protocol. Does not own: what the protocols
//! mean (`crate::protocol`) or what becomes a span (`crate::span`).
//!
//! Gaps: when the kernel could not write a record of a connection (its ring buffer was full),
//! the connection's next record carries `data_flags::GAP_BEFORE`. Its parser is then told
//! ([`Parser::gap`]): every exchange in flight on the connection ends aborted, and the parser
//! resynchronises on what follows (HTTP/1 at the next request or status line, PostgreSQL and
//! AMQP at the next trustworthy message boundary) or, when it cannot (HTTP/2: the lost bytes
//! may have changed HPACK's table), the connection is given up and muted. The bytes either
//! direction had buffered are dropped. [`ConnMeta::gaps`] counts the gaps, so the span stage
//! can say which aborted exchanges a gap ended (`agent_ring_gaps_total` by protocol,
//! `agent_ring_gaps_abandoned_total`, `agent_ring_gaps_unparsed_total`). A lost close is
//! noticed when a new connection reuses the process's fd (conn ids are minted per connection,
//! so the two streams never mix): the old one ends the same way
//! (`agent_connections_close_lost_total`). A lost open cannot happen here: the kernel stops
//! tracking a connection whose open it could not report.
//!
//! Memory is bounded three ways: at most `max` connections (the least recently active are
//! evicted in batches when full), at most `max_buffer_bytes` unconsumed bytes per direction
//! (beyond it the connection's parser is reset), and idle connections are swept.

use agent_common::{conn_flags, data_flags, DataEvent, Direction, Role, SockAddr, Syscall};
use rustc_hash::FxHashMap;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::protocol::{ConnParser, Detected, L7Event, ParseError, Parser, SegmentCtx};
use crate::selection::ProtocolSet;
use crate::telemetry::{Counter, ProtocolCounter, Telemetry};

/// Bytes buffered while no protocol has been recognised yet; beyond it the connection is ignored.
const MAX_DETECT_BYTES: usize = 4096;
/// Bytes the detectors may look at on one connection, counting a re-look at what an earlier
/// read delivered. Detection re-reads the undecided bytes on every read, so a peer trickling
/// a byte per read would cost the square of MAX_DETECT_BYTES; real connections are decided in
/// one to three reads (a startup message sent a byte at a time stays far below this too).
const DETECT_BUDGET: usize = 64 * 1024;

/// What one read costs detection after a gap (see `Conn::redetect`): the detectors decide
/// on a few bytes, so [`DETECT_BUDGET`] then allows this many reads' worth of looking.
const REDETECT_WORK: usize = 256;

/// `Conn::allowed_epoch` of a connection whose process's selection was never looked up.
const NEVER_CHECKED: u64 = u64::MAX;

/// What the span layer needs to know about a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnMeta {
    pub conn_id: u64,
    pub pid: u32,
    pub fd: u32,
    pub role: Role,
    pub local: SockAddr,
    pub remote: SockAddr,
    /// The process's comm when the connection opened (NUL-padded), see `ConnOpenEvent::comm`.
    pub comm: [u8; 16],
    /// The bytes parsed are TLS plaintext from the process's TLS library (https, not http).
    pub tls: bool,
    /// Gaps seen on the connection so far: records the kernel could not deliver (ring buffer
    /// full) or a close that was never seen. An exchange that started when the count was
    /// lower than when it ended was cut by one.
    pub gaps: u32,
}

impl ConnMeta {
    /// `comm` as text (empty when unknown).
    pub fn comm_str(&self) -> &str {
        comm_text(&self.comm)
    }
}

/// A NUL-padded kernel `comm` as text (empty when unknown or not UTF-8).
pub fn comm_text(comm: &[u8; 16]) -> &str {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    std::str::from_utf8(&comm[..end]).unwrap_or("")
}

#[derive(Debug)]
enum ParseState {
    Detecting,
    Active(Box<ConnParser>),
    /// Not a protocol we parse: its bytes are dropped on arrival.
    Ignored,
    /// TLS records: the ciphertext is dropped; parsing starts with the first plaintext the TLS
    /// library uprobes report (never, if the process's TLS library is not traced).
    AwaitPlaintext,
}

#[derive(Debug)]
struct Conn {
    meta: ConnMeta,
    last_ns: u64,
    state: ParseState,
    /// Unconsumed bytes, indexed by [`dir_index`].
    bufs: [Vec<u8>; 2],
    /// Bytes the detectors have looked at so far (see [`DETECT_BUDGET`]).
    detect_work: usize,
    /// Records were lost before the protocol was decided: what follows may be the middle of
    /// a message, so bytes the detectors reject are dropped (not taken as an unknown
    /// protocol) and the next read is looked at from its start, until one decides.
    redetect: bool,
    /// What the selection rules trace of the connection's process, and the selection epoch it
    /// was looked up at (see [`ConnTable::data_selected`]).
    allowed: ProtocolSet,
    allowed_epoch: u64,
}

impl Conn {
    /// Replaces the parse state, dropping buffered bytes. An active parser is closed first,
    /// so the exchanges it had open end (aborted) instead of lingering in the span layer.
    fn switch(&mut self, state: ParseState, ts_ns: u64, out: &mut Vec<L7Event>) {
        if let ParseState::Active(p) = &mut self.state {
            p.close(ts_ns, out);
        }
        self.state = state;
        self.bufs = [Vec::new(), Vec::new()];
        self.detect_work = 0;
    }
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 1,
        _ => 0,
    }
}

fn other(d: Direction) -> Direction {
    match d {
        Direction::Ingress => Direction::Egress,
        _ => Direction::Ingress,
    }
}

/// Limits of the table.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max: usize,
    pub idle_ns: u64,
    pub max_buffer_bytes: usize,
}

pub struct ConnTable {
    /// Keyed by the kernel-minted connection id (never chosen by a peer), so a fast
    /// non-keyed hash is safe here; this map is looked up for every record.
    conns: FxHashMap<u64, Conn>,
    /// (local, remote) → connection id, for finding the other end of a same-node connection.
    by_tuple: HashMap<(SockAddr, SockAddr), u64>,
    by_pid: HashMap<u32, HashSet<u64>>,
    /// (pid, fd) → connection id: a new connection on a process's fd ends the one before it
    /// (whose close was lost).
    by_fd: HashMap<(u32, u32), u64>,
    limits: Limits,
    telemetry: Arc<Telemetry>,
    errors: Vec<ParseError>,
    /// One connection's parser events before they are tagged with its meta (reused: no
    /// allocation per record).
    evs: Vec<L7Event>,
    /// (pid, fd, `conn_flags` bit) for the kernel: MUTED for connections newly ignored (stop
    /// copying their payload), RAW_OFF for TLS ones (stop copying their ciphertext).
    to_mute: Vec<(u32, u32, u8)>,
}

impl ConnTable {
    pub fn new(limits: Limits, telemetry: Arc<Telemetry>) -> Self {
        Self {
            conns: FxHashMap::default(),
            by_tuple: HashMap::new(),
            by_pid: HashMap::new(),
            by_fd: HashMap::new(),
            limits,
            telemetry,
            errors: Vec::new(),
            evs: Vec::new(),
            to_mute: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn meta(&self, conn_id: u64) -> Option<&ConnMeta> {
        self.conns.get(&conn_id).map(|c| &c.meta)
    }

    /// The connection whose endpoints mirror `meta`'s: the other end of a connection between
    /// two processes on this node (both traced).
    pub fn peer_of(&self, meta: &ConnMeta) -> Option<&ConnMeta> {
        let id = self.by_tuple.get(&(meta.remote, meta.local))?;
        self.conns.get(id).map(|c| &c.meta)
    }

    /// Starts tracking a connection. Events of evicted connections go to `out`.
    pub fn open(&mut self, meta: ConnMeta, ts_ns: u64, out: &mut Vec<(ConnMeta, L7Event)>) {
        if self.conns.contains_key(&meta.conn_id) {
            return;
        }
        if let Some(&old) = self.by_fd.get(&(meta.pid, meta.fd)) {
            // The fd was closed without a close record reaching us (lost to a full ring
            // buffer; or closed by dup2/close_range, which the probes do not see), and when is
            // unknown: what was in flight on it ends as cut by a gap, not by a close (a
            // read-until-close body is not complete).
            self.telemetry.incr(Counter::ConnsCloseLost);
            self.gap(old, ts_ns, out);
            if self.remove(old, ts_ns, out) {
                self.telemetry.incr(Counter::ConnsClosed);
            }
        }
        if self.conns.len() >= self.limits.max {
            self.evict_oldest(ts_ns, out);
        }
        self.telemetry.incr(Counter::ConnsOpened);
        self.by_tuple
            .insert((meta.local, meta.remote), meta.conn_id);
        self.by_pid
            .entry(meta.pid)
            .or_default()
            .insert(meta.conn_id);
        self.by_fd.insert((meta.pid, meta.fd), meta.conn_id);
        self.conns.insert(
            meta.conn_id,
            Conn {
                meta,
                last_ns: ts_ns,
                state: ParseState::Detecting,
                bufs: [Vec::new(), Vec::new()],
                detect_work: 0,
                redetect: false,
                allowed: ProtocolSet::ALL,
                allowed_epoch: NEVER_CHECKED,
            },
        );
    }

    /// Gives up on a connection right away: nothing of it is parsed and the kernel is asked to
    /// stop copying its payload (its open/close are still tracked). Exchanges its parser had
    /// open end now (aborted), in `out`.
    pub fn ignore(&mut self, conn_id: u64, ts_ns: u64, out: &mut Vec<(ConnMeta, L7Event)>) {
        if let Some(c) = self.conns.get_mut(&conn_id) {
            if !matches!(c.state, ParseState::Ignored) {
                c.switch(ParseState::Ignored, ts_ns, &mut self.evs);
                emit(&self.telemetry, c.meta, &mut self.evs, out);
                self.to_mute
                    .push((c.meta.pid, c.meta.fd, conn_flags::MUTED));
            }
        }
    }

    /// Bytes of the connection were lost before what comes next (see the module docs): its
    /// parser ends what was in flight and resynchronises, or the connection is given up.
    /// Buffered bytes of both directions are dropped.
    pub fn gap(&mut self, conn_id: u64, ts_ns: u64, out: &mut Vec<(ConnMeta, L7Event)>) {
        let Some(c) = self.conns.get_mut(&conn_id) else {
            return;
        };
        c.meta.gaps = c.meta.gaps.saturating_add(1);
        c.bufs = [Vec::new(), Vec::new()];
        let ParseState::Active(p) = &mut c.state else {
            self.telemetry.incr(Counter::RingGapsUnparsed);
            c.redetect = matches!(c.state, ParseState::Detecting);
            return;
        };
        let protocol = p.protocol();
        self.telemetry
            .protocol_incr(protocol, ProtocolCounter::RingGaps);
        if !p.gap(ts_ns, &mut self.evs) {
            tracing::debug!(
                conn = c.meta.conn_id,
                "{protocol} cannot resynchronise after records were lost: connection ignored"
            );
            self.telemetry
                .protocol_incr(protocol, ProtocolCounter::RingGapsAbandoned);
            c.switch(ParseState::Ignored, ts_ns, &mut self.evs);
            self.to_mute
                .push((c.meta.pid, c.meta.fd, conn_flags::MUTED));
        }
        emit(&self.telemetry, c.meta, &mut self.evs, out);
    }

    /// The process closed the connection.
    pub fn close(&mut self, conn_id: u64, ts_ns: u64, out: &mut Vec<(ConnMeta, L7Event)>) {
        if self.remove(conn_id, ts_ns, out) {
            self.telemetry.incr(Counter::ConnsClosed);
        }
    }

    /// The process exited: its connections end now. Returns their (pid, fd) for the kernel table.
    pub fn process_exit(
        &mut self,
        pid: u32,
        ts_ns: u64,
        out: &mut Vec<(ConnMeta, L7Event)>,
    ) -> Vec<(u32, u32)> {
        let ids: Vec<u64> = self
            .by_pid
            .get(&pid)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let mut fds = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(c) = self.conns.get(&id) {
                fds.push((c.meta.pid, c.meta.fd));
            }
            if self.remove(id, ts_ns, out) {
                self.telemetry.incr(Counter::ConnsClosed);
            }
        }
        fds
    }

    /// Drops connections idle for longer than the limit.
    pub fn sweep_idle(&mut self, now_ns: u64, out: &mut Vec<(ConnMeta, L7Event)>) {
        let cutoff = now_ns.saturating_sub(self.limits.idle_ns);
        let idle: Vec<u64> = self
            .conns
            .values()
            .filter(|c| c.last_ns < cutoff)
            .map(|c| c.meta.conn_id)
            .collect();
        for id in idle {
            if self.remove(id, now_ns, out) {
                self.telemetry.incr(Counter::ConnsEvicted);
            }
        }
    }

    /// Table full: drop the least recently active eighth at once, so a table under churn pays
    /// for one sort per many inserts instead of a scan per insert.
    fn evict_oldest(&mut self, ts_ns: u64, out: &mut Vec<(ConnMeta, L7Event)>) {
        let mut by_age: Vec<(u64, u64)> = self
            .conns
            .values()
            .map(|c| (c.last_ns, c.meta.conn_id))
            .collect();
        let n = (by_age.len() / 8).max(1);
        by_age.select_nth_unstable(n - 1);
        for &(_, id) in &by_age[..n] {
            if self.remove(id, ts_ns, out) {
                self.telemetry.incr(Counter::ConnsEvicted);
            }
        }
    }

    fn remove(&mut self, conn_id: u64, ts_ns: u64, out: &mut Vec<(ConnMeta, L7Event)>) -> bool {
        let Some(mut c) = self.conns.remove(&conn_id) else {
            return false;
        };
        if self.by_tuple.get(&(c.meta.local, c.meta.remote)) == Some(&conn_id) {
            self.by_tuple.remove(&(c.meta.local, c.meta.remote));
        }
        if let Some(s) = self.by_pid.get_mut(&c.meta.pid) {
            s.remove(&conn_id);
            if s.is_empty() {
                self.by_pid.remove(&c.meta.pid);
            }
        }
        if self.by_fd.get(&(c.meta.pid, c.meta.fd)) == Some(&conn_id) {
            self.by_fd.remove(&(c.meta.pid, c.meta.fd));
        }
        if let ParseState::Active(p) = &mut c.state {
            p.close(ts_ns, &mut self.evs);
            emit(&self.telemetry, c.meta, &mut self.evs, out);
        }
        true
    }

    /// Connections ignored (or found to carry TLS) since the last call, with the flag the
    /// kernel should set: it can stop copying their payload (or ciphertext).
    pub fn take_to_mute(&mut self) -> Vec<(u32, u32, u8)> {
        std::mem::take(&mut self.to_mute)
    }

    /// Whether the payload of a data record will be looked at. False when its connection is
    /// known and drops such bytes on arrival whatever the records before it change: ignored or
    /// waiting for TLS plaintext, or on TLS plaintext already and this is a raw syscall's bytes
    /// (only a TLS-library record changes those states, and after one raw bytes are dropped
    /// too). Unknown connections' payload is wanted: their open may still be held for ordering.
    pub fn wants_payload(&self, d: &DataEvent) -> bool {
        if Syscall::is_tls(d.syscall) {
            return true;
        }
        self.conns.get(&d.header.conn_id).is_none_or(|c| {
            !c.meta.tls && !matches!(c.state, ParseState::Ignored | ParseState::AwaitPlaintext)
        })
    }

    /// Bytes one syscall moved on a connection. Parsed events go to `out`. `payload` may be
    /// empty for a record whose bytes [`Self::wants_payload`] said are not needed. Every
    /// protocol is traced (see [`Self::data_selected`]).
    pub fn data(&mut self, d: &DataEvent, payload: &[u8], out: &mut Vec<(ConnMeta, L7Event)>) {
        self.data_selected(d, payload, &mut |_| ProtocolSet::ALL, 0, out)
    }

    /// [`Self::data`], with `allowed(pid)` saying what the selection rules trace of the
    /// process. It is asked once per connection and again only when `epoch` moves (the
    /// caller moves it when any process's decision changed), so the data path pays a
    /// comparison per record. A connection whose protocol is not traced is ignored from its
    /// detection on (before any of its bytes are parsed), or from the moment its process's
    /// decision changes, and muted in the kernel (counted: `agent_connections_deselected_total`).
    pub fn data_selected(
        &mut self,
        d: &DataEvent,
        payload: &[u8],
        allowed: &mut dyn FnMut(u32) -> ProtocolSet,
        epoch: u64,
        out: &mut Vec<(ConnMeta, L7Event)>,
    ) {
        if let Some(c) = self.conns.get_mut(&d.header.conn_id) {
            if c.allowed_epoch != epoch {
                c.allowed_epoch = epoch;
                c.allowed = allowed(c.meta.pid);
                let deselected = match &c.state {
                    ParseState::Active(p) => !c.allowed.allows(p.protocol(), c.meta.tls),
                    ParseState::AwaitPlaintext => !c.allowed.contains(ProtocolSet::TLS),
                    ParseState::Detecting => c.allowed.is_none(),
                    ParseState::Ignored => false,
                };
                if deselected {
                    tracing::debug!(
                        conn = c.meta.conn_id,
                        pid = c.meta.pid,
                        "connection deselected: its process traces {}",
                        c.allowed.describe()
                    );
                    self.telemetry.incr(Counter::ConnsDeselected);
                    let id = c.meta.conn_id;
                    self.ignore(id, d.header.ts_ns, out);
                    self.telemetry.add(Counter::BytesCaptured, u64::from(d.len));
                    return;
                }
            }
        }
        let dir = Direction::from_u8(d.header.direction);
        if dir == Direction::None {
            self.telemetry.incr(Counter::EventsMalformed);
            return;
        }
        if d.flags & data_flags::GAP_BEFORE != 0 {
            // The hole ended before this record's syscall began (the kernel checks at entry).
            self.gap(d.header.conn_id, d.enter_ts_ns, out);
        }
        let Some(c) = self.conns.get_mut(&d.header.conn_id) else {
            self.telemetry.incr(Counter::DataForUnknownConn);
            return;
        };
        self.telemetry.add(Counter::BytesCaptured, u64::from(d.len));
        c.last_ns = d.header.ts_ns;
        if Syscall::is_tls(d.syscall) {
            if !c.meta.tls {
                // The first plaintext: whatever the raw bytes were parsed as (a TLS handshake,
                // PostgreSQL's SSLRequest) is over; the conversation starts here. Exchanges
                // of the raw parse end (aborted) before the plaintext's begin.
                c.switch(ParseState::Detecting, d.header.ts_ns, &mut self.evs);
                emit(&self.telemetry, c.meta, &mut self.evs, out);
                c.meta.tls = true;
                self.telemetry.incr(Counter::ConnsTls);
                self.to_mute
                    .push((c.meta.pid, c.meta.fd, conn_flags::RAW_OFF));
            }
        } else if c.meta.tls {
            // Ciphertext copied before the kernel learnt the socket carries TLS.
            return;
        }
        let ctx = SegmentCtx {
            tid: d.header.tid,
            goroutine: d.goroutine,
            first_ns: if dir == Direction::Egress {
                d.enter_ts_ns
            } else {
                d.header.ts_ns
            },
            last_ns: d.header.ts_ns,
        };
        let missing = u64::from(d.orig_len.saturating_sub(d.len));
        let was_ignored = matches!(c.state, ParseState::Ignored);
        let was_awaiting = matches!(c.state, ParseState::AwaitPlaintext);
        feed(
            c,
            dir,
            payload,
            missing,
            &ctx,
            self.limits.max_buffer_bytes,
            &self.telemetry,
            &mut self.evs,
            &mut self.errors,
        );
        if !was_ignored && matches!(c.state, ParseState::Ignored) {
            self.to_mute
                .push((c.meta.pid, c.meta.fd, conn_flags::MUTED));
        }
        if !was_awaiting && matches!(c.state, ParseState::AwaitPlaintext) {
            self.to_mute
                .push((c.meta.pid, c.meta.fd, conn_flags::RAW_OFF));
        }
        for e in self.errors.drain(..) {
            tracing::debug!(conn = c.meta.conn_id, "parse error: {e}");
            match e {
                ParseError::Limited { .. } => self.telemetry.incr(Counter::ParseLimitsHit),
                ParseError::Malformed { protocol, .. } => self
                    .telemetry
                    .protocol_incr(protocol, ProtocolCounter::ParseErrors),
            }
        }
        let meta = c.meta;
        emit(&self.telemetry, meta, &mut self.evs, out);
    }
}

/// Hands one connection's parser events on to the span stage, counting requests and aborted
/// exchanges per protocol on the way.
fn emit(
    telemetry: &Telemetry,
    meta: ConnMeta,
    evs: &mut Vec<L7Event>,
    out: &mut Vec<(ConnMeta, L7Event)>,
) {
    out.extend(evs.drain(..).map(|e| {
        match &e {
            L7Event::RequestStart { request, .. } => {
                telemetry.protocol_incr(request.protocol(), ProtocolCounter::Requests)
            }
            L7Event::ExchangeEnd { outcome, .. } if outcome.aborted() => {
                telemetry.protocol_incr(outcome.protocol(), ProtocolCounter::Aborted)
            }
            L7Event::ExchangeEnd { .. } => {}
        }
        (meta, e)
    }));
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the same values
fn feed(
    c: &mut Conn,
    dir: Direction,
    payload: &[u8],
    missing: u64,
    ctx: &SegmentCtx,
    max_buf: usize,
    telemetry: &Telemetry,
    out: &mut Vec<L7Event>,
    errors: &mut Vec<ParseError>,
) {
    if let ParseState::Detecting = c.state {
        let buf = &mut c.bufs[dir_index(dir)];
        buf.extend_from_slice(payload);
        // After a gap the detectors look at the start of each read (a signature is a few
        // bytes); what they reject is dropped, so nothing is looked at twice.
        let work = if c.redetect {
            buf.len().min(REDETECT_WORK)
        } else {
            buf.len()
        };
        c.detect_work = c.detect_work.saturating_add(work);
        if c.detect_work > DETECT_BUDGET {
            tracing::debug!(
                conn = c.meta.conn_id,
                "protocol detection gave up: {DETECT_BUDGET} bytes looked at, none decided"
            );
            telemetry.incr(Counter::ParseLimitsHit);
            telemetry.incr(Counter::ProtocolUnknown);
            c.state = ParseState::Ignored;
            c.bufs = [Vec::new(), Vec::new()];
            return;
        }
        match ConnParser::detect(dir, c.meta.role, buf) {
            Detected::Parser(p) if !c.allowed.allows(p.protocol(), c.meta.tls) => {
                // The selection rules do not trace this protocol for this process.
                tracing::debug!(
                    conn = c.meta.conn_id,
                    pid = c.meta.pid,
                    protocol = p.protocol().name(),
                    "connection deselected: its process traces {}",
                    c.allowed.describe()
                );
                telemetry.incr(Counter::ConnsDeselected);
                c.state = ParseState::Ignored;
                c.bufs = [Vec::new(), Vec::new()];
            }
            Detected::Tls if !c.meta.tls && !c.allowed.contains(ProtocolSet::TLS) => {
                // TLS plaintext is not traced for this process: nothing of it is.
                telemetry.incr(Counter::TlsHandshakesSeen);
                telemetry.incr(Counter::ConnsDeselected);
                c.state = ParseState::Ignored;
                c.bufs = [Vec::new(), Vec::new()];
            }
            Detected::Parser(p)
                if c.meta.role == Role::Server && !p.protocol().server_side_spans() =>
            {
                // A database or broker reading its clients' bytes: nothing to do here.
                c.state = ParseState::Ignored;
                c.bufs = [Vec::new(), Vec::new()];
            }
            Detected::Parser(p) => {
                c.state = ParseState::Active(p);
                // Bytes the other direction delivered while undecided come first.
                let early = std::mem::take(&mut c.bufs[dir_index(other(dir))]);
                let now = std::mem::take(&mut c.bufs[dir_index(dir)]);
                if !early.is_empty() {
                    parse_into(
                        c,
                        other(dir),
                        &early,
                        0,
                        ctx,
                        max_buf,
                        telemetry,
                        out,
                        errors,
                    );
                }
                parse_into(c, dir, &now, missing, ctx, max_buf, telemetry, out, errors);
            }
            Detected::Tls if !c.meta.tls => {
                telemetry.incr(Counter::TlsHandshakesSeen);
                c.state = ParseState::AwaitPlaintext;
                c.bufs = [Vec::new(), Vec::new()];
            }
            Detected::NeedMore if missing == 0 && buf.len() <= MAX_DETECT_BYTES => {}
            _ if c.redetect => {
                // Maybe the middle of a message after lost records: not a verdict.
                c.bufs = [Vec::new(), Vec::new()];
            }
            _ => {
                // No protocol we parse (or undecidable across a gap): ignore the connection.
                telemetry.incr(Counter::ProtocolUnknown);
                c.state = ParseState::Ignored;
                c.bufs = [Vec::new(), Vec::new()];
            }
        }
        return;
    }
    if let ParseState::Active(_) = c.state {
        parse_into(
            c, dir, payload, missing, ctx, max_buf, telemetry, out, errors,
        );
    }
}

/// Appends `payload` to the direction's unconsumed bytes, lets the parser consume, then reports
/// the uncaptured `missing` bytes. Parses straight from `payload` when nothing is buffered (the
/// common case: a whole message per syscall), so most bytes are never copied.
#[allow(clippy::too_many_arguments)] // see feed()
fn parse_into(
    c: &mut Conn,
    dir: Direction,
    payload: &[u8],
    missing: u64,
    ctx: &SegmentCtx,
    max_buf: usize,
    telemetry: &Telemetry,
    out: &mut Vec<L7Event>,
    errors: &mut Vec<ParseError>,
) {
    let ParseState::Active(parser) = &mut c.state else {
        return;
    };
    let buf = &mut c.bufs[dir_index(dir)];
    if buf.is_empty() {
        let used = parser
            .parse(dir, payload, ctx, out, errors)
            .min(payload.len());
        buf.extend_from_slice(&payload[used..]);
    } else {
        buf.extend_from_slice(payload);
        let used = parser.parse(dir, buf, ctx, out, errors).min(buf.len());
        buf.drain(..used);
    }
    if missing > 0 && !parser.skip(dir, missing, buf.len(), ctx, out) {
        telemetry.incr(Counter::StreamGaps);
        buf.clear();
    }
    if buf.len() > max_buf {
        // The parser cannot make progress on this much: start over on this connection.
        telemetry.incr(Counter::StreamBufferOverflow);
        c.switch(ParseState::Detecting, ctx.last_ns, out);
    } else if buf.capacity() > 4 * buf.len().max(4096) {
        buf.shrink_to(buf.len().max(4096)); // give back what a burst grew
    }
}

#[cfg(test)]
mod tests;
