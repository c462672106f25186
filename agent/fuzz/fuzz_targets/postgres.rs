//! Fuzz the PostgreSQL parser (and `protocol::postgres::sql`) through their public API, driven by
//! [`agent_fuzz::feed`] (a frontend and a backend stream in segments of input-chosen sizes and
//! order, with capture gaps): no panic, consumption within the buffer, unconsumed bytes
//! bounded, the event invariants (starts numbered 0, 1, ...; at most one statement open; an
//! end only after its start and only once; everything ended at close), and that every
//! statement text sanitises within its bound.
#![no_main]

use agent::protocol::postgres::{detect, PgConn};
use agent::protocol::{Request, Role};
use agent::protocol::postgres::sql;
use libfuzzer_sys::fuzz_target;

/// Largest head the parser waits for (a Parse: 64 KiB of text, 4 KiB of name), plus slack.
const MAX_UNCONSUMED: usize = 68 * 1024 + 16;

fuzz_target!(|data: &[u8]| {
    let Some(input) = agent_fuzz::split(data) else {
        return;
    };
    for role in [Role::Client, Role::Server, Role::Unknown] {
        let _ = detect(input.request_dir, role, input.requests);
        let _ = detect(input.response_dir, role, input.responses);
    }
    let mut conn = PgConn::new(input.request_dir);
    let out = agent_fuzz::feed(
        &mut conn,
        &input,
        input.requests,
        input.responses,
        MAX_UNCONSUMED,
    );
    agent_fuzz::check_numbered(&out, |request, open| {
        assert_eq!(open, 0, "one statement open at a time");
        let Request::Postgres(statement) = request else {
            panic!("not a PostgreSQL statement: {request:?}");
        };
        if let Some(text) = &statement.text {
            assert!(sql::sanitize(text).len() <= sql::MAX_SANITIZED);
            let _ = sql::operation_and_collection(text);
            let _ = sql::split_statements(text);
        }
    });
});
