//! AMQP 0-9-1 (RabbitMQ): detection, framing, and the messages of one connection.
//!
//! This module owns turning the two reassembled byte streams of a connection into
//! `RequestStart` / `ExchangeEnd` events for messages: a basic.publish sent by the client
//! (client→broker is the request direction), and a basic.deliver or basic.get-ok received by it.
//! A message is reported once complete (method, content header, every body byte); a publish ends
//! at once (`Sent`); a delivery ends at once on a no-ack consumer or get (`Received`), else when
//! the client settles it (basic.ack → `Acked`, basic.nack / basic.reject → `Rejected`), or
//! `Aborted` when its channel or the connection closes first. Each message carries a
//! fingerprint (see `content`) equal for the published and the delivered copy, so the span
//! layer can link a consumer's span to its producer's on the same node.
//!
//! The same parser runs on a broker's own sockets (requests then flow in on ingress): nothing
//! differs but `request_dir`.
//!
//! Frames are multiplexed over channels (spec §2.3.5, §4.2.3-4.2.6); each channel has its own
//! state per peer. Framing and meaning are separate: the stream of each direction (`stream`)
//! only cuts frames and recovers from gaps and garbage, the session (`session`) interprets
//! them. Framing never depends on meaning, so anything framing-valid (unknown methods, content
//! we do not report, headers tables we cannot decode) is skipped without losing sync.
//!
//! It does not own: reassembly and buffering (`crate::conn`), trace-context validation
//! (`crate::span::context`), linking publishes to deliveries (the span layer), TLS, AMQP 1.0
//! (refused at detection), or message bodies (hashed for the fingerprint, never kept).
//! Credentials (connection.start-ok's response) are skipped unread.
//!
//! - `detect`: signatures for detection;
//! - `frame`: frame header, limits, protocol header, resync signatures;
//! - `wire`: primitive types and field tables as RabbitMQ encodes them;
//! - `method`: method ids and arguments;
//! - `content`: content header, properties, message assembly, fingerprint;
//! - `unacked`: deliveries awaiting settlement;
//! - `session`: what the frames mean together;
//! - `stream`: the per-direction frame state machine.
//!
//! Limits and assumptions:
//! - When the agent joins a connection midway it cannot know a consumer's ack mode: deliveries
//!   to consumers (or gets) it did not see start are assumed to need an ack, and end at the
//!   ack, or `Aborted` at the channel's or connection's close. Until a connection.tune is seen,
//!   RabbitMQ's default frame-max (131072) bounds frames.
//! - Publisher confirms (the broker's basic.ack / basic.nack) do not change a publish's outcome:
//!   its span ended when it was sent.
//! - Acks inside a transaction (tx.select) are taken when sent, not at tx.commit.
//! - After a capture gap or garbage in the client's direction, every unsettled delivery is
//!   aborted (the lost bytes may have held its ack); in the broker's direction only the
//!   messages in transit are lost.

mod content;
mod detect;
mod frame;
mod method;
mod session;
mod stream;
#[cfg(test)]
mod tests;
mod unacked;
mod wire;

use super::{
    Detection, Direction, Flow, L7Event, ParseError, Protocol, ProtocolId, ProtocolOutcome,
    ProtocolRequest, Role, SegmentCtx,
};
use session::Session;
use stream::Stream;

/// Does this direction start like AMQP 0-9-1, and which way do requests (client→broker
/// frames) flow?
///
/// The protocol header from the client (`Role::Client`: egress; `Role::Server`: ingress;
/// `Role::Unknown`: whichever direction carries it) is a match. Joining midway, well-formed
/// frames from the first byte up to a method frame that only one side sends (or any method or
/// heartbeat when the role says who sent it) are a match. Partial evidence is `NeedMore`;
/// AMQP 1.0 (and other versions), HTTP, TLS and other binary protocols are `NoMatch`.
pub fn detect(dir: Direction, role: Role, bytes: &[u8]) -> Detection {
    detect::detect(dir, role, bytes)
}

/// Which side of the connection sent a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Client = 0,
    Broker = 1,
}

/// Where and when a message's first byte was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Start {
    tid: u32,
    goroutine: u64,
    first_ns: u64,
}

/// What a parse step reports to: the read being parsed, and the caller's event and error lists.
struct Io<'a> {
    ctx: &'a SegmentCtx,
    out: &'a mut Vec<L7Event>,
    errors: &'a mut Vec<ParseError>,
}

fn error(what: &'static str, detail: impl Into<String>) -> ParseError {
    ParseError::Malformed {
        protocol: ProtocolId::Amqp,
        what,
        detail: detail.into(),
    }
}

/// AMQP 0-9-1 parser state of one connection.
#[derive(Debug)]
pub struct AmqpConn {
    request_dir: Direction,
    /// Indexed by `Peer`.
    streams: [Stream; 2],
    session: Session,
    closed: bool,
}

impl AmqpConn {
    /// A parser for a connection whose client→broker frames flow in `request_dir`.
    pub fn new(request_dir: Direction) -> Self {
        Self {
            request_dir,
            streams: [Stream::new(Peer::Client), Stream::new(Peer::Broker)],
            session: Session::new(),
            closed: false,
        }
    }

    fn peer(&self, dir: Direction) -> Option<Peer> {
        match dir {
            Direction::None => None,
            d if d == self.request_dir => Some(Peer::Client),
            _ => Some(Peer::Broker),
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
        let Some(peer) = self.peer(dir).filter(|_| !self.closed) else {
            return buf.len();
        };
        let mut io = Io { ctx, out, errors };
        self.streams[peer as usize].parse(buf, &mut self.session, &mut io)
    }

    /// `n` bytes moved in `dir` without being captured; see
    /// [`crate::protocol::Parser::skip`]. True when they fell inside a body frame (or
    /// another payload being skipped) whose length absorbs them.
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
        if self.closed {
            return unconsumed == 0;
        }
        let Some(peer) = self.peer(dir) else {
            return true;
        };
        // Nothing in skip is reported as a parse error: the connection layer counts gaps.
        let mut errors = Vec::new();
        let mut io = Io {
            ctx,
            out,
            errors: &mut errors,
        };
        self.streams[peer as usize].skip(n, unconsumed, &mut self.session, &mut io)
    }

    /// Records were lost before the next bytes; see [`crate::protocol::Parser::gap`]. Both
    /// streams lose sync, as for an uncaptured range in each: messages being assembled are
    /// dropped, every unsettled delivery is aborted (its ack may be in the hole), and each
    /// stream resumes at the next trustworthy frame boundary (`frame::scan`).
    pub fn gap(&mut self, ts_ns: u64, out: &mut Vec<L7Event>) -> bool {
        if !self.closed {
            for stream in &mut self.streams {
                stream.gap(&mut self.session, ts_ns, out);
            }
        }
        true
    }

    /// The connection closed at `ts_ns`: every unsettled delivery is aborted; messages still
    /// arriving were never reported and are dropped.
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<L7Event>) {
        if !self.closed {
            self.session.abort_all(ts_ns, out);
        }
        self.closed = true;
    }
}

impl Protocol for AmqpConn {
    const ID: ProtocolId = ProtocolId::Amqp;
    const NAME: &'static str = "amqp";
    const DISPLAY: &'static str = "AMQP";
    /// Never more than one held frame (plus a partial frame header) stays unconsumed.
    const MAX_UNCONSUMED: usize = frame::MAX_BUFFERED_PAYLOAD as usize + 16;
    const SERVER_SIDE_SPANS: bool = false;
    const MULTIPLEXED: bool = false;
    const CARRIES_CONTEXT: bool = true;
    type Request = AmqpMessage;
    type Outcome = AmqpOutcome;

    fn detect(dir: Direction, role: Role, bytes: &[u8]) -> Detection {
        detect(dir, role, bytes)
    }

    fn new(request_dir: Direction) -> Self {
        AmqpConn::new(request_dir)
    }
}

super::parser_by_inherent_methods!(AmqpConn);

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

impl ProtocolRequest for AmqpMessage {
    fn trace_headers(&self) -> (Option<&str>, Option<&str>) {
        (self.traceparent.as_deref(), self.tracestate.as_deref())
    }
    fn flow(&self) -> Flow {
        match self.operation {
            AmqpOperation::Publish => Flow::Send,
            AmqpOperation::Deliver | AmqpOperation::Get => Flow::Receive,
        }
    }
    fn fingerprint(&self) -> Option<u64> {
        Some(self.fingerprint)
    }
}

impl ProtocolOutcome for AmqpOutcome {
    fn aborted(&self) -> bool {
        *self == AmqpOutcome::Aborted
    }
    fn work_follows(&self) -> bool {
        *self == AmqpOutcome::Received
    }
}
