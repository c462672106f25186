//! Application protocols: detection and parsing of the byte streams of one connection.
//!
//! The connection layer (`crate::conn`) owns reassembly: per direction it keeps the bytes a
//! parser has not consumed yet and hands them over as one contiguous slice together with a
//! [`SegmentCtx`] describing the syscall that delivered the newest bytes. A parser keeps the
//! [`Parser`] contract:
//!
//! - it consumes what it can and returns how many bytes it consumed ("need more bytes" is
//!   simply consuming less than it was given; it is never an error);
//! - it is told about bytes the kernel did not capture with [`Parser::skip`] and says whether
//!   it could account for them (inside a body) or must resynchronise;
//! - it is told about records the kernel could not deliver at all (ring buffer full, an
//!   unknown number of bytes in either direction) with [`Parser::gap`]: it ends what was in
//!   flight as aborted and resynchronises, or says it cannot;
//! - it emits protocol-neutral [`L7Event`]s: a request started (so span ids can be assigned
//!   while the handling thread is still working) and an exchange ended, carrying its
//!   protocol's own request and outcome types inside [`Request`] and [`Outcome`];
//! - it reports what it could not parse as [`ParseError`]s naming the protocol.
//!
//! Parsers are synchronous, do no I/O, never panic on any input, and keep all state that spans
//! several reads inside themselves. This module depends on nothing downstream of it (spans,
//! export, enrichment), so it can be driven alone by the tests, the fuzz targets and the
//! benchmarks.
//!
//! # Adding a protocol
//!
//! A protocol is one folder here: its parser type implements [`Protocol`] (name, detection,
//! constructor, bounds, its request and outcome types) and [`Parser`], and its request and
//! outcome types implement [`ProtocolRequest`] and [`ProtocolOutcome`]. One line in the
//! registry below ([`protocols!`]) then gives it a [`ProtocolId`], a variant of [`Request`],
//! [`Outcome`] and [`ConnParser`], a place in detection order and its labelled counters;
//! the span stage adds one function describing its span (see `crate::span::builder`).
//! Dispatch is static: [`ConnParser`] is an enum, no `dyn`.

pub mod amqp;
pub mod h2c;
#[doc(hidden)]
pub mod hostile;
pub mod http1;
pub mod http2;
pub mod postgres;
mod set;
#[cfg(test)]
pub(crate) mod testkit;

pub use agent_common::{Direction, Role};
pub use amqp::{AmqpMessage, AmqpOperation, AmqpOutcome};
pub use http1::{HttpEnd, HttpOutcome, HttpRequest};
pub use http2::{H2End, H2Outcome, H2Request};
pub use postgres::{PgOutcome, PgStatement};
pub use set::ProtocolSet;

/// The syscall that delivered the newest bytes of a direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentCtx {
    /// Thread that made the syscall.
    pub tid: u32,
    /// For a Go program: the goroutine the bytes were moved for (`DataEvent::goroutine`);
    /// 0 when not known.
    pub goroutine: u64,
    /// When the first of these bytes moved (CLOCK_MONOTONIC ns): syscall entry for egress
    /// (the bytes existed when the write began), syscall exit for ingress (they existed only
    /// once the read returned).
    pub first_ns: u64,
    /// When the syscall returned (CLOCK_MONOTONIC ns): the moment the last byte had moved.
    pub last_ns: u64,
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
        /// The goroutine those bytes were moved for (Go programs; 0 when not known).
        goroutine: u64,
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

/// The contract of one connection's parser, kept by every protocol's parser and by
/// [`ConnParser`], which dispatches to them. This is what the connection layer, the test
/// replay driver, the fuzz targets and the benchmarks drive.
pub trait Parser {
    /// Parse as much of `buf` (all unconsumed bytes of `dir`) as possible; returns the bytes
    /// consumed (at most `buf.len()`). Errors are reported through `errors` (one entry per
    /// resynchronisation or cut) and never stop the parser: it resynchronises by itself.
    fn parse(
        &mut self,
        dir: Direction,
        buf: &[u8],
        ctx: &SegmentCtx,
        out: &mut Vec<L7Event>,
        errors: &mut Vec<ParseError>,
    ) -> usize;

    /// `n` bytes moved in `dir` after everything passed to `parse` but were not captured.
    /// `unconsumed` is how many bytes of that direction `parse` left unconsumed. Returns true
    /// when the parser accounted for the gap (e.g. it was inside a body); false when it could
    /// not and has resynchronised: the caller then drops the unconsumed bytes of `dir`.
    fn skip(
        &mut self,
        dir: Direction,
        n: u64,
        unconsumed: usize,
        ctx: &SegmentCtx,
        out: &mut Vec<L7Event>,
    ) -> bool;

    /// The connection closed at `ts_ns`: finish what the close completes (read-until-close
    /// bodies) and end every exchange still open (aborted).
    fn close(&mut self, ts_ns: u64, out: &mut Vec<L7Event>);

    /// Records of this connection were lost before the bytes that come next (the kernel's
    /// ring buffer was full): an unknown number of bytes is missing, in either direction or
    /// both, and what either direction left unconsumed cannot continue across the hole (the
    /// caller drops it). End every exchange in flight at `ts_ns`, aborted (its answer, or a
    /// part of it, may be among the lost bytes; nothing the hole may have completed is
    /// reported as complete), and resynchronise both directions on what follows. Returns
    /// false when the protocol cannot resynchronise (state that spans messages, like HPACK's
    /// dynamic table, may have changed in the lost bytes): the caller gives the connection up.
    fn gap(&mut self, ts_ns: u64, out: &mut Vec<L7Event>) -> bool;

    /// The protocol being parsed now.
    fn protocol(&self) -> ProtocolId;

    /// After a `parse`: the parser that carries on with this connection's bytes, when the
    /// protocol switched (HTTP/1.1 `Upgrade: h2c` becomes HTTP/2). It takes over within the
    /// same `parse` call, with the bytes this parser left unconsumed. Taken once.
    fn successor(
        &mut self,
        _ctx: &SegmentCtx,
        _out: &mut Vec<L7Event>,
        _errors: &mut Vec<ParseError>,
    ) -> Option<ConnParser> {
        None
    }
}

/// `impl Parser` for a protocol's parser type whose inherent `parse`, `skip`, `close` and `gap` have
/// the trait's signatures (so tests and benchmarks call them without the trait in scope):
/// `parser_by_inherent_methods!(Http1Conn);`, or with more trait items after a comma (e.g. a
/// `successor`).
macro_rules! parser_by_inherent_methods {
    ($t:ty $(, $($extra:tt)*)?) => {
        impl $crate::protocol::Parser for $t {
            fn parse(
                &mut self,
                dir: $crate::protocol::Direction,
                buf: &[u8],
                ctx: &$crate::protocol::SegmentCtx,
                out: &mut Vec<$crate::protocol::L7Event>,
                errors: &mut Vec<$crate::protocol::ParseError>,
            ) -> usize {
                <$t>::parse(self, dir, buf, ctx, out, errors)
            }

            fn skip(
                &mut self,
                dir: $crate::protocol::Direction,
                n: u64,
                unconsumed: usize,
                ctx: &$crate::protocol::SegmentCtx,
                out: &mut Vec<$crate::protocol::L7Event>,
            ) -> bool {
                <$t>::skip(self, dir, n, unconsumed, ctx, out)
            }

            fn close(&mut self, ts_ns: u64, out: &mut Vec<$crate::protocol::L7Event>) {
                <$t>::close(self, ts_ns, out)
            }

            fn gap(&mut self, ts_ns: u64, out: &mut Vec<$crate::protocol::L7Event>) -> bool {
                <$t>::gap(self, ts_ns, out)
            }

            fn protocol(&self) -> $crate::protocol::ProtocolId {
                <$t as $crate::protocol::Protocol>::ID
            }

            $($($extra)*)?
        }
    };
}
pub(crate) use parser_by_inherent_methods;

/// A protocol: how it is recognised, its parser's constructor and bounds, and the types its
/// exchanges are reported in. Implemented by each protocol's parser type.
pub trait Protocol: Parser + Sized {
    /// Its variant in the registry.
    const ID: ProtocolId;
    /// Its name in metric labels, logs and config (`http1`, `postgres`).
    const NAME: &'static str;
    /// Its name in messages (`HTTP/1`, `PostgreSQL`).
    const DISPLAY: &'static str;
    /// Most bytes of one direction the parser may leave unconsumed (its buffering bound).
    const MAX_UNCONSUMED: usize;
    /// Whether the process on the server side gets spans. HTTP servers do; a database server
    /// or a message broker reads the same bytes its client sent, and the client's span
    /// already describes the call, so their side is not parsed at all.
    const SERVER_SIDE_SPANS: bool;
    /// Whether one connection carries many exchanges at once, numbered alike by both ends
    /// (HTTP/2 streams): a same-node server span then pairs with the client request of the
    /// same number, not the oldest unanswered one.
    const MULTIPLEXED: bool;
    /// Whether its requests can carry W3C trace context (headers). A call that cannot is one
    /// an OpenTelemetry SDK in the process reports without any header to show it.
    const CARRIES_CONTEXT: bool;

    /// The request half of an exchange.
    type Request: ProtocolRequest + Clone + std::fmt::Debug + PartialEq + Eq;
    /// How an exchange ended.
    type Outcome: ProtocolOutcome + Clone + std::fmt::Debug + PartialEq + Eq;

    /// A cheap signature check on the first bytes seen in `dir` of a connection with `role`.
    fn detect(dir: Direction, role: Role, bytes: &[u8]) -> Detection;
    /// A parser for a connection whose requests flow in `request_dir`.
    fn new(request_dir: Direction) -> Self;
}

/// How an exchange flows, which decides its span's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// A request answered by the peer (CLIENT on the calling side, SERVER on the other).
    Call,
    /// A message this process sent (PRODUCER).
    Send,
    /// A message this process received (CONSUMER).
    Receive,
}

/// What the span stage asks of every protocol's request type.
pub trait ProtocolRequest {
    /// The raw `traceparent` and `tracestate` the request carries (validated downstream).
    fn trace_headers(&self) -> (Option<&str>, Option<&str>) {
        (None, None)
    }
    /// How the exchange flows.
    fn flow(&self) -> Flow {
        Flow::Call
    }
    /// Messages: a fingerprint equal for the sent and the received copy of one message,
    /// linking a delivery to its publish on the same node.
    fn fingerprint(&self) -> Option<u64> {
        None
    }
}

/// What the connection layer and the span stage ask of every protocol's outcome type.
pub trait ProtocolOutcome {
    /// The exchange ended without its answer (connection closed, parser lost sync).
    fn aborted(&self) -> bool;
    /// The receiving thread keeps working for the exchange after it ended (a message
    /// consumed without acknowledgement is processed after it arrived).
    fn work_follows(&self) -> bool {
        false
    }
}

/// Why a parser gave up on bytes, or cut its work short (counted per protocol by the
/// connection layer; never a panic).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not malformed, but beyond a bound on work or memory that protects the agent from
    /// hostile peers: the excess was skipped (or not copied) and parsing goes on.
    #[error("{protocol}: {what} (bound reached, excess skipped)")]
    Limited {
        protocol: ProtocolId,
        what: &'static str,
    },
    /// Bytes that are not this protocol where a message was expected: the parser
    /// resynchronised.
    #[error("malformed {protocol} {what}: {detail}")]
    Malformed {
        protocol: ProtocolId,
        what: &'static str,
        detail: String,
    },
}

impl ParseError {
    /// The protocol whose parser reported it.
    pub fn protocol(&self) -> ProtocolId {
        match self {
            ParseError::Limited { protocol, .. } | ParseError::Malformed { protocol, .. } => {
                *protocol
            }
        }
    }
}

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

/// The registry: one line per protocol, `Variant => parser type`, in detection order
/// (cheapest and most common signature first). It defines [`ProtocolId`], [`Request`],
/// [`Outcome`] and [`ConnParser`] with one variant per protocol, and their dispatch.
macro_rules! protocols {
    ($($(#[$doc:meta])* $id:ident => $parser:ty;)*) => {
        /// A protocol the agent parses.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ProtocolId {
            $($(#[$doc])* $id,)*
        }

        impl ProtocolId {
            /// Every protocol, in detection order.
            pub const ALL: &'static [ProtocolId] = &[$(ProtocolId::$id,)*];

            /// See [`Protocol::NAME`].
            pub fn name(self) -> &'static str {
                match self { $(ProtocolId::$id => <$parser as Protocol>::NAME,)* }
            }
            /// See [`Protocol::DISPLAY`].
            pub fn display_name(self) -> &'static str {
                match self { $(ProtocolId::$id => <$parser as Protocol>::DISPLAY,)* }
            }
            /// See [`Protocol::SERVER_SIDE_SPANS`].
            pub fn server_side_spans(self) -> bool {
                match self { $(ProtocolId::$id => <$parser as Protocol>::SERVER_SIDE_SPANS,)* }
            }
            /// See [`Protocol::MULTIPLEXED`].
            pub fn multiplexed(self) -> bool {
                match self { $(ProtocolId::$id => <$parser as Protocol>::MULTIPLEXED,)* }
            }
            /// See [`Protocol::CARRIES_CONTEXT`].
            pub fn carries_context(self) -> bool {
                match self { $(ProtocolId::$id => <$parser as Protocol>::CARRIES_CONTEXT,)* }
            }
            /// The protocol called `name` ([`Protocol::NAME`]).
            pub fn from_name(name: &str) -> Option<ProtocolId> {
                ProtocolId::ALL.iter().copied().find(|p| p.name() == name)
            }
        }

        /// The request half of an exchange, per protocol.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Request {
            $($id(<$parser as Protocol>::Request),)*
        }

        impl Request {
            pub fn protocol(&self) -> ProtocolId {
                match self { $(Request::$id(_) => ProtocolId::$id,)* }
            }
            /// See [`ProtocolRequest::trace_headers`].
            pub fn trace_headers(&self) -> (Option<&str>, Option<&str>) {
                match self { $(Request::$id(r) => r.trace_headers(),)* }
            }
            /// See [`ProtocolRequest::flow`].
            pub fn flow(&self) -> Flow {
                match self { $(Request::$id(r) => r.flow(),)* }
            }
            /// See [`ProtocolRequest::fingerprint`].
            pub fn fingerprint(&self) -> Option<u64> {
                match self { $(Request::$id(r) => r.fingerprint(),)* }
            }
        }

        /// How an exchange ended, per protocol. An exchange may end in another protocol
        /// than it started in when the connection switched (an HTTP/1.1 upgrade request
        /// answered over HTTP/2).
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Outcome {
            $($id(<$parser as Protocol>::Outcome),)*
        }

        impl Outcome {
            pub fn protocol(&self) -> ProtocolId {
                match self { $(Outcome::$id(_) => ProtocolId::$id,)* }
            }
            /// See [`ProtocolOutcome::aborted`].
            pub fn aborted(&self) -> bool {
                match self { $(Outcome::$id(o) => o.aborted(),)* }
            }
            /// See [`ProtocolOutcome::work_follows`].
            pub fn work_follows(&self) -> bool {
                match self { $(Outcome::$id(o) => o.work_follows(),)* }
            }
        }

        /// The parser attached to one connection.
        #[derive(Debug)]
        pub enum ConnParser {
            $($id($parser),)*
        }

        impl ConnParser {
            /// Try each protocol on the first bytes seen in `dir` on a connection with
            /// `role`, in registry order. Cheap signatures only; the full parse happens in
            /// [`Parser::parse`].
            pub fn detect(dir: Direction, role: Role, bytes: &[u8]) -> Detected {
                match looks_like_tls(bytes) {
                    Some(true) => return Detected::Tls,
                    None => return Detected::NeedMore,
                    Some(false) => {}
                }
                let mut need_more = false;
                $(
                    match <$parser as Protocol>::detect(dir, role, bytes) {
                        Detection::Match { request_dir } => {
                            return Detected::Parser(Box::new(ConnParser::$id(
                                <$parser as Protocol>::new(request_dir),
                            )))
                        }
                        Detection::NeedMore => need_more = true,
                        Detection::NoMatch => {}
                    }
                )*
                if need_more {
                    Detected::NeedMore
                } else {
                    Detected::Unsupported
                }
            }
        }

        impl Parser for ConnParser {
            /// Dispatches to the protocol's parser; when it hands over to a successor
            /// ([`Parser::successor`]), that one replaces it here and parses the rest of
            /// `buf` within the call.
            fn parse(
                &mut self,
                dir: Direction,
                buf: &[u8],
                ctx: &SegmentCtx,
                out: &mut Vec<L7Event>,
                errors: &mut Vec<ParseError>,
            ) -> usize {
                let (n, next) = match self {
                    $(ConnParser::$id(p) => {
                        let n = p.parse(dir, buf, ctx, out, errors).min(buf.len());
                        (n, p.successor(ctx, out, errors))
                    })*
                };
                match next {
                    Some(next) => {
                        *self = next;
                        n + self.parse(dir, &buf[n..], ctx, out, errors)
                    }
                    None => n,
                }
            }

            fn skip(
                &mut self,
                dir: Direction,
                n: u64,
                unconsumed: usize,
                ctx: &SegmentCtx,
                out: &mut Vec<L7Event>,
            ) -> bool {
                match self { $(ConnParser::$id(p) => p.skip(dir, n, unconsumed, ctx, out),)* }
            }

            fn close(&mut self, ts_ns: u64, out: &mut Vec<L7Event>) {
                match self { $(ConnParser::$id(p) => p.close(ts_ns, out),)* }
            }

            fn gap(&mut self, ts_ns: u64, out: &mut Vec<L7Event>) -> bool {
                match self { $(ConnParser::$id(p) => p.gap(ts_ns, out),)* }
            }

            fn protocol(&self) -> ProtocolId {
                match self { $(ConnParser::$id(_) => ProtocolId::$id,)* }
            }
        }
    };
}

protocols! {
    /// HTTP/1.0 and HTTP/1.1 (`http1`).
    Http1 => http1::Http1Conn;
    /// HTTP/2 and gRPC over it (`http2`).
    Http2 => http2::H2Conn;
    /// PostgreSQL frontend/backend protocol 3.0 (`postgres`).
    Postgres => postgres::PgConn;
    /// AMQP 0-9-1, RabbitMQ (`amqp`).
    Amqp => amqp::AmqpConn;
}

impl std::fmt::Display for ProtocolId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.display_name())
    }
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

#[cfg(test)]
mod detect_tests {
    use super::*;

    #[test]
    fn the_registry_names_each_protocol_once_and_keeps_its_rules() {
        let mut names: Vec<_> = ProtocolId::ALL.iter().map(|p| p.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ProtocolId::ALL.len());
        for &p in ProtocolId::ALL {
            assert_eq!(ProtocolId::from_name(p.name()), Some(p));
            assert!(!p.display_name().is_empty());
        }
        assert_eq!(ProtocolId::from_name("redis"), None);
        // Only the HTTP servers' side yields spans; only HTTP/2 numbers exchanges alike on
        // both ends; PostgreSQL carries no trace context.
        let servers: Vec<_> = ProtocolId::ALL
            .iter()
            .filter(|p| p.server_side_spans())
            .collect();
        assert_eq!(servers, [&ProtocolId::Http1, &ProtocolId::Http2]);
        assert!(ProtocolId::Http2.multiplexed() && !ProtocolId::Http1.multiplexed());
        assert!(!ProtocolId::Postgres.carries_context() && ProtocolId::Amqp.carries_context());
        // Detection builds the registered parser.
        let Detected::Parser(p) =
            ConnParser::detect(Direction::Egress, Role::Client, b"GET / HTTP/1.1\r\n")
        else {
            panic!("HTTP/1 not detected")
        };
        assert_eq!(p.protocol(), ProtocolId::Http1);
        let e = ParseError::Malformed {
            protocol: ProtocolId::Postgres,
            what: "frontend message",
            detail: "length 3".into(),
        };
        assert_eq!(e.protocol(), ProtocolId::Postgres);
        assert_eq!(
            e.to_string(),
            "malformed PostgreSQL frontend message: length 3"
        );
    }

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
