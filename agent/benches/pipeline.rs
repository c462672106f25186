//! Throughput and memory of the user-space data path: raw ring-buffer records (built exactly
//! as the kernel writes them) → decode → resequence → connections → HTTP/1 → spans, with a sink
//! that drops spans (export is measured by its own tests). Prints figures; asserts nothing
//! about speed (timing assertions flake on shared machines).
//!
//! Run: cargo bench -p agent --bench pipeline

use agent::conn::Limits;
use agent::pipeline::Pipeline;
use agent::span::builder::{Resources, SpanOptions, SpanSink};
use agent::span::model::{Attribute, Resource, Span, SpanContext, SpanKind, StatusCode};
use agent::telemetry::red::{Metric, Recorder};
use agent::telemetry::{Counter, Telemetry};
use agent_common::Record;
use agent_common::{
    ConnOpenEvent, DataEvent, Direction, EventHeader, EventKind, Role, SockAddr, Syscall,
    EVENT_VERSION,
};
use std::sync::Arc;
use std::time::Instant;

fn rec<T: Record>(v: &T) -> Vec<u8> {
    v.as_bytes().to_vec()
}

struct OneResource(Arc<Resource>);
impl Resources for OneResource {
    fn resource(&mut self, _pid: u32, _comm: &str) -> Arc<Resource> {
        self.0.clone()
    }
}

#[derive(Default)]
struct Count(u64);
impl SpanSink for Count {
    fn emit(&mut self, span: Span) {
        self.0 += 1;
        std::hint::black_box(span);
    }
}

fn addr(port: u16) -> SockAddr {
    SockAddr::v4([127, 0, 0, 1], port)
}

fn hdr(kind: EventKind, pid: u32, conn: u64, dir: Direction, ts: u64) -> EventHeader {
    EventHeader {
        kind: kind as u8,
        version: EVENT_VERSION,
        direction: dir as u8,
        _pad0: 0,
        pid,
        tid: pid,
        _pad1: 0,
        ts_ns: ts,
        conn_id: conn,
    }
}

/// Connection pair `c` (ids 2c+1 and 2c+2, in two processes) uses fd 3+c in each process: one
/// live connection per (pid, fd), as in a real process (a new one on a used fd means the old
/// one's close was lost, and ends it).
fn fd_of(conn: u64) -> u32 {
    3 + ((conn - 1) / 2) as u32
}

fn data(pid: u32, conn: u64, dir: Direction, ts: u64, payload: &[u8]) -> Vec<u8> {
    let mut b = rec(&DataEvent {
        header: hdr(EventKind::Data, pid, conn, dir, ts),
        fd: fd_of(conn),
        syscall: Syscall::Write as u8,
        flags: 0,
        _pad: [0; 2],
        len: payload.len() as u32,
        orig_len: payload.len() as u32,
        enter_ts_ns: ts,
        goroutine: 0,
    });
    b.extend_from_slice(payload);
    b
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    const CONNS: u64 = 200;
    const EXCHANGES: u64 = 500;
    let req = b"GET /api/users/12345?fields=name HTTP/1.1\r\nHost: svc-b:8080\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n{\"id\":12345,\"name\":\"bench\"}";

    // Records for CONNS client/server connection pairs, EXCHANGES exchanges each, interleaved
    // across connections as a busy node would deliver them.
    let mut records: Vec<Vec<u8>> = Vec::new();
    let mut ts = 1_000u64;
    for c in 0..CONNS {
        let port = 20_000 + c as u16;
        for (id, pid, role, l, r) in [
            (2 * c + 1, 1, Role::Client, port, 8080),
            (2 * c + 2, 2, Role::Server, 8080, port),
        ] {
            records.push(rec(&ConnOpenEvent {
                header: hdr(EventKind::ConnOpen, pid, id, Direction::None, ts),
                fd: fd_of(id),
                role: role as u8,
                family: 2,
                _pad: [0; 2],
                local: addr(l),
                remote: addr(r),
                comm: [0; 16],
            }));
        }
    }
    for _ in 0..EXCHANGES {
        for c in 0..CONNS {
            let (cli, srv) = (2 * c + 1, 2 * c + 2);
            ts += 10;
            records.push(data(1, cli, Direction::Egress, ts, req));
            records.push(data(2, srv, Direction::Ingress, ts + 1, req));
            records.push(data(2, srv, Direction::Egress, ts + 2, resp));
            records.push(data(1, cli, Direction::Ingress, ts + 3, resp));
        }
    }
    let total_bytes: usize = records.iter().map(Vec::len).sum();

    let telemetry = Arc::new(Telemetry::new());
    let resource = Arc::new(Resource {
        attributes: vec![Attribute::new("service.name", "bench")],
    });
    let limits = Limits {
        max: 65536,
        idle_ns: u64::MAX / 2,
        max_buffer_bytes: 256 * 1024,
    };
    let mut p = Pipeline::new(
        limits,
        SpanOptions::default(),
        OneResource(resource),
        Count::default(),
        telemetry.clone(),
    );
    let rss_before = peak_rss_kib();
    let start = Instant::now();
    for chunk in records.chunks(256) {
        for r in chunk {
            p.push(r);
        }
        p.process_due(u64::MAX);
    }
    let secs = start.elapsed().as_secs_f64();
    let spans = p.sink_mut().0;
    let n = records.len() as f64;
    println!(
        "pipeline: {} records ({:.1} MiB) in {:.3} s",
        records.len(),
        total_bytes as f64 / 1048576.0,
        secs
    );
    println!("  {:>12.0} records/s", n / secs);
    println!(
        "  {:>12.1} MiB/s of records",
        total_bytes as f64 / 1048576.0 / secs
    );
    println!(
        "  {:>12.0} spans/s ({spans} spans, {} stitched)",
        spans as f64 / secs,
        telemetry.get(Counter::SpansStitched)
    );
    println!("  {:>12.0} ns per record", secs * 1e9 / n);
    println!(
        "  peak RSS {} KiB (before the run {} KiB, includes the {:.1} MiB of prepared records)",
        peak_rss_kib(),
        rss_before,
        total_bytes as f64 / 1048576.0
    );
    assert_eq!(
        spans,
        2 * CONNS * EXCHANGES,
        "every exchange produces a client and a server span"
    );
    red_metrics(&telemetry);
}

/// The cost of recording one finished span into the RED histograms (`telemetry::red`), which
/// the run above already paid once per span: a known label set (the steady state), with and
/// without an exemplar, and rotating over many label sets (cache lookups that miss the CPU
/// cache more often).
fn red_metrics(pipeline_telemetry: &Telemetry) {
    println!(
        "  RED series after the run: {} http.server, {} http.client",
        pipeline_telemetry.red().series(Metric::HttpServer),
        pipeline_telemetry.red().series(Metric::HttpClient)
    );
    let resource = Arc::new(Resource {
        attributes: vec![Attribute::new("service.name", "bench")],
    });
    let spans: Vec<Span> = (0..200)
        .map(|i| Span {
            context: SpanContext {
                trace_id: [i as u8; 16],
                span_id: [i as u8; 8],
                flags: 1,
                trace_state: None,
            },
            parent_span_id: None,
            name: format!("GET /api/users{i}/{{id}}"),
            kind: SpanKind::Server,
            start_unix_nano: 1_000_000_000,
            end_unix_nano: 1_000_000_000 + 3_000_000 * (i % 20),
            status: StatusCode::Unset,
            status_message: None,
            attributes: vec![
                Attribute::new("http.request.method", "GET"),
                Attribute::new("url.path", "/api/users/12345"),
                Attribute::new("url.query", "fields=name"),
                Attribute::new("url.scheme", "http"),
                Attribute::new("network.protocol.version", "1.1"),
                Attribute::new("server.address", "svc-b"),
                Attribute::new("server.port", 8080i64),
                Attribute::new("client.address", "127.0.0.1"),
                Attribute::new("client.port", 20000i64),
                Attribute::new("user_agent.original", "bench/1.0"),
                Attribute::new("http.response.status_code", 200i64),
                Attribute::new("http.response.body.size", 27i64),
            ],
            resource: resource.clone(),
        })
        .collect();
    const N: usize = 1_000_000;
    let t = Arc::new(Telemetry::new());
    let mut r = Recorder::new(t.clone());
    for (what, sets, exemplar) in [
        ("one label set, no exemplar (sampled out)", 1, false),
        ("one label set, with exemplar (exported)", 1, true),
        ("200 label sets, with exemplar", 200, true),
    ] {
        let start = Instant::now();
        for i in 0..N {
            r.record(std::hint::black_box(&spans[i % sets]), exemplar);
        }
        let ns = start.elapsed().as_secs_f64() * 1e9 / N as f64;
        println!("  {ns:>12.0} ns per span recorded in RED metrics: {what}");
    }
}
