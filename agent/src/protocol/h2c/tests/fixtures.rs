//! The recorded upgrades: whatever the segmentation, a complete replay gives exactly the golden
//! events (with the timing the segmentation implies) and ends on the right parser; any prefix
//! gives exactly the golden events whose last byte arrived; the client's preface may be seen
//! before the server's 101.

use super::{
    assert_no_secrets, check_invariants, fixture, fixtures, is_http2, Fixture, Golden, Replay, REQ,
    RESP,
};
use crate::protocol::testkit::{self, pieces};
use crate::protocol::{Direction, H2Outcome, HttpOutcome, L7Event, Outcome};
use crate::protocol::{H2End, HttpEnd};

/// Up to this many bytes a fixture gets every prefix / split point; larger ones get points
/// near golden offsets and read boundaries plus a sample.
const EXHAUSTIVE: usize = 8 * 1024;

/// The fixture's pieces interleaved causally (see `testkit::schedule`).
fn schedule(f: &Fixture, req: &[usize], resp: &[usize]) -> Vec<(usize, usize)> {
    testkit::schedule(f.name, &f.segs, req, resp)
}

fn side_pieces(f: &Fixture, side: usize) -> Vec<usize> {
    testkit::side_pieces(&f.segs, side)
}

/// Does the connection switch to HTTP/2?
fn upgrades(f: &Fixture) -> bool {
    f.name.starts_with("upgrade")
}

fn assert_full(f: &Fixture, plan: &[(usize, usize)], request_dir: Direction, what: &str) {
    let mut r = Replay::new(f.c2s, f.s2c, request_dir);
    for &(side, len) in plan {
        r.deliver(side, len);
    }
    assert_eq!(is_http2(&r.conn), upgrades(f), "{}: {what}: parser", f.name);
    r.close();
    let want: Vec<L7Event> = f.golden.iter().map(|g| g.event(&r)).collect();
    let only = |v: Vec<&L7Event>, start: bool| -> Vec<L7Event> {
        v.into_iter()
            .filter(|e| matches!(e, L7Event::RequestStart { .. }) == start)
            .cloned()
            .collect()
    };
    let want_ref: Vec<&L7Event> = want.iter().collect();
    assert_eq!(
        only(r.starts(), true),
        only(want_ref.clone(), true),
        "{}: {what}: starts",
        f.name
    );
    assert_eq!(
        only(r.ends(), false),
        only(want_ref, false),
        "{}: {what}: ends",
        f.name
    );
    assert!(r.errors.is_empty(), "{}: {what}: {:?}", f.name, r.errors);
    check_invariants(&r.events, true);
    assert_no_secrets(&r.events);
}

/// The first `cut` bytes of `plan`: exactly the golden events whose last byte arrived; then
/// close: only aborts, of the exchanges still open.
fn assert_prefix(f: &Fixture, plan: &[(usize, usize)], cut: usize) {
    let mut r = Replay::new(f.c2s, f.s2c, Direction::Egress);
    let mut left = cut;
    for &(side, len) in plan {
        if left == 0 {
            break;
        }
        r.deliver(side, len.min(left));
        left -= len.min(left);
    }
    let (got_req, got_resp) = (r.to[REQ], r.to[RESP]);
    let mut want_starts = Vec::new();
    let mut want_ends = Vec::new();
    for g in &f.golden {
        match g {
            Golden::Start { head_end, .. } if *head_end < got_req => want_starts.push(g.event(&r)),
            Golden::End { at, .. } if *at < got_resp => want_ends.push(g.event(&r)),
            _ => {}
        }
    }
    let what = format!("{}: prefix {cut}", f.name);
    assert_eq!(
        r.starts(),
        want_starts.iter().collect::<Vec<_>>(),
        "{what}: starts"
    );
    assert_eq!(
        r.ends(),
        want_ends.iter().collect::<Vec<_>>(),
        "{what}: ends"
    );
    assert!(r.errors.is_empty(), "{what}: {:?}", r.errors);
    let before = r.events.len();
    r.close();
    for e in &r.events[before..] {
        assert!(
            matches!(
                e,
                L7Event::ExchangeEnd {
                    outcome: Outcome::Http2(H2End {
                        outcome: H2Outcome::Aborted,
                        ..
                    }) | Outcome::Http1(HttpEnd {
                        outcome: HttpOutcome::Aborted,
                        ..
                    }),
                    ..
                }
            ),
            "{what}: close emitted {e:?}"
        );
    }
    check_invariants(&r.events, true);
}

/// Cut points worth trying in a big fixture.
fn interesting(f: &Fixture, total: usize) -> Vec<usize> {
    let mut points: Vec<usize> = (0..=total).step_by(251).collect();
    let mut marks = vec![f.c2s.len(), f.s2c.len()];
    for g in &f.golden {
        match g {
            Golden::Start { at, head_end, .. } => marks.extend([*at, *head_end]),
            Golden::End { at, .. } => marks.push(*at),
        }
    }
    let mut acc = 0;
    for &(_, len) in &f.segs {
        acc += len;
        marks.push(acc);
    }
    for m in marks {
        for d in 0..=24 {
            points.extend([m.saturating_sub(d), (m + d).min(total)]);
        }
    }
    points.sort_unstable();
    points.dedup();
    points
}

#[test]
fn fixtures_as_recorded() {
    for f in fixtures() {
        assert!(!f.golden.is_empty());
        let plan: Vec<(usize, usize)> = f.segs.clone();
        assert_full(&f, &plan, Direction::Egress, "recorded");
        assert_full(&f, &plan, Direction::Ingress, "request dir ingress");
    }
}

/// What the fixtures must show, stated plainly (the golden files are computed).
#[test]
fn fixtures_show_the_cases() {
    let ends = |name: &str| -> Vec<(u64, bool, Option<u16>)> {
        fixture(name)
            .golden
            .iter()
            .filter_map(|g| match g {
                Golden::End {
                    seq,
                    outcome:
                        Outcome::Http2(H2End {
                            outcome: H2Outcome::Response { status, .. },
                            ..
                        }),
                    ..
                } => Some((*seq, true, *status)),
                Golden::End {
                    seq,
                    outcome:
                        Outcome::Http1(HttpEnd {
                            outcome: HttpOutcome::Response { status, .. },
                            ..
                        }),
                    ..
                } => Some((*seq, false, Some(*status))),
                _ => None,
            })
            .collect()
    };
    // (seq, ended by HTTP/2, status)
    assert_eq!(ends("upgrade_get"), [(0, true, Some(200))]);
    assert_eq!(
        ends("upgrade_then_streams"),
        [
            (0, true, Some(200)),
            (3, true, Some(404)),
            (5, true, Some(200))
        ]
    );
    assert_eq!(ends("upgrade_post"), [(0, true, Some(201))]);
    assert_eq!(
        ends("upgrade_after_requests"),
        [
            (0, false, Some(200)),
            (1, false, Some(200)),
            (2, false, Some(200)),
            (3, true, Some(200)),
            ((1 << 32) + 3, true, Some(200))
        ]
    );
    assert_eq!(
        ends("refused"),
        [(0, false, Some(200)), (1, false, Some(404))]
    );
    assert_eq!(ends("websocket"), [(0, false, Some(101))]);
}

#[test]
fn fixtures_in_fixed_size_segments() {
    for f in fixtures() {
        for size in [1, 2, 3, 9, 10, 64, 1000, 16393, 65536] {
            let plan = schedule(&f, &pieces(f.c2s.len(), size), &pieces(f.s2c.len(), size));
            assert_full(
                &f,
                &plan,
                Direction::Egress,
                &format!("{size}-byte segments"),
            );
        }
    }
}

#[test]
fn fixtures_in_random_segments() {
    let mut rng = fastrand::Rng::with_seed(0x6832_6332);
    for f in fixtures() {
        for round in 0..20 {
            let max = if round % 2 == 0 { 16 } else { 5000 };
            let mut cut = |len: usize| {
                let (mut v, mut at) = (Vec::new(), 0);
                while at < len {
                    let n = rng.usize(1..=(len - at).min(max));
                    v.push(n);
                    at += n;
                }
                v
            };
            let (req, resp) = (cut(f.c2s.len()), cut(f.s2c.len()));
            let plan = schedule(&f, &req, &resp);
            assert_full(&f, &plan, Direction::Egress, &format!("random {round}"));
        }
    }
}

#[test]
fn fixtures_split_in_two_at_every_point() {
    for f in fixtures() {
        let (req_rec, resp_rec) = (side_pieces(&f, REQ), side_pieces(&f, RESP));
        for (side, len) in [(REQ, f.c2s.len()), (RESP, f.s2c.len())] {
            let points: Vec<usize> = if len <= EXHAUSTIVE {
                (1..len).collect()
            } else {
                interesting(&f, len)
                    .into_iter()
                    .filter(|&p| p > 0 && p < len)
                    .collect()
            };
            for at in points {
                let two = vec![at, len - at];
                let plan = if side == REQ {
                    schedule(&f, &two, &resp_rec)
                } else {
                    schedule(&f, &req_rec, &two)
                };
                assert_full(
                    &f,
                    &plan,
                    Direction::Egress,
                    &format!("side {side} split {at}"),
                );
            }
        }
    }
}

#[test]
fn fixtures_every_prefix() {
    for f in fixtures() {
        let total = f.c2s.len() + f.s2c.len();
        for plan in [
            f.segs.clone(),
            schedule(&f, &pieces(f.c2s.len(), 7), &pieces(f.s2c.len(), 50)),
        ] {
            let cuts: Vec<usize> = if total <= EXHAUSTIVE {
                (0..=total).collect()
            } else {
                interesting(&f, total)
            };
            for cut in cuts {
                assert_prefix(&f, &plan, cut);
            }
        }
    }
}

/// The directions are captured separately: the client's first HTTP/2 bytes (its preface, read
/// after the 101) may reach the parser before the 101 does, in one piece or byte by byte. They
/// wait for the switch; the events are the same.
#[test]
fn client_preface_seen_before_the_101() {
    for f in fixtures().into_iter().filter(upgrades) {
        let plan = f.segs.clone();
        // The recorded order: the 101 arrives in the first server read after the upgrade
        // request; move the client's next run (its preface) in front of that read.
        let first_resp = plan.iter().position(|s| s.0 == RESP).expect("a response");
        let up_resp = plan[first_resp..]
            .iter()
            .scan(0, |acc, s| {
                if s.0 == RESP {
                    *acc += s.1;
                }
                Some(*acc)
            })
            .position(|done| {
                // The 101 head's last byte is in this read.
                let head_101 = f
                    .s2c
                    .windows(12)
                    .position(|w| w == b"HTTP/1.1 101")
                    .expect("a 101");
                let end = head_101
                    + f.s2c[head_101..]
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .expect("head end")
                    + 4;
                done >= end
            })
            .map(|i| first_resp + i)
            .expect("the read with the 101");
        let preface = plan[up_resp..]
            .iter()
            .position(|s| s.0 == REQ)
            .map(|i| up_resp + i)
            .expect("the client's preface read");
        // The whole read at once; or only its 24 preface bytes, one by one (the rest of the
        // read stays in place: a request in held-back bytes gets the timing of their first
        // read, so a byte-by-byte request would not match the golden timing).
        for bytewise in [false, true] {
            let mut reordered = plan.clone();
            let (side, len) = reordered[preface];
            let moved: Vec<(usize, usize)> = if bytewise {
                reordered[preface] = (side, len - 24);
                vec![(REQ, 1); 24]
            } else {
                reordered.remove(preface);
                vec![(side, len)]
            };
            reordered.splice(up_resp..up_resp, moved);
            for dir in [Direction::Egress, Direction::Ingress] {
                assert_full(
                    &f,
                    &reordered,
                    dir,
                    &format!("preface first (bytewise {bytewise})"),
                );
            }
        }
    }
}
