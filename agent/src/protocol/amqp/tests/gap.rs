//! Records lost to a full ring buffer (`Parser::gap`): both streams lose sync. Deliveries
//! whose settlement may be in the hole end aborted, messages being assembled are dropped, and
//! what follows the hole is parsed from the next trustworthy frame.

use super::build::*;
use super::unit::{delivery, published, Script};
use super::{check_invariants, Replay, C, S};
use crate::protocol::{AmqpOutcome, Direction};

/// `script`'s segments, with `lost` (client bytes, broker bytes) after segment `at` never
/// arriving.
fn run(script: &Script, at: usize, lost: (&[u8], &[u8])) -> Replay<'static> {
    let mut sides = script.sides.clone();
    let mut before = [0usize; 2];
    for &(side, len) in &script.plan[..at] {
        before[side] += len;
    }
    for (side, bytes) in [(C, lost.0), (S, lost.1)] {
        let tail = sides[side].split_off(before[side]);
        sides[side].extend_from_slice(bytes);
        sides[side].extend(tail);
    }
    let [c, s] = sides.map(|v| &*Box::leak(v.into_boxed_slice()));
    let mut r = Replay::new(c, s, Direction::Egress);
    for (i, &(side, len)) in script.plan.iter().enumerate() {
        if i == at {
            assert!(r.lost([lost.0.len(), lost.1.len()]), "AMQP resynchronises");
        }
        r.deliver(side, len);
        check_invariants(&r.events, false);
    }
    r
}

#[test]
fn unsettled_deliveries_end_aborted_and_later_ones_are_exact() {
    let mut s = Script::new().c(&consume(1, b"ct", false));
    for tag in 1..=3 {
        s = s.s(&delivery(1, b"ct", tag, format!("m{tag}").as_bytes()));
    }
    s = s.c(&ack(1, 1, false));
    let at = s.plan.len();
    // Lost: delivery 4 and the client's acks of 2 and 4.
    let lost_c = [ack(1, 2, false), ack(1, 4, false)].concat();
    let lost_s = delivery(1, b"ct", 4, b"m4");
    for tag in 5..=6 {
        s = s.s(&delivery(1, b"ct", tag, format!("m{tag}").as_bytes()));
    }
    s = s
        .c(&ack(1, 5, false))
        .c(&ack(1, 6, false))
        .c(&published(1, b"after"));
    let mut r = run(&s, at, (&lost_c, &lost_s));
    let bodies: Vec<_> = r.messages().iter().map(|m| m.3.body_size).collect();
    // m1..m3 before the hole, m5 and m6 after it, and the publish: m4 was never seen.
    assert_eq!(bodies, [2, 2, 2, 2, 2, 5], "{:?}", r.messages());
    use AmqpOutcome::*;
    let ends: Vec<_> = r
        .outcomes()
        .into_iter()
        .map(|(seq, _, o)| (seq, o))
        .collect();
    // Delivery 1 acked before the hole; 2 and 3 unsettled at it: aborted (the ack of 2 was
    // in the hole); 5 and 6 acked after it, by their own tags.
    assert_eq!(
        ends[..4],
        [(0, Acked), (1, Aborted), (2, Aborted), (3, Acked)]
    );
    assert!(ends.contains(&(4, Acked)), "{ends:?}");
    r.close();
    check_invariants(&r.events, true);
}

#[test]
fn a_message_cut_by_the_hole_is_dropped_not_reported_whole() {
    let s = Script::new().c(&consume(1, b"ct", true));
    let big = vec![b'b'; 10_000];
    let whole = delivery(1, b"ct", 1, &big);
    // The delivery's method, header and first body frame arrive; the rest is lost.
    let cut = whole.len() - 6000;
    let s = s.s(&whole[..cut]);
    let at = s.plan.len();
    let s = s.s(&delivery(1, b"ct", 2, b"small"));
    let r = run(&s, at, (&[], &whole[cut..]));
    let sizes: Vec<_> = r.messages().iter().map(|m| m.3.body_size).collect();
    assert_eq!(sizes, [5], "{:?}", r.messages());
}
