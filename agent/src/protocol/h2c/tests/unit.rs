//! Hand-built connections for what the recordings do not show: a 101 without `Upgrade`, a
//! WebSocket answer to an h2c offer, joining at the 101, pipelining behind the upgrade, a body
//! the 101 overtook, `HTTP2-Settings` that matter, gaps, and the bounds.

use super::{check_invariants, is_http2, Replay, REQ, RESP};
use crate::protocol::http1::Http1Conn;
use crate::protocol::{Direction, H2Outcome, HttpOutcome, L7Event, Outcome, Request, SegmentCtx};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const UPGRADE: &[u8] = b"GET /up HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n\
Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
const SWITCH: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    v.extend([kind, flags]);
    v.extend(stream.to_be_bytes());
    v.extend(payload);
    v
}

fn settings(payload: &[u8]) -> Vec<u8> {
    frame(4, 0, 0, payload)
}

/// HEADERS with END_HEADERS (and END_STREAM when `end`).
fn headers(stream: u32, end: bool, block: &[u8]) -> Vec<u8> {
    frame(1, 0x4 | u8::from(end), stream, block)
}

fn data(stream: u32, end: bool, payload: &[u8]) -> Vec<u8> {
    frame(0, u8::from(end), stream, payload)
}

/// `:method GET`, `:scheme http` (static 2, 6), then a literal `:path`.
fn get(path: &str) -> Vec<u8> {
    let mut v = vec![0x82, 0x86, 0x04, path.len() as u8];
    v.extend(path.as_bytes());
    v
}

/// `:status` as a literal with the static name (index 8).
fn status(code: &str) -> Vec<u8> {
    let mut v = vec![0x08, 3];
    v.extend(code.as_bytes());
    v
}

enum Step<'a> {
    Req(&'a [u8]),
    Resp(&'a [u8]),
    ReqGap(usize),
    RespGap(usize),
}
use crate::protocol::{H2End, HttpEnd};
use Step::{Req, ReqGap, Resp, RespGap};

/// Run the steps on a connection starting as HTTP/1, then close.
fn run(steps: &[Step]) -> Replay<'static> {
    let (mut c, mut s) = (Vec::new(), Vec::new());
    for st in steps {
        match st {
            Req(b) => c.extend_from_slice(b),
            Resp(b) => s.extend_from_slice(b),
            ReqGap(n) => c.extend(std::iter::repeat_n(0u8, *n)),
            RespGap(n) => s.extend(std::iter::repeat_n(0u8, *n)),
        }
    }
    let c: &'static [u8] = Box::leak(c.into_boxed_slice());
    let s: &'static [u8] = Box::leak(s.into_boxed_slice());
    let mut r = Replay::new(c, s, Direction::Egress);
    for st in steps {
        match st {
            Req(b) => r.deliver(REQ, b.len()),
            Resp(b) => r.deliver(RESP, b.len()),
            ReqGap(n) => {
                r.gap(REQ, *n);
            }
            RespGap(n) => {
                r.gap(RESP, *n);
            }
        }
    }
    r.close();
    check_invariants(&r.events, true);
    r
}

/// One line per event: `start SEQ h1|h2 METHOD PATH` or `end SEQ h1|h2 STATUS|aborted ...`.
fn summary(events: &[L7Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            L7Event::RequestStart {
                seq,
                request: Request::Http1(r),
                ..
            } => format!("start {seq} h1 {} {}", r.method, r.target),
            L7Event::RequestStart {
                seq,
                request: Request::Http2(r),
                ..
            } => format!(
                "start {seq} h2 {} {}",
                r.method.as_deref().unwrap_or("?"),
                r.path.as_deref().unwrap_or("?")
            ),
            L7Event::ExchangeEnd {
                seq,
                outcome:
                    Outcome::Http1(HttpEnd {
                        outcome,
                        request_body_size,
                    }),
                ..
            } => match outcome {
                HttpOutcome::Response { status, .. } => {
                    format!("end {seq} h1 {status} req={request_body_size}")
                }
                HttpOutcome::Aborted => format!("end {seq} h1 aborted"),
            },
            L7Event::ExchangeEnd {
                seq,
                outcome:
                    Outcome::Http2(H2End {
                        outcome,
                        request_body_size,
                    }),
                ..
            } => match outcome {
                H2Outcome::Response {
                    status,
                    response_body_size,
                    ..
                } => format!(
                    "end {seq} h2 {} body={response_body_size} req={request_body_size}",
                    status.unwrap_or(0)
                ),
                other => format!("end {seq} h2 {other:?}"),
            },
            other => panic!("unexpected event {other:?}"),
        })
        .collect()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The client's preface and SETTINGS, then a GET on stream 3.
fn client_h2(path: &str) -> Vec<u8> {
    cat(&[PREFACE, &settings(&[]), &headers(3, true, &get(path))])
}

#[test]
fn a_101_without_upgrade_follows_the_offer() {
    let server = cat(&[
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        &settings(&[]),
        &headers(1, false, &status("200")),
        &data(1, true, b"hello"),
    ]);
    let r = run(&[Req(UPGRADE), Resp(&server)]);
    assert!(is_http2(&r.conn));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        summary(&r.events),
        ["start 0 h1 GET /up", "end 0 h2 200 body=5 req=0"]
    );
}

#[test]
fn the_servers_word_decides() {
    // h2c offered, WebSocket chosen (odd, but the server decides): today's tunnel, a 101 span.
    let ws = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
    let r = run(&[
        Req(UPGRADE),
        Resp(&cat(&[
            ws,
            &settings(&[]),
            &headers(1, true, &status("200")),
        ])),
        Req(&client_h2("/x")),
    ]);
    assert!(!is_http2(&r.conn));
    assert_eq!(
        summary(&r.events),
        ["start 0 h1 GET /up", "end 0 h1 101 req=0"]
    );
    // Not offered, yet the 101 names h2c: what follows is HTTP/2, and stream 1 answers.
    let r = run(&[
        Req(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"),
        Resp(&cat(&[
            SWITCH,
            &settings(&[]),
            &headers(1, true, &status("204")),
        ])),
    ]);
    assert!(is_http2(&r.conn));
    assert_eq!(
        summary(&r.events),
        ["start 0 h1 GET /ws", "end 0 h2 204 body=0 req=0"]
    );
}

#[test]
fn joined_at_the_101() {
    // The request was never seen: nothing to end on stream 1, later streams are reported.
    let mut r = Replay::new(
        Box::leak(client_h2("/later").into_boxed_slice()),
        Box::leak(
            cat(&[
                SWITCH,
                &settings(&[]),
                &headers(1, true, &status("200")),
                &headers(3, true, &status("404")),
            ])
            .into_boxed_slice(),
        ),
        Direction::Egress,
    );
    r.deliver(RESP, SWITCH.len() + 9);
    r.deliver(REQ, r.streams[REQ].len());
    r.deliver(RESP, r.streams[RESP].len() - SWITCH.len() - 9);
    r.close();
    check_invariants(&r.events, true);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        summary(&r.events),
        ["start 3 h2 GET /later", "end 3 h2 404 body=0 req=0"]
    );
}

#[test]
fn pipelined_request_behind_the_upgrade_is_aborted() {
    let r = run(&[
        Req(&cat(&[UPGRADE, b"GET /next HTTP/1.1\r\n\r\n"])),
        Resp(&cat(&[
            SWITCH,
            &settings(&[]),
            &headers(1, true, &status("200")),
        ])),
        Req(&client_h2("/three")),
        Resp(&headers(3, true, &status("200"))),
    ]);
    assert_eq!(
        summary(&r.events),
        [
            "start 0 h1 GET /up",
            "start 1 h1 GET /next",
            "end 1 h1 aborted",
            "end 0 h2 200 body=0 req=0",
            "start 3 h2 GET /three",
            "end 3 h2 200 body=0 req=0"
        ]
    );
}

#[test]
fn a_body_the_101_overtook_is_skipped() {
    let post = b"POST /up HTTP/1.1\r\nUpgrade: h2c\r\nContent-Length: 10\r\n\r\n0123";
    let r = run(&[
        Req(post),
        Resp(&cat(&[SWITCH, &settings(&[])])),
        Req(&cat(&[b"456789", &client_h2("/three")])),
        Resp(&cat(&[
            &headers(1, false, &status("201")),
            &data(1, true, b"ok"),
            &headers(3, true, &status("200")),
        ])),
    ]);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        summary(&r.events),
        [
            "start 0 h1 POST /up",
            "start 3 h2 GET /three",
            "end 0 h2 201 body=2 req=4",
            "end 3 h2 200 body=0 req=0"
        ]
    );
}

#[test]
fn http2_settings_govern_the_servers_first_frames() {
    // The client allows 32 KiB frames (SETTINGS_MAX_FRAME_SIZE = 0x8000) in HTTP2-Settings
    // only; the server's 20000-byte DATA frame comes before the client's SETTINGS is seen.
    let big = vec![b'x'; 20_000];
    let server = cat(&[
        SWITCH,
        &settings(&[]),
        &headers(1, false, &status("200")),
        &data(1, true, &big),
    ]);
    let upgrade = |value: &str| -> Vec<u8> {
        format!("GET / HTTP/1.1\r\nUpgrade: h2c\r\nHTTP2-Settings: {value}\r\n\r\n").into_bytes()
    };
    let with = upgrade("AAUAAIAA");
    let r = run(&[Req(&with), Resp(&server), Req(PREFACE)]);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        summary(&r.events),
        ["start 0 h1 GET /", "end 0 h2 200 body=20000 req=0"]
    );
    // Without it the frame is too large: framing is lost, the exchange aborted.
    let without = upgrade("AAMAAABk");
    let r = run(&[Req(&without), Resp(&server), Req(PREFACE)]);
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert_eq!(summary(&r.events), ["start 0 h1 GET /", "end 0 h2 Aborted"]);
}

#[test]
fn gaps_inside_the_upgraded_response_are_absorbed() {
    // A 1000-byte DATA frame with END_STREAM on stream 1: its header, then the payload.
    let mut hdr = (1000u32).to_be_bytes()[1..].to_vec();
    hdr.extend([0, 1, 0, 0, 0, 1]);
    let r = run(&[
        Req(UPGRADE),
        Resp(&cat(&[
            SWITCH,
            &settings(&[]),
            &headers(1, false, &status("200")),
            &hdr,
        ])),
        Resp(&[b'a'; 100]),
        RespGap(800),
        Resp(&[b'b'; 100]),
    ]);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        summary(&r.events),
        ["start 0 h1 GET /up", "end 0 h2 200 body=1000 req=0"]
    );
    // A gap in the client's bytes before its preface: framing unknown, the connection is given
    // up (stream 1 aborted), never misread.
    let r = run(&[
        Req(UPGRADE),
        Resp(&cat(&[SWITCH, &settings(&[])])),
        ReqGap(30),
        Req(&client_h2("/x")),
        Resp(&headers(1, true, &status("200"))),
    ]);
    assert_eq!(
        summary(&r.events),
        ["start 0 h1 GET /up", "end 0 h2 Aborted"]
    );
}

#[test]
fn held_preface_is_bounded() {
    // A "preface" that never gets its 101: held up to a head's bound, then parsed as HTTP/1
    // (an error); the refusal still answers the upgrade request.
    let mut junk = PREFACE.to_vec();
    junk.extend(std::iter::repeat_n(b'z', 70_000));
    let r = run(&[
        Req(UPGRADE),
        Req(&junk[..30_000]),
        Req(&junk[30_000..]),
        Resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ]);
    assert!(!is_http2(&r.conn));
    assert!(!r.errors.is_empty());
    assert_eq!(
        summary(&r.events)[..2],
        ["start 0 h1 GET /up", "end 0 h1 200 req=0"]
    );
    // Held bytes lost to a gap are not handed over.
    let r = run(&[
        Req(UPGRADE),
        Req(&PREFACE[..10]),
        ReqGap(14),
        Resp(&cat(&[
            SWITCH,
            &settings(&[]),
            &headers(1, true, &status("200")),
        ])),
        Req(&cat(&[&settings(&[]), &headers(3, true, &get("/x"))])),
    ]);
    assert_eq!(
        summary(&r.events),
        ["start 0 h1 GET /up", "end 0 h2 200 body=0 req=0"]
    );
}

/// Without `ConnParser` to continue it, an `Http1Conn` that saw the switch ends the upgrade
/// request's exchange as aborted at close (its events stay paired).
#[test]
fn bare_http1_parser_aborts_an_untaken_upgrade() {
    let mut p = Http1Conn::new(Direction::Egress);
    let ctx = SegmentCtx {
        tid: 1,
        goroutine: 0,
        first_ns: 10,
        last_ns: 20,
    };
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    assert_eq!(
        p.parse(Direction::Egress, UPGRADE, &ctx, &mut out, &mut errors),
        UPGRADE.len()
    );
    let server = cat(&[SWITCH, &settings(&[])]);
    assert_eq!(
        p.parse(Direction::Ingress, &server, &ctx, &mut out, &mut errors),
        SWITCH.len(),
        "the HTTP/2 bytes are not HTTP/1's"
    );
    p.close(99, &mut out);
    assert_eq!(summary(&out), ["start 0 h1 GET /up", "end 0 h1 aborted"]);
    // Taken, it is the caller's.
    let mut p = Http1Conn::new(Direction::Egress);
    let mut out = Vec::new();
    p.parse(Direction::Egress, UPGRADE, &ctx, &mut out, &mut errors);
    p.parse(Direction::Ingress, &server, &ctx, &mut out, &mut errors);
    let up = p.take_h2c_upgrade().expect("switched");
    assert_eq!(up.exchange.map(|e| e.seq), Some(0));
    assert_eq!(up.settings.len(), 18);
    p.close(99, &mut out);
    assert_eq!(summary(&out), ["start 0 h1 GET /up"]);
}
