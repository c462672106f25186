//! Fuzz the HTTP/1 parser through its public API, driven by [`agent_fuzz::feed`] (two streams
//! in segments of input-chosen sizes and order, with capture gaps): no panic, consumption
//! within the buffer, unconsumed bytes bounded, and the event invariants (starts numbered 0, 1,
//! ...; an end only after its start and only once; everything ended at close).
#![no_main]

use agent::protocol::http1::{detect, Http1Conn};
use agent::protocol::Role;
use libfuzzer_sys::fuzz_target;

/// Largest head the parser waits for, plus slack: unconsumed bytes never exceed it.
const MAX_UNCONSUMED: usize = 64 * 1024 + 16;

fuzz_target!(|data: &[u8]| {
    let Some(input) = agent_fuzz::split(data) else {
        return;
    };
    for role in [Role::Client, Role::Server, Role::Unknown] {
        let _ = detect(input.request_dir, role, input.requests);
        let _ = detect(input.response_dir, role, input.responses);
    }
    let mut conn = Http1Conn::new(input.request_dir);
    let out = agent_fuzz::feed(
        &mut conn,
        &input,
        input.requests,
        input.responses,
        MAX_UNCONSUMED,
    );
    agent_fuzz::check_numbered(&out, |_, _| {});
});
