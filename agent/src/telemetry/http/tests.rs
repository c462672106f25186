//! The endpoint's routing on [`State::respond`], then the server on a real socket
//! (127.0.0.1:0): one request per connection, bad and slow clients counted, never served
//! beyond the connection bound.

use std::time::Duration;

use http_body_util::BodyExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::*;
use crate::telemetry::health::Phase;

fn state() -> Arc<State> {
    Arc::new(State::new(
        Arc::new(Telemetry::new()),
        Some(Duration::from_secs(30)),
    ))
}

async fn body(r: Response<Full<Bytes>>) -> String {
    let b = r.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(b.to_vec()).unwrap()
}

#[tokio::test]
async fn routes_and_methods() {
    let s = state();
    let r = s.respond(&Method::GET, "/nope", None);
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = s.respond(&Method::POST, "/metrics", None);
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()[ALLOW], "GET, HEAD");

    let r = s.respond(&Method::GET, "/metrics", None);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()[CONTENT_TYPE],
        super::super::metrics::PROMETHEUS_TEXT
    );
    assert!(body(r)
        .await
        .contains("# TYPE agent_spans_created_total counter\n"));
    let r = s.respond(
        &Method::GET,
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    );
    assert_eq!(
        r.headers()[CONTENT_TYPE],
        super::super::metrics::OPENMETRICS
    );
    assert!(body(r).await.ends_with("# EOF\n"));
}

#[tokio::test]
async fn health_follows_the_agents_phase() {
    let s = state();
    let get = |p: &str| s.respond(&Method::GET, p, None);
    assert_eq!(get("/healthz").status(), StatusCode::OK);
    let r = get("/readyz");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(body(r).await.contains("probes are not attached yet"));
    s.telemetry.health().set_phase(Phase::Running);
    s.telemetry.health().beat();
    assert_eq!(get("/readyz").status(), StatusCode::OK);
    assert_eq!(body(get("/healthz")).await, "ok\n");
    s.telemetry.health().set_phase(Phase::Stopping);
    assert_eq!(body(get("/readyz")).await, "shutting down\n");
}

/// Serves `state` on 127.0.0.1:0 with `limits`.
async fn server(state: Arc<State>, limits: Limits) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, state, limits));
    addr
}

/// Sends raw bytes, returns everything the server sent until it closed.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

const QUICK: Limits = Limits {
    connections: 2,
    header_timeout: Duration::from_millis(300),
    connection_timeout: Duration::from_secs(5),
};

#[tokio::test]
async fn serves_one_request_per_connection_and_ignores_bodies() {
    let s = state();
    let addr = server(s.clone(), QUICK).await;
    let r = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(r.contains("connection: close\r\n"), "{r}");
    assert!(r.contains("\r\n\r\n# HELP agent_"), "{r}");
    let r = exchange(addr, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"),
        "{r}"
    );
    // A body is never read: the answer comes before the client has sent it all.
    let r = exchange(
        addr,
        b"POST /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\nabc",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{r}");
    let r = exchange(addr, b"GET /nope?x=1 HTTP/1.0\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.0 404 Not Found\r\n"), "{r}");
    assert_eq!(s.telemetry.get(Counter::TelemetryHttpErrors), 0);
}

#[tokio::test]
async fn garbage_and_slow_clients_are_counted_and_bounded() {
    let s = state();
    let addr = server(s.clone(), QUICK).await;
    let r = exchange(addr, b"\x16\x03\x01 not http at all\r\n\r\n").await;
    assert!(
        r.starts_with("HTTP/1.1 400 Bad Request\r\n") || r.is_empty(),
        "{r}"
    );
    assert_eq!(s.telemetry.get(Counter::TelemetryHttpErrors), 1);
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let r = exchange(addr, huge.as_bytes()).await;
    assert!(!r.contains("200 OK"), "{r}");
    assert_eq!(s.telemetry.get(Counter::TelemetryHttpErrors), 2);

    // Two silent clients take both slots; a third is served once the head timeout frees one.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    let r = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    // A slot frees only once its connection has failed and been counted: no timing needed.
    assert!(s.telemetry.get(Counter::TelemetryHttpErrors) >= 3);
    for _ in 0..100 {
        if s.telemetry.get(Counter::TelemetryHttpErrors) == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.telemetry.get(Counter::TelemetryHttpErrors), 4);
    drop(held);
}

#[tokio::test]
async fn start_binds_the_configured_address_or_says_why_not() {
    let t = Arc::new(Telemetry::new());
    let off = TelemetryConfig {
        listen: Some(String::new()),
        ..Default::default()
    };
    assert!(start(&off, t.clone()).await.unwrap().is_none());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = TelemetryConfig {
        listen: Some(taken.local_addr().unwrap().to_string()),
        ..Default::default()
    };
    let e = start(&cfg, t.clone()).await.unwrap_err().to_string();
    assert!(
        e.starts_with("telemetry.listen: cannot listen on 127.0.0.1:"),
        "{e}"
    );
    let cfg = TelemetryConfig {
        listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    let endpoint = start(&cfg, t).await.unwrap().unwrap();
    let addr = endpoint.addr();
    let r = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    // Stopped, the socket is closed at once: the port can be bound again.
    endpoint.stop().await;
    drop(std::net::TcpListener::bind(addr).expect("the port is free after stop"));
}
