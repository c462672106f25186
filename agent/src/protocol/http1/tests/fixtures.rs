//! The recorded fixtures: whatever the segmentation, a complete replay gives exactly the golden
//! events (with the timing the segmentation implies), and any prefix gives a prefix-consistent
//! subset of them, never a wrong event.

use super::{
    assert_no_secrets, check_invariants, fixture, fixtures, Fixture, Golden, Replay, REQ, RESP,
};
use crate::protocol::testkit::{self, pieces};
use crate::protocol::HttpEnd;
use crate::protocol::{Direction, HttpOutcome, L7Event, Outcome};

/// Fixtures up to this size get every prefix and every split point; larger ones get every
/// point near a message boundary and a sample elsewhere (keeps the debug-build suite fast).
const EXHAUSTIVE: usize = 16 * 1024;

/// The fixture's pieces interleaved causally (see `testkit::schedule`).
fn schedule(f: &Fixture, req: &[usize], resp: &[usize]) -> Vec<(usize, usize)> {
    testkit::schedule(f.name, &f.segs, req, resp)
}

fn recorded(f: &Fixture) -> Vec<(usize, usize)> {
    f.segs.clone()
}

fn split(len: usize, at: usize) -> Vec<usize> {
    [at, len - at].into_iter().filter(|&n| n > 0).collect()
}

fn recorded_pieces(f: &Fixture, side: usize) -> Vec<usize> {
    testkit::side_pieces(&f.segs, side)
}

fn replay<'a>(f: &'a Fixture, plan: &[(usize, usize)], request_dir: Direction) -> Replay<'a> {
    let mut r = Replay::new(f.c2s, f.s2c, request_dir);
    for &(side, len) in plan {
        r.deliver(side, len);
    }
    r
}

/// The whole connection, then close: exactly the golden events, no errors.
fn assert_full(f: &Fixture, plan: &[(usize, usize)], request_dir: Direction, what: &str) {
    let mut r = replay(f, plan, request_dir);
    r.close();
    let want: Vec<L7Event> = f.golden.iter().map(|g| g.event(&r)).collect();
    let want_starts: Vec<&L7Event> = want
        .iter()
        .filter(|e| matches!(e, L7Event::RequestStart { .. }))
        .collect();
    let want_ends: Vec<&L7Event> = want
        .iter()
        .filter(|e| matches!(e, L7Event::ExchangeEnd { .. }))
        .collect();
    assert_eq!(r.starts(), want_starts, "{}: {what}: starts", f.name);
    assert_eq!(r.ends(), want_ends, "{}: {what}: ends", f.name);
    assert!(
        r.errors.is_empty(),
        "{}: {what}: errors {:?}",
        f.name,
        r.errors
    );
    check_invariants(&r.events, true);
    assert_no_secrets(&r.events);
}

/// The first `cut` bytes of `plan`: exactly the golden events whose triggering byte arrived;
/// then close: only aborts, or a read-until-close response cut short.
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
            Golden::End { at: Some(at), .. } if *at < got_resp => want_ends.push(g.event(&r)),
            _ => {}
        }
    }
    assert_eq!(
        r.starts(),
        want_starts.iter().collect::<Vec<_>>(),
        "{}: prefix {cut}: starts",
        f.name
    );
    assert_eq!(
        r.ends(),
        want_ends.iter().collect::<Vec<_>>(),
        "{}: prefix {cut}: ends",
        f.name
    );
    assert!(
        r.errors.is_empty(),
        "{}: prefix {cut}: errors {:?}",
        f.name,
        r.errors
    );
    let before = r.events.len();
    r.close();
    for e in &r.events[before..] {
        let L7Event::ExchangeEnd {
            seq,
            end_ns,
            outcome:
                Outcome::Http1(HttpEnd {
                    outcome,
                    request_body_size,
                }),
        } = e
        else {
            panic!("{}: prefix {cut}: close emitted {e:?}", f.name);
        };
        assert_eq!(Some(*end_ns), r.close_ns);
        let golden = f.golden.iter().find(
            |g| matches!(g, Golden::End { seq: s, .. } | Golden::Aborted { seq: s } if s == seq),
        );
        let golden_req_body = match golden {
            Some(Golden::End { req_body, .. }) => *req_body,
            _ => 0,
        };
        assert!(
            *request_body_size <= golden_req_body,
            "{}: prefix {cut}: request body {e:?}",
            f.name
        );
        match (outcome, golden) {
            (HttpOutcome::Aborted, _) => {}
            (
                HttpOutcome::Response {
                    status,
                    version_minor,
                    response_body_size,
                },
                Some(Golden::End {
                    at: None,
                    status: s,
                    version_minor: v,
                    resp_body,
                    ..
                }),
            ) => {
                assert_eq!((status, version_minor), (s, v), "{}: prefix {cut}", f.name);
                assert!(response_body_size <= resp_body, "{}: prefix {cut}", f.name);
            }
            _ => panic!(
                "{}: prefix {cut}: close completed {e:?}, golden {golden:?}",
                f.name
            ),
        }
    }
    check_invariants(&r.events, true);
    assert_no_secrets(&r.events);
}

/// Offsets worth cutting at in a big fixture: around every golden offset and read boundary.
fn interesting(f: &Fixture, total: usize) -> Vec<usize> {
    let mut points: Vec<usize> = (0..=total).step_by(97).collect();
    let mut marks = Vec::new();
    for g in &f.golden {
        match g {
            Golden::Start { at, head_end, .. } => marks.extend([*at, *head_end]),
            Golden::End { at: Some(at), .. } => marks.push(*at),
            _ => {}
        }
    }
    // Golden offsets are per side; as cut points of the merged plan they are approximate, so
    // take a generous window around each (and around each side's total).
    let mut acc = 0;
    for &(_, len) in &f.segs {
        acc += len;
        marks.push(acc);
    }
    marks.extend([f.c2s.len(), f.s2c.len()]);
    for m in marks {
        for delta in 0..=64 {
            points.extend([m.saturating_sub(delta), (m + delta).min(total)]);
        }
    }
    points.sort_unstable();
    points.dedup();
    points
}

#[test]
fn fixtures_as_recorded() {
    for f in fixtures() {
        assert_full(&f, &recorded(&f), Direction::Egress, "recorded reads");
        // The request direction may be either; nothing depends on which.
        assert_full(&f, &recorded(&f), Direction::Ingress, "request dir ingress");
    }
}

#[test]
fn fixtures_in_fixed_size_segments() {
    for f in fixtures() {
        for size in [1, 2, 3, 7, 64, 1000, 4096, 65536] {
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
    let mut rng = fastrand::Rng::with_seed(0x4854_5450);
    for f in fixtures() {
        for round in 0..20 {
            let mut cut = |len: usize| {
                let mut v = Vec::new();
                let mut at = 0;
                while at < len {
                    let n = rng.usize(1..=(len - at).min(if round % 2 == 0 { 16 } else { 5000 }));
                    v.push(n);
                    at += n;
                }
                v
            };
            let (req, resp) = (cut(f.c2s.len()), cut(f.s2c.len()));
            assert_full(
                &f,
                &schedule(&f, &req, &resp),
                Direction::Egress,
                &format!("random round {round}"),
            );
        }
    }
}

#[test]
fn fixtures_split_in_two_at_every_point() {
    for f in fixtures() {
        let (req_rec, resp_rec) = (recorded_pieces(&f, REQ), recorded_pieces(&f, RESP));
        for (side, len) in [(REQ, f.c2s.len()), (RESP, f.s2c.len())] {
            let points: Vec<usize> = if len <= EXHAUSTIVE {
                (1..len).collect()
            } else {
                interesting(&f, len)
                    .into_iter()
                    .filter(|&p| p < len)
                    .collect()
            };
            for at in points {
                let plan = if side == REQ {
                    schedule(&f, &split(len, at), &resp_rec)
                } else {
                    schedule(&f, &req_rec, &split(len, at))
                };
                assert_full(
                    &f,
                    &plan,
                    Direction::Egress,
                    &format!("side {side} split at {at}"),
                );
            }
        }
    }
}

#[test]
fn fixtures_every_prefix() {
    for f in fixtures() {
        for plan in [
            recorded(&f),
            schedule(&f, &pieces(f.c2s.len(), 50), &pieces(f.s2c.len(), 50)),
        ] {
            let total = f.c2s.len() + f.s2c.len();
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

#[test]
fn secrets_never_reach_events() {
    let f = fixture("tracecontext_secrets");
    for needle in ["SECRET-AUTHORIZATION", "SECRET-COOKIE", "SECRET-SET-COOKIE"] {
        let haystack = if needle.ends_with("SET-COOKIE") {
            f.s2c
        } else {
            f.c2s
        };
        assert!(
            haystack
                .windows(needle.len())
                .any(|w| w == needle.as_bytes()),
            "fixture lacks {needle}"
        );
    }
    let mut r = replay(&f, &recorded(&f), Direction::Egress);
    r.close();
    let dump = format!("{:?}", r.events);
    assert!(!dump.contains("SECRET"), "{dump}");
    // And the trace context is there: the first traceparent, every tracestate line.
    let L7Event::RequestStart {
        request: crate::protocol::Request::Http1(req),
        ..
    } = &r.events[0]
    else {
        panic!("{:?}", r.events[0]);
    };
    assert_eq!(
        req.traceparent.as_deref(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(
        req.tracestate.as_deref(),
        Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,vendor=x")
    );
    assert_eq!(req.user_agent.as_deref(), Some("tracer test/1.0 (spaces)"));
}
