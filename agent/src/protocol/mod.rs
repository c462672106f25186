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

pub mod amqp;
pub mod h2c;
#[doc(hidden)]
pub mod hostile;
pub mod http1;
pub mod http2;
pub mod postgres;
#[cfg(test)]
pub(crate) mod testkit;

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

/// One statement a PostgreSQL client had executed (frontend/backend protocol 3.0). A simple
/// query holding several statements yields one of these per statement.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PgStatement {
    /// The SQL as sent, unsanitised (the span layer sanitises). `None`: executed by name, the
    /// statement was prepared before the agent saw the connection, its text is unknown.
    pub text: Option<String>,
    /// Extended protocol: the prepared statement's name (`""` = unnamed). `None` for simple
    /// queries.
    pub prepared_name: Option<String>,
    /// `database` and `user` from the startup message, when the agent saw it.
    pub database: Option<String>,
    pub user: Option<String>,
}

/// How a PostgreSQL statement ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgOutcome {
    /// CommandComplete: its tag (`SELECT 5`, `INSERT 0 1`, `COPY 3`) and the DataRow count seen.
    Complete { tag: String, rows: u64 },
    /// EmptyQueryResponse.
    Empty,
    /// ErrorResponse: SQLSTATE (`C`) and severity (`V`, else `S`). Never the message: it can
    /// quote values from the statement.
    Error { sqlstate: String, severity: String },
    /// The connection closed, or the parser lost sync, before the result.
    Aborted,
}

/// What happened to a message on an AMQP 0-9-1 channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AmqpOperation {
    /// basic.publish (+ content) sent by this process.
    Publish,
    /// basic.deliver (+ content) received by this process (a consumer).
    Deliver,
    /// basic.get-ok (+ content) received by this process.
    Get,
}

/// One message, complete (method, content header, all body frames).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmqpMessage {
    pub operation: AmqpOperation,
    pub channel: u16,
    /// Exchange named in the method (`""` = the default exchange).
    pub exchange: String,
    pub routing_key: String,
    /// Deliver/Get: the broker's delivery tag on `channel`.
    pub delivery_tag: Option<u64>,
    pub redelivered: bool,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    /// `traceparent` / `tracestate` from the properties' `headers` table (string values).
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// Sum of the body frames' sizes (the content header's body-size).
    pub body_size: u64,
    /// Equal for the published and the delivered copy of one message: a hash of the exchange,
    /// routing key, the content header's property bytes, the body size and the captured body
    /// bytes. Used to link a delivery to its publish on the same node.
    pub fingerprint: u64,
}

/// How a message's span ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AmqpOutcome {
    /// Publish: the last body frame was sent.
    Sent,
    /// Deliver/Get: the consumer acknowledged it (basic.ack, possibly `multiple`).
    Acked,
    /// Deliver/Get: basic.nack or basic.reject.
    Rejected { requeue: bool },
    /// Deliver/Get on a no-ack consumer (or get with no-ack): done on arrival.
    Received,
    /// The channel or connection closed first.
    Aborted,
}

/// One HTTP/2 stream's request (RFC 9113), from its HEADERS (+ CONTINUATION) block.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct H2Request {
    /// HTTP/2 stream id (also the exchange's `seq`).
    pub stream_id: u32,
    /// `:method`, `:path`, `:authority`, `:scheme`; `None` when the header block could not be
    /// decoded (an HPACK reference to a dynamic-table entry the agent never saw).
    pub method: Option<String>,
    pub path: Option<String>,
    pub authority: Option<String>,
    pub scheme: Option<String>,
    pub user_agent: Option<String>,
    /// `content-type`: `application/grpc[+proto|...]` marks a gRPC call.
    pub content_type: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// Header fields the decoder could not resolve (joined mid-connection); counted, never guessed.
    pub unknown_fields: u32,
}

/// How an HTTP/2 stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum H2Outcome {
    /// The response ended (END_STREAM on the last HEADERS/DATA of the response).
    Response {
        /// `:status`; None when undecodable.
        status: Option<u16>,
        /// `grpc-status` from the trailers (or a trailers-only response's headers).
        grpc_status: Option<u32>,
        response_body_size: u64,
    },
    /// RST_STREAM (either side) or GOAWAY covering the stream, with the error code.
    Reset { error_code: u32 },
    /// The connection closed first.
    Aborted,
}

/// The request half of an exchange, per protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Http(HttpRequest),
    Http2(H2Request),
    Postgres(PgStatement),
    Amqp(AmqpMessage),
}

/// How an exchange ended, per protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Http {
        outcome: HttpOutcome,
        /// Request body bytes seen (0 when none).
        request_body_size: u64,
    },
    Postgres(PgOutcome),
    Amqp(AmqpOutcome),
    Http2 {
        outcome: H2Outcome,
        /// DATA bytes the request sent.
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

/// Why a parser gave up on bytes, or cut its work short (counted by the connection layer;
/// never a panic).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not malformed, but beyond a bound on work or memory that protects the agent from
    /// hostile peers: the excess was skipped (or not copied) and parsing goes on.
    #[error("{protocol}: {what} (bound reached, excess skipped)")]
    Limited {
        protocol: &'static str,
        what: &'static str,
    },
    #[error("malformed HTTP/1 {what}: {detail}")]
    Http1 { what: &'static str, detail: String },
    #[error("malformed PostgreSQL {what}: {detail}")]
    Postgres { what: &'static str, detail: String },
    #[error("malformed AMQP {what}: {detail}")]
    Amqp { what: &'static str, detail: String },
    #[error("malformed HTTP/2 {what}: {detail}")]
    Http2 { what: &'static str, detail: String },
}

/// A protocol's signature check and its parser's constructor, tried in order by `detect`.
type DetectFn = fn(Direction, Role, &[u8]) -> Detection;
type NewFn = fn(Direction) -> ConnParser;

/// What [`ConnParser::detect`] concluded.
#[derive(Debug)]
pub enum Detected {
    /// A protocol matched: its parser (boxed: parsers are large, most connections have none).
    Parser(Box<ConnParser>),
    /// Some protocol might still match with more bytes.
    NeedMore,
    /// A TLS record (handshake or alert): the plaintext may come from the TLS library probes.
    Tls,
    /// No protocol we parse.
    Unsupported,
}

/// Whether `bytes` start with a TLS record header (RFC 8446 §5.1: content type handshake (22)
/// or alert (21), legacy version 3.x with x <= 4, a length within the record limit). `None`:
/// too few bytes to tell, but they could be one.
fn looks_like_tls(bytes: &[u8]) -> Option<bool> {
    match bytes {
        [] => None,
        [t, ..] if *t != 22 && *t != 21 => Some(false),
        [_] | [_, _] | [_, _, _] | [_, _, _, _] => match bytes.get(1..3) {
            Some([3, v]) if *v <= 4 => None,
            Some(_) => Some(false),
            None if bytes.get(1).is_none_or(|&b| b == 3) => None,
            None => Some(false),
        },
        [_, 3, v, hi, lo, ..] => Some(*v <= 4 && u16::from_be_bytes([*hi, *lo]) <= 16384 + 2048),
        _ => Some(false),
    }
}

/// The contract every per-connection parser (and [`ConnParser`], which dispatches to them)
/// keeps: what the test replay driver, the fuzz targets and the benchmarks drive. Each
/// parser implements it by delegating to its inherent methods of the same signatures (see
/// [`ConnParser::parse`], [`ConnParser::skip`] and [`ConnParser::close`] for the semantics);
/// the agent itself calls [`ConnParser`] directly, so no dispatch goes through the trait.
pub trait Parser {
    fn parse(
        &mut self,
        dir: Direction,
        buf: &[u8],
        ctx: &SegmentCtx,
        out: &mut Vec<L7Event>,
        errors: &mut Vec<ParseError>,
    ) -> usize;
    fn skip(
        &mut self,
        dir: Direction,
        n: u64,
        unconsumed: usize,
        ctx: &SegmentCtx,
        out: &mut Vec<L7Event>,
    ) -> bool;
    fn close(&mut self, ts_ns: u64, out: &mut Vec<L7Event>);
}

macro_rules! impl_parser {
    ($($t:ty),*) => {$(
        impl Parser for $t {
            fn parse(
                &mut self,
                dir: Direction,
                buf: &[u8],
                ctx: &SegmentCtx,
                out: &mut Vec<L7Event>,
                errors: &mut Vec<ParseError>,
            ) -> usize {
                <$t>::parse(self, dir, buf, ctx, out, errors)
            }
            fn skip(
                &mut self,
                dir: Direction,
                n: u64,
                unconsumed: usize,
                ctx: &SegmentCtx,
                out: &mut Vec<L7Event>,
            ) -> bool {
                <$t>::skip(self, dir, n, unconsumed, ctx, out)
            }
            fn close(&mut self, ts_ns: u64, out: &mut Vec<L7Event>) {
                <$t>::close(self, ts_ns, out)
            }
        }
    )*};
}
impl_parser!(
    http1::Http1Conn,
    http2::H2Conn,
    postgres::PgConn,
    amqp::AmqpConn,
    ConnParser
);

/// The parser attached to one connection.
#[derive(Debug)]
pub enum ConnParser {
    Http1(http1::Http1Conn),
    Http2(http2::H2Conn),
    Postgres(postgres::PgConn),
    Amqp(amqp::AmqpConn),
}

impl ConnParser {
    /// Try each protocol on the first bytes seen in `dir` on a connection with `role`.
    /// Cheap signatures only, cheapest and most common first; the full parse happens in
    /// [`ConnParser::parse`].
    pub fn detect(dir: Direction, role: Role, bytes: &[u8]) -> Detected {
        match looks_like_tls(bytes) {
            Some(true) => return Detected::Tls,
            None => return Detected::NeedMore,
            Some(false) => {}
        }
        let mut need_more = false;
        let tries: [(DetectFn, NewFn); 4] = [
            (http1::detect, |d| {
                ConnParser::Http1(http1::Http1Conn::new(d))
            }),
            (http2::detect, |d| ConnParser::Http2(http2::H2Conn::new(d))),
            (postgres::detect, |d| {
                ConnParser::Postgres(postgres::PgConn::new(d))
            }),
            (amqp::detect, |d| ConnParser::Amqp(amqp::AmqpConn::new(d))),
        ];
        for (detect, make) in tries {
            match detect(dir, role, bytes) {
                Detection::Match { request_dir } => {
                    return Detected::Parser(Box::new(make(request_dir)))
                }
                Detection::NeedMore => need_more = true,
                Detection::NoMatch => {}
            }
        }
        if need_more {
            Detected::NeedMore
        } else {
            Detected::Unsupported
        }
    }

    /// Whether the process on the server side of this protocol gets spans. HTTP servers do;
    /// a database server or message broker reads the same bytes its client sent, and the
    /// client's span already describes the call, so their side is not parsed at all.
    pub fn server_side_spans(&self) -> bool {
        matches!(self, ConnParser::Http1(_) | ConnParser::Http2(_))
    }

    /// Parse as much of `buf` (all unconsumed bytes of `dir`) as possible; returns bytes consumed.
    /// Errors are reported through `errors` (one entry per resynchronisation) and never stop
    /// the parser: it resynchronises by itself. An HTTP/1 parser whose server switched to
    /// HTTP/2 (`Upgrade: h2c`, see [`h2c`]) becomes the HTTP/2 parser here, within the call.
    pub fn parse(
        &mut self,
        dir: Direction,
        buf: &[u8],
        ctx: &SegmentCtx,
        out: &mut Vec<L7Event>,
        errors: &mut Vec<ParseError>,
    ) -> usize {
        match self {
            ConnParser::Http1(p) => {
                let n = p.parse(dir, buf, ctx, out, errors).min(buf.len());
                let Some(up) = p.take_h2c_upgrade() else {
                    return n;
                };
                // The server switched to HTTP/2 (`Upgrade: h2c`, see `h2c`): this parser
                // becomes the HTTP/2 one, which takes the client's bytes seen before the 101
                // (first: they were captured earlier), the rest of `buf`, and all later bytes.
                let mut h2 = http2::H2Conn::upgraded(p.request_dir(), up, ctx, out, errors);
                let m = h2.parse(dir, &buf[n..], ctx, out, errors);
                *self = ConnParser::Http2(h2);
                n + m
            }
            ConnParser::Http2(p) => p.parse(dir, buf, ctx, out, errors),
            ConnParser::Postgres(p) => p.parse(dir, buf, ctx, out, errors),
            ConnParser::Amqp(p) => p.parse(dir, buf, ctx, out, errors),
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
            ConnParser::Http2(p) => p.skip(dir, n, unconsumed, ctx, out),
            ConnParser::Postgres(p) => p.skip(dir, n, unconsumed, ctx, out),
            ConnParser::Amqp(p) => p.skip(dir, n, unconsumed, ctx, out),
        }
    }

    /// The connection closed at `ts_ns`: finish what the close completes (read-until-close
    /// bodies) and abort every exchange still open.
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<L7Event>) {
        match self {
            ConnParser::Http1(p) => p.close(ts_ns, out),
            ConnParser::Http2(p) => p.close(ts_ns, out),
            ConnParser::Postgres(p) => p.close(ts_ns, out),
            ConnParser::Amqp(p) => p.close(ts_ns, out),
        }
    }
}

#[cfg(test)]
mod detect_tests {
    use super::*;

    #[test]
    fn tls_records_are_told_apart_from_every_parsed_protocol() {
        let hello = [22u8, 3, 1, 0x02, 0x00, 1, 0, 1, 0xfc, 3, 3];
        for n in 1..5 {
            assert!(
                looks_like_tls(&hello[..n]).is_none(),
                "prefix {n} undecided"
            );
        }
        assert_eq!(looks_like_tls(&hello), Some(true));
        assert_eq!(looks_like_tls(&[21, 3, 3, 0, 2, 2, 40]), Some(true)); // alert
        assert_eq!(looks_like_tls(&[22, 3, 9, 0, 2]), Some(false)); // no such version
        assert_eq!(looks_like_tls(&[22, 3, 3, 0xff, 0xff]), Some(false)); // too long
        assert_eq!(looks_like_tls(&[22, 2]), Some(false));
        for other in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PRI * HTTP/2.0\r\n",
            b"AMQP\x00\x00\x09\x01",
            &[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f],
        ] {
            assert_eq!(looks_like_tls(other), Some(false), "{other:?}");
        }
        assert!(matches!(
            ConnParser::detect(Direction::Egress, Role::Client, &hello),
            Detected::Tls
        ));
    }
}
