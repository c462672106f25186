//! The request stream: heads become `RequestStart`s, bodies are counted (RFC 9112 §6.3
//! items 3–7 for requests), garbage is skipped up to the next plausible request line.

use super::super::{h2c, ParseError, SegmentCtx};
use super::body::{Body, Gap};
use super::detect::{known_method_prefix, scan_line_starts, Scan};
use super::exchanges::{Exchanges, ReqKind, Start};
use super::head::{self, find_head_end, FramingFields, MAX_HEAD};
use super::{Io, L7Event};

#[derive(Debug)]
enum State {
    /// Expecting a head. `trusted`: at a known message boundary (connection start or after a
    /// complete message) rather than at a line that merely looked like a request after resync.
    Head { trusted: bool },
    /// Counting the body of exchange `id`.
    Body { id: u64, body: Body },
    /// Lost sync: dropping bytes up to a line starting with `METHOD SP` (known method).
    Resync,
}

/// Remembers where the bytes left unconsumed by the previous call came from, so a head that
/// arrives over several reads starts at its first read.
#[derive(Debug, Default)]
struct Cursor {
    /// How many bytes at the front of the next `buf` are left over from earlier calls.
    carried: usize,
    /// The read that delivered the first of them.
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
        // When carried bytes stay unconsumed, the oldest one came with the remembered read
        // (approximately: carried bytes can span reads, but only a partial head is ever
        // carried, and it is carried whole).
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
pub(super) struct RequestStream {
    state: State,
    cursor: Cursor,
    /// Bytes of the pending head already searched for its end.
    scanned: usize,
    /// In resync: how many bytes from the current position are known to hold no head end
    /// (searched for the head just given up on), so the candidate resync finds resumes its
    /// search there (see `head::find_head_end`).
    resume: usize,
    /// The byte before the next `buf` ended a line (resync looks only at line starts).
    line_start: bool,
    /// After a gap (records lost): a request may start at the first byte of any read, not
    /// only after a line end, until resync finds one (see `gap`).
    at_reads: bool,
    /// A copy of the bytes left unconsumed because they start like the HTTP/2 preface after
    /// an `Upgrade: h2c` request (see `parse`): what the HTTP/2 parser gets at the switch.
    held: Vec<u8>,
}

enum Step {
    NeedMore,
    Consumed(usize),
}

fn error(detail: impl Into<String>) -> ParseError {
    ParseError::Malformed {
        protocol: crate::protocol::ProtocolId::Http1,
        what: "request",
        detail: detail.into(),
    }
}

impl RequestStream {
    pub(super) fn new() -> Self {
        Self {
            state: State::Head { trusted: true },
            cursor: Cursor::default(),
            scanned: 0,
            resume: 0,
            line_start: true,
            at_reads: false,
            held: Vec::new(),
        }
    }

    /// The bytes held back for HTTP/2 (see `parse`), and where the first of them came from.
    pub(super) fn take_held(&mut self) -> (Vec<u8>, Option<Start>) {
        let start = self.cursor.carried_start.filter(|_| !self.held.is_empty());
        (std::mem::take(&mut self.held), start)
    }

    pub(super) fn parse(&mut self, buf: &[u8], io: &mut Io) -> usize {
        let mut pos = 0;
        let mut holding = false;
        while pos < buf.len() {
            match &mut self.state {
                State::Body { id, body } => match body.feed(&buf[pos..]) {
                    Ok(fed) => {
                        io.ex.add_request_body(*id, fed.payload);
                        pos += fed.consumed;
                        if fed.done {
                            self.expect_head(true);
                        }
                    }
                    Err(broken) => {
                        io.ex.add_request_body(*id, broken.payload);
                        io.errors.push(error(format!("body: {}", broken.detail)));
                        pos += broken.at;
                        // The exchange stays open: its response will still come.
                        self.state = State::Resync;
                    }
                },
                State::Head { trusted } => {
                    let trusted = *trusted;
                    if trusted && self.scanned == 0 {
                        // RFC 9112 §2.2: ignore empty lines before a request-line.
                        while pos < buf.len() && matches!(buf[pos], b'\r' | b'\n') {
                            pos += 1;
                        }
                        if pos == buf.len() {
                            break;
                        }
                        // RFC 7540 §3.2: after an `Upgrade: h2c` request the client sends the
                        // HTTP/2 preface once it has read the 101. The directions are captured
                        // separately, so the preface can show up before the 101 does: leave it
                        // unconsumed (bounded like a head) for the HTTP/2 parser the 101 brings,
                        // which gets a copy of them at once (the server's next frames may
                        // answer requests in them) and skips them when they are passed again.
                        if io.ex.awaiting_h2c()
                            && h2c::starts_like_preface(&buf[pos..])
                            && buf.len() - pos <= MAX_HEAD
                        {
                            holding = true;
                            break;
                        }
                    }
                    let start = self.cursor.start_at(pos, io.ctx);
                    match self.head(&buf[pos..], start, trusted, io) {
                        Step::NeedMore => break,
                        Step::Consumed(n) => pos += n,
                    }
                }
                State::Resync => {
                    let line_start = if pos == 0 {
                        self.line_start || self.at_reads
                    } else {
                        buf[pos - 1] == b'\n'
                    };
                    match scan_line_starts(buf, pos, line_start, known_method_prefix) {
                        Scan::Found(at) => {
                            let resume = self.resume.saturating_sub(at - pos);
                            pos = at;
                            self.expect_head(false);
                            self.scanned = resume;
                        }
                        Scan::Partial(at) => {
                            self.resume = self.resume.saturating_sub(at - pos);
                            pos = at;
                            break;
                        }
                        Scan::Nothing => {
                            self.resume = 0;
                            pos = buf.len();
                        }
                    }
                }
            }
        }
        if !holding {
            self.held.clear();
        } else if pos == 0 && self.held.len() <= buf.len() {
            // The caller passes the held bytes again, in front of the new ones: copy only
            // those (a preface trickling in byte by byte costs linear time, not quadratic).
            let new = &buf[self.held.len()..];
            self.held.extend_from_slice(new);
        } else {
            self.held.clear();
            self.held.extend_from_slice(&buf[pos..]);
        }
        self.cursor.finish(buf.len(), pos, io.ctx);
        if pos > 0 {
            self.line_start = buf[pos - 1] == b'\n';
        }
        pos
    }

    fn expect_head(&mut self, trusted: bool) {
        self.state = State::Head { trusted };
        self.scanned = 0;
        self.resume = 0;
    }

    /// Try to parse the head at the start of `bytes`.
    fn head(&mut self, bytes: &[u8], start: Start, trusted: bool, io: &mut Io) -> Step {
        if !head::request_prefix_plausible(bytes) {
            return self.fail(bytes, "not a request line".into(), trusted, 1, io);
        }
        let Some(end) = find_head_end(bytes, &mut self.scanned) else {
            if bytes.len() < MAX_HEAD {
                return Step::NeedMore;
            }
            return self.fail(
                bytes,
                format!("head exceeds {MAX_HEAD} bytes"),
                trusted,
                1,
                io,
            );
        };
        let parsed = match head::parse_request(&bytes[..end]) {
            Ok(parsed) => parsed,
            Err(detail) => return self.fail(bytes, detail, trusted, 1, io),
        };
        // In sync again.
        self.at_reads = false;
        let body = match request_body(&parsed.framing, parsed.request.version_minor) {
            Ok(body) => body,
            // Broken framing: the body's extent is unknown; resync in what follows the head.
            Err(detail) => return self.fail(bytes, detail.into(), trusted, end, io),
        };
        let kind = ReqKind::of(&parsed.request.method);
        let id = io.ex.open(
            kind,
            start,
            parsed.request,
            parsed.h2c,
            io.ctx.last_ns,
            io.out,
        );
        match body {
            Some(body) => {
                self.state = State::Body { id, body };
                self.scanned = 0;
            }
            None => self.expect_head(true),
        }
        Step::Consumed(end)
    }

    /// Give up on the head at the start of `bytes` and resync after `skip` bytes. At a message
    /// boundary this is an error, and when the head starts with a genuine request line the
    /// server will answer it (typically 400): a ghost exchange keeps that answer from being
    /// paired with a later request. A head that was only a resync guess is dropped silently.
    fn fail(
        &mut self,
        bytes: &[u8],
        detail: String,
        trusted: bool,
        skip: usize,
        io: &mut Io,
    ) -> Step {
        if trusted {
            io.errors.push(error(detail));
            if head::is_request_line(bytes) {
                io.ex.ghost(io.ctx.last_ns, io.out);
            }
        }
        self.state = State::Resync;
        // The search ended at the head's end (its last LF: `scanned - 1`) or found none in
        // `scanned` bytes; a line after `skip` that resync takes for a head has the same end.
        self.resume = self.scanned.saturating_sub(skip + 1);
        self.scanned = 0;
        Step::Consumed(skip)
    }

    /// `n` uncaptured bytes follow everything parsed so far; see `Http1Conn::skip`.
    pub(super) fn skip(
        &mut self,
        n: u64,
        unconsumed: usize,
        ctx: &SegmentCtx,
        ex: &mut Exchanges,
        out: &mut Vec<L7Event>,
    ) -> bool {
        if unconsumed == 0 {
            if let State::Body { id, body } = &mut self.state {
                match body.gap(n) {
                    Gap::Inside { done } => {
                        ex.add_request_body(*id, n);
                        if done {
                            self.expect_head(true);
                        }
                        return true;
                    }
                    Gap::Overran { payload } => {
                        // The body ended inside the gap; the rest of the gap began a request.
                        ex.add_request_body(*id, payload);
                        self.expect_head(true);
                    }
                    Gap::Lost => {}
                }
            }
        }
        if let State::Head { trusted: true } = self.state {
            // A request's first bytes went uncaptured: it exists and will be answered.
            ex.ghost(ctx.last_ns, out);
        }
        // Bytes right after a gap are mid-line as far as we know.
        self.lose_sync(false);
        false
    }

    /// Records were lost before the next bytes (see `Http1Conn::gap`): whatever was being
    /// parsed is gone; the next bytes are searched for a request line, from their first byte.
    /// Writes mostly hold whole messages, so after lost records the next request most likely
    /// starts a read; the bytes before it (a body's tail) rarely end in a newline.
    pub(super) fn gap(&mut self) {
        self.lose_sync(true);
        self.at_reads = true;
    }

    /// Resync from the next bytes, which start a line or not. Unconsumed bytes are dropped by
    /// the caller (a gap that is not absorbed).
    fn lose_sync(&mut self, line_start: bool) {
        self.state = State::Resync;
        self.scanned = 0;
        self.resume = 0;
        self.cursor = Cursor::default();
        self.held.clear();
        self.line_start = line_start;
    }
}

/// Request body length (RFC 9112 §6.3): chunked if it is the final transfer coding, else
/// Content-Length, else none. `Err` for framing a server would reject with 400.
fn request_body(f: &FramingFields, version_minor: u8) -> Result<Option<Body>, &'static str> {
    if f.transfer_encoding {
        // §6.3 item 4: no final chunked in a request means its length is unknowable;
        // §6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing.
        if !f.chunked_last {
            return Err("Transfer-Encoding without final chunked");
        }
        if version_minor == 0 {
            return Err("Transfer-Encoding in an HTTP/1.0 request");
        }
        // §6.3 item 3: Transfer-Encoding overrides any Content-Length.
        return Ok(Some(Body::chunked()));
    }
    match f.content_length {
        None | Some(Ok(0)) => Ok(None),
        Some(Ok(n)) => Ok(Some(Body::Length { remaining: n })),
        Some(Err(e)) => Err(e),
    }
}
