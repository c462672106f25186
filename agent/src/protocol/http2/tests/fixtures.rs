//! The recorded fixtures: whatever the segmentation, a complete replay gives exactly the golden
//! events (with the timing the segmentation implies); any prefix gives exactly the golden
//! events whose last byte arrived; joining mid-connection never gives a wrong value.

use super::{
    assert_no_secrets, check_invariants, fixture, fixtures, Fixture, Golden, Replay, REQ, RESP,
};
use crate::protocol::http2::frame::{FrameHeader, HEADER_LEN, PREFACE};
use crate::protocol::testkit::{self, pieces};
use crate::protocol::H2End;
use crate::protocol::{Direction, H2Outcome, L7Event, Outcome, Request};

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

fn assert_full(f: &Fixture, plan: &[(usize, usize)], request_dir: Direction, what: &str) {
    let mut r = Replay::new(f.c2s, f.s2c, request_dir);
    for &(side, len) in plan {
        r.deliver(side, len);
    }
    r.close();
    let want: Vec<L7Event> = f.golden.iter().map(|g| g.event(&r)).collect();
    let split = |v: Vec<&L7Event>, start: bool| -> Vec<L7Event> {
        v.into_iter()
            .filter(|e| matches!(e, L7Event::RequestStart { .. }) == start)
            .cloned()
            .collect()
    };
    let want_ref: Vec<&L7Event> = want.iter().collect();
    assert_eq!(
        split(r.starts(), true),
        split(want_ref.clone(), true),
        "{}: {what}: starts",
        f.name
    );
    assert_eq!(
        split(r.ends(), false),
        split(want_ref, false),
        "{}: {what}: ends",
        f.name
    );
    assert!(r.errors.is_empty(), "{}: {what}: {:?}", f.name, r.errors);
    check_invariants(&r.events, true);
    assert_no_secrets(&r.events);
}

/// The first `cut` bytes of `plan`: exactly the golden events whose last byte arrived; then
/// close: only aborts, of the started streams still open.
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
    let mut rng = fastrand::Rng::with_seed(0x4832_5f32);
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

/// Offsets of the frame headers of a side.
fn frame_starts(bytes: &[u8], mut at: usize) -> Vec<usize> {
    let mut out = Vec::new();
    while let Some(h) = bytes.get(at..).and_then(FrameHeader::read) {
        out.push(at);
        at += HEADER_LEN + h.len as usize;
    }
    out
}

/// Joining at frame boundaries after the first request (both sides from the first frame at or
/// after the bytes relayed before read `k`): whatever is reported agrees with the golden.
#[test]
fn mid_connection_join_never_reports_a_wrong_value() {
    // (starts reported, of which with unknown fields, responses with a known status)
    let mut seen = (0, 0, 0);
    for f in fixtures() {
        let starts = [frame_starts(f.c2s, PREFACE.len()), frame_starts(f.s2c, 0)];
        let mut done = [0usize; 2];
        for (k, &(side, len)) in f.segs.iter().enumerate() {
            done[side] += len;
            let from = [0, 1].map(|s| starts[s].iter().copied().find(|&o| o >= done[s]));
            let (Some(c), Some(s)) = (from[0], from[1]) else {
                continue;
            };
            let mut r = Replay::new(f.c2s, f.s2c, Direction::Egress).starting_at(c, s);
            let mut pos = [0usize; 2];
            for &(sd, n) in &f.segs {
                let (lo, hi) = (pos[sd], pos[sd] + n);
                pos[sd] = hi;
                let begin = lo.max(r.to[sd]);
                if hi > begin {
                    r.deliver(sd, hi - begin);
                }
            }
            r.close();
            let what = format!("{}: join after read {k} at c{c}/s{s}", f.name);
            check_invariants(&r.events, true);
            assert_no_secrets(&r.events);
            for e in &r.events {
                check_against_golden(&f, e, &what);
                match e {
                    L7Event::RequestStart {
                        request: Request::Http2(q),
                        ..
                    } => {
                        seen.0 += 1;
                        seen.1 += usize::from(q.unknown_fields > 0);
                    }
                    L7Event::ExchangeEnd {
                        outcome:
                            Outcome::Http2(H2End {
                                outcome:
                                    H2Outcome::Response {
                                        status: Some(_), ..
                                    },
                                ..
                            }),
                        ..
                    } => seen.2 += 1,
                    _ => {}
                }
            }
        }
    }
    // The joins exercise both decoded and unknown fields.
    assert!(seen.0 > 50 && seen.1 > 10 && seen.2 > 50, "{seen:?}");
    eprintln!("joins: {seen:?}");
}

fn check_against_golden(f: &Fixture, e: &L7Event, what: &str) {
    match e {
        L7Event::RequestStart {
            seq,
            request: Request::Http2(got),
            ..
        } => {
            let want = f.golden.iter().find_map(|g| match g {
                Golden::Start {
                    seq: s, request, ..
                } if s == seq => Some(request),
                _ => None,
            });
            let want = want.unwrap_or_else(|| panic!("{what}: unexpected start {e:?}"));
            let ok = |g: &Option<String>, w: &Option<String>| g.is_none() || g == w;
            assert!(
                ok(&got.method, &want.method)
                    && ok(&got.path, &want.path)
                    && ok(&got.authority, &want.authority)
                    && ok(&got.scheme, &want.scheme)
                    && ok(&got.user_agent, &want.user_agent)
                    && ok(&got.content_type, &want.content_type)
                    && ok(&got.traceparent, &want.traceparent),
                "{what}: {got:?} vs {want:?}"
            );
            if got.unknown_fields == 0 {
                assert_eq!(got, want, "{what}: fully decoded yet different");
            }
        }
        L7Event::ExchangeEnd {
            seq,
            outcome:
                Outcome::Http2(H2End {
                    outcome,
                    request_body_size,
                }),
            ..
        } => {
            let want = f
                .golden
                .iter()
                .find(|g| g.seq() == *seq && matches!(g, Golden::End { .. }));
            let Some(Golden::End {
                status,
                grpc_status,
                resp_body,
                req_body,
                ..
            }) = want
            else {
                panic!("{what}: unexpected end {e:?}");
            };
            assert_eq!(request_body_size, req_body, "{what}");
            match outcome {
                H2Outcome::Aborted => {}
                H2Outcome::Response {
                    status: s,
                    grpc_status: g,
                    response_body_size,
                } => {
                    assert!(s.is_none() || s == status, "{what}: status {s:?}");
                    assert!(g.is_none() || g == grpc_status, "{what}: grpc {g:?}");
                    assert_eq!(response_body_size, resp_body, "{what}");
                }
                other => panic!("{what}: {other:?}"),
            }
        }
        _ => panic!("{what}: {e:?}"),
    }
}

#[test]
fn trace_context_kept_secrets_dropped() {
    let f = fixture("curl_get");
    let mut r = Replay::new(f.c2s, f.s2c, Direction::Egress);
    for &(side, len) in &f.segs {
        r.deliver(side, len);
    }
    let L7Event::RequestStart {
        request: Request::Http2(req),
        ..
    } = &r.events[0]
    else {
        panic!("{:?}", r.events);
    };
    assert_eq!(req.tracestate.as_deref(), Some("a=1,b=2"));
    assert!(req.traceparent.is_some());
    assert_no_secrets(&r.events);
}

#[test]
fn grpc_statuses() {
    let f = fixture("grpc_calls");
    let mut r = Replay::new(f.c2s, f.s2c, Direction::Ingress);
    for &(side, len) in &f.segs {
        r.deliver(side, len);
    }
    let grpc: Vec<Option<u32>> = r
        .ends()
        .iter()
        .map(|e| match e {
            L7Event::ExchangeEnd {
                outcome:
                    Outcome::Http2(H2End {
                        outcome: H2Outcome::Response { grpc_status, .. },
                        ..
                    }),
                ..
            } => *grpc_status,
            other => panic!("{other:?}"),
        })
        .collect();
    // OK, NOT_FOUND (trailers-only), streaming OK, OK.
    assert_eq!(grpc, [Some(0), Some(5), Some(0), Some(0)]);
}
