//! Tests of the HTTP/2 parser: HPACK against RFC 7541 Appendix C, detection, the recorded
//! fixtures (`testdata/http2`, see `record.py` there) fed in every way, mid-connection joins
//! and seeded mutations. This file holds the replay harness and the golden files' loader.

mod detect;
mod fixtures;
mod fuzz;
mod hpack;
mod unit;

use super::{H2Conn, MAX_BLOCK};
use crate::protocol::{
    Direction, H2Outcome, H2Request, L7Event, Outcome, ParseError, Request, SegmentCtx,
};

pub(super) const REQ: usize = 0;
pub(super) const RESP: usize = 1;

/// Drives one connection the way the connection layer does: per side a stream of bytes
/// delivered in segments, unconsumed bytes handed back in front of the next segment. Every
/// segment has its own tid and timestamps so timing can be checked.
pub(super) struct Replay<'a> {
    pub conn: H2Conn,
    streams: [&'a [u8]; 2],
    dirs: [Direction; 2],
    from: [usize; 2],
    pub to: [usize; 2],
    segments: [Vec<(usize, SegmentCtx)>; 2],
    clock: u64,
    pub events: Vec<L7Event>,
    pub errors: Vec<ParseError>,
    pub close_ns: Option<u64>,
}

impl<'a> Replay<'a> {
    pub fn new(requests: &'a [u8], responses: &'a [u8], request_dir: Direction) -> Self {
        let response_dir = if request_dir == Direction::Egress {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        Self {
            conn: H2Conn::new(request_dir),
            streams: [requests, responses],
            dirs: [request_dir, response_dir],
            from: [0; 2],
            to: [0; 2],
            segments: [Vec::new(), Vec::new()],
            clock: 0,
            events: Vec::new(),
            errors: Vec::new(),
            close_ns: None,
        }
    }

    /// Start each side at the given offset (joining mid-connection).
    pub fn starting_at(mut self, req: usize, resp: usize) -> Self {
        self.from = [req, resp];
        self.to = [req, resp];
        self
    }

    fn next_ctx(&mut self) -> SegmentCtx {
        self.clock += 1;
        SegmentCtx {
            tid: 1000 + self.clock as u32,
            first_ns: self.clock * 1000,
            last_ns: self.clock * 1000 + 500,
        }
    }

    pub fn deliver(&mut self, side: usize, len: usize) {
        let ctx = self.next_ctx();
        self.to[side] += len;
        assert!(self.to[side] <= self.streams[side].len(), "past the end");
        self.segments[side].push((self.to[side], ctx));
        let buf = &self.streams[side][self.from[side]..self.to[side]];
        let n = self.conn.parse(
            self.dirs[side],
            buf,
            &ctx,
            &mut self.events,
            &mut self.errors,
        );
        assert!(n <= buf.len(), "consumed {n} of {} bytes", buf.len());
        self.from[side] += n;
        assert!(
            self.to[side] - self.from[side] <= MAX_BLOCK + 9,
            "unconsumed bytes unbounded"
        );
    }

    /// The next `len` bytes of `side` move uncaptured. Returns what `skip` said.
    pub fn gap(&mut self, side: usize, len: usize) -> bool {
        let ctx = self.next_ctx();
        let unconsumed = self.to[side] - self.from[side];
        let absorbed = self.conn.skip(
            self.dirs[side],
            len as u64,
            unconsumed,
            &ctx,
            &mut self.events,
        );
        self.to[side] += len;
        self.segments[side].push((self.to[side], ctx));
        self.from[side] = self.to[side];
        absorbed
    }

    pub fn close(&mut self) {
        self.clock += 1;
        let ts = self.clock * 1000 + 1;
        self.conn.close(ts, &mut self.events);
        self.close_ns = Some(ts);
    }

    pub fn ctx_at(&self, side: usize, offset: usize) -> SegmentCtx {
        self.segments[side]
            .iter()
            .find(|(end, _)| *end > offset)
            .map(|(_, ctx)| *ctx)
            .expect("offset not delivered")
    }

    pub fn starts(&self) -> Vec<&L7Event> {
        self.events
            .iter()
            .filter(|e| matches!(e, L7Event::RequestStart { .. }))
            .collect()
    }

    pub fn ends(&self) -> Vec<&L7Event> {
        self.events
            .iter()
            .filter(|e| matches!(e, L7Event::ExchangeEnd { .. }))
            .collect()
    }
}

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
                outcome: Outcome::Http2 {
                    outcome: H2Outcome::Response {
                        status: *status,
                        grpc_status: *grpc_status,
                        response_body_size: *resp_body,
                    },
                    request_body_size: *req_body,
                },
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
                assert!(matches!(outcome, Outcome::Http2 { .. }));
                ended.push(*seq);
            }
        }
    }
    if closed {
        assert_eq!(ended.len(), started.len(), "close left streams open");
    }
}
