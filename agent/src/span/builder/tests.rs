use super::*;
use crate::conn::Limits;
use crate::span::model::AttrValue;

struct FixedResources;
impl Resources for FixedResources {
    fn resource(&mut self, pid: u32, _comm: &str) -> Arc<Resource> {
        Arc::new(Resource {
            attributes: vec![Attribute::new("process.pid", i64::from(pid))],
        })
    }
}

fn addr(port: u16) -> SockAddr {
    let mut a = SockAddr::default();
    a.addr[10] = 0xff;
    a.addr[11] = 0xff;
    a.addr[12] = 127;
    a.addr[15] = 1;
    a.port = port;
    a
}

fn meta(id: u64, pid: u32, role: Role, l: u16, r: u16) -> ConnMeta {
    ConnMeta {
        conn_id: id,
        pid,
        fd: 3,
        role,
        local: addr(l),
        remote: addr(r),
        comm: [0; 16],
    }
}

fn req(method: &str, target: &str) -> HttpRequest {
    HttpRequest {
        method: method.into(),
        target: target.into(),
        version_minor: 1,
        host: Some("127.0.0.1:8080".into()),
        ..Default::default()
    }
}

fn start(seq: u64, tid: u32, ts: u64, r: HttpRequest) -> L7Event {
    L7Event::RequestStart {
        seq,
        tid,
        start_ns: ts,
        request: Request::Http(r),
    }
}

fn end(seq: u64, ts: u64, status: u16) -> L7Event {
    L7Event::ExchangeEnd {
        seq,
        end_ns: ts,
        outcome: Outcome::Http {
            outcome: HttpOutcome::Response {
                status,
                version_minor: 1,
                response_body_size: 2,
            },
            request_body_size: 0,
        },
    }
}

struct World {
    conns: ConnTable,
    b: SpanBuilder,
    out: Vec<Span>,
    tel: Arc<Telemetry>,
}

impl World {
    fn new() -> Self {
        let tel = Arc::new(Telemetry::new());
        let conns = ConnTable::new(
            Limits {
                max: 64,
                idle_ns: u64::MAX,
                max_buffer_bytes: 65536,
            },
            tel.clone(),
        );
        Self {
            conns,
            b: SpanBuilder::new(Clock::fixed(1_000_000), true, tel.clone()),
            out: Vec::new(),
            tel,
        }
    }
    fn open(&mut self, m: ConnMeta) -> ConnMeta {
        self.conns.open(m, 0, &mut Vec::new());
        m
    }
    fn ev(&mut self, m: &ConnMeta, e: L7Event) {
        self.b
            .handle(m, e, &self.conns, &mut FixedResources, &mut self.out);
    }
    fn span(&self, pid: u32, kind: SpanKind) -> &Span {
        self.out
            .iter()
            .find(|s| {
                s.kind == kind && s.resource.get("process.pid") == Some(&AttrValue::Int(pid as i64))
            })
            .unwrap_or_else(|| panic!("no {kind:?} span of pid {pid}: {:#?}", self.out))
    }
}

#[test]
fn two_hop_chain_is_one_trace() {
    let mut w = World::new();
    // curl (pid 1) → A (pid 2) on :8080; A → B (pid 3) on :9090, both from A's handling thread 20.
    let c_cli = w.open(meta(1, 1, Role::Client, 50000, 8080));
    let a_srv = w.open(meta(2, 2, Role::Server, 8080, 50000));
    let a_cli = w.open(meta(3, 2, Role::Client, 50001, 9090));
    let b_srv = w.open(meta(4, 3, Role::Server, 9090, 50001));
    w.ev(&c_cli, start(0, 10, 100, req("GET", "/call")));
    w.ev(&a_srv, start(0, 20, 110, req("GET", "/call")));
    w.ev(&a_cli, start(0, 20, 120, req("GET", "/users/42")));
    w.ev(&b_srv, start(0, 30, 130, req("GET", "/users/42")));
    w.ev(&b_srv, end(0, 140, 200));
    w.ev(&a_cli, end(0, 150, 200));
    w.ev(&a_srv, end(0, 160, 200));
    w.ev(&c_cli, end(0, 170, 200));
    let (c, a, ac, b) = (
        w.span(1, SpanKind::Client).clone(),
        w.span(2, SpanKind::Server).clone(),
        w.span(2, SpanKind::Client).clone(),
        w.span(3, SpanKind::Server).clone(),
    );
    assert_eq!(c.parent_span_id, None);
    assert_eq!(a.parent_span_id, Some(c.context.span_id));
    assert_eq!(ac.parent_span_id, Some(a.context.span_id));
    assert_eq!(b.parent_span_id, Some(ac.context.span_id));
    for s in [&a, &ac, &b] {
        assert_eq!(s.context.trace_id, c.context.trace_id);
    }
    assert_eq!(w.tel.get(Counter::SpansStitched), 2);
    assert_eq!(b.name, "GET /users/{id}");
    assert_eq!((a.start_unix_nano, a.end_unix_nano), (1_000_110, 1_000_160));
    assert_eq!(w.b.inflight(), 0);
}

#[test]
fn explicit_traceparent_joins_and_stitching_keeps_the_finer_parent() {
    let mut w = World::new();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut r = req("GET", "/x");
    r.traceparent = Some(tp.into());
    let c_cli = w.open(meta(1, 1, Role::Client, 50000, 8080));
    let a_srv = w.open(meta(2, 2, Role::Server, 8080, 50000));
    w.ev(&c_cli, start(0, 10, 100, r.clone()));
    w.ev(&a_srv, start(0, 20, 110, r.clone()));
    w.ev(&a_srv, end(0, 120, 200));
    w.ev(&c_cli, end(0, 130, 200));
    let c = w.span(1, SpanKind::Client).clone();
    let a = w.span(2, SpanKind::Server).clone();
    assert_eq!(
        super::super::model::hex(&c.context.trace_id),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(
        c.parent_span_id.map(|p| super::super::model::hex(&p)),
        Some("00f067aa0ba902b7".into())
    );
    assert_eq!(a.parent_span_id, Some(c.context.span_id));
    assert_eq!(a.context.trace_id, c.context.trace_id);
}

#[test]
fn server_without_peer_joins_header_or_starts_trace() {
    let mut w = World::new();
    let srv = w.open(meta(2, 2, Role::Server, 8080, 40000));
    let mut r = req("POST", "/a");
    r.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".into());
    r.tracestate = Some("congo=t61rcWkgMzE".into());
    w.ev(&srv, start(0, 20, 100, r));
    w.ev(&srv, end(0, 110, 200));
    let s = w.out[0].clone();
    assert_eq!(s.context.flags, 0);
    assert_eq!(s.context.trace_state.as_deref(), Some("congo=t61rcWkgMzE"));
    assert!(s.parent_span_id.is_some());
    // Malformed: treated as absent, counted.
    let mut r = req("GET", "/b");
    r.traceparent = Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01".into());
    w.ev(&srv, start(1, 20, 200, r));
    w.ev(&srv, end(1, 210, 200));
    assert_eq!(w.out[1].parent_span_id, None);
    assert_eq!(w.tel.get(Counter::TraceparentInvalid), 1);
}

#[test]
fn header_of_another_trace_beats_stitching() {
    let mut w = World::new();
    let c_cli = w.open(meta(1, 1, Role::Client, 50000, 8080));
    let a_srv = w.open(meta(2, 2, Role::Server, 8080, 50000));
    w.ev(&c_cli, start(0, 10, 100, req("GET", "/x")));
    let mut r = req("GET", "/x");
    r.traceparent = Some("00-11111111111111111111111111111111-2222222222222222-01".into());
    w.ev(&a_srv, start(0, 20, 110, r));
    w.ev(&a_srv, end(0, 120, 200));
    assert_eq!(
        super::super::model::hex(&w.out[0].context.trace_id),
        "11111111111111111111111111111111"
    );
}

#[test]
fn statuses_follow_the_http_conventions() {
    let mut w = World::new();
    let srv = w.open(meta(2, 2, Role::Server, 8080, 40000));
    let cli = w.open(meta(1, 1, Role::Client, 40001, 9999));
    for (i, code) in [404u16, 503].into_iter().enumerate() {
        w.ev(&srv, start(i as u64, 20, 100, req("GET", "/s")));
        w.ev(&srv, end(i as u64, 110, code));
        w.ev(&cli, start(i as u64, 10, 100, req("GET", "/s")));
        w.ev(&cli, end(i as u64, 110, code));
    }
    let st: Vec<_> = w.out.iter().map(|s| (s.kind, s.status)).collect();
    assert_eq!(
        st,
        vec![
            (SpanKind::Server, StatusCode::Unset),
            (SpanKind::Client, StatusCode::Error),
            (SpanKind::Server, StatusCode::Error),
            (SpanKind::Client, StatusCode::Error)
        ]
    );
    assert_eq!(
        w.out[1].attr("error.type"),
        Some(&AttrValue::Str("404".into()))
    );
}

#[test]
fn attributes_and_redaction() {
    let mut w = World::new();
    let cli = w.open(meta(1, 1, Role::Client, 40001, 8080));
    let mut r = req("GET", "/users/42?token=abc&x=1");
    r.user_agent = Some("curl/7.88.1".into());
    w.ev(&cli, start(0, 10, 100, r));
    w.ev(&cli, end(0, 110, 200));
    let s = &w.out[0];
    let get = |k| s.attr(k).cloned();
    assert_eq!(s.name, "GET /users/{id}");
    assert_eq!(
        get("url.query"),
        Some(AttrValue::Str("token=REDACTED&x=REDACTED".into()))
    );
    let full = match get("url.full") {
        Some(AttrValue::Str(f)) => f,
        other => panic!("{other:?}"),
    };
    assert!(
        full.starts_with("http://127.0.0.1:8080/users/42?") && !full.contains("abc"),
        "{full}"
    );
    assert_eq!(get("server.port"), Some(AttrValue::Int(8080)));
    assert_eq!(
        get("network.peer.address"),
        Some(AttrValue::Str("127.0.0.1".into()))
    );
    assert_eq!(
        get("network.protocol.version"),
        Some(AttrValue::Str("1.1".into()))
    );
    assert_eq!(
        get("user_agent.original"),
        Some(AttrValue::Str("curl/7.88.1".into()))
    );
    assert_eq!(get("http.response.status_code"), Some(AttrValue::Int(200)));
}

#[test]
fn aborted_exchange_is_an_error_span_and_unknown_methods_are_other() {
    let mut w = World::new();
    let srv = w.open(meta(2, 2, Role::Server, 8080, 40000));
    w.ev(&srv, start(0, 20, 100, req("PURGE", "/cache")));
    w.ev(
        &srv,
        L7Event::ExchangeEnd {
            seq: 0,
            end_ns: 150,
            outcome: Outcome::Http {
                outcome: HttpOutcome::Aborted,
                request_body_size: 0,
            },
        },
    );
    let s = &w.out[0];
    assert_eq!(s.status, StatusCode::Error);
    assert_eq!(s.name, "HTTP /cache");
    assert_eq!(
        s.attr("http.request.method"),
        Some(&AttrValue::Str("_OTHER".into()))
    );
    assert_eq!(
        s.attr("http.request.method_original"),
        Some(&AttrValue::Str("PURGE".into()))
    );
}

#[test]
fn host_header_forms() {
    assert_eq!(
        split_host(Some("example.com:8080")),
        (Some("example.com"), Some(8080))
    );
    assert_eq!(split_host(Some("example.com")), (Some("example.com"), None));
    assert_eq!(split_host(Some("[::1]:443")), (Some("::1"), Some(443)));
    assert_eq!(split_host(Some("")), (None, None));
    assert_eq!(split_host(Some("h:notaport")), (Some("h:notaport"), None));
}
