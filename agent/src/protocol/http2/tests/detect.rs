//! `detect`: the preface per role, its prefixes, frame chains when joining mid-connection.

use crate::protocol::http2::detect;
use crate::protocol::{Detection, Direction, Role};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const E: Direction = Direction::Egress;
const I: Direction = Direction::Ingress;

fn m(d: Direction) -> Detection {
    Detection::Match { request_dir: d }
}

/// SETTINGS (2 settings), WINDOW_UPDATE, HEADERS on stream 1.
fn chain() -> Vec<u8> {
    let mut v = vec![0, 0, 12, 4, 0, 0, 0, 0, 0];
    v.extend([0, 3, 0, 0, 0, 100, 0, 4, 0, 1, 0, 0]);
    v.extend([0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0x0f, 0, 1]);
    v.extend([0, 0, 3, 1, 0x25, 0, 0, 0, 1]);
    v.extend([0x82, 0x86, 0x84]);
    v
}

#[test]
fn detect_table() {
    let mut preface_and_more = PREFACE.to_vec();
    preface_and_more.extend(chain());
    let cases: Vec<(Direction, Role, Vec<u8>, Detection)> = vec![
        (E, Role::Client, PREFACE.to_vec(), m(E)),
        (I, Role::Server, PREFACE.to_vec(), m(I)),
        (E, Role::Unknown, PREFACE.to_vec(), m(E)),
        (I, Role::Unknown, preface_and_more.clone(), m(I)),
        (E, Role::Client, PREFACE[..10].to_vec(), Detection::NeedMore),
        (E, Role::Client, b"P".to_vec(), Detection::NeedMore),
        // The preface in the server's direction is not a client preface.
        (I, Role::Client, PREFACE.to_vec(), Detection::NoMatch),
        (E, Role::Server, PREFACE.to_vec(), Detection::NoMatch),
        (
            E,
            Role::Client,
            b"PRI * HTTP/1.1\r\n".to_vec(),
            Detection::NoMatch,
        ),
        (
            E,
            Role::Client,
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            Detection::NoMatch,
        ),
        (E, Role::Client, Vec::new(), Detection::NoMatch),
        // Mid-connection: a strict frame chain with a known role.
        (E, Role::Client, chain(), m(E)),
        (E, Role::Server, chain(), m(I)),
        (E, Role::Unknown, chain(), Detection::NoMatch),
        (E, Role::Client, chain()[..20].to_vec(), m(E)),
        (E, Role::Client, chain()[..5].to_vec(), Detection::NoMatch),
        // PostgreSQL startup, TLS client hello, AMQP header.
        (
            E,
            Role::Client,
            vec![0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f],
            Detection::NoMatch,
        ),
        (
            E,
            Role::Client,
            vec![0x16, 3, 1, 0, 0xc8, 1, 0, 0, 0xc4, 3, 3],
            Detection::NoMatch,
        ),
        (
            E,
            Role::Client,
            b"AMQP\x00\x00\x09\x01".to_vec(),
            Detection::NoMatch,
        ),
    ];
    for (i, (dir, role, bytes, want)) in cases.into_iter().enumerate() {
        assert_eq!(detect(dir, role, &bytes), want, "case {i}");
    }
}

#[test]
fn implausible_chains_do_not_match() {
    let base = chain();
    // Unknown type, SETTINGS on a stream, bad SETTINGS length, undefined flag, oversized
    // length, trailing garbage.
    let mut bad = Vec::new();
    let mut v = base.clone();
    v[3] = 0x0b;
    bad.push(v);
    let mut v = base.clone();
    v[8] = 1;
    bad.push(v);
    let mut v = base.clone();
    v[2] = 11;
    bad.push(v);
    let mut v = base.clone();
    v[4] = 0x80;
    bad.push(v);
    let mut v = base.clone();
    v[0] = 1;
    bad.push(v);
    let mut v = base.clone();
    v.extend([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    bad.push(v);
    for (i, b) in bad.iter().enumerate() {
        assert_eq!(detect(E, Role::Client, b), Detection::NoMatch, "case {i}");
    }
}
