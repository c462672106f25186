//! Request-target splitting and redaction for the `url.*` span attributes.
//!
//! The agent sees every byte every process on the node sends, so nothing from a URL reaches a
//! span unless it is known to be harmless: query values are always redacted by default,
//! userinfo (`user:pass@`) is never kept, and every output is bounded. This module owns that
//! policy for `url.path`, `url.query` and `url.full`. It does not parse HTTP (the protocol
//! parsers hand us the request-target), does not decide whether redaction is on (config does)
//! and does not build low-cardinality routes ([`super::route`] does, on top of
//! [`split_target`]).

use super::route;

/// What replaces redacted query values (and parameter names that look like values), as the
/// OpenTelemetry semantic conventions for `url.query` / `url.full` use it.
pub const REDACTED: &str = "REDACTED";
/// Appended where an output was cut to its bound.
pub const TRUNCATED: &str = "…";
/// Bound of a redacted or raw query in our outputs, in bytes (before the [`TRUNCATED`] mark).
pub const MAX_QUERY_LEN: usize = 1024;
/// Bound of the path inside `url.full`, in bytes (before the [`TRUNCATED`] mark).
pub const MAX_PATH_LEN: usize = 2048;
/// Bound of the host inside `url.full` (a DNS name is at most 253 characters).
pub const MAX_HOST_LEN: usize = 255;
/// Query parameter names longer than this are treated as values and redacted.
pub const MAX_PARAM_NAME_LEN: usize = 40;

/// The parts of an HTTP request-target (RFC 9112 §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target<'a> {
    /// Scheme of an absolute-form target (`http` in `http://h/a`), as written.
    pub scheme: Option<&'a str>,
    /// `host[:port]` of an absolute-form target, with any `userinfo@` removed.
    pub authority: Option<&'a str>,
    /// The path. `/` for an absolute-form target with an empty path, `*` for asterisk-form,
    /// and the whole target (minus query and fragment) for anything else, including
    /// authority-form (`CONNECT host:443`), which cannot be told from garbage without the method.
    pub path: &'a str,
    /// Everything between the first `?` and the fragment, unredacted; `Some("")` for `/a?`.
    pub query: Option<&'a str>,
}

/// Splits a request-target. Handles origin-form (`/a?b`), absolute-form
/// (`http://user@h:1/a?b` → scheme `http`, authority `h:1`, path `/a`, query `b`) and
/// asterisk-form (`*`). A fragment (`#…`) is dropped wherever it appears: it is not part of a
/// request-target and clients should not send it, but some do. Never fails, never allocates.
pub fn split_target(target: &str) -> Target<'_> {
    // RFC 3986 §3.5: the fragment starts at the first '#'; '#' cannot occur earlier.
    let t = target.split_once('#').map_or(target, |(before, _)| before);
    let (scheme, authority, rest) = match split_scheme(t) {
        Some((scheme, after)) => {
            // RFC 3986 §3.2: the authority ends at the next '/', '?' or '#'.
            let end = after.find(['/', '?']).unwrap_or(after.len());
            let authority = strip_userinfo(&after[..end]);
            (Some(scheme), Some(authority), &after[end..])
        }
        None => (None, None, t),
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    // An absolute URI with an empty path means "/" for HTTP (RFC 9110 §4.2.3).
    let path = if path.is_empty() && scheme.is_some() {
        "/"
    } else {
        path
    };
    Target {
        scheme,
        authority,
        path,
        query,
    }
}

/// `scheme "://" rest` when `t` starts with a valid scheme (RFC 3986 §3.1:
/// `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`).
fn split_scheme(t: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = t.split_once("://")?;
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first_ok && rest_ok).then_some((scheme, rest))
}

/// Drops `userinfo@` from an authority (RFC 3986 §3.2.1). The last `@` ends the userinfo, so
/// a password containing `@` is removed whole.
fn strip_userinfo(authority: &str) -> &str {
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// Cuts `s` to at most `max` bytes on a char boundary and marks the cut.
fn bounded(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{TRUNCATED}", &s[..end]).into()
}

/// Whether a query parameter name can be shown as is. Names are kept because they say what a
/// request does (`q`, `page`, `X-Amz-Signature`) without its data; but some clients put the
/// data itself where a name would be (`?s3cr3tT0ken`, `?12345`), so a name that is long, uses
/// characters names do not, or looks opaque by the route heuristic (an id, uuid, hex string or
/// token, see [`super::route`]) is redacted like a value.
fn is_plain_name(name: &str) -> bool {
    name.len() <= MAX_PARAM_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~[]%+:".contains(&b))
        && !route::is_opaque(name)
}

/// Redacts a query string: every parameter keeps its name and gets the value [`REDACTED`];
/// `a=1&b=&c` → `a=REDACTED&b=REDACTED&c`.
///
/// Choices, all in the direction of leaking less:
/// - An empty value is redacted too (`b=` → `b=REDACTED`), so the output does not tell empty
///   values from set ones.
/// - A parameter without `=` has no value to hide and keeps its bare name (`c` → `c`), unless
///   the name itself looks like data (see below), then it becomes `REDACTED`.
/// - A name that looks like data (longer than [`MAX_PARAM_NAME_LEN`], unusual characters, or
///   an id/uuid/hex/token by the route heuristic) is replaced by `REDACTED`.
/// - Empty parameters (`a=1&&b=2`) are kept, so the shape of the query is preserved.
/// - The output is at most [`MAX_QUERY_LEN`] bytes plus `&…` when parameters were left out;
///   parameters are never cut in the middle.
pub fn redact_query(query: &str) -> String {
    let mut out = String::with_capacity(query.len().min(MAX_QUERY_LEN) + 8);
    for (i, param) in query.split('&').enumerate() {
        let (name, has_value) = match param.split_once('=') {
            Some((name, _)) => (name, true),
            None => (param, false),
        };
        let name = if name.is_empty() || is_plain_name(name) {
            name
        } else {
            REDACTED
        };
        let sep = usize::from(i > 0);
        let len = sep + name.len() + if has_value { 1 + REDACTED.len() } else { 0 };
        if out.len() + len > MAX_QUERY_LEN {
            out.push('&');
            out.push_str(TRUNCATED);
            break;
        }
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        if has_value {
            out.push('=');
            out.push_str(REDACTED);
        }
    }
    out
}

/// Builds `url.full` for a client span: `scheme://host[:port]path[?query]`.
///
/// - `scheme` is lower-cased; empty means `http` (the agent reads plaintext HTTP unless a TLS
///   library probe says otherwise, and then the caller passes `https`).
/// - `host` may be a bare name or address, a `Host` header value with a port (`h:8080`, which
///   then wins over `port`), or a bracketed or bare IPv6 literal (bracketed in the output).
///   Any `userinfo@` is removed: the semantic conventions say `url.full` MUST NOT contain
///   credentials and suggest `REDACTED:REDACTED@`; we drop the userinfo altogether, which
///   also hides whether there was any.
/// - The port is left out when it is the scheme's default (80 for http, 443 for https).
/// - `path` should be the path only, but an unsplit request-target is handled safely: an
///   absolute-form target contributes only its path, and a `?…` in it is treated as the query
///   when `query` is `None`, so an unsplit target can never leak an unredacted query.
///   An empty path is `/`; a path not starting with `/` (asterisk-form) gets one.
/// - `query` is redacted with [`redact_query`] when `redact`; either way it is bounded to
///   [`MAX_QUERY_LEN`]. An empty query is left out.
/// - Host and path are bounded to [`MAX_HOST_LEN`] and [`MAX_PATH_LEN`] bytes.
pub fn full_url(
    scheme: &str,
    host: &str,
    port: Option<u16>,
    path: &str,
    query: Option<&str>,
    redact: bool,
) -> String {
    let scheme = if scheme.is_empty() {
        "http".to_owned()
    } else {
        scheme.to_ascii_lowercase()
    };
    let (host, embedded_port) = split_host_port(strip_userinfo(host));
    let port = embedded_port.or(port);
    let target = split_target(path);
    let path = if target.path.is_empty() {
        "/"
    } else {
        target.path
    };
    let query = query.or(target.query).filter(|q| !q.is_empty());

    let mut out = String::with_capacity(scheme.len() + host.len() + path.len() + 16);
    out.push_str(&scheme);
    out.push_str("://");
    let ipv6 = host.contains(':');
    if ipv6 {
        out.push('[');
    }
    out.push_str(&bounded(host, MAX_HOST_LEN));
    if ipv6 {
        out.push(']');
    }
    let default_port = match scheme.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    };
    if let Some(p) = port.filter(|&p| Some(p) != default_port) {
        out.push(':');
        out.push_str(&p.to_string());
    }
    if !path.starts_with('/') {
        out.push('/');
    }
    out.push_str(&bounded(path, MAX_PATH_LEN));
    if let Some(q) = query {
        out.push('?');
        if redact {
            out.push_str(&redact_query(q));
        } else {
            out.push_str(&bounded(q, MAX_QUERY_LEN));
        }
    }
    out
}

/// Splits `host[:port]`, `[v6]:port`, `[v6]` or a bare IPv6 literal into the host without
/// brackets and the port, if there is a valid one. A port that is not a `u16` is dropped.
fn split_host_port(h: &str) -> (&str, Option<u16>) {
    if let Some(rest) = h.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((v6, after)) => (v6, after.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (rest, None),
        };
    }
    match h.matches(':').count() {
        // One colon: name:port. More: a bare IPv6 literal, which has no port.
        1 => {
            let (name, p) = h.split_once(':').unwrap_or((h, ""));
            (name, p.parse().ok())
        }
        _ => (h, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t<'a>(
        scheme: Option<&'a str>,
        authority: Option<&'a str>,
        path: &'a str,
        query: Option<&'a str>,
    ) -> Target<'a> {
        Target {
            scheme,
            authority,
            path,
            query,
        }
    }

    #[test]
    fn splits_targets() {
        let cases = [
            ("/", t(None, None, "/", None)),
            ("/a/b", t(None, None, "/a/b", None)),
            ("/a?b=1&c", t(None, None, "/a", Some("b=1&c"))),
            ("/a?", t(None, None, "/a", Some(""))),
            ("/a?b?c", t(None, None, "/a", Some("b?c"))),
            ("/a#frag", t(None, None, "/a", None)),
            ("/a?q=1#frag?x", t(None, None, "/a", Some("q=1"))),
            ("/a#f?notquery", t(None, None, "/a", None)),
            ("*", t(None, None, "*", None)),
            ("", t(None, None, "", None)),
            (
                "http://h:1/a?b",
                t(Some("http"), Some("h:1"), "/a", Some("b")),
            ),
            (
                "HTTPS://Example.com/x",
                t(Some("HTTPS"), Some("Example.com"), "/x", None),
            ),
            ("http://h", t(Some("http"), Some("h"), "/", None)),
            ("http://h?x=1", t(Some("http"), Some("h"), "/", Some("x=1"))),
            ("http://h#f", t(Some("http"), Some("h"), "/", None)),
            (
                "http://[::1]:8080/p",
                t(Some("http"), Some("[::1]:8080"), "/p", None),
            ),
            // Userinfo never comes out, even with '@' in the password.
            (
                "http://user:pa@ss@h:1/a",
                t(Some("http"), Some("h:1"), "/a", None),
            ),
            ("http://user@h/", t(Some("http"), Some("h"), "/", None)),
            // Not absolute-form: origin-form paths that merely contain "://".
            (
                "/redirect?to=http://x/",
                t(None, None, "/redirect", Some("to=http://x/")),
            ),
            ("/a://b", t(None, None, "/a://b", None)),
            ("1http://h/", t(None, None, "1http://h/", None)),
            // Authority-form stays whole.
            ("example.com:443", t(None, None, "example.com:443", None)),
        ];
        for (input, want) in cases {
            assert_eq!(split_target(input), want, "{input:?}");
        }
    }

    #[test]
    fn redacts_queries() {
        let cases = [
            ("a=1&b=&c", "a=REDACTED&b=REDACTED&c"),
            ("q=OpenTelemetry", "q=REDACTED"),
            ("", ""),
            ("a=1&&b=2", "a=REDACTED&&b=REDACTED"),
            ("=x", "=REDACTED"),
            ("a=b=c", "a=REDACTED"),
            (
                "filter%5Bstatus%5D=open&page[size]=10",
                "filter%5Bstatus%5D=REDACTED&page[size]=REDACTED",
            ),
            (
                "X-Amz-Signature=abc&X-Amz-Credential=AKIA",
                "X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED",
            ),
            // Names that look like data are redacted too.
            ("12345", "REDACTED"),
            ("eyJhbGciOiJIUzI1NiJ9x7Q", "REDACTED"),
            (
                "550e8400-e29b-41d4-a716-446655440000=1",
                "REDACTED=REDACTED",
            ),
            ("a%20b c=1", "REDACTED=REDACTED"),
            ("caf\u{e9}=1", "REDACTED=REDACTED"),
        ];
        for (input, want) in cases {
            assert_eq!(redact_query(input), want, "{input:?}");
        }
        let long_name = "n".repeat(MAX_PARAM_NAME_LEN + 1);
        assert_eq!(redact_query(&format!("{long_name}=1")), "REDACTED=REDACTED");
    }

    #[test]
    fn redacted_query_is_bounded() {
        let q: String = (0..1000).map(|i| format!("p{i}=secret{i}&")).collect();
        let out = redact_query(&q);
        assert!(
            out.len() <= MAX_QUERY_LEN + 1 + TRUNCATED.len(),
            "{}",
            out.len()
        );
        assert!(out.ends_with("&…"));
        assert!(!out.contains("secret"));
        // Whole parameters only: every one before the mark is complete.
        let kept = out.trim_end_matches("&…");
        assert!(kept.split('&').all(|p| p.ends_with("=REDACTED")));
    }

    #[test]
    fn builds_full_urls() {
        let cases = [
            (
                ("http", "example.com", Some(80), "/a", Some("x=1"), true),
                "http://example.com/a?x=REDACTED",
            ),
            (
                ("https", "example.com", Some(443), "/", None, true),
                "https://example.com/",
            ),
            (
                ("https", "example.com", Some(8443), "/a", None, true),
                "https://example.com:8443/a",
            ),
            (
                ("HTTP", "example.com", None, "", None, true),
                "http://example.com/",
            ),
            (
                ("", "h", Some(8080), "/a", Some("x=1"), false),
                "http://h:8080/a?x=1",
            ),
            // Userinfo is dropped, never redacted-in-place.
            (
                ("http", "user:pw@h", Some(80), "/", None, true),
                "http://h/",
            ),
            // Host header with its own port wins over the connection port.
            (
                ("http", "h:8080", Some(80), "/a", None, true),
                "http://h:8080/a",
            ),
            (("http", "h:80", Some(8080), "/a", None, true), "http://h/a"),
            // IPv6 literals, bare or bracketed.
            (
                ("http", "::1", Some(8080), "/", None, true),
                "http://[::1]:8080/",
            ),
            (
                ("http", "[fe80::1]:9000", None, "/", None, true),
                "http://[fe80::1]:9000/",
            ),
            (
                ("http", "[::1]", Some(80), "/", None, true),
                "http://[::1]/",
            ),
            // An unsplit target never leaks its query.
            (
                ("http", "h", Some(80), "/a?token=s3cr3t#f", None, true),
                "http://h/a?token=REDACTED",
            ),
            (
                ("http", "h", Some(80), "/a?token=s3cr3t", Some("b=2"), true),
                "http://h/a?b=REDACTED",
            ),
            (
                ("http", "h", Some(80), "http://other/a?k=v", None, true),
                "http://h/a?k=REDACTED",
            ),
            // Empty query dropped; asterisk-form gets a slash.
            (("http", "h", Some(80), "/a", Some(""), true), "http://h/a"),
            (("http", "h", Some(80), "*", None, true), "http://h/*"),
            (("ftp", "h", Some(80), "/", None, true), "ftp://h:80/"),
        ];
        for ((scheme, host, port, path, query, redact), want) in cases {
            assert_eq!(
                full_url(scheme, host, port, path, query, redact),
                want,
                "{scheme} {host} {path}"
            );
        }
    }

    #[test]
    fn full_url_is_bounded() {
        let host = "h".repeat(1000);
        let path = format!("/{}", "é".repeat(5000));
        let query = "x".repeat(10_000);
        let url = full_url("http", &host, None, &path, Some(&query), false);
        let max =
            "http://".len() + MAX_HOST_LEN + MAX_PATH_LEN + 1 + MAX_QUERY_LEN + 3 * TRUNCATED.len();
        assert!(url.len() <= max, "{}", url.len());
        let url = full_url("http", "h", None, &path, Some(&query), true);
        assert!(url.ends_with("?REDACTED"), "a 10k name is data");
    }
}
