//! `detect`: which first bytes are HTTP/1, and which way requests flow.

use super::super::detect;
use super::fixtures;
use crate::protocol::{Detection, Direction, Role};

const E: Direction = Direction::Egress;
const I: Direction = Direction::Ingress;
const MATCH_E: Detection = Detection::Match { request_dir: E };
const MATCH_I: Detection = Detection::Match { request_dir: I };
const MORE: Detection = Detection::NeedMore;
const NO: Detection = Detection::NoMatch;

/// A TLS 1.2 ClientHello record start.
const TLS_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x5a, 0x11, 0x22,
];
/// PostgreSQL StartupMessage: length, protocol 3.0, "user\0postgres\0".
const PG_STARTUP: &[u8] =
    b"\x00\x00\x00\x29\x00\x03\x00\x00user\x00postgres\x00database\x00db\x00\x00";

#[test]
fn detection_table() {
    let long_target = [b"GET /".as_slice(), &[b'a'; 9000]].concat();
    let long_junk_target = [b"GET ".as_slice(), &[b'a'; 9000]].concat();
    let cases: &[(Direction, Role, &[u8], Detection)] = &[
        // Requests where the role says they flow.
        (
            E,
            Role::Client,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            MATCH_E,
        ),
        (I, Role::Server, b"POST /api HTTP/1.0\r\n", MATCH_I),
        (I, Role::Server, b"DELETE /x?y=1 HTTP/1.1\n", MATCH_I),
        (
            E,
            Role::Client,
            b"CONNECT example.com:443 HTTP/1.1\r\n",
            MATCH_E,
        ),
        (E, Role::Client, b"OPTIONS * HTTP/1.1\r\n", MATCH_E),
        (E, Role::Client, b"PATCH /p HTTP/1.1\r\n", MATCH_E),
        (E, Role::Client, b"PROPFIND /dav HTTP/1.1\r\n", MATCH_E),
        (E, Role::Client, &long_target, MATCH_E),
        // Responses seen first: requests flow the other way.
        (I, Role::Client, b"HTTP/1.1 200 OK\r\n", MATCH_E),
        (E, Role::Server, b"HTTP/1.0 404 Not Found\r\n", MATCH_I),
        (E, Role::Server, b"HTTP/1.1 204\r\n", MATCH_I),
        // Unknown role: the bytes decide.
        (E, Role::Unknown, b"GET / HTTP/1.1\r\n", MATCH_E),
        (I, Role::Unknown, b"GET / HTTP/1.1\r\n", MATCH_I),
        (I, Role::Unknown, b"HTTP/1.1 500 Oops\r\n", MATCH_E),
        (E, Role::Unknown, b"HTTP/1.1 500 Oops\r\n", MATCH_I),
        // Too early to tell.
        (E, Role::Client, b"", MORE),
        (E, Role::Client, b"G", MORE),
        (E, Role::Client, b"GE", MORE),
        (E, Role::Client, b"GET", MORE),
        (E, Role::Client, b"GET /index.html", MORE),
        (E, Role::Client, b"GET / HTTP/1.", MORE),
        (E, Role::Client, b"GET / HTTP/1.1\r", MORE),
        (E, Role::Client, b"MKCOL", MORE),
        (I, Role::Client, b"HTTP/1", MORE),
        (I, Role::Client, b"HTTP/1.1 20", MORE),
        (I, Role::Unknown, b"HT", MORE),
        // The role contradicts the bytes.
        (I, Role::Client, b"GET / HTTP/1.1\r\n", NO),
        (E, Role::Client, b"HTTP/1.1 200 OK\r\n", NO),
        (E, Role::Server, b"GET / HTTP/1.1\r\n", NO),
        // Not HTTP/1.
        (E, Role::Client, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", NO),
        (I, Role::Unknown, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", NO),
        (E, Role::Client, TLS_HELLO, NO),
        (E, Role::Unknown, TLS_HELLO, NO),
        (E, Role::Client, PG_STARTUP, NO),
        (I, Role::Server, PG_STARTUP, NO),
        (E, Role::Client, b"get / HTTP/1.1\r\n", NO),
        (E, Role::Client, b"GET / HTTP/2\r\n", NO),
        (E, Role::Client, b"GET / HTTP/1.2\r\n", NO),
        (E, Role::Client, b"GET /  HTTP/1.1\r\n", NO),
        (E, Role::Client, b"GET\t/ HTTP/1.1\r\n", NO),
        (E, Role::Client, b"GET / HTTP/1.1 extra\r\n", NO),
        (E, Role::Client, b"GET /\x01 HTTP/1.1\r\n", NO),
        (E, Role::Client, b"SSH-2.0-OpenSSH_9.6\r\n", NO),
        (E, Role::Client, b"*1\r\n$4\r\nPING\r\n", NO),
        (E, Role::Client, b"PING\r\n", NO),
        (E, Role::Client, b"AB /x HTTP/1.1\r\n", NO),
        (E, Role::Client, &long_junk_target, NO),
        (I, Role::Client, b"HTTP/1.1 099 Low\r\n", NO),
        (I, Role::Client, b"HTTP/1.1 600 High\r\n", NO),
        (I, Role::Client, b"HTTP/1.1 2000\r\n", NO),
        (I, Role::Client, b"HTTP/2 200\r\n", NO),
        (I, Role::Client, b"ICY 200 OK\r\n", NO),
        (Direction::None, Role::Client, b"GET / HTTP/1.1\r\n", NO),
    ];
    for (dir, role, bytes, want) in cases {
        let got = super::super::detect(*dir, *role, bytes);
        assert_eq!(
            got,
            *want,
            "{dir:?} {role:?} {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
        );
    }
}

#[test]
fn random_binary_is_never_http() {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut buf = vec![0u8; 512];
    for _ in 0..20_000 {
        let len = rng.usize(1..buf.len());
        rng.fill(&mut buf[..len]);
        for role in [Role::Client, Role::Server, Role::Unknown] {
            for dir in [E, I] {
                assert!(
                    !matches!(
                        super::super::detect(dir, role, &buf[..len]),
                        Detection::Match { .. }
                    ),
                    "{:?}",
                    &buf[..len]
                );
            }
        }
    }
}

#[test]
fn every_fixture_is_detected_from_either_side() {
    for f in fixtures() {
        assert_eq!(
            super::super::detect(E, Role::Client, f.c2s),
            MATCH_E,
            "{}",
            f.name
        );
        assert_eq!(
            super::super::detect(I, Role::Server, f.c2s),
            MATCH_I,
            "{}",
            f.name
        );
        assert_eq!(
            super::super::detect(I, Role::Client, f.s2c),
            MATCH_E,
            "{}",
            f.name
        );
        assert_eq!(
            super::super::detect(I, Role::Unknown, f.s2c),
            MATCH_E,
            "{}",
            f.name
        );
        // Any prefix is NeedMore or Match, never NoMatch.
        for n in 0..f.c2s.len().min(200) {
            assert_ne!(
                super::super::detect(E, Role::Unknown, &f.c2s[..n]),
                NO,
                "{} prefix {n}",
                f.name
            );
        }
    }
}

#[test]
fn resync_signatures() {
    use detect::{known_method_prefix, status_line, Verdict};
    assert_eq!(known_method_prefix(b"GET "), Verdict::Yes);
    assert_eq!(known_method_prefix(b"OPTIONS"), Verdict::Maybe);
    assert_eq!(known_method_prefix(b"PROPFIND "), Verdict::No);
    assert_eq!(known_method_prefix(b"GETS "), Verdict::No);
    assert_eq!(status_line(b"HTTP/1.1 200 OK"), Verdict::Yes);
    assert_eq!(status_line(b"HTTP/1.1 20"), Verdict::Maybe);
    assert_eq!(status_line(b"HTTP/1.1 20x"), Verdict::No);
}
