use super::*;
use crate::conn::Limits;
use crate::protocol::{H2End, HttpEnd};
use crate::protocol::{HttpOutcome, HttpRequest};
use crate::span::http::split_host;
use crate::span::model::AttrValue;
use crate::span::model::{Attribute, StatusCode};
use agent_common::SockAddr;

struct FixedResources;
impl Resources for FixedResources {
    fn resource(&mut self, pid: u32, _comm: &str) -> Arc<Resource> {
        Arc::new(Resource {
            attributes: vec![Attribute::new("process.pid", i64::from(pid))],
        })
    }
}

fn addr(port: u16) -> SockAddr {
    SockAddr::v4([127, 0, 0, 1], port)
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
        tls: false,
        gaps: 0,
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
    start_on(seq, (tid, 0), ts, r)
}

/// A request start on thread `tid` for goroutine `goroutine` (0: not known).
fn start_on(seq: u64, (tid, goroutine): (u32, u64), ts: u64, r: HttpRequest) -> L7Event {
    L7Event::RequestStart {
        seq,
        tid,
        goroutine,
        start_ns: ts,
        request: Request::Http1(r),
    }
}

fn end(seq: u64, ts: u64, status: u16) -> L7Event {
    L7Event::ExchangeEnd {
        seq,
        end_ns: ts,
        outcome: Outcome::Http1(HttpEnd {
            outcome: HttpOutcome::Response {
                status,
                version_minor: 1,
                response_body_size: 2,
            },
            request_body_size: 0,
        }),
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
            b: SpanBuilder::new(Clock::fixed(1_000_000), SpanOptions::default(), tel.clone()),
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
    // Flags other than `sampled` pass through as received (W3C Trace Context 3.2.2.5).
    r.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03".into());
    r.tracestate = Some("congo=t61rcWkgMzE".into());
    w.ev(&srv, start(0, 20, 100, r));
    w.ev(&srv, end(0, 110, 200));
    let s = w.out[0].clone();
    assert_eq!(s.context.flags, 3);
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
            outcome: Outcome::Http1(HttpEnd {
                outcome: HttpOutcome::Aborted,
                request_body_size: 0,
            }),
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

mod queue_and_db {
    use super::*;
    use crate::protocol::{AmqpMessage, AmqpOperation, AmqpOutcome, PgOutcome, PgStatement};

    fn pg(text: &str) -> Request {
        Request::Postgres(PgStatement {
            text: Some(text.into()),
            prepared_name: None,
            database: Some("shop".into()),
            user: Some("app".into()),
        })
    }

    fn msg(op: AmqpOperation, fp: u64, traceparent: Option<&str>) -> Request {
        Request::Amqp(AmqpMessage {
            operation: op,
            channel: 1,
            exchange: String::new(),
            routing_key: "orders".into(),
            delivery_tag: (op != AmqpOperation::Publish).then_some(1),
            redelivered: false,
            message_id: Some("m-1".into()),
            correlation_id: None,
            traceparent: traceparent.map(str::to_owned),
            tracestate: None,
            body_size: 12,
            fingerprint: fp,
        })
    }

    fn begin(seq: u64, tid: u32, ts: u64, request: Request) -> L7Event {
        L7Event::RequestStart {
            seq,
            tid,
            goroutine: 0,
            start_ns: ts,
            request,
        }
    }

    fn finish(seq: u64, ts: u64, outcome: Outcome) -> L7Event {
        L7Event::ExchangeEnd {
            seq,
            end_ns: ts,
            outcome,
        }
    }

    fn done() -> Outcome {
        Outcome::Postgres(PgOutcome::Complete {
            tag: "INSERT 0 1".into(),
            rows: 0,
        })
    }

    /// HTTP → service publishes + writes PostgreSQL → worker consumes, writes PostgreSQL: one
    /// trace with the producer/consumer link made from the content fingerprint alone.
    #[test]
    fn http_publish_consume_db_is_one_trace() {
        let mut w = World::new();
        let srv = w.open(meta(1, 10, Role::Server, 8080, 40000));
        let amqp_pub = w.open(meta(2, 10, Role::Client, 41000, 5672));
        let pg_svc = w.open(meta(3, 10, Role::Client, 42000, 5432));
        let broker_in = w.open(meta(4, 99, Role::Server, 5672, 41000));
        let amqp_sub = w.open(meta(5, 20, Role::Client, 43000, 5672));
        let pg_worker = w.open(meta(6, 20, Role::Client, 44000, 5432));
        let pg_server = w.open(meta(7, 98, Role::Server, 5432, 42000));

        w.ev(&srv, start(0, 11, 100, req("POST", "/orders")));
        w.ev(
            &amqp_pub,
            begin(0, 11, 110, msg(AmqpOperation::Publish, 77, None)),
        );
        w.ev(&amqp_pub, finish(0, 111, Outcome::Amqp(AmqpOutcome::Sent)));
        // The broker parses the same publish: no span from its side.
        w.ev(
            &broker_in,
            begin(0, 50, 112, msg(AmqpOperation::Publish, 77, None)),
        );
        w.ev(&broker_in, finish(0, 113, Outcome::Amqp(AmqpOutcome::Sent)));
        w.ev(
            &pg_svc,
            begin(0, 11, 120, pg("INSERT INTO orders VALUES (1, 'x')")),
        );
        w.ev(
            &pg_server,
            begin(0, 60, 121, pg("INSERT INTO orders VALUES (1, 'x')")),
        );
        w.ev(&pg_server, finish(0, 128, done()));
        w.ev(&pg_svc, finish(0, 130, done()));
        w.ev(&srv, end(0, 140, 201));
        // The worker's thread 21 receives the delivery, writes, then acks.
        w.ev(
            &amqp_sub,
            begin(0, 21, 200, msg(AmqpOperation::Deliver, 77, None)),
        );
        w.ev(
            &pg_worker,
            begin(
                0,
                21,
                210,
                pg("UPDATE orders SET state = 'done' WHERE id = 1"),
            ),
        );
        w.ev(&pg_worker, finish(0, 220, done()));
        w.ev(&amqp_sub, finish(0, 230, Outcome::Amqp(AmqpOutcome::Acked)));

        assert_eq!(w.out.len(), 5, "{:#?}", w.out);
        let by_name = |n: &str| {
            w.out
                .iter()
                .find(|s| s.name == n)
                .unwrap_or_else(|| panic!("no span {n}: {:#?}", w.out))
        };
        let server = by_name("POST /orders");
        let producer = by_name("publish orders");
        let insert = by_name("INSERT orders");
        let consumer = by_name("deliver orders");
        let update = by_name("UPDATE orders");
        assert_eq!(producer.kind, SpanKind::Producer);
        assert_eq!(consumer.kind, SpanKind::Consumer);
        assert_eq!(producer.parent_span_id, Some(server.context.span_id));
        assert_eq!(insert.parent_span_id, Some(server.context.span_id));
        assert_eq!(consumer.parent_span_id, Some(producer.context.span_id));
        assert_eq!(update.parent_span_id, Some(consumer.context.span_id));
        assert!(w
            .out
            .iter()
            .all(|s| s.context.trace_id == server.context.trace_id));
        assert_eq!(
            (consumer.start_unix_nano, consumer.end_unix_nano),
            (1_000_200, 1_000_230)
        );
        // Literals never leave the agent.
        match insert.attr("db.query.text") {
            Some(AttrValue::Str(q)) => assert!(!q.contains("'x'"), "{q}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            insert.attr("db.namespace"),
            Some(&AttrValue::Str("shop".into()))
        );
        assert_eq!(
            consumer.attr("messaging.destination.name"),
            Some(&AttrValue::Str("orders".into()))
        );
    }

    #[test]
    fn header_in_the_message_wins_over_a_mismatching_fingerprint_link() {
        let mut w = World::new();
        let sub = w.open(meta(5, 20, Role::Client, 43000, 5672));
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        w.ev(
            &sub,
            begin(0, 21, 200, msg(AmqpOperation::Deliver, 5, Some(tp))),
        );
        w.ev(&sub, finish(0, 230, Outcome::Amqp(AmqpOutcome::Acked)));
        let c = &w.out[0];
        assert_eq!(
            crate::span::model::hex(&c.context.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            c.parent_span_id.map(|p| crate::span::model::hex(&p)),
            Some("00f067aa0ba902b7".into())
        );
    }

    #[test]
    fn no_ack_delivery_keeps_its_thread_working_for_it() {
        let mut w = World::new();
        let sub = w.open(meta(5, 20, Role::Client, 43000, 5672));
        let db = w.open(meta(6, 20, Role::Client, 44000, 5432));
        w.ev(
            &sub,
            begin(0, 21, 200, msg(AmqpOperation::Deliver, 5, None)),
        );
        w.ev(&sub, finish(0, 201, Outcome::Amqp(AmqpOutcome::Received)));
        w.ev(&db, begin(0, 21, 210, pg("SELECT 1")));
        w.ev(
            &db,
            finish(
                0,
                220,
                Outcome::Postgres(PgOutcome::Error {
                    sqlstate: "42P01".into(),
                    severity: "ERROR".into(),
                }),
            ),
        );
        let (consumer, select) = (&w.out[0], &w.out[1]);
        assert_eq!(select.parent_span_id, Some(consumer.context.span_id));
        assert_eq!(select.status, StatusCode::Error);
        assert_eq!(
            select.attr("db.response.status_code"),
            Some(&AttrValue::Str("42P01".into()))
        );

        // The lingering attribution is bounded: swept after LINGER_NS, gone at process exit.
        assert_eq!(w.b.handling(), 1);
        w.b.sweep(201 + LINGER_NS - 1, |_| true);
        assert_eq!(w.b.handling(), 1);
        w.b.sweep(201 + LINGER_NS, |_| true);
        assert_eq!(w.b.handling(), 0);
        w.ev(
            &sub,
            begin(1, 21, 300, msg(AmqpOperation::Deliver, 6, None)),
        );
        assert_eq!(w.b.handling(), 1);
        w.b.process_exit(20);
        assert_eq!(w.b.handling(), 0);
    }

    #[test]
    fn statement_with_unknown_text_says_so() {
        let mut w = World::new();
        let db = w.open(meta(6, 20, Role::Client, 44000, 5432));
        let st = Request::Postgres(PgStatement {
            text: None,
            prepared_name: Some("s1".into()),
            database: None,
            user: None,
        });
        w.ev(&db, begin(0, 21, 210, st));
        w.ev(&db, finish(0, 220, done()));
        let s = &w.out[0];
        assert_eq!(s.name, "EXECUTE");
        assert_eq!(
            s.attr("db.postgresql.statement_text_unknown"),
            Some(&AttrValue::Bool(true))
        );
        assert!(s.attr("db.query.text").is_none());
    }
}

mod grpc {
    use super::*;
    use crate::protocol::{H2Outcome, H2Request};

    fn call(stream: u32) -> Request {
        Request::Http2(H2Request {
            stream_id: stream,
            method: Some("POST".into()),
            path: Some("/shop.Inventory/Reserve".into()),
            authority: Some("127.0.0.1:50051".into()),
            scheme: Some("http".into()),
            content_type: Some("application/grpc".into()),
            ..Default::default()
        })
    }

    fn grpc_end(seq: u64, code: u32) -> L7Event {
        L7Event::ExchangeEnd {
            seq,
            end_ns: 200,
            outcome: Outcome::Http2(H2End {
                outcome: H2Outcome::Response {
                    status: Some(200),
                    grpc_status: Some(code),
                    response_body_size: 5,
                },
                request_body_size: 9,
            }),
        }
    }

    /// OTel RPC conventions: NOT_FOUND (5) is a client error only; UNAVAILABLE (14) both sides.
    #[test]
    fn grpc_names_attributes_and_status_rules() {
        let mut w = World::new();
        let cli = w.open(meta(1, 1, Role::Client, 50000, 50051));
        let srv = w.open(meta(2, 2, Role::Server, 50051, 50000));
        for (stream, code) in [(1u32, 5u32), (3, 14)] {
            w.ev(
                &cli,
                L7Event::RequestStart {
                    seq: u64::from(stream),
                    tid: 10,
                    goroutine: 0,
                    start_ns: 100,
                    request: call(stream),
                },
            );
            w.ev(
                &srv,
                L7Event::RequestStart {
                    seq: u64::from(stream),
                    tid: 20,
                    goroutine: 0,
                    start_ns: 110,
                    request: call(stream),
                },
            );
            w.ev(&srv, grpc_end(u64::from(stream), code));
            w.ev(&cli, grpc_end(u64::from(stream), code));
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
        let s = &w.out[0];
        assert_eq!(s.name, "shop.Inventory/Reserve");
        assert_eq!(s.attr("rpc.system"), Some(&AttrValue::Str("grpc".into())));
        assert_eq!(
            s.attr("rpc.service"),
            Some(&AttrValue::Str("shop.Inventory".into()))
        );
        assert_eq!(
            s.attr("rpc.method"),
            Some(&AttrValue::Str("Reserve".into()))
        );
        assert_eq!(s.attr("rpc.grpc.status_code"), Some(&AttrValue::Int(5)));
        assert_eq!(
            s.attr("network.protocol.version"),
            Some(&AttrValue::Str("2".into()))
        );
        // Same-node stitching works for HTTP/2 too.
        assert_eq!(w.out[0].parent_span_id, Some(w.out[1].context.span_id));
    }

    /// Concurrent streams on one connection: each server stream joins the client stream with
    /// its own id, whatever order the starts arrive in.
    #[test]
    fn concurrent_streams_stitch_by_stream_id() {
        let mut w = World::new();
        let cli = w.open(meta(1, 1, Role::Client, 50000, 50051));
        let srv = w.open(meta(2, 2, Role::Server, 50051, 50000));
        for s in [1u64, 3, 5] {
            w.ev(
                &cli,
                L7Event::RequestStart {
                    seq: s,
                    tid: 10,
                    goroutine: 0,
                    start_ns: 100,
                    request: call(s as u32),
                },
            );
        }
        for s in [5u64, 1, 3] {
            w.ev(
                &srv,
                L7Event::RequestStart {
                    seq: s,
                    tid: 20,
                    goroutine: 0,
                    start_ns: 110,
                    request: call(s as u32),
                },
            );
        }
        for s in [1u64, 3, 5] {
            w.ev(&srv, grpc_end(s, 0));
            w.ev(&cli, grpc_end(s, 0));
        }
        for pair in w.out.chunks(2) {
            let (server, client) = (&pair[0], &pair[1]);
            assert_eq!(server.parent_span_id, Some(client.context.span_id));
        }
    }
}

/// HTTP/1.1 `Upgrade: h2c`: the upgrade request starts as HTTP/1 and ends with stream 1's
/// HTTP/2 response; later streams are plain HTTP/2.
mod h2c_upgrade {
    use super::*;
    use crate::protocol::{H2Outcome, H2Request};

    fn h2_end(seq: u64, ts: u64, status: u16) -> L7Event {
        L7Event::ExchangeEnd {
            seq,
            end_ns: ts,
            outcome: Outcome::Http2(H2End {
                outcome: H2Outcome::Response {
                    status: Some(status),
                    grpc_status: None,
                    response_body_size: 23,
                },
                request_body_size: 4,
            }),
        }
    }

    #[test]
    fn upgraded_request_is_one_http2_span_per_side_and_stitched() {
        let mut w = World::new();
        let cli = w.open(meta(1, 1, Role::Client, 50000, 8080));
        let srv = w.open(meta(2, 2, Role::Server, 8080, 50000));
        let mut r = req("POST", "/index.html?q=1");
        r.user_agent = Some("curl/7.88.1".into());
        w.ev(&cli, start(0, 10, 100, r.clone()));
        w.ev(&srv, start(0, 20, 110, r));
        let stream3 = Request::Http2(H2Request {
            stream_id: 3,
            method: Some("GET".into()),
            path: Some("/missing".into()),
            authority: Some("127.0.0.1:8080".into()),
            scheme: Some("http".into()),
            ..Default::default()
        });
        for (m, tid, ts) in [(&cli, 10, 130), (&srv, 20, 140)] {
            w.ev(
                m,
                L7Event::RequestStart {
                    seq: 3,
                    tid,
                    goroutine: 0,
                    start_ns: ts,
                    request: stream3.clone(),
                },
            );
        }
        w.ev(&srv, h2_end(0, 120, 200));
        w.ev(&cli, h2_end(0, 125, 200));
        w.ev(&srv, h2_end(3, 150, 404));
        w.ev(&cli, h2_end(3, 155, 404));
        assert_eq!(w.out.len(), 4, "{:#?}", w.out);
        assert_eq!(w.b.inflight(), 0);
        let (s, c) = (&w.out[0], &w.out[1]);
        assert_eq!((s.kind, c.kind), (SpanKind::Server, SpanKind::Client));
        for span in [s, c] {
            assert_eq!(span.name, "POST /index.html");
            let a = |k: &str| span.attr(k).cloned();
            assert_eq!(
                a("network.protocol.version"),
                Some(AttrValue::Str("2".into()))
            );
            assert_eq!(a("http.response.status_code"), Some(AttrValue::Int(200)));
            assert_eq!(
                a("http.request.method"),
                Some(AttrValue::Str("POST".into()))
            );
            assert_eq!(a("url.path"), Some(AttrValue::Str("/index.html".into())));
            assert_eq!(a("url.scheme"), Some(AttrValue::Str("http".into())));
            assert_eq!(a("http.request.body.size"), Some(AttrValue::Int(4)));
            assert_eq!(a("http.response.body.size"), Some(AttrValue::Int(23)));
            assert_eq!(
                a("user_agent.original"),
                Some(AttrValue::Str("curl/7.88.1".into()))
            );
            assert_eq!(span.status, StatusCode::Unset);
        }
        assert_eq!(
            c.attr("url.full"),
            Some(&AttrValue::Str(
                "http://127.0.0.1:8080/index.html?q=REDACTED".into()
            ))
        );
        assert_eq!((c.start_unix_nano, c.end_unix_nano), (1_000_100, 1_000_125));
        assert_eq!(s.parent_span_id, Some(c.context.span_id));
        // Stream 3: stitched by stream id, in the same way.
        let (s3, c3) = (&w.out[2], &w.out[3]);
        assert_eq!(s3.parent_span_id, Some(c3.context.span_id));
        assert_eq!(c3.status, StatusCode::Error);
        assert_eq!(
            s3.attr("http.response.status_code"),
            Some(&AttrValue::Int(404))
        );
    }
}

#[test]
fn sweep_drops_exchanges_that_can_no_longer_end() {
    let mut w = World::new();
    let srv = w.open(meta(1, 2, Role::Server, 8080, 50000));
    let cli = w.open(meta(2, 2, Role::Client, 50001, 9090));
    w.ev(&srv, start(0, 20, 100, req("GET", "/a")));
    w.ev(&cli, start(0, 20, 110, req("GET", "/b")));
    assert_eq!((w.b.inflight(), w.b.handling()), (2, 1));
    // Both connections live and young: nothing goes.
    w.b.sweep(1_000, |_| true);
    assert_eq!(w.b.inflight(), 2);
    // The server connection vanished without its parser ending the exchange: its entry and
    // the thread's attribution to it go, counted; the client's stays.
    w.b.sweep(1_000, |id| id != 1);
    assert_eq!((w.b.inflight(), w.b.handling()), (1, 0));
    assert_eq!(w.tel.get(Counter::SpansDroppedStale), 1);
    // An exchange open for longer than MAX_INFLIGHT_NS goes too.
    w.b.sweep(110 + MAX_INFLIGHT_NS - 1, |_| true);
    assert_eq!(w.b.inflight(), 1);
    w.b.sweep(110 + MAX_INFLIGHT_NS, |_| true);
    assert_eq!(w.b.inflight(), 0);
    assert_eq!(w.tel.get(Counter::SpansDroppedStale), 2);
    // Ends of swept exchanges make no span.
    w.ev(&cli, end(0, 200, 200));
    assert!(w.out.is_empty());
}

/// 40 requests in flight at once through one service (pid 2) that calls a downstream for
/// each; `tid_of(i)` is the thread request i is read on, `call_tid(i)` the one its call is
/// made on. Returns, per request, the parent of its call: Some(true) right, Some(false) wrong,
/// None none.
fn fan_out(
    w: &mut World,
    tid_of: impl Fn(u64) -> u32,
    call_tid: impl Fn(u64) -> u32,
    migrate: bool,
) -> Vec<Option<bool>> {
    fan_out_on(w, |i| (tid_of(i), 0), |i| (call_tid(i), 0), migrate)
}

/// [`fan_out`] with the (thread, goroutine) of each request and call.
fn fan_out_on(
    w: &mut World,
    tid_of: impl Fn(u64) -> (u32, u64),
    call_tid: impl Fn(u64) -> (u32, u64),
    migrate: bool,
) -> Vec<Option<bool>> {
    const N: u64 = 40;
    let mut res = MigratingResources(migrate);
    let mut conns = Vec::new();
    for i in 0..N {
        let srv = w.open(meta(100 + i, 2, Role::Server, 8080, 40000 + i as u16));
        let cli = w.open(meta(200 + i, 2, Role::Client, 41000 + i as u16, 9090));
        conns.push((srv, cli));
    }
    // Every request is read before any call is made: all in flight at once.
    for (i, (srv, _)) in conns.iter().enumerate() {
        let r = req("GET", &format!("/req/{i}"));
        w.b.handle(
            srv,
            start_on(0, tid_of(i as u64), 100 + i as u64, r),
            &w.conns,
            &mut res,
            &mut w.out,
        );
    }
    for (i, (_, cli)) in conns.iter().enumerate() {
        let r = req("GET", &format!("/down/{i}"));
        w.b.handle(
            cli,
            start_on(0, call_tid(i as u64), 200 + i as u64, r),
            &w.conns,
            &mut res,
            &mut w.out,
        );
        w.b.handle(
            cli,
            end(0, 300 + i as u64, 200),
            &w.conns,
            &mut res,
            &mut w.out,
        );
    }
    for (i, (srv, _)) in conns.iter().enumerate() {
        w.b.handle(
            srv,
            end(0, 400 + i as u64, 200),
            &w.conns,
            &mut res,
            &mut w.out,
        );
    }
    (0..N)
        .map(|i| {
            let server = w
                .out
                .iter()
                .find(|s| {
                    s.kind == SpanKind::Server
                        && s.attr("url.path") == Some(&AttrValue::Str(format!("/req/{i}")))
                })
                .expect("server span");
            let call = w
                .out
                .iter()
                .find(|s| {
                    s.kind == SpanKind::Client
                        && s.attr("url.path") == Some(&AttrValue::Str(format!("/down/{i}")))
                })
                .expect("client span");
            call.parent_span_id.map(|p| {
                p == server.context.span_id && call.context.trace_id == server.context.trace_id
            })
        })
        .collect()
}

struct MigratingResources(bool);
impl Resources for MigratingResources {
    fn resource(&mut self, pid: u32, comm: &str) -> Arc<Resource> {
        FixedResources.resource(pid, comm)
    }
    fn traits(&mut self, _pid: u32, _comm: &str) -> ProcessTraits {
        ProcessTraits {
            threads_migrate: self.0,
            sdk_traces: false,
            ..ProcessTraits::default()
        }
    }
}

#[test]
fn concurrent_requests_on_an_event_loop_give_no_parent_never_a_wrong_one() {
    let mut w = World::new();
    // Node.js / asyncio: every request and every call on the one loop thread.
    let got = fan_out(&mut w, |_| 7, |_| 7, false);
    assert!(got.iter().all(Option::is_none), "{got:?}");
    assert_eq!(w.tel.get(Counter::ParentAmbiguousThread), 40);
}

#[test]
fn concurrent_requests_one_per_thread_all_get_their_parent() {
    let mut w = World::new();
    let got = fan_out(&mut w, |i| 1000 + i as u32, |i| 1000 + i as u32, false);
    assert!(got.iter().all(|p| *p == Some(true)), "{got:?}");
    assert_eq!(w.tel.get(Counter::ParentAmbiguousThread), 0);
}

#[test]
fn go_calls_made_on_another_thread_are_never_given_a_wrong_parent() {
    // Goroutines: request i read on thread i % 3, its call written from another thread with
    // exactly one request read on it (the trap thread-based parenting falls into).
    let mut w = World::new();
    let tid_of = |i: u64| 1000 + i as u32;
    let call_tid = |i: u64| 1000 + ((i + 1) % 40) as u32;
    // Thread scope would parent each call to the wrong request...
    let thread_scope = fan_out(&mut w, tid_of, call_tid, false);
    assert!(
        thread_scope.iter().all(|p| *p == Some(false)),
        "{thread_scope:?}"
    );
    // ...process scope (Go) gives none while several are in flight.
    let mut w = World::new();
    let got = fan_out(&mut w, tid_of, call_tid, true);
    assert!(got.iter().all(Option::is_none), "{got:?}");
    assert_eq!(w.tel.get(Counter::ParentAmbiguousProcess), 40);
}

#[test]
fn go_calls_named_by_goroutine_all_get_their_parent_whatever_the_thread() {
    // The kernel names each record's goroutine (the handler's, for a Transport write): the
    // threads say nothing (request i read on thread i % 3, its call on another one).
    let g = |i: u64| 0xc000_0000 + i * 0x1a0;
    let mut w = World::new();
    let got = fan_out_on(
        &mut w,
        |i| (1000 + (i % 3) as u32, g(i)),
        |i| (1000 + ((i + 1) % 3) as u32, g(i)),
        true,
    );
    assert!(got.iter().all(|p| *p == Some(true)), "{got:?}");
    assert_eq!(w.tel.get(Counter::ParentAmbiguousProcess), 0);
    // A call whose goroutine serves nothing (a writeLoop not tied to its caller, a goroutine
    // the handler started): the process scope, ambiguous with 40 in flight: no parent.
    let mut w = World::new();
    let got = fan_out_on(
        &mut w,
        |i| (1000 + (i % 3) as u32, g(i)),
        |i| (1000 + (i % 3) as u32, 0xd000_0000 + i),
        true,
    );
    assert!(got.iter().all(Option::is_none), "{got:?}");
    assert_eq!(w.tel.get(Counter::ParentAmbiguousProcess), 40);
    // Pipelined requests on one serving goroutine: ambiguous there, counted as such.
    let mut w = World::new();
    let got = fan_out_on(&mut w, |i| (1000, g(i / 2)), |i| (1001, g(i / 2)), true);
    assert!(got.iter().all(Option::is_none), "{got:?}");
    assert_eq!(w.tel.get(Counter::ParentAmbiguousGoroutine), 40);
}

#[test]
fn a_goroutine_in_records_of_a_non_go_process_is_ignored() {
    // The process is not Go (say its pid was reused after a Go program's exit): thread scope,
    // exactly as without a goroutine.
    let mut w = World::new();
    let got = fan_out_on(&mut w, |_| (7, 0xc000_0000), |_| (7, 0xc000_0000), false);
    assert!(got.iter().all(Option::is_none), "{got:?}");
    assert_eq!(w.tel.get(Counter::ParentAmbiguousThread), 40);
    assert_eq!(w.tel.get(Counter::ParentAmbiguousGoroutine), 0);
}

#[test]
fn a_go_call_with_one_request_in_flight_is_its_child_whatever_the_thread() {
    let mut w = World::new();
    let mut res = MigratingResources(true);
    let srv = w.open(meta(1, 2, Role::Server, 8080, 40000));
    let cli = w.open(meta(2, 2, Role::Client, 41000, 9090));
    w.b.handle(
        &srv,
        start(0, 10, 100, req("GET", "/a")),
        &w.conns,
        &mut res,
        &mut w.out,
    );
    w.b.handle(
        &cli,
        start(0, 11, 110, req("GET", "/b")),
        &w.conns,
        &mut res,
        &mut w.out,
    );
    w.b.handle(&cli, end(0, 120, 200), &w.conns, &mut res, &mut w.out);
    w.b.handle(&srv, end(0, 130, 200), &w.conns, &mut res, &mut w.out);
    let (call, server) = (&w.out[0], &w.out[1]);
    assert_eq!(call.parent_span_id, Some(server.context.span_id));
}

fn sampled_world(sampler: crate::span::sampler::Sampler, keep_errors: bool) -> World {
    let mut w = World::new();
    w.b = SpanBuilder::new(
        Clock::fixed(1_000_000),
        SpanOptions {
            sampler,
            keep_errors,
            ..SpanOptions::default()
        },
        w.tel.clone(),
    );
    w
}

#[test]
fn an_unsampled_incoming_trace_is_sampled_out_on_every_span_the_agent_makes_for_it() {
    use crate::span::sampler::Sampler;
    let mut w = sampled_world(Sampler::default(), false);
    // A traceparent with the sampled flag off, into A; A calls B (same node, stitched).
    let a_srv = w.open(meta(1, 2, Role::Server, 8080, 50000));
    let a_cli = w.open(meta(2, 2, Role::Client, 50001, 9090));
    let b_srv = w.open(meta(3, 3, Role::Server, 9090, 50001));
    let mut r = req("GET", "/a");
    r.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00".into());
    w.ev(&a_srv, start(0, 20, 100, r));
    w.ev(&a_cli, start(0, 20, 110, req("GET", "/b")));
    w.ev(&b_srv, start(0, 30, 115, req("GET", "/b")));
    w.ev(&b_srv, end(0, 120, 200));
    w.ev(&a_cli, end(0, 125, 200));
    w.ev(&a_srv, end(0, 130, 200));
    assert!(w.out.is_empty(), "{:#?}", w.out);
    assert_eq!(w.tel.get(Counter::SpansSampledOut), 3);
    assert_eq!(
        w.tel.get(Counter::SpansStitched),
        1,
        "stitched all the same"
    );
    // The same with the flag on: three spans, flags sampled.
    let mut r = req("GET", "/a");
    r.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
    w.ev(&a_srv, start(1, 20, 200, r));
    w.ev(&a_srv, end(1, 230, 200));
    assert_eq!(w.out.len(), 1);
    assert_eq!(w.out[0].context.flags & 1, 1);
}

#[test]
fn always_off_drops_everything_but_kept_errors_are_marked() {
    use crate::span::sampler::Sampler;
    let mut w = sampled_world(Sampler::AlwaysOff, true);
    let srv = w.open(meta(1, 2, Role::Server, 8080, 50000));
    w.ev(&srv, start(0, 20, 100, req("GET", "/ok")));
    w.ev(&srv, end(0, 110, 200));
    w.ev(&srv, start(1, 20, 200, req("GET", "/boom")));
    w.ev(&srv, end(1, 210, 503));
    assert_eq!(w.out.len(), 1, "{:#?}", w.out);
    assert_eq!(w.out[0].status, StatusCode::Error);
    assert_eq!(
        w.out[0].context.flags & 1,
        0,
        "still says it was sampled out"
    );
    assert_eq!(
        w.out[0].attr(KEPT_ERROR_ATTRIBUTE),
        Some(&AttrValue::Bool(true))
    );
    assert_eq!(w.tel.get(Counter::SpansSampledOut), 1);
    // RED metrics count both requests; only the exported (kept) one lends an exemplar.
    use crate::telemetry::metrics::{Format, Metrics};
    let om = Metrics::new(w.tel.clone()).render(Format::OpenMetrics);
    let count: f64 = om
        .lines()
        .filter(|l| l.starts_with("http_server_request_duration_seconds_count"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(count, 2.0, "{om}");
    let exemplars: Vec<_> = om.lines().filter(|l| l.contains(" # {trace_id=")).collect();
    assert_eq!(exemplars.len(), 1, "{om}");
    let id = crate::span::model::hex(&w.out[0].context.trace_id);
    assert!(exemplars[0].contains(&id), "{om}");
}

#[test]
fn trace_id_ratio_decides_per_trace_so_a_trace_is_whole_or_absent() {
    use crate::span::sampler::Sampler;
    let mut w = sampled_world(Sampler::TraceIdRatio(0.5), false);
    for i in 0..200u64 {
        let c = w.open(meta(1000 + 2 * i, 1, Role::Client, 20000 + i as u16, 8080));
        let s = w.open(meta(1001 + 2 * i, 2, Role::Server, 8080, 20000 + i as u16));
        w.ev(&c, start(0, 10, 100, req("GET", "/x")));
        w.ev(&s, start(0, 20, 101, req("GET", "/x")));
        w.ev(&s, end(0, 110, 200));
        w.ev(&c, end(0, 111, 200));
    }
    let mut per_trace: std::collections::HashMap<[u8; 16], usize> = Default::default();
    for s in &w.out {
        *per_trace.entry(s.context.trace_id).or_default() += 1;
    }
    assert!(per_trace.values().all(|&n| n == 2), "a trace half sampled");
    assert!((60..140).contains(&per_trace.len()), "{}", per_trace.len());
}

mod sdk_coexistence {
    use super::*;
    use crate::protocol::{AmqpMessage, AmqpOperation, AmqpOutcome, PgOutcome, PgStatement};

    /// pid 2 carries an SDK; the others do not.
    struct SdkIn(u32);
    impl Resources for SdkIn {
        fn resource(&mut self, pid: u32, comm: &str) -> Arc<Resource> {
            FixedResources.resource(pid, comm)
        }
        fn traits(&mut self, pid: u32, _comm: &str) -> ProcessTraits {
            ProcessTraits {
                threads_migrate: false,
                sdk_traces: pid == self.0,
                ..ProcessTraits::default()
            }
        }
    }

    const SDK_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    /// The SDK's CLIENT span for A's call to B, as its traceparent says.
    const SDK_CLIENT: &str = "00f067aa0ba902b7";
    const SDK_PRODUCER: &str = "1111111111111111";

    fn ev(w: &mut World, m: &ConnMeta, e: L7Event) {
        w.b.handle(m, e, &w.conns, &mut SdkIn(2), &mut w.out);
    }

    fn begin(seq: u64, tid: u32, ts: u64, request: Request) -> L7Event {
        L7Event::RequestStart {
            seq,
            tid,
            goroutine: 0,
            start_ns: ts,
            request,
        }
    }

    fn publish(fp: u64, traceparent: Option<String>) -> Request {
        Request::Amqp(AmqpMessage {
            operation: AmqpOperation::Publish,
            channel: 1,
            exchange: String::new(),
            routing_key: "orders".into(),
            delivery_tag: None,
            redelivered: false,
            message_id: None,
            correlation_id: None,
            traceparent,
            tracestate: None,
            body_size: 3,
            fingerprint: fp,
        })
    }

    fn flow(defer: bool) -> World {
        let mut w = World::new();
        w.b = SpanBuilder::new(
            Clock::fixed(0),
            SpanOptions {
                defer_to_sdk: defer,
                ..SpanOptions::default()
            },
            w.tel.clone(),
        );
        // curl (1) -> A (2, SDK) -> B (3); A also runs SQL and publishes; worker (4) consumes.
        let curl = w.open(meta(1, 1, Role::Client, 50000, 8080));
        let a_srv = w.open(meta(2, 2, Role::Server, 8080, 50000));
        let a_cli = w.open(meta(3, 2, Role::Client, 50001, 9090));
        let b_srv = w.open(meta(4, 3, Role::Server, 9090, 50001));
        let a_db = w.open(meta(5, 2, Role::Client, 50002, 5432));
        let a_mq = w.open(meta(6, 2, Role::Client, 50003, 5672));
        let worker = w.open(meta(7, 4, Role::Client, 50004, 5672));
        ev(&mut w, &curl, start(0, 10, 100, req("GET", "/a")));
        ev(&mut w, &a_srv, start(0, 20, 101, req("GET", "/a")));
        let mut r = req("GET", "/b");
        r.traceparent = Some(format!("00-{SDK_TRACE}-{SDK_CLIENT}-01"));
        ev(&mut w, &a_cli, start(0, 20, 110, r.clone()));
        ev(&mut w, &b_srv, start(0, 30, 111, r));
        ev(&mut w, &b_srv, end(0, 120, 200));
        ev(&mut w, &a_cli, end(0, 121, 200));
        let stmt = Request::Postgres(PgStatement {
            text: Some("SELECT 1".into()),
            ..Default::default()
        });
        ev(&mut w, &a_db, begin(0, 20, 130, stmt));
        let done = Outcome::Postgres(PgOutcome::Complete {
            tag: "SELECT 1".into(),
            rows: 1,
        });
        ev(
            &mut w,
            &a_db,
            L7Event::ExchangeEnd {
                seq: 0,
                end_ns: 131,
                outcome: done,
            },
        );
        let tp = Some(format!("00-{SDK_TRACE}-{SDK_PRODUCER}-01"));
        ev(&mut w, &a_mq, begin(0, 20, 140, publish(77, tp.clone())));
        ev(
            &mut w,
            &a_mq,
            L7Event::ExchangeEnd {
                seq: 0,
                end_ns: 141,
                outcome: Outcome::Amqp(AmqpOutcome::Sent),
            },
        );
        let mut deliver = publish(77, tp);
        if let Request::Amqp(m) = &mut deliver {
            m.operation = AmqpOperation::Deliver;
            m.delivery_tag = Some(1);
        }
        ev(&mut w, &worker, begin(0, 40, 150, deliver));
        ev(
            &mut w,
            &worker,
            L7Event::ExchangeEnd {
                seq: 0,
                end_ns: 160,
                outcome: Outcome::Amqp(AmqpOutcome::Acked),
            },
        );
        ev(&mut w, &a_srv, end(0, 170, 200));
        ev(&mut w, &curl, end(0, 171, 200));
        w
    }

    #[test]
    fn what_the_sdk_reports_gets_no_span_and_its_neighbours_join_its_trace() {
        let w = flow(true);
        let kinds: Vec<(SpanKind, i64)> = w
            .out
            .iter()
            .map(|s| match s.resource.get("process.pid") {
                Some(AttrValue::Int(p)) => (s.kind, *p),
                other => panic!("{other:?}"),
            })
            .collect();
        // Only the uninstrumented processes' spans: B's SERVER, the worker's CONSUMER, curl's.
        assert_eq!(
            kinds,
            vec![
                (SpanKind::Server, 3),
                (SpanKind::Consumer, 4),
                (SpanKind::Client, 1)
            ],
            "{:#?}",
            w.out
        );
        assert_eq!(w.tel.get(Counter::SpansLeftToSdk), 4);
        let hex = |id: &[u8]| super::super::super::model::hex(id);
        // B hangs under the SDK's CLIENT span, in the SDK's trace (stitched all the same).
        let b = &w.out[0];
        assert_eq!(hex(&b.context.trace_id), SDK_TRACE);
        assert_eq!(
            b.parent_span_id.map(|p| hex(&p)).as_deref(),
            Some(SDK_CLIENT)
        );
        // The worker's consumer hangs under the SDK's PRODUCER span.
        let c = &w.out[1];
        assert_eq!(hex(&c.context.trace_id), SDK_TRACE);
        assert_eq!(
            c.parent_span_id.map(|p| hex(&p)).as_deref(),
            Some(SDK_PRODUCER)
        );
        // No span of ours is anyone's parent unless it was exported.
        let ours: Vec<_> = w.out.iter().map(|s| s.context.span_id).collect();
        for s in &w.out {
            if let Some(p) = s.parent_span_id {
                let known =
                    ours.contains(&p) || [SDK_CLIENT, SDK_PRODUCER].contains(&hex(&p).as_str());
                assert!(known, "dangling parent {}", hex(&p));
            }
        }
    }

    #[test]
    fn the_sdks_own_otlp_exports_get_no_span() {
        let mut w = flow(true);
        let before = w.out.len();
        let exporter = w.open(meta(20, 2, Role::Client, 50020, 4318));
        let mut r = req("POST", "/v1/traces");
        r.traceparent = None;
        ev(&mut w, &exporter, start(0, 21, 300, r));
        ev(&mut w, &exporter, end(0, 310, 200));
        assert_eq!(w.out.len(), before, "{:#?}", w.out);
        // The same call from a process without an SDK is the app's own: traced.
        let other = w.open(meta(21, 3, Role::Client, 50021, 4318));
        ev(&mut w, &other, start(0, 31, 400, req("POST", "/v1/traces")));
        ev(&mut w, &other, end(0, 410, 200));
        assert_eq!(w.out.len(), before + 1);
    }

    #[test]
    fn keeping_both_reports_every_exchange() {
        let w = flow(false);
        assert_eq!(w.out.len(), 7, "{:#?}", w.out);
        assert_eq!(w.tel.get(Counter::SpansLeftToSdk), 0);
    }
}

#[test]
fn an_outcome_of_another_protocol_makes_no_span_and_is_counted() {
    let mut w = World::new();
    let c = w.open(meta(1, 1, Role::Client, 50000, 5432));
    w.ev(
        &c,
        L7Event::RequestStart {
            seq: 0,
            tid: 10,
            goroutine: 0,
            start_ns: 100,
            request: Request::Postgres(crate::protocol::PgStatement {
                text: Some("SELECT 1".into()),
                ..Default::default()
            }),
        },
    );
    w.ev(
        &c,
        L7Event::ExchangeEnd {
            seq: 0,
            end_ns: 200,
            outcome: Outcome::Amqp(crate::protocol::AmqpOutcome::Acked),
        },
    );
    assert!(w.out.is_empty(), "{:?}", w.out);
    assert_eq!(w.tel.get(Counter::SpansMismatched), 1);
    assert_eq!(w.b.inflight(), 0, "the exchange is gone all the same");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const INJ: Injected = Injected {
    trace_id: [0x4b; 16],
    span_id: [0x5c; 8],
    flags: 1,
};

#[test]
fn injected_ids_become_the_client_span_and_the_stitched_server_agrees() {
    let mut w = World::new();
    // curl (pid 1) → server (pid 2); the kernel wrote INJ into the request sent at 100.
    let cli = w.open(meta(1, 1, Role::Client, 50000, 8080));
    let srv = w.open(meta(2, 2, Role::Server, 8080, 50000));
    w.b.injected(1, 100, INJ, 100);
    w.ev(&cli, start(0, 10, 100, req("GET", "/a")));
    // A pipelined request in the same write: not injected, ids of its own.
    w.ev(&cli, start(1, 10, 100, req("GET", "/b")));
    let mut seen = req("GET", "/a");
    seen.traceparent = Some(format!(
        "00-{}-{}-01",
        hex(&INJ.trace_id),
        hex(&INJ.span_id)
    ));
    w.ev(&srv, start(0, 20, 110, seen));
    w.ev(&srv, start(1, 20, 111, req("GET", "/b")));
    for (c, s) in [(&srv, 0), (&srv, 1), (&cli, 0), (&cli, 1)] {
        w.ev(c, end(s, 200, 200));
    }
    let client_a = w.out.iter().find(|s| s.kind == SpanKind::Client).unwrap();
    assert_eq!(client_a.context.trace_id, INJ.trace_id);
    assert_eq!(client_a.context.span_id, INJ.span_id);
    assert_eq!(client_a.context.flags, 1);
    assert_eq!(
        client_a.parent_span_id, None,
        "a pure client's call is a root"
    );
    let servers: Vec<&Span> = w
        .out
        .iter()
        .filter(|s| s.kind == SpanKind::Server)
        .collect();
    assert_eq!(servers[0].context.trace_id, INJ.trace_id);
    assert_eq!(
        servers[0].parent_span_id,
        Some(INJ.span_id),
        "header and stitching agree"
    );
    let client_b = w.out.iter().rfind(|s| s.kind == SpanKind::Client).unwrap();
    assert_ne!(client_b.context.span_id, INJ.span_id);
    assert_eq!(servers[1].parent_span_id, Some(client_b.context.span_id));
    assert_eq!(w.tel.get(Counter::InjectAdopted), 1);
    assert_eq!(w.tel.get(Counter::InjectPipelinedNotInjected), 1);
    assert_eq!(w.tel.get(Counter::SpansStitched), 2);
}

#[test]
fn injected_call_whose_cause_is_another_trace_claims_no_parent() {
    let mut w = World::new();
    // pid 2 serves a request (thread 20) and, on that thread, calls out: the kernel injected
    // a trace that is not the served request's (it cannot know it): no parent, counted.
    let srv = w.open(meta(1, 2, Role::Server, 8080, 50000));
    let out_a = w.open(meta(2, 2, Role::Client, 50001, 9090));
    let out_b = w.open(meta(3, 2, Role::Client, 50002, 9090));
    w.ev(&srv, start(0, 20, 100, req("GET", "/in")));
    w.b.injected(2, 110, INJ, 110);
    w.ev(&out_a, start(0, 20, 110, req("GET", "/other-trace")));
    // The same served request's trace: the parent is claimed.
    let trace = w.b.inflight.values().next().unwrap().ctx.trace_id;
    let same = Injected {
        trace_id: trace,
        ..INJ
    };
    w.b.injected(3, 120, same, 120);
    w.ev(&out_b, start(0, 20, 120, req("GET", "/same-trace")));
    for c in [&out_a, &out_b, &srv] {
        w.ev(c, end(0, 200, 200));
    }
    let server = w.span(2, SpanKind::Server).clone();
    let calls: Vec<&Span> = w
        .out
        .iter()
        .filter(|s| s.kind == SpanKind::Client)
        .collect();
    assert_eq!(calls[0].context.span_id, INJ.span_id);
    assert_eq!(calls[0].parent_span_id, None);
    assert_eq!(calls[1].context.trace_id, trace);
    assert_eq!(calls[1].parent_span_id, Some(server.context.span_id));
    assert_eq!(w.tel.get(Counter::InjectCauseMismatch), 1);
    assert_eq!(w.tel.get(Counter::InjectAdopted), 2);
}

#[test]
fn with_injection_a_server_root_has_the_trace_id_the_kernel_derives() {
    let secret = 0x5eed_u64;
    let mut w = World::new();
    w.b = SpanBuilder::new(
        Clock::fixed(1_000_000),
        SpanOptions {
            derive_roots: Some(secret),
            ..SpanOptions::default()
        },
        w.tel.clone(),
    );
    // A request without context on connection 7 (its record written at 100), and the call
    // its thread makes, which the kernel injected with the id it derived alike.
    let srv = w.open(meta(7, 2, Role::Server, 8080, 50000));
    let out = w.open(meta(8, 2, Role::Client, 50001, 9090));
    w.ev(&srv, start(0, 20, 100, req("GET", "/in")));
    let derived = agent_common::derive_trace_id(secret, 7, 100);
    w.b.injected(
        8,
        110,
        Injected {
            trace_id: derived,
            ..INJ
        },
        110,
    );
    w.ev(&out, start(0, 20, 110, req("GET", "/down")));
    // A header beats derivation; an invalid one does not.
    let mut with_tp = req("GET", "/tp");
    with_tp.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    let srv2 = w.open(meta(9, 3, Role::Server, 8080, 50002));
    w.ev(&srv2, start(0, 30, 300, with_tp));
    for c in [&out, &srv, &srv2] {
        w.ev(c, end(0, 400, 200));
    }
    let server = w.span(2, SpanKind::Server).clone();
    let call = w.span(2, SpanKind::Client).clone();
    assert_eq!(server.context.trace_id, derived);
    assert_eq!(server.parent_span_id, None);
    assert_eq!(
        (call.context.trace_id, call.context.span_id),
        (derived, INJ.span_id)
    );
    assert_eq!(call.parent_span_id, Some(server.context.span_id));
    assert_eq!(
        super::super::model::hex(&w.span(3, SpanKind::Server).context.trace_id),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(w.tel.get(Counter::InjectCauseMismatch), 0);
    // Derived ids differ per connection, per request and per key.
    assert_ne!(derived, agent_common::derive_trace_id(secret, 7, 101));
    assert_ne!(derived, agent_common::derive_trace_id(secret, 8, 100));
    assert_ne!(derived, agent_common::derive_trace_id(secret + 1, 7, 100));
}
