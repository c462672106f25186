//! Fuzz the AMQP 0-9-1 parser through its public API, driven by [`agent_fuzz::feed`] (a
//! client→broker and a broker→client stream in segments of input-chosen sizes and order, with
//! capture gaps): no panic, consumption within the buffer, unconsumed bytes bounded (one held
//! frame), and the event invariants (starts numbered 0, 1, ...; an end only after its start
//! and only once; everything ended at close).
#![no_main]

use agent::protocol::amqp::{detect, AmqpConn};
use agent::protocol::Role;
use libfuzzer_sys::fuzz_target;

/// The largest frame the parser holds (RabbitMQ's default frame-max), plus slack.
const MAX_UNCONSUMED: usize = 131_072 + 16;

fuzz_target!(|data: &[u8]| {
    let Some(input) = agent_fuzz::split(data) else {
        return;
    };
    for role in [Role::Client, Role::Server, Role::Unknown] {
        let _ = detect(input.request_dir, role, input.requests);
        let _ = detect(input.response_dir, role, input.responses);
    }
    let mut conn = AmqpConn::new(input.request_dir);
    let out = agent_fuzz::feed(
        &mut conn,
        &input,
        input.requests,
        input.responses,
        MAX_UNCONSUMED,
    );
    agent_fuzz::check_numbered(&out, |_, _| {});
});
