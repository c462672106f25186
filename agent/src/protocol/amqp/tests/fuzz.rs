//! Deterministic fuzzing: mutated fixtures and random bytes, cut into random segments with
//! random gaps and closes. Whatever the input: no panic, consumption and buffering within
//! bounds (the replay checks), event invariants kept, random bytes never make a message.

use super::{check_invariants, fixtures, Replay, C, S};
use crate::protocol::amqp::session::{MAX_CHANNELS, MAX_UNACKED};
use crate::protocol::Direction;

fn mutate(rng: &mut fastrand::Rng, data: &[u8], donor: &[u8]) -> Vec<u8> {
    // Work on a window so iterations stay cheap on the big fixtures: mostly the start (the
    // handshake and first messages), sometimes anywhere.
    let window = [2048, 8192, 32 * 1024][rng.usize(..3)];
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
        match rng.u8(..9) {
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
                // Duplicate a range (repeated frames).
                let n = rng.usize(..=(v.len() - at).min(300));
                let copy = v[at..at + n].to_vec();
                v.splice(at..at, copy);
            }
            5 if !donor.is_empty() => {
                let from = rng.usize(..donor.len());
                let n = rng.usize(..=(donor.len() - from).min(300));
                v.splice(at..at, donor[from..from + n].iter().copied());
            }
            6 => {
                // Lengths matter most: hit a byte of a size field or a length prefix.
                let big = [0x00, 0x01, 0x7f, 0x80, 0xff][rng.usize(..5)];
                v[at] = big;
            }
            7 => {
                // Field-type letters and frame types.
                v[at] = b"tbBsuIilLfdDSxATFVU\x01\x02\x03\x08\xce"[rng.usize(..24)];
            }
            _ => v.truncate(at),
        }
    }
    v
}

/// Feed both streams in random pieces (random side order, not necessarily causal), with
/// random gaps, sometimes closing early; check the invariants. Returns the number of events.
fn run(rng: &mut fastrand::Rng, c2s: &[u8], s2c: &[u8]) -> usize {
    let dir = if rng.bool() {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    let mut r = Replay::new(c2s, s2c, dir);
    let max_piece = [1, 7, 100, 4096, 70_000][rng.usize(..5)];
    let close_early = rng.u8(..10) == 0;
    let gap_odds = 1 + 8192 / max_piece;
    while r.to[C] < c2s.len() || r.to[S] < s2c.len() {
        let side = if r.to[C] == c2s.len() {
            S
        } else if r.to[S] == s2c.len() {
            C
        } else {
            usize::from(rng.bool())
        };
        let left = [c2s.len(), s2c.len()][side] - r.to[side];
        let n = rng.usize(1..=left.min(max_piece));
        if rng.usize(..gap_odds) == 0 {
            r.gap(side, n);
        } else {
            r.deliver(side, n);
        }
        assert!(r.conn.session.unacked() <= MAX_UNACKED);
        assert!(r.conn.session.channel_count() <= MAX_CHANNELS);
        if close_early && rng.u8(..50) == 0 {
            break;
        }
    }
    check_invariants(&r.events, false);
    r.close();
    check_invariants(&r.events, true);
    r.events.len()
}

#[test]
fn mutated_fixtures_never_break_invariants() {
    let mut rng = fastrand::Rng::with_seed(0x00a3_9901);
    let fx = fixtures();
    let mut events = 0;
    for _ in 0..4000 {
        let f = &fx[rng.usize(..fx.len())];
        let donor = &fx[rng.usize(..fx.len())];
        let cap = |d: &[u8]| d[..d.len().min(32 * 1024)].to_vec();
        let (c2s, s2c) = match rng.u8(..3) {
            0 => (mutate(&mut rng, f.c2s, donor.c2s), cap(f.s2c)),
            1 => (cap(f.c2s), mutate(&mut rng, f.s2c, donor.s2c)),
            _ => (
                mutate(&mut rng, f.c2s, donor.s2c),
                mutate(&mut rng, f.s2c, donor.c2s),
            ),
        };
        events += run(&mut rng, &c2s, &s2c);
    }
    // Mutations leave most messages intact: the test must not be vacuous.
    assert!(events > 8000, "only {events} events");
}

#[test]
fn random_bytes_make_no_messages() {
    let mut rng = fastrand::Rng::with_seed(0x000b_ada3);
    for i in 0..4000 {
        let len = rng.usize(..[64, 2048, 70_000][i % 3]);
        let mut c2s: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        if i % 4 == 0 && !c2s.is_empty() {
            // As if the connection had started properly.
            c2s.splice(0..0, *b"AMQP\x00\x00\x09\x01");
        }
        let s2c: Vec<u8> = (0..rng.usize(..2048)).map(|_| rng.u8(..)).collect();
        assert_eq!(run(&mut rng, &c2s, &s2c), 0);
    }
}

#[test]
fn huge_gaps_do_not_overflow() {
    let body = [3u8, 0, 1, 0xff, 0xff, 0xff, 0xf0];
    let mut c2s = b"AMQP\x00\x00\x09\x01".to_vec();
    c2s.extend(super::build::tune_ok(0));
    c2s.extend(super::build::publish(1, b"", b"q"));
    c2s.extend(super::build::header(1, u64::MAX));
    c2s.extend(body);
    let mut r = Replay::new(&c2s, &[], Direction::Egress);
    r.deliver(C, c2s.len());
    // The body frame claims more than the unlimited cap: an error, then resync.
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    for n in [u64::MAX, u64::MAX - 1, 1 << 40] {
        let ctx = crate::protocol::SegmentCtx {
            tid: 1,
            goroutine: 0,
            first_ns: 1,
            last_ns: 2,
        };
        assert!(!r.conn.skip(Direction::Egress, n, 0, &ctx, &mut r.events));
        assert!(!r.conn.skip(Direction::Ingress, n, 0, &ctx, &mut r.events));
    }
    r.close();
    check_invariants(&r.events, true);
}
