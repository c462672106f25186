//! One direction of a connection: the protocol header, then frames. Method, content-header and
//! heartbeat frames are consumed only once complete (the connection layer keeps the rest);
//! body frames are consumed as they arrive and never buffered. A broken frame (size beyond
//! frame-max, unknown type, wrong frame-end octet) or an uncaptured gap outside a body makes
//! the stream lose sync; it then drops bytes up to the next trustworthy frame boundary
//! ([`frame::scan`]).

use super::frame::{
    self, protocol_header, FrameHeader, ProtocolHeader, Scan, FRAME_BODY, FRAME_END, FRAME_HEADER,
    FRAME_HEARTBEAT, FRAME_METHOD, HEADER_LEN, MAX_BUFFERED_PAYLOAD,
};
use super::session::Session;
use super::{error, Io, Peer, Start};
use crate::protocol::{L7Event, SegmentCtx};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing parsed yet: the client's protocol header, or else (joining a connection
    /// midway, or the broker's side) a frame boundary to find.
    Fresh,
    /// At a frame boundary.
    Frames,
    /// Inside a payload consumed as it streams: a body frame (`body`: its bytes belong to a
    /// message being assembled), or a frame too large to hold.
    Payload {
        channel: u16,
        remaining: u32,
        body: bool,
    },
    /// After such a payload: the frame-end octet is next.
    FrameEnd { channel: u16, body: bool },
    /// Lost sync: dropping bytes up to a trustworthy frame boundary.
    Resync,
}

/// Remembers which read delivered the bytes the previous call left unconsumed, so a method
/// frame that arrives over several reads starts at its first read. Unconsumed bytes always
/// begin at a frame (or resync candidate) boundary and a frame is consumed whole, so the
/// first unconsumed byte is the first byte of the carried ones.
#[derive(Debug, Default)]
struct Cursor {
    /// Bytes at the front of the next `buf` left over from earlier calls.
    carried: usize,
    carried_start: Option<Start>,
}

fn start_of(ctx: &SegmentCtx) -> Start {
    Start {
        tid: ctx.tid,
        goroutine: ctx.goroutine,
        first_ns: ctx.first_ns,
    }
}

impl Cursor {
    fn start_at(&self, offset: usize, ctx: &SegmentCtx) -> Start {
        match self.carried_start {
            Some(start) if offset < self.carried => start,
            _ => start_of(ctx),
        }
    }

    fn finish(&mut self, len: usize, consumed: usize, ctx: &SegmentCtx) {
        let rest = len - consumed;
        if rest == 0 {
            *self = Cursor::default();
            return;
        }
        // Once resync moved past the carried bytes, what is left came with this read.
        if consumed >= self.carried || self.carried_start.is_none() {
            self.carried_start = Some(start_of(ctx));
        }
        self.carried = rest;
    }
}

#[derive(Debug)]
pub(super) struct Stream {
    peer: Peer,
    state: State,
    cursor: Cursor,
    /// In sync since the connection's first byte: content frames without their method are
    /// errors. False after joining midway or losing sync, where they are expected.
    strict: bool,
}

impl Stream {
    pub(super) fn new(peer: Peer) -> Self {
        Self {
            peer,
            state: State::Fresh,
            cursor: Cursor::default(),
            strict: false,
        }
    }

    /// Consume what can be consumed of `buf`; returns the count.
    pub(super) fn parse(&mut self, buf: &[u8], session: &mut Session, io: &mut Io) -> usize {
        let mut pos = 0;
        // Every state consumes at least one byte, changes to a state that will, or waits.
        // (A payload state never has 0 bytes left: it turns into FrameEnd first.)
        while pos < buf.len() {
            let rest = &buf[pos..];
            let step = match self.state {
                State::Fresh => self.fresh(rest),
                State::Frames => self.frame(rest, pos, session, io),
                State::Payload {
                    channel,
                    remaining,
                    body,
                } => {
                    let take = rest.len().min(remaining as usize);
                    if body {
                        session.body(self.peer, channel, &rest[..take]);
                    }
                    // take <= remaining, a u32.
                    let remaining = remaining - take as u32;
                    self.state = if remaining == 0 {
                        State::FrameEnd { channel, body }
                    } else {
                        State::Payload {
                            channel,
                            remaining,
                            body,
                        }
                    };
                    Some(take)
                }
                State::FrameEnd { channel, body } => {
                    if rest[0] == FRAME_END {
                        self.state = State::Frames;
                        if body {
                            session.body_end(self.peer, channel, io);
                        }
                        Some(1)
                    } else {
                        Some(self.fail(
                            "frame-end octet missing after a streamed payload",
                            session,
                            io,
                        ))
                    }
                }
                State::Resync => match frame::scan(rest, self.peer, session.payload_limit()) {
                    Scan::Found(at) => {
                        self.state = State::Frames;
                        Some(at)
                    }
                    Scan::Partial(at) => {
                        pos += at;
                        None
                    }
                    Scan::Nothing => Some(rest.len()),
                },
            };
            match step {
                Some(n) => pos += n,
                None => break,
            }
        }
        self.cursor.finish(buf.len(), pos, io.ctx);
        pos
    }

    /// The stream's first bytes: the protocol header means the connection starts here and
    /// every frame will be seen; anything else means joining midway, so look for a boundary.
    fn fresh(&mut self, rest: &[u8]) -> Option<usize> {
        match protocol_header(rest) {
            ProtocolHeader::Partial => None,
            // Only the client opens with it (a broker sends its own only to refuse a version).
            ProtocolHeader::Amqp091 if self.peer == Peer::Client => {
                self.state = State::Frames;
                self.strict = true;
                Some(frame::PROTOCOL_HEADER.len())
            }
            // Another AMQP version (the broker answers with its own header and closes), or
            // not a header at all.
            ProtocolHeader::Amqp091 | ProtocolHeader::OtherVersion | ProtocolHeader::No => {
                // The broker's side of a connection seen from its start begins with
                // connection.start: wait until that can be told.
                let n = rest.len().min(3);
                if self.peer == Peer::Broker
                    && rest.len() < HEADER_LEN + 4
                    && rest[..n] == [FRAME_METHOD, 0, 0][..n]
                {
                    return None;
                }
                self.strict = self.peer == Peer::Broker && is_connection_start(rest);
                self.state = State::Resync;
                Some(0)
            }
        }
    }

    /// At a frame boundary: handle one whole frame, or start streaming a payload.
    fn frame(
        &mut self,
        rest: &[u8],
        pos: usize,
        session: &mut Session,
        io: &mut Io,
    ) -> Option<usize> {
        let h = FrameHeader::parse(rest)?;
        let limit = session.payload_limit();
        if !matches!(
            h.kind,
            FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
        ) {
            return Some(self.fail(format!("unknown frame type {}", h.kind), session, io));
        }
        if h.size > limit {
            let detail = format!(
                "frame of {} bytes exceeds frame-max ({} payload bytes)",
                h.size, limit
            );
            return Some(self.fail(detail, session, io));
        }
        if h.kind == FRAME_BODY {
            let body = session.body_start(self.peer, h.channel, h.size, self.strict, io);
            self.state = if h.size == 0 {
                State::FrameEnd {
                    channel: h.channel,
                    body,
                }
            } else {
                State::Payload {
                    channel: h.channel,
                    remaining: h.size,
                    body,
                }
            };
            return Some(HEADER_LEN);
        }
        if h.size > MAX_BUFFERED_PAYLOAD {
            // Too big to hold: skip it as it streams. A content header this big loses its
            // message (and the body frames after it are skipped quietly).
            io.errors.push(error(
                "frame",
                format!(
                    "{} bytes, more than {} are not held",
                    h.size, MAX_BUFFERED_PAYLOAD
                ),
            ));
            session.discard(self.peer, h.channel);
            self.state = State::Payload {
                channel: h.channel,
                remaining: h.size,
                body: false,
            };
            return Some(HEADER_LEN);
        }
        let total = h.total();
        let frame = rest.get(..total)?;
        if frame[total - 1] != FRAME_END {
            return Some(self.fail("frame-end octet missing", session, io));
        }
        let payload = &frame[HEADER_LEN..total - 1];
        match h.kind {
            FRAME_METHOD => {
                let start = self.cursor.start_at(pos, io.ctx);
                session.method(self.peer, h.channel, payload, start, io);
            }
            FRAME_HEADER => session.header(self.peer, h.channel, payload, self.strict, io),
            _ => {
                // Heartbeats belong to channel 0 and carry nothing (spec §4.2.7).
                if h.channel != 0 || h.size != 0 {
                    io.errors.push(error(
                        "frame",
                        format!("heartbeat on channel {} with {} bytes", h.channel, h.size),
                    ));
                }
            }
        }
        Some(total)
    }

    /// The frame at the current position is broken: report it, lose sync, and resume the
    /// search one byte further (the frame's start was plausible, its bytes are not trusted).
    fn fail(&mut self, detail: impl Into<String>, session: &mut Session, io: &mut Io) -> usize {
        io.errors.push(error("frame", detail));
        self.lose_sync(session, io.ctx.last_ns, io.out);
        1
    }

    fn lose_sync(&mut self, session: &mut Session, now: u64, out: &mut Vec<L7Event>) {
        session.lost_sync(self.peer, now, out);
        self.state = State::Resync;
        self.strict = false;
    }

    /// `n` uncaptured bytes follow everything parsed so far; `unconsumed` bytes were held
    /// back. True when the gap fell inside a streamed payload (and possibly its frame-end
    /// octet, which is then taken on trust: the lengths agree).
    pub(super) fn skip(
        &mut self,
        n: u64,
        unconsumed: usize,
        session: &mut Session,
        io: &mut Io,
    ) -> bool {
        if unconsumed == 0 {
            match self.state {
                State::Payload {
                    channel,
                    remaining,
                    body,
                } if n <= u64::from(remaining) + 1 => {
                    let in_payload = n.min(u64::from(remaining));
                    if body {
                        session.body_gap(self.peer, channel, in_payload);
                    }
                    // in_payload <= remaining, a u32.
                    let left = remaining - in_payload as u32;
                    if n > u64::from(remaining) {
                        // The frame-end octet went too.
                        self.state = State::Frames;
                        if body {
                            session.body_end(self.peer, channel, io);
                        }
                    } else if left == 0 {
                        self.state = State::FrameEnd { channel, body };
                    } else {
                        self.state = State::Payload {
                            channel,
                            remaining: left,
                            body,
                        };
                    }
                    return true;
                }
                State::FrameEnd { channel, body } if n == 1 => {
                    self.state = State::Frames;
                    if body {
                        session.body_end(self.peer, channel, io);
                    }
                    return true;
                }
                _ => {}
            }
        }
        self.lose_sync(session, io.ctx.last_ns, io.out);
        self.cursor = Cursor::default();
        false
    }

    /// Records were lost before the next bytes (see `AmqpConn::gap`).
    pub(super) fn gap(&mut self, session: &mut Session, now: u64, out: &mut Vec<L7Event>) {
        self.lose_sync(session, now, out);
        self.cursor = Cursor::default();
    }
}

/// A connection.start method frame on channel 0 at the start of `bytes` (header only).
fn is_connection_start(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN + 4
        && bytes[..3] == [FRAME_METHOD, 0, 0]
        && bytes[HEADER_LEN..HEADER_LEN + 4] == [0, 10, 0, 10]
}
