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
use super::{
    ConnParser, Detection, Direction, L7Event, Outcome, ParseError, Protocol, ProtocolId,
    ProtocolOutcome, ProtocolRequest, Role, SegmentCtx,
};
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
    /// [`crate::protocol::Parser::parse`]. Returns bytes consumed (`<= buf.len()`).
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
                            goroutine: s.goroutine,
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

    /// `n` bytes moved in `dir` without being captured; see [`crate::protocol::Parser::skip`].
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
        self.abort_all(ts_ns, out);
        self.mode = Mode::Closed;
    }

    /// Records were lost before the next bytes; see [`crate::protocol::Parser::gap`]. Every
    /// open exchange is aborted (a read-until-close body too: its end may be in the hole),
    /// and both directions look for the next request line / status line, the first of
    /// which may start the next read (a lost record ends at a syscall's boundary, and
    /// messages are mostly written one per syscall). HTTP/1 keeps no state across
    /// exchanges, so it always resynchronises.
    pub fn gap(&mut self, ts_ns: u64, out: &mut Vec<L7Event>) -> bool {
        self.abort_all(ts_ns, out);
        if self.mode == Mode::Http {
            self.requests.gap();
            self.responses.gap();
        }
        true
    }

    /// Ends every open exchange as aborted.
    fn abort_all(&mut self, ts_ns: u64, out: &mut Vec<L7Event>) {
        // Nobody continued the connection as HTTP/2: the upgraded request's response was
        // never seen.
        if let Some(ex) = self.h2c.take().and_then(|up| up.exchange) {
            out.push(L7Event::ExchangeEnd {
                seq: ex.seq,
                end_ns: ts_ns,
                outcome: Outcome::Http1(HttpEnd {
                    outcome: HttpOutcome::Aborted,
                    request_body_size: ex.request_body_size,
                }),
            });
        }
        self.exchanges.abort_all(ts_ns, out);
    }

    /// Exchanges (live or ghost) waiting for a response.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.exchanges.len()
    }
}

impl Protocol for Http1Conn {
    const ID: ProtocolId = ProtocolId::Http1;
    const NAME: &'static str = "http1";
    const DISPLAY: &'static str = "HTTP/1";
    /// The largest head the parser waits for, plus a partial line.
    const MAX_UNCONSUMED: usize = head::MAX_HEAD + 15;
    const SERVER_SIDE_SPANS: bool = true;
    const MULTIPLEXED: bool = false;
    const CARRIES_CONTEXT: bool = true;
    type Request = HttpRequest;
    type Outcome = HttpEnd;

    fn detect(dir: Direction, role: Role, bytes: &[u8]) -> Detection {
        detect(dir, role, bytes)
    }

    fn new(request_dir: Direction) -> Self {
        Http1Conn::new(request_dir)
    }
}

super::parser_by_inherent_methods!(
    Http1Conn,
    /// After a `101` to `h2c`: the HTTP/2 parser, which takes the client's bytes seen
    /// before the 101 (first: they were captured earlier) and every later byte.
    fn successor(
        &mut self,
        ctx: &SegmentCtx,
        out: &mut Vec<L7Event>,
        errors: &mut Vec<ParseError>,
    ) -> Option<ConnParser> {
        let up = self.take_h2c_upgrade()?;
        Some(ConnParser::Http2(super::http2::H2Conn::upgraded(
            self.request_dir,
            up,
            ctx,
            out,
            errors,
        )))
    }
);

/// An HTTP request head, with only the headers the agent uses. Sensitive headers
/// (Authorization, Cookie, ...) are never copied out of the capture buffer.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HttpRequest {
    /// As sent, e.g. "GET".
    pub method: String,
    /// The raw request-target, e.g. "/users/42?x=1" (absolute-form for proxies).
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    /// First `traceparent` header, raw (validated by `span::context`).
    pub traceparent: Option<String>,
    /// All `tracestate` header values joined with ',' (RFC 9110 list semantics), raw.
    pub tracestate: Option<String>,
}

/// What ended an exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpOutcome {
    /// A complete final (non-1xx) response.
    Response {
        status: u16,
        /// 0 for HTTP/1.0, 1 for HTTP/1.1.
        version_minor: u8,
        /// Body bytes (after de-chunking framing: the chunk payload sizes summed).
        response_body_size: u64,
    },
    /// The connection closed (or the parser lost sync) before a complete response arrived.
    Aborted,
}

/// How an HTTP/1 exchange ended, with the request body's size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpEnd {
    pub outcome: HttpOutcome,
    /// Request body bytes seen (0 when none).
    pub request_body_size: u64,
}

impl ProtocolRequest for HttpRequest {
    fn trace_headers(&self) -> (Option<&str>, Option<&str>) {
        (self.traceparent.as_deref(), self.tracestate.as_deref())
    }
}

impl ProtocolOutcome for HttpEnd {
    fn aborted(&self) -> bool {
        self.outcome == HttpOutcome::Aborted
    }
}
