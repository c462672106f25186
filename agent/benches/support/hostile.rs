//! The hostile-input harness the parser benchmarks share: a connection fed parts (one
//! direction's bytes in fixed segments, the unconsumed tail handed back in front of the next
//! segment, as the connection layer does), timed best of three, reported in ns per input byte.

use std::time::Instant;

use agent::protocol::{ConnParser, Direction, Parser, SegmentCtx};

/// One direction's bytes and the segment size they arrive in.
pub struct Part {
    pub dir: Direction,
    pub bytes: Vec<u8>,
    pub seg: usize,
}

pub fn part(dir: Direction, bytes: Vec<u8>, seg: usize) -> Part {
    Part { dir, bytes, seg }
}

/// Feeds the parts in order to `conn`; returns (seconds, events, errors).
fn feed_parts(mut conn: ConnParser, parts: &[Part]) -> (f64, usize, usize) {
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    let (mut events, mut errs) = (0, 0);
    let ctx = SegmentCtx {
        tid: 7,
        goroutine: 0,
        first_ns: 10,
        last_ns: 15,
    };
    let start = Instant::now();
    for p in parts {
        let (mut from, mut to) = (0, 0);
        while to < p.bytes.len() {
            to = (to + p.seg).min(p.bytes.len());
            from += conn.parse(p.dir, &p.bytes[from..to], &ctx, &mut out, &mut errors);
            events += out.len();
            errs += errors.len();
            out.clear();
            errors.clear();
        }
    }
    conn.close(20, &mut out);
    (start.elapsed().as_secs_f64(), events + out.len(), errs)
}

/// Best of three over fresh connections from `conn`; prints and returns ns per input byte.
pub fn report(name: &str, conn: impl Fn() -> ConnParser, parts: &[Part]) -> f64 {
    let bytes: usize = parts.iter().map(|p| p.bytes.len()).sum();
    let (mut best, mut events, mut errors) = (f64::MAX, 0, 0);
    for _ in 0..3 {
        let (secs, ev, er) = feed_parts(conn(), parts);
        (best, events, errors) = (best.min(secs), ev, er);
    }
    let ns = best * 1e9 / bytes as f64;
    println!(
        "{name:<58} {:>7.2} MiB {ns:>8.2} ns/B {events:>8} events {errors:>7} errors",
        bytes as f64 / (1 << 20) as f64
    );
    ns
}
