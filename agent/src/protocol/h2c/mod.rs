//! HTTP/1.1 `Upgrade: h2c` (RFC 7540 §3.2): the hand-over from the HTTP/1 parser to the
//! HTTP/2 parser when a server switches a cleartext connection to HTTP/2.
//!
//! The exchange: the client sends an HTTP/1.1 request with `Upgrade: h2c` and `HTTP2-Settings`
//! (its SETTINGS payload, base64url); a server that accepts answers `101 Switching Protocols`
//! with `Upgrade: h2c` and from the byte after that head speaks HTTP/2: its connection preface
//! (a SETTINGS frame), then the response to the upgrade request on stream 1, which is
//! half-closed from the client's side (RFC 7540 §3.2, §5.1). The client sends its connection
//! preface (`PRI * HTTP/2.0...`) once it has read the 101, then new requests on streams 3, 5,
//! ... A server that does not accept simply answers in HTTP/1.1 and nothing changes. RFC 9113
//! §3.1 deprecates the mechanism, but curl (`--http2` on `http://` URLs) and Go's
//! `x/net/http2/h2c` still use it.
//!
//! This module owns what crosses the boundary ([`H2cOffer`], [`H2cUpgrade`]) and the header
//! checks both parsers need. The HTTP/1 parser records the offer with the request and stops at
//! the 101 and names its successor ([`super::Parser::successor`]): an HTTP/2 parser built by
//! `H2Conn::upgraded`, which [`super::ConnParser`] puts in its place within the same parse
//! call, and which ends the upgrade request's exchange (the `RequestStart` the HTTP/1
//! parser already emitted) with stream 1's response. The two directions are captured
//! separately, so the client's preface may be seen before the 101: the HTTP/1 parser holds it
//! back (bounded) and hands a copy over. The span layer reports such an exchange as HTTP/2
//! (`crate::span::http2`, `upgraded_span`).

use super::http2::PREFACE;
use super::SegmentCtx;

/// Longest `HTTP2-Settings` value decoded: 512 base64 characters are 384 bytes, 64 settings;
/// RFC 9113 defines six. A longer value is ignored (the settings then come from the client's
/// SETTINGS frame only).
const MAX_SETTINGS_VALUE: usize = 512;

/// What an HTTP/1.1 request offered: `Upgrade: h2c`, with the client's SETTINGS from
/// `HTTP2-Settings` (RFC 7540 §3.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct H2cOffer {
    /// The decoded SETTINGS frame payload; empty when the header was absent, repeated or not
    /// decodable.
    pub settings: Vec<u8>,
}

/// The upgrade request's exchange, answered on stream 1 after the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpgradedExchange {
    /// `seq` of the `RequestStart` the HTTP/1 parser emitted for the request.
    pub seq: u64,
    /// Request body bytes the HTTP/1 parser counted (RFC 7540 §3.2: the body is sent in full
    /// before the client's first HTTP/2 frame).
    pub request_body_size: u64,
}

/// What the HTTP/1 parser hands to the HTTP/2 parser at a `101` with `Upgrade: h2c`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct H2cUpgrade {
    /// `None` when the request was not reported (the agent joined after it, or its head was
    /// lost): stream 1's response then ends no exchange.
    pub exchange: Option<UpgradedExchange>,
    /// The HTTP/1 parser numbered its requests `0..http1_seqs`: the HTTP/2 parser's seqs must
    /// not reuse them.
    pub http1_seqs: u64,
    /// The client's SETTINGS payload from `HTTP2-Settings` (maybe empty).
    pub settings: Vec<u8>,
    /// The client's first HTTP/2 bytes when they were seen before the 101 (the directions are
    /// captured separately): the HTTP/1 parser left them unconsumed, so the caller passes them
    /// again with the client's next bytes; the HTTP/2 parser parses this copy at the switch
    /// and then skips them.
    pub client_bytes: Vec<u8>,
    /// The read that delivered the first of `client_bytes` (their timing, approximately).
    pub client_ctx: Option<SegmentCtx>,
}

/// Does an `Upgrade` field value (a comma-separated list of `protocol-name["/"version]`, RFC
/// 9110 §7.8) name `h2c`? Compared case-insensitively, as Go's server does.
pub fn lists_h2c(value: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|item| {
        let item = item.trim_ascii();
        let name = item.split(|&b| b == b'/').next().unwrap_or_default();
        name.eq_ignore_ascii_case(b"h2c")
    })
}

/// Decode an `HTTP2-Settings` value: the SETTINGS payload in base64url (RFC 4648 §5) without
/// padding (RFC 7540 §3.2.1; trailing `=` tolerated). `None` when not decodable, too long, or
/// not a whole number of 6-byte settings.
pub fn decode_settings(value: &[u8]) -> Option<Vec<u8>> {
    let mut value = value.trim_ascii();
    for _ in 0..2 {
        value = value.strip_suffix(b"=").unwrap_or(value);
    }
    if value.len() > MAX_SETTINGS_VALUE || value.len() % 4 == 1 {
        return None;
    }
    let sextet = |b: u8| -> Option<u32> {
        Some(u32::from(match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        }))
    };
    let mut out = Vec::with_capacity(value.len() * 3 / 4);
    for chunk in value.chunks(4) {
        let mut acc = 0u32;
        for &b in chunk {
            acc = (acc << 6) | sextet(b)?;
        }
        // 2, 3 or 4 characters carry 1, 2 or 3 bytes; the spare low bits are dropped.
        let bytes = chunk.len() * 6 / 8;
        acc <<= 6 * (4 - chunk.len());
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + bytes]);
    }
    (out.len() % 6 == 0).then_some(out)
}

/// Do `bytes` start with the HTTP/2 client connection preface, or with a part of it that
/// more bytes could complete?
pub fn starts_like_preface(bytes: &[u8]) -> bool {
    let n = bytes.len().min(PREFACE.len());
    n > 0 && bytes[..n] == PREFACE[..n]
}

#[cfg(test)]
mod tests;
