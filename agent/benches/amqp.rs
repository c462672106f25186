//! Throughput of the AMQP 0-9-1 parser over publish and deliver streams, fed the way the
//! connection layer does: fixed-size segments per direction, unconsumed bytes handed back in
//! front of the next segment. The streams are the recorded fixtures' message traffic (real
//! RabbitMQ 3.10 / pika bytes: the connection's handshake once, then its publishes, or its
//! deliveries and acks, repeated) and synthetic streams of 1 KiB messages carrying trace
//! context. Prints MB/s and messages/s; asserts only that every message was reported and
//! ended (so the figures measure real work), never timings.
//!
//! A second section feeds hostile inputs, each built to hit one bound (see
//! `src/protocol/amqp`), and prints the parser's cost per input byte next to a normal stream's:
//! with every bound in place the worst case stays within a small factor of the normal case.
//!
//! Run: `AGENT_ALLOW_MISSING_EBPF=1 cargo bench -p agent --bench amqp`

use std::time::Instant;

use agent::protocol::amqp::AmqpConn;
use agent::protocol::{ConnParser, Direction, L7Event, SegmentCtx};

macro_rules! fixture {
    ($name:literal) => {
        [
            include_bytes!(concat!("../src/protocol/testdata/amqp/", $name, ".c2s")).as_slice(),
            include_bytes!(concat!("../src/protocol/testdata/amqp/", $name, ".s2c")).as_slice(),
        ]
    };
}

const C: usize = 0;
const S: usize = 1;

/// (start, end, class, method) of each frame; class/method 0 for non-method frames.
fn frames(data: &[u8]) -> Vec<(usize, usize, u16, u16)> {
    let mut pos = if data.starts_with(b"AMQP") { 8 } else { 0 };
    let mut out = Vec::new();
    while pos + 7 <= data.len() {
        let size = u32::from_be_bytes([data[pos + 3], data[pos + 4], data[pos + 5], data[pos + 6]])
            as usize;
        let end = pos + size + 8;
        let (class, method) = if data[pos] == 1 {
            (
                u16::from_be_bytes([data[pos + 7], data[pos + 8]]),
                u16::from_be_bytes([data[pos + 9], data[pos + 10]]),
            )
        } else {
            (0, 0)
        };
        out.push((pos, end, class, method));
        pos = end;
    }
    out
}

/// Byte range from the first method frame in `from` to the first in `until` after it.
fn region(data: &[u8], from: &[(u16, u16)], until: &[(u16, u16)]) -> (usize, usize) {
    let f = frames(data);
    let start = f
        .iter()
        .find(|x| from.contains(&(x.2, x.3)))
        .expect("region start")
        .0;
    let end = f
        .iter()
        .find(|x| x.0 > start && until.contains(&(x.2, x.3)))
        .expect("region end")
        .0;
    (start, end)
}

/// A connection's handshake once, then a stretch of its traffic repeated: per side, the
/// prefix and the repeated part. Each copy of the `first` side goes before the same copy of
/// the other (deliveries before their acks).
struct Traffic {
    prefix: [Vec<u8>; 2],
    repeat: [Vec<u8>; 2],
    first: usize,
    /// Messages per copy.
    messages: u64,
}

impl Traffic {
    fn from_fixture(
        sides: [&[u8]; 2],
        ranges: [(usize, usize); 2],
        first: usize,
        messages: u64,
    ) -> Self {
        Self {
            prefix: [
                sides[C][..ranges[C].0].to_vec(),
                sides[S][..ranges[S].0].to_vec(),
            ],
            repeat: [
                sides[C][ranges[C].0..ranges[C].1].to_vec(),
                sides[S][ranges[S].0..ranges[S].1].to_vec(),
            ],
            first,
            messages,
        }
    }
}

struct Run {
    bytes: u64,
    messages: u64,
    ended: u64,
    secs: f64,
}

/// Feeds one direction in `seg`-byte segments, keeping the unconsumed tail in front.
struct Feeder {
    stream: Vec<u8>,
    from: usize,
    to: usize,
    dir: Direction,
}

fn run(t: &Traffic, reps: usize, seg: usize) -> Run {
    let mut sides = [C, S].map(|side| {
        let mut stream = t.prefix[side].clone();
        for _ in 0..reps {
            stream.extend_from_slice(&t.repeat[side]);
        }
        Feeder {
            stream,
            from: 0,
            to: 0,
            dir: if side == C {
                Direction::Egress
            } else {
                Direction::Ingress
            },
        }
    });
    let mut conn = AmqpConn::new(Direction::Egress);
    let (mut out, mut errors) = (Vec::with_capacity(256), Vec::new());
    let (mut messages, mut ended, mut clock) = (0u64, 0u64, 0u64);
    let mut count = |out: &mut Vec<L7Event>| {
        for e in out.drain(..) {
            match e {
                L7Event::RequestStart { .. } => messages += 1,
                L7Event::ExchangeEnd { .. } => ended += 1,
            }
        }
    };
    let mut feed_to =
        |f: &mut Feeder, limit: usize, conn: &mut AmqpConn, out: &mut Vec<L7Event>| {
            while f.to < limit {
                clock += 1;
                let ctx = SegmentCtx {
                    tid: 7,
                    goroutine: 0,
                    first_ns: clock * 10,
                    last_ns: clock * 10 + 5,
                };
                f.to = (f.to + seg).min(limit);
                let consumed = conn.parse(f.dir, &f.stream[f.from..f.to], &ctx, out, &mut errors);
                f.from += consumed;
            }
        };
    let start = Instant::now();
    for side in [t.first, 1 - t.first] {
        let limit = t.prefix[side].len();
        feed_to(&mut sides[side], limit, &mut conn, &mut out);
    }
    for k in 1..=reps {
        for side in [t.first, 1 - t.first] {
            let limit = t.prefix[side].len() + k * t.repeat[side].len();
            feed_to(&mut sides[side], limit, &mut conn, &mut out);
        }
        if out.len() > 4096 {
            count(&mut out);
        }
    }
    conn.close(clock * 10 + 100, &mut out);
    count(&mut out);
    let secs = start.elapsed().as_secs_f64();
    assert!(
        errors.is_empty(),
        "{} parse errors, first {:?}",
        errors.len(),
        errors.first()
    );
    Run {
        bytes: sides.iter().map(|s| s.stream.len() as u64).sum(),
        messages,
        ended,
        secs,
    }
}

fn report(name: &str, t: &Traffic, target_bytes: usize, seg: usize) {
    let per_copy = t.repeat[C].len() + t.repeat[S].len();
    let reps = (target_bytes / per_copy).max(1);
    run(t, reps.min(100), seg);
    let best = (0..3)
        .map(|_| run(t, reps, seg))
        .min_by(|a, b| a.secs.total_cmp(&b.secs))
        .expect("three runs");
    assert_eq!(
        best.messages,
        t.messages * reps as u64,
        "{name}: every message reported"
    );
    assert_eq!(best.ended, best.messages, "{name}: every message ended");
    println!(
        "{name:<44} {seg:>5} B segs {:>8.1} MiB {:>7.3} s {:>8.1} MB/s {:>11.0} messages/s",
        best.bytes as f64 / (1 << 20) as f64,
        best.secs,
        best.bytes as f64 / 1e6 / best.secs,
        best.messages as f64 / best.secs,
    );
}

fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(&channel.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v.push(0xCE);
    v
}

fn shortstr(s: &[u8]) -> Vec<u8> {
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s);
    v
}

/// A content header with a message-id, a correlation-id and a headers table carrying W3C
/// trace context (what instrumented producers send), and `body` in one frame.
fn content(body: &[u8]) -> Vec<u8> {
    let mut table = Vec::new();
    for (k, v) in [
        (
            &b"traceparent"[..],
            &b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"[..],
        ),
        (b"tracestate", b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
    ] {
        table.extend(shortstr(k));
        table.push(b'S');
        table.extend((v.len() as u32).to_be_bytes());
        table.extend_from_slice(v);
    }
    table.extend([1, b'n', b'I', 0, 0, 0, 42]);
    let props = [
        &[0x34, 0x80][..], // headers, delivery-mode, correlation-id, message-id
        &(table.len() as u32).to_be_bytes(),
        &table,
        &[2],
        &shortstr(b"corr-0001"),
        &shortstr(b"msg-0001"),
    ]
    .concat();
    let header = [
        &[0, 60, 0, 0][..],
        &(body.len() as u64).to_be_bytes(),
        &props,
    ]
    .concat();
    [frame(2, 1, &header), frame(3, 1, body)].concat()
}

/// Synthetic traffic: `n` publishes, or `n` no-ack deliveries, of `size`-byte bodies.
fn synthetic(deliver: bool, size: usize, n: u64) -> Traffic {
    let body: Vec<u8> = (0..size).map(|i| (i * 31) as u8).collect();
    let mut repeat = Vec::new();
    for i in 0..n {
        let method = if deliver {
            let args = [
                &shortstr(b"ctag")[..],
                &(i + 1).to_be_bytes(),
                &[0],
                &shortstr(b"orders"),
                &shortstr(b"order.created"),
            ]
            .concat();
            [&[0, 60, 0, 60][..], &args].concat()
        } else {
            [
                &[0, 60, 0, 40, 0, 0][..],
                &shortstr(b"orders"),
                &shortstr(b"order.created"),
                &[0],
            ]
            .concat()
        };
        repeat.extend(frame(1, 1, &method));
        repeat.extend(content(&body));
    }
    // A no-ack consumer, so deliveries end on arrival.
    let consume = [
        &[0, 60, 0, 20, 0, 0][..],
        &shortstr(b"q"),
        &shortstr(b"ctag"),
        &[2],
        &[0, 0, 0, 0],
    ]
    .concat();
    let side = if deliver { S } else { C };
    let mut t = Traffic {
        prefix: [
            [b"AMQP\x00\x00\x09\x01".as_slice(), &frame(1, 1, &consume)].concat(),
            Vec::new(),
        ],
        repeat: [Vec::new(), Vec::new()],
        first: C,
        messages: n,
    };
    t.repeat[side] = repeat;
    t
}

fn main() {
    let publisher = fixture!("publisher");
    let consumer = fixture!("consumer_manual");
    let large = fixture!("large_consume");
    let large_pub = fixture!("large_publish");
    let publish = (60, 40);
    let deliver = (60, 60);
    let settle = [(60, 80), (60, 120), (60, 90)];
    // Where the message traffic stops: a cancel or a close.
    let stop = [(60, 30), (60, 31), (20, 40), (20, 41), (10, 50), (10, 51)];

    // Publishes (7 per copy, 0 B to 5 KiB bodies, every property and field type).
    let p = region(publisher[C], &[publish], &stop);
    let pub_traffic = Traffic::from_fixture(publisher, [p, (0, 0)], C, 7);
    // Deliveries (8 per copy) and the consumer's acks, nacks and rejects.
    let d = region(consumer[S], &[deliver], &stop);
    let a = region(consumer[C], &settle, &stop);
    let con_traffic = Traffic::from_fixture(consumer, [a, d], S, 8);
    // 200 kB bodies: 2 body frames per delivery, acked; 25 per publish (frame-max 8192).
    let d = region(large[S], &[deliver], &stop);
    let a = region(large[C], &settle, &stop);
    let large_traffic = Traffic::from_fixture(large, [a, d], S, 2);
    let p = region(large_pub[C], &[publish], &stop);
    let large_pub_traffic = Traffic::from_fixture(large_pub, [p, (0, 0)], C, 2);

    println!("amqp parser throughput (single thread; fixtures from src/protocol/testdata/amqp)");
    report(
        "recorded publishes (0-5 KiB bodies)",
        &pub_traffic,
        64 << 20,
        4096,
    );
    report(
        "recorded publishes, 64-byte segments",
        &pub_traffic,
        16 << 20,
        64,
    );
    report("recorded deliveries + acks", &con_traffic, 64 << 20, 4096);
    report(
        "recorded 200 kB deliveries + acks",
        &large_traffic,
        256 << 20,
        16384,
    );
    report(
        "recorded 200 kB publishes (8 KiB frames)",
        &large_pub_traffic,
        256 << 20,
        16384,
    );
    let (pub1k, del1k) = (synthetic(false, 1024, 1000), synthetic(true, 1024, 1000));
    report(
        "1 KiB publishes with trace context",
        &pub1k,
        128 << 20,
        4096,
    );
    report(
        "1 KiB no-ack deliveries with trace context",
        &del1k,
        128 << 20,
        4096,
    );
    let (pub64, del64) = (synthetic(false, 64, 1000), synthetic(true, 64, 1000));
    report("64 B publishes with trace context", &pub64, 64 << 20, 4096);
    report(
        "64 B no-ack deliveries with trace context",
        &del64,
        64 << 20,
        4096,
    );
    hostile();
}

// ---- hostile inputs

#[path = "support/hostile.rs"]
mod support;
use support::{part, Part};

fn hostile_report(name: &str, parts: &[Part]) -> f64 {
    support::report(
        name,
        || ConnParser::Amqp(AmqpConn::new(Direction::Egress)),
        parts,
    )
}

fn method(channel: u16, class: u16, id: u16, args: &[u8]) -> Vec<u8> {
    frame(
        1,
        channel,
        &[&class.to_be_bytes()[..], &id.to_be_bytes(), args].concat(),
    )
}

fn deliver(channel: u16, tag: u64) -> Vec<u8> {
    let args = [
        &shortstr(b"a")[..],
        &tag.to_be_bytes(),
        &[0],
        &shortstr(b""),
        &shortstr(b"q"),
    ]
    .concat();
    // Method, then a content header with no properties and an empty body: complete.
    [
        method(channel, 60, 60, &args),
        frame(
            2,
            channel,
            &[&[0, 60, 0, 0][..], &0u64.to_be_bytes(), &[0, 0]].concat(),
        ),
    ]
    .concat()
}

/// A manual-ack consumer on channel 1, so deliveries wait for their ack.
fn manual_consumer() -> Vec<u8> {
    let args = [
        &[0, 0][..],
        &shortstr(b"q"),
        &shortstr(b"a"),
        &[0],
        &[0, 0, 0, 0],
    ]
    .concat();
    [
        b"AMQP\x00\x00\x09\x01".as_slice(),
        &method(1, 60, 20, &args),
    ]
    .concat()
}

/// xorshift: tags in no order (each insert lands anywhere in the sorted unacked list).
fn scrambled(n: usize) -> Vec<u64> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x >> 16
        })
        .collect()
}

/// Client-side bytes that lose sync every 15 bytes: a heartbeat (a resync point), then a
/// content-header frame claiming 4 GiB (beyond frame-max).
fn sync_storm(n: usize) -> Vec<u8> {
    let unit = [
        &[8, 0, 0, 0, 0, 0, 0, 0xCE][..],
        &[2, 0, 0, 0xff, 0xff, 0xff, 0xff],
    ]
    .concat();
    unit.repeat(n)
}

/// A `block`-byte run of overlapping connection.start-ok candidates, each a valid frame whose
/// client-properties table runs over the same entries as the one before it (each candidate
/// sits in the byte array of the entry before its table): resync decodes every candidate it
/// accepts the size of, so a block costs O(n²) table entries (`frame::MAX_RESYNC_PAYLOAD`
/// bounds n).
fn nested_candidates(block: usize) -> Vec<u8> {
    const ENTRY: usize = 22; // 1 'k' 'x' len(4) header(15)
    let n = (block - 32) / ENTRY;
    let table_end = 15 + (n - 1) * ENTRY + 3;
    let frame_end = table_end + 6;
    let header = |at: usize| -> Vec<u8> {
        let size = (frame_end - at - 7) as u32;
        let table = (table_end - at - 15) as u32;
        [
            &[1, 0, 0][..],
            &size.to_be_bytes(),
            &[0, 10, 0, 11],
            &table.to_be_bytes(),
        ]
        .concat()
    };
    let mut b = header(0);
    for _ in 1..n {
        b.extend_from_slice(&[1, b'k', b'x', 0, 0, 0, 15]);
        let at = b.len();
        b.extend(header(at));
    }
    b.extend_from_slice(&[1, b'k', b'V']);
    assert_eq!(b.len(), table_end);
    // mechanism, response, locale; frame-end; then a byte that is no frame type.
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0xCE, 0]);
    b
}

/// A headers table nested `depth` levels deep (tables in tables), and `wide` top-level entries.
fn table(depth: usize, wide: usize) -> Vec<u8> {
    let mut value = b"V".to_vec();
    for _ in 0..depth {
        let inner = [&[1, b'k'][..], &value].concat();
        value = [&[b'F'][..], &(inner.len() as u32).to_be_bytes(), &inner].concat();
    }
    let mut t = [&[3, b't', b'o', b'p'][..], &value].concat();
    for _ in 0..wide {
        t.extend_from_slice(&[1, b'k', b'V']);
    }
    t
}

fn publish_with_table(t: &[u8]) -> Vec<u8> {
    let props = [&[0x20, 0][..], &(t.len() as u32).to_be_bytes(), t].concat();
    let args = [&[0, 0][..], &shortstr(b""), &shortstr(b"q"), &[0]].concat();
    [
        method(1, 60, 40, &args),
        frame(
            2,
            1,
            &[&[0, 60, 0, 0][..], &0u64.to_be_bytes(), &props].concat(),
        ),
    ]
    .concat()
}

fn hostile() {
    use Direction::{Egress as C2S, Ingress as S2C};
    println!();
    println!("amqp hostile inputs: parser cost per input byte (worst cases of each bound)");
    let normal = synthetic(true, 64, 1000);
    let stream = [normal.prefix[C].clone(), normal.repeat[C].clone()].concat();
    let deliveries = normal.repeat[S].repeat(20);
    hostile_report(
        "normal: 64 B no-ack deliveries with trace context",
        &[part(C2S, stream, 4096), part(S2C, deliveries, 4096)],
    );
    let ascending: Vec<u8> = (1..=60_000u64).flat_map(|t| deliver(1, t)).collect();
    hostile_report(
        "60k unacked deliveries, ascending tags (10k kept)",
        &[
            part(C2S, manual_consumer(), 4096),
            part(S2C, ascending, 4096),
        ],
    );
    let shuffled: Vec<u8> = scrambled(60_000)
        .into_iter()
        .flat_map(|t| deliver(1, t))
        .collect();
    hostile_report(
        "60k unacked deliveries, tags in no order (sorted insert)",
        &[
            part(C2S, manual_consumer(), 4096),
            part(S2C, shuffled, 4096),
        ],
    );
    // Acks in no order over 10k unsettled deliveries: each removes from the middle.
    let key = scrambled(10_000);
    let mut order: Vec<u64> = (1..=10_000u64).collect();
    order.sort_by_key(|&t| key[t as usize - 1]);
    let mut acks = Vec::new();
    for round in 0..6u64 {
        for &t in &order {
            let tag = round * 10_000 + t;
            acks.extend(method(1, 60, 80, &[&tag.to_be_bytes()[..], &[0]].concat()));
        }
    }
    let batches: Vec<(Vec<u8>, Vec<u8>)> = (0..6u64)
        .map(|round| {
            let d: Vec<u8> = (1..=10_000u64)
                .flat_map(|t| deliver(1, round * 10_000 + t))
                .collect();
            (
                d,
                acks[round as usize * acks.len() / 6..(round as usize + 1) * acks.len() / 6]
                    .to_vec(),
            )
        })
        .collect();
    let mut parts = vec![part(C2S, manual_consumer(), 4096)];
    for (d, a) in batches {
        parts.push(part(S2C, d, 4096));
        parts.push(part(C2S, a, 4096));
    }
    hostile_report("60k deliveries acked one by one in no order", &parts);
    // 1024 consumers with 255-byte tags that differ in their last byte, then deliveries to
    // the last: every lookup compares the tag with every consumer's.
    let tag = |i: u16| -> Vec<u8> {
        let mut t = vec![b't'; 253];
        t.extend_from_slice(&i.to_be_bytes());
        t
    };
    let mut consumers = b"AMQP\x00\x00\x09\x01".to_vec();
    for i in 0..1024u16 {
        let args = [
            &[0, 0][..],
            &shortstr(b"q"),
            &shortstr(&tag(i)),
            &[2],
            &[0, 0, 0, 0],
        ]
        .concat();
        consumers.extend(method(1, 60, 20, &args));
    }
    let last = tag(1023);
    let long_tag_deliveries: Vec<u8> = (1..=20_000u64)
        .flat_map(|t| {
            let args = [
                &shortstr(&last)[..],
                &t.to_be_bytes(),
                &[0],
                &shortstr(b""),
                &shortstr(b"q"),
            ]
            .concat();
            [
                method(1, 60, 60, &args),
                frame(
                    2,
                    1,
                    &[&[0, 60, 0, 0][..], &0u64.to_be_bytes(), &[0, 0]].concat(),
                ),
            ]
            .concat()
        })
        .collect();
    hostile_report(
        "1024 consumers, 255-byte tags, 20k deliveries to the last",
        &[
            part(C2S, consumers, 4096),
            part(S2C, long_tag_deliveries, 4096),
        ],
    );
    let spread: Vec<u8> = (1..=40u64)
        .flat_map(|t| (1..=2048u16).flat_map(move |ch| deliver(ch, t)))
        .collect();
    hostile_report(
        "80k unacked deliveries over 2048 channels (over MAX_UNACKED)",
        &[part(S2C, spread, 4096)],
    );
    let channels: Vec<u8> = (1..=2048u16).flat_map(|ch| deliver(ch, 1)).collect();
    hostile_report(
        "2048 channels, then client loses sync every 15 bytes",
        &[
            part(S2C, channels.clone(), 4096),
            part(C2S, sync_storm(40_000), 4096),
        ],
    );
    hostile_report(
        "2048 channels, then broker loses sync every 15 bytes",
        &[
            part(S2C, channels, 4096),
            part(S2C, sync_storm(40_000), 4096),
        ],
    );
    hostile_report(
        "resync over nested start-ok candidates, 2 KiB blocks",
        &[part(C2S, nested_candidates(2000).repeat(512), 4096)],
    );
    hostile_report(
        "resync over nested start-ok candidates, 16 KiB blocks",
        &[part(C2S, nested_candidates(16 * 1024).repeat(64), 4096)],
    );
    let deep = publish_with_table(&table(15, 0)).repeat(20_000);
    hostile_report(
        "publishes with headers nested 15 deep (MAX_NESTING 16)",
        &[part(C2S, [manual_consumer(), deep].concat(), 4096)],
    );
    let wide = publish_with_table(&table(0, 10_000)).repeat(100);
    hostile_report(
        "publishes with 10000-entry headers tables",
        &[part(C2S, [manual_consumer(), wide].concat(), 4096)],
    );
    let trickle = normal.repeat[S][..normal.repeat[S].len() / 10].to_vec();
    hostile_report(
        "64 B deliveries trickled 1 byte per read",
        &[part(S2C, trickle, 1)],
    );
}
