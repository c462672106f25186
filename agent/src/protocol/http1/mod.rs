//! HTTP/1.0 and HTTP/1.1 (RFC 9112): detection, message framing, and request/response pairing
//! for one connection.
//!
//! This module owns turning the two reassembled byte streams of a connection into
//! `RequestStart` / `ExchangeEnd` events: finding where each message starts and ends (heads,
//! Content-Length and chunked bodies, read-until-close, 1xx interim responses, HEAD/204/304,
//! upgrades), pairing responses with requests first-in first-out (keep-alive and pipelining),
//! and recovering from capture gaps and garbage without ever pairing a response with the wrong
//! request. It copies out only the request fields the span layer needs (method, target,
//! version, Host, User-Agent, traceparent, tracestate); bodies are counted, never kept.
//!
//! It does not own: reassembly and the per-direction buffers (`crate::conn`), trace-context
//! validation (`crate::span::context`), span construction, HTTP/2 (which it refuses to
//! detect; after a `101` to `h2c` it stops and hands over, see `super::h2c`) or TLS. Heads
//! are parsed by `httparse`; everything around them is here:
//!
//! - `detect`: signatures for protocol detection and resync;
//! - `head`: head boundaries, `httparse`, header extraction;
//! - `body`: Content-Length and the streaming chunked decoder;
//! - `exchanges`: the bounded FIFO of requests awaiting a response;
//! - `request` / `response`: the per-direction state machines.
//!
//! Work is linear in the bytes received, whatever a peer sends: a head arriving over many
//! reads is searched for its end once (`head::find_head_end` resumes), and so is a head given
//! up on (longer than `head::MAX_HEAD`, or unparsable): the line resync finds next resumes the
//! search where it stopped, rather than searching the same bytes again for every line in them.
//! Chunked bodies are decoded a byte at a time without a buffer (`body`), chunk-size lines
//! and trailers are bounded, and at most `exchanges::MAX_PENDING` requests wait for answers.

mod body;
mod detect;
mod exchanges;
mod head;
mod request;
mod response;
#[cfg(test)]
mod tests;

use super::h2c::H2cUpgrade;
use super::{Detection, Direction, HttpOutcome, L7Event, Outcome, ParseError, Role, SegmentCtx};
use exchanges::Exchanges;
use request::RequestStream;
use response::{After, ResponseStream};

/// Does this direction start like HTTP/1, and which way do requests flow?
///
/// `Role::Client` sends requests (egress), `Role::Server` receives them (ingress); with
/// `Role::Unknown` a request line means requests flow in `dir`, a status line that they flow
/// the other way. A partial signature is `NeedMore`; anything else, including the HTTP/2
/// preface, TLS and binary protocols, is `NoMatch`.
pub fn detect(dir: Direction, role: Role, bytes: &[u8]) -> Detection {
    detect::detect(dir, role, bytes)
}

/// What a parse step reports to: the read being parsed, the open exchanges, and the
/// caller's event and error lists.
struct Io<'a> {
    ctx: &'a SegmentCtx,
    ex: &'a mut Exchanges,
    out: &'a mut Vec<L7Event>,
    errors: &'a mut Vec<ParseError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Http,
    /// After 101 Switching Protocols or a successful CONNECT: bytes are ignored (after a
    /// switch to h2c, the HTTP/2 parser takes them: see [`Http1Conn::take_h2c_upgrade`]).
    Tunnel,
    /// `close` was called: nothing more is reported.
    Closed,
}

/// HTTP/1 parser state of one connection.
#[derive(Debug)]
pub struct Http1Conn {
    request_dir: Direction,
    mode: Mode,
    requests: RequestStream,
    responses: ResponseStream,
    exchanges: Exchanges,
    /// The server switched to HTTP/2; not yet taken by the caller.
    h2c: Option<H2cUpgrade>,
}

impl Http1Conn {
    /// A parser for a connection whose requests flow in `request_dir`.
    pub fn new(request_dir: Direction) -> Self {
        Self {
            request_dir,
            mode: Mode::Http,
            requests: RequestStream::new(),
            responses: ResponseStream::new(),
            exchanges: Exchanges::default(),
            h2c: None,
        }
    }

    /// Requests flow in this direction.
    pub fn request_dir(&self) -> Direction {
        self.request_dir
    }

    /// The server answered `101` with `Upgrade: h2c`: the connection is HTTP/2 from the byte
    /// after that head (the bytes `parse` left unconsumed in that call), and the upgrade
    /// request's exchange is to be ended by stream 1's response. Taken once; the caller
    /// continues the connection with `H2Conn::upgraded`.
    pub fn take_h2c_upgrade(&mut self) -> Option<H2cUpgrade> {
        self.h2c.take()
    }

    fn is_request_dir(&self, dir: Direction) -> Option<bool> {
        match dir {
            Direction::None => None,
            d => Some(d == self.request_dir),
        }
    }

    /// Consume what can be consumed of `buf` (all unconsumed bytes of `dir`); see
    /// [`crate::protocol::ConnParser::parse`]. Returns bytes consumed (`<= buf.len()`).
    pub fn parse(
        &mut self,
        dir: Direction,
        buf: &[u8],
        ctx: &SegmentCtx,
        out: &mut Vec<L7Event>,
        errors: &mut Vec<ParseError>,
    ) -> usize {
        if self.mode != Mode::Http {
            return buf.len();
        }
        match self.is_request_dir(dir) {
            None => buf.len(),
            Some(true) => {
                let mut io = Io {
                    ctx,
                    ex: &mut self.exchanges,
                    out,
                    errors,
                };
                self.requests.parse(buf, &mut io)
            }
            Some(false) => {
                let mut io = Io {
                    ctx,
                    ex: &mut self.exchanges,
                    out,
                    errors,
                };
                let (consumed, after) = self.responses.parse(buf, &mut io);
                match after {
                    After::Http => {}
                    After::Tunnel => self.tunnel(ctx.last_ns, out),
                    After::H2c(mut up) => {
                        self.tunnel(ctx.last_ns, out);
                        let (bytes, start) = self.requests.take_held();
                        up.client_bytes = bytes;
                        up.client_ctx = start.map(|s| SegmentCtx {
                            tid: s.tid,
                            first_ns: s.first_ns,
                            last_ns: s.first_ns,
                        });
                        self.h2c = Some(up);
                    }
                }
                consumed
            }
        }
    }

    /// The connection left HTTP/1: requests queued behind the upgrade will get no HTTP/1
    /// response.
    fn tunnel(&mut self, now_ns: u64, out: &mut Vec<L7Event>) {
        self.exchanges.abort_all(now_ns, out);
        self.mode = Mode::Tunnel;
    }

    /// `n` bytes moved in `dir` without being captured; see [`crate::protocol::ConnParser::skip`].
    /// True when they fell inside a body whose framing absorbs them.
    pub fn skip(
        &mut self,
        dir: Direction,
        n: u64,
        unconsumed: usize,
        ctx: &SegmentCtx,
        out: &mut Vec<L7Event>,
    ) -> bool {
        if n == 0 {
            // Nothing was lost: the stream simply continues.
            return true;
        }
        if self.mode != Mode::Http {
            // Nothing is parsed any more; bytes held back before the tunnel opened (the start
            // of a pipelined head) cannot continue across the gap, so let them be dropped.
            return unconsumed == 0;
        }
        match self.is_request_dir(dir) {
            None => true,
            Some(true) => self
                .requests
                .skip(n, unconsumed, ctx, &mut self.exchanges, out),
            Some(false) => self
                .responses
                .skip(n, unconsumed, ctx, &mut self.exchanges, out),
        }
    }

    /// The connection closed at `ts_ns`: a read-until-close response completes, every other
    /// open exchange is aborted.
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<L7Event>) {
        if self.mode == Mode::Http {
            self.responses.close(ts_ns, &mut self.exchanges, out);
        }
        // Nobody continued the connection as HTTP/2: the upgraded request's response was
        // never seen.
        if let Some(ex) = self.h2c.take().and_then(|up| up.exchange) {
            out.push(L7Event::ExchangeEnd {
                seq: ex.seq,
                end_ns: ts_ns,
                outcome: Outcome::Http {
                    outcome: HttpOutcome::Aborted,
                    request_body_size: ex.request_body_size,
                },
            });
        }
        self.exchanges.abort_all(ts_ns, out);
        self.mode = Mode::Closed;
    }

    /// Exchanges (live or ghost) waiting for a response.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.exchanges.len()
    }
}
