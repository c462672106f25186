//! Throughput of the HTTP/1 parser on the recorded fixtures, fed the way the connection layer
//! does: fixed-size segments per direction, unconsumed bytes handed back in front of the next
//! segment, requests ahead of their responses. Prints MB/s and exchanges/s; asserts only that
//! every exchange was reported (so the figures measure real work), never timings.
//!
//! A second section feeds hostile inputs, each built to hit one bound (see
//! `src/protocol/http1`), and prints the parser's cost per input byte next to a normal
//! stream's: with every bound in place the worst case stays within a small factor of it.
//!
//! Run: `AGENT_ALLOW_MISSING_EBPF=1 cargo bench -p agent --bench http1`

use std::time::Instant;

use agent::protocol::http1::Http1Conn;
use agent::protocol::{ConnParser, Direction, HttpOutcome, L7Event, Outcome, SegmentCtx};

macro_rules! fixture {
    ($name:literal) => {
        (
            include_bytes!(concat!("../src/protocol/testdata/http1/", $name, ".c2s")).as_slice(),
            include_bytes!(concat!("../src/protocol/testdata/http1/", $name, ".s2c")).as_slice(),
        )
    };
}

/// One direction being fed: the whole stream, what was delivered, what is still unconsumed.
struct Side {
    stream: Vec<u8>,
    from: usize,
    to: usize,
    dir: Direction,
}

struct Run {
    bytes: u64,
    exchanges: u64,
    secs: f64,
}

/// Feed `reps` copies of a fixture's connection (requests and responses concatenated) in
/// `seg`-byte segments; responses trail requests by one copy so each has its request.
fn run(c2s: &[u8], s2c: &[u8], reps: usize, seg: usize) -> Run {
    let mut req = Side {
        stream: c2s.repeat(reps),
        from: 0,
        to: 0,
        dir: Direction::Egress,
    };
    let mut resp = Side {
        stream: s2c.repeat(reps),
        from: 0,
        to: 0,
        dir: Direction::Ingress,
    };
    let mut conn = Http1Conn::new(Direction::Egress);
    let (mut out, mut errors) = (Vec::with_capacity(256), Vec::new());
    let (mut exchanges, mut clock) = (0u64, 0u64);
    let mut feed = |side: &mut Side, n: usize, conn: &mut Http1Conn, out: &mut Vec<L7Event>| {
        clock += 1;
        let ctx = SegmentCtx {
            tid: 7,
            goroutine: 0,
            first_ns: clock * 10,
            last_ns: clock * 10 + 5,
        };
        side.to += n;
        let consumed = conn.parse(
            side.dir,
            &side.stream[side.from..side.to],
            &ctx,
            out,
            &mut errors,
        );
        side.from += consumed;
        for e in out.drain(..) {
            if let L7Event::ExchangeEnd {
                outcome:
                    Outcome::Http1(HttpEnd {
                        outcome: HttpOutcome::Response { .. },
                        ..
                    }),
                ..
            } = e
            {
                exchanges += 1;
            }
        }
    };
    let start = Instant::now();
    while req.to < req.stream.len() || resp.to < resp.stream.len() {
        if req.to < req.stream.len() {
            let n = seg.min(req.stream.len() - req.to);
            feed(&mut req, n, &mut conn, &mut out);
        }
        // Responses may go as far as the copies whose requests are all delivered.
        let copies_requested = if req.to == req.stream.len() {
            reps
        } else {
            req.to / c2s.len()
        };
        let limit = copies_requested * s2c.len();
        while resp.to < limit {
            let n = seg.min(limit - resp.to);
            feed(&mut resp, n, &mut conn, &mut out);
        }
    }
    conn.close(clock * 10 + 100, &mut out);
    for e in out.drain(..) {
        if let L7Event::ExchangeEnd {
            outcome:
                Outcome::Http1(HttpEnd {
                    outcome: HttpOutcome::Response { .. },
                    ..
                }),
            ..
        } = e
        {
            exchanges += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert!(errors.is_empty(), "parse errors: {errors:?}");
    Run {
        bytes: (req.stream.len() + resp.stream.len()) as u64,
        exchanges,
        secs,
    }
}

fn report(name: &str, c2s: &[u8], s2c: &[u8], per_copy: u64, target_exchanges: u64, seg: usize) {
    let reps = (target_exchanges / per_copy).max(1) as usize;
    // Warm up once, then keep the best of three.
    run(c2s, s2c, reps.min(100), seg);
    let best = (0..3)
        .map(|_| run(c2s, s2c, reps, seg))
        .min_by(|a, b| a.secs.total_cmp(&b.secs))
        .expect("three runs");
    assert_eq!(
        best.exchanges,
        per_copy * reps as u64,
        "{name}: every exchange must complete"
    );
    println!(
        "{name:<34} {seg:>5} B segs {:>9.1} MiB {:>8.3} s {:>9.1} MB/s {:>11.0} exchanges/s",
        best.bytes as f64 / (1 << 20) as f64,
        best.secs,
        best.bytes as f64 / 1e6 / best.secs,
        best.exchanges as f64 / best.secs,
    );
}

fn main() {
    let (ka_c, ka_s) = fixture!("keepalive_gets");
    let (large_c, large_s) = fixture!("large_body");
    let (gz_c, gz_s) = fixture!("chunked_gzip");
    let (tr_c, tr_s) = fixture!("chunked_ext_trailers");
    let (pipe_c, pipe_s) = fixture!("pipelining");
    let (big_c, big_s) = fixture!("big_header");
    let (post_c, post_s) = fixture!("expect_100");

    println!("http1 parser throughput (single thread; fixtures from src/protocol/testdata/http1)");
    // The pipelining fixture ends with Connection: close; repeating it is still valid framing.
    report(
        "keep-alive GETs (small bodies)",
        ka_c,
        ka_s,
        3,
        100_000,
        4096,
    );
    report(
        "keep-alive GETs, 64-byte segments",
        ka_c,
        ka_s,
        3,
        100_000,
        64,
    );
    report("pipelined GETs", pipe_c, pipe_s, 4, 100_000, 4096);
    report("POST with 100-continue", post_c, post_s, 2, 100_000, 4096);
    report(
        "chunked with extensions/trailers",
        tr_c,
        tr_s,
        2,
        100_000,
        4096,
    );
    report("20 KiB request heads", big_c, big_s, 2, 20_000, 4096);
    report(
        "200 KiB Content-Length bodies",
        large_c,
        large_s,
        2,
        400,
        4096,
    );
    report("180 KiB gzip chunked bodies", gz_c, gz_s, 2, 400, 4096);
    hostile((ka_c, ka_s));
}

// ---- hostile inputs

#[path = "support/hostile.rs"]
mod support;
use agent::protocol::HttpEnd;
use support::{part, Part};

fn req(bytes: Vec<u8>, seg: usize) -> Part {
    part(Direction::Egress, bytes, seg)
}

fn resp(bytes: Vec<u8>, seg: usize) -> Part {
    part(Direction::Ingress, bytes, seg)
}

fn hostile_report(name: &str, parts: &[Part]) {
    support::report(
        name,
        || ConnParser::Http1(Http1Conn::new(Direction::Egress)),
        parts,
    );
}

fn normal_report(name: &str, (c2s, s2c): (&[u8], &[u8]), reps: usize, seg: usize) {
    let r = run(c2s, s2c, reps, seg);
    println!(
        "{name:<58} {:>7.2} MiB {:>8.2} ns/B",
        r.bytes as f64 / (1 << 20) as f64,
        r.secs * 1e9 / r.bytes as f64
    );
}

fn hostile(normal: (&[u8], &[u8])) {
    println!();
    println!("http1 hostile inputs: parser cost per input byte (worst cases of each bound)");
    normal_report("normal: keep-alive GETs", normal, 20_000, 4096);
    normal_report("normal: keep-alive GETs, 1-byte reads", normal, 50, 1);
    let status = b"HTTP/1.1 200 OK\r\n".repeat(30_000);
    hostile_report(
        "status lines, no head end (MAX_HEAD 64 KiB), resync",
        &[resp(status, 4096)],
    );
    let lines = b"GET / HTTP/1.1\r\n".repeat(30_000);
    hostile_report(
        "request lines, no head end (MAX_HEAD 64 KiB), resync",
        &[req(lines, 4096)],
    );
    let far = [b"HTTP/1.1 200 OK\r\n".repeat(3800), b"X\r\n\r\n".to_vec()]
        .concat()
        .repeat(8);
    hostile_report(
        "3800 status lines, a bad field, a head end: each a candidate",
        &[resp(far, 4096)],
    );
    let far = [b"GET / HTTP/1.1\r\n".repeat(4000), b"X\r\n\r\n".to_vec()]
        .concat()
        .repeat(8);
    hostile_report(
        "4000 request lines, a bad field, a head end: each a candidate",
        &[req(far, 4096)],
    );
    let mut chunks = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..1_000_000 {
        chunks.extend_from_slice(b"1\r\nx\r\n");
    }
    chunks.extend_from_slice(b"0\r\n\r\n");
    hostile_report("1M one-byte chunks", &[req(chunks, 4096)]);
    let mut ext = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let line = [&b"1;"[..], &[b'e'; 4000], b"\r\nx\r\n"].concat();
    for _ in 0..1000 {
        ext.extend_from_slice(&line);
    }
    ext.extend_from_slice(b"0\r\n\r\n");
    hostile_report(
        "1000 chunks with 4000-byte extensions (MAX_CHUNK_LINE)",
        &[req(ext, 4096)],
    );
    let mut head = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    // 100 fields of 600 bytes: within MAX_HEADERS and MAX_HEAD.
    while head.len() < 60_000 {
        head.extend_from_slice(b"X-Filler: ");
        head.extend_from_slice(&[b'a'; 600]);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    hostile_report("a 60 KB head, 1 byte per read", &[req(head, 1)]);
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..127 {
        many.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    hostile_report(
        "heads of 127 headers (MAX_HEADERS 128)",
        &[req(many.repeat(2000), 4096)],
    );
    let pipelined = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".repeat(200_000);
    hostile_report(
        "200k pipelined GETs, never answered (MAX_PENDING 64)",
        &[req(pipelined, 4096)],
    );
}
