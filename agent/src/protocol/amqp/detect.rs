//! Protocol detection from the first bytes of one direction.
//!
//! Strict, as a false positive turns some other protocol into junk spans: either the 0-9-1
//! protocol header from the client (spec §4.2.2), or, when the agent joins a connection midway,
//! a chain of well-formed frames from the first byte up to a method frame (or heartbeat) that
//! fixes which side is the client. Every frame on the way must have a known type, a size within
//! the default frame-max, its frame-end octet in place, and (for methods) a known class and
//! method sendable by that side on that channel with decodable arguments.

use super::super::{Detection, Direction, Role};
use super::frame::{
    self, channel_fits, protocol_header, sender_allows, FrameHeader, ProtocolHeader,
    DEFAULT_FRAME_MAX, FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD,
    HEADER_LEN,
};
use super::method::{self, Method, Sender};
use super::Peer;

fn opposite(dir: Direction) -> Direction {
    match dir {
        Direction::Egress => Direction::Ingress,
        Direction::Ingress => Direction::Egress,
        Direction::None => Direction::None,
    }
}

/// See [`crate::protocol::amqp::detect`].
pub(super) fn detect(dir: Direction, role: Role, bytes: &[u8]) -> Detection {
    if dir == Direction::None {
        return Detection::NoMatch;
    }
    if bytes.is_empty() {
        return Detection::NeedMore;
    }
    // Who sent these bytes, when the role says.
    let sender = match (role, dir) {
        (Role::Client, Direction::Egress) | (Role::Server, Direction::Ingress) => {
            Some(Peer::Client)
        }
        (Role::Client, _) | (Role::Server, _) => Some(Peer::Broker),
        (Role::Unknown, _) => None,
    };
    let request_dir = |peer: Peer| match peer {
        Peer::Client => dir,
        Peer::Broker => opposite(dir),
    };
    match protocol_header(bytes) {
        ProtocolHeader::Partial => return Detection::NeedMore,
        // Only clients send it (a broker echoes its own header only to refuse a version).
        ProtocolHeader::Amqp091 => {
            return match sender {
                Some(Peer::Broker) => Detection::NoMatch,
                _ => Detection::Match { request_dir: dir },
            }
        }
        ProtocolHeader::OtherVersion => return Detection::NoMatch,
        ProtocolHeader::No => {}
    }
    let limit = frame::payload_limit(DEFAULT_FRAME_MAX);
    let mut rest = bytes;
    loop {
        match next_frame(rest, limit) {
            Walk::NeedMore => return Detection::NeedMore,
            Walk::No => return Detection::NoMatch,
            Walk::Frame { len, from } => {
                let peer = match (from, sender) {
                    (Some(s), Some(p)) if !sender_allows(Some(s), p) => return Detection::NoMatch,
                    // A method only one side sends, or any frame when the role says who sent it.
                    (Some(Sender::Client), _) => Some(Peer::Client),
                    (Some(Sender::Broker), _) => Some(Peer::Broker),
                    (Some(Sender::Either), p) => p,
                    // Content frames alone decide nothing: their method came before.
                    (None, _) => None,
                };
                if let Some(p) = peer {
                    return Detection::Match {
                        request_dir: request_dir(p),
                    };
                }
                rest = &rest[len..];
                if rest.is_empty() {
                    return Detection::NeedMore;
                }
            }
        }
    }
}

enum Walk {
    NeedMore,
    No,
    /// A well-formed frame of `len` bytes. `from`: for a method or heartbeat, who may send it
    /// (`Either` for heartbeats); `None` for content frames.
    Frame {
        len: usize,
        from: Option<Sender>,
    },
}

fn next_frame(bytes: &[u8], limit: u32) -> Walk {
    let kind = bytes[0];
    if !matches!(
        kind,
        FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
    ) {
        return Walk::No;
    }
    let Some(h) = FrameHeader::parse(bytes) else {
        return Walk::NeedMore;
    };
    let min = match kind {
        FRAME_METHOD => 4,
        // class, weight, body-size, property flags
        FRAME_HEADER => 14,
        _ => 0,
    };
    let shape_ok = h.size >= min
        && h.size <= limit
        && match kind {
            FRAME_HEARTBEAT => h.channel == 0 && h.size == 0,
            FRAME_HEADER | FRAME_BODY => h.channel != 0,
            _ => true,
        };
    if !shape_ok {
        return Walk::No;
    }
    // Look at what is visible before waiting for the rest.
    let visible = &bytes[HEADER_LEN..bytes.len().min(h.total())];
    if kind == FRAME_METHOD && visible.len() >= 4 {
        let class = u16::from_be_bytes([visible[0], visible[1]]);
        let id = u16::from_be_bytes([visible[2], visible[3]]);
        if method::sender(class, id).is_none() || !channel_fits(class, h.channel) {
            return Walk::No;
        }
    }
    // Content header: class basic, weight 0.
    if kind == FRAME_HEADER && visible.len() >= 4 && visible[..4] != [0, 60, 0, 0] {
        return Walk::No;
    }
    if bytes.len() < h.total() {
        return Walk::NeedMore;
    }
    if bytes[h.total() - 1] != FRAME_END {
        return Walk::No;
    }
    let from = match kind {
        FRAME_METHOD => match method::decode(&bytes[HEADER_LEN..h.total() - 1]) {
            Ok((class, id, m)) if m != Method::Unknown => method::sender(class, id),
            _ => return Walk::No,
        },
        FRAME_HEARTBEAT => Some(Sender::Either),
        _ => None,
    };
    Walk::Frame {
        len: h.total(),
        from,
    }
}
