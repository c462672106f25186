//! Message heads: finding where a head ends, parsing it with `httparse`, and pulling out the
//! few fields the agent keeps plus what framing needs (RFC 9112 §2–§6).
//!
//! Only Host, User-Agent, traceparent and tracestate values are ever copied; every other header
//! (Authorization, Cookie, Set-Cookie, ...) is looked at by name only, or for Content-Length and
//! Transfer-Encoding, parsed in place.

use super::super::h2c::{self, H2cOffer};
use super::super::HttpRequest;

/// Longest head we wait for. Real heads are a few hundred bytes; servers cap them at 8–64 KiB.
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// Header slots tried first (on the stack), then once more with `MAX_HEADERS`.
const FEW_HEADERS: usize = 32;
const MAX_HEADERS: usize = 128;
/// Longest method token accepted at a message boundary (the longest registered one is 17).
const MAX_METHOD: usize = 32;

/// Why a head was rejected (for the error counter).
pub(super) type HeadError = String;

/// Look for the empty line that ends a head (RFC 9112 §2.1), resuming at `*scanned` so a head
/// arriving over many reads is scanned once. Returns the head's length including that line.
/// A lone LF counts as a line end (RFC 9112 §2.2), as httparse also accepts it.
pub(super) fn find_head_end(head: &[u8], scanned: &mut usize) -> Option<usize> {
    let mut from = (*scanned).min(head.len());
    #[cfg(test)]
    let start = from;
    while let Some(off) = head[from..].iter().position(|&b| b == b'\n') {
        let lf = from + off;
        let empty_line = match lf {
            0 => false,
            1 => head[0] == b'\n',
            _ => head[lf - 1] == b'\n' || (head[lf - 1] == b'\r' && head[lf - 2] == b'\n'),
        };
        if empty_line {
            *scanned = lf + 1;
            #[cfg(test)]
            SEARCHED.with(|n| n.set(n.get() + (lf + 1 - start) as u64));
            return Some(lf + 1);
        }
        from = lf + 1;
    }
    *scanned = head.len();
    #[cfg(test)]
    SEARCHED.with(|n| n.set(n.get() + (head.len() - start) as u64));
    None
}

#[cfg(test)]
thread_local! {
    /// Bytes `find_head_end` searched on this thread (a work measure for tests: each test
    /// runs on a thread of its own).
    pub(super) static SEARCHED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// tchar (RFC 9110 §5.6.2).
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Bytes httparse accepts in a request-target.
fn is_target_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// Cheap check of a request head's first bytes (`token SP target-byte`), so that a stream of
/// garbage is rejected at once instead of after `MAX_HEAD` bytes. `true` = plausible so far.
pub(super) fn request_prefix_plausible(head: &[u8]) -> bool {
    for (i, &b) in head.iter().enumerate().take(MAX_METHOD + 2) {
        if b == b' ' {
            return i > 0 && head.get(i + 1).is_none_or(|&t| is_target_byte(t));
        }
        if !is_tchar(b) || i >= MAX_METHOD {
            return false;
        }
    }
    true
}

/// Cheap check of a response head's first bytes: `HTTP/1.x DDD`.
pub(super) fn response_prefix_plausible(head: &[u8]) -> bool {
    const PATTERN: &[u8] = b"HTTP/1.x DDD";
    head.iter().zip(PATTERN).all(|(&b, &p)| match p {
        b'x' => b == b'0' || b == b'1',
        b'D' => b.is_ascii_digit(),
        _ => b == p,
    })
}

/// Whether a head starts with a well-formed request line of any method and any HTTP version:
/// `token SP target SP HTTP/d.d` and a line end (RFC 9112 §3). Such a head is a real request
/// even when the rest of it is broken, and the server will answer it.
pub(super) fn is_request_line(head: &[u8]) -> bool {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = head[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&head[..line_end]);
    if line_end == head.len() {
        return false;
    }
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let version_ok = matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
        if major.is_ascii_digit() && minor.is_ascii_digit());
    !method.is_empty()
        && method.len() <= MAX_METHOD
        && method.iter().all(|&b| is_tchar(b))
        && !target.is_empty()
        && target.iter().all(|&b| is_target_byte(b))
        && version_ok
}

/// The framing-relevant header fields of a message.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct FramingFields {
    /// Content-Length, `Some(Err)` when invalid or conflicting.
    pub content_length: Option<Result<u64, &'static str>>,
    /// A Transfer-Encoding field was present.
    pub transfer_encoding: bool,
    /// Its final coding is chunked (RFC 9112 §6.1).
    pub chunked_last: bool,
}

impl FramingFields {
    fn note(&mut self, name: &str, value: &[u8]) {
        if name.eq_ignore_ascii_case("content-length") {
            self.content_length = Some(
                match (self.content_length.take(), parse_content_length(value)) {
                    (None, v) => v,
                    (Some(Ok(a)), Ok(b)) if a == b => Ok(a),
                    (Some(Ok(_)), Ok(_)) => Err("conflicting Content-Length fields"),
                    (Some(Err(e)), _) | (_, Err(e)) => Err(e),
                },
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            self.transfer_encoding = true;
            // A later field line continues the list (RFC 9110 §5.3): its last coding wins.
            let last = value
                .rsplit(|&b| b == b',')
                .map(trim_ows)
                .find(|c| !c.is_empty());
            if let Some(last) = last {
                self.chunked_last = last.eq_ignore_ascii_case(b"chunked");
            }
        }
    }
}

fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |p| p + 1);
    &s[start..end.max(start)]
}

/// Content-Length = 1*DIGIT; a list of identical values is accepted (RFC 9110 §8.6).
fn parse_content_length(value: &[u8]) -> Result<u64, &'static str> {
    let mut result = None;
    for item in value.split(|&b| b == b',').map(trim_ows) {
        if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
            return Err("Content-Length is not a number");
        }
        let n = item
            .iter()
            .try_fold(0u64, |acc, &d| {
                acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            })
            .ok_or("Content-Length overflows 64 bits")?;
        match result {
            Some(prev) if prev != n => return Err("conflicting Content-Length values"),
            _ => result = Some(n),
        }
    }
    result.ok_or("empty Content-Length")
}

/// What a request's head says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RequestHead {
    pub request: HttpRequest,
    pub framing: FramingFields,
    /// `Upgrade` lists `h2c` (RFC 7540 §3.2).
    pub h2c: Option<H2cOffer>,
}

/// What a response's head says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ResponseHead {
    pub status: u16,
    pub version_minor: u8,
    pub framing: FramingFields,
    /// `Upgrade` fields: `None` when absent, else whether one lists `h2c` (what a 101
    /// switches to, RFC 9110 §7.8).
    pub upgrade_h2c: Option<bool>,
}

/// Parse a complete request head (`head` ends with its empty line).
pub(super) fn parse_request(head: &[u8]) -> Result<RequestHead, HeadError> {
    let mut few = [httparse::EMPTY_HEADER; FEW_HEADERS];
    if let Some(result) = parse_request_with(head, &mut few) {
        return result;
    }
    let mut many = [httparse::EMPTY_HEADER; MAX_HEADERS];
    parse_request_with(head, &mut many).unwrap_or_else(|| Err(too_many_headers()))
}

/// Parse a complete response head.
pub(super) fn parse_response(head: &[u8]) -> Result<ResponseHead, HeadError> {
    let mut few = [httparse::EMPTY_HEADER; FEW_HEADERS];
    if let Some(result) = parse_response_with(head, &mut few) {
        return result;
    }
    let mut many = [httparse::EMPTY_HEADER; MAX_HEADERS];
    parse_response_with(head, &mut many).unwrap_or_else(|| Err(too_many_headers()))
}

fn too_many_headers() -> HeadError {
    format!("more than {MAX_HEADERS} header fields")
}

/// `None`: too many headers for `headers`, retry with more.
fn parse_request_with<'b>(
    head: &'b [u8],
    headers: &mut [httparse::Header<'b>],
) -> Option<Result<RequestHead, HeadError>> {
    let mut req = httparse::Request::new(headers);
    let status = req.parse(head);
    match status {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Some(Err("head does not end where expected".into())),
        Err(httparse::Error::TooManyHeaders) => return None,
        // httparse rejects a request-target that is not UTF-8 here (Error::Token).
        Err(e) => return Some(Err(format!("invalid request head: {e}"))),
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Some(Err("incomplete request line".into()));
    };
    let mut request = HttpRequest {
        method: method.to_owned(),
        target: target.to_owned(),
        version_minor: version,
        ..HttpRequest::default()
    };
    let mut framing = FramingFields::default();
    let (mut host_seen, mut ua_seen, mut tp_seen) = (false, false, false);
    let mut upgrade_h2c = false;
    // RFC 7540 §3.2.1: exactly one HTTP2-Settings field; with several, servers refuse.
    let mut settings: Vec<&[u8]> = Vec::new();
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade_h2c |= h2c::lists_h2c(h.value);
        } else if name.eq_ignore_ascii_case("http2-settings") {
            settings.push(h.value);
        } else if name.eq_ignore_ascii_case("host") {
            copy_first(&mut host_seen, &mut request.host, h.value);
        } else if name.eq_ignore_ascii_case("user-agent") {
            copy_first(&mut ua_seen, &mut request.user_agent, h.value);
        } else if name.eq_ignore_ascii_case("traceparent") {
            copy_first(&mut tp_seen, &mut request.traceparent, h.value);
        } else if name.eq_ignore_ascii_case("tracestate") {
            // List semantics (RFC 9110 §5.3): field lines combine with ','.
            if let Ok(v) = std::str::from_utf8(h.value) {
                match &mut request.tracestate {
                    Some(s) => {
                        s.push(',');
                        s.push_str(v);
                    }
                    None => request.tracestate = Some(v.to_owned()),
                }
            }
        } else {
            framing.note(name, h.value);
        }
    }
    let h2c = upgrade_h2c.then(|| H2cOffer {
        settings: match settings[..] {
            [one] => h2c::decode_settings(one).unwrap_or_default(),
            _ => Vec::new(),
        },
    });
    Some(Ok(RequestHead {
        request,
        framing,
        h2c,
    }))
}

/// The first field line wins; a value that is not UTF-8 counts as absent.
fn copy_first(seen: &mut bool, slot: &mut Option<String>, value: &[u8]) {
    if !*seen {
        *seen = true;
        *slot = std::str::from_utf8(value).ok().map(str::to_owned);
    }
}

fn parse_response_with<'b>(
    head: &'b [u8],
    headers: &mut [httparse::Header<'b>],
) -> Option<Result<ResponseHead, HeadError>> {
    let mut resp = httparse::Response::new(headers);
    let status = resp.parse(head);
    match status {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Some(Err("head does not end where expected".into())),
        Err(httparse::Error::TooManyHeaders) => return None,
        Err(e) => return Some(Err(format!("invalid response head: {e}"))),
    }
    let (Some(status), Some(version_minor)) = (resp.code, resp.version) else {
        return Some(Err("incomplete status line".into()));
    };
    let mut framing = FramingFields::default();
    let mut upgrade_h2c = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade_h2c = Some(upgrade_h2c.unwrap_or(false) || h2c::lists_h2c(h.value));
        } else {
            framing.note(h.name, h.value);
        }
    }
    Some(Ok(ResponseHead {
        status,
        version_minor,
        framing,
        upgrade_h2c,
    }))
}
