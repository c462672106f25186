//! Deterministic fuzzing: mutated fixtures and random bytes, cut into random segments with
//! random gaps and closes. Whatever the input: no panic, consumption within bounds (the
//! replay checks unconsumed bytes), the outstanding-message queue bounded, event invariants
//! kept; and random bytes that pass detection make no spans.

use super::super::session::MAX_OPS;
use super::{check_invariants, fixtures, Replay, REQ, RESP};
use crate::protocol::{Detection, Direction, Role, SegmentCtx};

fn mutate(rng: &mut fastrand::Rng, data: &[u8], donor: &[u8]) -> Vec<u8> {
    // Work on a window so iterations stay cheap on the big fixtures.
    let window = [512, 2048, 8 * 1024][rng.usize(..3)];
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
                // Duplicate a range (repeated messages).
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
                // Lengths matter most: rewrite the four bytes after a likely type byte.
                if let Some(p) = v[at..].iter().position(u8::is_ascii_alphabetic) {
                    let p = at + p + 1;
                    let len: u32 = match rng.u8(..4) {
                        0 => rng.u32(..4),
                        1 => u32::MAX - rng.u32(..4),
                        2 => rng.u32(..64),
                        _ => rng.u32(..),
                    };
                    for (i, b) in len.to_be_bytes().into_iter().enumerate() {
                        if let Some(slot) = v.get_mut(p + i) {
                            *slot = b;
                        }
                    }
                }
            }
            7 => {
                // A type byte from the other side's alphabet.
                v[at] = b"QPBEDCSHXFdcfpRSKZTDCEN123nIstGHWAVv"[rng.usize(..36)];
            }
            _ => v.truncate(at),
        }
    }
    v
}

/// Feed both streams in random pieces (random side order, not necessarily causal), with
/// random gaps, sometimes closing early; check the invariants. Returns the number of starts.
fn run(rng: &mut fastrand::Rng, req: &[u8], resp: &[u8]) -> usize {
    let dir = if rng.bool() {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    let mut r = Replay::new(req, resp, dir);
    let max_piece = [1, 7, 100, 4096][rng.usize(..4)];
    let close_early = rng.u8(..10) == 0;
    let gap_odds = 1 + 4096 / max_piece;
    while r.to[REQ] < req.len() || r.to[RESP] < resp.len() {
        let side = if r.to[REQ] == req.len() {
            RESP
        } else if r.to[RESP] == resp.len() {
            REQ
        } else {
            usize::from(rng.u8(..10) < 4)
        };
        let left = [req.len(), resp.len()][side] - r.to[side];
        let n = rng.usize(1..=left.min(max_piece));
        if rng.usize(..gap_odds) == 0 {
            r.gap(side, n);
        } else {
            r.deliver(side, n);
        }
        assert!(r.conn.session().pending() <= MAX_OPS);
        check_invariants(&r.events, false);
        if close_early && rng.u8(..50) == 0 {
            break;
        }
    }
    r.close();
    check_invariants(&r.events, true);
    r.starts().len()
}

#[test]
fn mutated_fixtures_never_break_invariants() {
    let mut rng = fastrand::Rng::with_seed(0x00f0_5147);
    let fx = fixtures();
    let mut starts = 0;
    for _ in 0..6000 {
        let f = &fx[rng.usize(..fx.len())];
        let donor = &fx[rng.usize(..fx.len())];
        let (req, resp) = match rng.u8(..3) {
            0 => (
                mutate(&mut rng, f.c2s, donor.c2s),
                f.s2c[..f.s2c.len().min(8 * 1024)].to_vec(),
            ),
            1 => (
                f.c2s[..f.c2s.len().min(8 * 1024)].to_vec(),
                mutate(&mut rng, f.s2c, donor.s2c),
            ),
            _ => (
                mutate(&mut rng, f.c2s, donor.s2c),
                mutate(&mut rng, f.s2c, donor.c2s),
            ),
        };
        starts += run(&mut rng, &req, &resp);
    }
    // Mutations leave many statements intact (answers delivered before their query, which the
    // random side order often does, are not paired): the test must not be vacuous.
    assert!(starts > 2000, "only {starts} statements");
}

#[test]
fn random_bytes_that_pass_detection_make_no_spans() {
    let mut rng = fastrand::Rng::with_seed(0xbad_5eed);
    let mut detected = 0;
    for i in 0..6000 {
        let len = rng.usize(..[64, 2048, 70_000][i % 3]);
        let req: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        let resp: Vec<u8> = (0..rng.usize(..2048)).map(|_| rng.u8(..)).collect();
        // As the connection layer does: only what detection accepts is parsed.
        let fe = super::super::detect(Direction::Egress, Role::Unknown, &req);
        let be = super::super::detect(Direction::Ingress, Role::Unknown, &resp);
        if matches!(fe, Detection::Match { .. }) || matches!(be, Detection::Match { .. }) {
            detected += 1;
            assert_eq!(run(&mut rng, &req, &resp), 0);
        }
        // Without detection, anything may come of random bytes, except broken invariants
        // (checked by `run`).
        run(&mut rng, &req, &resp);
    }
    assert_eq!(detected, 0);
}

#[test]
fn huge_gaps_and_lengths_do_not_overflow() {
    // A DataRow of the largest length, a CopyData likewise; gaps of every size.
    let mut resp = super::m::row_description();
    resp.extend(b"D\x3f\xff\xff\xfe\x00\x01");
    let mut req = super::m::query("SELECT huge");
    req.extend(b"d\x3f\xff\xff\xfe");
    let mut r = Replay::new(&req, &resp, Direction::Egress);
    r.deliver(REQ, req.len());
    r.deliver(RESP, resp.len());
    let ctx = SegmentCtx {
        tid: 1,
        goroutine: 0,
        first_ns: 1,
        last_ns: 2,
    };
    let (fe, be) = (Direction::Egress, Direction::Ingress);
    let body = 0x3fff_fffe_u64 - 4;
    assert!(r.conn.skip(be, body - 2, 0, &ctx, &mut r.events));
    assert!(!r.conn.skip(be, u64::MAX, 0, &ctx, &mut r.events));
    assert!(r.conn.skip(fe, body, 0, &ctx, &mut r.events));
    assert!(!r.conn.skip(fe, u64::MAX, 0, &ctx, &mut r.events));
    assert!(r.conn.skip(fe, 0, 5, &ctx, &mut r.events));
    r.close();
    check_invariants(&r.events, true);
    assert_eq!(
        super::summary(&r.events),
        ["start 0 SELECT huge", "end 0 aborted"]
    );
}
