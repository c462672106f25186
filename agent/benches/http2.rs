//! Throughput of the HTTP/2 parser over the recorded connections (nginx via curl, nghttp and
//! h2load; grpcio unary, error and streaming calls), fed the way the connection layer does:
//! fixed-size segments, unconsumed bytes handed back in front of the next segment; a fresh
//! parser per connection (stream ids and HPACK state are per connection). Prints MB/s and
//! streams/s; asserts only that every stream was started and ended (so the figures measure real
//! work), never timings.
//!
//! Run: `AGENT_ALLOW_MISSING_EBPF=1 cargo bench -p agent --bench http2`

use std::time::Instant;

use agent::protocol::http2::{H2Conn, MAX_BLOCK};
use agent::protocol::{hostile, Direction, L7Event, ParseError, SegmentCtx};

macro_rules! fixture {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!("../src/protocol/testdata/http2/", $name, ".c2s")).as_slice(),
            include_bytes!(concat!("../src/protocol/testdata/http2/", $name, ".s2c")).as_slice(),
        )
    };
}

/// Feed `data` in `seg`-byte segments; returns bytes parsed.
fn feed(conn: &mut H2Conn, dir: Direction, data: &[u8], seg: usize, out: &mut Vec<L7Event>) {
    let ctx = SegmentCtx {
        tid: 1,
        goroutine: 0,
        first_ns: 1,
        last_ns: 2,
    };
    let (mut from, mut to) = (0, 0);
    let mut errors = Vec::new();
    while to < data.len() {
        to = (to + seg).min(data.len());
        from += conn.parse(dir, &data[from..to], &ctx, out, &mut errors);
    }
    assert!(
        errors
            .iter()
            .all(|e| matches!(e, ParseError::Limited { .. })),
        "{errors:?}"
    );
}

fn main() {
    let fixtures = [
        fixture!("curl_get"),
        fixture!("curl_post"),
        fixture!("nghttp_nginx"),
        fixture!("h2load_concurrent"),
        fixture!("grpc_calls"),
    ];
    for (name, c2s, s2c) in fixtures {
        for seg in [1460, 16 * 1024] {
            let bytes = c2s.len() + s2c.len();
            let rounds = (64 * 1024 * 1024 / bytes).max(20);
            let mut out = Vec::with_capacity(64);
            let mut streams = 0;
            let t = Instant::now();
            for _ in 0..rounds {
                let mut conn = H2Conn::new(Direction::Egress);
                out.clear();
                // Requests first, then responses: causal for every recorded connection.
                feed(&mut conn, Direction::Egress, c2s, seg, &mut out);
                feed(&mut conn, Direction::Ingress, s2c, seg, &mut out);
                conn.close(3, &mut out);
                let starts = out
                    .iter()
                    .filter(|e| matches!(e, L7Event::RequestStart { .. }))
                    .count();
                assert!(starts > 0 && out.len() == 2 * starts);
                streams += starts;
            }
            let secs = t.elapsed().as_secs_f64();
            println!(
                "{name:18} seg {seg:5}: {:8.1} MB/s {:10.0} streams/s",
                (bytes * rounds) as f64 / secs / 1e6,
                streams as f64 / secs
            );
        }
    }
    hostile_figures();
}

/// The worst cases a peer can send (see `protocol::hostile`): a whole connection per round
/// (preface, one request of MAX_BLOCK header bytes), in 16 KiB segments. Compare ns per byte
/// with the fixtures' MB/s above (1 ns/byte = 1000 MB/s).
fn hostile_figures() {
    let cases = [
        (
            "hpack refs to 3 KB",
            hostile::h2_request_with_block(&hostile::hpack_reference_flood(
                MAX_BLOCK - 64,
                ":path",
                3000,
            )),
        ),
        (
            "hpack name refs 3 KB",
            hostile::h2_request_with_block(&hostile::hpack_name_reference_flood(
                MAX_BLOCK - 64,
                3000,
            )),
        ),
    ];
    for (name, c2s) in cases {
        let rounds = 40;
        let mut out = Vec::new();
        let t = Instant::now();
        for _ in 0..rounds {
            let mut conn = H2Conn::new(Direction::Egress);
            out.clear();
            feed(&mut conn, Direction::Egress, &c2s, 16 * 1024, &mut out);
            conn.close(3, &mut out);
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "hostile {name:22}: {:6.2} ns/input byte ({} bytes per connection)",
            secs * 1e9 / (c2s.len() * rounds) as f64,
            c2s.len()
        );
    }
}
