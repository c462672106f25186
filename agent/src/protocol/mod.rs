//! Application protocols: detection and parsing of the byte streams of one connection.
//!
//! The connection layer (`crate::conn`) owns reassembly: per direction it keeps the bytes a
//! parser has not consumed yet and hands them over as one contiguous slice together with a
//! [`SegmentCtx`] describing the syscall that delivered the newest bytes. A parser:
//!
//! - consumes what it can and returns how many bytes it consumed ("need more bytes" is simply
//!   consuming less than it was given; it is never an error);
//! - is told about bytes the kernel did not capture with [`ConnParser::skip`] and says whether
//!   it could account for them (inside a body) or must resynchronise;
//! - emits protocol-neutral [`L7Event`]s: a request started (so span ids can be assigned while
//!   the handling thread is still working) and an exchange ended.
//!
//! Parsers are synchronous, do no I/O, never panic on any input, and keep all state that spans
//! several reads inside themselves. They are registered in the [`ConnParser`] enum: no `dyn`.

pub mod http1;

pub use agent_common::{Direction, Role};

/// The syscall that delivered the newest bytes of a direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentCtx {
    /// Thread that made the syscall.
    pub tid: u32,
    /// When the first of these bytes moved (CLOCK_MONOTONIC ns): syscall entry for egress
    /// (the bytes existed when the write began), syscall exit for ingress (they existed only
    /// once the read returned).
    pub first_ns: u64,
    /// When the syscall returned (CLOCK_MONOTONIC ns): the moment the last byte had moved.
    pub last_ns: u64,
}

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

/// The request half of an exchange, per protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Http(HttpRequest),
}

/// How an exchange ended, per protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Http {
        outcome: HttpOutcome,
        /// Request body bytes seen (0 when none).
        request_body_size: u64,
    },
}

/// What parsers report to the span layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L7Event {
    /// A complete request head was parsed.
    RequestStart {
        /// Per-connection sequence number, 0-based, in request order. Pairs with `ExchangeEnd`.
        seq: u64,
        /// Thread that sent (client) or received (server) the request's first byte.
        tid: u32,
        /// `first_ns` of the first segment that held any byte of this request.
        start_ns: u64,
        request: Request,
    },
    /// The exchange `seq` is over: its response is complete or it was abandoned.
    ExchangeEnd {
        seq: u64,
        /// `last_ns` of the segment that held the response's last byte (for `Aborted`: the
        /// time the parser gave up).
        end_ns: u64,
        outcome: Outcome,
    },
}

/// Result of looking at the first bytes of a direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detection {
    /// It is this protocol, and requests flow in the given direction.
    Match { request_dir: Direction },
    /// Can't tell yet.
    NeedMore,
    /// Not this protocol.
    NoMatch,
}

/// Why a parser gave up on bytes (counted by the connection layer; never a panic).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed HTTP/1 {what}: {detail}")]
    Http1 { what: &'static str, detail: String },
}

/// The parser attached to one connection.
#[derive(Debug)]
pub enum ConnParser {
    Http1(http1::Http1Conn),
}

impl ConnParser {
    /// Try each protocol on the first bytes seen in `dir` on a connection with `role`.
    /// Cheap signatures only: the full parse happens in [`ConnParser::parse`].
    pub fn detect(dir: Direction, role: Role, bytes: &[u8]) -> Result<Option<ConnParser>, ()> {
        match http1::detect(dir, role, bytes) {
            Detection::Match { request_dir } => {
                Ok(Some(ConnParser::Http1(http1::Http1Conn::new(request_dir))))
            }
            Detection::NeedMore => Ok(None),
            Detection::NoMatch => Err(()),
        }
    }

    /// Parse as much of `buf` (all unconsumed bytes of `dir`) as possible; returns bytes consumed.
    /// Errors are reported through `errors` (one entry per resynchronisation) and never stop
    /// the parser: it resynchronises by itself.
    pub fn parse(
        &mut self,
        dir: Direction,
        buf: &[u8],
        ctx: &SegmentCtx,
        out: &mut Vec<L7Event>,
        errors: &mut Vec<ParseError>,
    ) -> usize {
        match self {
            ConnParser::Http1(p) => p.parse(dir, buf, ctx, out, errors),
        }
    }

    /// `n` bytes moved in `dir` after everything passed to `parse` but were not captured.
    /// `unconsumed` is how many bytes of that direction `parse` left unconsumed. Returns true
    /// when the parser accounted for the gap (e.g. it was inside a body); false when it could
    /// not and has resynchronised: the caller then drops the unconsumed bytes of `dir`.
    pub fn skip(
        &mut self,
        dir: Direction,
        n: u64,
        unconsumed: usize,
        ctx: &SegmentCtx,
        out: &mut Vec<L7Event>,
    ) -> bool {
        match self {
            ConnParser::Http1(p) => p.skip(dir, n, unconsumed, ctx, out),
        }
    }

    /// The connection closed at `ts_ns`: finish what the close completes (read-until-close
    /// bodies) and abort every exchange still open.
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<L7Event>) {
        match self {
            ConnParser::Http1(p) => p.close(ts_ns, out),
        }
    }
}
