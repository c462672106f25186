//! Records lost to a full ring buffer, from raw records to spans: the kernel's side is
//! simulated exactly as the eBPF programs do it (`agent-ebpf/src/gap.rs`): a record that does
//! not fit is dropped and its connection marked; the connection's next record that fits
//! carries `GAP_BEFORE` and clears the mark.

use super::tests::{data, open, pipeline, Res};
use super::*;
use crate::protocol::ProtocolId;
use crate::span::builder::{CAPTURE_GAP_ATTRIBUTE, CAPTURE_GAP_MESSAGE};
use crate::span::model::{AttrValue, Span, SpanKind, StatusCode};
use crate::telemetry::ProtocolCounter;
use agent_common::{data_flags, Direction, Role};

/// The ring buffer between the simulated kernel and the pipeline.
struct Ring {
    p: Pipeline<Res, Vec<Span>>,
    /// Connections with a record lost since their last delivered one (`conn_flags::GAP`).
    marked: HashSet<u64>,
    lost: usize,
}

impl Ring {
    fn new() -> Self {
        Self {
            p: pipeline(),
            marked: HashSet::new(),
            lost: 0,
        }
    }

    /// A data record of `conn`, written to the ring unless `lose`.
    fn data(&mut self, conn: u64, mut record: Vec<u8>, lose: bool) {
        if lose {
            self.marked.insert(conn);
            self.lost += 1;
            return;
        }
        if self.marked.remove(&conn) {
            record[std::mem::offset_of!(DataEvent, flags)] |= data_flags::GAP_BEFORE;
        }
        self.p.push(&record);
    }

    fn spans(&mut self) -> Vec<Span> {
        self.p.process_due(u64::MAX);
        std::mem::take(self.p.sink_mut())
    }
}

fn str_attr<'a>(s: &'a Span, key: &str) -> Option<&'a str> {
    match s.attr(key) {
        Some(AttrValue::Str(v)) => Some(v),
        _ => None,
    }
}

fn int_attr(s: &Span, key: &str) -> Option<i64> {
    match s.attr(key) {
        Some(AttrValue::Int(v)) => Some(*v),
        _ => None,
    }
}

fn cut_by_gap(s: &Span) -> bool {
    matches!(s.attr(CAPTURE_GAP_ATTRIBUTE), Some(AttrValue::Bool(true)))
}

/// The request id in a span's `/r/{id}` path.
fn id_of(s: &Span) -> u64 {
    let path = str_attr(s, "url.path").unwrap_or_else(|| panic!("no url.path: {s:#?}"));
    path.strip_prefix("/r/")
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("not a request of the test: {path}"))
}

const STATUSES: [u16; 6] = [200, 201, 404, 500, 503, 302];
const CLIENT: (u32, u64) = (1, 10);
const SERVER: (u32, u64) = (2, 20);
const BODY: usize = 3000;

fn status_of(i: u64) -> u16 {
    STATUSES[i as usize % STATUSES.len()]
}

fn post(i: u64) -> bool {
    i.is_multiple_of(3)
}

/// Request `i` and its response as written on the wire (the request body, if any, and the
/// response body carry bytes that look like neither a request nor a status line).
fn exchange_bytes(i: u64) -> (Vec<u8>, Vec<u8>) {
    let mut req = if post(i) {
        format!("POST /r/{i} HTTP/1.1\r\nHost: svc\r\nContent-Length: {BODY}\r\n\r\n").into_bytes()
    } else {
        format!("GET /r/{i} HTTP/1.1\r\nHost: svc\r\n\r\n").into_bytes()
    };
    if post(i) {
        req.extend(std::iter::repeat_n(b'q', BODY));
    }
    let body = format!("{{\"id\":{i},\"pad\":\"{}\"}}", "x".repeat(2000));
    let mut resp = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\n\r\n",
        status_of(i),
        body.len()
    )
    .into_bytes();
    resp.extend_from_slice(body.as_bytes());
    (req, resp)
}

/// Request `i` between a client and a server on this node, keep-alive, as the syscalls move
/// it: the client writes the request at once, the server reads it in two reads; the server
/// writes the response in two writes, the client reads it in two reads. `lose(record)` says
/// which of the seven records do not fit in the ring.
fn exchange(ring: &mut Ring, i: u64, lose: &mut impl FnMut() -> bool) {
    let (req, resp) = exchange_bytes(i);
    let t = 1_000_000 * (i + 1);
    let (rq1, rq2) = req.split_at(req.len() - 1000.min(req.len() / 2));
    let (rs1, rs2) = resp.split_at(resp.len() / 2);
    let (c, s) = (CLIENT, SERVER);
    let mut rec = |conn: (u32, u64), dir, enter, exit, bytes: &[u8]| {
        let r = data(conn.0, conn.0, conn.1, dir, enter, exit, bytes);
        let l = lose();
        ring.data(conn.1, r, l);
    };
    rec(c, Direction::Egress, t, t + 10, &req);
    rec(s, Direction::Ingress, t + 5, t + 20, rq1);
    rec(s, Direction::Ingress, t + 25, t + 30, rq2);
    rec(s, Direction::Egress, t + 100, t + 110, rs1);
    rec(s, Direction::Egress, t + 120, t + 130, rs2);
    rec(c, Direction::Ingress, t + 15, t + 140, rs1);
    rec(c, Direction::Ingress, t + 145, t + 150, rs2);
}

fn connect(ring: &mut Ring) {
    ring.p
        .push(&open(CLIENT.0, CLIENT.1, Role::Client, 50000, 8080, 100));
    ring.p
        .push(&open(SERVER.0, SERVER.1, Role::Server, 8080, 50000, 101));
}

/// What every span must be, lost records or not: its request's method and path, and either
/// its response's status (complete) or marked as cut by a gap (no status at all).
fn check_span(s: &Span) {
    let i = id_of(s);
    let method = if post(i) { "POST" } else { "GET" };
    assert_eq!(str_attr(s, "http.request.method"), Some(method), "{s:#?}");
    if cut_by_gap(s) {
        assert_eq!(s.status, StatusCode::Error, "{s:#?}");
        assert_eq!(s.status_message.as_deref(), Some(CAPTURE_GAP_MESSAGE));
        assert_eq!(str_attr(s, "error.type"), Some("response_incomplete"));
        assert_eq!(int_attr(s, "http.response.status_code"), None, "{s:#?}");
        assert_eq!(int_attr(s, "http.response.body.size"), None, "{s:#?}");
    } else {
        assert_eq!(
            int_attr(s, "http.response.status_code"),
            Some(i64::from(status_of(i))),
            "request {i} got another response's status\n{s:#?}"
        );
        assert_ne!(
            str_attr(s, "error.type"),
            Some("response_incomplete"),
            "{s:#?}"
        );
        let (_, resp) = exchange_bytes(i);
        let head = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(
            int_attr(s, "http.response.body.size"),
            Some((resp.len() - head) as i64),
            "{s:#?}"
        );
    }
}

/// A burst in the middle of a keep-alive conversation loses records at random on both ends:
/// no span claims a status it did not see, no server span hangs under another request's
/// client span, and every request after the burst is traced exactly, on both ends.
#[test]
fn a_burst_of_lost_records_never_yields_a_wrong_span_and_tracing_recovers_after_it() {
    for seed in 1..=100u64 {
        let mut ring = Ring::new();
        connect(&mut ring);
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let (burst, after, total) = (20..60u64, 60u64, 90u64);
        for i in 0..total {
            let lossy = burst.contains(&i);
            let mut lose = || {
                // xorshift64: deterministic per seed.
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                lossy && rng % 4 == 0
            };
            exchange(&mut ring, i, &mut lose);
        }
        assert!(ring.lost > 0);
        let spans = ring.spans();
        let mut seen: HashMap<(u8, u64), &Span> = HashMap::new();
        for s in &spans {
            check_span(s);
            let prev = seen.insert((s.kind as u8, id_of(s)), s);
            assert!(
                prev.is_none(),
                "two {:?} spans for request {}",
                s.kind,
                id_of(s)
            );
        }
        for s in spans.iter().filter(|s| s.kind == SpanKind::Server) {
            if let Some(parent) = s.parent_span_id {
                let client = seen.get(&(SpanKind::Client as u8, id_of(s)));
                assert_eq!(
                    client.map(|c| c.context.span_id),
                    Some(parent),
                    "seed {seed}: the server span of request {} hangs under another span",
                    id_of(s)
                );
            }
        }
        for i in (0..burst.start).chain(after..total) {
            let c = seen.get(&(SpanKind::Client as u8, i));
            let s = seen.get(&(SpanKind::Server as u8, i));
            let (Some(c), Some(s)) = (c, s) else {
                panic!(
                    "seed {seed}: request {i} outside the burst lacks a span: client {:?} server {:?}",
                    c.map(|c| id_of(c)),
                    s.map(|s| id_of(s))
                );
            };
            assert!(!cut_by_gap(c) && !cut_by_gap(s), "seed {seed}: request {i}");
            assert_eq!(s.parent_span_id, Some(c.context.span_id), "request {i}");
        }
        let t = &ring.p.telemetry;
        assert!(t.protocol_get(ProtocolId::Http1, ProtocolCounter::RingGaps) > 0);
        let cut = spans.iter().filter(|s| cut_by_gap(s)).count() as u64;
        assert_eq!(
            t.protocol_get(ProtocolId::Http1, ProtocolCounter::Aborted),
            cut,
            "seed {seed}: every aborted exchange here was cut by a gap"
        );
    }
}

/// One response read lost in the middle of a keep-alive stream: the exchange it belonged to
/// ends cut by the gap (not paired with the next response), the next one is exact.
#[test]
fn a_lost_response_read_aborts_its_exchange_only() {
    let mut ring = Ring::new();
    connect(&mut ring);
    let mut n = 0;
    for i in 0..3 {
        // Request 1's second response read (the client's last record of it) is lost.
        let mut lose = || {
            n += 1;
            n == 7 + 7
        };
        exchange(&mut ring, i, &mut lose);
    }
    let spans = ring.spans();
    let client: Vec<_> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client)
        .collect();
    assert_eq!(client.len(), 3, "{spans:#?}");
    for s in &spans {
        check_span(s);
    }
    let cut: Vec<_> = client
        .iter()
        .filter(|s| cut_by_gap(s))
        .map(|s| id_of(s))
        .collect();
    assert_eq!(cut, [1]);
    // The server saw all of request 1: its span is whole.
    assert!(spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server)
        .all(|s| !cut_by_gap(s)));
    // The span ends where the hole is known to end, not later: at the entry of the syscall
    // of the connection's next record (the client's write of request 2, at 3 ms; request 1
    // began at 2 ms).
    let c1 = client.iter().find(|s| id_of(s) == 1).unwrap();
    assert_eq!(c1.end_unix_nano - c1.start_unix_nano, 1_000_000, "{c1:#?}");
}

/// A close lost to a full ring buffer: the next connection on the process's fd ends the old
/// one, whose read-until-close response is not reported complete (its end is unknown), and
/// the new connection's stream is its own.
#[test]
fn a_lost_close_is_noticed_when_the_fd_is_reused() {
    let mut ring = Ring::new();
    let p = &mut ring.p;
    p.push(&open(1, 10, Role::Client, 50000, 8080, 100));
    p.push(&data(
        1,
        1,
        10,
        Direction::Egress,
        200,
        210,
        b"GET /r/0 HTTP/1.1\r\n\r\n",
    ));
    // No Content-Length: the body runs until the close, which is lost.
    let head = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npartial";
    p.push(&data(1, 1, 10, Direction::Ingress, 220, 300, head));
    // fd 3 again, a new connection (a new id): the old one's close never came.
    p.push(&open(1, 11, Role::Client, 50001, 8080, 1_000));
    p.push(&data(
        1,
        1,
        11,
        Direction::Egress,
        1_100,
        1_110,
        b"GET /r/1 HTTP/1.1\r\n\r\n",
    ));
    let resp = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
    p.push(&data(1, 1, 11, Direction::Ingress, 1_120, 1_200, resp));
    let spans = ring.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let old = spans.iter().find(|s| id_of(s) == 0).unwrap();
    let new = spans.iter().find(|s| id_of(s) == 1).unwrap();
    assert!(cut_by_gap(old), "{old:#?}");
    assert_eq!(old.status, StatusCode::Error);
    assert_eq!(int_attr(old, "http.response.status_code"), None);
    assert!(!cut_by_gap(new));
    assert_eq!(int_attr(new, "http.response.status_code"), Some(201));
    let t = &ring.p.telemetry;
    assert_eq!(t.get(Counter::ConnsCloseLost), 1);
    assert_eq!(ring.p.connections(), 1);
}

/// Records lost before a connection's protocol is decided: the undecided bytes are dropped
/// (they cannot be joined to what follows), counted, and detection starts over; bytes after
/// the hole that no detector recognises (the rest of a body) are not taken for an unknown
/// protocol: the next request is still found.
#[test]
fn a_gap_before_detection_drops_the_undecided_bytes() {
    let mut ring = Ring::new();
    ring.p.push(&open(1, 10, Role::Client, 50000, 8080, 100));
    // Half a request line: not decided yet.
    ring.data(
        10,
        data(1, 1, 10, Direction::Egress, 200, 210, b"GE"),
        false,
    );
    let lost = b"T /r/9 HTTP/1.1\r\nContent-Length: 10\r\n\r\nbody ";
    ring.data(10, data(1, 1, 10, Direction::Egress, 300, 310, lost), true);
    // The rest of that body: no detector's signature, but no verdict either.
    ring.data(
        10,
        data(1, 1, 10, Direction::Egress, 320, 330, b"rest!"),
        false,
    );
    let req = b"GET /r/1 HTTP/1.1\r\n\r\n";
    ring.data(10, data(1, 1, 10, Direction::Egress, 400, 410, req), false);
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    ring.data(
        10,
        data(1, 1, 10, Direction::Ingress, 420, 500, resp),
        false,
    );
    let spans = ring.spans();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(id_of(&spans[0]), 1);
    assert_eq!(int_attr(&spans[0], "http.response.status_code"), Some(200));
    assert_eq!(ring.p.telemetry.get(Counter::RingGapsUnparsed), 1);
    assert_eq!(ring.p.telemetry.get(Counter::ProtocolUnknown), 0);
}

#[test]
fn the_flag_survives_decoding() {
    let mut r = data(1, 1, 10, Direction::Egress, 1, 2, b"x");
    r[std::mem::offset_of!(DataEvent, flags)] = data_flags::GAP_BEFORE;
    let Ok(crate::ebpf::event::Event::Data(d, _)) = decode(&r) else {
        panic!("not decoded")
    };
    assert_eq!(d.flags, data_flags::GAP_BEFORE);
}
