//! Synthetic connections for what the recordings do not show: ack modes and settlement rules,
//! closes, trace context encodings, gaps, limits.

use super::build::*;
use super::{check_invariants, Replay, C, S};
use crate::protocol::{AmqpOperation, AmqpOutcome, Direction, L7Event, Request};

/// A scripted connection: each step is one segment of one side.
pub(super) struct Script {
    pub sides: [Vec<u8>; 2],
    pub plan: Vec<(usize, usize)>,
}

impl Script {
    /// A connection seen from its start: the protocol header, and connection.start from the
    /// broker (both streams are then trusted).
    pub fn new() -> Self {
        let start = method(
            0,
            10,
            10,
            &[
                &[0, 9, 0, 0, 0, 0][..],
                &[0, 0, 0, 5],
                b"PLAIN",
                &[0, 0, 0, 5],
                b"en_US",
            ]
            .concat(),
        );
        Self::midway().c(HEADER).s(&start)
    }

    /// Joined midway: no header, no connection.start.
    pub fn midway() -> Self {
        Self {
            sides: [Vec::new(), Vec::new()],
            plan: Vec::new(),
        }
    }

    pub fn push(mut self, side: usize, bytes: &[u8]) -> Self {
        self.sides[side].extend_from_slice(bytes);
        self.plan.push((side, bytes.len()));
        self
    }

    pub fn c(self, bytes: &[u8]) -> Self {
        self.push(C, bytes)
    }

    pub fn s(self, bytes: &[u8]) -> Self {
        self.push(S, bytes)
    }

    /// Replay the script (on copies that live as long as the test process: it is short).
    pub fn run(&self) -> Replay<'static> {
        let [c, s] = self
            .sides
            .clone()
            .map(|v| &*Box::leak(v.into_boxed_slice()));
        let mut r = Replay::new(c, s, Direction::Egress);
        for &(side, len) in &self.plan {
            r.deliver(side, len);
        }
        r
    }
}

/// A delivery of `body` on `channel` with tag `tag`, as the broker sends it.
pub(super) fn delivery(channel: u16, ctag: &[u8], tag: u64, body: &[u8]) -> Vec<u8> {
    [
        deliver(channel, ctag, tag, b"", b"q"),
        header(channel, body.len() as u64),
        body_frames(channel, body),
    ]
    .concat()
}

/// A publish of `body` on `channel`.
pub(super) fn published(channel: u16, body: &[u8]) -> Vec<u8> {
    [
        publish(channel, b"", b"q"),
        header(channel, body.len() as u64),
        body_frames(channel, body),
    ]
    .concat()
}

fn body_frames(channel: u16, body: &[u8]) -> Vec<u8> {
    if body.is_empty() {
        return Vec::new();
    }
    body.chunks(4096)
        .flat_map(|c| super::build::body(channel, c))
        .collect()
}

/// Outcome of every ended seq, in end order.
pub(super) fn outcomes(r: &Replay) -> Vec<(u64, AmqpOutcome)> {
    r.outcomes()
        .into_iter()
        .map(|(seq, _, o)| (seq, o))
        .collect()
}

#[test]
fn manual_acks_single_multiple_and_all_outstanding() {
    let mut s = Script::new().c(&consume(1, b"ct", false));
    for tag in 1..=6 {
        s = s.s(&delivery(1, b"ct", tag, format!("m{tag}").as_bytes()));
    }
    let s = s
        .c(&ack(1, 2, false))
        .c(&ack(1, 3, true)) // 1 and 3
        .c(&nack(1, 4, false, true))
        .c(&reject(1, 5, false))
        .c(&ack(1, 0, true)); // all outstanding: 6
    let mut r = s.run();
    assert_eq!(r.messages().len(), 6);
    use AmqpOutcome::*;
    let want = vec![
        (1, Acked),
        (0, Acked),
        (2, Acked),
        (3, Rejected { requeue: true }),
        (4, Rejected { requeue: false }),
        (5, Acked),
    ];
    assert_eq!(outcomes(&r), want);
    // Each ends when the segment carrying its settlement ended.
    let ack_segment = r.ctx_at(C, s.sides[C].len() - 1).last_ns;
    assert_eq!(r.outcomes().last().map(|e| e.1), Some(ack_segment));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    r.close();
    check_invariants(&r.events, true);
}

#[test]
fn nack_multiple_settles_everything_up_to_the_tag() {
    let s = Script::new().c(&consume(1, b"ct", false));
    let s = (1..=3).fold(s, |s, tag| s.s(&delivery(1, b"ct", tag, b"x")));
    let r = s.c(&nack(1, 2, true, false)).run();
    let rejected = AmqpOutcome::Rejected { requeue: false };
    assert_eq!(outcomes(&r), vec![(0, rejected), (1, rejected)]);
}

#[test]
fn no_ack_consumers_and_server_named_tags() {
    let consume_ok = method(1, 60, 21, &shortstr(b"amq.ctag-1"));
    let r = Script::new()
        .c(&consume(1, b"", true)) // the broker names it
        .c(&consume(1, b"mine", false))
        .s(&consume_ok)
        .s(&method(1, 60, 21, &shortstr(b"mine")))
        .s(&delivery(1, b"amq.ctag-1", 1, b"auto"))
        .s(&delivery(1, b"mine", 2, b"manual"))
        .run();
    assert_eq!(outcomes(&r), vec![(0, AmqpOutcome::Received)]);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}

#[test]
fn unknown_consumer_is_assumed_to_ack() {
    // Joined midway: the consume was never seen.
    let mut r = Script::midway()
        .s(&delivery(7, b"ct", 9, b"hello"))
        .c(&ack(7, 9, false))
        .run();
    assert_eq!(outcomes(&r), vec![(0, AmqpOutcome::Acked)]);
    r.close();
    check_invariants(&r.events, true);
}

#[test]
fn gets_follow_their_request() {
    let get = |no_ack: bool| {
        method(
            1,
            60,
            70,
            &[&[0, 0][..], &shortstr(b"q"), &[u8::from(no_ack)]].concat(),
        )
    };
    let get_ok = |tag: u64| {
        let args = [
            &tag.to_be_bytes()[..],
            &[0],
            &shortstr(b""),
            &shortstr(b"q"),
            &[0, 0, 0, 0],
        ]
        .concat();
        [method(1, 60, 71, &args), header(1, 1), body(1, b"g")].concat()
    };
    let get_empty = method(1, 60, 72, &shortstr(b""));
    let r = Script::new()
        .c(&get(false))
        .s(&get_ok(1))
        .c(&get(true))
        .s(&get_empty)
        .c(&get(true))
        .s(&get_ok(2))
        .c(&ack(1, 1, false))
        .run();
    let starts = r.messages();
    assert_eq!(starts.len(), 2);
    assert!(starts.iter().all(|s| s.3.operation == AmqpOperation::Get));
    assert_eq!(
        outcomes(&r),
        vec![(1, AmqpOutcome::Received), (0, AmqpOutcome::Acked)]
    );
}

#[test]
fn publisher_confirms_do_not_settle_deliveries() {
    // The broker's basic.ack confirms publish 1; delivery 1 on the same channel stays open.
    let r = Script::new()
        .c(&consume(1, b"ct", false))
        .s(&delivery(1, b"ct", 1, b"in"))
        .c(&published(1, b"out"))
        .s(&ack(1, 1, false))
        .s(&nack(1, 1, true, false))
        .run();
    assert_eq!(outcomes(&r), vec![(1, AmqpOutcome::Sent)]);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}

#[test]
fn closes_abort_what_is_unsettled() {
    let conn_close = method(
        0,
        10,
        50,
        &[&[0, 200][..], &shortstr(b"bye"), &[0, 0, 0, 0]].concat(),
    );
    let s = Script::new()
        .c(&consume(1, b"a", false))
        .c(&consume(2, b"b", false))
        .c(&consume(3, b"c", false));
    let s = s
        .s(&delivery(2, b"b", 1, b"x"))
        .s(&delivery(1, b"a", 1, b"y"))
        .s(&delivery(3, b"c", 1, b"z"));
    let s = s.s(&delivery(1, b"a", 2, b"w"));
    // The broker closes channel 3 (e.g. a precondition failed), then the client the connection.
    let r = s.s(&channel_close(3)).c(&conn_close).run();
    let ab = AmqpOutcome::Aborted;
    // Channel 3 first, then channels in ascending order, oldest first.
    assert_eq!(outcomes(&r), vec![(2, ab), (1, ab), (3, ab), (0, ab)]);
    let ends = r.outcomes();
    assert_eq!(ends[0].1, r.ctx_at(S, r.to[S] - 1).last_ns);
    assert_eq!(ends[1].1, r.ctx_at(C, r.to[C] - 1).last_ns);
}

#[test]
fn close_of_the_connection_aborts_at_its_time() {
    let mut r = Script::new()
        .c(&consume(1, b"a", false))
        .s(&delivery(1, b"a", 1, b"x"))
        .run();
    r.close();
    assert_eq!(
        r.outcomes(),
        vec![(0, r.close_ns.expect("closed"), AmqpOutcome::Aborted)]
    );
    // Nothing after the close.
    let before = r.events.len();
    r.close();
    assert_eq!(r.events.len(), before);
}

#[test]
fn recover_hands_back_every_unacked_delivery() {
    let s = Script::new().c(&consume(1, b"a", false));
    let s = (1..=2).fold(s, |s, t| s.s(&delivery(1, b"a", t, b"x")));
    let r = s.c(&method(1, 60, 110, &[1])).run();
    let back = AmqpOutcome::Rejected { requeue: true };
    assert_eq!(outcomes(&r), vec![(0, back), (1, back)]);
}

#[test]
fn channel_reopened_without_a_seen_close() {
    let r = Script::midway()
        .s(&delivery(1, b"a", 1, b"x"))
        .c(&method(1, 20, 10, &shortstr(b"")))
        .c(&ack(1, 1, false))
        .run();
    assert_eq!(outcomes(&r), vec![(0, AmqpOutcome::Aborted)]);
}

#[test]
fn channels_interleave_their_frames() {
    // Deliveries on two channels, frames interleaved: each channel assembles its own message.
    let (d1, d2) = (delivery(1, b"a", 1, b"one"), delivery(2, b"b", 1, b"two"));
    let split = |d: &[u8]| {
        let m = d.len() - (8 + 3) - (8 + 14);
        (d[..m].to_vec(), d[m..].to_vec())
    };
    let ((m1, c1), (m2, c2)) = (split(&d1), split(&d2));
    let r = Script::new().s(&m1).s(&m2).s(&c2).s(&c1).run();
    let starts = r.messages();
    assert_eq!(starts.len(), 2);
    assert_eq!((starts[0].3.channel, starts[0].3.body_size), (2, 3));
    assert_eq!((starts[1].3.channel, starts[1].3.body_size), (1, 3));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}

fn entry(key: &str, value: &[u8]) -> Vec<u8> {
    [&shortstr(key.as_bytes())[..], value].concat()
}

fn long(letter: u8, content: &[u8]) -> Vec<u8> {
    [
        &[letter][..],
        &(content.len() as u32).to_be_bytes(),
        content,
    ]
    .concat()
}

fn publish_with_table(table: &[u8]) -> Vec<u8> {
    [
        publish(1, b"", b"q"),
        header_with_table(1, 2, table),
        body(1, b"hi"),
    ]
    .concat()
}

fn trace(table: &[u8]) -> (Option<String>, Option<String>, usize) {
    let r = Script::new()
        .c(&publish_with_table(table))
        .c(&published(1, b"next"))
        .run();
    let starts = r.messages();
    assert_eq!(starts.len(), 2, "framing kept");
    (
        starts[0].3.traceparent.clone(),
        starts[0].3.tracestate.clone(),
        r.errors.len(),
    )
}

#[test]
fn trace_context_encodings() {
    let tp = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let tps = || Some(String::from_utf8_lossy(tp).into_owned());
    // Long string, byte array with UTF-8.
    assert_eq!(
        trace(&entry("traceparent", &long(b'S', tp))),
        (tps(), None, 0)
    );
    let t = [
        entry("tracestate", &long(b'x', b"a=b")),
        entry("traceparent", &long(b'x', tp)),
    ]
    .concat();
    assert_eq!(trace(&t), (tps(), Some("a=b".into()), 0));
    // Not strings, or not UTF-8: absent, no error.
    assert_eq!(
        trace(&entry("traceparent", b"I\x00\x00\x00\x01")),
        (None, None, 0)
    );
    assert_eq!(
        trace(&entry("traceparent", &long(b'x', b"\xff\xfe"))),
        (None, None, 0)
    );
    // First occurrence wins; other keys and case variants are not trace context.
    let t = [
        entry("traceparent", &long(b'S', tp)),
        entry("traceparent", &long(b'S', b"second")),
        entry("Traceparent", &long(b'S', b"x")),
    ]
    .concat();
    assert_eq!(trace(&t), (tps(), None, 0));
    // Absurdly long values are not trace context.
    assert_eq!(
        trace(&entry("tracestate", &long(b'S', &[b'a'; 9000]))),
        (None, None, 0)
    );
}

#[test]
fn undecodable_headers_lose_only_the_trace_context() {
    let tp = entry(
        "traceparent",
        &long(
            b'S',
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
    );
    // An unknown field type after the trace context: the whole table counts as absent.
    let t = [tp.clone(), entry("bad", b"U\x00\x01")].concat();
    assert_eq!(trace(&t), (None, None, 1));
    // Nesting beyond the limit.
    let mut deep = b"V".to_vec();
    for _ in 0..40 {
        deep = long(b'F', &entry("k", &deep));
    }
    assert_eq!(
        trace(&[tp.clone(), entry("deep", &deep)].concat()),
        (None, None, 1)
    );
    // A length that lies inside the table.
    assert_eq!(
        trace(&[tp, entry("s", b"S\x00\x00\x10\x00ab")].concat()),
        (None, None, 1)
    );
}

#[test]
fn properties_after_the_headers_table_survive_its_failure() {
    // headers (bit 13), correlation-id (bit 10), message-id (bit 7).
    let table = entry("bad", b"?");
    let props = [
        &[0x24, 0x80][..],
        &(table.len() as u32).to_be_bytes(),
        &table,
        &shortstr(b"corr"),
        &shortstr(b"mid"),
    ]
    .concat();
    let r = Script::new()
        .c(&[publish(1, b"", b"q"), header_raw(1, 0, &props)].concat())
        .run();
    let m = r.messages()[0].3.clone();
    assert_eq!(
        (m.correlation_id.as_deref(), m.message_id.as_deref()),
        (Some("corr"), Some("mid"))
    );
    assert_eq!(r.errors.len(), 1);
}

#[test]
fn every_property_in_flag_order() {
    let props = [
        &[0xff, 0xfc][..],
        &shortstr(b"text/plain"),
        &shortstr(b"gzip"),
        &[0, 0, 0, 0],
        &[2, 9],
        &shortstr(b"corr"),
        &shortstr(b"reply"),
        &shortstr(b"6000"),
        &shortstr(b"mid"),
        &1_700_000_000u64.to_be_bytes(),
        &shortstr(b"type"),
        &shortstr(b"guest"),
        &shortstr(b"app"),
        &shortstr(b"cluster"),
    ]
    .concat();
    let r = Script::new()
        .c(&[publish(1, b"ex", b"rk"), header_raw(1, 0, &props)].concat())
        .run();
    let m = r.messages()[0].3.clone();
    assert_eq!(
        (m.correlation_id.as_deref(), m.message_id.as_deref()),
        (Some("corr"), Some("mid"))
    );
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    // A truncated property list makes the header unusable: no message, one error.
    let r = Script::new()
        .c(&[
            publish(1, b"ex", b"rk"),
            header_raw(1, 0, &props[..props.len() - 3]),
        ]
        .concat())
        .run();
    assert_eq!((r.messages().len(), r.errors.len()), (0, 1));
}

#[test]
fn fingerprint_ignores_framing_but_not_content() {
    let body: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let fp = |frames: Vec<u8>| {
        let r = Script::new().c(&frames).run();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        r.messages()[0].3.fingerprint
    };
    let publish_in = |chunk: usize, body: &[u8], rk: &[u8]| {
        let mut v = [publish(1, b"", rk), header(1, body.len() as u64)].concat();
        for c in body.chunks(chunk) {
            v.extend(super::build::body(1, c));
        }
        v
    };
    let base = fp(publish_in(4096, &body, b"q"));
    assert_eq!(
        fp(publish_in(100, &body, b"q")),
        base,
        "frame size does not matter"
    );
    assert_ne!(fp(publish_in(4096, &body, b"q2")), base);
    let mut other = body.clone();
    other[1023] ^= 1;
    assert_ne!(
        fp(publish_in(4096, &other, b"q")),
        base,
        "the 1024th byte counts"
    );
    other = body.clone();
    other[1024] ^= 1;
    assert_eq!(
        fp(publish_in(4096, &other, b"q")),
        base,
        "the 1025th does not"
    );
    assert_ne!(
        fp(publish_in(4096, &body[..4999], b"q")),
        base,
        "the size does"
    );
    // Deliver and publish copies hash alike.
    let r = Script::new()
        .s(&[
            deliver(1, b"ct", 1, b"", b"q"),
            header(1, 5000),
            super::build::body(1, &body),
        ]
        .concat())
        .run();
    assert_eq!(r.messages()[0].3.fingerprint, base);
}

#[test]
fn events_are_amqp_requests() {
    let r = Script::new().c(&published(1, b"x")).run();
    assert!(
        matches!(&r.events[0], L7Event::RequestStart { request: Request::Amqp(m), .. } if m.operation == AmqpOperation::Publish)
    );
}
