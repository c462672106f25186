//! HTTP/2 frame headers (RFC 9113 section 4.1) and the per-type rules that can be checked
//! from a header alone (section 6): used both to parse and, strictly, to recognise a frame
//! chain when joining a connection mid-way.

pub const HEADER_LEN: usize = 9;
/// RFC 9113 section 3.4.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// SETTINGS_MAX_FRAME_SIZE initial value (section 6.5.2); the largest legal value is 2^24-1.
pub const DEFAULT_MAX_FRAME: u32 = 16_384;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY_FLAG: u8 = 0x20;

/// SETTINGS identifiers (section 6.5.2).
pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    /// `b` holds at least [`HEADER_LEN`] bytes. The reserved bit of the stream id is ignored
    /// on receipt (section 4.1).
    pub fn read(b: &[u8]) -> Option<Self> {
        let h = b.get(..HEADER_LEN)?;
        Some(Self {
            len: u32::from_be_bytes([0, h[0], h[1], h[2]]),
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        })
    }

    /// Violations of section 6 detectable from the header: stream-0 rules and fixed lengths.
    /// These are connection errors (PROTOCOL_ERROR / FRAME_SIZE_ERROR) for a real peer.
    pub fn violation(&self) -> Option<&'static str> {
        let on_zero = self.stream == 0;
        match self.kind {
            DATA | HEADERS | CONTINUATION | PUSH_PROMISE | PRIORITY | RST_STREAM if on_zero => {
                Some("stream-level frame on stream 0")
            }
            SETTINGS | PING | GOAWAY if !on_zero => Some("connection-level frame on a stream"),
            SETTINGS if !self.len.is_multiple_of(6) || (self.flags & ACK != 0 && self.len != 0) => {
                Some("SETTINGS length")
            }
            PRIORITY if self.len != 5 => Some("PRIORITY length"),
            RST_STREAM | WINDOW_UPDATE if self.len != 4 => Some("RST_STREAM/WINDOW_UPDATE length"),
            PING if self.len != 8 => Some("PING length"),
            GOAWAY if self.len < 8 => Some("GOAWAY length"),
            _ => None,
        }
    }

    /// Stricter than the RFC (which says unknown flags and types are ignored): for
    /// recognising frames without having seen the preface, only defined types and flags.
    fn plausible(&self) -> bool {
        let allowed_flags = match self.kind {
            DATA => END_STREAM | PADDED,
            HEADERS => END_STREAM | END_HEADERS | PADDED | PRIORITY_FLAG,
            SETTINGS | PING => ACK,
            PUSH_PROMISE => END_HEADERS | PADDED,
            CONTINUATION => END_HEADERS,
            PRIORITY | RST_STREAM | GOAWAY | WINDOW_UPDATE => 0,
            _ => return false,
        };
        self.flags & !allowed_flags == 0
            && self.len <= DEFAULT_MAX_FRAME
            && self.violation().is_none()
    }
}

/// Does `bytes` look like a chain of HTTP/2 frames from its first byte to its end (the last
/// frame's payload may continue past the end)? Needs at least one complete frame header and
/// every header in the chain plausible.
pub fn plausible_chain(bytes: &[u8]) -> bool {
    let mut at = 0;
    let mut frames = 0;
    while at < bytes.len() {
        let Some(h) = FrameHeader::read(&bytes[at..]) else {
            // A partial header at the end: fine only after complete frames.
            return frames > 0;
        };
        if !h.plausible() || (h.stream != 0 && bytes[at + 5] & 0x80 != 0) {
            return false;
        }
        frames += 1;
        at += HEADER_LEN + h.len as usize;
    }
    frames > 0
}
