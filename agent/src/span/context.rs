//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): parsing the `traceparent` and
//! `tracestate` request headers the agent sees on the wire, formatting a `traceparent`, and
//! generating new trace and span ids.
//!
//! This module only validates and converts header *values*. It does not find headers (the
//! protocol parsers do, matching the names case-insensitively as §3.2.1 and §3.3.1 require),
//! does not join repeated `tracestate` fields (the caller joins them with `,` per RFC 7230
//! §3.2.2 before calling [`parse_tracestate`]), and does not decide what to do with an invalid
//! value (the span builder restarts the trace and counts
//! [`Counter::TraceparentInvalid`](crate::telemetry::Counter::TraceparentInvalid)). The spec
//! also says that when `traceparent` is invalid, `tracestate` MUST NOT be parsed (§3.3); that
//! ordering is the caller's job too.
//!
//! Levels: the grammar is Level 1 (the W3C Recommendation, which the W3C test suite checks).
//! From the Level 2 draft we take the `random` trace flag (bit 1), which [`format_traceparent`]
//! keeps, and the fact that our generated trace ids are fully random, so a trace the agent
//! starts may set it. Level 2 also relaxes the `tracestate` key grammar (any number of `@`
//! anywhere after the first character); we keep Level 1's stricter `tenant@system` form, so a
//! Level-2-only key makes the whole `tracestate` invalid. That is the conservative choice for
//! an observer: a rejected `tracestate` is only dropped from our span, never from the traffic.

use thiserror::Error;

use super::model::{SpanContext, SpanId, TraceId};

/// trace-flags bit 0: the caller may have recorded this trace (§3.2.2.5.1).
pub const FLAG_SAMPLED: u8 = 0x01;
/// trace-flags bit 1 (Level 2 draft): the trace-id's right-most 7 bytes are random.
pub const FLAG_RANDOM: u8 = 0x02;
/// The flags this implementation knows. Level 1 §3.2.2.5.2: other flags MUST be set to zero
/// by a vendor that sends a `traceparent`.
pub const KNOWN_FLAGS: u8 = FLAG_SAMPLED | FLAG_RANDOM;

/// Length of a version-00 `traceparent`: `vv-` + 32 + `-` + 16 + `-` + 2.
const V00_LEN: usize = 55;
/// Byte offsets of the three inner dashes in the version-00 layout.
const DASH_TRACE_ID: usize = 35;
const DASH_PARENT_ID: usize = 52;

/// At most 32 list members in a `tracestate` (§3.3.1.1).
pub const MAX_TRACESTATE_MEMBERS: usize = 32;
/// We keep at most this many characters of a normalised `tracestate`: the minimum the spec
/// asks vendors to propagate (§3.3.1.5). Longer values are cut by whole entries, entries over
/// [`TRACESTATE_LARGE_ENTRY`] characters first, then from the right, as §3.3.1.5 prescribes.
pub const MAX_TRACESTATE_LEN: usize = 512;
/// Entries longer than this are the first to go when truncating (§3.3.1.5).
pub const TRACESTATE_LARGE_ENTRY: usize = 128;

/// A parsed, valid `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Traceparent {
    /// The version the sender used; versions above 00 were parsed with the 00 rules
    /// (§3.2.4) and are downgraded to 00 when we format.
    pub version: u8,
    pub trace_id: TraceId,
    /// The caller's span id.
    pub parent_id: SpanId,
    /// trace-flags exactly as received, unknown bits included; mask with [`KNOWN_FLAGS`]
    /// before re-emitting (or use [`format_traceparent`], which does).
    pub flags: u8,
}

impl Traceparent {
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }
}

/// Why a `traceparent` or `tracestate` value was rejected. Variants carry positions and
/// lengths, never header content, so they can be logged without leaking anything.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TraceContextError {
    #[error("traceparent is empty")]
    Empty,
    #[error("traceparent version is not two lowercase hex digits followed by '-'")]
    BadVersion,
    #[error("traceparent version ff is forbidden")]
    ForbiddenVersion,
    #[error("traceparent version 00 has length {len}, must be exactly 55")]
    BadLengthV00 { len: usize },
    #[error("traceparent has length {len}, shorter than the 55 any version needs")]
    TooShort { len: usize },
    #[error("traceparent trace-id is not 32 lowercase hex digits")]
    BadTraceId,
    #[error("traceparent trace-id is all zeros")]
    ZeroTraceId,
    #[error("traceparent parent-id is not 16 lowercase hex digits")]
    BadParentId,
    #[error("traceparent parent-id is all zeros")]
    ZeroParentId,
    #[error("traceparent trace-flags is not two lowercase hex digits")]
    BadFlags,
    #[error("traceparent: expected '-' at offset {offset}")]
    BadSeparator { offset: usize },
    #[error("tracestate has more than 32 list members")]
    TooManyMembers,
    #[error("tracestate member {index} has no '='")]
    MissingEquals { index: usize },
    #[error("tracestate member {index} has an invalid key")]
    BadKey { index: usize },
    #[error("tracestate member {index} has an invalid value")]
    BadValue { index: usize },
    #[error("tracestate member {index} repeats an earlier key")]
    DuplicateKey { index: usize },
}

/// OWS in RFC 7230 §3.2.3 is spaces and horizontal tabs only.
fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn lower_hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None, // uppercase is not HEXDIGLC (§3.2.2)
    }
}

/// Decodes `N` bytes from `2N` lowercase hex digits; `None` on any other character.
fn decode_hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *o = (lower_hex_val(pair[0])? << 4) | lower_hex_val(pair[1])?;
    }
    Some(out)
}

/// Parses a `traceparent` header value.
///
/// Leading and trailing spaces and tabs are ignored: they are HTTP optional whitespace
/// (RFC 7230 §3.2.4), which an HTTP parser strips, and the W3C test suite sends them
/// (`test_traceparent_ows_handling`). Whitespace anywhere else, and any other surrounding
/// character (CR, LF, NUL, non-ASCII), makes the value invalid.
///
/// Version 00 must be exactly 55 characters. A higher version (01..fe) is parsed by the
/// version-00 rules for its first four fields and may be longer, in which case character 55
/// must be `-` (§3.2.4 "Versioning of traceparent"); what follows is not looked at.
pub fn parse_traceparent(value: &str) -> Result<Traceparent, TraceContextError> {
    use TraceContextError::*;
    let b = value.trim_matches(is_ows).as_bytes();
    if b.is_empty() {
        return Err(Empty);
    }
    // §3.2.4: "When the version prefix cannot be parsed (it's not 2 hex characters followed by
    // a dash), the implementation should restart the trace."
    if b.len() < 3 || b[2] != b'-' {
        return Err(BadVersion);
    }
    let version = decode_hex::<1>(&b[..2]).ok_or(BadVersion)?[0];
    if version == 0xff {
        return Err(ForbiddenVersion);
    }
    if version == 0 && b.len() != V00_LEN {
        return Err(BadLengthV00 { len: b.len() });
    }
    if b.len() < V00_LEN {
        return Err(TooShort { len: b.len() });
    }
    let trace_id: TraceId = decode_hex(&b[3..DASH_TRACE_ID]).ok_or(BadTraceId)?;
    if b[DASH_TRACE_ID] != b'-' {
        return Err(BadSeparator {
            offset: DASH_TRACE_ID,
        });
    }
    let parent_id: SpanId = decode_hex(&b[DASH_TRACE_ID + 1..DASH_PARENT_ID]).ok_or(BadParentId)?;
    if b[DASH_PARENT_ID] != b'-' {
        return Err(BadSeparator {
            offset: DASH_PARENT_ID,
        });
    }
    let flags = decode_hex::<1>(&b[DASH_PARENT_ID + 1..V00_LEN]).ok_or(BadFlags)?[0];
    // Only reachable for versions above 00: the flags must end the string or be followed by
    // a dash (§3.2.4).
    if b.len() > V00_LEN && b[V00_LEN] != b'-' {
        return Err(BadSeparator { offset: V00_LEN });
    }
    // §3.2.2.3 / §3.2.2.4: all-zero ids are invalid and the traceparent MUST be ignored.
    if trace_id == [0; 16] {
        return Err(ZeroTraceId);
    }
    if parent_id == [0; 8] {
        return Err(ZeroParentId);
    }
    Ok(Traceparent {
        version,
        trace_id,
        parent_id,
        flags,
    })
}

/// Level 1 keychar: `lcalpha / DIGIT / "_" / "-" / "*" / "/"` (§3.3.1.3.1).
fn is_keychar(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/')
}

/// Level 1 key grammar (§3.3.1.3.1):
/// `simple-key = lcalpha 0*255(keychar)`;
/// `multi-tenant-key = tenant-id "@" system-id`,
/// `tenant-id = (lcalpha / DIGIT) 0*240(keychar)`, `system-id = lcalpha 0*13(keychar)`.
fn is_valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    let tail_ok = |s: &[u8]| s.iter().all(|&c| is_keychar(c));
    match b.iter().position(|&c| c == b'@') {
        None => (1..=256).contains(&b.len()) && b[0].is_ascii_lowercase() && tail_ok(&b[1..]),
        Some(at) => {
            let (tenant, system) = (&b[..at], &b[at + 1..]);
            // A second '@' is not a keychar, so tail_ok(system) rejects it.
            (1..=241).contains(&tenant.len())
                && (tenant[0].is_ascii_lowercase() || tenant[0].is_ascii_digit())
                && tail_ok(&tenant[1..])
                && (1..=14).contains(&system.len())
                && system[0].is_ascii_lowercase()
                && tail_ok(&system[1..])
        }
    }
}

/// `value = 0*255(chr) nblk-chr`, `nblk-chr = %x21-2B / %x2D-3C / %x3E-7E`,
/// `chr = %x20 / nblk-chr` (§3.3.1.3.2): 1 to 256 printable ASCII characters other than `,`
/// and `=`, not ending in a space. Leading spaces belong to the value.
fn is_valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    let chr = |c: u8| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=';
    (1..=256).contains(&b.len()) && b.iter().all(|&c| chr(c)) && b[b.len() - 1] != b' '
}

/// Validates a (combined) `tracestate` value and returns the normalised value to keep:
/// members in their original order, joined by `,` without whitespace, empty and
/// whitespace-only members dropped (they are allowed, §3.3.1.1), cut to
/// [`MAX_TRACESTATE_LEN`] by whole entries.
///
/// An empty or all-whitespace value is valid (vendors MUST accept empty `tracestate`) and
/// yields `Ok("")`, which the caller should treat as "no tracestate".
///
/// Errors, which make the whole `tracestate` invalid: more than 32 non-empty members, a member
/// without `=`, an invalid key or value, or a key that appears twice (§3.3.1.4 allows one
/// entry per key; the W3C test suite at strict level expects such a header to be discarded).
pub fn parse_tracestate(value: &str) -> Result<String, TraceContextError> {
    use TraceContextError::*;
    let mut members: Vec<(&str, &str)> = Vec::new();
    for (index, raw) in value.split(',').enumerate() {
        // OWS around list members is not part of them (§3.3.1.1); trailing spaces after a
        // value are OWS too (§3.3.1.3.2).
        let member = raw.trim_matches(is_ows);
        if member.is_empty() {
            continue;
        }
        if members.len() == MAX_TRACESTATE_MEMBERS {
            return Err(TooManyMembers);
        }
        let (key, val) = member.split_once('=').ok_or(MissingEquals { index })?;
        if !is_valid_key(key) {
            return Err(BadKey { index });
        }
        if !is_valid_value(val) {
            return Err(BadValue { index });
        }
        // At most 32 members: a linear scan is cheaper than hashing.
        if members.iter().any(|&(k, _)| k == key) {
            return Err(DuplicateKey { index });
        }
        members.push((key, val));
    }
    truncate_tracestate(&mut members);
    let mut out = String::with_capacity(value.len().min(MAX_TRACESTATE_LEN));
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    Ok(out)
}

/// §3.3.1.5: "the vendor MUST truncate whole entries. Entries larger than 128 characters long
/// SHOULD be removed first. Then entries SHOULD be removed starting from the end."
fn truncate_tracestate(members: &mut Vec<(&str, &str)>) {
    let entry_len = |&(k, v): &(&str, &str)| k.len() + 1 + v.len();
    let total =
        |m: &[(&str, &str)]| m.iter().map(entry_len).sum::<usize>() + m.len().saturating_sub(1);
    while total(members) > MAX_TRACESTATE_LEN {
        // Large entries go first, right-most first; then plain right-most.
        match members
            .iter()
            .rposition(|m| entry_len(m) > TRACESTATE_LARGE_ENTRY)
        {
            Some(i) => {
                members.remove(i);
            }
            None => {
                members.pop();
            }
        }
    }
}

/// Formats a version-00 `traceparent` for `ctx` (`00-<trace-id>-<span-id>-<flags>`).
///
/// Flags other than [`KNOWN_FLAGS`] are cleared: Level 1 §3.2.2.5.2 says vendors MUST set
/// flags they do not know to zero, and §3.2.4 says a higher version is re-emitted as the
/// highest version we know (00).
pub fn format_traceparent(ctx: &SpanContext) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    fn push_hex(s: &mut String, bytes: &[u8]) {
        for b in bytes {
            s.push(DIGITS[(b >> 4) as usize] as char);
            s.push(DIGITS[(b & 0xf) as usize] as char);
        }
    }
    let mut s = String::with_capacity(V00_LEN);
    s.push_str("00-");
    push_hex(&mut s, &ctx.trace_id);
    s.push('-');
    push_hex(&mut s, &ctx.span_id);
    s.push('-');
    push_hex(&mut s, &[ctx.flags & KNOWN_FLAGS]);
    s
}

/// A new random trace id, never all zeros (§3.2.2.3).
///
/// Ids come from `fastrand` (wyrand, seeded per thread from the OS): fast, allocation-free and
/// uniformly distributed, but predictable to someone who sees enough output. That is fine:
/// trace ids are correlation handles, not secrets or capabilities, and the spec asks only for
/// uniqueness and randomness (§6 "Considerations for trace-id field generation"). All 16 bytes
/// are random, which satisfies the Level 2 `random` flag's promise for the right-most 7.
pub fn new_trace_id() -> TraceId {
    loop {
        let v = fastrand::u128(..);
        if v != 0 {
            return v.to_be_bytes();
        }
    }
}

/// A new random span id, never all zeros (§3.2.2.4). Same generator and caveats as
/// [`new_trace_id`].
pub fn new_span_id() -> SpanId {
    loop {
        let v = fastrand::u64(..);
        if v != 0 {
            return v.to_be_bytes();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TraceContextError::*;

    const TID: &str = "12345678901234567890123456789012";
    const PID: &str = "1234567890123456";

    fn tp(version: &str, trace: &str, parent: &str, flags: &str) -> String {
        format!("{version}-{trace}-{parent}-{flags}")
    }

    #[test]
    fn traceparent_valid() {
        let ok = |v: &str| parse_traceparent(v).unwrap_or_else(|e| panic!("{v:?}: {e}"));
        let p = ok("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(p.version, 0);
        assert_eq!(p.trace_id[0], 0x4b);
        assert_eq!(p.trace_id[15], 0x36);
        assert_eq!(
            p.parent_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(p.flags, 1);
        assert!(p.sampled());
        assert!(!ok(&tp("00", TID, PID, "00")).sampled());
        // Unknown flags are kept as received.
        assert_eq!(ok(&tp("00", TID, PID, "ff")).flags, 0xff);
        assert_eq!(ok(&tp("00", TID, PID, "09")).flags, 0x09);
        // OWS around the value (W3C test_traceparent_ows_handling).
        for v in [" ", "\t", "\t "] {
            assert_eq!(
                ok(&format!("{v}{}", tp("00", TID, PID, "01"))).trace_id,
                ok(&tp("00", TID, PID, "01")).trace_id
            );
            assert!(parse_traceparent(&format!("{}{v}", tp("00", TID, PID, "01"))).is_ok());
            assert!(parse_traceparent(&format!("{v}{}{v}", tp("00", TID, PID, "01"))).is_ok());
        }
    }

    #[test]
    fn traceparent_future_versions() {
        // W3C test_traceparent_version_0xcc: parsed with the 00 rules, extra fields ignored.
        let p = parse_traceparent(&tp("cc", TID, PID, "01")).unwrap();
        assert_eq!(p.version, 0xcc);
        let p = parse_traceparent(&format!(
            "{}-what-the-future-will-be-like",
            tp("cc", TID, PID, "01")
        ))
        .unwrap();
        assert_eq!(
            p.trace_id,
            parse_traceparent(&tp("00", TID, PID, "01"))
                .unwrap()
                .trace_id
        );
        assert_eq!(
            parse_traceparent(&format!("{}-", tp("01", TID, PID, "01")))
                .unwrap()
                .version,
            1
        );
        assert_eq!(
            parse_traceparent(&format!(
                "{}.what-the-future-will-be-like",
                tp("cc", TID, PID, "01")
            )),
            Err(BadSeparator { offset: 55 })
        );
        // A future version shorter than 55 cannot be parsed.
        assert_eq!(
            parse_traceparent("01-1234-5678-01"),
            Err(TooShort { len: 15 })
        );
        // Its fields follow the 00 rules too.
        assert_eq!(
            parse_traceparent(&tp("cc", &"0".repeat(32), PID, "01")),
            Err(ZeroTraceId)
        );
        assert_eq!(
            parse_traceparent(&tp("cc", "4BF92F3577B34DA6A3CE929D0E0E4736", PID, "01")),
            Err(BadTraceId)
        );
    }

    #[test]
    fn traceparent_invalid() {
        let long_trace = format!("{TID}3");
        let cases: &[(String, TraceContextError)] = &[
            (String::new(), Empty),
            (" \t ".into(), Empty),
            ("00".into(), BadVersion),
            // Version: illegal characters, too long, too short, uppercase, ff.
            (tp(".0", TID, PID, "01"), BadVersion),
            (tp("0.", TID, PID, "01"), BadVersion),
            (tp("000", TID, PID, "01"), BadVersion),
            (tp("0000", TID, PID, "01"), BadVersion),
            (tp("0", TID, PID, "01"), BadVersion),
            (tp("0A", TID, PID, "01"), BadVersion),
            (tp("ff", TID, PID, "01"), ForbiddenVersion),
            // Version 00 must be exactly 55 characters.
            (
                format!("{}.", tp("00", TID, PID, "01")),
                BadLengthV00 { len: 56 },
            ),
            (
                format!("{}-what-the-future-will-be-like", tp("00", TID, PID, "01")),
                BadLengthV00 { len: 84 },
            ),
            (tp("00", &long_trace, PID, "01"), BadLengthV00 { len: 56 }),
            (tp("00", &TID[1..], PID, "01"), BadLengthV00 { len: 54 }),
            (tp("00", TID, &PID[1..], "01"), BadLengthV00 { len: 54 }),
            (
                tp("00", TID, &format!("{PID}7"), "01"),
                BadLengthV00 { len: 56 },
            ),
            (tp("00", TID, PID, "001"), BadLengthV00 { len: 56 }),
            (tp("00", TID, PID, "1"), BadLengthV00 { len: 54 }),
            // trace-id: illegal characters, uppercase, all zeros.
            (tp("00", &format!(".{}", &TID[1..]), PID, "01"), BadTraceId),
            (tp("00", &format!("{}.", &TID[..31]), PID, "01"), BadTraceId),
            (
                tp("00", "4BF92F3577B34DA6A3CE929D0E0E4736", PID, "01"),
                BadTraceId,
            ),
            (tp("00", &"0".repeat(32), PID, "01"), ZeroTraceId),
            // parent-id: illegal characters, uppercase, all zeros.
            (tp("00", TID, &format!(".{}", &PID[1..]), "01"), BadParentId),
            (
                tp("00", TID, &format!("{}.", &PID[..15]), "01"),
                BadParentId,
            ),
            (tp("00", TID, "00F067AA0BA902B7", "01"), BadParentId),
            (tp("00", TID, "0000000000000000", "01"), ZeroParentId),
            // trace-flags: illegal characters, uppercase.
            (tp("00", TID, PID, ".0"), BadFlags),
            (tp("00", TID, PID, "0."), BadFlags),
            (tp("00", TID, PID, "0F"), BadFlags),
            // Separators.
            (format!("00-{TID}_{PID}-01"), BadSeparator { offset: 35 }),
            (format!("00-{TID}-{PID}_01"), BadSeparator { offset: 52 }),
            (format!("00_{TID}-{PID}-01"), BadVersion),
            // Whitespace inside, and non-OWS around, the value.
            (format!("00- {}-{PID}-01", &TID[1..]), BadTraceId),
            (
                format!("{}\r\n", tp("00", TID, PID, "01")),
                BadLengthV00 { len: 57 },
            ),
            // Non-ASCII must not panic on byte offsets.
            (format!("00-{}é-{PID}-01", &TID[..30]), BadTraceId),
        ];
        for (value, want) in cases {
            assert_eq!(parse_traceparent(value).as_ref(), Err(want), "{value:?}");
        }
    }

    #[test]
    fn format_round_trips_and_masks_flags() {
        let p =
            parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff-x").unwrap();
        let ctx = SpanContext {
            trace_id: p.trace_id,
            span_id: p.parent_id,
            flags: p.flags,
            trace_state: None,
        };
        // Downgraded to version 00, unknown flags cleared.
        assert_eq!(
            format_traceparent(&ctx),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03"
        );
        let ctx = SpanContext { flags: 1, ..ctx };
        let s = format_traceparent(&ctx);
        assert_eq!(s.len(), 55);
        let back = parse_traceparent(&s).unwrap();
        assert_eq!(
            (back.trace_id, back.parent_id, back.flags),
            (ctx.trace_id, ctx.span_id, 1)
        );
    }

    #[test]
    fn new_ids_are_nonzero_distinct_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let (t, s) = (new_trace_id(), new_span_id());
            assert_ne!(t, [0; 16]);
            assert_ne!(s, [0; 8]);
            assert!(seen.insert(t));
            let ctx = SpanContext {
                trace_id: t,
                span_id: s,
                flags: 0,
                trace_state: None,
            };
            let p = parse_traceparent(&format_traceparent(&ctx)).unwrap();
            assert_eq!((p.trace_id, p.parent_id), (t, s));
        }
    }

    #[test]
    fn tracestate_valid() {
        let cases: &[(&str, &str)] = &[
            ("", ""),
            (" \t ", ""),
            (",,", ""),
            ("foo=1", "foo=1"),
            (
                "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
                "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
            ),
            // OWS around members (W3C test_tracestate_ows_handling).
            ("foo=1 \t , \t bar=2, \t baz=3", "foo=1,bar=2,baz=3"),
            ("foo=1\t \t,\t \tbar=2,\t \tbaz=3", "foo=1,bar=2,baz=3"),
            (" foo=1", "foo=1"),
            ("\tfoo=1", "foo=1"),
            ("foo=1 ", "foo=1"),
            ("foo=1\t", "foo=1"),
            ("\t foo=1 \t", "foo=1"),
            // Empty members dropped (several tracestate fields joined, one of them empty).
            ("foo=1,", "foo=1"),
            (",foo=1", "foo=1"),
            ("foo=1, ,bar=2", "foo=1,bar=2"),
            // Leading spaces belong to the value; order is preserved.
            ("foo= bar,a=b", "foo= bar,a=b"),
            // Multi-tenant keys and digits.
            (
                "190@nr=0-0-709288,fw529a3039@dt=FW4;0",
                "190@nr=0-0-709288,fw529a3039@dt=FW4;0",
            ),
            ("a*/_-0@b*/_-0=x", "a*/_-0@b*/_-0=x"),
        ];
        for (input, want) in cases {
            assert_eq!(parse_tracestate(input).as_deref(), Ok(*want), "{input:?}");
        }
    }

    #[test]
    fn tracestate_all_allowed_characters() {
        // W3C test_tracestate_all_allowed_characters.
        let key: String = ('a'..='z').chain('0'..='9').chain("_-*/".chars()).collect();
        let value: String = (0x20u8..=0x7e)
            .filter(|&c| c != b',' && c != b'=')
            .map(char::from)
            .collect();
        let m = format!("{key}={value}");
        assert_eq!(parse_tracestate(&m).unwrap(), m);
        let m = format!("{key}@a-z0-9_-*/={value}");
        assert_eq!(parse_tracestate(&m).unwrap(), m);
    }

    #[test]
    fn tracestate_member_limit() {
        let list = |n: usize| {
            (1..=n)
                .map(|i| format!("bar{i:02}={i:02}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(parse_tracestate(&list(32)).unwrap(), list(32));
        assert_eq!(parse_tracestate(&list(33)), Err(TooManyMembers));
        // Empty members do not count.
        assert!(parse_tracestate(&format!("{},,, ,", list(32))).is_ok());
    }

    #[test]
    fn tracestate_key_lengths() {
        // W3C test_tracestate_key_length_limit.
        assert!(parse_tracestate(&format!("{}=1", "z".repeat(256))).is_ok());
        assert_eq!(
            parse_tracestate(&format!("foo=1,{}=1", "z".repeat(257))),
            Err(BadKey { index: 1 })
        );
        assert!(parse_tracestate(&format!("{}@{}=1", "t".repeat(241), "v".repeat(14))).is_ok());
        assert_eq!(
            parse_tracestate(&format!("{}@v=1", "t".repeat(242))),
            Err(BadKey { index: 0 })
        );
        assert_eq!(
            parse_tracestate(&format!("t@{}=1", "v".repeat(15))),
            Err(BadKey { index: 0 })
        );
        // Value lengths: 256 is the maximum.
        assert!(parse_tracestate(&format!("k={}", "v".repeat(256))).is_ok());
        assert_eq!(
            parse_tracestate(&format!("k={}", "v".repeat(257))),
            Err(BadValue { index: 0 })
        );
    }

    #[test]
    fn tracestate_invalid() {
        let cases: &[(&str, TraceContextError)] = &[
            // Keys: W3C test_tracestate_key_illegal_characters / _illegal_vendor_format.
            ("foo =1", BadKey { index: 0 }),
            ("FOO=1", BadKey { index: 0 }),
            ("foo.bar=1", BadKey { index: 0 }),
            ("1foo=1", BadKey { index: 0 }),
            ("=1", BadKey { index: 0 }),
            ("foo@=1,bar=2", BadKey { index: 0 }),
            ("@foo=1,bar=2", BadKey { index: 0 }),
            ("foo@@bar=1,bar=2", BadKey { index: 0 }),
            ("foo@bar@baz=1,bar=2", BadKey { index: 0 }),
            ("foo@1bar=1", BadKey { index: 0 }),
            // Values: W3C test_tracestate_value_illegal_characters.
            ("foo=bar=baz", BadValue { index: 0 }),
            ("foo=,bar=3", BadValue { index: 0 }),
            ("foo=a\tb", BadValue { index: 0 }),
            ("foo=caf\u{e9}", BadValue { index: 0 }),
            ("foo=a\u{7f}", BadValue { index: 0 }),
            // Structure.
            ("foo", MissingEquals { index: 0 }),
            ("a=1,,foo", MissingEquals { index: 2 }),
            // Duplicates: W3C test_tracestate_duplicated_keys.
            ("foo=1,foo=1", DuplicateKey { index: 1 }),
            ("foo=1,foo=2", DuplicateKey { index: 1 }),
            ("foo=1,bar=2,foo=3", DuplicateKey { index: 2 }),
        ];
        for (input, want) in cases {
            assert_eq!(parse_tracestate(input).as_ref(), Err(want), "{input:?}");
        }
    }

    #[test]
    fn tracestate_truncated_by_whole_entries() {
        // 20 entries of 30 characters: 20*30 + 19 commas = 619 > 512; keep the left-most 16
        // (16*30 + 15 = 495).
        let entries: Vec<String> = (0..20)
            .map(|i| format!("k{i:02}={}", "v".repeat(26)))
            .collect();
        let out = parse_tracestate(&entries.join(",")).unwrap();
        assert_eq!(out, entries[..16].join(","));
        // A large entry is dropped before any small one, even if it is on the left.
        let big = format!("big={}", "b".repeat(200));
        let small: Vec<String> = (0..10)
            .map(|i| format!("s{i}={}", "v".repeat(30)))
            .collect();
        let input = format!("{big},{}", small.join(","));
        assert!(input.len() > MAX_TRACESTATE_LEN);
        assert_eq!(parse_tracestate(&input).unwrap(), small.join(","));
        // Whatever the input, the output stays within bounds.
        let many: Vec<String> = (0..32)
            .map(|i| format!("k{i}={}", "x".repeat(256)))
            .collect();
        assert!(parse_tracestate(&many.join(",")).unwrap().len() <= MAX_TRACESTATE_LEN);
    }
}
