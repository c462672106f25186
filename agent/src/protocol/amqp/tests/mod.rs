//! Tests of the AMQP 0-9-1 parser: a replay harness that drives [`AmqpConn`] the way the
//! connection layer does, the recorded fixtures (`testdata/amqp`, see `record.py` there) with
//! their golden events, a frame builder for synthetic input, and the checks shared by the test
//! files.

mod bounds;
mod detect;
mod fixtures;
mod fuzz;
mod gap;
mod malformed;
mod unit;

use std::collections::HashMap;

use super::AmqpConn;
use crate::protocol::{AmqpMessage, AmqpOperation, AmqpOutcome, L7Event, Outcome, Request};

/// Client→broker side.
pub(super) const C: usize = 0;
/// Broker→client side.
pub(super) const S: usize = 1;

/// The replay driver (see `protocol::testkit`) over this parser.
pub(super) type Replay<'a> = crate::protocol::testkit::Replay<'a, AmqpConn>;

/// AMQP-typed views of what the replay produced.
impl<'a> Replay<'a> {
    pub fn messages(&self) -> Vec<(u64, u32, u64, &AmqpMessage)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                L7Event::RequestStart {
                    seq,
                    tid,
                    goroutine: _,
                    start_ns,
                    request: Request::Amqp(m),
                } => Some((*seq, *tid, *start_ns, m)),
                L7Event::RequestStart { .. } => panic!("not an AMQP request: {e:?}"),
                _ => None,
            })
            .collect()
    }

    pub fn outcomes(&self) -> Vec<(u64, u64, AmqpOutcome)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                L7Event::ExchangeEnd {
                    seq,
                    end_ns,
                    outcome: Outcome::Amqp(o),
                } => Some((*seq, *end_ns, *o)),
                L7Event::ExchangeEnd { .. } => panic!("not an AMQP outcome: {e:?}"),
                _ => None,
            })
            .collect()
    }
}

/// A golden start: the message and where its bytes are.
#[derive(Debug, Clone)]
pub(super) struct GoldenStart {
    pub seq: u64,
    pub side: usize,
    /// First byte of the method frame.
    pub at: usize,
    /// Frame-end octet of the frame completing the message.
    pub done_at: usize,
    pub message: AmqpMessage,
    /// Names the message (its body's hash): equal labels, equal messages.
    pub label: String,
}

#[derive(Debug, Clone)]
pub(super) struct GoldenEnd {
    pub seq: u64,
    /// Side and offset of the frame-end octet of the frame that ended it; `None`: the close.
    pub at: Option<(usize, usize)>,
    pub outcome: AmqpOutcome,
}

pub(super) struct Fixture {
    pub name: &'static str,
    pub c2s: &'static [u8],
    pub s2c: &'static [u8],
    /// Reads as the recording proxy saw them: (side, length).
    pub segs: Vec<(usize, usize)>,
    pub starts: Vec<GoldenStart>,
    pub ends: Vec<GoldenEnd>,
}

macro_rules! fixture {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!("../../testdata/amqp/", $name, ".c2s")).as_slice(),
            include_bytes!(concat!("../../testdata/amqp/", $name, ".s2c")).as_slice(),
            include_str!(concat!("../../testdata/amqp/", $name, ".segs")),
            include_str!(concat!("../../testdata/amqp/", $name, ".golden")),
        )
    };
}

type RawFixture = (
    &'static str,
    &'static [u8],
    &'static [u8],
    &'static str,
    &'static str,
);

const RAW_FIXTURES: [RawFixture; 8] = [
    fixture!("publisher"),
    fixture!("consumer_manual"),
    fixture!("publisher_confirms"),
    fixture!("consumer_autoack"),
    fixture!("getter"),
    fixture!("large_publish"),
    fixture!("large_consume"),
    fixture!("channels"),
];

pub(super) fn fixtures() -> Vec<Fixture> {
    RAW_FIXTURES
        .iter()
        .map(|&(name, c2s, s2c, segs, golden)| load(name, c2s, s2c, segs, golden))
        .collect()
}

pub(super) fn fixture(name: &str) -> Fixture {
    fixtures()
        .into_iter()
        .find(|f| f.name == name)
        .expect("no such fixture")
}

fn side(s: &str) -> usize {
    match s {
        "c" => C,
        "s" => S,
        _ => panic!("bad side {s}"),
    }
}

fn load(
    name: &'static str,
    c2s: &'static [u8],
    s2c: &'static [u8],
    segs: &str,
    golden: &str,
) -> Fixture {
    let segs = segs
        .lines()
        .map(|l| {
            let (s, len) = l.split_once(' ').expect("segs line");
            (side(s), len.parse().expect("segs length"))
        })
        .collect();
    let (mut starts, mut ends) = (Vec::new(), Vec::new());
    for line in golden.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("golden line is JSON");
        let num = |k: &str| {
            v[k].as_u64()
                .unwrap_or_else(|| panic!("golden {k} in {line}"))
        };
        let opt = |k: &str| v[k].as_str().map(str::to_owned);
        match v["ev"].as_str() {
            Some("start") => starts.push(GoldenStart {
                seq: num("seq"),
                side: side(v["side"].as_str().expect("side")),
                at: num("at") as usize,
                done_at: num("done_at") as usize,
                label: opt("label").expect("label"),
                message: AmqpMessage {
                    operation: match v["op"].as_str() {
                        Some("publish") => AmqpOperation::Publish,
                        Some("deliver") => AmqpOperation::Deliver,
                        Some("get") => AmqpOperation::Get,
                        op => panic!("bad op {op:?}"),
                    },
                    channel: num("channel") as u16,
                    exchange: opt("exchange").expect("exchange"),
                    routing_key: opt("routing_key").expect("routing_key"),
                    delivery_tag: v["delivery_tag"].as_u64(),
                    redelivered: v["redelivered"].as_bool().expect("redelivered"),
                    message_id: opt("message_id"),
                    correlation_id: opt("correlation_id"),
                    traceparent: opt("traceparent"),
                    tracestate: opt("tracestate"),
                    body_size: num("body_size"),
                    fingerprint: num("fingerprint"),
                },
            }),
            Some("end") => ends.push(GoldenEnd {
                seq: num("seq"),
                at: v["at"]
                    .as_u64()
                    .map(|at| (side(v["side"].as_str().expect("side")), at as usize)),
                outcome: match v["outcome"].as_str() {
                    Some("sent") => AmqpOutcome::Sent,
                    Some("acked") => AmqpOutcome::Acked,
                    Some("received") => AmqpOutcome::Received,
                    Some("aborted") => AmqpOutcome::Aborted,
                    Some("rejected") => AmqpOutcome::Rejected {
                        requeue: v["requeue"].as_bool().expect("requeue"),
                    },
                    o => panic!("bad outcome {o:?}"),
                },
            }),
            _ => panic!("bad golden line {line}"),
        }
    }
    Fixture {
        name,
        c2s,
        s2c,
        segs,
        starts,
        ends,
    }
}

/// Compare a replay's events with the golden ones whose triggering bytes were delivered.
/// Starts are matched per side in order (the seq order across sides depends on how the two
/// sides were interleaved); ends are compared through that matching. With `exact_seq`, seqs
/// must equal the golden ones too (the replay followed the recorded interleaving).
/// Returns Rust seq → golden seq.
pub(super) fn check_against_golden(
    f: &Fixture,
    r: &Replay,
    exact_seq: bool,
    what: &str,
) -> HashMap<u64, u64> {
    let mut map = HashMap::new();
    for s in [C, S] {
        let got: Vec<_> = r
            .messages()
            .into_iter()
            .filter(|(_, _, _, m)| side_of(m) == s)
            .collect();
        let want: Vec<&GoldenStart> = f
            .starts
            .iter()
            .filter(|g| g.side == s && g.done_at < r.to[s])
            .collect();
        assert_eq!(
            got.len(),
            want.len(),
            "{}: {what}: side {s} starts: {got:#?}",
            f.name
        );
        for ((seq, tid, start_ns, m), g) in got.into_iter().zip(want) {
            let ctx = r.ctx_at(s, g.at);
            assert_eq!(
                (tid, start_ns, m),
                (ctx.tid, ctx.first_ns, &g.message),
                "{}: {what}: golden seq {}",
                f.name,
                g.seq
            );
            if exact_seq {
                assert_eq!(seq, g.seq, "{}: {what}: seq", f.name);
            }
            map.insert(seq, g.seq);
        }
    }
    let mut got: Vec<(u64, u64, AmqpOutcome)> = r
        .outcomes()
        .into_iter()
        .map(|(seq, end_ns, o)| (*map.get(&seq).expect("end of an unknown seq"), end_ns, o))
        .collect();
    let mut want: Vec<(u64, u64, AmqpOutcome)> = f
        .ends
        .iter()
        .filter_map(|e| {
            let (s, at) = e.at?;
            (at < r.to[s] && map.values().any(|&g| g == e.seq))
                .then(|| (e.seq, r.ctx_at(s, at).last_ns, e.outcome))
        })
        .collect();
    if let Some(close) = r.close_ns {
        // Whatever was still open at the close is aborted then.
        for &g in map.values() {
            if !want.iter().any(|w| w.0 == g) {
                want.push((g, close, AmqpOutcome::Aborted));
            }
        }
    }
    got.sort_by_key(|e| e.0);
    want.sort_by_key(|e| e.0);
    assert_eq!(got, want, "{}: {what}: ends", f.name);
    map
}

fn side_of(m: &AmqpMessage) -> usize {
    match m.operation {
        AmqpOperation::Publish => C,
        _ => S,
    }
}

/// Invariants every event sequence must satisfy, whatever the input: starts numbered 0, 1,
/// 2, ...; an end only for a started seq, at most once; after `close` every start has its end;
/// publishes end `Sent` at once.
pub(super) fn check_invariants(events: &[L7Event], closed: bool) {
    let mut started = 0u64;
    let mut ended = std::collections::HashSet::new();
    let mut publishes = std::collections::HashSet::new();
    for e in events {
        match e {
            L7Event::RequestStart { seq, request, .. } => {
                assert_eq!(*seq, started, "starts out of order: {events:#?}");
                started += 1;
                if let Request::Amqp(m) = request {
                    if m.operation == AmqpOperation::Publish {
                        publishes.insert(*seq);
                    }
                }
            }
            L7Event::ExchangeEnd { seq, outcome, .. } => {
                assert!(*seq < started, "end of seq {seq} before its start");
                assert!(ended.insert(*seq), "seq {seq} ended twice");
                let sent = *outcome == Outcome::Amqp(AmqpOutcome::Sent);
                assert_eq!(sent, publishes.contains(seq), "{e:?}");
            }
        }
    }
    if closed {
        assert_eq!(ended.len() as u64, started, "close left exchanges open");
    }
}

/// Builds frames for synthetic tests.
pub(super) mod build {
    pub const HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";

    pub fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![kind];
        v.extend_from_slice(&channel.to_be_bytes());
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v.push(0xCE);
        v
    }

    pub fn shortstr(s: &[u8]) -> Vec<u8> {
        let mut v = vec![s.len() as u8];
        v.extend_from_slice(s);
        v
    }

    pub fn method(channel: u16, class: u16, id: u16, args: &[u8]) -> Vec<u8> {
        let mut p = class.to_be_bytes().to_vec();
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(args);
        frame(1, channel, &p)
    }

    pub fn publish(channel: u16, exchange: &[u8], rk: &[u8]) -> Vec<u8> {
        let args = [&[0, 0][..], &shortstr(exchange), &shortstr(rk), &[0]].concat();
        method(channel, 60, 40, &args)
    }

    pub fn deliver(channel: u16, ctag: &[u8], tag: u64, exchange: &[u8], rk: &[u8]) -> Vec<u8> {
        let args = [
            &shortstr(ctag)[..],
            &tag.to_be_bytes(),
            &[0],
            &shortstr(exchange),
            &shortstr(rk),
        ]
        .concat();
        method(channel, 60, 60, &args)
    }

    pub fn consume(channel: u16, ctag: &[u8], no_ack: bool) -> Vec<u8> {
        let bits = if no_ack { 2 } else { 0 };
        let args = [
            &[0, 0][..],
            &shortstr(b"q"),
            &shortstr(ctag),
            &[bits],
            &[0, 0, 0, 0],
        ]
        .concat();
        method(channel, 60, 20, &args)
    }

    pub fn ack(channel: u16, tag: u64, multiple: bool) -> Vec<u8> {
        method(
            channel,
            60,
            80,
            &[&tag.to_be_bytes()[..], &[u8::from(multiple)]].concat(),
        )
    }

    pub fn nack(channel: u16, tag: u64, multiple: bool, requeue: bool) -> Vec<u8> {
        let bits = u8::from(multiple) | (u8::from(requeue) << 1);
        method(
            channel,
            60,
            120,
            &[&tag.to_be_bytes()[..], &[bits]].concat(),
        )
    }

    pub fn reject(channel: u16, tag: u64, requeue: bool) -> Vec<u8> {
        method(
            channel,
            60,
            90,
            &[&tag.to_be_bytes()[..], &[u8::from(requeue)]].concat(),
        )
    }

    /// A content header with raw property flags and list.
    pub fn header_raw(channel: u16, body_size: u64, props: &[u8]) -> Vec<u8> {
        let p = [&[0, 60, 0, 0][..], &body_size.to_be_bytes(), props].concat();
        frame(2, channel, &p)
    }

    /// A content header with only a headers table (flag bit 13).
    pub fn header_with_table(channel: u16, body_size: u64, table: &[u8]) -> Vec<u8> {
        let props = [&[0x20, 0][..], &(table.len() as u32).to_be_bytes(), table].concat();
        header_raw(channel, body_size, &props)
    }

    pub fn header(channel: u16, body_size: u64) -> Vec<u8> {
        header_raw(channel, body_size, &[0, 0])
    }

    pub fn body(channel: u16, bytes: &[u8]) -> Vec<u8> {
        frame(3, channel, bytes)
    }

    pub fn channel_close(channel: u16) -> Vec<u8> {
        method(
            channel,
            20,
            40,
            &[&[0, 200][..], &shortstr(b"bye"), &[0, 0, 0, 0]].concat(),
        )
    }

    pub fn tune_ok(frame_max: u32) -> Vec<u8> {
        method(
            0,
            10,
            31,
            &[&[0, 0][..], &frame_max.to_be_bytes(), &[0, 0]].concat(),
        )
    }
}
