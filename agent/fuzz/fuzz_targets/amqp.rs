//! Fuzz the AMQP 0-9-1 parser through its public API: the input is split into a client→broker
//! stream and a broker→client stream, fed in segments of input-chosen sizes in an input-chosen
//! order with occasional capture gaps, then closed. Checks what must hold for any bytes: no
//! panic, consumption within the buffer, unconsumed bytes bounded (one held frame), and the
//! event invariants (starts numbered 0, 1, ...; an end only after its start and only once;
//! everything ended at close).
#![no_main]

use agent::protocol::amqp::{detect, AmqpConn};
use agent::protocol::{Direction, L7Event, Role, SegmentCtx};
use libfuzzer_sys::fuzz_target;

/// The largest frame the parser holds (RabbitMQ's default frame-max), plus slack.
const MAX_UNCONSUMED: usize = 131_072 + 16;

struct Side<'a> {
    stream: &'a [u8],
    dir: Direction,
    from: usize,
    to: usize,
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (control, rest) = data.split_at(4);
    let split = usize::from(u16::from_le_bytes([control[0], control[1]])) % (rest.len() + 1);
    let (c2s, s2c) = rest.split_at(split);
    let request_dir = if control[2] & 1 == 0 {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    let other = if request_dir == Direction::Egress {
        Direction::Ingress
    } else {
        Direction::Egress
    };
    for role in [Role::Client, Role::Server, Role::Unknown] {
        let _ = detect(request_dir, role, c2s);
        let _ = detect(other, role, s2c);
    }

    // A small PRNG seeded by the control bytes chooses segment sizes, sides and gaps.
    let mut state = u32::from_le_bytes([control[0], control[1], control[2], control[3]]) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let max_piece = [1usize, 3, 16, 300, 5000][(control[3] % 5) as usize];

    let mut conn = AmqpConn::new(request_dir);
    let mut sides = [
        Side {
            stream: c2s,
            dir: request_dir,
            from: 0,
            to: 0,
        },
        Side {
            stream: s2c,
            dir: other,
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
            assert!(side.to - side.from <= MAX_UNCONSUMED);
        }
    }
    conn.close(clock * 10 + 100, &mut out);

    let mut started = 0u64;
    let mut ended = std::collections::HashSet::new();
    for e in &out {
        match e {
            L7Event::RequestStart { seq, .. } => {
                assert_eq!(*seq, started);
                started += 1;
            }
            L7Event::ExchangeEnd { seq, .. } => {
                assert!(*seq < started);
                assert!(ended.insert(*seq));
            }
        }
    }
    assert_eq!(ended.len() as u64, started);
});
