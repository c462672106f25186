//! Seeded mutations of the fixtures and random input: never a panic, bounded buffering
//! (checked by the replay harness), event invariants always hold.

use super::{check_invariants, fixtures, Replay, REQ, RESP};
use crate::protocol::Direction;

fn mutate(rng: &mut fastrand::Rng, src: &[u8]) -> Vec<u8> {
    let mut v = src.to_vec();
    for _ in 0..rng.usize(1..8) {
        if v.is_empty() {
            break;
        }
        let at = rng.usize(..v.len());
        match rng.u8(..4) {
            0 => v[at] = rng.u8(..),
            1 => v[at] ^= 1 << rng.u8(..8),
            2 => {
                let n = rng.usize(0..(v.len() - at).min(64) + 1);
                v.drain(at..at + n);
            }
            _ => {
                let n = rng.usize(1..32);
                for _ in 0..n {
                    v.insert(at, rng.u8(..));
                }
            }
        }
    }
    v
}

fn feed(rng: &mut fastrand::Rng, c2s: &[u8], s2c: &[u8]) {
    let mut r = Replay::new(c2s, s2c, Direction::Egress);
    let mut left = [c2s.len(), s2c.len()];
    while left[REQ] + left[RESP] > 0 {
        let side = if left[REQ] == 0 {
            RESP
        } else if left[RESP] == 0 {
            REQ
        } else {
            rng.usize(..2)
        };
        let n = rng.usize(1..=left[side].min(3000));
        if rng.u8(..50) == 0 {
            r.gap(side, n);
        } else {
            r.deliver(side, n);
        }
        left[side] -= n;
    }
    r.close();
    check_invariants(&r.events, true);
}

#[test]
fn mutated_fixtures_never_panic() {
    let mut rng = fastrand::Rng::with_seed(0x6832);
    for f in fixtures() {
        // The large fixture is mostly DATA: fewer rounds keep the debug build fast.
        let rounds = if f.s2c.len() > 100_000 { 20 } else { 200 };
        for _ in 0..rounds {
            let (c, s) = if rng.bool() {
                (mutate(&mut rng, f.c2s), f.s2c.to_vec())
            } else {
                (f.c2s.to_vec(), mutate(&mut rng, f.s2c))
            };
            feed(&mut rng, &c, &s);
        }
    }
}

#[test]
fn random_frames_after_the_preface_never_panic() {
    let mut rng = fastrand::Rng::with_seed(0x7072);
    for _ in 0..500 {
        let mut c = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let mut s = Vec::new();
        for side in [&mut c, &mut s] {
            for _ in 0..rng.usize(1..20) {
                // Mostly well-framed, small, known types, random flags and payload.
                let len = rng.usize(0..40);
                side.extend([
                    0,
                    0,
                    len as u8,
                    rng.u8(..11),
                    rng.u8(..),
                    0,
                    0,
                    0,
                    rng.u8(..8),
                ]);
                side.extend((0..len).map(|_| rng.u8(..)));
            }
        }
        feed(&mut rng, &c, &s);
    }
}
