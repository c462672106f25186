//! Fuzz connection-level protocol detection, [`agent::protocol::ConnParser::detect`], which
//! runs first on every connection: the TLS record signature, then each parser's cheap
//! signature. The input's first byte picks the direction and role; the rest is offered as a
//! growing capture, every prefix in turn (as the agent sees bytes arrive). Checks: no panic,
//! and a TLS verdict stays TLS on every longer prefix. Not checked: that a non-TLS verdict is
//! final. The first 20 s run found a prefix judged at 19 bytes and "need more" at 20
//! (`0000 0001 0000 0300 0075 8080...`): detection is not monotonic, which is harmless as long
//! as the agent acts on the first verdict, but is worth a look in `protocol::detect`.
#![no_main]

use agent::protocol::{ConnParser, Detected, Direction, Role};
use libfuzzer_sys::fuzz_target;

/// Detection looks at the first bytes only; longer prefixes add run time, not coverage.
const MAX_PREFIX: usize = 512;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let dir = if sel & 1 == 0 {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    let role = match (sel >> 1) % 3 {
        0 => Role::Client,
        1 => Role::Server,
        _ => Role::Unknown,
    };
    let bytes = &bytes[..bytes.len().min(MAX_PREFIX)];
    let mut tls = false;
    for end in 0..=bytes.len() {
        match ConnParser::detect(dir, role, &bytes[..end]) {
            Detected::Tls => tls = true,
            _ => assert!(!tls, "TLS verdict changed at {end}"),
        }
    }
});
