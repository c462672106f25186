//! Seeded mutations of the recorded upgrades and random input through the switching parser:
//! never a panic, bounded buffering (checked by the replay harness), event invariants always
//! hold.

use super::{check_invariants, fixtures, Replay, REQ, RESP};
use crate::protocol::Direction;

fn mutate(rng: &mut fastrand::Rng, src: &[u8], hot: &[usize]) -> Vec<u8> {
    let mut v = src.to_vec();
    for _ in 0..rng.usize(1..8) {
        if v.is_empty() {
            break;
        }
        // Half of the mutations land near the interesting offsets (the 101, the preface).
        let at = match hot.get(rng.usize(..hot.len() * 2 + 1)) {
            Some(&h) => (h + rng.usize(..32)).min(v.len() - 1),
            None => rng.usize(..v.len()),
        };
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

fn feed(rng: &mut fastrand::Rng, c2s: &[u8], s2c: &[u8], dir: Direction) {
    let mut r = Replay::new(c2s, s2c, dir);
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

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn mutated_upgrades_never_panic() {
    let mut rng = fastrand::Rng::with_seed(0x6832_6301);
    for f in fixtures() {
        let hot_c: Vec<usize> = [find(f.c2s, b"Upgrade"), find(f.c2s, b"PRI * HTTP/2.0")]
            .into_iter()
            .flatten()
            .collect();
        let hot_s: Vec<usize> = [find(f.s2c, b"HTTP/1.1 101"), find(f.s2c, b"\r\n\r\n")]
            .into_iter()
            .flatten()
            .collect();
        let rounds = if f.s2c.len() > 10_000 { 30 } else { 200 };
        for _ in 0..rounds {
            let (c, s) = match rng.u8(..3) {
                0 => (mutate(&mut rng, f.c2s, &hot_c), f.s2c.to_vec()),
                1 => (f.c2s.to_vec(), mutate(&mut rng, f.s2c, &hot_s)),
                _ => (
                    mutate(&mut rng, f.c2s, &hot_c),
                    mutate(&mut rng, f.s2c, &hot_s),
                ),
            };
            let dir = if rng.bool() {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            feed(&mut rng, &c, &s, dir);
        }
    }
}

/// Random bytes after a genuine switch, on either side.
#[test]
fn random_bytes_after_the_switch_never_panic() {
    let mut rng = fastrand::Rng::with_seed(0x6832_6302);
    let req = b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n\r\n";
    let resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n";
    for round in 0..300 {
        let noise = |rng: &mut fastrand::Rng| -> Vec<u8> {
            (0..rng.usize(0..2000)).map(|_| rng.u8(..)).collect()
        };
        let mut c = req.to_vec();
        if round % 2 == 0 {
            c.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        }
        c.extend(noise(&mut rng));
        let mut s = resp.to_vec();
        if round % 3 == 0 {
            s.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        }
        s.extend(noise(&mut rng));
        feed(&mut rng, &c, &s, Direction::Egress);
    }
}
