//! Fuzz the connection parser across an HTTP/1.1 -> HTTP/2 upgrade (`Upgrade: h2c`): it starts
//! as HTTP/1 (as detection makes it for an upgrade request) and replaces itself with the HTTP/2
//! parser at a 101 to h2c. The input is split into a request and a response stream, optionally
//! behind a canned upgrade request, 101 and client preface (so the fuzzer reaches HTTP/2 at
//! once), and fed in segments of input-chosen sizes in an input-chosen order with occasional
//! capture gaps, then closed. Checks what must hold for any bytes: no panic, consumption within
//! the buffer, unconsumed bytes bounded, and the event invariants (a seq starts at most once;
//! an end only after its start, only once, and an HTTP/2 request never with an HTTP/1 outcome;
//! everything ended at close).
#![no_main]

use agent::protocol::http1::Http1Conn;
use agent::protocol::http2::MAX_BLOCK;
use agent::protocol::{ConnParser, Direction, L7Event, Outcome, Request, SegmentCtx};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;

/// The larger of the two parsers' bounds (HTTP/2's largest buffered frame; HTTP/1 holds at most
/// a 64 KiB head).
const MAX_UNCONSUMED: usize = MAX_BLOCK + 9;

const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n\
Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
const SWITCH: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

struct Side {
    stream: Vec<u8>,
    dir: Direction,
    from: usize,
    to: usize,
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (control, rest) = data.split_at(4);
    let split = usize::from(u16::from_le_bytes([control[0], control[1]])) % (rest.len() + 1);
    let (requests, responses) = rest.split_at(split);
    let request_dir = if control[2] & 1 == 0 {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    let response_dir = if request_dir == Direction::Egress {
        Direction::Ingress
    } else {
        Direction::Egress
    };
    let (mut req, mut resp) = (Vec::new(), Vec::new());
    if control[2] & 2 != 0 {
        req.extend_from_slice(UPGRADE);
        resp.extend_from_slice(SWITCH);
        if control[2] & 4 != 0 {
            req.extend_from_slice(PREFACE);
        }
    }
    req.extend_from_slice(requests);
    resp.extend_from_slice(responses);

    // A small PRNG seeded by the control bytes chooses segment sizes, sides and gaps.
    let mut state = u32::from_le_bytes([control[0], control[1], control[2], control[3]]) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let max_piece = [1usize, 3, 16, 300, 5000][(control[3] % 5) as usize];

    let mut conn = ConnParser::Http1(Http1Conn::new(request_dir));
    let mut sides = [
        Side {
            stream: req,
            dir: request_dir,
            from: 0,
            to: 0,
        },
        Side {
            stream: resp,
            dir: response_dir,
            from: 0,
            to: 0,
        },
    ];
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    let mut clock = 0u64;
    while sides.iter().any(|s| s.to < s.stream.len()) {
        let pick = (next() % 2) as usize;
        let i = if sides[pick].to < sides[pick].stream.len() {
            pick
        } else {
            1 - pick
        };
        let side = &mut sides[i];
        let left = side.stream.len() - side.to;
        let n = 1 + (next() as usize) % left.min(max_piece);
        clock += 1;
        let ctx = SegmentCtx {
            tid: clock as u32,
            first_ns: clock * 10,
            last_ns: clock * 10 + 5,
        };
        if next() % 23 == 0 {
            let unconsumed = side.to - side.from;
            let absorbed = conn.skip(side.dir, n as u64, unconsumed, &ctx, &mut out);
            assert!(!absorbed || unconsumed == 0);
            side.to += n;
            side.from = side.to;
        } else {
            side.to += n;
            let buf = &side.stream[side.from..side.to];
            let consumed = conn.parse(side.dir, buf, &ctx, &mut out, &mut errors);
            assert!(consumed <= buf.len());
            side.from += consumed;
            assert!(side.to - side.from <= MAX_UNCONSUMED);
        }
    }
    conn.close(clock * 10 + 100, &mut out);

    // seq -> (is an HTTP/2 request, ended)
    let mut seen: HashMap<u64, (bool, bool)> = HashMap::new();
    for e in &out {
        match e {
            L7Event::RequestStart { seq, request, .. } => {
                let h2 = matches!(request, Request::Http2(_));
                assert!(seen.insert(*seq, (h2, false)).is_none(), "seq {seq} reused");
            }
            L7Event::ExchangeEnd { seq, outcome, .. } => {
                let entry = seen.get_mut(seq).expect("end before start");
                assert!(!entry.1, "ended twice");
                assert!(!(entry.0 && matches!(outcome, Outcome::Http { .. })));
                entry.1 = true;
            }
        }
    }
    assert!(seen.values().all(|&(_, ended)| ended), "open at close");
});
