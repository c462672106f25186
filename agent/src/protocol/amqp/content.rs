//! Content: the header frame (spec §4.2.6.1: class-id, weight, body-size, property flags and
//! list), the basic class's properties (class reference, `basic` "properties"), and a message
//! being assembled from its method, header and body frames, with its fingerprint.
//!
//! # Fingerprint
//!
//! FNV-1a 64 (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`; chosen because it is
//! byte-streaming, trivially reproducible outside Rust, and stable across toolchains) over, in
//! order:
//!
//! 1. the exchange and 2. the routing key, each as a `u32` little-endian length then its bytes
//!    (basic.deliver and basic.get-ok carry the publish's exchange and routing key);
//! 3. the content header's raw property bytes (property flags and property list, exactly as on
//!    the wire), as a `u32` little-endian length then the bytes: RabbitMQ forwards them
//!    unchanged in the common case (checked on the recorded fixtures: every delivered and
//!    fetched copy hashes like its publish, headers tables of every field type included). It
//!    re-encodes them only when it changes properties itself (dead-lettering adds `x-death`,
//!    `BCC` is stripped): such copies do not link, which is right for dead-lettering;
//! 4. the body size as a `u64` little-endian;
//! 5. the first `min(body_size, 1024)` body bytes, streamed, so the frame size each side
//!    negotiated (and how reads split the frames) does not matter;
//! 6. only when some of those first bytes were not captured: a marker (the count of missing
//!    prefix bytes as a `u64` little-endian), so such a copy links to nothing rather than to a
//!    wrong message.
//!
//! Identical messages published twice get one fingerprint; the span layer disambiguates them
//! by time.

use thiserror::Error;

use super::super::{AmqpMessage, AmqpOperation};
use super::method::BASIC;
use super::wire::{walk_table, FieldValue, Reader, WireError};
use super::Start;

/// Body bytes covered by the fingerprint.
pub(super) const FINGERPRINT_BODY: u64 = 1024;
/// Longest `traceparent` / `tracestate` value copied out (a W3C traceparent is 55 bytes; a
/// tracestate at most 32 members of 256 bytes, joined). Longer values are not trace context.
const MAX_TRACE_VALUE: usize = 8 * 1024;

/// FNV-1a 64, fed incrementally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fnv(u64);

impl Fnv {
    pub(super) fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(super) fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// A field of known length: length (u32 LE), then the bytes. Fields longer than u32::MAX
    /// cannot occur (frames are smaller), saturating keeps this total.
    fn write_field(&mut self, bytes: &[u8]) {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.write(&len.to_le_bytes());
        self.write(bytes);
    }

    pub(super) fn finish(self) -> u64 {
        self.0
    }
}

/// Why a content header is unusable (the message is dropped; framing is unaffected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(super) enum HeaderError {
    #[error("content header of class {0}, not basic (60)")]
    Class(u16),
    #[error("content header: {0}")]
    Wire(#[from] WireError),
}

/// The content header frame's fixed part; `properties` is the raw flags and list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header<'a> {
    pub class: u16,
    pub body_size: u64,
    pub properties: &'a [u8],
}

pub(super) fn decode_header(payload: &[u8]) -> Result<Header<'_>, WireError> {
    let mut r = Reader::new(payload);
    let class = r.u16()?;
    r.u16()?; // weight: unused, must be zero
    let body_size = r.u64()?;
    Ok(Header {
        class,
        body_size,
        properties: payload.get(12..).unwrap_or_default(),
    })
}

/// The basic properties the agent reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Properties {
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// Outcome of decoding a property list whose framing is intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Decoded {
    pub props: Properties,
    /// The headers table could not be decoded (its extent is known from its length, so the
    /// properties after it are still read): its trace context counts as absent.
    pub headers_error: Option<WireError>,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A trace-context header value: a long string, or a byte array holding UTF-8 (what clients
/// that have only byte strings send).
fn trace_value(value: FieldValue<'_>) -> Option<String> {
    let bytes = match value {
        FieldValue::LongString(b) | FieldValue::Bytes(b) => b,
        FieldValue::Other => return None,
    };
    if bytes.len() > MAX_TRACE_VALUE {
        return None;
    }
    std::str::from_utf8(bytes).ok().map(str::to_owned)
}

/// Decode the basic class's property flags and list. Flags are read MSB first: bit 15 is the
/// first property; bit 0 set means another flags word follows (spec §4.2.6.1). The basic class
/// has 14 properties, all in the first word; properties flagged in further words would follow
/// ours in the list, so they are simply not read.
pub(super) fn decode_properties(raw: &[u8]) -> Result<Decoded, WireError> {
    let mut r = Reader::new(raw);
    let first = r.u16()?;
    let mut word = first;
    while word & 1 != 0 {
        word = r.u16()?;
    }
    let has = |bit: u16| first & (1 << bit) != 0;
    let mut props = Properties::default();
    let mut headers_error = None;
    let short = |r: &mut Reader, bit: u16| -> Result<Option<String>, WireError> {
        Ok(if has(bit) {
            Some(text(r.shortstr()?))
        } else {
            None
        })
    };
    // 15 content-type, 14 content-encoding: not reported.
    short(&mut r, 15)?;
    short(&mut r, 14)?;
    if has(13) {
        let table = r.longstr()?;
        let (mut tp, mut ts) = (None, None);
        let walked = walk_table(table, 1, &mut |key, value| {
            // Keys as OpenTelemetry's propagators write them; the first occurrence wins.
            if key == b"traceparent" && tp.is_none() {
                tp = Some(trace_value(value));
            } else if key == b"tracestate" && ts.is_none() {
                ts = Some(trace_value(value));
            }
        });
        match walked {
            Ok(()) => {
                props.traceparent = tp.flatten();
                props.tracestate = ts.flatten();
            }
            Err(e) => headers_error = Some(e),
        }
    }
    // 12 delivery-mode, 11 priority: octets.
    for bit in [12, 11] {
        if has(bit) {
            r.u8()?;
        }
    }
    props.correlation_id = short(&mut r, 10)?;
    short(&mut r, 9)?; // reply-to
    short(&mut r, 8)?; // expiration
    props.message_id = short(&mut r, 7)?;
    if has(6) {
        r.u64()?; // timestamp
    }
    // 5 type, 4 user-id, 3 app-id, 2 cluster-id (reserved).
    for bit in [5, 4, 3, 2] {
        short(&mut r, bit)?;
    }
    Ok(Decoded {
        props,
        headers_error,
    })
}

/// What a message is, decided by its method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Publish,
    /// basic.deliver; `no_ack`: the consumer was started with no-ack.
    Deliver {
        no_ack: bool,
    },
    /// basic.get-ok; `no_ack`: the basic.get asked for no-ack.
    Get {
        no_ack: bool,
    },
}

/// A message whose method was seen and whose content is still arriving.
#[derive(Debug, Clone)]
pub(super) struct Partial {
    pub kind: Kind,
    pub channel: u16,
    pub start: Start,
    exchange: String,
    routing_key: String,
    delivery_tag: Option<u64>,
    redelivered: bool,
    props: Properties,
    body_size: u64,
    /// Body bytes accounted for (captured or skipped).
    body_seen: u64,
    /// Fingerprint-prefix bytes that were not captured.
    prefix_missing: u64,
    fp: Fnv,
}

impl Partial {
    #[allow(clippy::too_many_arguments)] // the method's fields, once
    pub(super) fn new(
        kind: Kind,
        channel: u16,
        start: Start,
        exchange: &[u8],
        routing_key: &[u8],
        delivery_tag: Option<u64>,
        redelivered: bool,
    ) -> Self {
        let mut fp = Fnv::new();
        fp.write_field(exchange);
        fp.write_field(routing_key);
        Self {
            kind,
            channel,
            start,
            exchange: text(exchange),
            routing_key: text(routing_key),
            delivery_tag,
            redelivered,
            props: Properties::default(),
            body_size: 0,
            body_seen: 0,
            prefix_missing: 0,
            fp,
        }
    }

    /// The content header arrived. Returns the error of an undecodable headers table, if any
    /// (the message is still good), or `Err` when the header itself is unusable.
    pub(super) fn header(&mut self, h: &Header) -> Result<Option<WireError>, HeaderError> {
        if h.class != BASIC {
            return Err(HeaderError::Class(h.class));
        }
        let decoded = decode_properties(h.properties)?;
        self.props = decoded.props;
        self.body_size = h.body_size;
        self.fp.write_field(h.properties);
        self.fp.write(&h.body_size.to_le_bytes());
        Ok(decoded.headers_error)
    }

    pub(super) fn body_remaining(&self) -> u64 {
        self.body_size.saturating_sub(self.body_seen)
    }

    /// Captured body bytes (never more than `body_remaining`).
    pub(super) fn body(&mut self, bytes: &[u8]) {
        let limit = self.body_size.min(FINGERPRINT_BODY);
        if self.body_seen < limit {
            let want = usize::try_from(limit - self.body_seen).unwrap_or(usize::MAX);
            self.fp.write(&bytes[..bytes.len().min(want)]);
        }
        self.body_seen = self.body_seen.saturating_add(bytes.len() as u64);
    }

    /// `n` body bytes went uncaptured (never more than `body_remaining`).
    pub(super) fn body_gap(&mut self, n: u64) {
        let limit = self.body_size.min(FINGERPRINT_BODY);
        if self.body_seen < limit {
            self.prefix_missing += n.min(limit - self.body_seen);
        }
        self.body_seen = self.body_seen.saturating_add(n);
    }

    pub(super) fn into_message(self) -> AmqpMessage {
        let mut fp = self.fp;
        if self.prefix_missing > 0 {
            fp.write(&self.prefix_missing.to_le_bytes());
        }
        AmqpMessage {
            operation: match self.kind {
                Kind::Publish => AmqpOperation::Publish,
                Kind::Deliver { .. } => AmqpOperation::Deliver,
                Kind::Get { .. } => AmqpOperation::Get,
            },
            channel: self.channel,
            exchange: self.exchange,
            routing_key: self.routing_key,
            delivery_tag: self.delivery_tag,
            redelivered: self.redelivered,
            message_id: self.props.message_id,
            correlation_id: self.props.correlation_id,
            traceparent: self.props.traceparent,
            tracestate: self.props.tracestate,
            body_size: self.body_size,
            fingerprint: fp.finish(),
        }
    }
}
