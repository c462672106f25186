//! Hostile inputs against each bound on work and memory: what is kept and emitted stays
//! right, the cut is reported as `ParseError::Limited`, and the work measures the parser
//! exposes stay linear. Timings are in `benches/amqp.rs` (hostile section), never here.

use super::build::*;
use super::unit::{delivery, outcomes, published, Script};
use super::{check_invariants, Replay, C, S};
use crate::protocol::amqp::frame::{resync_point, Verdict, DEFAULT_FRAME_MAX, MAX_RESYNC_PAYLOAD};
use crate::protocol::amqp::session::{EVICT_BATCH, MAX_CHANNELS, MAX_UNACKED};
use crate::protocol::amqp::Peer;
use crate::protocol::{AmqpOutcome, Direction, ParseError};

fn limited(errors: &[ParseError], what: &str) -> usize {
    errors
        .iter()
        .filter(
            |e| matches!(e, ParseError::Limited { protocol: crate::protocol::ProtocolId::Amqp, what: w } if w.contains(what)),
        )
        .count()
}

/// A heartbeat (a resync point), then a content header claiming 4 GiB: one loss of sync per
/// 15 bytes.
fn sync_storm(n: usize) -> Vec<u8> {
    [
        &[8, 0, 0, 0, 0, 0, 0, 0xCE][..],
        &[2, 0, 0, 0xff, 0xff, 0xff, 0xff],
    ]
    .concat()
    .repeat(n)
}

#[test]
fn losing_sync_visits_only_channels_that_gained_state() {
    // A delivery awaiting its ack on every channel, then the client loses sync 1000 times,
    // then the broker does.
    let deliveries: Vec<u8> = (1..=MAX_CHANNELS as u16)
        .flat_map(|ch| delivery(ch, b"a", 1, b""))
        .collect();
    let storm = sync_storm(1000);
    let c = [storm.clone(), published(1, b"after")].concat();
    let s = [deliveries.clone(), storm.clone()].concat();
    let mut r = Replay::new(&c, &s, Direction::Egress);
    r.deliver(S, deliveries.len());
    r.deliver(C, c.len());
    // Every delivery was aborted by the first loss, once; the publish after the storm is found.
    let aborted = outcomes(&r)
        .iter()
        .filter(|(_, o)| *o == AmqpOutcome::Aborted)
        .count();
    assert_eq!(aborted, MAX_CHANNELS);
    assert_eq!(r.messages().len(), MAX_CHANNELS + 1);
    assert_eq!(r.conn.session.unacked(), 0);
    // One error per broken frame.
    assert_eq!(r.errors.len(), 1000, "{:?}", &r.errors[..3]);
    // The first loss visited the 2048 channels holding deliveries; the 999 after it none.
    let (visited, dirty) = r.conn.session.sync_work();
    assert_eq!(visited, MAX_CHANNELS as u64);
    // Marked since: channel 1 only, by the publish after the storm.
    assert_eq!(dirty[Peer::Client as usize], 1);
    // The broker's 1000 losses visit each channel that had content from it at most once.
    r.deliver(S, storm.len());
    assert_eq!(r.errors.len(), 2000);
    assert_eq!(r.conn.session.channel_count(), MAX_CHANNELS);
    let (after, _) = r.conn.session.sync_work();
    assert!(
        after - visited <= MAX_CHANNELS as u64,
        "{visited} then {after}"
    );
    r.close();
    check_invariants(&r.events, true);
}

#[test]
fn dirty_channel_lists_stay_bounded_without_losses() {
    // Channels opened, given a request and closed, over and over: no loss of sync ever
    // consumes the marks, so the lists must compact themselves.
    let mut c = HEADER.to_vec();
    for round in 0..3u16 {
        for ch in 1..=MAX_CHANNELS as u16 {
            c.extend(method(ch, 20, 10, &shortstr(b""))); // channel.open
            c.extend(method(
                ch,
                60,
                70,
                &[&[0, 0][..], &shortstr(b"q"), &[round as u8 & 1]].concat(),
            )); // basic.get
            c.extend(channel_close(ch));
        }
    }
    let r = Script::midway().c(&c).run();
    assert!(r.errors.is_empty(), "{:?}", &r.errors[..1]);
    let (_, dirty) = r.conn.session.sync_work();
    assert!(
        dirty.iter().all(|&n| n <= 2 * MAX_CHANNELS + 1),
        "{dirty:?}"
    );
}

#[test]
fn connection_wide_unacked_bound_evicts_in_reported_batches() {
    // 17 deliveries awaiting acks on each of 2048 channels: 34816 > MAX_UNACKED.
    let mut deliveries = Vec::new();
    for tag in 1..=17u64 {
        for ch in 1..=MAX_CHANNELS as u16 {
            deliveries.extend(delivery(ch, b"a", tag, b""));
        }
    }
    let mut r = Script::midway().s(&deliveries).run();
    let held = r.conn.session.unacked();
    assert!(
        (MAX_UNACKED - EVICT_BATCH..=MAX_UNACKED).contains(&held),
        "{held}"
    );
    let total = 17 * MAX_CHANNELS;
    let aborted = outcomes(&r).len();
    assert_eq!(aborted, total - held);
    // One report per batch (each batch makes room for at least one delivery).
    let reports = limited(&r.errors, "MAX_UNACKED");
    assert!(reports >= 1 && reports <= total - MAX_UNACKED, "{reports}");
    assert_eq!(reports, r.errors.len());
    r.close();
    check_invariants(&r.events, true);
}

#[test]
fn per_channel_and_request_bounds_are_reported() {
    // 70 basic.gets never answered on one channel: the oldest 6 are forgotten.
    let mut s = Script::new();
    for _ in 0..70 {
        s = s.c(&method(
            1,
            60,
            70,
            &[&[0, 0][..], &shortstr(b"q"), &[0]].concat(),
        ));
    }
    let r = s.run();
    assert_eq!(limited(&r.errors, "MAX_FIFO"), 6, "{:?}", r.errors);
    assert_eq!(r.errors.len(), 6);
    // Messages on channels past the table's bound: reported as a bound, not as malformed.
    let deliveries: Vec<u8> = (1..=MAX_CHANNELS as u16 + 3)
        .flat_map(|ch| delivery(ch, b"a", 1, b"x"))
        .collect();
    let r = Script::new().s(&deliveries).run();
    assert_eq!(limited(&r.errors, "MAX_CHANNELS"), 3, "{:?}", r.errors);
}

/// A connection.start-ok frame on channel 0 whose client-properties table has `entries`
/// one-byte-key void entries.
fn start_ok(entries: usize) -> Vec<u8> {
    let table: Vec<u8> = (0..entries).flat_map(|_| [1, b'k', b'V']).collect();
    let args = [
        &(table.len() as u32).to_be_bytes()[..],
        &table,
        &shortstr(b"PLAIN"),
        &[0, 0, 0, 0],
        &shortstr(b"en_US"),
    ]
    .concat();
    method(0, 10, 11, &args)
}

#[test]
fn resync_decodes_no_method_frame_larger_than_its_bound() {
    let limit = crate::protocol::amqp::frame::payload_limit(DEFAULT_FRAME_MAX);
    let fits = (MAX_RESYNC_PAYLOAD as usize - 40) / 3;
    let small = [start_ok(fits), vec![8]].concat();
    assert_eq!(
        resync_point(&small, Some(Peer::Client), limit),
        Verdict::Yes
    );
    // Past the bound a candidate is rejected from its header alone: its table is not walked.
    let big = [start_ok(MAX_RESYNC_PAYLOAD as usize / 3 + 10), vec![8]].concat();
    assert_eq!(resync_point(&big, Some(Peer::Client), limit), Verdict::No);
    assert_eq!(
        resync_point(&big[..11], Some(Peer::Client), limit),
        Verdict::No
    );
    // In a stream: garbage, the big frame (skipped by resync), then a publish that is found.
    let c = [
        &b"\x05junk"[..],
        &big[..big.len() - 1],
        &published(1, b"found"),
    ]
    .concat();
    let r = Script::midway().c(&c).run();
    let bodies: Vec<u64> = r.messages().iter().map(|m| m.3.body_size).collect();
    assert_eq!(bodies, vec![5]);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let _ = C;
}

#[test]
fn consumer_tags_are_looked_up_exactly_and_bounded() {
    // 1030 consumers on one channel, 255-byte tags differing in their last bytes, no-ack for
    // the even ones: each delivery gets its own consumer's ack mode; past MAX_CONSUMERS the
    // tag is not kept (reported) and its deliveries are assumed to need an ack.
    let tag = |i: u16| -> Vec<u8> {
        let mut t = vec![b't'; 253];
        t.extend_from_slice(&i.to_be_bytes());
        t
    };
    let n = 1030u16;
    let mut s = Script::new();
    for i in 0..n {
        s = s.c(&consume(1, &tag(i), i % 2 == 0));
    }
    for i in 0..n {
        s = s.s(&delivery(1, &tag(i), u64::from(i) + 1, b""));
    }
    let r = s.run();
    assert_eq!(
        limited(&r.errors, "MAX_CONSUMERS"),
        6,
        "{:?}",
        &r.errors[..1]
    );
    let received: Vec<u64> = outcomes(&r)
        .into_iter()
        .filter(|(_, o)| *o == AmqpOutcome::Received)
        .map(|(seq, _)| seq)
        .collect();
    let want: Vec<u64> = (0..1024u64).filter(|i| i % 2 == 0).collect();
    assert_eq!(received, want);
    assert_eq!(r.conn.session.unacked(), usize::from(n) - want.len());
}
