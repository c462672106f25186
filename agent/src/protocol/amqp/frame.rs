//! Framing (spec §2.3.5, §4.2.3): `type:octet channel:short size:long payload frame-end`, the
//! protocol header (§4.2.2), frame-size limits, and the signatures used to find a frame
//! boundary when joining a connection midway or after losing sync.

use super::method::{self, Method, Sender, CONNECTION};
use super::Peer;

pub(super) const FRAME_METHOD: u8 = 1;
pub(super) const FRAME_HEADER: u8 = 2;
pub(super) const FRAME_BODY: u8 = 3;
/// 0-9-1 uses 8 for heartbeats (spec §4.2.3; 0-8 used 4).
pub(super) const FRAME_HEARTBEAT: u8 = 8;
pub(super) const FRAME_END: u8 = 0xCE;
/// Type, channel and size.
pub(super) const HEADER_LEN: usize = 7;
/// Header plus frame-end: what a frame adds to its payload (frame-max counts it, §4.2.3).
pub(super) const OVERHEAD: u32 = 8;

/// frame-max before any connection.tune is seen: RabbitMQ's default (`frame_max` = 131072).
pub(super) const DEFAULT_FRAME_MAX: u32 = 131_072;
/// Peers must accept frames of this size before tuning (spec §4.2.3 "frame-min-size"); a
/// negotiated frame-max below it is taken as this.
pub(super) const FRAME_MIN_SIZE: u32 = 4096;
/// frame-max 0 means "no limit" (spec connection.tune); we still refuse frames above this.
pub(super) const UNLIMITED_FRAME_CAP: u32 = 128 << 20;
/// Method, content-header and heartbeat frames are held until complete; a larger one is
/// reported and skipped as it streams (its frame-end still checked). Covers RabbitMQ's
/// default frame-max, so it fits the connection layer's default per-direction buffer.
pub(super) const MAX_BUFFERED_PAYLOAD: u32 = DEFAULT_FRAME_MAX;
/// Resync accepts only method frames up to this size: enough for every method with its
/// tables in practice (the largest are connection.start, ~500 bytes from RabbitMQ, and
/// start-ok, ~300 from clients; the others carry short strings), and it bounds how many bytes
/// a candidate keeps waiting. It also bounds the work of a scan: every candidate's arguments
/// are decoded, and candidates can overlap (one can sit in a byte array of the table before
/// it, its own table running over the same entries), so a scan costs up to this many bytes
/// of table per candidate: at 16 KiB a hostile stream of such blocks cost ~40x a normal
/// stream per byte; at 2 KiB it is a few times (`benches/amqp.rs`, hostile section).
pub(super) const MAX_RESYNC_PAYLOAD: u32 = 2 * 1024;

/// The 0-9-1 protocol header: "AMQP", 0, then major 0, minor 9, revision 1.
pub(super) const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// The payload limit for a negotiated frame-max (connection.tune / tune-ok).
pub(super) fn payload_limit(frame_max: u32) -> u32 {
    let frame_max = match frame_max {
        0 => UNLIMITED_FRAME_CAP,
        n => n.clamp(FRAME_MIN_SIZE, UNLIMITED_FRAME_CAP),
    };
    frame_max - OVERHEAD
}

/// What the first bytes of a stream say about the protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProtocolHeader {
    /// Exactly the 0-9-1 header.
    Amqp091,
    /// "AMQP" with another protocol id or version: AMQP 1.0 (`AMQP 0 1 0 0`, its SASL and TLS
    /// layers `AMQP 3 ...`, `AMQP 2 ...`), 0-9 or 0-8.
    OtherVersion,
    /// A prefix of "AMQP....": too short to tell.
    Partial,
    /// Not a protocol header.
    No,
}

pub(super) fn protocol_header(bytes: &[u8]) -> ProtocolHeader {
    let n = bytes.len().min(4);
    if bytes[..n] != b"AMQP"[..n] {
        return ProtocolHeader::No;
    }
    if bytes.len() < PROTOCOL_HEADER.len() {
        return if PROTOCOL_HEADER.starts_with(bytes) {
            ProtocolHeader::Partial
        } else {
            ProtocolHeader::OtherVersion
        };
    }
    if bytes[..8] == PROTOCOL_HEADER[..] {
        ProtocolHeader::Amqp091
    } else {
        ProtocolHeader::OtherVersion
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FrameHeader {
    pub kind: u8,
    pub channel: u16,
    pub size: u32,
}

impl FrameHeader {
    /// The header at the start of `bytes`, if 7 bytes are there.
    pub(super) fn parse(bytes: &[u8]) -> Option<Self> {
        let h = bytes.get(..HEADER_LEN)?;
        Some(Self {
            kind: h[0],
            channel: u16::from_be_bytes([h[1], h[2]]),
            size: u32::from_be_bytes([h[3], h[4], h[5], h[6]]),
        })
    }

    /// Whole frame length, header and frame-end included.
    pub(super) fn total(&self) -> usize {
        // size <= u32::MAX; usize is at least 32 bits on every target we build for.
        HEADER_LEN + self.size as usize + 1
    }
}

/// Does `sender` allow `peer` to send the method? (`None`: unknown method, any peer.)
pub(super) fn sender_allows(sender: Option<Sender>, peer: Peer) -> bool {
    matches!(
        (sender, peer),
        (None | Some(Sender::Either), _)
            | (Some(Sender::Client), Peer::Client)
            | (Some(Sender::Broker), Peer::Broker)
    )
}

/// Connection-class methods travel on channel 0, all others on a channel > 0 (spec §2.3.5,
/// §4.2.3).
pub(super) fn channel_fits(class: u16, channel: u16) -> bool {
    (class == CONNECTION) == (channel == 0)
}

/// Three-way answer of a signature check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Yes,
    Maybe,
    No,
}

const HEARTBEAT: [u8; 8] = [FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END];

/// Is there a frame boundary at the start of `bytes` we can trust after losing sync? Only a
/// heartbeat or a complete method frame qualifies: known class and method, sendable by `peer`
/// (any peer when `None`) on that channel, arguments decodable, frame-end in place, and the
/// next byte (when visible) a frame type. Content frames are useless without their method, so
/// resync never lands on them.
pub(super) fn resync_point(bytes: &[u8], peer: Option<Peer>, limit: u32) -> Verdict {
    let Some(&first) = bytes.first() else {
        return Verdict::Maybe;
    };
    let total = match first {
        FRAME_HEARTBEAT => {
            let n = bytes.len().min(HEARTBEAT.len());
            if bytes[..n] != HEARTBEAT[..n] {
                return Verdict::No;
            }
            if n < HEARTBEAT.len() {
                return Verdict::Maybe;
            }
            HEARTBEAT.len()
        }
        FRAME_METHOD => {
            let Some(h) = FrameHeader::parse(bytes) else {
                return Verdict::Maybe;
            };
            if h.size < 4 || h.size > MAX_RESYNC_PAYLOAD.min(limit) {
                return Verdict::No;
            }
            if let Some(ids) = bytes.get(HEADER_LEN..HEADER_LEN + 4) {
                let class = u16::from_be_bytes([ids[0], ids[1]]);
                let id = u16::from_be_bytes([ids[2], ids[3]]);
                let Some(sender) = method::sender(class, id) else {
                    return Verdict::No;
                };
                if !channel_fits(class, h.channel)
                    || peer.is_some_and(|p| !sender_allows(Some(sender), p))
                {
                    return Verdict::No;
                }
            }
            let total = h.total();
            if bytes.len() < total {
                return Verdict::Maybe;
            }
            if bytes[total - 1] != FRAME_END {
                return Verdict::No;
            }
            match method::decode(&bytes[HEADER_LEN..total - 1]) {
                Ok((_, _, Method::Unknown)) | Err(_) => return Verdict::No,
                Ok(_) => {}
            }
            total
        }
        _ => return Verdict::No,
    };
    match bytes.get(total) {
        None | Some(&(FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT)) => Verdict::Yes,
        Some(_) => Verdict::No,
    }
}

/// Outcome of looking for a resync point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scan {
    /// A frame starts at this offset.
    Found(usize),
    /// One might start at this offset: the bytes end before we can tell.
    Partial(usize),
    /// Nothing here: all of it can be dropped.
    Nothing,
}

/// The first offset in `bytes` where [`resync_point`] holds.
pub(super) fn scan(bytes: &[u8], peer: Peer, limit: u32) -> Scan {
    let mut i = 0;
    while let Some(off) = bytes[i..]
        .iter()
        .position(|&b| b == FRAME_METHOD || b == FRAME_HEARTBEAT)
    {
        i += off;
        match resync_point(&bytes[i..], Some(peer), limit) {
            Verdict::Yes => return Scan::Found(i),
            Verdict::Maybe => return Scan::Partial(i),
            Verdict::No => i += 1,
        }
    }
    Scan::Nothing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_headers() {
        use ProtocolHeader::*;
        assert_eq!(protocol_header(b"AMQP\x00\x00\x09\x01"), Amqp091);
        assert_eq!(protocol_header(b"AMQP\x00\x00\x09\x01\x01\x00"), Amqp091);
        assert_eq!(protocol_header(b"AMQP\x00\x00\x09"), Partial);
        assert_eq!(protocol_header(b"AM"), Partial);
        assert_eq!(protocol_header(b"AMQP\x00\x01\x00\x00"), OtherVersion);
        assert_eq!(protocol_header(b"AMQP\x03\x01\x00\x00"), OtherVersion);
        assert_eq!(protocol_header(b"AMQP\x03"), OtherVersion);
        assert_eq!(protocol_header(b"AMQP\x01\x01\x00\x09"), OtherVersion);
        assert_eq!(protocol_header(b"AMQX"), No);
        assert_eq!(protocol_header(b"GET "), No);
    }

    #[test]
    fn payload_limits() {
        assert_eq!(payload_limit(131_072), 131_064);
        assert_eq!(payload_limit(0), UNLIMITED_FRAME_CAP - 8);
        assert_eq!(payload_limit(100), FRAME_MIN_SIZE - 8);
        assert_eq!(payload_limit(u32::MAX), UNLIMITED_FRAME_CAP - 8);
    }

    #[test]
    fn resync_points() {
        let limit = payload_limit(DEFAULT_FRAME_MAX);
        // basic.ack on channel 1, then the start of another frame.
        let ack =
            b"\x01\x00\x01\x00\x00\x00\x0d\x00\x3c\x00\x50\x00\x00\x00\x00\x00\x00\x00\x05\x00\xce";
        assert_eq!(resync_point(ack, Some(Peer::Client), limit), Verdict::Yes);
        assert_eq!(resync_point(ack, None, limit), Verdict::Yes);
        let mut next = ack.to_vec();
        next.push(FRAME_BODY);
        assert_eq!(resync_point(&next, Some(Peer::Client), limit), Verdict::Yes);
        next.push(0);
        next[ack.len()] = 0x41;
        assert_eq!(resync_point(&next, Some(Peer::Client), limit), Verdict::No);
        for n in 0..ack.len() {
            assert_eq!(
                resync_point(&ack[..n], Some(Peer::Client), limit),
                Verdict::Maybe,
                "{n}"
            );
        }
        // basic.deliver ids from the client: wrong sender.
        let mut deliver = ack.to_vec();
        deliver[10] = 60;
        assert_eq!(
            resync_point(&deliver, Some(Peer::Client), limit),
            Verdict::No
        );
        // Connection class off channel 0.
        let mut conn = ack.to_vec();
        conn[8] = 10;
        assert_eq!(resync_point(&conn, None, limit), Verdict::No);
        // Bad frame-end.
        let mut bad = ack.to_vec();
        bad[20] = 0;
        assert_eq!(resync_point(&bad, None, limit), Verdict::No);
        assert_eq!(
            resync_point(&HEARTBEAT, Some(Peer::Broker), limit),
            Verdict::Yes
        );
        assert_eq!(
            resync_point(&HEARTBEAT[..5], Some(Peer::Broker), limit),
            Verdict::Maybe
        );
        assert_eq!(resync_point(b"\x08\x00\x01", None, limit), Verdict::No);
        assert_eq!(resync_point(b"\x03\x00\x01", None, limit), Verdict::No);
    }

    #[test]
    fn scanning() {
        let ack =
            b"\x01\x00\x01\x00\x00\x00\x0d\x00\x3c\x00\x50\x00\x00\x00\x00\x00\x00\x00\x05\x00\xce";
        let limit = payload_limit(DEFAULT_FRAME_MAX);
        let mut junk = b"\x01\x01junk\x08\x08".to_vec();
        junk.extend_from_slice(ack);
        assert_eq!(scan(&junk, Peer::Client, limit), Scan::Found(8));
        assert_eq!(scan(&junk[..15], Peer::Client, limit), Scan::Partial(8));
        assert_eq!(scan(b"no frames here", Peer::Client, limit), Scan::Nothing);
        assert_eq!(scan(b"", Peer::Client, limit), Scan::Nothing);
    }
}
