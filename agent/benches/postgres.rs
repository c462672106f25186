//! Throughput of the PostgreSQL parser on the recorded fixtures, fed the way the connection
//! layer does: fixed-size segments per direction, unconsumed bytes handed back in front of the
//! next segment, each batch of queries ahead of its answers. A fixture's session (everything
//! after the startup and before Terminate) is repeated behind one startup. Prints MB/s and
//! statements/s; asserts only that every statement was reported (so the figures measure real
//! work), never timings.
//!
//! A second section feeds hostile inputs, each built to hit one bound (see
//! `src/protocol/postgres`), and prints the parser's cost per input byte next to a normal
//! stream's: with every bound in place the worst case stays within a small factor of it.
//!
//! Run: `AGENT_ALLOW_MISSING_EBPF=1 cargo bench -p agent --bench postgres`

use std::time::Instant;

use agent::protocol::postgres::PgConn;
use agent::protocol::{ConnParser, Direction, L7Event, Outcome, PgOutcome, Role, SegmentCtx};

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
            goroutine: 0,
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
    hostile(extended);
}

// ---- hostile inputs

#[path = "support/hostile.rs"]
mod support;
use support::{part, Part};

fn fe(bytes: Vec<u8>, seg: usize) -> Part {
    part(Direction::Egress, bytes, seg)
}

fn be(bytes: Vec<u8>, seg: usize) -> Part {
    part(Direction::Ingress, bytes, seg)
}

fn hostile_report(name: &str, parts: &[Part]) {
    support::report(
        name,
        || ConnParser::Postgres(PgConn::new(Direction::Egress)),
        parts,
    );
}

fn msg(ty: u8, body: &[u8]) -> Vec<u8> {
    [&[ty][..], &(body.len() as u32 + 4).to_be_bytes(), body].concat()
}

fn cstr(s: &[u8]) -> Vec<u8> {
    [s, &[0]].concat()
}

fn query(text: &[u8]) -> Vec<u8> {
    msg(b'Q', &cstr(text))
}

fn parse(name: &[u8], text: &[u8]) -> Vec<u8> {
    msg(b'P', &[&cstr(name)[..], &cstr(text), &[0, 0]].concat())
}

fn bind(portal: &[u8], statement: &[u8]) -> Vec<u8> {
    msg(
        b'B',
        &[&cstr(portal)[..], &cstr(statement), &[0, 0, 0, 0, 0, 0]].concat(),
    )
}

fn sql(len: usize) -> Vec<u8> {
    let mut t = b"SELECT ".to_vec();
    while t.len() < len {
        t.extend_from_slice(b"a, ");
    }
    t.truncate(len);
    t
}

/// `n` Bind candidates nested in one `block` of bytes, each a structurally valid Bind up to
/// its result formats whose parameters run over the same values as the one before it (each
/// candidate sits in the value of the parameter before its own): the block ends with a bad
/// format code, so resync checks every candidate, O(n²) parameters per block without a bound
/// on that work.
fn nested_binds(block: usize) -> Vec<u8> {
    // B len(4) "" "" formats(0) params(n)
    const HEAD: usize = 11;
    let n = (block - 32) / (4 + HEAD);
    // Offsets: candidate k's header at k * 15, its parameters from k * 15 + 11.
    let end = n * (4 + HEAD) + HEAD + 4;
    let mut b = vec![0x01]; // an unknown type: lose sync first
    let base = b.len();
    for k in 0..=n {
        let at = b.len() - base;
        let params = (n - k) as u16;
        b.push(b'B');
        b.extend_from_slice(&((end - at - 1) as u32).to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 0]);
        b.extend_from_slice(&params.to_be_bytes());
        if k < n {
            b.extend_from_slice(&(HEAD as u32).to_be_bytes());
        }
    }
    // One result format, code 7: not a format.
    b.extend_from_slice(&[0, 1, 0, 7]);
    assert_eq!(b.len() - base, end);
    b
}

fn hostile(normal: (&[u8], &[u8])) {
    println!();
    println!("postgres hostile inputs: parser cost per input byte (worst cases of each bound)");
    let r = run(normal.0, normal.1, 2000, 4096);
    println!(
        "{:<58} {:>7.2} MiB {:>8.2} ns/B",
        "normal: pgbench -M extended",
        r.bytes as f64 / (1 << 20) as f64,
        r.secs * 1e9 / r.bytes as f64
    );
    let r = run(normal.0, normal.1, 100, 64);
    println!(
        "{:<58} {:>7.2} MiB {:>8.2} ns/B",
        "normal: pgbench -M extended, 64-byte reads",
        r.bytes as f64 / (1 << 20) as f64,
        r.secs * 1e9 / r.bytes as f64
    );
    let r = run(normal.0, normal.1, 2, 1);
    println!(
        "{:<58} {:>7.2} MiB {:>8.2} ns/B",
        "normal: pgbench -M extended, 1-byte reads",
        r.bytes as f64 / (1 << 20) as f64,
        r.secs * 1e9 / r.bytes as f64
    );
    for len in [4 * 1024, 32 * 1024] {
        hostile_report(
            &format!("Query of {} KiB trickled 1 byte per read", len / 1024),
            &[fe(query(&sql(len)), 1)],
        );
    }
    hostile_report(
        "Parse of a 32 KiB statement trickled 1 byte per read",
        &[fe(parse(b"s", &sql(32 * 1024)), 1)],
    );
    // Garbage, then a Parse candidate whose 1000-byte name (the longest a signature takes is
    // 1024) arrives a byte per read and turns out not printable: 30 times.
    let candidate = [
        &[0x01, b'P'][..],
        &(60_000u32).to_be_bytes(),
        &[b'n'; 1000],
        &[0x07],
    ]
    .concat();
    hostile_report(
        "resync on Parses with 1000-byte names, 1 byte per read",
        &[fe(candidate.repeat(30), 1)],
    );
    hostile_report(
        "resync over nested Bind candidates, 60 KB blocks",
        &[fe(nested_binds(60_000).repeat(16), 4096)],
    );
    let churn: Vec<u8> = (0..100_000)
        .flat_map(|i| parse(format!("s{i}").as_bytes(), b"SELECT 1"))
        .collect();
    hostile_report(
        "100k Parses of new statement names (cache full)",
        &[fe(churn, 4096)],
    );
    let binds: Vec<u8> = (0..100_000)
        .flat_map(|i| bind(format!("p{i}").as_bytes(), format!("s{i}").as_bytes()))
        .collect();
    hostile_report(
        "100k Binds of new portals to unknown statements",
        &[fe(binds, 4096)],
    );
    let pipelined = query(&sql(60_000)).repeat(2000);
    hostile_report(
        "2000 pipelined 60 KB Queries, never answered",
        &[fe(pipelined, 16384)],
    );
    let mut rows = msg(b'T', &[0, 0]);
    for _ in 0..1_000_000 {
        rows.extend(msg(b'D', &[0, 0]));
    }
    rows.extend(msg(b'C', b"SELECT 1000000\0"));
    rows.extend(msg(b'Z', b"I"));
    hostile_report(
        "one Query answered by 1M empty DataRows",
        &[fe(query(b"SELECT 1"), 4096), be(rows, 16384)],
    );
    // Detection: until a protocol matches, the connection layer runs every detector on all
    // bytes seen so far (at most 4096, `conn::MAX_DETECT_BYTES`) on every read; Sync messages
    // are valid but never decisive, so a byte per read costs O(n²) over those 4096 bytes,
    // once per connection.
    let syncs = msg(b'S', b"").repeat(4096 / 5);
    let best = (0..3)
        .map(|_| {
            let start = Instant::now();
            for n in 1..=syncs.len() {
                std::hint::black_box(ConnParser::detect(
                    Direction::Egress,
                    Role::Client,
                    &syncs[..n],
                ));
            }
            start.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min);
    println!(
        "{:<58} {:>7.2} MiB {:>8.2} ns/B",
        "detection: 4 KiB of Syncs, 1 byte per read (once per conn)",
        syncs.len() as f64 / (1 << 20) as f64,
        best * 1e9 / syncs.len() as f64
    );
    let many = query(&b"SELECT 1;".repeat(7000));
    let mut answers = Vec::new();
    for _ in 0..7000 {
        answers.extend(msg(b'C', b"SELECT 1\0"));
    }
    answers.extend(msg(b'Z', b"I"));
    hostile_report(
        "one Query of 7000 statements, each answered",
        &[fe(many, 4096), be(answers, 4096)],
    );
}
