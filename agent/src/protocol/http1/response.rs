//! The response stream: each final response ends the oldest open exchange (RFC 9112 §9.3.2),
//! interim 1xx responses do not (RFC 9110 §15.2), bodies are framed by RFC 9112 §6.3.

use super::super::h2c::H2cUpgrade;
use super::super::{HttpOutcome, L7Event, ParseError, SegmentCtx};
use super::body::{Body, Gap};
use super::detect::{scan_line_starts, status_line, Scan};
use super::exchanges::{Exchanges, Owner, ReqKind};
use super::head::{self, find_head_end, ResponseHead, MAX_HEAD};
use super::Io;

#[derive(Debug)]
enum State {
    /// Expecting a head; `trusted` as for requests (false: found by resync).
    Head { trusted: bool },
    /// Counting the body of `owner`'s final response.
    Body {
        owner: Owner,
        status: u16,
        version_minor: u8,
        size: u64,
        body: Body,
    },
    /// Lost sync: dropping bytes up to a line starting with `HTTP/1.x DDD`.
    Resync,
}

#[derive(Debug)]
pub(super) struct ResponseStream {
    state: State,
    /// Bytes of the pending head already searched for its end.
    scanned: usize,
    /// In resync: bytes from the current position known to hold no head end (see
    /// `RequestStream::resume`).
    resume: usize,
    line_start: bool,
    /// After a gap (records lost): a status line may start at the first byte of any read,
    /// not only after a line end, until resync finds one (see `gap`).
    at_reads: bool,
}

/// What a parse call found besides events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum After {
    /// Still HTTP/1.
    Http,
    /// A 101 or a 2xx to CONNECT: the connection now carries another protocol (RFC 9110
    /// §7.8, §9.3.6); everything after the head is not ours.
    Tunnel,
    /// A 101 to HTTP/2 (`Upgrade: h2c`, RFC 7540 §3.2): the bytes after the head (those not
    /// consumed) are the server's HTTP/2 connection preface and frames.
    H2c(H2cUpgrade),
}

enum Step {
    NeedMore,
    Consumed(usize),
    Tunnel,
    /// The head (this many bytes) switched the connection to HTTP/2.
    H2c(usize, H2cUpgrade),
}

fn error(detail: impl Into<String>) -> ParseError {
    ParseError::Malformed {
        protocol: crate::protocol::ProtocolId::Http1,
        what: "response",
        detail: detail.into(),
    }
}

impl ResponseStream {
    pub(super) fn new() -> Self {
        Self {
            state: State::Head { trusted: true },
            scanned: 0,
            resume: 0,
            line_start: true,
            at_reads: false,
        }
    }

    pub(super) fn parse(&mut self, buf: &[u8], io: &mut Io) -> (usize, After) {
        let mut pos = 0;
        while pos < buf.len() {
            match &mut self.state {
                State::Body {
                    owner,
                    status,
                    version_minor,
                    size,
                    body,
                } => match body.feed(&buf[pos..]) {
                    Ok(fed) => {
                        pos += fed.consumed;
                        *size = size.saturating_add(fed.payload);
                        if fed.done {
                            let outcome = HttpOutcome::Response {
                                status: *status,
                                version_minor: *version_minor,
                                response_body_size: *size,
                            };
                            io.ex.finish(*owner, outcome, io.ctx.last_ns, io.out);
                            self.expect_head(true);
                        }
                    }
                    Err(broken) => {
                        io.errors.push(error(format!("body: {}", broken.detail)));
                        io.ex
                            .finish(*owner, HttpOutcome::Aborted, io.ctx.last_ns, io.out);
                        pos += broken.at;
                        self.state = State::Resync;
                    }
                },
                State::Head { trusted } => {
                    let trusted = *trusted;
                    if trusted && self.scanned == 0 {
                        // Stray empty lines between messages are harmless: skip them.
                        while pos < buf.len() && matches!(buf[pos], b'\r' | b'\n') {
                            pos += 1;
                        }
                        if pos == buf.len() {
                            break;
                        }
                    }
                    match self.head(&buf[pos..], trusted, io) {
                        Step::NeedMore => break,
                        Step::Consumed(n) => pos += n,
                        Step::Tunnel => return (buf.len(), After::Tunnel),
                        Step::H2c(n, up) => return (pos + n, After::H2c(up)),
                    }
                }
                State::Resync => {
                    let line_start = if pos == 0 {
                        self.line_start || self.at_reads
                    } else {
                        buf[pos - 1] == b'\n'
                    };
                    match scan_line_starts(buf, pos, line_start, status_line) {
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
        if pos > 0 {
            self.line_start = buf[pos - 1] == b'\n';
        }
        (pos, After::Http)
    }

    fn expect_head(&mut self, trusted: bool) {
        self.state = State::Head { trusted };
        self.scanned = 0;
        self.resume = 0;
    }

    fn head(&mut self, bytes: &[u8], trusted: bool, io: &mut Io) -> Step {
        if !head::response_prefix_plausible(bytes) {
            return self.fail("not a status line".into(), trusted, 1, io);
        }
        let Some(end) = find_head_end(bytes, &mut self.scanned) else {
            if bytes.len() < MAX_HEAD {
                return Step::NeedMore;
            }
            return self.fail(format!("head exceeds {MAX_HEAD} bytes"), trusted, 1, io);
        };
        let h = match head::parse_response(&bytes[..end]) {
            Ok(h) => h,
            Err(detail) => return self.fail(detail, trusted, 1, io),
        };
        // In sync again.
        self.at_reads = false;
        let (owner, kind) = io.ex.next_owner();
        let done = |size| HttpOutcome::Response {
            status: h.status,
            version_minor: h.version_minor,
            response_body_size: size,
        };
        match h.status {
            101 => {
                // The server names what it switches to (RFC 9110 §15.2.2 requires `Upgrade` in
                // a 101); without it, what the request offered.
                let offer = io.ex.h2c_offer(owner);
                if h.upgrade_h2c.unwrap_or(offer.is_some()) {
                    let settings = offer.map(|o| o.settings.clone()).unwrap_or_default();
                    let exchange = io.ex.take_upgraded(owner);
                    return Step::H2c(
                        end,
                        H2cUpgrade {
                            exchange,
                            settings,
                            http1_seqs: io.ex.seqs(),
                            ..H2cUpgrade::default()
                        },
                    );
                }
                io.ex.finish(owner, done(0), io.ctx.last_ns, io.out);
                return Step::Tunnel;
            }
            // Interim: the final response to the same request follows (RFC 9110 §15.2).
            100..=199 => {
                self.expect_head(true);
                return Step::Consumed(end);
            }
            200..=299 if kind == ReqKind::Connect => {
                io.ex.finish(owner, done(0), io.ctx.last_ns, io.out);
                return Step::Tunnel;
            }
            _ => {}
        }
        match response_body(&h, kind) {
            Ok(None) => {
                io.ex.finish(owner, done(0), io.ctx.last_ns, io.out);
                self.expect_head(true);
            }
            Ok(Some(body)) => {
                io.ex.responding(owner);
                self.state = State::Body {
                    owner,
                    status: h.status,
                    version_minor: h.version_minor,
                    size: 0,
                    body,
                };
                self.scanned = 0;
            }
            Err(detail) => return self.fail(detail.into(), trusted, end, io),
        }
        Step::Consumed(end)
    }

    /// Give up on the head at hand and resync after `skip` bytes. The response it began is
    /// lost, so the oldest exchange is aborted rather than risk pairing a later response with
    /// it; a head that was only a resync guess was already paid for when sync was lost.
    fn fail(&mut self, detail: String, trusted: bool, skip: usize, io: &mut Io) -> Step {
        if trusted {
            io.errors.push(error(detail));
            io.ex.abort_next(io.ctx.last_ns, io.out);
        }
        self.state = State::Resync;
        // As for requests: what the search learnt holds for a head resync finds after `skip`.
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
        if let State::Body {
            owner,
            status,
            version_minor,
            size,
            body,
        } = &mut self.state
        {
            let outcome = |size| HttpOutcome::Response {
                status: *status,
                version_minor: *version_minor,
                response_body_size: size,
            };
            match (unconsumed, body.gap(n)) {
                (0, Gap::Inside { done }) => {
                    *size = size.saturating_add(n);
                    if done {
                        ex.finish(*owner, outcome(*size), ctx.last_ns, out);
                        self.expect_head(true);
                    }
                    return true;
                }
                (0, Gap::Overran { payload }) => {
                    // This response ended inside the gap; the next one began in it.
                    ex.finish(
                        *owner,
                        outcome(size.saturating_add(payload)),
                        ctx.last_ns,
                        out,
                    );
                    ex.abort_next(ctx.last_ns, out);
                }
                _ => ex.finish(*owner, HttpOutcome::Aborted, ctx.last_ns, out),
            }
        } else {
            // A head (or the bytes between messages) went uncaptured.
            ex.abort_next(ctx.last_ns, out);
        }
        self.state = State::Resync;
        self.scanned = 0;
        self.resume = 0;
        self.line_start = false;
        false
    }

    /// Records were lost before the next bytes (see `Http1Conn::gap`; the exchanges were
    /// aborted there): the next bytes are searched for a status line, from their first byte.
    pub(super) fn gap(&mut self) {
        self.state = State::Resync;
        self.scanned = 0;
        self.resume = 0;
        self.line_start = true;
        // As for requests: the next response most likely starts a read.
        self.at_reads = true;
    }

    /// The connection closed: a read-until-close body is complete now (RFC 9112 §6.3 item 8).
    pub(super) fn close(&mut self, ts_ns: u64, ex: &mut Exchanges, out: &mut Vec<L7Event>) {
        if let State::Body {
            owner,
            status,
            version_minor,
            size,
            body: Body::UntilClose,
        } = self.state
        {
            let outcome = HttpOutcome::Response {
                status,
                version_minor,
                response_body_size: size,
            };
            ex.finish(owner, outcome, ts_ns, out);
        }
    }
}

/// Response body length (RFC 9112 §6.3); the 1xx, 101 and CONNECT cases are handled before.
fn response_body(h: &ResponseHead, kind: ReqKind) -> Result<Option<Body>, &'static str> {
    // Item 1: responses to HEAD, and 204 and 304, end with their head.
    if kind == ReqKind::Head || h.status == 204 || h.status == 304 {
        return Ok(None);
    }
    let f = &h.framing;
    if f.transfer_encoding {
        // Item 4: chunked must be final, else the body runs to the close; §6.1: in
        // HTTP/1.0 the framing is faulty, so again only the close delimits it.
        return Ok(Some(if f.chunked_last && h.version_minor == 1 {
            Body::chunked()
        } else {
            Body::UntilClose
        }));
    }
    match f.content_length {
        Some(Ok(0)) => Ok(None),
        Some(Ok(n)) => Ok(Some(Body::Length { remaining: n })),
        // Item 5: an invalid length is unrecoverable.
        Some(Err(e)) => Err(e),
        // Item 8.
        None => Ok(Some(Body::UntilClose)),
    }
}
