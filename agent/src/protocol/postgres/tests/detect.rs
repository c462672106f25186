//! `detect`: which first bytes are PostgreSQL, and which way requests flow.

use super::super::detect::{scan_backend, scan_frontend, Scan};
use super::{fixtures, m, msg};
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
/// A MySQL server greeting (length 74, sequence 0, protocol 10).
const MYSQL_GREETING: &[u8] = b"\x4a\x00\x00\x00\x0a8.0.36\x00\x0b\x00\x00\x00abcdefgh\x00";

#[test]
fn detection_table() {
    let startup = m::startup(&["user", "app", "database", "db"]);
    let extended = [
        m::parse("", "SELECT $1"),
        m::bind("", "", &[b"1"]),
        m::describe(b'P', ""),
        m::execute("", 0),
        m::sync(),
    ]
    .concat();
    let bind_execute = [m::bind("", "P_1", &[b"42"]), m::execute("", 0), m::sync()].concat();
    let long_query = m::query(&format!("SELECT {}", "a, ".repeat(3000)));
    let backend_answer = [
        m::row_description(),
        m::data_row(b"1"),
        m::complete("SELECT 1"),
        m::ready(),
    ]
    .concat();
    let auth = [m::auth_ok(), m::param_status("server_version", "15.18")].concat();
    let mut bad_version = startup.clone();
    bad_version[4..8].copy_from_slice(&0x0004_0000u32.to_be_bytes());
    let cases: &[(Direction, Role, &[u8], Detection)] = &[
        // Startup-phase messages, where the role says requests flow.
        (E, Role::Client, &startup, MATCH_E),
        (I, Role::Server, &startup, MATCH_I),
        (E, Role::Unknown, &startup, MATCH_E),
        (I, Role::Unknown, &startup, MATCH_I),
        (E, Role::Client, &m::ssl_request(), MATCH_E),
        (E, Role::Client, &m::gssenc_request(), MATCH_E),
        (I, Role::Server, &m::cancel_request(), MATCH_I),
        // Joining a connection in progress: frontend messages.
        (E, Role::Client, &m::query("SELECT 1"), MATCH_E),
        (E, Role::Client, &m::query("  /* x */ select 1"), MATCH_E),
        (I, Role::Server, &extended, MATCH_I),
        (E, Role::Unknown, &bind_execute, MATCH_E),
        (E, Role::Client, &long_query[..500], MATCH_E),
        // ... or backend messages: requests flow the other way.
        (I, Role::Client, &m::ready(), MATCH_E),
        (E, Role::Server, &backend_answer, MATCH_I),
        (I, Role::Unknown, &auth, MATCH_E),
        (I, Role::Unknown, &m::error("42P01"), MATCH_E),
        (
            I,
            Role::Client,
            &[
                m::parse_complete(),
                m::bind_complete(),
                m::no_data(),
                m::complete("INSERT 0 1"),
            ]
            .concat(),
            MATCH_E,
        ),
        // Too early to tell.
        (E, Role::Client, b"", MORE),
        (E, Role::Client, b"\0", MORE),
        (E, Role::Client, b"\0\0\0\x08\x04\xd2", MORE),
        (E, Role::Client, &startup[..startup.len() - 1], MORE),
        (E, Role::Client, b"Q\0\0", MORE),
        (E, Role::Client, &m::query("SELECT 1")[..9], MORE),
        (E, Role::Client, &m::sync(), MORE),
        (E, Role::Client, &m::bind("", "", &[]), MORE),
        (I, Role::Client, &m::parse_complete(), MORE),
        (I, Role::Client, &m::data_row(b"x"), MORE),
        (I, Role::Client, &backend_answer[..20], MORE),
        // The role contradicts the bytes.
        (I, Role::Client, &startup, NO),
        (E, Role::Server, &startup, NO),
        (E, Role::Client, &m::ready(), NO),
        (I, Role::Server, &m::ready(), NO),
        // Not PostgreSQL.
        (E, Role::Unknown, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", NO),
        (I, Role::Unknown, b"HTTP/1.1 200 OK\r\n\r\n", NO),
        (E, Role::Unknown, b"POST /x HTTP/1.1\r\n", NO),
        (E, Role::Unknown, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", NO),
        (E, Role::Unknown, TLS_HELLO, NO),
        (E, Role::Unknown, b"AMQP\x00\x00\x09\x01", NO),
        (I, Role::Unknown, b"AMQP\x00\x00\x09\x01", NO),
        (E, Role::Unknown, b"SSH-2.0-OpenSSH_9.6\r\n", NO),
        (E, Role::Unknown, b"*1\r\n$4\r\nPING\r\n", NO),
        (I, Role::Unknown, MYSQL_GREETING, NO),
        (E, Role::Client, &bad_version, NO),
        (E, Role::Client, b"\0\0\0\x07\0\x03\0\0", NO),
        (E, Role::Client, b"\0\0\x27\x11\0\x03\0\0", NO),
        (E, Role::Client, &msg(b'Q', b"\x01\x02\x03\x04\0"), NO),
        (E, Role::Client, &msg(b'Q', b"SELECT 1\0SELECT 2\0"), NO),
        (E, Role::Client, b"Q\0\0\0\x02", NO),
        (E, Role::Client, &msg(b'P', b"name\0\x01\0\0\0"), NO),
        (I, Role::Client, &msg(b'Z', b"X"), NO),
        (I, Role::Client, &msg(b'C', b"select 1\0"), NO),
        (I, Role::Client, &msg(b'E', b"Xbad\0\0"), NO),
        (Direction::None, Role::Client, &startup, NO),
    ];
    for (dir, role, bytes, want) in cases {
        assert_eq!(
            super::super::detect(*dir, *role, bytes),
            *want,
            "{dir:?} {role:?} {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
        );
    }
}

#[test]
fn random_and_text_garbage_is_never_postgres() {
    let mut rng = fastrand::Rng::with_seed(0x7067);
    let mut buf = vec![0u8; 600];
    let alphabet = b"QPBESZCDT\0\0\0\x04\x05 selectfromwhere;1'\n";
    for round in 0..20_000 {
        let len = rng.usize(1..buf.len());
        if round % 2 == 0 {
            rng.fill(&mut buf[..len]);
        } else {
            for b in &mut buf[..len] {
                *b = alphabet[rng.usize(..alphabet.len())];
            }
        }
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
            super::super::detect(E, Role::Unknown, f.c2s),
            MATCH_E,
            "{}",
            f.name
        );
        // The backend's first bytes; after the one-byte answer to SSLRequest, if any.
        let s2c = match f.s2c.first() {
            Some(b'N') if f.c2s[4..8] == 80_877_103u32.to_be_bytes() => &f.s2c[1..],
            _ => f.s2c,
        };
        assert_eq!(
            super::super::detect(I, Role::Client, s2c),
            MATCH_E,
            "{}",
            f.name
        );
        assert_eq!(
            super::super::detect(I, Role::Unknown, s2c),
            MATCH_E,
            "{}",
            f.name
        );
        // Any prefix is NeedMore or Match, never NoMatch.
        for n in 0..f.c2s.len().min(300) {
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
    let q = m::query("SELECT 1");
    let junk = b"\x01\x02Qx\x00\x00";
    let buf = [junk.as_slice(), &q].concat();
    assert_eq!(scan_frontend(&buf, 0, &mut 0), Scan::Found(junk.len()));
    assert_eq!(
        scan_frontend(&buf[..junk.len() + 7], 0, &mut 0),
        Scan::Partial(junk.len())
    );
    assert_eq!(scan_frontend(b"\x01\x02\x03", 0, &mut 0), Scan::Nothing);
    // A Sync or Execute alone is too short to be told from noise.
    assert_eq!(scan_frontend(&m::sync(), 0, &mut 0), Scan::Nothing);
    let z = [b"DDDZ\0\0\0\x05X".as_slice(), &m::ready()].concat();
    assert_eq!(scan_backend(&z, 0), Scan::Found(9));
    assert_eq!(scan_backend(&z[..12], 0), Scan::Partial(9));
    assert_eq!(scan_backend(b"no ready here", 0), Scan::Nothing);
}
