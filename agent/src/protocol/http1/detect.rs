//! Protocol detection from the first bytes of one direction, and the signatures resync uses.
//!
//! Detection is deliberately strict: a false positive makes junk spans out of some other
//! protocol, a false negative only loses one connection. A direction is HTTP/1 when it starts
//! with a complete request line `METHOD SP request-target SP HTTP/1.x CRLF` (RFC 9112 §3) or a
//! status line `HTTP/1.x SP 3DIGIT` (RFC 9112 §4).

use super::super::{Detection, Direction, Role};

/// The methods of RFC 9110 §9 plus PATCH (RFC 5789): recognised from their first bytes and the
/// only ones resync looks for.
pub(super) const KNOWN_METHODS: [&[u8]; 9] = [
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
];

/// A request-target longer than this with no line end yet is taken as HTTP when it follows a
/// known method and looks like an origin-form path (a huge URL, not random bytes).
const LONG_TARGET: usize = 8 * 1024;
/// Extension methods (WebDAV's PROPFIND, MKCOL, ...) are accepted only when the whole request
/// line is visible within this many bytes.
const EXTENSION_LINE: usize = 4 * 1024;
const MAX_EXTENSION_METHOD: usize = 24;

/// Three-way answer of a signature check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Yes,
    Maybe,
    No,
}

/// Bytes start with `METHOD SP` for a known method (`Maybe`: a prefix of one).
pub(super) fn known_method_prefix(bytes: &[u8]) -> Verdict {
    let mut verdict = Verdict::No;
    for m in KNOWN_METHODS {
        if bytes.len() > m.len() {
            if bytes.starts_with(m) && bytes[m.len()] == b' ' {
                return Verdict::Yes;
            }
        } else if m.starts_with(bytes) {
            verdict = Verdict::Maybe;
        }
    }
    verdict
}

/// Bytes start with a status line prefix `HTTP/1.x SP DDD` followed by SP or a line end.
pub(super) fn status_line(bytes: &[u8]) -> Verdict {
    const PATTERN: &[u8] = b"HTTP/1.x SDDE";
    for (i, &p) in PATTERN.iter().enumerate() {
        let Some(&b) = bytes.get(i) else {
            return Verdict::Maybe;
        };
        let ok = match p {
            b'x' => b == b'0' || b == b'1',
            // Status codes 100..=599 (RFC 9110 §15): a leading 0 or 6+ is not a status.
            b'S' => (b'1'..=b'5').contains(&b),
            b'D' => b.is_ascii_digit(),
            b'E' => matches!(b, b' ' | b'\r' | b'\n'),
            _ => b == p,
        };
        if !ok {
            return Verdict::No;
        }
    }
    Verdict::Yes
}

/// Bytes start with a request line.
pub(super) fn request_line(bytes: &[u8]) -> Verdict {
    let (method_len, known) = match known_method_prefix(bytes) {
        Verdict::Yes => (bytes.iter().position(|&b| b == b' ').unwrap_or(0), true),
        v => match extension_method(bytes) {
            Verdict::Yes => (bytes.iter().position(|&b| b == b' ').unwrap_or(0), false),
            Verdict::Maybe => return Verdict::Maybe,
            Verdict::No => return v,
        },
    };
    let rest = bytes.get(method_len + 1..).unwrap_or_default();
    let target_len = rest
        .iter()
        .position(|&b| !((0x21..=0x7e).contains(&b) || b >= 0x80))
        .unwrap_or(rest.len());
    if target_len == rest.len() {
        // The target runs to the end of what we have.
        return if !known && bytes.len() > EXTENSION_LINE {
            Verdict::No
        } else if known && target_len > LONG_TARGET && rest.first() == Some(&b'/') {
            Verdict::Yes
        } else if bytes.len() > LONG_TARGET + method_len + 1 {
            Verdict::No
        } else {
            Verdict::Maybe
        };
    }
    if target_len == 0 {
        return Verdict::No;
    }
    let tail = &rest[target_len..];
    const VERSION: &[u8] = b" HTTP/1.x";
    for (i, &p) in VERSION.iter().enumerate() {
        let Some(&b) = tail.get(i) else {
            return Verdict::Maybe;
        };
        let ok = if p == b'x' {
            b == b'0' || b == b'1'
        } else {
            b == p
        };
        if !ok {
            return Verdict::No;
        }
    }
    match (tail.get(VERSION.len()), tail.get(VERSION.len() + 1)) {
        (Some(b'\n'), _) | (Some(b'\r'), Some(b'\n')) => Verdict::Yes,
        (None, _) | (Some(b'\r'), None) => Verdict::Maybe,
        _ => Verdict::No,
    }
}

/// An extension method: upper-case letters, '-' or '_', then SP. Lower-case or other tchars
/// are valid tokens but in practice mean some other text protocol.
fn extension_method(bytes: &[u8]) -> Verdict {
    for (i, &b) in bytes.iter().enumerate().take(MAX_EXTENSION_METHOD + 1) {
        match b {
            b' ' if i >= 3 => return Verdict::Yes,
            b'A'..=b'Z' | b'-' | b'_' if i < MAX_EXTENSION_METHOD => {}
            _ => return Verdict::No,
        }
    }
    Verdict::Maybe
}

pub(super) fn opposite(dir: Direction) -> Direction {
    match dir {
        Direction::Egress => Direction::Ingress,
        Direction::Ingress => Direction::Egress,
        Direction::None => Direction::None,
    }
}

/// See [`crate::protocol::http1::detect`].
pub(super) fn detect(dir: Direction, role: Role, bytes: &[u8]) -> Detection {
    if dir == Direction::None || bytes.is_empty() {
        return if dir == Direction::None {
            Detection::NoMatch
        } else {
            Detection::NeedMore
        };
    }
    // Which direction carries requests if these bytes are requests, or responses.
    let if_requests = dir;
    let if_responses = opposite(dir);
    let (check_request, check_response) = match role {
        // The role fixes the request direction: only the matching start line counts.
        Role::Client => (dir == Direction::Egress, dir == Direction::Ingress),
        Role::Server => (dir == Direction::Ingress, dir == Direction::Egress),
        Role::Unknown => (true, true),
    };
    let req = if check_request {
        request_line(bytes)
    } else {
        Verdict::No
    };
    let resp = if check_response {
        status_line(bytes)
    } else {
        Verdict::No
    };
    match (req, resp) {
        (Verdict::Yes, _) => Detection::Match {
            request_dir: if_requests,
        },
        (_, Verdict::Yes) => Detection::Match {
            request_dir: if_responses,
        },
        (Verdict::Maybe, _) | (_, Verdict::Maybe) => Detection::NeedMore,
        _ => Detection::NoMatch,
    }
}

/// Outcome of looking for a resync point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scan {
    /// A message seems to start at this offset.
    Found(usize),
    /// One might start at this offset: the bytes end before we can tell.
    Partial(usize),
    /// Nothing here: all of it can be dropped.
    Nothing,
}

/// Find the first line start at or after `from` whose bytes pass `signature`. `line_start`
/// says whether `from` itself is at a line start.
pub(super) fn scan_line_starts(
    buf: &[u8],
    from: usize,
    line_start: bool,
    signature: fn(&[u8]) -> Verdict,
) -> Scan {
    let mut i = from;
    let mut at_line_start = line_start;
    while i <= buf.len() {
        if at_line_start {
            match signature(&buf[i..]) {
                Verdict::Yes => return Scan::Found(i),
                Verdict::Maybe => return Scan::Partial(i),
                Verdict::No => {}
            }
        }
        match buf[i..].iter().position(|&b| b == b'\n') {
            Some(off) => {
                i += off + 1;
                at_line_start = true;
            }
            None => break,
        }
    }
    Scan::Nothing
}
