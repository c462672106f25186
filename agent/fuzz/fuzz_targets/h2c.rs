//! Fuzz the connection parser across an HTTP/1.1 -> HTTP/2 upgrade (`Upgrade: h2c`): it starts
//! as HTTP/1 (as detection makes it for an upgrade request) and replaces itself with the HTTP/2
//! parser at a 101 to h2c. The two streams, optionally behind a canned upgrade request, 101 and
//! client preface (so the fuzzer reaches HTTP/2 at once), are fed by [`agent_fuzz::feed`].
//! Checks what must hold for any bytes: no panic, consumption within the buffer, unconsumed
//! bytes bounded, and the event invariants (a seq starts at most once; an end only after its
//! start, only once, and an HTTP/2 request never with an HTTP/1 outcome; everything ended at
//! close).
#![no_main]

use agent::protocol::http1::Http1Conn;
use agent::protocol::http2::MAX_BLOCK;
use agent::protocol::{ConnParser, L7Event, Outcome, Request};
use libfuzzer_sys::fuzz_target;
use agent::protocol::HttpEnd;

/// The larger of the two parsers' bounds (HTTP/2's largest buffered frame; HTTP/1 holds at most
/// a 64 KiB head).
const MAX_UNCONSUMED: usize = MAX_BLOCK + 9;

const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n\
Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
const SWITCH: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some(input) = agent_fuzz::split(data) else {
        return;
    };
    let (mut req, mut resp) = (Vec::new(), Vec::new());
    if input.control[2] & 2 != 0 {
        req.extend_from_slice(UPGRADE);
        resp.extend_from_slice(SWITCH);
        if input.control[2] & 4 != 0 {
            req.extend_from_slice(PREFACE);
        }
    }
    req.extend_from_slice(input.requests);
    resp.extend_from_slice(input.responses);

    let mut conn = ConnParser::Http1(Http1Conn::new(input.request_dir));
    let out = agent_fuzz::feed(&mut conn, &input, &req, &resp, MAX_UNCONSUMED);
    agent_fuzz::check_unordered(&out, |request, end| {
        let h2 = matches!(request, Request::Http2(_));
        let http1_outcome = matches!(
            end,
            L7Event::ExchangeEnd {
                outcome: Outcome::Http1(HttpEnd { .. }),
                ..
            }
        );
        assert!(
            !(h2 && http1_outcome),
            "HTTP/2 request with an HTTP/1 outcome"
        );
    });
});
