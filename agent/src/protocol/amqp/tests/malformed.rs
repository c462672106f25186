//! Broken input, capture gaps and limits: errors are reported once, framing recovers at the
//! next trustworthy frame, nothing wrong is reported, memory stays bounded.

use super::build::*;
use super::unit::{delivery, outcomes, published, Script};
use super::{check_invariants, Replay, C, S};
use crate::protocol::amqp::frame::MAX_BUFFERED_PAYLOAD;
use crate::protocol::amqp::session::{
    EVICT_BATCH, MAX_CHANNELS, MAX_UNACKED, MAX_UNACKED_PER_CHANNEL,
};
use crate::protocol::{AmqpOutcome, Direction};

/// The last message of a script, after some damage, must still be reported.
fn recovers(damage: &[u8], errors: usize) {
    let s = Script::new()
        .c(&published(1, b"before"))
        .c(damage)
        .c(&published(1, b"after"));
    let mut r = s.run();
    let bodies: Vec<u64> = r.messages().iter().map(|s| s.3.body_size).collect();
    assert_eq!(bodies, vec![6, 5], "damage {damage:02x?}: {:?}", r.errors);
    assert_eq!(
        r.errors.len(),
        errors,
        "damage {damage:02x?}: {:?}",
        r.errors
    );
    r.close();
    check_invariants(&r.events, true);
}

#[test]
fn bad_frame_end_resyncs() {
    let mut m = publish(1, b"", b"q");
    let last = m.len() - 1;
    m[last] = 0;
    recovers(&m, 1);
    // A body frame whose end is wrong: the message is dropped.
    let mut b = [publish(1, b"", b"q"), header(1, 3), body(1, b"abc")].concat();
    let last = b.len() - 1;
    b[last] = 0x00;
    recovers(&b, 1);
}

#[test]
fn sizes_that_lie() {
    // Beyond the default frame-max.
    recovers(b"\x01\x00\x01\x00\x10\x00\x00", 1);
    // A method frame claiming more bytes than it has: its frame-end is not where it says.
    let mut m = publish(1, b"", b"q");
    m[6] += 3;
    recovers(&m, 1);
    // A shortstr length running past the frame: a method error, framing intact.
    let args = [&[0, 0][..], &[40], b"ex", &shortstr(b"q"), &[0]].concat();
    recovers(&method(1, 60, 40, &args), 1);
}

#[test]
fn negotiated_frame_max_is_enforced() {
    let r = Script::new()
        .c(&tune_ok(4096))
        .c(&published(1, &[7u8; 4089]))
        .c(&published(1, b"ok"))
        .run();
    // 4089 + 8 > 4096: the body frame is an error, the stream resyncs on the next publish.
    assert_eq!(r.messages().len(), 1);
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    // frame-max 0 is unlimited (capped): a 300 kB body frame is fine.
    let big = vec![1u8; 300_000];
    let frames = [
        publish(1, b"", b"q"),
        header(1, big.len() as u64),
        body(1, &big),
    ]
    .concat();
    let r = Script::new().c(&tune_ok(0)).c(&frames).run();
    assert_eq!((r.messages().len(), r.errors.len()), (1, 0));
}

#[test]
fn unknown_frame_type() {
    recovers(&frame(5, 1, b"what"), 1);
}

#[test]
fn unknown_methods_are_skipped_silently() {
    // Unknown ids, with content frames after them: framing-valid, nothing to report.
    let m = [
        method(1, 60, 41, b"\x00\x01"),
        header(1, 3),
        body(1, b"abc"),
        method(1, 99, 1, b""),
    ]
    .concat();
    recovers(&m, 0);
}

#[test]
fn content_where_it_cannot_be() {
    // Channel 0 carries no content.
    recovers(&[header(0, 1), body(0, b"x")].concat(), 2);
    // Content without a method, on a trusted stream.
    recovers(&[header(1, 1), body(1, b"x")].concat(), 1);
    // A body larger than declared.
    recovers(
        &[publish(1, b"", b"q"), header(1, 2), body(1, b"abc")].concat(),
        1,
    );
    // A body frame before the header; a method before the body is complete.
    recovers(&[publish(1, b"", b"q"), body(1, b"abc")].concat(), 1);
    recovers(
        &[publish(1, b"", b"q"), header(1, 9), body(1, b"abc")].concat(),
        1,
    );
    // A content header of another class.
    let h = frame(
        2,
        1,
        &[&[0, 50, 0, 0][..], &1u64.to_be_bytes(), &[0, 0]].concat(),
    );
    recovers(&[publish(1, b"", b"q"), h, body(1, b"x")].concat(), 1);
    // A heartbeat on a channel.
    recovers(&frame(8, 1, b""), 1);
}

#[test]
fn methods_from_the_wrong_peer() {
    // The client cannot deliver; its content is swallowed quietly.
    recovers(&delivery(1, b"c", 1, b"x"), 1);
    // basic.publish from the broker.
    let r = Script::new().s(&published(1, b"x")).run();
    assert_eq!((r.messages().len(), r.errors.len()), (0, 1));
    // Connection-class methods off channel 0.
    recovers(
        &tune_ok(4096)[..]
            .iter()
            .copied()
            .enumerate()
            .map(|(i, b)| if i == 2 { 1 } else { b })
            .collect::<Vec<u8>>(),
        1,
    );
}

#[test]
fn oversized_frames_are_skipped_as_they_stream() {
    // Unlimited frame-max; a content header bigger than we hold: skipped without buffering
    // (the replay asserts the unconsumed bytes stay bounded), its body skipped quietly.
    let props = [&[0x20, 0][..], &(MAX_BUFFERED_PAYLOAD + 100).to_be_bytes()].concat();
    let mut table = Vec::new();
    while table.len() < MAX_BUFFERED_PAYLOAD as usize + 100 {
        table.extend([1, b'k', b'V']);
    }
    table.truncate(MAX_BUFFERED_PAYLOAD as usize + 100);
    let h = header_raw(1, 1, &[props, table].concat());
    let s = Script::new()
        .c(&tune_ok(0))
        .c(&[publish(1, b"", b"q"), h, body(1, b"x")].concat())
        .c(&published(1, b"after"));
    // Deliver it in 1000-byte pieces, as reads would.
    let mut r = Replay::new(&s.sides[C], &s.sides[S], Direction::Egress);
    let mut left = s.sides[C].len();
    while left > 0 {
        let n = left.min(1000);
        r.deliver(C, n);
        left -= n;
    }
    r.deliver(S, s.sides[S].len());
    assert_eq!(r.messages().len(), 1, "{:?}", r.errors);
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
}

#[test]
fn gaps_inside_bodies_are_absorbed() {
    let body_bytes: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    let msg = [publish(1, b"", b"q"), header(1, 3000), body(1, &body_bytes)].concat();
    let body_at = msg.len() - 1 - 3000;
    let s = Script::new().c(&msg);
    let fp_full = s.run().messages()[0].3.fingerprint;
    let (c, _) = (&s.sides[C], ());
    let header_len = c.len() - msg.len();
    let start = header_len + body_at;
    // (gap offset in the body, gap length, fingerprint equal to the full capture?)
    for (off, len, same) in [
        (1500, 1000, true),
        (10, 100, false),
        (0, 3000, false),
        (2000, 1001, true),
    ] {
        let mut r = Replay::new(c, &[], Direction::Egress);
        r.deliver(C, start + off);
        assert!(r.gap(C, len), "gap at {off}+{len} inside the body");
        let rest = c.len() - r.to[C];
        if rest > 0 {
            r.deliver(C, rest);
        }
        let starts = r.messages();
        assert_eq!(starts.len(), 1, "gap at {off}+{len}");
        assert_eq!(starts[0].3.body_size, 3000);
        assert_eq!(
            starts[0].3.fingerprint == fp_full,
            same,
            "gap at {off}+{len}"
        );
        assert!(r.errors.is_empty());
    }
}

#[test]
fn gaps_outside_bodies_resync() {
    let s = Script::new()
        .c(&consume(1, b"a", false))
        .s(&delivery(1, b"a", 1, b"x"))
        .s(&delivery(1, b"a", 2, b"y"))
        .c(&published(1, b"lost"))
        .c(&published(1, b"after"));
    let after = published(1, b"after").len();
    let lost = published(1, b"lost").len();
    let mut r = Replay::new(&s.sides[C], &s.sides[S], Direction::Egress);
    let cut = s.sides[C].len() - after - lost;
    r.deliver(C, cut);
    r.deliver(S, s.sides[S].len());
    // A gap on the broker's side changes nothing for unsettled deliveries.
    assert!(!r.gap(S, 10));
    assert_eq!(r.conn.session.unacked(), 2);
    // The first bytes of a publish go missing: no event for it; the client's lost bytes may
    // have held acks, so both deliveries are aborted; the next publish is found again.
    r.deliver(C, 5);
    assert!(!r.gap(C, lost - 5));
    r.deliver(C, after);
    assert_eq!(
        outcomes(&r),
        vec![
            (0, AmqpOutcome::Aborted),
            (1, AmqpOutcome::Aborted),
            (2, AmqpOutcome::Sent)
        ]
    );
    assert_eq!(r.messages()[2].3.body_size, 5);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}

#[test]
fn unacked_deliveries_are_bounded() {
    let mut s = Script::new().c(&consume(1, b"a", false));
    let n = MAX_UNACKED_PER_CHANNEL as u64 + 5;
    let mut deliveries = Vec::new();
    for tag in 1..=n {
        deliveries.extend(delivery(1, b"a", tag, b""));
    }
    s = s.s(&deliveries);
    let r = s.run();
    assert_eq!(r.conn.session.unacked(), MAX_UNACKED_PER_CHANNEL);
    let aborted = outcomes(&r);
    assert_eq!(
        aborted,
        (0..5)
            .map(|seq| (seq, AmqpOutcome::Aborted))
            .collect::<Vec<_>>()
    );
    // Across channels, the connection-wide bound holds too.
    let mut deliveries = Vec::new();
    for ch in 1..=4u16 {
        for tag in 1..=(MAX_UNACKED as u64 / 3) {
            deliveries.extend(delivery(ch, b"a", tag, b""));
        }
    }
    let r = Script::midway().s(&deliveries).run();
    // Evicted in batches (see `EVICT_BATCH`): never more than the bound, at most a batch less.
    let held = r.conn.session.unacked();
    assert!(
        (MAX_UNACKED - EVICT_BATCH..=MAX_UNACKED).contains(&held),
        "{held}"
    );
}

#[test]
fn channels_are_bounded() {
    let mut deliveries = Vec::new();
    for ch in 1..=(MAX_CHANNELS as u16 + 10) {
        deliveries.extend(delivery(ch, b"a", 1, b"x"));
    }
    let r = Script::new().s(&deliveries).run();
    assert_eq!(r.conn.session.channel_count(), MAX_CHANNELS);
    assert_eq!(r.messages().len(), MAX_CHANNELS);
    // One error per untracked message, none for its content frames.
    assert_eq!(
        r.errors.len(),
        10,
        "{:?}",
        &r.errors[..r.errors.len().min(3)]
    );
}

#[test]
fn other_amqp_versions_and_garbage_make_nothing() {
    for first in [
        &b"AMQP\x00\x01\x00\x00"[..],
        b"AMQP\x03\x01\x00\x00",
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00",
    ] {
        let c = [first, &published(1, b"x")[..]].concat();
        let mut r = Replay::new(&c, &[], Direction::Egress);
        r.deliver(C, first.len());
        assert!(r.messages().is_empty());
        // Joined "midway" as far as the parser knows: the publish after the junk is found.
        r.deliver(C, c.len() - first.len());
        assert_eq!(r.messages().len(), 1);
        assert!(r.errors.is_empty());
    }
}

#[test]
fn resync_ignores_lookalikes_in_bodies() {
    // A body holding a perfect basic.publish frame: while the framing holds it is just body.
    let inner = published(1, b"fake");
    let msg = [
        publish(1, b"", b"q"),
        header(1, inner.len() as u64),
        body(1, &inner),
    ]
    .concat();
    let r = Script::new().c(&msg).run();
    assert_eq!(r.messages().len(), 1);
    assert_eq!(r.messages()[0].3.body_size, inner.len() as u64);
    // Only broken framing makes resync look inside.
    let _ = S;
}
