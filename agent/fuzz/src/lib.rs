//! The one input-splitting driver every stream fuzz target uses (they used to carry a copy
//! each): a fuzz input is 4 control bytes followed by two streams (requests, then responses)
//! split at a control-chosen point; [`feed`] hands them to a parser in segments of
//! control-chosen sizes, in a control-chosen order, with occasional capture gaps, then closes
//! it. It asserts what must hold for any bytes: no panic, consumption within the buffer and
//! unconsumed bytes bounded. [`check_numbered`] and [`check_unordered`] assert the event
//! invariants. `cargo xtask fuzz` builds seed inputs in this layout (u16 LE split point, two
//! control bytes, the streams) from the recorded captures under agent/src/protocol/testdata/.
//!
//! Owns nothing about any one protocol: the targets in fuzz_targets/ pick the parser and the
//! bound on unconsumed bytes.

use agent::protocol::{Direction, L7Event, Parser, Request, SegmentCtx};
use std::collections::HashMap;

/// A fuzz input taken apart.
pub struct Input<'a> {
    /// Seeds the segmenting PRNG; bit 0 of `control[2]` picks the request direction, the other
    /// bits of `control[2]` are the target's own; `control[3]` picks the segment size class.
    pub control: [u8; 4],
    pub requests: &'a [u8],
    pub responses: &'a [u8],
    pub request_dir: Direction,
    pub response_dir: Direction,
}

/// Splits `data` into control bytes and two streams; `None` when it is too short.
pub fn split(data: &[u8]) -> Option<Input<'_>> {
    if data.len() < 4 {
        return None;
    }
    let (control, rest) = data.split_at(4);
    let control = [control[0], control[1], control[2], control[3]];
    let at = usize::from(u16::from_le_bytes([control[0], control[1]])) % (rest.len() + 1);
    let (requests, responses) = rest.split_at(at);
    let (request_dir, response_dir) = if control[2] & 1 == 0 {
        (Direction::Egress, Direction::Ingress)
    } else {
        (Direction::Ingress, Direction::Egress)
    };
    Some(Input {
        control,
        requests,
        responses,
        request_dir,
        response_dir,
    })
}

/// Feeds `requests` (in `input.request_dir`) and `responses` to `conn` in segments chosen by
/// `input.control`, with capture gaps, then closes it; returns every event. Panics when a
/// parser consumes more than it was given or holds more than `max_unconsumed` bytes.
pub fn feed<C: Parser>(
    conn: &mut C,
    input: &Input<'_>,
    requests: &[u8],
    responses: &[u8],
    max_unconsumed: usize,
) -> Vec<L7Event> {
    struct Side<'a> {
        stream: &'a [u8],
        dir: Direction,
        from: usize,
        to: usize,
    }
    let c = input.control;
    // A small PRNG (xorshift32) seeded by the control bytes chooses segment sizes, sides, gaps.
    let mut state = u32::from_le_bytes(c) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let max_piece = [1usize, 3, 16, 300, 5000][(c[3] % 5) as usize];
    let mut sides = [
        Side {
            stream: requests,
            dir: input.request_dir,
            from: 0,
            to: 0,
        },
        Side {
            stream: responses,
            dir: input.response_dir,
            from: 0,
            to: 0,
        },
    ];
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    let mut clock = 0u64;
    while sides.iter().any(|s| s.to < s.stream.len()) {
        let pick = (next() % 2) as usize;
        let i = if sides[pick].to < sides[pick].stream.len() {
            pick
        } else {
            1 - pick
        };
        let side = &mut sides[i];
        let left = side.stream.len() - side.to;
        let n = 1 + (next() as usize) % left.min(max_piece);
        clock += 1;
        let ctx = SegmentCtx {
            tid: clock as u32,
            goroutine: 0,
            first_ns: clock * 10,
            last_ns: clock * 10 + 5,
        };
        if next() % 23 == 0 {
            let unconsumed = side.to - side.from;
            let absorbed = conn.skip(side.dir, n as u64, unconsumed, &ctx, &mut out);
            assert!(!absorbed || unconsumed == 0);
            side.to += n;
            side.from = side.to;
        } else {
            side.to += n;
            let buf = &side.stream[side.from..side.to];
            let consumed = conn.parse(side.dir, buf, &ctx, &mut out, &mut errors);
            assert!(consumed <= buf.len());
            side.from += consumed;
            assert!(side.to - side.from <= max_unconsumed);
        }
    }
    conn.close(clock * 10 + 100, &mut out);
    out
}

/// Invariants of a parser that numbers its exchanges in order: starts numbered 0, 1, ...; an
/// end only after its start and only once; everything ended at close. `on_start` sees each
/// request with the number of exchanges open before it.
pub fn check_numbered(out: &[L7Event], mut on_start: impl FnMut(&Request, u64)) {
    let mut started = 0u64;
    let mut ended = std::collections::HashSet::new();
    for e in out {
        match e {
            L7Event::RequestStart { seq, request, .. } => {
                assert_eq!(*seq, started);
                on_start(request, started - ended.len() as u64);
                started += 1;
            }
            L7Event::ExchangeEnd { seq, .. } => {
                assert!(*seq < started);
                assert!(ended.insert(*seq));
            }
        }
    }
    assert_eq!(ended.len() as u64, started);
}

/// Invariants of a parser with concurrent exchanges (HTTP/2 streams): a seq starts at most
/// once; an end only after its start and only once; everything ended at close. `on_end` sees
/// each end with the request that started it.
pub fn check_unordered(out: &[L7Event], mut on_end: impl FnMut(&Request, &L7Event)) {
    // seq -> (its request, ended)
    let mut seen: HashMap<u64, (&Request, bool)> = HashMap::new();
    for e in out {
        match e {
            L7Event::RequestStart { seq, request, .. } => {
                assert!(
                    seen.insert(*seq, (request, false)).is_none(),
                    "seq {seq} reused"
                );
            }
            L7Event::ExchangeEnd { seq, .. } => {
                let entry = seen.get_mut(seq).expect("end before start");
                assert!(!entry.1, "ended twice");
                entry.1 = true;
                on_end(entry.0, e);
            }
        }
    }
    assert!(seen.values().all(|&(_, ended)| ended), "open at close");
}
