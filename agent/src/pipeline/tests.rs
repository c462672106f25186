//! The data path from raw ring-buffer records to spans, without a kernel: records are built
//! byte for byte as the eBPF programs write them and delivered in the racy order the ring
//! buffer can produce.

use super::*;
use agent_common::Record;

pub(super) fn rec<T: Record>(v: &T) -> Vec<u8> {
    v.as_bytes().to_vec()
}
use crate::span::builder::SpanOptions;
use crate::span::model::{AttrValue, Attribute, Resource, Span, SpanKind};
use agent_common::{Direction, EventKind, SockAddr, Syscall, EVENT_VERSION};

pub(super) struct Res;
impl Resources for Res {
    fn resource(&mut self, pid: u32, _comm: &str) -> Arc<Resource> {
        Arc::new(Resource {
            attributes: vec![Attribute::new("process.pid", i64::from(pid))],
        })
    }
}

fn addr(port: u16) -> SockAddr {
    SockAddr::v4([127, 0, 0, 1], port)
}

pub(super) fn hdr(
    kind: EventKind,
    pid: u32,
    tid: u32,
    conn: u64,
    dir: Direction,
    ts: u64,
) -> EventHeader {
    EventHeader {
        kind: kind as u8,
        version: EVENT_VERSION,
        direction: dir as u8,
        _pad0: 0,
        pid,
        tid,
        _pad1: 0,
        ts_ns: ts,
        conn_id: conn,
    }
}

pub(super) fn open(pid: u32, conn: u64, role: Role, l: u16, r: u16, ts: u64) -> Vec<u8> {
    rec(&ConnOpenEvent {
        header: hdr(EventKind::ConnOpen, pid, pid, conn, Direction::None, ts),
        fd: 3,
        role: role as u8,
        family: 2,
        _pad: [0; 2],
        local: addr(l),
        remote: addr(r),
        comm: *b"test\0\0\0\0\0\0\0\0\0\0\0\0",
    })
}

pub(super) fn data(
    pid: u32,
    tid: u32,
    conn: u64,
    dir: Direction,
    enter: u64,
    exit: u64,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = rec(&DataEvent {
        header: hdr(EventKind::Data, pid, tid, conn, dir, exit),
        fd: 3,
        syscall: if dir == Direction::Egress {
            Syscall::Write as u8
        } else {
            Syscall::Read as u8
        },
        flags: 0,
        _pad: [0; 2],
        len: payload.len() as u32,
        orig_len: payload.len() as u32,
        enter_ts_ns: enter,
        goroutine: 0,
    });
    b.extend_from_slice(payload);
    b
}

pub(super) fn pipeline() -> Pipeline<Res, Vec<Span>> {
    let limits = Limits {
        max: 64,
        idle_ns: u64::MAX / 2,
        max_buffer_bytes: 65536,
    };
    Pipeline::new(
        limits,
        SpanOptions::default(),
        Res,
        Vec::new(),
        Arc::new(Telemetry::new()),
    )
}

const REQ: &[u8] = b"GET /users/7 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[test]
fn server_read_delivered_before_client_write_still_stitches() {
    let mut p = pipeline();
    p.push(&open(1, 10, Role::Client, 50000, 8080, 100));
    p.push(&open(2, 20, Role::Server, 8080, 50000, 101));
    // The server's read returned (t=205) before the client's write did (t=210), so the ring
    // holds the server record first; the client's bytes existed from t=200.
    p.push(&data(2, 2, 20, Direction::Ingress, 150, 205, REQ));
    p.push(&data(1, 1, 10, Direction::Egress, 200, 210, REQ));
    p.push(&data(2, 2, 20, Direction::Egress, 300, 310, RESP));
    p.push(&data(1, 1, 10, Direction::Ingress, 250, 320, RESP));
    assert_eq!(p.next_due(), Some(100 + HOLD_NS));
    p.process_due(320); // nothing is old enough yet
    assert!(p.sink_mut().is_empty());
    p.process_due(320 + HOLD_NS);
    let spans = p.sink_mut().clone();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let client = spans.iter().find(|s| s.kind == SpanKind::Client).unwrap();
    let server = spans.iter().find(|s| s.kind == SpanKind::Server).unwrap();
    assert_eq!(server.parent_span_id, Some(client.context.span_id));
    assert_eq!(server.context.trace_id, client.context.trace_id);
    assert_eq!(server.name, "GET /users/{id}");
}

#[test]
fn malformed_records_are_counted_not_fatal() {
    let mut p = pipeline();
    p.push(&[1, 2, 3]);
    let mut bad = open(1, 10, Role::Client, 1, 2, 5);
    bad[1] = 99; // version
    p.push(&bad);
    p.process_due(u64::MAX);
    assert_eq!(p.telemetry.get(Counter::EventsMalformed), 2);
    assert_eq!(p.telemetry.get(Counter::EventsRead), 2);
}

#[test]
fn process_exit_ends_its_connections() {
    let mut p = pipeline();
    p.push(&open(1, 10, Role::Client, 50000, 8080, 100));
    p.push(&data(1, 1, 10, Direction::Egress, 200, 210, REQ));
    p.push(&rec(&agent_common::ProcExitEvent {
        header: hdr(EventKind::ProcExit, 1, 1, 0, Direction::None, 300),
    }));
    p.process_due(u64::MAX);
    assert_eq!(p.connections(), 0);
    assert_eq!(p.take_untracked(), vec![(1, 3)]);
    // The request never got its response: an error span, not silence.
    let spans = p.sink_mut().clone();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].status, crate::span::model::StatusCode::Error);
}

/// A recorded `curl --http2` upgrade (testdata/h2c: an upgraded GET, then streams 3 and 5 on
/// the same connection) seen from both ends on one node: detection picks HTTP/1, the parser
/// switches to HTTP/2 at the 101, and each request is one CLIENT and one SERVER span over
/// HTTP/2, the server's the child of the client's.
#[test]
fn h2c_upgrade_seen_from_both_ends() {
    let c2s: &[u8] = include_bytes!("../protocol/testdata/h2c/upgrade_then_streams.c2s");
    let s2c: &[u8] = include_bytes!("../protocol/testdata/h2c/upgrade_then_streams.s2c");
    let segs = include_str!("../protocol/testdata/h2c/upgrade_then_streams.segs");
    let mut p = pipeline();
    p.push(&open(1, 10, Role::Client, 50000, 8080, 100));
    p.push(&open(2, 20, Role::Server, 8080, 50000, 101));
    let (mut at, mut t) = ([0usize; 2], 1_000u64);
    for line in segs.lines() {
        let (side, len) = line.split_once(' ').expect("segs line");
        let len: usize = len.parse().expect("segs length");
        let (i, bytes) = if side == "c" { (0, c2s) } else { (1, s2c) };
        let chunk = &bytes[at[i]..at[i] + len];
        at[i] += len;
        // The sender's write, then the receiver's read.
        let (from, to) = if i == 0 {
            ((1, 10), (2, 20))
        } else {
            ((2, 20), (1, 10))
        };
        p.push(&data(
            from.0,
            from.0,
            from.1,
            Direction::Egress,
            t,
            t + 10,
            chunk,
        ));
        p.push(&data(
            to.0,
            to.0,
            to.1,
            Direction::Ingress,
            t + 5,
            t + 20,
            chunk,
        ));
        t += 100;
    }
    p.process_due(u64::MAX);
    let spans = p.sink_mut().clone();
    assert_eq!(spans.len(), 6, "{spans:#?}");
    for (path, status) in [("/index.html", 200), ("/missing", 404), ("/big", 200)] {
        let side = |kind: SpanKind| {
            let mine: Vec<&Span> = spans
                .iter()
                .filter(|s| {
                    s.kind == kind && s.attr("url.path") == Some(&AttrValue::Str(path.into()))
                })
                .collect();
            assert_eq!(mine.len(), 1, "{path} {kind:?}: {spans:#?}");
            mine[0]
        };
        let (client, server) = (side(SpanKind::Client), side(SpanKind::Server));
        for s in [client, server] {
            assert_eq!(
                s.attr("network.protocol.version"),
                Some(&AttrValue::Str("2".into()))
            );
            assert_eq!(
                s.attr("http.response.status_code"),
                Some(&AttrValue::Int(status))
            );
        }
        assert_eq!(server.parent_span_id, Some(client.context.span_id));
    }
}

fn worker_pipeline(
    fake: &crate::enrich::fake_proc::FakeProc,
) -> Pipeline<ResourceCache, Vec<Span>> {
    let limits = Limits {
        max: 64,
        idle_ns: u64::MAX / 2,
        max_buffer_bytes: 65536,
    };
    let cache = ResourceCache::with_proc_root("node".into(), 16, fake.root().to_owned());
    let mut p = Pipeline::new(
        limits,
        SpanOptions::default(),
        cache,
        Vec::new(),
        Arc::new(Telemetry::new()),
    );
    p.set_worker(ProcWorker::spawn("node".into(), fake.root().to_owned()).expect("thread"));
    p
}

/// Collects worker answers until `done` holds (the worker is a real thread).
fn wait_for(p: &mut Pipeline<ResourceCache, Vec<Span>>, done: impl Fn(&ResourceCache) -> bool) {
    let t = std::time::Instant::now();
    while !done(&p.resources) {
        assert!(t.elapsed().as_secs() < 10, "the worker never answered");
        std::thread::sleep(std::time::Duration::from_millis(1));
        p.collect_answers();
    }
}

fn service(s: &Span) -> Option<&AttrValue> {
    s.resource.get("service.name")
}

use crate::enrich::ResourceCache;

#[test]
fn process_metadata_is_read_ahead_on_the_worker_when_the_open_arrives() {
    let fake = crate::enrich::fake_proc::FakeProc::new();
    fake.add(
        1,
        Some("/usr/bin/app"),
        &["app"],
        &["OTEL_SERVICE_NAME=first"],
    );
    let mut p = worker_pipeline(&fake);
    p.push(&open(1, 10, Role::Client, 50000, 8080, 100));
    // Read as soon as the record arrived, long before it is processed...
    wait_for(&mut p, |r| r.contains(1));
    assert!(
        p.sink_mut().is_empty() && p.connections() == 0,
        "nothing processed yet"
    );
    // ...so what the process looked like then is what its spans say, and the pipeline thread
    // read nothing itself.
    fake.add(
        1,
        Some("/usr/bin/app"),
        &["app"],
        &["OTEL_SERVICE_NAME=later"],
    );
    p.push(&data(1, 1, 10, Direction::Egress, 200, 210, REQ));
    p.push(&data(1, 1, 10, Direction::Ingress, 250, 320, RESP));
    p.process_due(320 + HOLD_NS);
    let spans = p.sink_mut().clone();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(service(&spans[0]), Some(&AttrValue::Str("first".into())));
    assert_eq!(p.telemetry.get(Counter::ProcJobsRefused), 0);
}

#[test]
fn an_answer_for_a_process_that_exited_meanwhile_is_dropped() {
    let fake = crate::enrich::fake_proc::FakeProc::new();
    fake.add(
        2,
        Some("/usr/bin/app"),
        &["app"],
        &["OTEL_SERVICE_NAME=old"],
    );
    let mut p = worker_pipeline(&fake);
    p.push(&open(2, 20, Role::Client, 50001, 8080, 100));
    // The process exits (and its pid is reused) before the answer is collected.
    p.push(&rec(&agent_common::ProcExitEvent {
        header: hdr(EventKind::ProcExit, 2, 2, 0, Direction::None, 150),
    }));
    p.process_due(150 + HOLD_NS);
    fake.add(
        2,
        Some("/usr/bin/app"),
        &["app"],
        &["OTEL_SERVICE_NAME=new"],
    );
    std::thread::sleep(std::time::Duration::from_millis(50));
    p.collect_answers();
    assert!(!p.resources.contains(2), "a stale answer was cached");
    assert!(p.pending.is_empty());
    // The new process's span reads its own metadata.
    p.push(&open(2, 21, Role::Client, 50002, 8080, 1_000_000_000));
    wait_for(&mut p, |r| r.contains(2));
    let res = p.resources.get(2);
    assert_eq!(res.get("service.name"), Some(&AttrValue::Str("new".into())));
}

#[test]
fn payload_of_an_ignored_connection_is_not_copied_out_of_the_ring() {
    let mut p = pipeline();
    p.push(&open(1, 10, Role::Client, 50000, 22, 100));
    p.push(&data(
        1,
        1,
        10,
        Direction::Egress,
        200,
        210,
        b"SSH-2.0-OpenSSH_9.2\r\n",
    ));
    p.process_due(210 + HOLD_NS);
    assert_eq!(p.telemetry.get(Counter::ProtocolUnknown), 1);
    let big = vec![b'x'; 4000];
    p.push(&data(1, 1, 10, Direction::Egress, 300, 310, &big));
    let Some(Reverse(Held {
        ev: Owned::Data(d, buf),
        ..
    })) = p.held.peek()
    else {
        panic!("not held");
    };
    assert_eq!((d.len, buf.capacity()), (4000, 0), "copied");
    p.process_due(310 + HOLD_NS);
    // Still counted as captured (the kernel did copy it) and the connection stays known.
    assert_eq!(p.telemetry.get(Counter::BytesCaptured), (21 + 4000) as u64);
    assert_eq!(p.connections(), 1);
}

#[test]
fn a_resource_built_before_its_pod_was_known_is_rebuilt_on_the_worker_once_it_is() {
    use crate::enrich::k8s::{K8sView, PodMeta};
    const UID: &str = "5f2c1a9e-3b7d-4c8e-9a1f-2d6e8b4c0a17";
    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let fake = crate::enrich::fake_proc::FakeProc::new();
    fake.add(3, Some("/usr/bin/checkout"), &["checkout"], &[]);
    fake.set_cgroup(3, &format!("0::/kubepods/besteffort/pod{UID}/{ID}\n"));
    let view = K8sView::new(None, None);
    let mut p = worker_pipeline(&fake);
    p.resources.set_k8s(view.clone());
    p.set_worker(
        ProcWorker::spawn_with("node".into(), fake.root().to_owned(), Some(view.clone()))
            .expect("thread"),
    );
    p.push(&open(3, 30, Role::Client, 50003, 8080, 100));
    wait_for(&mut p, |r| r.contains(3));
    assert_eq!(
        p.resources.get(3).get("k8s.pod.name"),
        None,
        "the pod is not known yet"
    );
    // The watch delivers the pod: the next record of the process has it read again.
    let pod: k8s_openapi::api::core::v1::Pod =
        serde_json::from_str(include_str!("../enrich/k8s/testdata/deployment-pod.json")).unwrap();
    view.update(|s| s.upsert(PodMeta::from_pod(&pod).unwrap(), std::time::Instant::now()));
    assert!(!p.resources.contains(3));
    p.push(&data(3, 3, 30, Direction::Egress, 200, 210, REQ));
    wait_for(&mut p, |r| r.contains(3));
    p.push(&data(3, 3, 30, Direction::Ingress, 250, 320, RESP));
    p.process_due(320 + HOLD_NS);
    let spans = p.sink_mut().clone();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let r = &spans[0].resource;
    assert_eq!(
        r.get("k8s.pod.name"),
        Some(&AttrValue::Str("checkout-7d9f8b6c5d-x2k4p".into()))
    );
    assert_eq!(
        r.get("service.name"),
        Some(&AttrValue::Str("checkout".into()))
    );
    assert_eq!(
        r.get("k8s.container.name"),
        Some(&AttrValue::Str("app".into()))
    );
}
