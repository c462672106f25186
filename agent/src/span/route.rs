//! A low-cardinality route (`/users/{id}`) guessed from a URL path (`/users/42`), for span
//! names and `http.route`.
//!
//! **This is a heuristic.** The real route template lives in the application's router, which
//! an eBPF agent cannot see; all we have is the concrete path. The guess replaces path
//! segments that look like identifiers with placeholders so that span names group requests
//! instead of exploding into one name per user, order or session. It will sometimes keep a
//! segment that is really a variable (a user name, a slug, a date) and, more rarely, collapse
//! one that is really fixed. This module does not decide whether the result is used as
//! `http.route` or only in the span name; the span builder does.
//!
//! # The rules, exactly
//!
//! 1. The input is split with [`split_target`]: an absolute-form
//!    target (`http://host:port/p`) is reduced to its path, and anything from the first `?`
//!    or `#` is ignored.
//! 2. An empty path is `/`. A path that does not start with `/` — asterisk-form (`OPTIONS *`),
//!    authority-form (`CONNECT host:443`), garbage — has no route: the result is `None`.
//! 3. The path is split on `/` and empty segments are dropped, so repeated slashes collapse
//!    and a trailing slash is removed (`//a///b/` → `/a/b`).
//! 4. Each segment is replaced by the first rule that matches:
//!    - `{encoded}`: it contains `%` (a percent-escape) or any byte outside printable ASCII
//!      (`!` to `~`). Encoded segments are nearly always user input (search terms, file
//!      names), and we do not decode them: decoding would only make the next rules harder.
//!    - `{id}`: ASCII digits only (`42`, `2024`).
//!    - `{uuid}`: 8-4-4-4-12 hex digits separated by `-`, any case.
//!    - `{hex}`: at least 8 hex digits, any case, at least one of them a decimal digit
//!      (`5f3a9c01`; but `deadbeef` and `facade` stay, they can be words).
//!    - `{token}`: at least 20 characters from the base64url alphabet plus `.`
//!      (`A-Z a-z 0-9 - _ .`, optionally ending in up to two `=`), containing letters and
//!      digits, and either mixing upper- and lower-case letters or switching between letters
//!      and digits at least 4 times (separators skipped). Catches API keys, session ids and JWTs; keeps kebab-case
//!      names with a number in them (`release-notes-2024-edition`).
//!    - `{long}`: longer than [`MAX_SEGMENT_LEN`] bytes (slugs, blobs), so the output is
//!      bounded.
//!    - Otherwise the segment is kept as is: `api`, `v1`, `v1.2.3`, `healthz`, `app.js`, `..`.
//! 5. At most [`MAX_SEGMENTS`] segments are kept; a deeper path ends in `/…`.
//!
//! Rules are applied per segment, so one variable can land on two placeholders: a hex id
//! that happens to be all decimal digits is `{id}`, and one shorter than 8 characters is
//! kept. A route then has a few templates instead of one per value, which is the point.
//!
//! The output therefore always starts with `/`, never contains `//`, `?` or `#`, is at most
//! `MAX_SEGMENTS * (MAX_SEGMENT_LEN + 1) + 4` bytes, and is a fixed point: the template of a
//! template is itself (placeholders contain `{`, which no rule matches).

use super::url::{split_target, TRUNCATED};

/// Deeper paths are cut to this many segments plus a trailing `/…`.
pub const MAX_SEGMENTS: usize = 16;
/// Segments longer than this (that no other rule matched) become `{long}`.
pub const MAX_SEGMENT_LEN: usize = 64;

pub const PLACEHOLDER_ENCODED: &str = "{encoded}";
pub const PLACEHOLDER_ID: &str = "{id}";
pub const PLACEHOLDER_UUID: &str = "{uuid}";
pub const PLACEHOLDER_HEX: &str = "{hex}";
pub const PLACEHOLDER_TOKEN: &str = "{token}";
pub const PLACEHOLDER_LONG: &str = "{long}";

/// The route template for a request path (see the module documentation for the rules), or
/// `None` when the target has no path to template (`*`, `host:443`, relative garbage).
pub fn route_template(path: &str) -> Option<String> {
    let path = split_target(path).path;
    if path.is_empty() {
        return Some("/".to_owned());
    }
    if !path.starts_with('/') {
        return None;
    }
    let mut out = String::with_capacity(path.len().min(MAX_SEGMENTS * 16));
    for (n, seg) in path.split('/').filter(|s| !s.is_empty()).enumerate() {
        out.push('/');
        if n == MAX_SEGMENTS {
            out.push_str(TRUNCATED);
            break;
        }
        out.push_str(placeholder(seg).unwrap_or(seg));
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// The placeholder that replaces `seg`, or `None` to keep it (rule 4 of the module docs).
fn placeholder(seg: &str) -> Option<&'static str> {
    // Our own truncation mark passes through, which keeps templates idempotent.
    if seg == TRUNCATED {
        return None;
    }
    if seg
        .bytes()
        .any(|b| b == b'%' || !(b'!'..=b'~').contains(&b))
    {
        return Some(PLACEHOLDER_ENCODED);
    }
    if let Some(p) = opaque_kind(seg) {
        return Some(p);
    }
    (seg.len() > MAX_SEGMENT_LEN).then_some(PLACEHOLDER_LONG)
}

/// Whether `s` looks like an identifier or credential rather than a name: all digits, a
/// UUID, a hex string or a token by the rules above. Shared with query-name redaction in
/// [`super::url`].
pub(crate) fn is_opaque(s: &str) -> bool {
    opaque_kind(s).is_some()
}

fn opaque_kind(s: &str) -> Option<&'static str> {
    let b = s.as_bytes();
    if b.is_empty() {
        None
    } else if b.iter().all(u8::is_ascii_digit) {
        Some(PLACEHOLDER_ID)
    } else if is_uuid(b) {
        Some(PLACEHOLDER_UUID)
    } else if b.len() >= 8
        && b.iter().all(u8::is_ascii_hexdigit)
        && b.iter().any(u8::is_ascii_digit)
    {
        Some(PLACEHOLDER_HEX)
    } else if is_token(b) {
        Some(PLACEHOLDER_TOKEN)
    } else {
        None
    }
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_token(b: &[u8]) -> bool {
    // Up to two '=' of base64 padding at the end.
    let body = b
        .strip_suffix(b"==")
        .or_else(|| b.strip_suffix(b"="))
        .unwrap_or(b);
    if body.len() < 20
        || !body
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    {
        return false;
    }
    let (mut upper, mut lower, mut digit) = (false, false, false);
    let mut switches = 0;
    let mut prev_digit: Option<bool> = None;
    for &c in body.iter().filter(|c| c.is_ascii_alphanumeric()) {
        upper |= c.is_ascii_uppercase();
        lower |= c.is_ascii_lowercase();
        let is_digit = c.is_ascii_digit();
        digit |= is_digit;
        if prev_digit.is_some_and(|p| p != is_digit) {
            switches += 1;
        }
        prev_digit = Some(is_digit);
    }
    digit && (upper || lower) && ((upper && lower) || switches >= 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(p: &str) -> Option<String> {
        route_template(p)
    }

    #[test]
    fn templates() {
        let cases = [
            ("", "/"),
            ("/", "/"),
            ("//", "/"),
            ("/users/42", "/users/{id}"),
            ("/users/42/orders/7", "/users/{id}/orders/{id}"),
            ("//users///42/", "/users/{id}"),
            ("/users/42?expand=1#top", "/users/{id}"),
            (
                "/v1/items/550e8400-e29b-41d4-a716-446655440000",
                "/v1/items/{uuid}",
            ),
            (
                "/v1/items/550E8400-E29B-41D4-A716-446655440000",
                "/v1/items/{uuid}",
            ),
            ("/commits/5f3a9c01", "/commits/{hex}"),
            (
                "/commits/5F3A9C01D2E4B6A8C0E2F4A6B8C0D2E4F6A8B0C2",
                "/commits/{hex}",
            ),
            ("/obj/507f1f77bcf86cd799439011", "/obj/{hex}"),
            ("/s/Ab3dEf7hIj9kLm1nOp5qRs", "/s/{token}"),
            ("/s/k3j4h5g6f7d8s9a0qwer", "/s/{token}"),
            ("/s/dGhpcyBpcyBhIHRlc3Q2Mw==", "/s/{token}"),
            (
                "/auth/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.SflKxwRJSMeKKF2QT4",
                "/auth/{token}",
            ),
            ("/search/caf%C3%A9", "/search/{encoded}"),
            ("/files/My%20Document.pdf", "/files/{encoded}"),
            ("/wiki/Caf\u{e9}", "/wiki/{encoded}"),
            ("/a/b\tc", "/a/{encoded}"),
            ("http://example.com:8080/users/42?x=1", "/users/{id}"),
            ("https://example.com", "/"),
        ];
        for (input, want) in cases {
            assert_eq!(rt(input).as_deref(), Some(want), "{input:?}");
        }
    }

    #[test]
    fn does_not_collapse_names() {
        for p in [
            "/api/v1/users",
            "/healthz",
            "/static/app.js",
            "/v2",
            "/api/v1.2.3/x",
            "/blog/deadbeef",
            "/facade",
            "/release-notes-2024-edition",
            "/getUserProfileSettings",
            "/user_profile_settings_page",
            "/bootstrap-5.3.2.bundle.min.js",
            "/a/../b/./c",
            "/{id}",
            "/api/e2e",
        ] {
            assert_eq!(rt(p).as_deref(), Some(p), "{p:?}");
        }
    }

    #[test]
    fn unusable_targets() {
        for p in ["*", "example.com:443", "users/42", "?a=1x", "#x"] {
            let want = if p.starts_with(['?', '#']) {
                Some("/".to_owned())
            } else {
                None
            };
            assert_eq!(rt(p), want, "{p:?}");
        }
    }

    #[test]
    fn long_segments_and_deep_paths_are_bounded() {
        let slug = format!("/blog/{}", "how-to-bake-a-cake-".repeat(5));
        assert_eq!(rt(&slug).as_deref(), Some("/blog/{long}"));
        let deep: String = (0..40).map(|i| format!("/s{i}")).collect();
        let want: String = (0..16).map(|i| format!("/s{i}")).collect::<String>() + "/…";
        assert_eq!(rt(&deep).as_deref(), Some(want.as_str()));
        // Exactly 16 segments: no mark.
        let sixteen: String = (0..16).map(|i| format!("/s{i}")).collect();
        assert_eq!(rt(&sixteen).as_deref(), Some(sixteen.as_str()));
    }

    /// Random paths built from pieces of every class, with a fixed seed.
    fn random_path(rng: &mut fastrand::Rng) -> String {
        const WORDS: &[&str] = &[
            "api", "v1", "users", "orders", "healthz", "app.js", "..", "v1.2.3", "e2e",
        ];
        let mut p = String::new();
        if rng.u8(..10) == 0 {
            p.push_str("http://h:1");
        }
        for _ in 0..rng.usize(0..24) {
            p.push_str(if rng.u8(..8) == 0 { "//" } else { "/" });
            let seg: String = match rng.u8(..9) {
                0 => rng.u64(..).to_string(),
                1 => format!(
                    "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                    rng.u32(..),
                    rng.u16(..),
                    rng.u16(..),
                    rng.u16(..),
                    rng.u64(..1 << 48)
                ),
                2 => format!("{:x}", rng.u128(..)),
                3 => (0..rng.usize(20..40)).map(|_| rng.alphanumeric()).collect(),
                4 => (0..rng.usize(1..100))
                    .map(|_| rng.char('!'..='~'))
                    .filter(|&c| c != '/' && c != '?' && c != '#')
                    .collect(),
                5 => (0..rng.usize(1..6)).map(|_| rng.char(..)).collect(),
                6 => "x".repeat(rng.usize(60..70)),
                _ => WORDS[rng.usize(..WORDS.len())].to_owned(),
            };
            p.push_str(&seg);
        }
        if rng.bool() {
            p.push_str("?q=1");
        }
        p
    }

    #[test]
    fn property_idempotent_bounded_and_clean() {
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let max_len = MAX_SEGMENTS * (MAX_SEGMENT_LEN + 1) + 4;
        for _ in 0..5000 {
            let p = random_path(&mut rng);
            let Some(t) = rt(&p) else {
                panic!("{p:?} has a route")
            };
            assert_eq!(
                rt(&t).as_deref(),
                Some(t.as_str()),
                "not idempotent for {p:?}"
            );
            assert!(
                t.starts_with('/') && !t.contains("//") && !t.contains(['?', '#']),
                "{t:?}"
            );
            assert!(t.len() <= max_len, "{t:?}");
            let segs: Vec<&str> = t.split('/').skip(1).filter(|s| !s.is_empty()).collect();
            assert!(segs.len() <= MAX_SEGMENTS + 1, "{t:?}");
            // No segment that survived is an identifier by our own rules.
            assert!(segs.iter().all(|s| !is_opaque(s)), "{t:?}");
        }
    }

    #[test]
    fn property_ids_collapse_to_one_route() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut routes = std::collections::HashSet::new();
        for _ in 0..1000 {
            let p = format!(
                "/users/{}/orders/{:x}a1/items/{}",
                rng.u32(..),
                rng.u64(1 << 40..),
                (0..24).map(|_| rng.alphanumeric()).collect::<String>() + "9aZ"
            );
            routes.insert(rt(&p).unwrap());
        }
        assert_eq!(routes.len(), 1, "{routes:?}");
    }
}
