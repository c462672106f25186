//! The frontend (client to server) stream: message framing, the startup phase, and handing
//! each message to the session. Only message heads are ever held back (a query text up to
//! [`MAX_TEXT`], names, small messages); everything else (CopyData, Bind parameters, long
//! query tails, FunctionCall arguments, authentication responses) is skipped as it arrives,
//! keeping only a count of the bytes still to skip.

use super::super::{L7Event, ParseError, SegmentCtx};
use super::detect::{scan_frontend, startup_params, Scan};
use super::session::{Session, Start};
use super::wire::{
    cstr, frontend_limit, text, u32_at, Header, CANCEL_REQUEST, GSSENC_REQUEST, HEADER,
    MAX_STARTUP, MAX_TEXT, NAME_HEAD, PROTOCOL_3_0, SSL_REQUEST,
};
use super::{Io, Stop};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At a message boundary.
    Boundary,
    /// Skipping the rest of a message body.
    Skip { remaining: u64 },
    /// Lost sync: looking for a Query, Parse or Bind.
    Resync,
    /// Nothing more is parsed (Terminate, CancelRequest, encryption, unknown protocol).
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No byte seen yet: the first one tells a startup packet (length < 10000, so 0) from a
    /// typed message (joining a connection in progress).
    Unknown,
    /// Startup-phase messages have no type byte.
    Startup,
    Typed,
}

/// Remembers which read delivered the bytes left unconsumed by the previous call, so a message
/// arriving over several reads starts at its first one.
#[derive(Debug, Default)]
struct Cursor {
    carried: usize,
    carried_start: Option<Start>,
}

impl Cursor {
    fn start_at(&self, offset: usize, ctx: &SegmentCtx) -> Start {
        match self.carried_start {
            Some(start) if offset < self.carried => start,
            _ => Start {
                tid: ctx.tid,
                goroutine: ctx.goroutine,
                first_ns: ctx.first_ns,
            },
        }
    }

    fn finish(&mut self, len: usize, consumed: usize, ctx: &SegmentCtx) {
        let rest = len - consumed;
        if rest == 0 {
            *self = Cursor::default();
            return;
        }
        // Only the head of one message is ever carried, so its first byte came either with
        // the remembered read or with this one.
        if consumed >= self.carried || self.carried_start.is_none() {
            self.carried_start = Some(Start {
                tid: ctx.tid,
                goroutine: ctx.goroutine,
                first_ns: ctx.first_ns,
            });
        }
        self.carried = rest;
    }
}

#[derive(Debug)]
pub(super) struct Frontend {
    state: State,
    phase: Phase,
    cursor: Cursor,
    /// The extended-protocol group being sent (Parse/Bind/Describe/Close up to an Execute):
    /// its id and where its first message started.
    group: Option<(u64, Start)>,
    next_group: u64,
    /// The previous message was a Sync (see `Session::retract_sync`).
    after_sync: bool,
    /// At a boundary we know (not one found by resync): errors are reported.
    trusted: bool,
    /// How far the head of the message at the start of the unconsumed bytes was searched.
    head_scan: HeadScan,
    /// Resync stopped at a candidate it could not decide yet (the first unconsumed byte):
    /// how much of it was checked (see `detect::scan_frontend`).
    resync_hint: usize,
}

/// How far a message head held back over several reads was searched for the NULs ending its
/// strings, so that the next read resumes there: searching from its start on every read
/// would cost O(n²) for a 64 KiB query arriving a byte per read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct HeadScan {
    /// Head bytes searched (after the message header).
    searched: usize,
    /// NULs found in them.
    nuls: usize,
}

enum Step {
    NeedMore,
    Consumed(usize),
}

/// How much of a message's body must be held to handle it (`None`: more bytes needed). Query,
/// Parse and Bind are read up to the strings we keep (the query text; the names), at most
/// [`MAX_TEXT`] / [`NAME_HEAD`] bytes of them: the rest (parameter types and values, a long
/// text's tail) is skipped as it arrives, so a capture gap there is absorbed. The search for
/// the strings' ends resumes at `scan` (the same head, seen with fewer bytes before).
pub(super) fn head_len(
    ty: u8,
    body_len: u64,
    visible: &[u8],
    scan: &mut HeadScan,
) -> Option<usize> {
    let (strings, cap) = match ty {
        b'Q' => (1, MAX_TEXT),
        b'P' => (2, MAX_TEXT + NAME_HEAD),
        b'B' => (2, NAME_HEAD),
        b'D' | b'E' | b'C' => {
            return usize::try_from(body_len)
                .ok()
                .filter(|&n| n <= visible.len())
        }
        _ => return Some(0),
    };
    let cap = body_len.min(cap as u64) as usize;
    let visible = &visible[..visible.len().min(cap)];
    let mut at = scan.searched.min(visible.len());
    while let Some(off) = memchr::memchr(0, &visible[at..]) {
        at += off + 1;
        scan.nuls += 1;
        if scan.nuls == strings {
            return Some(at);
        }
    }
    scan.searched = visible.len();
    // Not terminated within the bound: handled with what the bound holds.
    (visible.len() == cap).then_some(cap)
}

fn error(detail: impl Into<String>) -> ParseError {
    ParseError::Malformed {
        protocol: crate::protocol::ProtocolId::Postgres,
        what: "frontend message",
        detail: detail.into(),
    }
}

impl Frontend {
    pub(super) fn new() -> Self {
        Self {
            state: State::Boundary,
            phase: Phase::Unknown,
            cursor: Cursor::default(),
            group: None,
            next_group: 0,
            after_sync: false,
            trusted: true,
            head_scan: HeadScan::default(),
            resync_hint: 0,
        }
    }

    pub(super) fn stop(&mut self) {
        self.state = State::Stopped;
    }

    pub(super) fn parse(&mut self, buf: &[u8], io: &mut Io) -> usize {
        let mut pos = 0;
        while pos < buf.len() {
            match self.state {
                State::Stopped => pos = buf.len(),
                State::Skip { remaining } => {
                    let n = remaining.min((buf.len() - pos) as u64);
                    pos += n as usize;
                    self.state = match remaining - n {
                        0 => State::Boundary,
                        remaining => State::Skip { remaining },
                    };
                }
                State::Resync => {
                    // The hint describes the candidate this call starts with, if any.
                    let mut hint = if pos == 0 { self.resync_hint } else { 0 };
                    self.resync_hint = 0;
                    match scan_frontend(buf, pos, &mut hint) {
                        Scan::Found(at) => {
                            pos = at;
                            self.state = State::Boundary;
                        }
                        Scan::Partial(at) => {
                            pos = at;
                            self.resync_hint = hint;
                            break;
                        }
                        Scan::Nothing => pos = buf.len(),
                    }
                }
                State::Boundary => {
                    let start = self.cursor.start_at(pos, io.ctx);
                    match self.message(&buf[pos..], start, io) {
                        Step::NeedMore => break,
                        Step::Consumed(n) => pos += n,
                    }
                }
            }
        }
        self.cursor.finish(buf.len(), pos, io.ctx);
        pos
    }

    /// Lose sync at a message we cannot use: report it when at a known boundary, forget what
    /// the session expected, and resync from the next byte.
    fn fail(&mut self, detail: String, io: &mut Io) -> Step {
        if self.trusted {
            io.errors.push(error(detail));
        }
        self.head_scan = HeadScan::default();
        io.session.lose(io.ctx.last_ns, io.out);
        self.state = State::Resync;
        self.phase = Phase::Typed;
        self.trusted = false;
        self.group = None;
        Step::Consumed(1)
    }

    fn message(&mut self, bytes: &[u8], start: Start, io: &mut Io) -> Step {
        if self.phase == Phase::Unknown {
            self.phase = if bytes[0] == 0 {
                Phase::Startup
            } else {
                Phase::Typed
            };
        }
        if self.phase == Phase::Startup {
            return self.startup(bytes, io);
        }
        let Some(&ty) = bytes.first() else {
            return Step::NeedMore;
        };
        let Some(limit) = frontend_limit(ty) else {
            return self.fail(format!("unknown message type 0x{ty:02x}"), io);
        };
        let Some(h) = Header::read(bytes) else {
            return Step::NeedMore;
        };
        if h.len < 4 || h.len > limit {
            return self.fail(format!("{:?} length {}", ty as char, h.len as i32), io);
        }
        let body_len = h.body_len();
        let visible = &bytes[HEADER.min(bytes.len())..];
        let Some(head) = head_len(ty, body_len, visible, &mut self.head_scan) else {
            return Step::NeedMore;
        };
        self.head_scan = HeadScan::default();
        let body = &bytes[HEADER..HEADER + head];
        self.handle(ty, body, start, io);
        if self.state == State::Boundary && (head as u64) < body_len {
            self.state = State::Skip {
                remaining: body_len - head as u64,
            };
        }
        self.trusted = true;
        Step::Consumed(HEADER + head)
    }

    /// The group a Parse/Bind/Describe/Close belongs to (a new one unless one is open).
    fn group(&mut self, start: Start) -> u64 {
        match self.group {
            Some((id, _)) => id,
            None => {
                let id = self.next_group;
                self.next_group += 1;
                self.group = Some((id, start));
                id
            }
        }
    }

    fn handle(&mut self, ty: u8, body: &[u8], start: Start, io: &mut Io) {
        let emit = (io.ctx.last_ns, &mut *io.out);
        // Flush keeps the mark: the server ignores it in copy-in mode as it does Sync.
        let after_sync = match ty {
            b'H' => self.after_sync,
            _ => std::mem::replace(&mut self.after_sync, ty == b'S'),
        };
        let fits = match ty {
            b'Q' => {
                self.group = None;
                // A text longer than MAX_TEXT is kept truncated; see `wire::MAX_TEXT`.
                let text_end = body.iter().position(|&c| c == 0).unwrap_or(body.len());
                io.session.query(text(&body[..text_end]), start, emit)
            }
            b'P' => {
                let group = self.group(start);
                // A truncated Parse keeps the visible part of its text.
                let def = cstr(body)
                    .map(|(name, rest)| (name, cstr(rest).map_or(rest, |(query, _)| query)));
                io.session.parse(group, start, def, emit)
            }
            b'B' => {
                let group = self.group(start);
                let names = cstr(body).and_then(|(portal, rest)| {
                    cstr(rest).map(|(statement, _)| (portal, statement))
                });
                io.session.bind(group, names, emit)
            }
            b'D' => {
                let group = self.group(start);
                io.session.describe(group, emit)
            }
            b'C' => {
                let group = self.group(start);
                let target = body
                    .split_first()
                    .and_then(|(&kind, rest)| cstr(rest).map(|(name, _)| (kind, name)));
                io.session.close(group, target, emit)
            }
            b'E' => {
                let (group, group_start) = match self.group.take() {
                    Some(g) => g,
                    None => {
                        self.next_group += 1;
                        (self.next_group - 1, start)
                    }
                };
                let portal = cstr(body).map(|(portal, _)| portal);
                io.session.execute(group, group_start, portal, emit)
            }
            b'S' => {
                self.group = None;
                io.session.sync(emit)
            }
            b'F' => {
                self.group = None;
                io.session.function_call(emit)
            }
            b'd' | b'c' | b'f' => {
                if after_sync {
                    io.session.retract_sync();
                }
                true
            }
            b'X' => {
                // Terminate: the client closes; nothing after it is a message.
                self.state = State::Stopped;
                true
            }
            // Flush, and authentication responses (PasswordMessage, SASL, GSS).
            _ => true,
        };
        if !fits {
            io.errors.push(ParseError::Limited {
                protocol: crate::protocol::ProtocolId::Postgres,
                what: "messages awaiting an answer beyond MAX_OPS or MAX_QUEUED_TEXT",
            });
        }
    }

    /// A startup-phase message (no type byte): StartupMessage, SSLRequest, GSSENCRequest or
    /// CancelRequest ("Message Formats").
    fn startup(&mut self, bytes: &[u8], io: &mut Io) -> Step {
        // After SSLRequest answered 'S' the client starts TLS: a handshake record (0x16).
        // After GSSENCRequest answered 'G', length-prefixed GSSAPI tokens. Either may be read
        // before the server's answer is.
        let answer_pending = io.session.expects_encryption_reply();
        let encrypted = |io: &mut Io| {
            io.stop = Some(Stop::Encrypted);
            Step::Consumed(bytes.len())
        };
        if bytes[0] == 0x16 {
            return encrypted(io);
        }
        let (Some(len), Some(code)) = (u32_at(bytes, 0), u32_at(bytes, 4)) else {
            return Step::NeedMore;
        };
        let known = matches!(code, SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST)
            || code >> 16 == PROTOCOL_3_0 >> 16;
        if answer_pending && (!known || !(8..=MAX_STARTUP).contains(&len)) {
            return encrypted(io);
        }
        if !(8..=MAX_STARTUP).contains(&len) {
            return self.fail(format!("startup packet length {}", len as i32), io);
        }
        let Some(msg) = bytes.get(..len as usize) else {
            return Step::NeedMore;
        };
        let emit = (io.ctx.last_ns, &mut *io.out);
        match code {
            SSL_REQUEST | GSSENC_REQUEST => {
                // Answered by one byte; another startup-phase message follows.
                io.session.encryption_request(emit);
            }
            CANCEL_REQUEST => {
                // A connection of its own that only asks to cancel another's query.
                io.stop = Some(Stop::Cancel);
                return Step::Consumed(bytes.len());
            }
            c if c >> 16 == PROTOCOL_3_0 >> 16 => {
                let params = &msg[8..];
                if startup_params(params).is_none() {
                    return self.fail("malformed startup parameters".into(), io);
                }
                let (mut user, mut database) = (None, None);
                let mut rest = params;
                while let Some((name, after)) = cstr(rest) {
                    let Some((value, after)) = cstr(after) else {
                        break;
                    };
                    match name {
                        b"user" => user = Some(value),
                        b"database" => database = Some(value),
                        _ => {}
                    }
                    rest = after;
                }
                io.session.startup(user, database, emit);
                self.phase = Phase::Typed;
            }
            other => {
                // Protocol 2 or something newer: not something we can follow.
                io.errors
                    .push(error(format!("unsupported protocol code {other:#x}")));
                io.stop = Some(Stop::Cancel);
                return Step::Consumed(bytes.len());
            }
        }
        Step::Consumed(len as usize)
    }

    /// `n` uncaptured bytes follow everything parsed so far; see `PgConn::skip`.
    pub(super) fn skip(
        &mut self,
        n: u64,
        unconsumed: usize,
        ctx: &SegmentCtx,
        session: &mut Session,
        out: &mut Vec<L7Event>,
    ) -> bool {
        match self.state {
            State::Stopped => return unconsumed == 0,
            State::Skip { remaining } if unconsumed == 0 && n <= remaining => {
                self.state = match remaining - n {
                    0 => State::Boundary,
                    remaining => State::Skip { remaining },
                };
                return true;
            }
            _ => {}
        }
        session.lose(ctx.last_ns, out);
        self.lose_sync();
        false
    }

    /// Forget where messages start: resume at the next plausible one. A stopped stream
    /// (encrypted, or not ours) stays stopped.
    pub(super) fn lose_sync(&mut self) {
        if let State::Stopped = self.state {
            return;
        }
        self.state = State::Resync;
        self.phase = Phase::Typed;
        self.trusted = false;
        self.group = None;
        self.after_sync = false;
        self.cursor = Cursor::default();
        self.head_scan = HeadScan::default();
        self.resync_hint = 0;
    }
}
