//! HTTP/2 over cleartext TCP (RFC 9113, "h2c" with prior knowledge or after an HTTP/1.1
//! `Upgrade: h2c`) and gRPC on top of it: detection, framing, HPACK (RFC 7541) and streams as
//! exchanges, for one connection.
//!
//! This module owns turning the two reassembled byte streams of a connection into
//! `RequestStart` / `ExchangeEnd` events, one exchange per client-initiated stream:
//!
//! - `frame`: frame headers, per-type rules, the frame-chain check used for mid-connection
//!   detection;
//! - `hpack`: one decoder per direction (dynamic table, Huffman, literals);
//! - `stream`: the bounded set of open streams, the fields copied out, the events;
//! - here: the preface, the per-direction frame reader (frames split over any number of
//!   reads, DATA payloads streamed and counted, header blocks buffered up to a bound),
//!   SETTINGS/RST_STREAM/GOAWAY, gaps and close.
//!
//! It does not own: reassembly (`crate::conn`), trace-context validation, span construction,
//! TLS/ALPN ("h2" over TLS reaches it only if the bytes are captured in clear), the HTTP/1.1
//! part of an `Upgrade: h2c` connection (`super::http1` parses it up to the 101, then
//! [`H2Conn::upgraded`] continues), or server push spans (PUSH_PROMISE blocks are decoded only
//! to keep HPACK in sync).
//!
//! On lost framing (a frame larger than allowed, an HPACK error, a broken header block, a
//! capture gap outside a DATA payload) the parser stops for the rest of the connection and
//! aborts the open streams rather than guess.

mod frame;
pub mod hpack;
mod stream;
#[cfg(test)]
mod tests;

use super::h2c::H2cUpgrade;
use super::{
    Detection, Direction, L7Event, ParseError, Protocol, ProtocolId, ProtocolOutcome,
    ProtocolRequest, Role, SegmentCtx,
};
use frame::FrameHeader;
pub use frame::PREFACE;
use hpack::Decoder;
use stream::{Headers, Streams};

/// Largest header block (HEADERS/PUSH_PROMISE + CONTINUATIONs) or other non-DATA frame
/// buffered; beyond it the connection is given up.
pub const MAX_BLOCK: usize = 256 * 1024;

/// Does this direction start like HTTP/2, and which way do requests flow?
///
/// The client preface in the client's direction is a `Match` (a prefix of it `NeedMore`).
/// Without a preface (the agent joined a live connection) only a strict chain of plausible
/// frame headers covering all of `bytes` matches, and only with a known role (frames alone do
/// not say which side is the client).
pub fn detect(dir: Direction, role: Role, bytes: &[u8]) -> Detection {
    let client_dir = match (role, dir) {
        (Role::Client, _) => Some(Direction::Egress),
        (Role::Server, _) => Some(Direction::Ingress),
        _ => None,
    };
    let n = bytes.len().min(frame::PREFACE.len());
    if n > 0 && bytes[..n] == frame::PREFACE[..n] && client_dir.is_none_or(|c| c == dir) {
        if n < frame::PREFACE.len() {
            return Detection::NeedMore;
        }
        return Detection::Match { request_dir: dir };
    }
    match client_dir {
        Some(request_dir) if dir != Direction::None && frame::plausible_chain(bytes) => {
            Detection::Match { request_dir }
        }
        _ => Detection::NoMatch,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Nothing parsed yet in this direction: preface (client) or first frame decide whether
    /// the connection is seen from its start.
    Start,
    /// Expecting a frame header.
    Frame,
    /// Inside a DATA payload: data bytes then padding still to come.
    Data {
        stream: u32,
        data: u32,
        pad: u32,
        end_stream: bool,
    },
    /// Inside a payload that is ignored (unknown type, invalid frame).
    Skip { left: u32 },
}

/// A header block waiting for its CONTINUATION frames (section 6.10).
#[derive(Debug)]
struct Block {
    stream: u32,
    push: bool,
    end_stream: bool,
    buf: Vec<u8>,
    /// Segment holding the HEADERS frame's first byte.
    start: SegmentCtx,
}

/// One direction: what its sender sends.
#[derive(Debug)]
struct Side {
    read: Read,
    decoder: Decoder,
    block: Option<Block>,
    /// Largest frame this sender may send: SETTINGS_MAX_FRAME_SIZE of the receiver (the
    /// largest it advertised: SETTINGS and frames race across directions).
    max_frame: u32,
    /// Largest SETTINGS_HEADER_TABLE_SIZE the receiver advertised, kept apart from the decoder
    /// because the decoder is replaced when this side's first bytes arrive, which can be after
    /// the receiver's SETTINGS.
    table_size: Option<u32>,
    /// Segment that delivered the first unconsumed byte, when bytes were left unconsumed.
    carry: Option<SegmentCtx>,
}

impl Side {
    fn new() -> Self {
        Self {
            read: Read::Start,
            decoder: Decoder::new(false),
            block: None,
            max_frame: frame::DEFAULT_MAX_FRAME,
            table_size: None,
            carry: None,
        }
    }

    /// The sender's first bytes: HPACK starts here (`synced`: from the connection's start).
    fn restart_decoder(&mut self, synced: bool) {
        self.decoder = Decoder::new(synced);
        if let Some(size) = self.table_size {
            self.decoder.allow_table_size(size);
        }
    }
}

/// HTTP/2 parser state of one connection.
#[derive(Debug)]
pub struct H2Conn {
    request_dir: Direction,
    /// Index 0: the client's direction, 1: the server's.
    sides: [Side; 2],
    streams: Streams,
    /// Framing lost or connection closed: nothing more is parsed or reported.
    dead: bool,
    /// Continues an HTTP/1.1 connection upgraded to h2c: both directions are known to start
    /// at their HTTP/2 beginning (see [`H2Conn::upgraded`]).
    upgraded: bool,
    /// Bytes at the front of the client's next buffer that were already parsed (handed over
    /// by the HTTP/1 parser, which had left them unconsumed).
    client_skip: usize,
}

const CLIENT: usize = 0;
const SERVER: usize = 1;

fn error(what: &'static str, detail: impl Into<String>) -> ParseError {
    ParseError::Malformed {
        protocol: ProtocolId::Http2,
        what,
        detail: detail.into(),
    }
}

impl H2Conn {
    /// A parser for a connection whose requests flow in `request_dir`.
    pub fn new(request_dir: Direction) -> Self {
        Self {
            request_dir,
            sides: [Side::new(), Side::new()],
            streams: Streams::default(),
            dead: false,
            upgraded: false,
            client_skip: 0,
        }
    }

    /// The parser for a connection the server just switched from HTTP/1.1 to HTTP/2 (RFC 7540
    /// §3.2), fed from the byte after the `101` head on the server's side and from the byte
    /// after the upgrade request on the client's.
    ///
    /// - The server's side starts with its connection preface (a SETTINGS frame) and a fresh
    ///   HPACK context, whichever direction is seen first: the client's preface may be captured
    ///   after the server's first frames, or (held back by the HTTP/1 parser) before.
    /// - Stream 1 is the upgrade request, half-closed (local) for the client: it is open from
    ///   the start, and its response ends the exchange `up.exchange` the HTTP/1 parser started.
    /// - The client's side starts with its preface; bytes before it (the tail of an upgrade
    ///   request body the 101 overtook) are skipped.
    /// - `HTTP2-Settings` (RFC 7540 §3.2.1) are the client's first SETTINGS: they govern the
    ///   frames the server sends before the client's SETTINGS frame is seen.
    /// - The client's bytes the HTTP/1 parser held back (`up.client_bytes`) are parsed now,
    ///   with their own timing when known (else `ctx`'s), and skipped when the caller passes
    ///   them again.
    pub fn upgraded(
        request_dir: Direction,
        up: H2cUpgrade,
        ctx: &SegmentCtx,
        out: &mut Vec<L7Event>,
        errors: &mut Vec<ParseError>,
    ) -> Self {
        let mut conn = Self::new(request_dir);
        conn.upgraded = true;
        // A malformed value only leaves the defaults in place: nothing to report.
        conn.apply_settings(CLIENT, &up.settings, &mut Vec::new());
        conn.streams.upgraded(up.exchange, up.http1_seqs);
        if !up.client_bytes.is_empty() {
            let ctx = up.client_ctx.unwrap_or(*ctx);
            conn.client_skip = conn.parse(request_dir, &up.client_bytes, &ctx, out, errors);
        }
        conn
    }

    fn side_of(&self, dir: Direction) -> Option<usize> {
        match dir {
            Direction::None => None,
            d if d == self.request_dir => Some(CLIENT),
            _ => Some(SERVER),
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
        let Some(side) = self.side_of(dir) else {
            return buf.len();
        };
        if self.dead {
            return buf.len();
        }
        if side == CLIENT && self.client_skip > 0 {
            let skip = self.client_skip.min(buf.len());
            self.client_skip -= skip;
            if self.client_skip > 0 {
                return skip;
            }
            return skip + self.parse(dir, &buf[skip..], ctx, out, errors);
        }
        // Bytes left over from earlier reads are a single incomplete frame at the start of
        // `buf`: its first byte came with the segment remembered in `carry`.
        let head_ctx = self.sides[side].carry.unwrap_or(*ctx);
        let consumed = match self.run(side, buf, &head_ctx, ctx, out, errors) {
            Ok(n) => n,
            Err(e) => {
                errors.push(e);
                self.give_up(ctx.last_ns, out);
                buf.len()
            }
        };
        self.sides[side].carry = match consumed {
            n if n == buf.len() => None,
            0 => Some(head_ctx),
            _ => Some(*ctx),
        };
        consumed
    }

    /// Framing is lost: abort everything and ignore the rest of the connection.
    fn give_up(&mut self, now_ns: u64, out: &mut Vec<L7Event>) {
        self.streams.abort_all(now_ns, out);
        self.dead = true;
    }

    fn run(
        &mut self,
        side: usize,
        buf: &[u8],
        head_ctx: &SegmentCtx,
        ctx: &SegmentCtx,
        out: &mut Vec<L7Event>,
        errors: &mut Vec<ParseError>,
    ) -> Result<usize, ParseError> {
        let mut at = 0;
        loop {
            let rest = &buf[at..];
            match self.sides[side].read {
                Read::Start => match self.start(side, rest) {
                    Some(n) => at += n,
                    None => return Ok(at),
                },
                Read::Data {
                    stream,
                    data,
                    pad,
                    end_stream,
                } => {
                    let take = (data as usize).min(rest.len());
                    self.streams
                        .count_data(stream, side == CLIENT, take as u64, ctx.last_ns);
                    at += take;
                    let data = data - take as u32;
                    let take_pad = (pad as usize).min(buf.len() - at);
                    at += take_pad;
                    let pad = pad - take_pad as u32;
                    if data > 0 || pad > 0 {
                        self.sides[side].read = Read::Data {
                            stream,
                            data,
                            pad,
                            end_stream,
                        };
                        return Ok(at);
                    }
                    self.sides[side].read = Read::Frame;
                    if end_stream && side == SERVER {
                        self.streams.response_end(stream, ctx.last_ns, out);
                    }
                }
                Read::Skip { left } => {
                    let take = (left as usize).min(rest.len());
                    at += take;
                    if take < left as usize {
                        self.sides[side].read = Read::Skip {
                            left: left - take as u32,
                        };
                        return Ok(at);
                    }
                    self.sides[side].read = Read::Frame;
                }
                Read::Frame => {
                    let Some(h) = FrameHeader::read(rest) else {
                        return Ok(at);
                    };
                    let frame_ctx = if at == 0 { head_ctx } else { ctx };
                    match self.frame(side, h, rest, frame_ctx, ctx, out, errors)? {
                        Some(n) => at += n,
                        None => return Ok(at),
                    }
                }
            }
        }
    }

    /// The first bytes of a direction. Returns bytes consumed, `None` to wait for more.
    fn start(&mut self, side: usize, rest: &[u8]) -> Option<usize> {
        let p = frame::PREFACE;
        if side == CLIENT && self.upgraded {
            if let Some(at) = rest.windows(p.len()).position(|w| w == p) {
                self.sides[side].restart_decoder(true);
                self.sides[side].read = Read::Frame;
                return Some(at + p.len());
            }
            // Skip all but a tail that may be the start of the preface.
            let keep = (1..p.len().min(rest.len() + 1))
                .rev()
                .find(|&k| rest[rest.len() - k..] == p[..k])
                .unwrap_or(0);
            return Some(rest.len() - keep).filter(|&n| n > 0);
        }
        if side == CLIENT {
            let n = rest.len().min(p.len());
            if n > 0 && rest[..n] == p[..n] {
                if n < p.len() {
                    return None;
                }
                self.sides[side].restart_decoder(true);
                self.sides[side].read = Read::Frame;
                return Some(p.len());
            }
            if rest.is_empty() {
                return None;
            }
        } else {
            // A server starts with a SETTINGS frame (section 3.4); mid-connection that is rare.
            let h = FrameHeader::read(rest)?;
            let synced = self.upgraded || (h.kind == frame::SETTINGS && h.flags & frame::ACK == 0);
            self.sides[side].restart_decoder(synced);
        }
        self.sides[side].read = Read::Frame;
        Some(0)
    }

    /// One frame whose header is at the start of `rest`. Returns bytes consumed, `None` to
    /// wait for more.
    #[allow(clippy::too_many_arguments)]
    fn frame(
        &mut self,
        side: usize,
        h: FrameHeader,
        rest: &[u8],
        frame_ctx: &SegmentCtx,
        ctx: &SegmentCtx,
        out: &mut Vec<L7Event>,
        errors: &mut Vec<ParseError>,
    ) -> Result<Option<usize>, ParseError> {
        let hl = frame::HEADER_LEN;
        if let Some(b) = &self.sides[side].block {
            // Section 6.10: nothing may interleave with a header block.
            if h.kind != frame::CONTINUATION || h.stream != b.stream {
                return Err(error("header block", "frame interleaved with CONTINUATION"));
            }
        }
        if h.len > self.sides[side].max_frame {
            return Err(error(
                "frame",
                format!("length {} above the maximum", h.len),
            ));
        }
        if let Some(v) = h.violation() {
            errors.push(error("frame", v));
            if matches!(
                h.kind,
                frame::HEADERS | frame::CONTINUATION | frame::PUSH_PROMISE
            ) {
                // A header block we cannot decode leaves HPACK out of sync.
                return Err(error("header block", "on stream 0"));
            }
            self.sides[side].read = Read::Skip { left: h.len };
            return Ok(Some(hl));
        }
        match h.kind {
            frame::DATA => {
                let padded = h.flags & frame::PADDED != 0;
                let mut n = hl;
                let mut pad = 0u32;
                if padded {
                    let Some(&p) = rest.get(hl) else {
                        return Ok(None);
                    };
                    n += 1;
                    pad = u32::from(p);
                }
                let payload = h.len.saturating_sub(u32::from(padded));
                if (h.len == 0 && padded) || pad > payload {
                    errors.push(error("DATA", "padding exceeds payload"));
                    self.sides[side].read = Read::Skip {
                        left: payload.min(h.len),
                    };
                    return Ok(Some(n));
                }
                self.sides[side].read = Read::Data {
                    stream: h.stream,
                    data: payload - pad,
                    pad,
                    end_stream: h.flags & frame::END_STREAM != 0,
                };
                Ok(Some(n))
            }
            frame::HEADERS
            | frame::CONTINUATION
            | frame::PUSH_PROMISE
            | frame::PRIORITY
            | frame::RST_STREAM
            | frame::SETTINGS
            | frame::PING
            | frame::GOAWAY
            | frame::WINDOW_UPDATE => {
                if h.len as usize > MAX_BLOCK {
                    return Err(error(
                        "frame",
                        format!("{} bytes, too large to buffer", h.len),
                    ));
                }
                let end = hl + h.len as usize;
                let Some(payload) = rest.get(hl..end) else {
                    return Ok(None);
                };
                self.control(side, h, payload, frame_ctx, ctx, out, errors)?;
                Ok(Some(end))
            }
            _ => {
                // Section 4.1 / 5.5: unknown frame types are ignored.
                self.sides[side].read = Read::Skip { left: h.len };
                Ok(Some(hl))
            }
        }
    }

    /// A complete non-DATA frame.
    #[allow(clippy::too_many_arguments)]
    fn control(
        &mut self,
        side: usize,
        h: FrameHeader,
        p: &[u8],
        frame_ctx: &SegmentCtx,
        ctx: &SegmentCtx,
        out: &mut Vec<L7Event>,
        errors: &mut Vec<ParseError>,
    ) -> Result<(), ParseError> {
        let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        match h.kind {
            frame::HEADERS | frame::PUSH_PROMISE => {
                let push = h.kind == frame::PUSH_PROMISE;
                let mut frag = p;
                let mut pad = 0;
                if h.flags & frame::PADDED != 0 {
                    let (&n, r) = frag
                        .split_first()
                        .ok_or_else(|| error("HEADERS", "no pad length"))?;
                    pad = n as usize;
                    frag = r;
                }
                // Section 6.2: PRIORITY fields; 6.6: the promised stream id.
                let skip = if push {
                    4
                } else if h.flags & frame::PRIORITY_FLAG != 0 {
                    5
                } else {
                    0
                };
                if frag.len() < skip + pad {
                    return Err(error("HEADERS", "padding exceeds payload"));
                }
                frag = &frag[skip..frag.len() - pad];
                self.sides[side].block = Some(Block {
                    stream: h.stream,
                    push,
                    end_stream: !push && h.flags & frame::END_STREAM != 0,
                    buf: frag.to_vec(),
                    start: *frame_ctx,
                });
                if h.flags & frame::END_HEADERS != 0 {
                    self.finish_block(side, ctx, out, errors)?;
                }
            }
            frame::CONTINUATION => {
                let Some(b) = self.sides[side].block.as_mut() else {
                    return Err(error("CONTINUATION", "without a header block"));
                };
                if b.buf.len() + p.len() > MAX_BLOCK {
                    return Err(error("header block", "too large to buffer"));
                }
                b.buf.extend_from_slice(p);
                if h.flags & frame::END_HEADERS != 0 {
                    self.finish_block(side, ctx, out, errors)?;
                }
            }
            frame::RST_STREAM => {
                self.streams.end(
                    h.stream,
                    ctx.last_ns,
                    H2Outcome::Reset {
                        error_code: be32(p),
                    },
                    out,
                );
            }
            frame::SETTINGS if h.flags & frame::ACK == 0 => self.apply_settings(side, p, errors),
            frame::GOAWAY if side == SERVER => {
                let last = be32(p) & 0x7fff_ffff;
                self.streams.goaway(last, be32(&p[4..]), ctx.last_ns, out);
            }
            _ => {}
        }
        Ok(())
    }

    /// A SETTINGS payload sent by `side`. Section 6.5: each side's SETTINGS govern what the
    /// other side sends.
    fn apply_settings(&mut self, side: usize, p: &[u8], errors: &mut Vec<ParseError>) {
        let other = 1 - side;
        for s in p.chunks_exact(6) {
            let id = u16::from_be_bytes([s[0], s[1]]);
            let v = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
            match id {
                frame::SETTINGS_HEADER_TABLE_SIZE => {
                    let o = &mut self.sides[other];
                    o.table_size = Some(o.table_size.unwrap_or(0).max(v));
                    o.decoder.allow_table_size(v);
                }
                frame::SETTINGS_MAX_FRAME_SIZE => {
                    if !(frame::DEFAULT_MAX_FRAME..=0xff_ffff).contains(&v) {
                        errors.push(error("SETTINGS", format!("MAX_FRAME_SIZE {v}")));
                    } else {
                        let m = &mut self.sides[other].max_frame;
                        *m = (*m).max(v);
                    }
                }
                _ => {}
            }
        }
    }

    /// A complete header block: decode it (always, to keep HPACK in sync) and apply it.
    fn finish_block(
        &mut self,
        side: usize,
        ctx: &SegmentCtx,
        out: &mut Vec<L7Event>,
        errors: &mut Vec<ParseError>,
    ) -> Result<(), ParseError> {
        let Some(b) = self.sides[side].block.take() else {
            return Ok(());
        };
        let mut h = Headers::default();
        let stats = self.sides[side]
            .decoder
            .decode(&b.buf, |f| h.add(f))
            .map_err(|e| error("HPACK", e.to_string()))?;
        if stats.cut > 0 {
            errors.push(ParseError::Limited {
                protocol: ProtocolId::Http2,
                what: "header block fields beyond MAX_FIELDS_PER_BLOCK",
            });
        }
        let id = b.stream;
        if b.push || id % 2 == 0 {
            // Server push (section 8.4): decoded for HPACK only.
            return Ok(());
        }
        if side == CLIENT {
            if self.streams.is_open(id) || id <= self.streams.max_client_id() {
                // Request trailers, or a stream already over.
                return Ok(());
            }
            // Joined mid-connection, a block without pseudo-headers is the trailers of a
            // stream that started before the agent looked, not a request.
            if !h.pseudo && h.request.unknown_fields == 0 {
                self.streams.saw_client_id(id);
                return Ok(());
            }
            self.streams.start(id, h, b.start, ctx.last_ns, out);
        } else {
            self.streams.response_headers(id, &h);
            if b.end_stream {
                self.streams.response_end(id, ctx.last_ns, out);
            }
        }
        Ok(())
    }

    /// `n` bytes moved in `dir` without being captured; see
    /// [`crate::protocol::Parser::skip`]. Absorbed only inside a DATA (or ignored)
    /// payload; otherwise framing is lost and the connection is given up.
    pub fn skip(
        &mut self,
        dir: Direction,
        n: u64,
        unconsumed: usize,
        ctx: &SegmentCtx,
        out: &mut Vec<L7Event>,
    ) -> bool {
        if n == 0 {
            return true;
        }
        let Some(side) = self.side_of(dir) else {
            return true;
        };
        if self.dead {
            return unconsumed == 0;
        }
        if unconsumed == 0 {
            match self.sides[side].read {
                Read::Data {
                    stream,
                    data,
                    pad,
                    end_stream,
                } if n <= u64::from(data) + u64::from(pad) => {
                    let d = n.min(u64::from(data));
                    self.streams
                        .count_data(stream, side == CLIENT, d, ctx.last_ns);
                    let data = data - d as u32;
                    let pad = pad - (n - d) as u32;
                    if data == 0 && pad == 0 {
                        self.sides[side].read = Read::Frame;
                        if end_stream && side == SERVER {
                            self.streams.response_end(stream, ctx.last_ns, out);
                        }
                    } else {
                        self.sides[side].read = Read::Data {
                            stream,
                            data,
                            pad,
                            end_stream,
                        };
                    }
                    return true;
                }
                Read::Skip { left } if n <= u64::from(left) => {
                    let left = left - n as u32;
                    self.sides[side].read = if left == 0 {
                        Read::Frame
                    } else {
                        Read::Skip { left }
                    };
                    return true;
                }
                _ => {}
            }
        }
        self.give_up(ctx.last_ns, out);
        false
    }

    /// The connection closed at `ts_ns`: every open stream is aborted.
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<L7Event>) {
        self.streams.abort_all(ts_ns, out);
        self.dead = true;
    }

    /// Records were lost before the next bytes; see [`crate::protocol::Parser::gap`]. Every
    /// open stream is aborted and the connection is given up: the lost bytes may hold header
    /// blocks that changed HPACK's dynamic table (RFC 7541 §2.3.2), after which every later
    /// header decoded from it could name the wrong method or path, and frame boundaries are
    /// lost too.
    pub fn gap(&mut self, ts_ns: u64, out: &mut Vec<L7Event>) -> bool {
        self.give_up(ts_ns, out);
        false
    }

    #[cfg(test)]
    fn open_streams(&self) -> usize {
        self.streams.len()
    }
}

impl Protocol for H2Conn {
    const ID: ProtocolId = ProtocolId::Http2;
    const NAME: &'static str = "http2";
    const DISPLAY: &'static str = "HTTP/2";
    /// One buffered frame at most: a header block of `MAX_BLOCK` and its frame header.
    const MAX_UNCONSUMED: usize = MAX_BLOCK + 9;
    const SERVER_SIDE_SPANS: bool = true;
    const MULTIPLEXED: bool = true;
    const CARRIES_CONTEXT: bool = true;
    type Request = H2Request;
    type Outcome = H2End;

    fn detect(dir: Direction, role: Role, bytes: &[u8]) -> Detection {
        detect(dir, role, bytes)
    }

    fn new(request_dir: Direction) -> Self {
        H2Conn::new(request_dir)
    }
}

super::parser_by_inherent_methods!(H2Conn);

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

/// How an HTTP/2 stream's exchange ended, with the request's DATA size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H2End {
    pub outcome: H2Outcome,
    /// DATA bytes the request sent.
    pub request_body_size: u64,
}

impl ProtocolRequest for H2Request {
    fn trace_headers(&self) -> (Option<&str>, Option<&str>) {
        (self.traceparent.as_deref(), self.tracestate.as_deref())
    }
}

impl ProtocolOutcome for H2End {
    fn aborted(&self) -> bool {
        self.outcome == H2Outcome::Aborted
    }
}
