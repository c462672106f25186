//! Hand-written streams for the cases real captures rarely show: framing corner cases, capture
//! gaps, garbage and resync, limits.

use super::super::body::Body;
use super::super::exchanges::MAX_PENDING;
use super::super::head::MAX_HEAD;
use super::{check_invariants, Replay, REQ, RESP};
use crate::protocol::{Direction, HttpOutcome, L7Event, Outcome, Request};

/// One line per event: `start SEQ METHOD TARGET` or `end SEQ STATUS|aborted body=N req=N`.
pub(super) fn summary(events: &[L7Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            L7Event::RequestStart {
                seq,
                request: Request::Http1(r),
                ..
            } => format!("start {seq} {} {}", r.method, r.target),
            L7Event::ExchangeEnd {
                seq,
                outcome:
                    Outcome::Http1(HttpEnd {
                        outcome,
                        request_body_size,
                    }),
                ..
            } => match outcome {
                HttpOutcome::Response {
                    status,
                    response_body_size,
                    ..
                } => {
                    format!("end {seq} {status} body={response_body_size} req={request_body_size}")
                }
                HttpOutcome::Aborted => format!("end {seq} aborted req={request_body_size}"),
            },
            other => panic!("the HTTP/1 parser emitted a non-HTTP event: {other:?}"),
        })
        .collect()
}

/// Steps of a hand-written connection.
enum Step<'a> {
    Req(&'a [u8]),
    Resp(&'a [u8]),
    ReqGap(usize),
    RespGap(usize),
}
use crate::protocol::HttpEnd;
use Step::{Req, ReqGap, Resp, RespGap};

/// Run the steps (each a segment or a gap), then close. Returns the replay and, per gap,
/// whether `skip` absorbed it.
fn run_steps<'a>(
    steps: &[Step],
    req: &'a mut Vec<u8>,
    resp: &'a mut Vec<u8>,
) -> (Replay<'a>, Vec<bool>) {
    for s in steps {
        match s {
            Req(b) => req.extend_from_slice(b),
            Resp(b) => resp.extend_from_slice(b),
            ReqGap(n) => req.extend(std::iter::repeat_n(b'?', *n)),
            RespGap(n) => resp.extend(std::iter::repeat_n(b'?', *n)),
        }
    }
    let mut r = Replay::new(req, resp, Direction::Egress);
    let mut absorbed = Vec::new();
    for s in steps {
        match s {
            Req(b) => r.deliver(REQ, b.len()),
            Resp(b) => r.deliver(RESP, b.len()),
            ReqGap(n) => absorbed.push(r.gap(REQ, *n)),
            RespGap(n) => absorbed.push(r.gap(RESP, *n)),
        }
    }
    r.close();
    check_invariants(&r.events, true);
    (r, absorbed)
}

fn events_of(steps: &[Step]) -> Vec<String> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    summary(&run_steps(steps, &mut a, &mut b).0.events)
}

const OK5: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn chunked_decoder_survives_every_split() {
    let body: &[u8] = b"5;ext=\"a b\"\r\nhello\r\n1A \t;x\r\nabcdefghijklmnopqrstuvwxyz\r\n000000000000000000001\n!\n0\r\nTrailer: x\r\nMore: y\r\n\r\nNEXT";
    let framed = body.len() - 4;
    for size in 1..=body.len() {
        let mut b = Body::chunked();
        let (mut at, mut payload) = (0, 0);
        let mut done = false;
        while at < body.len() && !done {
            let end = (at + size).min(body.len());
            let fed = b.feed(&body[at..end]).expect("valid chunked");
            at += fed.consumed;
            payload += fed.payload;
            done = fed.done;
            if !done {
                assert_eq!(at, end, "must consume everything while the body lasts");
            }
        }
        assert!(done);
        assert_eq!((at, payload), (framed, 5 + 26 + 1), "segment size {size}");
    }
}

#[test]
fn chunked_decoder_rejects_bad_framing() {
    for bad in [
        &b"g\r\n"[..],
        b"10000000000000000\r\n", // 2^64: one hex digit too many
        b"5\r\nhelloX",
        b"5 x\r\n",
        b"5;a\x01b\r\n",
        b"5\rX",
        b"0\r\n\rX",
    ] {
        let err = Body::chunked()
            .feed(bad)
            .expect_err(&format!("{bad:?} must fail"));
        assert!(err.at < bad.len());
    }
    // 16 hex digits is the largest size: fine, and a gap inside it is absorbed.
    let mut b = Body::chunked();
    assert_eq!(b.feed(b"FFFFFFFFFFFFFFFF\r\n").map(|f| f.done), Ok(false));
    assert_eq!(
        b.gap(u64::MAX),
        super::super::body::Gap::Inside { done: false }
    );
    assert!(b.feed(b"\r\n0\r\n\r\n").is_ok_and(|f| f.done));
    // Size lines are bounded.
    let long = [b"1;".as_slice(), &[b'a'; 5000]].concat();
    assert!(Body::chunked().feed(&long).is_err());
}

#[test]
fn keep_alive_head_204_304_and_bodies() {
    let got = events_of(&[
        Req(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n"),
        Resp(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"),
        Req(b"GET /n HTTP/1.1\r\n\r\n"),
        Resp(b"HTTP/1.1 204 No Content\r\nContent-Length: 99\r\n\r\n"),
        Req(b"GET /m HTTP/1.1\r\n\r\n"),
        Resp(b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"),
        Req(b"POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"),
        Resp(OK5),
    ]);
    assert_eq!(
        got,
        [
            "start 0 HEAD /h",
            "end 0 200 body=0 req=0",
            "start 1 GET /n",
            "end 1 204 body=0 req=0",
            "start 2 GET /m",
            "end 2 304 body=0 req=0",
            "start 3 POST /p",
            "end 3 200 body=5 req=3"
        ]
    );
}

#[test]
fn interim_responses_do_not_end_the_exchange() {
    let got = events_of(&[
        Req(b"PUT /u HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"),
        Resp(b"HTTP/1.1 100 Continue\r\n\r\n"),
        Req(b"data"),
        Resp(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"),
        Resp(OK5),
    ]);
    assert_eq!(got, ["start 0 PUT /u", "end 0 200 body=5 req=4"]);
}

#[test]
fn upgrade_and_connect_leave_http() {
    // Pipelined request behind the upgrade: aborted; everything after 101 ignored.
    let got = events_of(&[
        Req(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nGET /x HTTP/1.1\r\n\r\n"),
        Resp(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"),
        Req(b"GET /y HTTP/1.1\r\n\r\n"),
        Resp(OK5),
    ]);
    assert_eq!(
        got,
        [
            "start 0 GET /ws",
            "start 1 GET /x",
            "end 0 101 body=0 req=0",
            "end 1 aborted req=0"
        ]
    );
    // CONNECT: a refusal keeps HTTP going, a 2xx makes a tunnel (RFC 9110 §9.3.6).
    let got = events_of(&[
        Req(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
        Resp(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"),
        Req(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n"),
        Resp(b"HTTP/1.1 200 Connection Established\r\n\r\n"),
        Req(b"\x16\x03\x01\x02\x00GET / HTTP/1.1\r\n\r\n"),
        Resp(b"\x16\x03\x03\x00\x10HTTP/1.1 200 OK\r\n\r\n"),
    ]);
    assert_eq!(
        got,
        [
            "start 0 CONNECT example.com:443",
            "end 0 407 body=0 req=0",
            "start 1 CONNECT example.com:443",
            "end 1 200 body=0 req=0"
        ]
    );
}

#[test]
fn until_close_response_completes_at_close() {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (r, _) = run_steps(
        &[
            Req(b"GET / HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"),
            Resp(b"HTTP/1.0 200 OK\r\n\r\nsome"),
            Resp(b" more"),
        ],
        &mut a,
        &mut b,
    );
    assert_eq!(
        summary(&r.events),
        [
            "start 0 GET /",
            "start 1 GET /2",
            "end 0 200 body=9 req=0",
            "end 1 aborted req=0"
        ]
    );
    let close = r.close_ns.expect("closed");
    assert!(r
        .ends()
        .iter()
        .all(|e| matches!(e, L7Event::ExchangeEnd { end_ns, .. } if *end_ns == close)));
    // TE without final chunked, or TE in HTTP/1.0: also until close (RFC 9112 §6.3 item 4, §6.1).
    for head in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"[..],
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let got = events_of(&[
            Req(b"GET / HTTP/1.1\r\n\r\n"),
            Resp(head),
            Resp(b"0\r\n\r\n"),
        ]);
        assert_eq!(got, ["start 0 GET /", "end 0 200 body=5 req=0"]);
    }
}

#[test]
fn after_close_nothing_is_reported() {
    let mut r = Replay::new(b"GET / HTTP/1.1\r\n\r\n", OK5, Direction::Egress);
    r.close();
    r.deliver(REQ, 18);
    r.deliver(RESP, OK5.len());
    assert!(r.events.is_empty());
}

#[test]
fn request_fields_and_header_rules() {
    let req: &[u8] = b"\r\nOPTIONS * HTTP/1.0\r\nhOsT: h1\r\nHost: h2\r\nUSER-AGENT: ua\xff\r\nTraceParent: tp1\r\ntraceparent: tp2\r\n\
tracestate: a=1\r\nTRACESTATE: b=2, c=3\r\ntracestate: bad\xff\r\nAuthorization: Basic Zm9v\r\nCookie: c=1\r\n\r\n";
    let mut r = Replay::new(req, b"", Direction::Ingress);
    r.deliver(REQ, req.len());
    let [L7Event::RequestStart {
        request: Request::Http1(h),
        ..
    }] = r.events.as_slice()
    else {
        panic!("{:?}", r.events)
    };
    assert_eq!(
        (h.method.as_str(), h.target.as_str(), h.version_minor),
        ("OPTIONS", "*", 0)
    );
    assert_eq!(h.host.as_deref(), Some("h1"));
    assert_eq!(h.user_agent, None, "not UTF-8: absent");
    assert_eq!(h.traceparent.as_deref(), Some("tp1"));
    assert_eq!(h.tracestate.as_deref(), Some("a=1,b=2, c=3"));
    assert!(!format!("{:?}", r.events).contains("Zm9v"));
    // Lone LF line ends are accepted (RFC 9112 §2.2); extension methods at a boundary too.
    assert_eq!(
        events_of(&[Req(b"PROPFIND /d HTTP/1.1\nDepth: 1\n\n"), Resp(OK5)]),
        ["start 0 PROPFIND /d", "end 0 200 body=5 req=0"]
    );
}

#[test]
fn broken_request_heads_are_skipped_without_spans() {
    for bad in [
        &b"GET /\xff\xfe HTTP/1.1\r\n\r\n"[..], // target not UTF-8
        b"GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
    ] {
        // The server answers the broken request (400): that response must not be paired
        // with the request pipelined behind it.
        let got = events_of(&[
            Req(&[bad, b"GET /next HTTP/1.1\r\n\r\n"].concat()),
            Resp(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"),
            Resp(OK5),
        ]);
        assert_eq!(
            got,
            ["start 0 GET /next", "end 0 200 body=5 req=0"],
            "{bad:?}"
        );
    }
    // "42, 42" is one valid length (RFC 9110 §8.6).
    let got = events_of(&[
        Req(b"POST / HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\nok"),
        Resp(OK5),
    ]);
    assert_eq!(got, ["start 0 POST /", "end 0 200 body=5 req=2"]);
}

#[test]
fn garbage_resyncs_on_both_sides() {
    // Request side: binary junk, then a request at a line start.
    let got = events_of(&[
        Req(b"\x00\x01binary\xffGET / HTTP/1.1 not at line start\nGET /ok HTTP/1.1\r\n\r\n"),
        Resp(OK5),
    ]);
    assert_eq!(got, ["start 0 GET /ok", "end 0 200 body=5 req=0"]);
    // Response side: a garbled response aborts the oldest exchange; the next pairs right.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (r, _) = run_steps(
        &[
            Req(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"),
            Resp(b"HTTP/1.1 200 OK\r\nContent-Length: zz\r\n\r\nbody"),
            Resp(b"junk\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
        ],
        &mut a,
        &mut b,
    );
    assert_eq!(
        summary(&r.events),
        [
            "start 0 GET /1",
            "start 1 GET /2",
            "end 0 aborted req=0",
            "end 1 404 body=0 req=0"
        ]
    );
    assert_eq!(r.errors.len(), 1);
    // Responses nobody asked for are framed and dropped.
    assert_eq!(
        events_of(&[
            Resp(OK5),
            Resp(OK5),
            Req(b"GET / HTTP/1.1\r\n\r\n"),
            Resp(OK5)
        ]),
        ["start 0 GET /", "end 0 200 body=5 req=0"]
    );
}

#[test]
fn gaps_inside_bodies_are_absorbed() {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (r, absorbed) = run_steps(
        &[
            Req(b"POST /up HTTP/1.1\r\nContent-Length: 10000\r\n\r\n0123"),
            ReqGap(9000),
            Req(&[b'x'; 996]),
            Resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4000\r\nab"),
            RespGap(0x4000 - 2),
            Resp(b"\r\n0\r\n\r\n"),
            Req(b"GET /sendfile HTTP/1.1\r\n\r\n"),
            Resp(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"),
            RespGap(100000),
        ],
        &mut a,
        &mut b,
    );
    assert_eq!(absorbed, [true, true, true]);
    assert_eq!(
        summary(&r.events),
        [
            "start 0 POST /up",
            "end 0 200 body=16384 req=10000",
            "start 1 GET /sendfile",
            "end 1 200 body=100000 req=0"
        ]
    );
    // The exchange whose last byte was uncaptured ends at the gap's time.
    let gap_ctx = r.ctx_at(RESP, r.to[RESP] - 1);
    assert!(
        matches!(r.ends()[1], L7Event::ExchangeEnd { end_ns, .. } if *end_ns == gap_ctx.last_ns)
    );
}

#[test]
fn gaps_in_heads_resync_without_wrong_pairs() {
    // Request head cut: its response is skipped, the next exchange pairs right.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (r, absorbed) = run_steps(
        &[
            Req(b"GET /cut HTTP/1.1\r\nHo"),
            ReqGap(30),
            Req(b"rest\r\n\r\n"),
            Resp(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"),
            Req(b"GET /next HTTP/1.1\r\n\r\n"),
            Resp(OK5),
        ],
        &mut a,
        &mut b,
    );
    assert_eq!(absorbed, [false]);
    assert_eq!(
        summary(&r.events),
        ["start 0 GET /next", "end 0 200 body=5 req=0"]
    );
    // Response head cut: the oldest exchange is aborted, the next pairs right.
    let got = events_of(&[
        Req(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"),
        Resp(b"HTTP/1.1 200 OK\r\nConte"),
        RespGap(40),
        Resp(b"xx\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nz"),
    ]);
    assert_eq!(
        got,
        [
            "start 0 GET /1",
            "start 1 GET /2",
            "end 0 aborted req=0",
            "end 1 201 body=1 req=0"
        ]
    );
    // A gap running past the end of a body: that exchange completes, the next one is lost.
    let got = events_of(&[
        Req(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n"),
        Resp(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234"),
        RespGap(5 + 20),
        Resp(b"\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"),
    ]);
    assert_eq!(
        got,
        [
            "start 0 GET /1",
            "start 1 GET /2",
            "start 2 GET /3",
            "end 0 200 body=10 req=0",
            "end 1 aborted req=0",
            "end 2 202 body=0 req=0"
        ]
    );
    // Chunk framing lost in a gap: that exchange is aborted.
    let got = events_of(&[
        Req(b"GET /c HTTP/1.1\r\n\r\n"),
        Resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab"),
        RespGap(10),
    ]);
    assert_eq!(got, ["start 0 GET /c", "end 0 aborted req=0"]);
}

#[test]
fn pipelining_overflow_never_mispairs() {
    // 70 requests before any response: the 6 oldest are aborted, their responses skipped.
    let n = MAX_PENDING + 6;
    let req: Vec<u8> = (0..n)
        .flat_map(|i| format!("GET /{i} HTTP/1.1\r\n\r\n").into_bytes())
        .collect();
    // Response i has a body of i bytes, so each pairing is visible.
    let resp: Vec<u8> = (0..n)
        .flat_map(|i| {
            [
                format!("HTTP/1.1 200 OK\r\nContent-Length: {i}\r\n\r\n").into_bytes(),
                vec![b'b'; i],
            ]
            .concat()
        })
        .collect();
    let mut r = Replay::new(&req, &resp, Direction::Egress);
    r.deliver(REQ, req.len());
    assert_eq!(r.conn.pending(), MAX_PENDING);
    r.deliver(RESP, resp.len());
    r.close();
    check_invariants(&r.events, true);
    for e in r.ends() {
        let L7Event::ExchangeEnd {
            seq,
            outcome: Outcome::Http1(HttpEnd { outcome, .. }),
            ..
        } = e
        else {
            unreachable!()
        };
        match outcome {
            HttpOutcome::Aborted => assert!(*seq < 6),
            HttpOutcome::Response {
                response_body_size, ..
            } => assert_eq!(*response_body_size, *seq),
        }
    }
}

#[test]
fn limits_on_heads() {
    // A head that never ends is given up at MAX_HEAD.
    let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
    huge.resize(MAX_HEAD + 10, b'a');
    let mut r = Replay::new(&huge, b"", Direction::Egress);
    for at in (0..huge.len()).step_by(1000) {
        r.deliver(REQ, 1000.min(huge.len() - at));
    }
    assert_eq!(r.errors.len(), 1);
    assert!(r.events.is_empty());
    // 100 header fields are fine (second try with a bigger array), 200 are not.
    for (fields, ok) in [(100, true), (200, false)] {
        let mut req = b"GET /h HTTP/1.1\r\n".to_vec();
        for i in 0..fields {
            req.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        let mut r = Replay::new(&req, b"", Direction::Egress);
        r.deliver(REQ, req.len());
        assert_eq!(r.starts().len(), usize::from(ok), "{fields} fields");
    }
}

#[test]
fn timing_follows_the_first_segment_of_a_request() {
    let req = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut r = Replay::new(req, OK5, Direction::Egress);
    r.deliver(REQ, 5);
    r.deliver(REQ, 10);
    r.deliver(REQ, req.len() - 15);
    r.deliver(RESP, 20);
    r.deliver(RESP, OK5.len() - 20);
    let first = r.ctx_at(REQ, 0);
    let last = r.ctx_at(RESP, OK5.len() - 1);
    assert!(
        matches!(r.starts()[0], L7Event::RequestStart { tid, start_ns, .. } if *tid == first.tid && *start_ns == first.first_ns)
    );
    assert!(matches!(r.ends()[0], L7Event::ExchangeEnd { end_ns, .. } if *end_ns == last.last_ns));
}

#[test]
fn direction_none_and_empty_gaps_are_ignored() {
    let mut c = super::super::Http1Conn::new(Direction::Egress);
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    let ctx = crate::protocol::SegmentCtx {
        tid: 1,
        goroutine: 0,
        first_ns: 1,
        last_ns: 2,
    };
    assert_eq!(
        c.parse(
            Direction::None,
            b"GET / HTTP/1.1\r\n\r\n",
            &ctx,
            &mut out,
            &mut errors
        ),
        18
    );
    assert!(c.skip(Direction::None, 5, 0, &ctx, &mut out));
    assert!(out.is_empty() && errors.is_empty());
    // An empty gap loses nothing, even in the middle of a head.
    assert_eq!(
        c.parse(Direction::Egress, b"GET / HT", &ctx, &mut out, &mut errors),
        0
    );
    assert!(c.skip(Direction::Egress, 0, 8, &ctx, &mut out));
    assert_eq!(
        c.parse(
            Direction::Egress,
            b"GET / HTTP/1.1\r\n\r\n",
            &ctx,
            &mut out,
            &mut errors
        ),
        18
    );
    assert_eq!(out.len(), 1);
}
