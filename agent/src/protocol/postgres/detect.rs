//! Protocol detection from the first bytes of a direction, and the signatures resync uses.
//!
//! Detection is strict: a false positive turns another protocol into junk spans, a false
//! negative loses one connection. A direction is PostgreSQL when it starts with
//!
//! - a startup-phase message (StartupMessage for protocol 3.x, SSLRequest, GSSENCRequest,
//!   CancelRequest) with a plausible length and, for StartupMessage, well-formed parameters;
//! - or, joining a connection already in progress, a run of complete, structurally valid
//!   frontend messages holding a Query or Parse with SQL-looking text, or a Bind followed by
//!   an Execute;
//! - or a run of valid backend messages holding one that is unmistakable (ReadyForQuery,
//!   CommandComplete, RowDescription, ErrorResponse, NoticeResponse, Authentication,
//!   ParameterStatus).
//!
//! Text protocols fail the length check: a type byte followed by printable text gives a
//! length of at least 0x20000000, and at least 0x40000000 (beyond every limit) when the text
//! starts with a letter (HTTP, AMQP's `AMQP\0\0\9\1`, SSH, ...). TLS records start with 0x16,
//! not a message type.

use super::super::{Detection, Direction, Role};
use super::wire::{
    backend_limit, cstr, frontend_limit, i16_at, plausible_sql, printable, u32_at, Header,
    CANCEL_REQUEST, GSSENC_REQUEST, HEADER, MAX_STARTUP, MAX_TEXT, PROTOCOL_3_0, PROTOCOL_3_MAX,
    SSL_REQUEST,
};

/// Three-way answer of a signature check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Yes,
    Maybe,
    No,
}

/// A partial Query or Parse is taken as PostgreSQL when this much SQL-looking text is visible
/// (a long query need not fit in the bytes the connection layer buffers for detection).
const VISIBLE_TEXT: usize = 64;
/// Messages longer than this are not used to detect the protocol (or to resync on).
const SIGNATURE_MAX_LEN: u32 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd)]
pub(super) enum Strength {
    Weak,
    Strong,
}

pub(super) fn opposite(dir: Direction) -> Direction {
    match dir {
        Direction::Egress => Direction::Ingress,
        Direction::Ingress => Direction::Egress,
        Direction::None => Direction::None,
    }
}

/// See [`crate::protocol::postgres::detect()`].
pub(super) fn detect(dir: Direction, role: Role, bytes: &[u8]) -> Detection {
    if dir == Direction::None {
        return Detection::NoMatch;
    }
    let (frontend, backend) = match role {
        Role::Client => (dir == Direction::Egress, dir == Direction::Ingress),
        Role::Server => (dir == Direction::Ingress, dir == Direction::Egress),
        Role::Unknown => (true, true),
    };
    let fe = if frontend {
        frontend_first(bytes)
    } else {
        Verdict::No
    };
    let be = if backend {
        backend_chain(bytes)
    } else {
        Verdict::No
    };
    match (fe, be) {
        (Verdict::Yes, _) => Detection::Match { request_dir: dir },
        (_, Verdict::Yes) => Detection::Match {
            request_dir: opposite(dir),
        },
        (Verdict::Maybe, _) | (_, Verdict::Maybe) => Detection::NeedMore,
        _ => Detection::NoMatch,
    }
}

/// The first bytes a frontend sends: a startup-phase message, or typed messages when the
/// connection is already past its startup.
fn frontend_first(bytes: &[u8]) -> Verdict {
    match bytes.first() {
        None => Verdict::Maybe,
        // A startup-phase length is at most 10000: its first byte is 0, never a type byte.
        Some(0) => startup(bytes),
        Some(_) => frontend_chain(bytes),
    }
}

fn startup(bytes: &[u8]) -> Verdict {
    // Check the bytes we have against each possible code before the message is complete.
    let codes = [PROTOCOL_3_0, SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST];
    let have = bytes.len().min(8);
    let mut padded = [0u8; 8];
    padded[..have].copy_from_slice(&bytes[..have]);
    if have >= 4 {
        let len = u32_at(&padded, 0).unwrap_or(0);
        if !(8..=MAX_STARTUP).contains(&len) {
            return Verdict::No;
        }
    }
    if have < 8 {
        let prefix_ok = codes
            .iter()
            .chain(&[PROTOCOL_3_MAX])
            .any(|c| c.to_be_bytes()[..have.saturating_sub(4)] == padded[4..have.max(4)]);
        return if prefix_ok {
            Verdict::Maybe
        } else {
            Verdict::No
        };
    }
    let len = u32_at(bytes, 0).unwrap_or(0) as usize;
    let code = u32_at(bytes, 4).unwrap_or(0);
    match code {
        SSL_REQUEST | GSSENC_REQUEST if len == 8 => Verdict::Yes,
        // 3.0 keys are 4 bytes; protocol 3.2 allows up to 256.
        CANCEL_REQUEST if (16..=12 + 256).contains(&len) => Verdict::Yes,
        PROTOCOL_3_0..=PROTOCOL_3_MAX => match bytes.get(..len) {
            None => Verdict::Maybe,
            Some(msg) if startup_params(&msg[8..]).is_some() => Verdict::Yes,
            Some(_) => Verdict::No,
        },
        _ => Verdict::No,
    }
}

/// StartupMessage parameters: NUL-terminated name/value pairs, then a final NUL. Returns the
/// pairs' count when well-formed.
pub(super) fn startup_params(mut b: &[u8]) -> Option<usize> {
    let mut n = 0;
    loop {
        match b {
            [0] => return Some(n),
            _ => {
                let (name, rest) = cstr(b)?;
                let (value, rest) = cstr(rest)?;
                if name.is_empty() || !printable(name) || !printable(value) {
                    return None;
                }
                n += 1;
                b = rest;
            }
        }
    }
}

/// Walks complete messages from the start of `bytes`; each must be valid. `Yes` once a
/// strong signal is seen, `Maybe` while valid but weak or incomplete, `No` on anything wrong.
fn chain(
    bytes: &[u8],
    limit: fn(u8) -> Option<u32>,
    valid: fn(u8, &[u8]) -> Option<Strength>,
    backend: bool,
) -> Verdict {
    let mut pos = 0;
    let mut bound = false;
    loop {
        let rest = &bytes[pos..];
        let Some(&ty) = rest.first() else {
            return Verdict::Maybe;
        };
        let Some(max) = limit(ty) else {
            return Verdict::No;
        };
        let Some(h) = Header::read(rest) else {
            return Verdict::Maybe;
        };
        if h.len < 4 || h.len > max.min(SIGNATURE_MAX_LEN) {
            return Verdict::No;
        }
        let end = HEADER - 4 + h.len as usize;
        let Some(body) = rest.get(HEADER..end) else {
            // Incomplete: a long query may be recognised from its visible start.
            let visible = &rest[HEADER..];
            return match partial_text(ty, visible, backend, &mut 0) {
                Some(true) => Verdict::Yes,
                Some(false) => Verdict::No,
                None => Verdict::Maybe,
            };
        };
        let strength = match valid(ty, body) {
            None => return Verdict::No,
            // A Bind, then (after a Describe, say) an Execute: specific enough together.
            Some(_) if !backend && bound && ty == b'E' => Strength::Strong,
            Some(s) => s,
        };
        if strength == Strength::Strong {
            return Verdict::Yes;
        }
        bound |= !backend && ty == b'B';
        pos += end;
    }
}

/// Visible start of an incomplete message: `Some(true)` when it is recognisable SQL text,
/// `Some(false)` when it is certainly not a valid message, `None` when undecided. (A Parse
/// whose text ends within the visible bytes, its parameter types still to come, is judged by
/// that text; a Query's text ends its message, so a NUL in an incomplete one is not valid.)
///
/// `checked`: how many visible bytes of a Parse's name an earlier look at the same message
/// found printable and NUL-free (updated when undecided), so that a candidate whose name
/// arrives a byte per read is not searched from its start on every read. A Query is decided
/// once [`VISIBLE_TEXT`] bytes are visible, so it needs no such help.
pub(super) fn partial_text(
    ty: u8,
    visible: &[u8],
    backend: bool,
    checked: &mut usize,
) -> Option<bool> {
    let mut terminated = false;
    let text = match (backend, ty) {
        (false, b'Q') => visible,
        (false, b'P') => {
            // The name is at most MAX_NAME bytes (as `name` requires of a complete message).
            let name = &visible[..visible.len().min(MAX_NAME + 1)];
            let from = (*checked).min(name.len());
            match memchr::memchr(0, &name[from..]) {
                Some(off) if printable(&name[from..from + off]) => {
                    *checked = from + off;
                    let text = &visible[from + off + 1..];
                    match memchr::memchr(0, text) {
                        Some(end) => {
                            terminated = true;
                            &text[..end]
                        }
                        None => text,
                    }
                }
                None if name.len() <= MAX_NAME && printable(&name[from..]) => {
                    *checked = name.len();
                    return None;
                }
                _ => return Some(false),
            }
        }
        _ => return None,
    };
    let text = &text[..text.len().min(MAX_TEXT)];
    if text.contains(&0)
        || (!text.is_empty() && !plausible_sql(text))
        || terminated && text.is_empty()
    {
        return Some(false);
    }
    (text.len() >= VISIBLE_TEXT).then_some(true)
}

fn frontend_chain(bytes: &[u8]) -> Verdict {
    chain(bytes, frontend_limit, valid_frontend_unbounded, false)
}

fn backend_chain(bytes: &[u8]) -> Verdict {
    chain(bytes, backend_limit, valid_backend, true)
}

/// Longest statement or portal name in a message used as a signature.
const MAX_NAME: usize = 1024;

/// A name field (statement, portal) of a frontend message.
fn name(b: &[u8]) -> Option<&[u8]> {
    let (n, rest) = cstr(b)?;
    (printable(n) && n.len() <= MAX_NAME).then_some(rest)
}

fn exactly(rest: &[u8], s: Strength) -> Option<Strength> {
    rest.is_empty().then_some(s)
}

/// `n` Int16 format codes (0 text, 1 binary) at the start of `b`.
fn formats(b: &[u8]) -> Option<&[u8]> {
    let n = usize::try_from(i16_at(b, 0)?).ok()?;
    let codes = b.get(2..2 + 2 * n)?;
    codes
        .chunks(2)
        .all(|c| c == [0, 0] || c == [0, 1])
        .then(|| &b[2 + 2 * n..])
}

fn valid_frontend_unbounded(ty: u8, body: &[u8]) -> Option<Strength> {
    let mut budget = usize::MAX;
    valid_frontend(ty, body, &mut budget)
}

/// Structural validity of a complete frontend message body ("Message Formats"). Checking a
/// Bind's parameters costs one unit of `budget` each; `None` (not valid) once it is spent.
pub(super) fn valid_frontend(ty: u8, body: &[u8], budget: &mut usize) -> Option<Strength> {
    use Strength::{Strong, Weak};
    match ty {
        b'Q' => {
            let (text, rest) = cstr(body)?;
            (rest.is_empty() && plausible_sql(text)).then_some(Strong)
        }
        b'P' => {
            let (text, rest) = cstr(name(body)?)?;
            let n = usize::try_from(i16_at(rest, 0)?).ok()?;
            (plausible_sql(text) && rest.len() == 2 + 4 * n).then_some(Strong)
        }
        b'B' => {
            let mut rest = formats(name(name(body)?)?)?;
            let n = i16_at(rest, 0)?;
            rest = &rest[2..];
            for _ in 0..n.max(0) {
                *budget = budget.checked_sub(1)?;
                let len = u32_at(rest, 0)? as i32;
                let len = if len == -1 {
                    0
                } else {
                    usize::try_from(len).ok()?
                };
                rest = rest.get(4 + len..)?;
            }
            if n < 0 {
                return None;
            }
            exactly(formats(rest)?, Weak)
        }
        b'E' => {
            let rest = name(body)?;
            (rest.len() == 4 && u32_at(rest, 0)? <= i32::MAX as u32).then_some(Weak)
        }
        b'D' | b'C' => match body.split_first() {
            Some((b'S' | b'P', rest)) => exactly(name(rest)?, Weak),
            _ => None,
        },
        b'S' | b'H' | b'X' | b'c' => exactly(body, Weak),
        b'f' => exactly(cstr(body)?.1, Weak),
        b'd' | b'F' | b'p' => Some(Weak),
        _ => None,
    }
}

/// A CommandComplete tag: upper-case words, then up to two numbers (`INSERT 0 1`).
pub(super) fn plausible_tag(tag: &[u8]) -> bool {
    let mut words = tag.split(|&c| c == b' ');
    let verb_ok = words
        .next()
        .is_some_and(|w| !w.is_empty() && w.iter().all(u8::is_ascii_uppercase));
    let mut numbers = false;
    let rest_ok = words.all(|w| {
        if !w.is_empty() && w.iter().all(u8::is_ascii_digit) {
            numbers = true;
            true
        } else {
            !numbers && !w.is_empty() && w.iter().all(u8::is_ascii_uppercase)
        }
    });
    verb_ok && rest_ok && tag.len() <= 64
}

/// Structural validity of a complete backend message body ("Message Formats").
fn valid_backend(ty: u8, body: &[u8]) -> Option<Strength> {
    use Strength::{Strong, Weak};
    match ty {
        b'Z' => matches!(body, [b'I' | b'T' | b'E']).then_some(Strong),
        b'C' => {
            let (tag, rest) = cstr(body)?;
            (rest.is_empty() && plausible_tag(tag)).then_some(Strong)
        }
        b'T' => {
            let n = i16_at(body, 0)?;
            let mut rest = &body[2..];
            for _ in 0..n.max(0) {
                let fields = name(rest)?;
                // table oid, column, type oid, type size, type modifier, format code.
                let format = i16_at(fields, 16)?;
                if !(0..=1).contains(&format) {
                    return None;
                }
                rest = &fields[18..];
            }
            (n >= 0 && rest.is_empty()).then_some(Strong)
        }
        b'D' => {
            let n = i16_at(body, 0)?;
            let mut rest = &body[2..];
            for _ in 0..n.max(0) {
                let len = u32_at(rest, 0)? as i32;
                let len = if len == -1 {
                    0
                } else {
                    usize::try_from(len).ok()?
                };
                rest = rest.get(4 + len..)?;
            }
            (n >= 0 && rest.is_empty()).then_some(Weak)
        }
        b'E' | b'N' => {
            let (mut rest, mut severity, mut code) = (body, false, false);
            loop {
                let (&field, after) = rest.split_first()?;
                if field == 0 {
                    return (after.is_empty() && severity && code).then_some(Strong);
                }
                // Field types of "Error and Notice Message Fields".
                if !b"SVCMDHPpqWstcdnFLR".contains(&field) {
                    return None;
                }
                severity |= field == b'S';
                code |= field == b'C';
                rest = cstr(after)?.1;
            }
        }
        b'R' => {
            let fixed = match u32_at(body, 0)? {
                0 | 2 | 3 | 7 | 9 => Some(4),
                5 => Some(8),
                8 | 10..=12 => None,
                _ => return None,
            };
            fixed.is_none_or(|n| n == body.len()).then_some(Strong)
        }
        b'S' => {
            let (param, rest) = cstr(body)?;
            let (value, rest) = cstr(rest)?;
            let param_ok = !param.is_empty()
                && param
                    .iter()
                    .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.');
            (param_ok && printable(value) && rest.is_empty()).then_some(Strong)
        }
        b'K' => (8..=4 + 256).contains(&body.len()).then_some(Weak),
        b'1' | b'2' | b'3' | b'n' | b'I' | b's' | b'c' => exactly(body, Weak),
        b't' => {
            let n = usize::try_from(i16_at(body, 0)?).ok()?;
            (body.len() == 2 + 4 * n).then_some(Weak)
        }
        b'G' | b'H' | b'W' => match body.split_first() {
            Some((0 | 1, rest)) => exactly(formats(rest)?, Weak),
            _ => None,
        },
        b'A' => {
            let rest = body.get(4..)?;
            exactly(cstr(cstr(rest)?.1)?.1, Weak)
        }
        b'd' | b'V' | b'v' => Some(Weak),
        _ => None,
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

/// A scan checks at most this many Bind parameters per byte it scans (plus
/// [`BIND_BUDGET_BASE`]): one parameter takes at least 4 bytes, so the first complete Bind
/// always fits. Candidates can overlap (each sitting in a parameter value of the one before,
/// its own parameters running over the same values), and without this budget a 64 KiB block
/// of them cost O(n²) parameters; once it is spent, further Binds are not resync points
/// (only hostile input gets there).
const BIND_BUDGET_PER_BYTE: usize = 4;
const BIND_BUDGET_BASE: usize = 1024;

/// Frontend resync: the next Query, Parse or Bind that is structurally valid (or, when long,
/// whose visible start is). Anything else is too short to be told from noise.
///
/// `hint` is what an earlier scan learnt about an undecided candidate at `from` (see
/// `partial_text`); on `Partial` it holds what this one learnt about the candidate returned.
pub(super) fn scan_frontend(buf: &[u8], from: usize, hint: &mut usize) -> Scan {
    let mut budget = BIND_BUDGET_BASE + BIND_BUDGET_PER_BYTE * (buf.len() - from.min(buf.len()));
    let mut first = std::mem::take(hint);
    for i in from..buf.len() {
        if !matches!(buf[i], b'Q' | b'P' | b'B') {
            continue;
        }
        let mut checked = if i == from {
            std::mem::take(&mut first)
        } else {
            0
        };
        match frontend_signature(&buf[i..], &mut checked, &mut budget) {
            Verdict::Yes => return Scan::Found(i),
            Verdict::Maybe => {
                *hint = checked;
                return Scan::Partial(i);
            }
            Verdict::No => {}
        }
    }
    Scan::Nothing
}

fn frontend_signature(bytes: &[u8], checked: &mut usize, budget: &mut usize) -> Verdict {
    let Some(h) = Header::read(bytes) else {
        return Verdict::Maybe;
    };
    if h.len < 4 || h.len > SIGNATURE_MAX_LEN {
        return Verdict::No;
    }
    let end = HEADER - 4 + h.len as usize;
    match bytes.get(HEADER..end) {
        Some(body) => match valid_frontend(h.ty, body, budget) {
            Some(_) => Verdict::Yes,
            None => Verdict::No,
        },
        None => match partial_text(h.ty, &bytes[HEADER..], false, checked) {
            Some(true) => Verdict::Yes,
            Some(false) => Verdict::No,
            // Wait for the rest only when it is short enough to be held.
            None if h.len as usize <= MAX_TEXT => Verdict::Maybe,
            None => Verdict::No,
        },
    }
}

/// ReadyForQuery: `Z`, length 5, transaction status idle/in transaction/failed.
const READY: [u8; 5] = [b'Z', 0, 0, 0, 5];

/// Backend resync: the next ReadyForQuery, where the backend is known to be between queries.
pub(super) fn scan_backend(buf: &[u8], from: usize) -> Scan {
    let mut i = from;
    while i < buf.len() {
        let Some(off) = buf[i..].iter().position(|&b| b == b'Z') else {
            return Scan::Nothing;
        };
        i += off;
        let cand = &buf[i..];
        let n = cand.len().min(READY.len());
        if cand[..n] == READY[..n] {
            match cand.get(READY.len()) {
                Some(b'I' | b'T' | b'E') => return Scan::Found(i),
                None => return Scan::Partial(i),
                Some(_) => {}
            }
        }
        i += 1;
    }
    Scan::Nothing
}
