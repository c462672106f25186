//! Tests of the h2c hand-over, through [`ConnParser`] (which performs it): the header checks,
//! the recorded upgrades (`testdata/h2c`, see `record.py` there) fed in every way, hand-built
//! corner cases and seeded mutations. This file holds the replay harness and the golden
//! files' loader.

mod fixtures;
mod fuzz;
mod headers;
mod unit;

use crate::protocol::http1::Http1Conn;
use crate::protocol::http2::MAX_BLOCK;
use crate::protocol::{
    ConnParser, Direction, H2Outcome, H2Request, HttpOutcome, HttpRequest, L7Event, Outcome,
    Request,
};
use crate::protocol::{H2End, HttpEnd};

pub(super) const REQ: usize = 0;
pub(super) const RESP: usize = 1;

/// The connection starts as HTTP/1 (what detection picks for an upgrade request) and must
/// become HTTP/2 by itself.
impl crate::protocol::testkit::ReplayParser for ConnParser {
    /// The larger bound of the two parsers: HTTP/2's buffered block (HTTP/1 holds at most a
    /// head, 64 KiB).
    const MAX_UNCONSUMED: usize = MAX_BLOCK + 9;
    fn new(request_dir: Direction) -> Self {
        ConnParser::Http1(Http1Conn::new(request_dir))
    }
}

/// The replay driver (see `protocol::testkit`) over the connection's parser.
pub(super) type Replay<'a> = crate::protocol::testkit::Replay<'a, ConnParser>;

/// One event of a golden file.
#[derive(Debug, Clone)]
pub(super) enum Golden {
    Start {
        seq: u64,
        /// Offset in c2s of the request's first byte, and of its head's last byte.
        at: usize,
        head_end: usize,
        request: Request,
    },
    End {
        seq: u64,
        /// Offset in s2c of the response's last byte.
        at: usize,
        /// Without its `end_ns`.
        outcome: Outcome,
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
            include_bytes!(concat!("../../testdata/h2c/", $name, ".c2s")).as_slice(),
            include_bytes!(concat!("../../testdata/h2c/", $name, ".s2c")).as_slice(),
            include_str!(concat!("../../testdata/h2c/", $name, ".segs")),
            include_str!(concat!("../../testdata/h2c/", $name, ".golden")),
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

const RAW_FIXTURES: [RawFixture; 6] = [
    fixture!("upgrade_get"),
    fixture!("upgrade_then_streams"),
    fixture!("upgrade_post"),
    fixture!("upgrade_after_requests"),
    fixture!("refused"),
    fixture!("websocket"),
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
    let seq = num("seq");
    match (v["ev"].as_str(), v["proto"].as_str()) {
        (Some("start"), Some("h1")) => Golden::Start {
            seq,
            at: num("at") as usize,
            head_end: num("head_end") as usize,
            request: Request::Http1(HttpRequest {
                method: opt("method").expect("method"),
                target: opt("target").expect("target"),
                version_minor: num("v") as u8,
                host: opt("host"),
                user_agent: opt("ua"),
                traceparent: opt("traceparent"),
                tracestate: opt("tracestate"),
            }),
        },
        (Some("start"), Some("h2")) => Golden::Start {
            seq,
            at: num("at") as usize,
            head_end: num("head_end") as usize,
            request: Request::Http2(H2Request {
                // The seq may be moved above the stream id space (see `Streams::upgraded`).
                stream_id: seq as u32,
                method: opt("method"),
                path: opt("path"),
                authority: opt("authority"),
                scheme: opt("scheme"),
                user_agent: opt("ua"),
                content_type: opt("content_type"),
                traceparent: opt("traceparent"),
                tracestate: opt("tracestate"),
                unknown_fields: 0,
            }),
        },
        (Some("end"), Some("h1")) => Golden::End {
            seq,
            at: num("at") as usize,
            outcome: Outcome::Http1(HttpEnd {
                outcome: HttpOutcome::Response {
                    status: num("status") as u16,
                    version_minor: num("v") as u8,
                    response_body_size: num("resp_body"),
                },
                request_body_size: num("req_body"),
            }),
        },
        (Some("end"), Some("h2")) => Golden::End {
            seq,
            at: num("at") as usize,
            outcome: Outcome::Http2(H2End {
                outcome: H2Outcome::Response {
                    status: v["status"].as_u64().map(|s| s as u16),
                    grpc_status: v["grpc_status"].as_u64().map(|s| s as u32),
                    response_body_size: num("resp_body"),
                },
                request_body_size: num("req_body"),
            }),
        },
        _ => panic!("golden line not supported by these tests: {line}"),
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
                    request: request.clone(),
                }
            }
            Golden::End { seq, at, outcome } => L7Event::ExchangeEnd {
                seq: *seq,
                end_ns: r.ctx_at(RESP, *at).last_ns,
                outcome: outcome.clone(),
            },
        }
    }
}

/// No value of Authorization or Cookie (all `SECRET-...` in the fixtures) may reach an event.
pub(super) fn assert_no_secrets(events: &[L7Event]) {
    let dump = format!("{events:?}");
    assert!(!dump.contains("SECRET"), "a secret leaked: {dump}");
}

/// Invariants whatever the input: a seq starts at most once; an end only for a started seq, at
/// most once; an HTTP/2 request never ends with an HTTP/1 outcome (an HTTP/1 request may end
/// with an HTTP/2 one: the upgrade); after `close` every start has its end.
pub(super) fn check_invariants(events: &[L7Event], closed: bool) {
    let mut started: Vec<(u64, bool)> = Vec::new();
    let mut ended: Vec<u64> = Vec::new();
    for e in events {
        match e {
            L7Event::RequestStart { seq, request, .. } => {
                assert!(
                    started.iter().all(|(s, _)| s != seq),
                    "{seq} started twice: {events:#?}"
                );
                let h2 = matches!(request, Request::Http2(_));
                assert!(h2 || matches!(request, Request::Http1(_)));
                started.push((*seq, h2));
            }
            L7Event::ExchangeEnd { seq, outcome, .. } => {
                let Some(&(_, h2)) = started.iter().find(|(s, _)| s == seq) else {
                    panic!("end of {seq} before its start: {events:#?}");
                };
                assert!(!ended.contains(seq), "{seq} ended twice: {events:#?}");
                assert!(
                    matches!(outcome, Outcome::Http2(H2End { .. }))
                        || (!h2 && matches!(outcome, Outcome::Http1(HttpEnd { .. }))),
                    "{seq}: {outcome:?}"
                );
                ended.push(*seq);
            }
        }
    }
    if closed {
        assert_eq!(ended.len(), started.len(), "close left exchanges open");
    }
}

/// Which parser the connection ended up with.
pub(super) fn is_http2(p: &ConnParser) -> bool {
    matches!(p, ConnParser::Http2(_))
}
