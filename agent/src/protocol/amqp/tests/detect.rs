//! `detect`: which first bytes are AMQP 0-9-1, and which way client→broker frames flow.

use super::build::*;
use super::unit::delivery;
use super::{fixtures, C, S};
use crate::protocol::amqp::detect;
use crate::protocol::{Detection, Direction, Role};

const E: Direction = Direction::Egress;
const I: Direction = Direction::Ingress;
const MATCH_E: Detection = Detection::Match { request_dir: E };
const MATCH_I: Detection = Detection::Match { request_dir: I };
const MORE: Detection = Detection::NeedMore;
const NO: Detection = Detection::NoMatch;

const TLS_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x5a,
];
const PG_STARTUP: &[u8] =
    b"\x00\x00\x00\x29\x00\x03\x00\x00user\x00postgres\x00database\x00db\x00\x00";
const HEARTBEAT: &[u8] = b"\x08\x00\x00\x00\x00\x00\x00\xce";

#[test]
fn detection_table() {
    let ack = ack(1, 5, false);
    let deliver = delivery(1, b"ct", 3, b"body");
    let content = [header(1, 4), body(1, b"body")].concat();
    let content_then_ack = [content.clone(), ack.clone()].concat();
    let big_body = body(1, &[0u8; 5000]);
    let cases: Vec<(Direction, Role, Vec<u8>, Detection)> = vec![
        // The protocol header, from the client.
        (E, Role::Client, HEADER.to_vec(), MATCH_E),
        (I, Role::Server, HEADER.to_vec(), MATCH_I),
        (E, Role::Unknown, HEADER.to_vec(), MATCH_E),
        (I, Role::Unknown, HEADER.to_vec(), MATCH_I),
        (E, Role::Client, [HEADER, &ack[..]].concat(), MATCH_E),
        (E, Role::Client, b"AMQP\x00\x00".to_vec(), MORE),
        (E, Role::Client, b"A".to_vec(), MORE),
        // A broker sends it only to refuse a version.
        (I, Role::Client, HEADER.to_vec(), NO),
        (E, Role::Server, HEADER.to_vec(), NO),
        // Other versions of AMQP.
        (E, Role::Client, b"AMQP\x00\x01\x00\x00".to_vec(), NO),
        (E, Role::Client, b"AMQP\x03\x01\x00\x00".to_vec(), NO),
        (E, Role::Client, b"AMQP\x02\x01\x00\x00".to_vec(), NO),
        (E, Role::Unknown, b"AMQP\x01\x01\x00\x09".to_vec(), NO),
        (E, Role::Client, b"AMQP\x00\x00\x08\x00".to_vec(), NO),
        // Joining midway: a client method fixes the direction.
        (E, Role::Client, ack.clone(), MATCH_E),
        (I, Role::Server, ack.clone(), MATCH_I),
        (E, Role::Unknown, publish(1, b"", b"q"), MATCH_E),
        (I, Role::Unknown, publish(1, b"", b"q"), MATCH_I),
        // A broker method.
        (I, Role::Client, deliver.clone(), MATCH_E),
        (E, Role::Server, deliver.clone(), MATCH_I),
        (I, Role::Unknown, deliver.clone(), MATCH_E),
        (E, Role::Unknown, deliver.clone(), MATCH_I),
        // Either side sends acks and heartbeats: the role decides, else wait.
        (I, Role::Client, ack.clone(), MATCH_E),
        (E, Role::Unknown, ack.clone(), MORE),
        (E, Role::Client, HEARTBEAT.to_vec(), MATCH_E),
        (I, Role::Client, HEARTBEAT.to_vec(), MATCH_E),
        (I, Role::Unknown, HEARTBEAT.to_vec(), MORE),
        (
            I,
            Role::Unknown,
            [HEARTBEAT, &deliver[..]].concat(),
            MATCH_E,
        ),
        // Content frames first: decided by the method after them.
        (I, Role::Client, content.clone(), MORE),
        (E, Role::Client, content_then_ack.clone(), MATCH_E),
        (E, Role::Client, big_body.clone(), MORE),
        // Frames cut short: wait.
        (E, Role::Client, ack[..3].to_vec(), MORE),
        (E, Role::Client, ack[..10].to_vec(), MORE),
        (E, Role::Client, ack[..ack.len() - 1].to_vec(), MORE),
        // The role contradicts the method's sender.
        (E, Role::Client, deliver.clone(), NO),
        (I, Role::Client, publish(1, b"", b"q"), NO),
        // Broken frames.
        (E, Role::Client, [&ack[..ack.len() - 1], &[0]].concat(), NO),
        (E, Role::Client, method(1, 60, 41, b""), NO),
        (E, Role::Client, method(0, 60, 80, &[0; 9]), NO),
        (E, Role::Client, method(1, 10, 40, &[0, 0, 0]), NO),
        (E, Role::Client, method(1, 60, 40, &[0, 0, 9]), NO),
        (
            E,
            Role::Client,
            b"\x01\x00\x01\x00\x10\x00\x00".to_vec(),
            NO,
        ),
        (
            E,
            Role::Client,
            b"\x08\x00\x01\x00\x00\x00\x00\xce".to_vec(),
            NO,
        ),
        (E, Role::Client, header(0, 1), NO),
        (
            E,
            Role::Client,
            frame(2, 1, &[0, 50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]),
            NO,
        ),
        (E, Role::Client, frame(4, 0, b""), NO),
        // Other protocols.
        (E, Role::Client, b"GET / HTTP/1.1\r\n\r\n".to_vec(), NO),
        (I, Role::Client, b"HTTP/1.1 200 OK\r\n".to_vec(), NO),
        (E, Role::Client, PG_STARTUP.to_vec(), NO),
        (E, Role::Unknown, PG_STARTUP.to_vec(), NO),
        (E, Role::Client, TLS_HELLO.to_vec(), NO),
        (E, Role::Client, b"*1\r\n$4\r\nPING\r\n".to_vec(), NO),
        (E, Role::Client, b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(), NO),
        (E, Role::Client, Vec::new(), MORE),
        (Direction::None, Role::Client, HEADER.to_vec(), NO),
    ];
    for (dir, role, bytes, want) in cases {
        assert_eq!(
            detect(dir, role, &bytes),
            want,
            "{dir:?} {role:?} {:02x?}",
            &bytes[..bytes.len().min(24)]
        );
    }
}

#[test]
fn fixtures_detect_from_their_start_and_midway() {
    for f in fixtures() {
        // From the start: the header, whatever the read size.
        for n in 1..8 {
            assert_eq!(detect(E, Role::Client, &f.c2s[..n]), MORE, "{}", f.name);
        }
        assert_eq!(detect(E, Role::Client, &f.c2s[..8]), MATCH_E, "{}", f.name);
        // Midway, at every frame boundary (the first 4096 bytes, as the connection layer
        // buffers): never the wrong direction.
        for (side, data) in [(C, f.c2s), (S, f.s2c)] {
            let mut pos = if side == C { 8 } else { 0 };
            while pos + 7 <= data.len() {
                let size = u32::from_be_bytes([
                    data[pos + 3],
                    data[pos + 4],
                    data[pos + 5],
                    data[pos + 6],
                ]) as usize;
                let window = &data[pos..data.len().min(pos + 4096)];
                let dir = if side == C { E } else { I };
                for role in [Role::Client, Role::Unknown] {
                    let got = detect(dir, role, window);
                    assert!(
                        got == MATCH_E || got == MORE,
                        "{} side {side} at {pos} {role:?}: {got:?}",
                        f.name
                    );
                    if role == Role::Client && data[pos] == 1 && size < 4000 {
                        assert_eq!(got, MATCH_E, "{} side {side} at {pos}", f.name);
                    }
                }
                pos += size + 8;
            }
        }
    }
}

#[test]
fn random_bytes_are_not_amqp() {
    let mut rng = fastrand::Rng::with_seed(0x0a3d);
    let mut buf = vec![0u8; 512];
    let mut more = 0;
    for i in 0..50_000 {
        let len = rng.usize(1..buf.len());
        rng.fill(&mut buf[..len]);
        // Sometimes with a plausible frame type, to reach the deeper checks.
        if i % 2 == 0 {
            buf[0] = [1, 2, 3, 8][rng.usize(..4)];
        }
        for role in [Role::Client, Role::Server, Role::Unknown] {
            match detect(E, role, &buf[..len]) {
                Detection::Match { .. } => {
                    panic!("random bytes matched: {:02x?}", &buf[..len.min(32)])
                }
                Detection::NeedMore => more += 1,
                Detection::NoMatch => {}
            }
        }
    }
    // Almost everything is refused at once.
    assert!(more < 3000, "{more} undecided");
}
