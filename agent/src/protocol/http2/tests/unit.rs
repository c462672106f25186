//! Hand-built connections for what the recordings do not show: RST_STREAM, GOAWAY, interim
//! responses, CONTINUATION, padding and priority, push, stream overflow, gaps, garbage.

use super::{check_invariants, Replay, REQ, RESP};
use crate::protocol::http2::stream::MAX_STREAMS;
use crate::protocol::http2::MAX_BLOCK;
use crate::protocol::H2End;
use crate::protocol::{Direction, H2Outcome, L7Event, Outcome, Request};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut v = len.to_be_bytes()[1..].to_vec();
    v.extend([kind, flags]);
    v.extend(stream.to_be_bytes());
    v.extend(payload);
    v
}

/// HPACK literal without indexing, new name, raw strings (RFC 7541 section 6.2.2).
fn lit(name: &str, value: &str) -> Vec<u8> {
    let mut v = vec![0, name.len() as u8];
    v.extend(name.as_bytes());
    v.push(value.len() as u8);
    v.extend(value.as_bytes());
    v
}

fn request_block(path: &str) -> Vec<u8> {
    // :method POST (static 3), :scheme http (6), then the literals.
    let mut v = vec![0x83, 0x86];
    v.extend(lit(":path", path));
    v.extend(lit("authorization", "SECRET"));
    v.extend(lit("content-type", "application/grpc"));
    v
}

fn status_block(status: &str) -> Vec<u8> {
    lit(":status", status)
}

const SETTINGS: u8 = 4;

fn run(c2s: &[u8], s2c: &[u8]) -> Replay<'static> {
    let c: &'static [u8] = Box::leak(c2s.to_vec().into_boxed_slice());
    let s: &'static [u8] = Box::leak(s2c.to_vec().into_boxed_slice());
    let mut r = Replay::new(c, s, Direction::Egress);
    r.deliver(REQ, c.len());
    r.deliver(RESP, s.len());
    r
}

fn outcomes(r: &Replay) -> Vec<(u64, H2Outcome, u64)> {
    r.ends()
        .iter()
        .map(|e| match e {
            L7Event::ExchangeEnd {
                seq,
                outcome:
                    Outcome::Http2(H2End {
                        outcome,
                        request_body_size,
                    }),
                ..
            } => (*seq, outcome.clone(), *request_body_size),
            _ => unreachable!(),
        })
        .collect()
}

fn response(status: u16, grpc: Option<u32>, body: u64) -> H2Outcome {
    H2Outcome::Response {
        status: Some(status),
        grpc_status: grpc,
        response_body_size: body,
    }
}

#[test]
fn interim_continuation_padding_trailers() {
    let mut c = PREFACE.to_vec();
    c.extend(frame(SETTINGS, 0, 0, &[]));
    let block = request_block("/svc/M");
    // HEADERS padded + priority, the block split into a CONTINUATION.
    let mut p = vec![3, 0, 0, 0, 0, 16];
    p.extend(&block[..5]);
    p.extend([0, 0, 0]);
    c.extend(frame(1, 0x08 | 0x20, 1, &p));
    c.extend(frame(9, 0x4, 1, &block[5..]));
    // Padded DATA with END_STREAM: 5 data bytes, 2 padding.
    c.extend(frame(0, 0x1 | 0x8, 1, &[2, 1, 2, 3, 4, 5, 0, 0]));
    let mut s = frame(SETTINGS, 0, 0, &[]);
    s.extend(frame(1, 0x4, 1, &status_block("100")));
    s.extend(frame(1, 0x4, 1, &status_block("200")));
    s.extend(frame(0, 0, 1, &[0; 7]));
    s.extend(frame(1, 0x4 | 0x1, 1, &lit("grpc-status", "3")));
    let mut r = run(&c, &s);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let L7Event::RequestStart {
        request: Request::Http2(req),
        ..
    } = r.starts()[0]
    else {
        panic!()
    };
    assert_eq!(req.method.as_deref(), Some("POST"));
    assert_eq!(req.path.as_deref(), Some("/svc/M"));
    assert_eq!(req.content_type.as_deref(), Some("application/grpc"));
    assert_eq!(outcomes(&r), [(1, response(200, Some(3), 7), 5)]);
    r.close();
    check_invariants(&r.events, true);
    super::assert_no_secrets(&r.events);
}

#[test]
fn rst_stream_goaway_and_close() {
    let mut c = PREFACE.to_vec();
    for id in [1, 3, 5, 7] {
        c.extend(frame(1, 0x4 | 0x1, id, &request_block("/x")));
    }
    // The client cancels 1.
    c.extend(frame(3, 0, 1, &8u32.to_be_bytes()));
    // The server resets 3, then GOAWAY with last stream 5: 7 is not processed.
    let mut s = frame(3, 0, 3, &7u32.to_be_bytes());
    let mut g = 5u32.to_be_bytes().to_vec();
    g.extend(2u32.to_be_bytes());
    s.extend(frame(7, 0, 0, &g));
    let mut r = run(&c, &s);
    assert_eq!(r.starts().len(), 4);
    r.close();
    assert_eq!(
        outcomes(&r),
        [
            (1, H2Outcome::Reset { error_code: 8 }, 0),
            (3, H2Outcome::Reset { error_code: 7 }, 0),
            (7, H2Outcome::Reset { error_code: 2 }, 0),
            (5, H2Outcome::Aborted, 0),
        ]
    );
    check_invariants(&r.events, true);
}

#[test]
fn push_promise_keeps_hpack_in_sync() {
    let mut c = PREFACE.to_vec();
    c.extend(frame(1, 0x5, 1, &request_block("/page")));
    let mut s = Vec::new();
    // PUSH_PROMISE for stream 2 inserting ":path: /style.css" with incremental indexing
    // (name index 4): dynamic index 62 afterwards.
    let mut pp = 2u32.to_be_bytes().to_vec();
    pp.extend([0x44, 10]);
    pp.extend(b"/style.css");
    s.extend(frame(5, 0x4, 1, &pp));
    // Response on 1 refers to dynamic 62 (ignored value) and has a literal status.
    let mut b = status_block("200");
    b.push(0xbe);
    s.extend(frame(1, 0x5, 1, &b));
    s.extend(frame(1, 0x5, 2, &status_block("200")));
    let r = run(&c, &s);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(outcomes(&r), [(1, response(200, None, 0), 0)]);
}

#[test]
fn too_many_streams_abort_the_oldest() {
    let mut c = PREFACE.to_vec();
    for i in 0..(MAX_STREAMS as u32 + 2) {
        c.extend(frame(1, 0x5, 2 * i + 1, &[0x82, 0x86, 0x84]));
    }
    let mut r = run(&c, &[]);
    assert_eq!(r.conn.open_streams(), MAX_STREAMS);
    assert_eq!(
        outcomes(&r)[..2],
        [(1, H2Outcome::Aborted, 0), (3, H2Outcome::Aborted, 0)]
    );
    r.close();
    check_invariants(&r.events, true);
}

#[test]
fn garbage_stops_the_connection() {
    let mut c = PREFACE.to_vec();
    c.extend(frame(1, 0x5, 1, &request_block("/x")));
    // A 1 MiB "frame": above SETTINGS_MAX_FRAME_SIZE.
    c.extend([0x10, 0, 0, 0, 0, 0, 0, 0, 3]);
    c.extend([0; 100]);
    let s = frame(1, 0x5, 1, &status_block("200"));
    let r = run(&c, &s);
    assert_eq!(r.errors.len(), 1);
    assert_eq!(outcomes(&r), [(1, H2Outcome::Aborted, 0)]);
    check_invariants(&r.events, true);
}

#[test]
fn bad_hpack_and_oversized_blocks_are_errors() {
    let mut c = PREFACE.to_vec();
    // Index 0 is invalid (RFC 7541 section 6.1).
    c.extend(frame(1, 0x5, 1, &[0x80]));
    let r = run(&c, &[]);
    assert_eq!(r.errors.len(), 1);
    // A header block growing past the bound through CONTINUATIONs.
    let mut c = PREFACE.to_vec();
    c.extend(frame(4, 0, 0, &[0, 5, 0, 0xff, 0xff, 0xff]));
    c.extend(frame(1, 0, 1, &[0x82]));
    let chunk = vec![0u8; 60_000];
    for _ in 0..(MAX_BLOCK / chunk.len() + 1) {
        c.extend(frame(9, 0, 1, &chunk));
    }
    let mut s = frame(4, 0, 0, &[0, 5, 0, 0xff, 0xff, 0xff]);
    s.extend(frame(4, 1, 0, &[]));
    let c: &'static [u8] = Box::leak(c.into_boxed_slice());
    let s: &'static [u8] = Box::leak(s.into_boxed_slice());
    let mut r = Replay::new(c, s, Direction::Egress);
    r.deliver(RESP, s.len());
    for piece in c.chunks(4096) {
        r.deliver(REQ, piece.len());
    }
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
}

#[test]
fn gaps_inside_data_are_absorbed_elsewhere_not() {
    let mut c = PREFACE.to_vec();
    c.extend(frame(1, 0x4, 1, &request_block("/up")));
    c.extend(frame(0, 0x1, 1, &[7; 1000]));
    let mut s = frame(1, 0x4, 1, &status_block("200"));
    s.extend(frame(0, 0x1, 1, &[1; 10]));
    let c: &'static [u8] = Box::leak(c.into_boxed_slice());
    let s: &'static [u8] = Box::leak(s.into_boxed_slice());
    let data_at = c.len() - 1000;
    let mut r = Replay::new(c, s, Direction::Egress);
    r.deliver(REQ, data_at + 100);
    assert!(r.gap(REQ, 800));
    r.deliver(REQ, 100);
    r.deliver(RESP, s.len());
    assert_eq!(outcomes(&r), [(1, response(200, None, 10), 1000)]);
    // A gap over frame headers cannot be absorbed: everything open is aborted.
    let mut r = Replay::new(c, s, Direction::Egress);
    r.deliver(REQ, data_at);
    r.deliver(RESP, 5);
    assert!(!r.gap(RESP, 20));
    r.close();
    check_invariants(&r.events, true);
    assert_eq!(outcomes(&r), [(1, H2Outcome::Aborted, 0)]);
}

/// Node.js sends END_STREAM in a later empty DATA frame; curl, having the whole body by its
/// content-length, closes (or resets) first. The response is complete: not an error.
#[test]
fn body_complete_by_content_length_is_a_response_even_without_end_stream() {
    let mut c = PREFACE.to_vec();
    c.extend(frame(1, 0x4 | 0x1, 1, &request_block("/a")));
    c.extend(frame(1, 0x4 | 0x1, 3, &request_block("/b")));
    let mut head = status_block("200");
    head.extend(lit("content-length", "5"));
    let mut s = frame(1, 0x4, 1, &head);
    s.extend(frame(0, 0, 1, b"hello"));
    let mut short = status_block("200");
    short.extend(lit("content-length", "10"));
    s.extend(frame(1, 0x4, 3, &short));
    s.extend(frame(0, 0, 3, b"only"));
    let mut r = run(&c, &s);
    r.close();
    assert_eq!(
        outcomes(&r),
        [(1, response(200, None, 5), 0), (3, H2Outcome::Aborted, 0)]
    );
    check_invariants(&r.events, true);
}

/// The client's SETTINGS_HEADER_TABLE_SIZE, seen before the server's first frame, still allows
/// the server's table size update (RFC 7541 section 6.3) once the server's decoder starts.
#[test]
fn header_table_size_advertised_before_the_other_side_starts() {
    let mut c = PREFACE.to_vec();
    // SETTINGS_HEADER_TABLE_SIZE = 65536.
    c.extend(frame(SETTINGS, 0, 0, &[0, 1, 0, 1, 0, 0]));
    c.extend(frame(1, 0x4 | 0x1, 1, &request_block("/t")));
    let mut s = frame(SETTINGS, 0, 0, &[]);
    // Dynamic table size update to 65536, then :status 200 (static index 8).
    s.extend(frame(1, 0x4 | 0x1, 1, &[0x3f, 0xe1, 0xff, 0x03, 0x88]));
    let mut r = run(&c, &s);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(outcomes(&r), [(1, response(200, None, 0), 0)]);
    r.close();
    check_invariants(&r.events, true);
}
