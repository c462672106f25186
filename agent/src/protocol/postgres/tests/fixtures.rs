//! The recorded fixtures: whatever the segmentation (as recorded, fixed sizes down to byte by
//! byte, random, split in two at every point), a complete replay gives exactly the golden
//! events with the timing the segmentation implies; any prefix gives exactly the golden events
//! whose bytes arrived, never a wrong one, and closing after it only aborts what was open.

use super::{check_invariants, fixture, fixtures, Fixture, Golden, Replay, REQ, RESP};
use crate::protocol::testkit::{self, pieces};
use crate::protocol::{Direction, L7Event, Outcome, PgOutcome, Request};

/// Fixtures up to this size get every prefix and every split point; larger ones get every
/// point near a message boundary and a sample elsewhere (keeps the debug-build suite fast).
const EXHAUSTIVE: usize = 4 * 1024;

/// The fixture's pieces interleaved causally (see `testkit::schedule`).
fn schedule(f: &Fixture, req: &[usize], resp: &[usize]) -> Vec<(usize, usize)> {
    testkit::schedule(f.name, &f.segs, req, resp)
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
    assert_eq!(
        r.events.len(),
        want.len(),
        "{}: {what}: {} events, golden {}",
        f.name,
        r.events.len(),
        want.len()
    );
    for (got, want) in r.events.iter().zip(&want) {
        assert_eq!(got, want, "{}: {what}", f.name);
    }
    assert!(
        r.errors.is_empty(),
        "{}: {what}: errors {:?}",
        f.name,
        r.errors
    );
    check_invariants(&r.events, true);
}

/// The first `cut` bytes of `plan`: exactly the golden events whose bytes arrived; then close:
/// only an abort of the statement left open.
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
    let want: Vec<L7Event> = f
        .golden
        .iter()
        .filter(|g| match g {
            Golden::Start {
                req_end, trigger, ..
            } => *req_end < got_req && *trigger < got_resp,
            Golden::End { at, .. } => *at < got_resp,
        })
        .map(|g| g.event(&r))
        .collect();
    assert_eq!(
        r.events, want,
        "{}: prefix {cut} (req {got_req}, resp {got_resp})",
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
            end_ns,
            outcome: Outcome::Postgres(PgOutcome::Aborted),
            ..
        } = e
        else {
            panic!("{}: prefix {cut}: close emitted {e:?}", f.name);
        };
        assert_eq!(Some(*end_ns), r.close_ns);
    }
    check_invariants(&r.events, true);
}

/// Offsets worth cutting at in a big fixture: around every golden offset and read boundary.
fn interesting(f: &Fixture, total: usize) -> Vec<usize> {
    let mut points: Vec<usize> = (0..=total).step_by(97).collect();
    let mut marks = Vec::new();
    for g in f.golden.iter().take(40) {
        match g {
            Golden::Start {
                at,
                req_end,
                trigger,
                ..
            } => marks.extend([*at, *req_end, *trigger]),
            Golden::End { at, .. } => marks.push(*at),
        }
    }
    let mut acc = 0;
    for &(_, len) in f.segs.iter().take(60) {
        acc += len;
        marks.push(acc);
    }
    marks.extend([f.c2s.len(), f.s2c.len()]);
    // Golden offsets are per side; as cut points of the merged plan they are approximate, so
    // take a window around each.
    for m in marks {
        for delta in 0..=8 {
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
        let plan = f.segs.clone();
        assert_full(&f, &plan, Direction::Egress, "recorded reads");
        // The request direction may be either; nothing depends on which.
        assert_full(&f, &plan, Direction::Ingress, "request dir ingress");
    }
}

#[test]
fn fixtures_in_fixed_size_segments() {
    for f in fixtures() {
        for size in [1, 2, 3, 5, 7, 64, 1000, 65536] {
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
    let mut rng = fastrand::Rng::with_seed(0x5047_5351);
    for f in fixtures() {
        for round in 0..20 {
            let mut cut = |len: usize| {
                let mut v = Vec::new();
                let mut at = 0;
                while at < len {
                    let n = rng.usize(1..=(len - at).min(if round % 2 == 0 { 16 } else { 3000 }));
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
                    .filter(|&p| p > 0 && p < len)
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
            f.segs.clone(),
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

/// Row data, parameters, COPY data and error messages never reach an event.
#[test]
fn values_never_reach_events() {
    let f = fixture("psycopg_pipeline");
    for needle in ["duplicate key", "never runs", "c21", "Key (id)=(1)"] {
        let haystack = [f.c2s, f.s2c].concat();
        assert!(
            haystack
                .windows(needle.len())
                .any(|w| w == needle.as_bytes()),
            "fixture lacks {needle}"
        );
    }
    let mut r = replay(&f, &f.segs, Direction::Egress);
    r.close();
    let dump = format!("{:?}", r.events);
    for needle in ["duplicate key", "never runs", "c21", "Key (id)"] {
        assert!(!dump.contains(needle), "{needle} leaked: {dump}");
    }
}

/// The connection that joined late reports statements by name, text unknown; the same
/// statements in the full capture carry their text.
#[test]
fn midstream_join_reports_statements_by_name() {
    let f = fixture("pgbench_prepared_midstream");
    let mut r = replay(&f, &f.segs, Direction::Egress);
    r.close();
    let starts = r.starts();
    assert!(starts.len() > 100);
    for e in starts {
        let L7Event::RequestStart {
            request: Request::Postgres(s),
            ..
        } = e
        else {
            unreachable!()
        };
        assert_eq!(s.text, None, "{e:?}");
        assert!(s
            .prepared_name
            .as_deref()
            .is_some_and(|n| n.starts_with("P_")));
        assert_eq!((s.user.as_deref(), s.database.as_deref()), (None, None));
    }
}
