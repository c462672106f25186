//! Deterministic fuzzing: mutated fixtures and random bytes, cut into random segments with
//! random gaps and closes. Whatever the input: no panic, consumption within bounds, the
//! pending queue bounded, event invariants kept, and random bytes never make a span.

use super::super::exchanges::MAX_PENDING;
use super::{check_invariants, fixtures, Replay, REQ, RESP};
use crate::protocol::Direction;

fn mutate(rng: &mut fastrand::Rng, data: &[u8], donor: &[u8]) -> Vec<u8> {
    // Work on a window so iterations stay cheap on the big fixtures: mostly the start (where
    // the heads are), sometimes anywhere.
    let window = [1024, 4096, 16 * 1024][rng.usize(..3)];
    let start = if data.len() > window && rng.u8(..4) == 0 {
        rng.usize(..data.len() - window)
    } else {
        0
    };
    let mut v = data[start..data.len().min(start + window)].to_vec();
    for _ in 0..rng.usize(1..=6) {
        if v.is_empty() {
            v.push(rng.u8(..));
            continue;
        }
        let at = rng.usize(..v.len());
        match rng.u8(..8) {
            0 => v[at] = rng.u8(..),
            1 => v[at] ^= 1 << rng.u8(..8),
            2 => {
                let n = rng.usize(..=(v.len() - at).min(64));
                v.drain(at..at + n);
            }
            3 => {
                let junk: Vec<u8> = (0..rng.usize(1..32)).map(|_| rng.u8(..)).collect();
                v.splice(at..at, junk);
            }
            4 => {
                // Duplicate a range (repeated heads, repeated chunk lines).
                let n = rng.usize(..=(v.len() - at).min(200));
                let copy = v[at..at + n].to_vec();
                v.splice(at..at, copy);
            }
            5 if !donor.is_empty() => {
                let from = rng.usize(..donor.len());
                let n = rng.usize(..=(donor.len() - from).min(300));
                v.splice(at..at, donor[from..from + n].iter().copied());
            }
            6 => {
                // Digits matter most: lengths and chunk sizes.
                if let Some(p) = v[at..].iter().position(u8::is_ascii_digit) {
                    v[at + p] = b"0123456789abcdefF"[rng.usize(..17)];
                }
            }
            _ => v.truncate(at),
        }
    }
    v
}

/// Feed both streams in random pieces (random side order, not necessarily causal), with
/// random gaps, sometimes closing early; check the invariants. Returns the number of events.
fn run(rng: &mut fastrand::Rng, req: &[u8], resp: &[u8]) -> usize {
    let dir = if rng.bool() {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    let mut r = Replay::new(req, resp, dir);
    let max_piece = [1, 7, 100, 4096][rng.usize(..4)];
    let close_early = rng.u8(..10) == 0;
    // Gaps: about one per few KiB, as with a small capture limit or ring-buffer loss.
    let gap_odds = 1 + 4096 / max_piece;
    while r.to[REQ] < req.len() || r.to[RESP] < resp.len() {
        let side = if r.to[REQ] == req.len() {
            RESP
        } else if r.to[RESP] == resp.len() {
            REQ
        } else {
            // Mostly requests ahead of responses, as on a real connection.
            usize::from(rng.u8(..10) < 3)
        };
        let left = [req.len(), resp.len()][side] - r.to[side];
        let n = rng.usize(1..=left.min(max_piece));
        if rng.usize(..gap_odds) == 0 {
            r.gap(side, n);
        } else {
            r.deliver(side, n);
        }
        assert!(r.conn.pending() <= MAX_PENDING);
        check_invariants(&r.events, false);
        if close_early && rng.u8(..50) == 0 {
            break;
        }
    }
    r.close();
    check_invariants(&r.events, true);
    r.events.len()
}

#[test]
fn mutated_fixtures_never_break_invariants() {
    let mut rng = fastrand::Rng::with_seed(0x00f0_2217);
    let fx = fixtures();
    let mut events = 0;
    for _ in 0..6000 {
        let f = &fx[rng.usize(..fx.len())];
        let donor = &fx[rng.usize(..fx.len())];
        let (req, resp) = match rng.u8(..3) {
            0 => (
                mutate(&mut rng, f.c2s, donor.c2s),
                f.s2c[..f.s2c.len().min(16 * 1024)].to_vec(),
            ),
            1 => (
                f.c2s[..f.c2s.len().min(16 * 1024)].to_vec(),
                mutate(&mut rng, f.s2c, donor.s2c),
            ),
            _ => (
                mutate(&mut rng, f.c2s, donor.s2c),
                mutate(&mut rng, f.s2c, donor.c2s),
            ),
        };
        events += run(&mut rng, &req, &resp);
    }
    // Mutations leave most exchanges intact: the test must not be vacuous.
    assert!(events > 6000, "only {events} events");
}

#[test]
fn random_bytes_make_no_spans() {
    let mut rng = fastrand::Rng::with_seed(0xbad_b17e5);
    for i in 0..6000 {
        let len = rng.usize(..[64, 2048, 70_000][i % 3]);
        let req: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        let resp: Vec<u8> = (0..rng.usize(..2048)).map(|_| rng.u8(..)).collect();
        assert_eq!(run(&mut rng, &req, &resp), 0);
    }
}

#[test]
fn text_garbage_makes_no_spans() {
    // Printable junk with line breaks is closer to HTTP than random bytes.
    let mut rng = fastrand::Rng::with_seed(42);
    let alphabet = b"GETPOSHTP/1. \r\n:0123456789abcxyz-;";
    for _ in 0..3000 {
        let mut gen = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect()
        };
        let (req, resp) = (gen(700), gen(700));
        let mut r = Replay::new(&req, &resp, Direction::Egress);
        r.deliver(REQ, req.len());
        r.deliver(RESP, resp.len());
        r.close();
        assert!(r.events.is_empty(), "{:?}", String::from_utf8_lossy(&req));
    }
}

#[test]
fn huge_gaps_and_lengths_do_not_overflow() {
    let req = b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\nab";
    let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nxy";
    let mut r = Replay::new(req, resp, Direction::Egress);
    r.deliver(REQ, req.len());
    r.deliver(RESP, resp.len());
    let ctx = crate::protocol::SegmentCtx {
        tid: 1,
        goroutine: 0,
        first_ns: 1,
        last_ns: 2,
    };
    // The request body ends exactly with the gap; the chunk too; then framing is lost.
    assert!(r
        .conn
        .skip(Direction::Egress, u64::MAX - 2, 0, &ctx, &mut r.events));
    assert!(r
        .conn
        .skip(Direction::Ingress, u64::MAX - 2, 0, &ctx, &mut r.events));
    assert!(!r
        .conn
        .skip(Direction::Ingress, u64::MAX, 0, &ctx, &mut r.events));
    assert!(!r
        .conn
        .skip(Direction::Egress, u64::MAX, 0, &ctx, &mut r.events));
    r.close();
    check_invariants(&r.events, true);
}
