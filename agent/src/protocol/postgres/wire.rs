//! Wire-level pieces of protocol 3.0 (PostgreSQL documentation, Frontend/Backend Protocol,
//! "Message Formats"): message types, length limits, integer and string fields.
//!
//! Every message but the startup-phase ones is a type byte, an Int32 length that counts
//! itself but not the type byte, and a body. Startup-phase messages (StartupMessage,
//! SSLRequest, GSSENCRequest, CancelRequest) have no type byte: Int32 length, Int32 code.

/// Type byte + Int32 length.
pub(super) const HEADER: usize = 5;

/// `PQ_SMALL_MESSAGE_LIMIT`: the server refuses longer Sync, Flush, Execute, Describe, Close,
/// Terminate, CopyDone and CopyFail messages (and closes the connection).
pub(super) const SMALL_LIMIT: u32 = 10_000;
/// `PQ_LARGE_MESSAGE_LIMIT` (1 GiB - 2): the server's bound for Query, Parse, Bind,
/// FunctionCall and CopyData; we use it for every message that may be long.
pub(super) const LARGE_LIMIT: u32 = 0x3fff_fffe;
/// libpq drops a connection on a backend message longer than this unless its type may be
/// long (RowDescription, DataRow, CopyData, FunctionCallResponse, ErrorResponse,
/// NoticeResponse, NotificationResponse).
pub(super) const BACKEND_SHORT_LIMIT: u32 = 30_000;
/// `PG_MAX_AUTH_TOKEN_LENGTH`: the largest password/SASL/GSS response the server reads.
pub(super) const AUTH_LIMIT: u32 = 65_535 + 4;
/// `MAX_STARTUP_PACKET_LENGTH`.
pub(super) const MAX_STARTUP: u32 = 10_000;

/// StartupMessage protocol version 3.0; 3.2 (PostgreSQL 18) is accepted too.
pub(super) const PROTOCOL_3_0: u32 = 0x0003_0000;
pub(super) const PROTOCOL_3_MAX: u32 = 0x0003_0002;
pub(super) const SSL_REQUEST: u32 = 80_877_103;
pub(super) const GSSENC_REQUEST: u32 = 80_877_104;
pub(super) const CANCEL_REQUEST: u32 = 80_877_102;

/// Query text kept per Query or Parse message; the rest of a longer one is skipped. The
/// sanitised form is far shorter (`sql::MAX_SANITIZED`), and holding a message head
/// this long stays within the connection layer's buffer.
pub(super) const MAX_TEXT: usize = 64 * 1024;
/// Bytes of a Bind or Parse head read for names (statement and portal names are short:
/// drivers use `P_0`, `_pg3_1`, `S_1`; the server truncates nothing, but nobody sends more).
pub(super) const NAME_HEAD: usize = 4096;
/// Bytes of a CommandComplete read for its tag (tags are a verb and up to two numbers).
pub(super) const TAG_HEAD: usize = 1024;
/// Bytes of an ErrorResponse read for its fields. The server sends Severity, Severity
/// (non-localised), Code first, so they always fit.
pub(super) const ERROR_HEAD: usize = 8192;

/// Longest frontend message the server accepts for `ty`, or `None` if `ty` is not a
/// frontend message type.
pub(super) fn frontend_limit(ty: u8) -> Option<u32> {
    match ty {
        b'Q' | b'P' | b'B' | b'F' | b'd' => Some(LARGE_LIMIT),
        b'C' | b'D' | b'E' | b'H' | b'S' | b'X' | b'c' | b'f' => Some(SMALL_LIMIT),
        b'p' => Some(AUTH_LIMIT),
        _ => None,
    }
}

/// Longest backend message a client accepts for `ty`, or `None` if `ty` is not a backend
/// message type.
pub(super) fn backend_limit(ty: u8) -> Option<u32> {
    match ty {
        b'T' | b'D' | b'd' | b'V' | b'E' | b'N' | b'A' | b't' => Some(LARGE_LIMIT),
        b'R' | b'S' | b'K' | b'Z' | b'C' | b'1' | b'2' | b'3' | b'n' | b'I' | b's' | b'G'
        | b'H' | b'W' | b'c' | b'v' => Some(BACKEND_SHORT_LIMIT),
        _ => None,
    }
}

/// Body length of the backend messages with a fixed size (any other is malformed).
pub(super) fn backend_fixed_body(ty: u8) -> Option<u32> {
    match ty {
        b'1' | b'2' | b'3' | b'n' | b'I' | b's' | b'c' => Some(0),
        b'Z' => Some(1),
        _ => None,
    }
}

pub(super) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

pub(super) fn i16_at(b: &[u8], at: usize) -> Option<i16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(i16::from_be_bytes([s[0], s[1]]))
}

/// A NUL-terminated string at the start of `b`: the string and what follows the NUL.
pub(super) fn cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = b.iter().position(|&c| c == 0)?;
    Some((&b[..nul], &b[nul + 1..]))
}

/// A message header: type and the length field (which counts itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub ty: u8,
    pub len: u32,
}

impl Header {
    pub(super) fn read(b: &[u8]) -> Option<Header> {
        Some(Header {
            ty: *b.first()?,
            len: u32_at(b, 1)?,
        })
    }

    pub(super) fn body_len(&self) -> u64 {
        u64::from(self.len.saturating_sub(4))
    }
}

/// Bytes a name may contain: printable ASCII and any non-ASCII byte (other encodings).
pub(super) fn printable(b: &[u8]) -> bool {
    b.iter().all(|&c| (0x20..0x7f).contains(&c) || c >= 0x80)
}

/// Does `text` look like SQL (or the visible start of it)? No control characters but
/// whitespace, and it starts, after whitespace, with a letter, a parenthesis or a comment.
pub(super) fn plausible_sql(text: &[u8]) -> bool {
    let ok_bytes = text
        .iter()
        .all(|&c| c >= 0x20 && c != 0x7f || matches!(c, b'\t' | b'\n' | b'\r' | 0x0c));
    let first = text.iter().find(|c| !c.is_ascii_whitespace());
    ok_bytes
        && matches!(first, Some(c) if c.is_ascii_alphabetic() || matches!(c, b'(' | b'-' | b'/'))
        && text.iter().any(u8::is_ascii_alphabetic)
}

/// Text from the wire: UTF-8, or lossily converted (clients may use another encoding).
pub(super) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
