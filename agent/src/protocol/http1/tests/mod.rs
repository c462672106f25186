//! Tests of the HTTP/1 parser: a replay harness that drives [`Http1Conn`] the way the
//! connection layer does, the recorded fixtures (`testdata/http1`, see `record.py` there) with
//! their golden events, and the checks shared by the test files.

mod bounds;
mod detect;
mod fixtures;
mod fuzz;
mod gap;
mod unit;

use super::Http1Conn;
use crate::protocol::HttpEnd;
use crate::protocol::{HttpOutcome, HttpRequest, L7Event, Outcome, Request};

pub(super) const REQ: usize = 0;
pub(super) const RESP: usize = 1;

/// The replay driver (see `protocol::testkit`) over this parser.
pub(super) type Replay<'a> = crate::protocol::testkit::Replay<'a, Http1Conn>;

/// One event of a golden file.
#[derive(Debug, Clone)]
pub(super) enum Golden {
    Start {
        seq: u64,
        at: usize,
        head_end: usize,
        request: HttpRequest,
    },
    /// `at: None`: the response body ran until the close.
    End {
        seq: u64,
        at: Option<usize>,
        status: u16,
        version_minor: u8,
        resp_body: u64,
        req_body: u64,
    },
    Aborted {
        seq: u64,
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
            include_bytes!(concat!("../../testdata/http1/", $name, ".c2s")).as_slice(),
            include_bytes!(concat!("../../testdata/http1/", $name, ".s2c")).as_slice(),
            include_str!(concat!("../../testdata/http1/", $name, ".segs")),
            include_str!(concat!("../../testdata/http1/", $name, ".golden")),
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

const RAW_FIXTURES: [RawFixture; 16] = [
    fixture!("keepalive_gets"),
    fixture!("chunked_gzip"),
    fixture!("large_body"),
    fixture!("head_then_get"),
    fixture!("status_204_304"),
    fixture!("errors_404_500"),
    fixture!("expect_100"),
    fixture!("post_chunked"),
    fixture!("connection_close"),
    fixture!("python_http_server"),
    fixture!("until_close"),
    fixture!("chunked_ext_trailers"),
    fixture!("pipelining"),
    fixture!("big_header"),
    fixture!("tracecontext_secrets"),
    fixture!("upgrade_101"),
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
    let golden = golden.lines().map(parse_golden).collect();
    Fixture {
        name,
        c2s,
        s2c,
        segs,
        golden,
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
            head_end: num("head_end") as usize,
            request: HttpRequest {
                method: opt("method").expect("method"),
                target: opt("target").expect("target"),
                version_minor: num("v") as u8,
                host: opt("host"),
                user_agent: opt("ua"),
                traceparent: opt("traceparent"),
                tracestate: opt("tracestate"),
            },
        },
        Some("end") if v["aborted"].as_bool() == Some(true) => Golden::Aborted { seq: num("seq") },
        Some("end") => Golden::End {
            seq: num("seq"),
            at: v["at"].as_u64().map(|a| a as usize),
            status: num("status") as u16,
            version_minor: num("v") as u8,
            resp_body: num("resp_body"),
            req_body: num("req_body"),
        },
        _ => panic!("bad golden line {line}"),
    }
}

impl Golden {
    /// The event this golden line stands for, with the timing the replay's segmentation implies.
    pub fn event(&self, r: &Replay) -> L7Event {
        match self {
            Golden::Start {
                seq, at, request, ..
            } => {
                let ctx = r.ctx_at(REQ, *at);
                L7Event::RequestStart {
                    seq: *seq,
                    tid: ctx.tid,
                    goroutine: ctx.goroutine,
                    start_ns: ctx.first_ns,
                    request: Request::Http1(request.clone()),
                }
            }
            Golden::End {
                seq,
                at,
                status,
                version_minor,
                resp_body,
                req_body,
            } => L7Event::ExchangeEnd {
                seq: *seq,
                end_ns: match at {
                    Some(at) => r.ctx_at(RESP, *at).last_ns,
                    None => r.close_ns.expect("closed"),
                },
                outcome: Outcome::Http1(HttpEnd {
                    outcome: HttpOutcome::Response {
                        status: *status,
                        version_minor: *version_minor,
                        response_body_size: *resp_body,
                    },
                    request_body_size: *req_body,
                }),
            },
            Golden::Aborted { seq } => L7Event::ExchangeEnd {
                seq: *seq,
                end_ns: r.close_ns.expect("closed"),
                outcome: Outcome::Http1(HttpEnd {
                    outcome: HttpOutcome::Aborted,
                    request_body_size: 0,
                }),
            },
        }
    }
}

/// No value of Authorization, Cookie or Set-Cookie (all `SECRET-...` in the fixtures) may
/// reach an event.
pub(super) fn assert_no_secrets(events: &[L7Event]) {
    let dump = format!("{events:?}");
    assert!(
        !dump.contains("SECRET"),
        "a secret header leaked into the events: {dump}"
    );
}

/// Invariants every event sequence must satisfy, whatever the input: starts numbered 0, 1,
/// 2, ...; an end only for a started seq, at most once; after `close` every start has its end.
pub(super) fn check_invariants(events: &[L7Event], closed: bool) {
    let mut started = 0u64;
    let mut ended = Vec::new();
    for e in events {
        match e {
            L7Event::RequestStart { seq, .. } => {
                assert_eq!(*seq, started, "starts out of order: {events:#?}");
                started += 1;
            }
            L7Event::ExchangeEnd { seq, .. } => {
                assert!(*seq < started, "end of seq {seq} before its start");
                assert!(!ended.contains(seq), "seq {seq} ended twice");
                ended.push(*seq);
            }
        }
    }
    if closed {
        assert_eq!(ended.len() as u64, started, "close left exchanges open");
    }
}
