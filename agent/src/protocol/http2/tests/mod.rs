//! Tests of the HTTP/2 parser: HPACK against RFC 7541 Appendix C, detection, the recorded
//! fixtures (`testdata/http2`, see `record.py` there) fed in every way, mid-connection joins
//! and seeded mutations. This file holds the replay harness and the golden files' loader.

mod detect;
mod fixtures;
mod fuzz;
mod gap;
mod hostile;
mod hpack;
mod unit;

use super::H2Conn;
use crate::protocol::H2End;
use crate::protocol::{H2Outcome, H2Request, L7Event, Outcome, Request};

pub(super) const REQ: usize = 0;
pub(super) const RESP: usize = 1;

/// The replay driver (see `protocol::testkit`) over this parser.
pub(super) type Replay<'a> = crate::protocol::testkit::Replay<'a, H2Conn>;

/// One event of a golden file.
#[derive(Debug, Clone)]
pub(super) enum Golden {
    Start {
        seq: u64,
        at: usize,
        head_end: usize,
        request: H2Request,
    },
    End {
        seq: u64,
        at: usize,
        status: Option<u16>,
        grpc_status: Option<u32>,
        resp_body: u64,
        req_body: u64,
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
            include_bytes!(concat!("../../testdata/http2/", $name, ".c2s")).as_slice(),
            include_bytes!(concat!("../../testdata/http2/", $name, ".s2c")).as_slice(),
            include_str!(concat!("../../testdata/http2/", $name, ".segs")),
            include_str!(concat!("../../testdata/http2/", $name, ".golden")),
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

const RAW_FIXTURES: [RawFixture; 5] = [
    fixture!("curl_get"),
    fixture!("curl_post"),
    fixture!("nghttp_nginx"),
    fixture!("h2load_concurrent"),
    fixture!("grpc_calls"),
];

pub(super) fn fixtures() -> Vec<Fixture> {
    RAW_FIXTURES
        .iter()
        .map(|&(name, c2s, s2c, segs, golden)| Fixture {
            name,
            c2s,
            s2c,
            segs: segs
                .lines()
                .map(|l| {
                    let (side, len) = l.split_once(' ').expect("segs line");
                    let side = if side == "c" { REQ } else { RESP };
                    (side, len.parse().expect("segs length"))
                })
                .collect(),
            golden: golden.lines().map(parse_golden).collect(),
        })
        .collect()
}

pub(super) fn fixture(name: &str) -> Fixture {
    fixtures()
        .into_iter()
        .find(|f| f.name == name)
        .expect("no such fixture")
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
            request: H2Request {
                stream_id: num("seq") as u32,
                method: opt("method"),
                path: opt("path"),
                authority: opt("authority"),
                scheme: opt("scheme"),
                user_agent: opt("ua"),
                content_type: opt("content_type"),
                traceparent: opt("traceparent"),
                tracestate: opt("tracestate"),
                unknown_fields: 0,
            },
        },
        Some("end") if v["kind"].as_str() == Some("response") => Golden::End {
            seq: num("seq"),
            at: num("at") as usize,
            status: v["status"].as_u64().map(|s| s as u16),
            grpc_status: v["grpc_status"].as_u64().map(|s| s as u32),
            resp_body: num("resp_body"),
            req_body: num("req_body"),
        },
        _ => panic!("golden line not supported by these tests: {line}"),
    }
}

impl Golden {
    pub fn seq(&self) -> u64 {
        match self {
            Golden::Start { seq, .. } | Golden::End { seq, .. } => *seq,
        }
    }

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
                    request: Request::Http2(request.clone()),
                }
            }
            Golden::End {
                seq,
                at,
                status,
                grpc_status,
                resp_body,
                req_body,
            } => L7Event::ExchangeEnd {
                seq: *seq,
                end_ns: r.ctx_at(RESP, *at).last_ns,
                outcome: Outcome::Http2(H2End {
                    outcome: H2Outcome::Response {
                        status: *status,
                        grpc_status: *grpc_status,
                        response_body_size: *resp_body,
                    },
                    request_body_size: *req_body,
                }),
            },
        }
    }
}

/// No value of Authorization or Cookie (all `SECRET-...` in the fixtures) may reach an event.
pub(super) fn assert_no_secrets(events: &[L7Event]) {
    let dump = format!("{events:?}");
    assert!(!dump.contains("SECRET"), "a secret leaked: {dump}");
}

/// Invariants whatever the input: stream ids of starts strictly increase; an end only for a
/// started stream, at most once; after `close` every start has its end.
pub(super) fn check_invariants(events: &[L7Event], closed: bool) {
    let mut started: Vec<u64> = Vec::new();
    let mut ended: Vec<u64> = Vec::new();
    for e in events {
        match e {
            L7Event::RequestStart { seq, request, .. } => {
                assert!(
                    started.last().is_none_or(|l| seq > l),
                    "start order: {events:#?}"
                );
                assert!(matches!(request, Request::Http2(r) if u64::from(r.stream_id) == *seq));
                started.push(*seq);
            }
            L7Event::ExchangeEnd { seq, outcome, .. } => {
                assert!(started.contains(seq), "end of {seq} before its start");
                assert!(!ended.contains(seq), "{seq} ended twice");
                assert!(matches!(outcome, Outcome::Http2(H2End { .. })));
                ended.push(*seq);
            }
        }
    }
    if closed {
        assert_eq!(ended.len(), started.len(), "close left streams open");
    }
}
