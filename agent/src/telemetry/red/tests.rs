use super::*;
use crate::span::model::{Attribute, Resource, SpanContext, StatusCode};
use crate::telemetry::metrics::{Format, Metrics};

fn span(kind: SpanKind, name: &str, attrs: Vec<Attribute>, ms: u64, id: u8) -> Span {
    Span {
        context: SpanContext {
            trace_id: [id; 16],
            span_id: [id; 8],
            flags: 1,
            trace_state: None,
        },
        parent_span_id: None,
        name: name.into(),
        kind,
        start_unix_nano: 1_000_000_000,
        end_unix_nano: 1_000_000_000 + ms * 1_000_000,
        status: StatusCode::Unset,
        status_message: None,
        attributes: attrs,
        resource: Arc::new(Resource {
            attributes: vec![Attribute::new("service.name", "shop")],
        }),
    }
}

fn http_server(route: &str, status: i64, ms: u64, id: u8) -> Span {
    span(
        SpanKind::Server,
        &format!("GET {route}"),
        vec![
            Attribute::new("http.request.method", "GET"),
            Attribute::new("http.response.status_code", status),
            Attribute::new("url.path", "/users/12345"),
            Attribute::new("url.scheme", "http"),
            Attribute::new("network.protocol.version", "1.1"),
        ],
        ms,
        id,
    )
}

fn scrape(t: &Arc<Telemetry>) -> String {
    Metrics::new(t.clone()).render(Format::OpenMetrics)
}

#[test]
fn server_spans_feed_the_http_server_histogram_with_convention_labels() {
    let t = Arc::new(Telemetry::new());
    let mut r = Recorder::new(t.clone());
    r.record(&http_server("/users/{id}", 200, 30, 7), true);
    r.record(&http_server("/users/{id}", 200, 3, 8), false);
    let om = scrape(&t);
    let labels = "service_name=\"shop\",http_request_method=\"GET\",\
                  http_response_status_code=\"200\",http_route=\"/users/{id}\",\
                  network_protocol_version=\"1.1\",url_scheme=\"http\"";
    assert!(
        om.contains("# TYPE http_server_request_duration_seconds histogram\n"),
        "{om}"
    );
    assert!(
        om.contains("# UNIT http_server_request_duration_seconds seconds\n"),
        "{om}"
    );
    assert!(
        om.contains(&format!(
            "http_server_request_duration_seconds_count{{{labels}}} 2\n"
        )),
        "{om}"
    );
    // The raw path never becomes a label.
    assert!(!om.contains("12345"), "{om}");
    // Every convention boundary, in order, then +Inf.
    let les: Vec<&str> = om
        .lines()
        .filter(|l| l.starts_with("http_server_request_duration_seconds_bucket"))
        .map(|l| l.split("le=\"").nth(1).unwrap().split('"').next().unwrap())
        .collect();
    let want: Vec<String> = BUCKETS
        .iter()
        .map(|b| format!("{b:?}"))
        .chain(["+Inf".to_owned()])
        .collect();
    assert_eq!(les, want);
    // The 30 ms span was exported: its ids are the 0.05 bucket's exemplar; the 3 ms one was
    // sampled out and left the 0.005 bucket without one.
    let b = |le: &str| {
        om.lines()
            .find(|l| l.contains(&format!("le=\"{le}\"")))
            .unwrap()
            .to_owned()
    };
    assert!(
        b("0.05").ends_with(&format!(
            " # {{trace_id=\"{}\",span_id=\"{}\"}} 0.03",
            hex(&[7; 16]),
            hex(&[7; 8])
        )),
        "{om}"
    );
    assert!(!b("0.005").contains('#'), "{om}");
}

#[test]
fn each_kind_and_protocol_finds_its_metric() {
    let a = Attribute::new;
    let cases = [
        (
            SpanKind::Server,
            vec![a("http.request.method", "GET")],
            Some(Metric::HttpServer),
        ),
        (
            SpanKind::Client,
            vec![a("http.request.method", "GET")],
            Some(Metric::HttpClient),
        ),
        (
            SpanKind::Server,
            vec![a("http.request.method", "POST"), a("rpc.system", "grpc")],
            Some(Metric::RpcServer),
        ),
        (
            SpanKind::Client,
            vec![a("http.request.method", "POST"), a("rpc.system", "grpc")],
            Some(Metric::RpcClient),
        ),
        (
            SpanKind::Client,
            vec![a("db.system.name", "postgresql")],
            Some(Metric::DbClient),
        ),
        (
            SpanKind::Producer,
            vec![
                a("messaging.system", "rabbitmq"),
                a("messaging.operation.type", "send"),
            ],
            Some(Metric::MessagingClient),
        ),
        (
            SpanKind::Consumer,
            vec![
                a("messaging.system", "rabbitmq"),
                a("messaging.operation.type", "process"),
            ],
            Some(Metric::MessagingProcess),
        ),
        (
            SpanKind::Consumer,
            vec![
                a("messaging.system", "rabbitmq"),
                a("messaging.operation.type", "receive"),
            ],
            Some(Metric::MessagingClient),
        ),
        (SpanKind::Internal, vec![], None),
    ];
    for (kind, attrs, want) in cases {
        let s = span(kind, "x", attrs, 1, 1);
        assert_eq!(Metric::of(&s), want, "{:?}", s.attributes);
    }
    let names: Vec<String> = Metric::ALL.iter().map(|m| m.prometheus_base()).collect();
    assert_eq!(names[0], "http_server_request_duration");
    assert_eq!(names[2], "rpc_server_call_duration");
    assert_eq!(names[4], "db_client_operation_duration");
}

#[test]
fn client_labels_name_the_server_and_db_labels_the_operation() {
    let t = Arc::new(Telemetry::new());
    let mut r = Recorder::new(t.clone());
    r.record(
        &span(
            SpanKind::Client,
            "GET",
            vec![
                Attribute::new("http.request.method", "GET"),
                Attribute::new("http.response.status_code", 503i64),
                Attribute::new("error.type", "503"),
                Attribute::new("server.address", "api"),
                Attribute::new("server.port", 8080i64),
            ],
            1,
            1,
        ),
        true,
    );
    r.record(
        &span(
            SpanKind::Client,
            "SELECT users",
            vec![
                Attribute::new("db.system.name", "postgresql"),
                Attribute::new("db.operation.name", "SELECT"),
                Attribute::new("db.collection.name", "users"),
                Attribute::new("db.query.text", "SELECT * FROM users WHERE id = $1"),
            ],
            1,
            1,
        ),
        true,
    );
    let om = scrape(&t);
    assert!(
        om.contains(
            "http_client_request_duration_seconds_count{service_name=\"shop\",\
         http_request_method=\"GET\",http_response_status_code=\"503\",\
         server_address=\"api\",server_port=\"8080\",error_type=\"503\"} 1\n"
        ),
        "{om}"
    );
    assert!(
        om.contains(
            "db_client_operation_duration_seconds_count{service_name=\"shop\",\
         db_system_name=\"postgresql\",db_operation_name=\"SELECT\",\
         db_collection_name=\"users\"} 1\n"
        ),
        "{om}"
    );
    assert!(!om.contains("WHERE"), "query text is no label: {om}");
}

#[test]
fn label_sets_beyond_the_limit_go_to_one_overflow_series() {
    let t = Arc::new(Telemetry::with_red(RedMetrics::with_max_series(3)));
    let mut r = Recorder::new(t.clone());
    for i in 0..10 {
        r.record(&http_server(&format!("/r{i}"), 200, 1, 1), true);
    }
    // Known sets keep recording into their own series after the limit is reached.
    r.record(&http_server("/r0", 200, 1, 1), true);
    assert_eq!(t.red().series(Metric::HttpServer), 4);
    assert_eq!(t.get(Counter::RedMetricsOverflowed), 7);
    let om = scrape(&t);
    assert!(
        om.contains(
            "http_server_request_duration_seconds_count{otel_metric_overflow=\"true\"} 7\n"
        ),
        "{om}"
    );
    assert!(om.contains("http_route=\"/r0\"") && om.contains("http_route=\"/r2\""));
    assert!(!om.contains("http_route=\"/r3\""));
    let r0 = om
        .lines()
        .find(|l| l.starts_with("http_server_request_duration_seconds_count") && l.contains("/r0"))
        .unwrap();
    assert!(r0.ends_with(" 2"), "{r0}");
    // Other metrics have their own limit.
    r.record(
        &span(
            SpanKind::Client,
            "GET",
            vec![Attribute::new("http.request.method", "GET")],
            1,
            1,
        ),
        true,
    );
    assert_eq!(t.red().series(Metric::HttpClient), 1);
}

#[test]
fn a_cached_label_set_is_found_again_and_distinct_values_stay_apart() {
    let t = Arc::new(Telemetry::new());
    let mut r = Recorder::new(t.clone());
    for _ in 0..5 {
        r.record(&http_server("/a", 200, 1, 1), true);
        r.record(&http_server("/a", 500, 1, 1), true);
    }
    // An Int and a Str of the same spelling are different attribute values, as in OTel.
    let mut s = http_server("/a", 200, 1, 1);
    s.attributes[1] = Attribute::new("http.response.status_code", "200");
    r.record(&s, true);
    assert_eq!(t.red().series(Metric::HttpServer), 2 + 1);
    assert_eq!(r.cache.values().map(Vec::len).sum::<usize>(), 3);
}

#[test]
fn prometheus_text_has_the_histograms_without_exemplars() {
    let t = Arc::new(Telemetry::new());
    let mut r = Recorder::new(t.clone());
    r.record(&http_server("/a", 200, 20, 9), true);
    let text = Metrics::new(t.clone()).render(Format::PrometheusText);
    assert!(text.contains("# TYPE http_server_request_duration_seconds histogram\n"));
    assert!(text.contains("http_server_request_duration_seconds_bucket{le=\"0.025\","));
    assert!(!text.contains("trace_id"), "{text}");
}

/// Writes a scrape with every metric fed to `$RED_DUMP` (used to check it with the Python
/// OpenMetrics parser the e2e tests use; does nothing without the variable).
#[test]
fn dump_for_external_parsers() {
    let Ok(path) = std::env::var("RED_DUMP") else {
        return;
    };
    let t = Arc::new(Telemetry::with_red(RedMetrics::with_max_series(2)));
    let mut r = Recorder::new(t.clone());
    for i in 0..4 {
        r.record(
            &http_server(&format!("/r{i}"), 200, 20 * i as u64, i as u8 + 1),
            true,
        );
    }
    std::fs::write(path, scrape(&t)).unwrap();
}
