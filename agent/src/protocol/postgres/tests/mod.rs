//! Tests of the PostgreSQL parser: a replay harness that drives [`PgConn`] the way the
//! connection layer does, the recorded fixtures (`testdata/postgres`, see `record.py` there)
//! with their golden events, message builders for hand-written streams, and the checks shared
//! by the test files.

mod bounds;
mod detect;
mod fixtures;
mod fuzz;
mod gap;
mod queries;
mod recovery;

use super::PgConn;
use crate::protocol::{Direction, L7Event, Outcome, PgOutcome, PgStatement, Request};

pub(super) const REQ: usize = 0;
pub(super) const RESP: usize = 1;

/// The replay driver (see `protocol::testkit`) over this parser.
pub(super) type Replay<'a> = crate::protocol::testkit::Replay<'a, PgConn>;

/// One event of a golden file (see `record.py`).
#[derive(Debug, Clone)]
pub(super) enum Golden {
    Start {
        seq: u64,
        at: usize,
        req_end: usize,
        trigger: usize,
        statement: PgStatement,
    },
    End {
        seq: u64,
        at: usize,
        outcome: PgOutcome,
    },
}

pub(super) struct Fixture {
    pub name: &'static str,
    pub c2s: &'static [u8],
    pub s2c: &'static [u8],
    /// Reads as the recording proxy saw them: (side, length).
    pub segs: Vec<(usize, usize)>,
    pub golden: Vec<Golden>,
}

macro_rules! fixture {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!("../../testdata/postgres/", $name, ".c2s")).as_slice(),
            include_bytes!(concat!("../../testdata/postgres/", $name, ".s2c")).as_slice(),
            include_str!(concat!("../../testdata/postgres/", $name, ".segs")),
            include_str!(concat!("../../testdata/postgres/", $name, ".golden")),
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

const RAW_FIXTURES: [RawFixture; 9] = [
    fixture!("psql_simple"),
    fixture!("psql_copy_ssl"),
    fixture!("psycopg_simple"),
    fixture!("psycopg_prepared"),
    fixture!("psycopg_pipeline"),
    fixture!("pgbench_init"),
    fixture!("pgbench_extended"),
    fixture!("pgbench_prepared"),
    fixture!("pgbench_prepared_midstream"),
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
            let (side, len) = l.split_once(' ').expect("segs line");
            (
                if side == "c" { REQ } else { RESP },
                len.parse().expect("segs length"),
            )
        })
        .collect();
    Fixture {
        name,
        c2s,
        s2c,
        segs,
        golden: golden.lines().map(parse_golden).collect(),
    }
}

fn parse_golden(line: &str) -> Golden {
    let v: serde_json::Value = serde_json::from_str(line).expect("golden line is JSON");
    let num = |k: &str| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("golden {k} in {line}"))
    };
    let opt = |k: &str| v[k].as_str().map(str::to_owned);
    match v["ev"].as_str() {
        Some("start") => Golden::Start {
            seq: num("seq"),
            at: num("at") as usize,
            req_end: num("req_end") as usize,
            trigger: num("trigger") as usize,
            statement: PgStatement {
                text: opt("text"),
                prepared_name: opt("prepared_name"),
                database: opt("database"),
                user: opt("user"),
            },
        },
        Some("end") => Golden::End {
            seq: num("seq"),
            at: num("at") as usize,
            outcome: match v["outcome"].as_str() {
                Some("complete") => PgOutcome::Complete {
                    tag: opt("tag").expect("tag"),
                    rows: num("rows"),
                },
                Some("empty") => PgOutcome::Empty,
                Some("error") => PgOutcome::Error {
                    sqlstate: opt("sqlstate").expect("sqlstate"),
                    severity: opt("severity").expect("severity"),
                },
                other => panic!("bad outcome {other:?} in {line}"),
            },
        },
        _ => panic!("bad golden line {line}"),
    }
}

impl Golden {
    /// The event this golden line stands for, with the timing the replay's segmentation implies.
    pub fn event(&self, r: &Replay) -> L7Event {
        match self {
            Golden::Start {
                seq, at, statement, ..
            } => {
                let ctx = r.ctx_at(REQ, *at);
                L7Event::RequestStart {
                    seq: *seq,
                    tid: ctx.tid,
                    goroutine: ctx.goroutine,
                    start_ns: ctx.first_ns,
                    request: Request::Postgres(statement.clone()),
                }
            }
            Golden::End { seq, at, outcome } => L7Event::ExchangeEnd {
                seq: *seq,
                end_ns: r.ctx_at(RESP, *at).last_ns,
                outcome: Outcome::Postgres(outcome.clone()),
            },
        }
    }
}

/// Invariants every event sequence must satisfy, whatever the input: starts numbered 0, 1,
/// 2, ...; an end only for a started seq, at most once; at most one statement open at a
/// time (the backend answers one at a time); after `close` every start has its end.
pub(super) fn check_invariants(events: &[L7Event], closed: bool) {
    let mut started = 0u64;
    let mut ended = Vec::new();
    for e in events {
        match e {
            L7Event::RequestStart { seq, request, .. } => {
                assert_eq!(*seq, started, "starts out of order: {events:#?}");
                assert!(
                    matches!(request, Request::Postgres(_)),
                    "not a PostgreSQL statement: {e:?}"
                );
                assert_eq!(
                    ended.len() as u64,
                    started,
                    "a statement started while another was open: {events:#?}"
                );
                started += 1;
            }
            L7Event::ExchangeEnd { seq, outcome, .. } => {
                assert!(*seq < started, "end of seq {seq} before its start");
                assert!(!ended.contains(seq), "seq {seq} ended twice");
                assert!(matches!(outcome, Outcome::Postgres(_)), "{e:?}");
                ended.push(*seq);
            }
        }
    }
    if closed {
        assert_eq!(ended.len() as u64, started, "close left statements open");
    }
}

/// Build a frontend or backend message: type, length, body.
pub(super) fn msg(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![ty];
    v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// NUL-terminated strings, concatenated.
pub(super) fn cstrs(parts: &[&str]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in parts {
        v.extend_from_slice(p.as_bytes());
        v.push(0);
    }
    v
}

/// Message builders for hand-written streams ("Message Formats").
pub(super) mod m {
    use super::{cstrs, msg};

    pub fn startup(params: &[&str]) -> Vec<u8> {
        let mut body = 0x0003_0000u32.to_be_bytes().to_vec();
        body.extend(cstrs(params));
        body.push(0);
        let mut v = (body.len() as u32 + 4).to_be_bytes().to_vec();
        v.extend(body);
        v
    }
    pub fn ssl_request() -> Vec<u8> {
        [8u32.to_be_bytes(), 80_877_103u32.to_be_bytes()].concat()
    }
    pub fn gssenc_request() -> Vec<u8> {
        [8u32.to_be_bytes(), 80_877_104u32.to_be_bytes()].concat()
    }
    pub fn cancel_request() -> Vec<u8> {
        [
            16u32.to_be_bytes(),
            80_877_102u32.to_be_bytes(),
            7u32.to_be_bytes(),
            9u32.to_be_bytes(),
        ]
        .concat()
    }
    pub fn query(sql: &str) -> Vec<u8> {
        msg(b'Q', &cstrs(&[sql]))
    }
    pub fn parse(name: &str, sql: &str) -> Vec<u8> {
        let mut body = cstrs(&[name, sql]);
        body.extend([0, 0]);
        msg(b'P', &body)
    }
    pub fn bind(portal: &str, stmt: &str, params: &[&[u8]]) -> Vec<u8> {
        let mut body = cstrs(&[portal, stmt]);
        body.extend([0, 0]);
        body.extend((params.len() as u16).to_be_bytes());
        for p in params {
            body.extend((p.len() as u32).to_be_bytes());
            body.extend(*p);
        }
        body.extend([0, 0]);
        msg(b'B', &body)
    }
    pub fn describe(kind: u8, name: &str) -> Vec<u8> {
        let mut body = vec![kind];
        body.extend(cstrs(&[name]));
        msg(b'D', &body)
    }
    pub fn execute(portal: &str, max_rows: u32) -> Vec<u8> {
        let mut body = cstrs(&[portal]);
        body.extend(max_rows.to_be_bytes());
        msg(b'E', &body)
    }
    pub fn close(kind: u8, name: &str) -> Vec<u8> {
        let mut body = vec![kind];
        body.extend(cstrs(&[name]));
        msg(b'C', &body)
    }
    pub fn sync() -> Vec<u8> {
        msg(b'S', b"")
    }
    pub fn flush() -> Vec<u8> {
        msg(b'H', b"")
    }
    pub fn terminate() -> Vec<u8> {
        msg(b'X', b"")
    }
    pub fn copy_data(data: &[u8]) -> Vec<u8> {
        msg(b'd', data)
    }
    pub fn copy_done() -> Vec<u8> {
        msg(b'c', b"")
    }
    pub fn function_call() -> Vec<u8> {
        msg(
            b'F',
            &[0, 0, 0x0b, 0xb8, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0],
        )
    }

    // Backend.
    pub fn auth_ok() -> Vec<u8> {
        msg(b'R', &[0, 0, 0, 0])
    }
    pub fn param_status(k: &str, v: &str) -> Vec<u8> {
        msg(b'S', &cstrs(&[k, v]))
    }
    pub fn key_data() -> Vec<u8> {
        msg(b'K', &[0, 0, 0, 7, 0, 0, 0, 9])
    }
    pub fn ready() -> Vec<u8> {
        msg(b'Z', b"I")
    }
    pub fn parse_complete() -> Vec<u8> {
        msg(b'1', b"")
    }
    pub fn bind_complete() -> Vec<u8> {
        msg(b'2', b"")
    }
    pub fn close_complete() -> Vec<u8> {
        msg(b'3', b"")
    }
    pub fn no_data() -> Vec<u8> {
        msg(b'n', b"")
    }
    pub fn row_description() -> Vec<u8> {
        let mut body = vec![0, 1];
        body.extend(cstrs(&["c"]));
        body.extend([0; 18]);
        msg(b'T', &body)
    }
    pub fn data_row(value: &[u8]) -> Vec<u8> {
        let mut body = vec![0, 1];
        body.extend((value.len() as u32).to_be_bytes());
        body.extend(value);
        msg(b'D', &body)
    }
    pub fn complete(tag: &str) -> Vec<u8> {
        msg(b'C', &cstrs(&[tag]))
    }
    pub fn empty_query() -> Vec<u8> {
        msg(b'I', b"")
    }
    pub fn suspended() -> Vec<u8> {
        msg(b's', b"")
    }
    pub fn error(code: &str) -> Vec<u8> {
        error_fields(&[
            ("S", "ERREUR"),
            ("V", "ERROR"),
            ("C", code),
            ("M", "secret value 'hunter2' is wrong"),
            ("D", "Key (x)=(hunter2) already exists."),
        ])
    }
    pub fn error_fields(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (k, v) in fields {
            body.extend(k.as_bytes());
            body.extend(cstrs(&[v]));
        }
        body.push(0);
        msg(b'E', &body)
    }
    pub fn notice() -> Vec<u8> {
        let mut e = error("00000");
        e[0] = b'N';
        e
    }
    pub fn copy_in() -> Vec<u8> {
        msg(b'G', &[0, 0, 1, 0, 0])
    }
    pub fn copy_out() -> Vec<u8> {
        msg(b'H', &[0, 0, 1, 0, 0])
    }
    pub fn function_result() -> Vec<u8> {
        msg(b'V', &[0, 0, 0, 1, 7])
    }
}

/// One line per event: `start SEQ TEXT [name=N]` or `end SEQ OUTCOME`.
pub(super) fn summary(events: &[L7Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            L7Event::RequestStart {
                seq,
                request: Request::Postgres(s),
                ..
            } => {
                let mut line = format!("start {seq} {}", s.text.as_deref().unwrap_or("<unknown>"));
                if let Some(n) = &s.prepared_name {
                    line += &format!(" name={n:?}");
                }
                line
            }
            L7Event::ExchangeEnd {
                seq,
                outcome: Outcome::Postgres(o),
                ..
            } => match o {
                PgOutcome::Complete { tag, rows } => format!("end {seq} {tag} rows={rows}"),
                PgOutcome::Empty => format!("end {seq} empty"),
                PgOutcome::Error { sqlstate, severity } => {
                    format!("end {seq} {severity} {sqlstate}")
                }
                PgOutcome::Aborted => format!("end {seq} aborted"),
            },
            other => panic!("the PostgreSQL parser emitted a foreign event: {other:?}"),
        })
        .collect()
}

/// Steps of a hand-written connection: frontend bytes, backend bytes, uncaptured bytes.
pub(super) enum Step {
    Fe(Vec<u8>),
    Be(Vec<u8>),
    FeGap(usize),
    BeGap(usize),
}
pub(super) use Step::{Be, BeGap, Fe, FeGap};

/// Run the steps (each a segment or a gap), then close. Returns the replay and, per gap,
/// whether `skip` absorbed it.
pub(super) fn run_steps<'a>(
    steps: &[Step],
    fe: &'a mut Vec<u8>,
    be: &'a mut Vec<u8>,
) -> (Replay<'a>, Vec<bool>) {
    for s in steps {
        match s {
            Fe(b) => fe.extend_from_slice(b),
            Be(b) => be.extend_from_slice(b),
            FeGap(n) => fe.extend(std::iter::repeat_n(b'?', *n)),
            BeGap(n) => be.extend(std::iter::repeat_n(b'?', *n)),
        }
    }
    let mut r = Replay::new(fe, be, Direction::Egress);
    let mut absorbed = Vec::new();
    for s in steps {
        match s {
            Fe(b) => r.deliver(REQ, b.len()),
            Be(b) => r.deliver(RESP, b.len()),
            FeGap(n) => absorbed.push(r.gap(REQ, *n)),
            BeGap(n) => absorbed.push(r.gap(RESP, *n)),
        }
        check_invariants(&r.events, false);
    }
    r.close();
    check_invariants(&r.events, true);
    (r, absorbed)
}

pub(super) fn events_of(steps: &[Step]) -> Vec<String> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    summary(&run_steps(steps, &mut a, &mut b).0.events)
}

pub(super) fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// Startup through ReadyForQuery for user `app`, database `db`.
pub(super) fn connected() -> [Step; 2] {
    [
        Fe(m::startup(&["user", "app", "database", "db"])),
        Be(cat(&[
            m::auth_ok(),
            m::param_status("server_version", "15.18"),
            m::key_data(),
            m::ready(),
        ])),
    ]
}

pub(super) fn with_connection(steps: Vec<Step>) -> Vec<String> {
    let mut all: Vec<Step> = connected().into_iter().collect();
    all.extend(steps);
    events_of(&all)
}

pub(super) fn select_one() -> Vec<u8> {
    cat(&[
        m::row_description(),
        m::data_row(b"1"),
        m::complete("SELECT 1"),
        m::ready(),
    ])
}
