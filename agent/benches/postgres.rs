//! Throughput of the PostgreSQL parser on the recorded fixtures, fed the way the connection
//! layer does: fixed-size segments per direction, unconsumed bytes handed back in front of the
//! next segment, each batch of queries ahead of its answers. A fixture's session (everything
//! after the startup and before Terminate) is repeated behind one startup. Prints MB/s and
//! statements/s; asserts only that every statement was reported (so the figures measure real
//! work), never timings.
//!
//! Run: `AGENT_ALLOW_MISSING_EBPF=1 cargo bench -p agent --bench postgres`

use std::time::Instant;

use agent::protocol::postgres::PgConn;
use agent::protocol::{Direction, L7Event, Outcome, PgOutcome, SegmentCtx};

macro_rules! fixture {
    ($name:literal) => {
        (
            include_bytes!(concat!("../src/protocol/testdata/postgres/", $name, ".c2s")).as_slice(),
            include_bytes!(concat!("../src/protocol/testdata/postgres/", $name, ".s2c")).as_slice(),
        )
    };
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

/// Where the session starts and ends in each direction: after the startup-phase messages and
/// authentication responses (frontend) / after the first ReadyForQuery (backend); before the
/// frontend's Terminate.
fn session_bounds(c2s: &[u8], s2c: &[u8]) -> ((usize, usize), usize) {
    let mut c = 0;
    let mut encryption = 0;
    while c2s[c] == 0 {
        let code = u32_at(c2s, c + 4);
        encryption += usize::from(code == 80_877_103 || code == 80_877_104);
        c += u32_at(c2s, c);
    }
    while c2s[c] == b'p' {
        c += 1 + u32_at(c2s, c + 1);
    }
    let c_end = if c2s[c2s.len() - 5] == b'X' {
        c2s.len() - 5
    } else {
        c2s.len()
    };
    let mut s = encryption;
    loop {
        let ty = s2c[s];
        s += 1 + u32_at(s2c, s + 1);
        if ty == b'Z' {
            break;
        }
    }
    ((c, c_end), s)
}

struct Run {
    bytes: u64,
    statements: u64,
    secs: f64,
}

struct Side<'a> {
    stream: &'a [u8],
    from: usize,
    to: usize,
    dir: Direction,
}

/// Feed `stream` up to `limit` in `seg`-byte segments.
fn feed(
    side: &mut Side,
    limit: usize,
    seg: usize,
    conn: &mut PgConn,
    clock: &mut u64,
    out: &mut Vec<L7Event>,
    statements: &mut u64,
) {
    let mut errors = Vec::new();
    while side.to < limit {
        *clock += 1;
        let ctx = SegmentCtx {
            tid: 7,
            first_ns: *clock * 10,
            last_ns: *clock * 10 + 5,
        };
        side.to = (side.to + seg).min(limit);
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
                outcome: Outcome::Postgres(o),
                ..
            } = e
            {
                assert_ne!(o, PgOutcome::Aborted);
                *statements += 1;
            }
        }
    }
    assert!(errors.is_empty(), "parse errors: {errors:?}");
}

/// The startup, then `reps` copies of the session, each copy's queries ahead of its answers.
fn run(c2s: &[u8], s2c: &[u8], reps: usize, seg: usize) -> Run {
    let ((c_start, c_end), s_start) = session_bounds(c2s, s2c);
    let req: Vec<u8> = [&c2s[..c_start], &c2s[c_start..c_end].repeat(reps)].concat();
    let resp: Vec<u8> = [&s2c[..s_start], &s2c[s_start..].repeat(reps)].concat();
    let (c_copy, s_copy) = (c_end - c_start, s2c.len() - s_start);
    let mut conn = PgConn::new(Direction::Egress);
    let mut out = Vec::with_capacity(256);
    let (mut statements, mut clock) = (0u64, 0u64);
    let mut fe = Side {
        stream: &req,
        from: 0,
        to: 0,
        dir: Direction::Egress,
    };
    let mut be = Side {
        stream: &resp,
        from: 0,
        to: 0,
        dir: Direction::Ingress,
    };
    let start = Instant::now();
    let (c, o, s) = (&mut clock, &mut out, &mut statements);
    feed(&mut fe, c_start, seg, &mut conn, c, o, s);
    feed(&mut be, s_start, seg, &mut conn, c, o, s);
    for i in 1..=reps {
        feed(&mut fe, c_start + i * c_copy, seg, &mut conn, c, o, s);
        feed(&mut be, s_start + i * s_copy, seg, &mut conn, c, o, s);
    }
    conn.close(clock * 10 + 100, &mut out);
    let secs = start.elapsed().as_secs_f64();
    Run {
        bytes: (req.len() + resp.len()) as u64,
        statements,
        secs,
    }
}

fn report(name: &str, (c2s, s2c): (&[u8], &[u8]), per_copy: u64, target: u64, seg: usize) {
    let reps = (target / per_copy).max(1) as usize;
    run(c2s, s2c, reps.min(20), seg);
    let best = (0..3)
        .map(|_| run(c2s, s2c, reps, seg))
        .min_by(|a, b| a.secs.total_cmp(&b.secs))
        .expect("three runs");
    assert_eq!(
        best.statements,
        per_copy * reps as u64,
        "{name}: every statement must be reported"
    );
    println!(
        "{name:<36} {seg:>5} B segs {:>8.1} MiB {:>7.3} s {:>8.1} MB/s {:>10.0} statements/s",
        best.bytes as f64 / (1 << 20) as f64,
        best.secs,
        best.bytes as f64 / 1e6 / best.secs,
        best.statements as f64 / best.secs,
    );
}

fn main() {
    let extended = fixture!("pgbench_extended");
    let prepared = fixture!("pgbench_prepared");
    let simple = fixture!("pgbench_init");
    let pipeline = fixture!("psycopg_pipeline");
    println!(
        "postgres parser throughput (single thread; fixtures from src/protocol/testdata/postgres)"
    );
    // pgbench: 20 transactions of 7 statements per copy.
    report("pgbench -M extended", extended, 140, 300_000, 4096);
    report(
        "pgbench -M extended, 64-byte segments",
        extended,
        140,
        300_000,
        64,
    );
    report("pgbench -M prepared", prepared, 140, 300_000, 4096);
    report("pgbench -i (simple queries)", simple, 18, 100_000, 4096);
    report(
        "psycopg pipeline, executemany, COPY",
        pipeline,
        14,
        100_000,
        4096,
    );
}
