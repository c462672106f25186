//! Fuzz the HTTP/2 parser (frames, HPACK, streams) directly: [`agent::protocol::http2::H2Conn`]
//! gets the two streams from [`agent_fuzz::feed`] (segments of input-chosen sizes and order,
//! with capture gaps). Bit 1 of `control[2]` prefixes the client preface to the request stream,
//! so the fuzzer spends its time on frames rather than rediscovering the preface; without it
//! the parser must also cope with joining a connection mid-stream (HPACK state unknown).
//! Checks: no panic, consumption within the buffer, unconsumed bytes bounded by the largest
//! buffered frame, the event invariants (a stream's seq starts at most once; an end only after
//! its start and only once; everything ended at close), and that every request is HTTP/2.
#![no_main]

use agent::protocol::http2::{detect, H2Conn, MAX_BLOCK};
use agent::protocol::{Request, Role};
use libfuzzer_sys::fuzz_target;

/// The largest header block the parser buffers, plus one frame header.
const MAX_UNCONSUMED: usize = MAX_BLOCK + 9;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some(input) = agent_fuzz::split(data) else {
        return;
    };
    for role in [Role::Client, Role::Server, Role::Unknown] {
        let _ = detect(input.request_dir, role, input.requests);
        let _ = detect(input.response_dir, role, input.responses);
    }
    let mut req = Vec::new();
    if input.control[2] & 2 != 0 {
        req.extend_from_slice(PREFACE);
    }
    req.extend_from_slice(input.requests);
    let mut conn = H2Conn::new(input.request_dir);
    let out = agent_fuzz::feed(&mut conn, &input, &req, input.responses, MAX_UNCONSUMED);
    agent_fuzz::check_unordered(&out, |request, _| {
        assert!(
            matches!(request, Request::Http2(_)),
            "not an HTTP/2 request: {request:?}"
        );
    });
});
