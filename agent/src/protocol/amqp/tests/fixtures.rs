//! The recorded fixtures: whatever the segmentation, a complete replay gives exactly the golden
//! events (with the timing the segmentation implies) and no error; any prefix gives exactly the
//! golden events whose bytes arrived; published and delivered copies share fingerprints.

use std::collections::HashMap;

use super::{check_against_golden, check_invariants, fixture, fixtures, Fixture, Replay, C, S};
use crate::protocol::testkit::pieces;
use crate::protocol::{AmqpOperation, AmqpOutcome, Direction};

/// Sides up to this size get every split point and prefix; larger ones get every point near a
/// golden offset or read boundary and a sample elsewhere (keeps the debug-build suite fast).
const EXHAUSTIVE: usize = 16 * 1024;

/// The recorded reads grouped into runs of one side: (side, end offset in that side's stream,
/// bytes of the other side relayed before the run began).
fn runs(f: &Fixture) -> Vec<(usize, usize, usize)> {
    let mut done = [0usize; 2];
    let mut out: Vec<(usize, usize, usize)> = Vec::new();
    for &(side, len) in &f.segs {
        done[side] += len;
        match out.last_mut() {
            Some(run) if run.0 == side => run.1 = done[side],
            _ => out.push((side, done[side], done[1 - side])),
        }
    }
    out
}

/// Interleave the two sides' pieces the way the connection could have: pieces are cut at run
/// boundaries, and a piece may go once the other side's bytes relayed before its run are
/// delivered (a client acks only what it received). `prefer` goes first when both may.
fn schedule(f: &Fixture, pieces: [&[usize]; 2], prefer: usize) -> Vec<(usize, usize)> {
    let runs = runs(f);
    let cut = |side: usize, pieces: &[usize]| -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut at = 0;
        for &len in pieces {
            let end = at + len;
            while at < end {
                let (run_end, need) = runs
                    .iter()
                    .find(|r| r.0 == side && r.1 > at)
                    .map_or((end, 0), |r| (r.1, r.2));
                let stop = end.min(run_end);
                out.push((stop - at, need));
                at = stop;
            }
        }
        out
    };
    let queues = [cut(C, pieces[C]), cut(S, pieces[S])];
    let (mut next, mut done, mut out) = ([0usize; 2], [0usize; 2], Vec::new());
    while next[C] < queues[C].len() || next[S] < queues[S].len() {
        let ready = |side: usize| {
            next[side] < queues[side].len() && queues[side][next[side]].1 <= done[1 - side]
        };
        let side = if ready(prefer) {
            prefer
        } else {
            assert!(ready(1 - prefer), "{}: schedule deadlock", f.name);
            1 - prefer
        };
        let (len, _) = queues[side][next[side]];
        out.push((side, len));
        done[side] += len;
        next[side] += 1;
    }
    out
}

fn split(len: usize, at: usize) -> Vec<usize> {
    [at, len - at].into_iter().filter(|&n| n > 0).collect()
}

fn recorded_pieces(f: &Fixture, side: usize) -> Vec<usize> {
    crate::protocol::testkit::side_pieces(&f.segs, side)
}

fn replay<'a>(f: &'a Fixture, plan: &[(usize, usize)], request_dir: Direction) -> Replay<'a> {
    let mut r = Replay::new(f.c2s, f.s2c, request_dir);
    for &(side, len) in plan {
        r.deliver(side, len);
    }
    r
}

/// The whole connection, then close: exactly the golden events, no errors.
fn assert_full(
    f: &Fixture,
    plan: &[(usize, usize)],
    request_dir: Direction,
    exact_seq: bool,
    what: &str,
) {
    let mut r = replay(f, plan, request_dir);
    assert_eq!(
        r.to,
        [f.c2s.len(), f.s2c.len()],
        "{}: {what}: plan incomplete",
        f.name
    );
    r.close();
    assert!(
        r.errors.is_empty(),
        "{}: {what}: errors {:?}",
        f.name,
        r.errors
    );
    check_against_golden(f, &r, exact_seq, what);
    check_invariants(&r.events, true);
}

/// The first `cut` bytes of `plan`: exactly the golden events whose bytes arrived; close then
/// aborts the rest.
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
    let what = format!("prefix {cut}");
    assert!(
        r.errors.is_empty(),
        "{}: {what}: errors {:?}",
        f.name,
        r.errors
    );
    check_against_golden(f, &r, false, &what);
    check_invariants(&r.events, false);
    r.close();
    check_against_golden(f, &r, false, &format!("{what} closed"));
    check_invariants(&r.events, true);
}

/// Offsets of one side worth cutting at in a big fixture: around every golden offset and read
/// boundary, plus a sample.
fn interesting(f: &Fixture, side: usize, len: usize) -> Vec<usize> {
    let mut points: Vec<usize> = (0..=len).step_by(997).collect();
    let mut marks = vec![0, len];
    for g in f.starts.iter().filter(|g| g.side == side) {
        marks.extend([g.at, g.done_at]);
    }
    for e in &f.ends {
        if let Some((s, at)) = e.at {
            if s == side {
                marks.push(at);
            }
        }
    }
    let mut acc = 0;
    for &(s, n) in &f.segs {
        if s == side {
            acc += n;
            marks.push(acc);
        }
    }
    for m in marks {
        for delta in 0..=24 {
            points.extend([m.saturating_sub(delta), (m + delta).min(len)]);
        }
    }
    points.sort_unstable();
    points.dedup();
    points
}

#[test]
fn fixtures_as_recorded() {
    for f in fixtures() {
        assert!(!f.starts.is_empty(), "{}: no messages", f.name);
        let plan = f.segs.clone();
        assert_full(&f, &plan, Direction::Egress, true, "recorded reads");
        // The broker's socket sees the same bytes with requests on ingress.
        assert_full(&f, &plan, Direction::Ingress, true, "request dir ingress");
    }
}

#[test]
fn fixtures_in_fixed_size_segments() {
    for f in fixtures() {
        for size in [1, 2, 3, 7, 8, 11, 64, 1000, 4096, 65536] {
            for prefer in [C, S] {
                let p = [pieces(f.c2s.len(), size), pieces(f.s2c.len(), size)];
                let plan = schedule(&f, [&p[C], &p[S]], prefer);
                assert_full(
                    &f,
                    &plan,
                    Direction::Egress,
                    false,
                    &format!("{size}-byte segments"),
                );
            }
        }
    }
}

#[test]
fn fixtures_in_random_segments() {
    let mut rng = fastrand::Rng::with_seed(0x414d_5150);
    for f in fixtures() {
        for round in 0..30 {
            let mut cut = |len: usize| {
                let mut v = Vec::new();
                let mut at = 0;
                while at < len {
                    let max = [5, 40, 5000][round % 3];
                    let n = rng.usize(1..=(len - at).min(max));
                    v.push(n);
                    at += n;
                }
                v
            };
            let p = [cut(f.c2s.len()), cut(f.s2c.len())];
            let plan = schedule(&f, [&p[C], &p[S]], round % 2);
            assert_full(
                &f,
                &plan,
                Direction::Egress,
                false,
                &format!("random round {round}"),
            );
        }
    }
}

#[test]
fn fixtures_split_in_two_at_every_point() {
    for f in fixtures() {
        let recorded = [recorded_pieces(&f, C), recorded_pieces(&f, S)];
        for (side, len) in [(C, f.c2s.len()), (S, f.s2c.len())] {
            let points: Vec<usize> = if len <= EXHAUSTIVE {
                (1..len).collect()
            } else {
                interesting(&f, side, len)
                    .into_iter()
                    .filter(|&p| p > 0 && p < len)
                    .collect()
            };
            for at in points {
                let two = split(len, at);
                let mut p = [&recorded[C][..], &recorded[S][..]];
                p[side] = &two;
                let plan = schedule(&f, p, C);
                assert_full(
                    &f,
                    &plan,
                    Direction::Egress,
                    false,
                    &format!("side {side} split at {at}"),
                );
            }
        }
    }
}

#[test]
fn fixtures_every_prefix() {
    for f in fixtures() {
        let p50 = [pieces(f.c2s.len(), 50), pieces(f.s2c.len(), 50)];
        for plan in [f.segs.clone(), schedule(&f, [&p50[C], &p50[S]], S)] {
            let total = f.c2s.len() + f.s2c.len();
            let cuts: Vec<usize> = if total <= EXHAUSTIVE {
                (0..=total).collect()
            } else {
                // Plan offsets: the interesting points of each side, mapped through the plan.
                let mut cuts = Vec::new();
                let mut done = [0usize; 2];
                let sets = [
                    interesting(&f, C, f.c2s.len()),
                    interesting(&f, S, f.s2c.len()),
                ];
                let mut acc = 0;
                for &(side, len) in &plan {
                    for &p in &sets[side] {
                        if p >= done[side] && p < done[side] + len {
                            cuts.push(acc + p - done[side]);
                        }
                    }
                    done[side] += len;
                    acc += len;
                }
                cuts.push(total);
                cuts
            };
            for cut in cuts {
                assert_prefix(&f, &plan, cut);
            }
        }
    }
}

/// Fingerprints of the Rust events across all fixtures: the copies of one message (its publish,
/// every delivery or get of it, redeliveries included) share one; different messages differ.
#[test]
fn published_and_delivered_copies_share_a_fingerprint() {
    let mut by_label: HashMap<String, Vec<(&'static str, AmqpOperation, u64)>> = HashMap::new();
    for f in fixtures() {
        let mut r = replay(&f, &f.segs, Direction::Egress);
        r.close();
        let map = check_against_golden(&f, &r, true, "recorded");
        for (seq, _, _, m) in r.messages() {
            let g = f
                .starts
                .iter()
                .find(|g| g.seq == map[&seq])
                .expect("golden start");
            by_label
                .entry(g.label.clone())
                .or_default()
                .push((f.name, m.operation, m.fingerprint));
        }
    }
    let mut linked = 0;
    for (label, copies) in &by_label {
        let fps: std::collections::HashSet<u64> = copies.iter().map(|c| c.2).collect();
        assert_eq!(fps.len(), 1, "message {label}: {copies:?}");
        let published = copies.iter().any(|c| c.1 == AmqpOperation::Publish);
        let consumed = copies.iter().any(|c| c.1 != AmqpOperation::Publish);
        assert!(
            published,
            "message {label} was consumed but never published: {copies:?}"
        );
        if consumed {
            linked += 1;
        }
    }
    let all: Vec<u64> = by_label.values().map(|c| c[0].2).collect();
    let distinct: std::collections::HashSet<u64> = all.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        all.len(),
        "two different messages share a fingerprint"
    );
    // Publisher and consumers were separate connections: most messages link across them
    // (the unroutable one and the one left unconsumed do not).
    assert!(linked >= 20, "only {linked} messages linked");
}

#[test]
fn trace_context_and_properties_from_real_publishes() {
    let f = fixture("publisher");
    let mut r = replay(&f, &f.segs, Direction::Egress);
    r.close();
    let starts = r.messages();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let ts = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";
    // Strings ('S').
    assert_eq!(starts[1].3.traceparent.as_deref(), Some(tp));
    assert_eq!(starts[1].3.tracestate.as_deref(), Some(ts));
    assert_eq!(starts[1].3.message_id.as_deref(), Some("m-2"));
    assert_eq!(
        (
            starts[1].3.exchange.as_str(),
            starts[1].3.routing_key.as_str()
        ),
        ("ex.direct", "rk.manual")
    );
    // Byte arrays ('x') holding UTF-8, in a table with every field type RabbitMQ knows.
    assert_eq!(starts[2].3.traceparent.as_deref(), Some(tp));
    assert_eq!(starts[2].3.correlation_id.as_deref(), Some("c-3"));
    assert!(
        f.c2s.windows(4).any(|w| w == b"i64L"),
        "the all-types table is in the fixture"
    );
    // No properties at all; an empty body.
    assert_eq!(starts[0].3.message_id, None);
    assert_eq!(starts[3].3.body_size, 0);
    assert!(r.outcomes().iter().all(|e| e.2 == AmqpOutcome::Sent));
}

#[test]
fn large_message_spans_many_body_frames() {
    for (name, op) in [
        ("large_publish", AmqpOperation::Publish),
        ("large_consume", AmqpOperation::Deliver),
    ] {
        let f = fixture(name);
        let r = replay(&f, &f.segs, Direction::Egress);
        let starts = r.messages();
        assert_eq!(starts[0].3.operation, op);
        assert_eq!(starts[0].3.body_size, 200_000, "{name}");
    }
    // The publisher negotiated frame-max 8192 (25 body frames), the consumer kept 131072 (2).
    let count = |data: &[u8]| {
        data.windows(3)
            .filter(|w| w[0] == 3 && w[1..] == [0, 1])
            .count()
    };
    assert!(count(fixture("large_publish").c2s) >= 25);
}

/// Joining midway: start both sides at the bytes relayed from some read on. Every reported
/// message is a golden one whose method frame came after the join; nothing is an error.
#[test]
fn joining_midway_reports_only_real_messages() {
    for f in fixtures() {
        for join in 1..f.segs.len() {
            let mut offs = [0usize; 2];
            for &(side, len) in &f.segs[..join] {
                offs[side] += len;
            }
            let (c2s, s2c) = (&f.c2s[offs[C]..], &f.s2c[offs[S]..]);
            let mut r = Replay::new(c2s, s2c, Direction::Egress);
            for &(side, len) in &f.segs[join..] {
                r.deliver(side, len);
            }
            r.close();
            let what = format!("{}: join at read {join}", f.name);
            assert!(r.errors.is_empty(), "{what}: {:?}", r.errors);
            check_invariants(&r.events, true);
            for s in [C, S] {
                let got: Vec<_> = r
                    .messages()
                    .into_iter()
                    .filter(|x| (x.3.operation == AmqpOperation::Publish) == (s == C))
                    .map(|x| x.3.clone())
                    .collect();
                let want: Vec<_> = f
                    .starts
                    .iter()
                    .filter(|g| g.side == s && g.at >= offs[s])
                    .map(|g| g.message.clone())
                    .collect();
                assert_eq!(got, want, "{what}: side {s}");
            }
        }
    }
}
