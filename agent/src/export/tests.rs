//! End-to-end tests of [`spawn`]: real exporters against in-process collectors (a tonic
//! `TraceService` and a hyper OTLP/HTTP endpoint on 127.0.0.1:0), checking batching, the queue,
//! retries, partial success, headers, shutdown and the counters.
//!
//! Timing: tests wait for conditions with generous deadlines (`eventually`) and never assert
//! that something did not happen within a sleep, so a slow machine makes them slower, not red.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::sync::Semaphore;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use super::otlp::tests::{resource, sample_span};
use super::*;

const PATIENCE: Duration = Duration::from_secs(15);

/// What the mock collector does with one call.
enum Reply {
    Ok(ExportTraceServiceResponse),
    Fail(Status),
    /// Wait for a permit, then succeed.
    Block(Arc<Semaphore>),
}

#[derive(Default)]
struct Collector {
    /// Replies for the next calls, in order; then plain success.
    script: Mutex<VecDeque<Reply>>,
    received: Mutex<Vec<(MetadataMap, ExportTraceServiceRequest)>>,
    calls: AtomicUsize,
}

impl Collector {
    fn spans_received(&self) -> usize {
        let received = self.received.lock().expect("lock");
        received.iter().map(|(_, r)| span_count(r)).sum()
    }

    fn batch_sizes(&self) -> Vec<usize> {
        self.received
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, r)| span_count(r))
            .collect()
    }
}

fn span_count(r: &ExportTraceServiceRequest) -> usize {
    r.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}

/// The tonic service: a handle on the shared [`Collector`] state.
struct Service(Arc<Collector>);

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let this = &self.0;
        this.calls.fetch_add(1, Ordering::SeqCst);
        let reply = this.script.lock().expect("lock").pop_front();
        let response = match reply {
            None => ExportTraceServiceResponse::default(),
            Some(Reply::Ok(r)) => r,
            Some(Reply::Fail(status)) => return Err(status),
            Some(Reply::Block(gate)) => {
                let _permit = gate
                    .acquire()
                    .await
                    .map_err(|_| Status::internal("gate closed"))?;
                ExportTraceServiceResponse::default()
            }
        };
        let (metadata, _, message) = request.into_parts();
        this.received
            .lock()
            .expect("lock")
            .push((metadata, message));
        Ok(Response::new(response))
    }
}

/// Test-only TLS material: see `testdata/README.md`.
const TEST_CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/export/testdata/ca.pem");
const SERVER_CERT: &[u8] = include_bytes!("testdata/server.pem");
const SERVER_KEY: &[u8] = include_bytes!("testdata/server.key");

/// Starts a gRPC collector on `addr` (port 0: any free port).
async fn start_collector_on(addr: SocketAddr, script: Vec<Reply>) -> (SocketAddr, Arc<Collector>) {
    start_grpc(addr, script, false).await
}

async fn start_grpc(
    addr: SocketAddr,
    script: Vec<Reply>,
    tls: bool,
) -> (SocketAddr, Arc<Collector>) {
    let collector = Arc::new(Collector {
        script: Mutex::new(script.into()),
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = TraceServiceServer::new(Service(collector.clone()))
        .accept_compressed(CompressionEncoding::Gzip);
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let mut server = tonic::transport::Server::builder();
    if tls {
        let identity = tonic::transport::Identity::from_pem(SERVER_CERT, SERVER_KEY);
        server = server
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .expect("server TLS");
    }
    tokio::spawn(server.serve_with_incoming(service, incoming));
    (addr, collector)
}

async fn start_collector(script: Vec<Reply>) -> (SocketAddr, Arc<Collector>) {
    start_collector_on("127.0.0.1:0".parse().expect("addr"), script).await
}

fn config_for(addr: SocketAddr) -> ExportConfig {
    ExportConfig {
        endpoint: Some(format!("http://{addr}")),
        ..Default::default()
    }
}

/// Polls `cond` until it holds, failing the test after [`PATIENCE`].
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn finish(handle: JoinHandle<()>) {
    tokio::time::timeout(PATIENCE, handle)
        .await
        .expect("exporter finished in time")
        .expect("exporter task ok");
}

fn send_n(sender: &SpanSender, n: usize) {
    let res = resource("svc");
    for i in 0..n {
        sender.send(sample_span(&res, i as u8));
    }
}

#[tokio::test]
async fn flushes_when_the_batch_is_full() {
    let (addr, collector) = start_collector(vec![]).await;
    let telemetry = Arc::new(Telemetry::new());
    let cfg = ExportConfig {
        batch_size: 3,
        batch_timeout_ms: 3_600_000,
        ..config_for(addr)
    };
    let (sender, handle) = spawn(&cfg, telemetry.clone()).expect("spawn");
    send_n(&sender, 7);
    // The batch timeout is an hour, so only size can have triggered these.
    eventually("two full batches", || collector.spans_received() == 6).await;
    assert_eq!(collector.batch_sizes(), vec![3, 3]);
    drop(sender);
    finish(handle).await;
    // The seventh span went out with the shutdown flush.
    assert_eq!(collector.batch_sizes(), vec![3, 3, 1]);
    assert_eq!(telemetry.get(Counter::SpansExported), 7);
}

#[tokio::test]
async fn flushes_a_partial_batch_after_the_batch_timeout() {
    let (addr, collector) = start_collector(vec![]).await;
    let telemetry = Arc::new(Telemetry::new());
    let cfg = ExportConfig {
        batch_size: 100,
        batch_timeout_ms: 50,
        ..config_for(addr)
    };
    let (sender, handle) = spawn(&cfg, telemetry.clone()).expect("spawn");
    send_n(&sender, 2);
    // The sender stays alive: only the timer can flush.
    eventually("timer flush", || collector.spans_received() == 2).await;
    assert_eq!(collector.batch_sizes(), vec![2]);
    eventually("counted", || telemetry.get(Counter::SpansExported) == 2).await;
    drop(sender);
    finish(handle).await;
}

#[tokio::test]
async fn full_queue_drops_and_counts_without_blocking() {
    let gate = Arc::new(Semaphore::new(0));
    let (addr, collector) = start_collector(vec![Reply::Block(gate.clone())]).await;
    let telemetry = Arc::new(Telemetry::new());
    let cfg = ExportConfig {
        queue_size: 2,
        batch_size: 1,
        ..config_for(addr)
    };
    let (sender, handle) = spawn(&cfg, telemetry.clone()).expect("spawn");
    send_n(&sender, 1);
    // The exporter is now stuck in the first call and not reading the queue.
    eventually("first call in flight", || {
        collector.calls.load(Ordering::SeqCst) == 1
    })
    .await;
    send_n(&sender, 5);
    assert_eq!(telemetry.get(Counter::SpansQueueDropped), 3);
    gate.add_permits(1);
    drop(sender);
    finish(handle).await;
    assert_eq!(collector.spans_received(), 3);
    assert_eq!(telemetry.get(Counter::SpansExported), 3);
}

#[tokio::test]
async fn several_batches_are_in_flight_at_once() {
    let gate = Arc::new(Semaphore::new(0));
    let blocked = (0..3).map(|_| Reply::Block(gate.clone())).collect();
    let (addr, collector) = start_collector(blocked).await;
    let telemetry = Arc::new(Telemetry::new());
    let cfg = ExportConfig {
        batch_size: 1,
        max_concurrent_exports: 3,
        ..config_for(addr)
    };
    let (sender, handle) = spawn(&cfg, telemetry.clone()).expect("spawn");
    send_n(&sender, 3);
    // None of the three calls can finish before the gate opens: they are in flight together.
    eventually("three calls in flight", || {
        collector.calls.load(Ordering::SeqCst) == 3
    })
    .await;
    assert_eq!(telemetry.get(Counter::SpansExported), 0);
    send_n(&sender, 2);
    gate.add_permits(3);
    drop(sender);
    finish(handle).await;
    assert_eq!(collector.spans_received(), 5);
    assert_eq!(telemetry.get(Counter::SpansExported), 5);
    assert_eq!(telemetry.get(Counter::SpansQueueDropped), 0);
}

#[tokio::test]
async fn retries_unavailable_then_succeeds() {
    let (addr, collector) =
        start_collector(vec![Reply::Fail(Status::unavailable("warming up"))]).await;
    let telemetry = Arc::new(Telemetry::new());
    let cfg = ExportConfig {
        batch_size: 2,
        ..config_for(addr)
    };
    let (sender, handle) = spawn(&cfg, telemetry.clone()).expect("spawn");
    send_n(&sender, 2);
    eventually("delivered after a retry", || {
        telemetry.get(Counter::SpansExported) == 2
    })
    .await;
    assert_eq!(collector.calls.load(Ordering::SeqCst), 2);
    assert_eq!(telemetry.get(Counter::ExportRetries), 1);
    assert_eq!(telemetry.get(Counter::ExportFailures), 0);
    drop(sender);
    finish(handle).await;
}

#[tokio::test]
async fn resource_exhausted_is_retried_only_with_retry_info() {
    let throttled = Status::with_error_details(
        Code::ResourceExhausted,
        "slow down",
        ErrorDetails::with_retry_info(Some(Duration::from_millis(20))),
    );
    let (addr, collector) = start_collector(vec![
        Reply::Fail(throttled),
        Reply::Ok(ExportTraceServiceResponse::default()),
        Reply::Fail(Status::resource_exhausted("full, no hint")),
    ])
    .await;
    let telemetry = Arc::new(Telemetry::new());
    let cfg = ExportConfig {
        batch_size: 1,
        ..config_for(addr)
    };
    let (sender, handle) = spawn(&cfg, telemetry.clone()).expect("spawn");
    send_n(&sender, 1);
    eventually("retried and delivered", || {
        telemetry.get(Counter::SpansExported) == 1
    })
    .await;
    assert_eq!(telemetry.get(Counter::ExportRetries), 1);
    send_n(&sender, 1);
    eventually("given up", || telemetry.get(Counter::ExportFailures) == 1).await;
    assert_eq!(telemetry.get(Counter::SpansRejected), 1);
    assert_eq!(telemetry.get(Counter::ExportRetries), 1);
    assert_eq!(collector.calls.load(Ordering::SeqCst), 3);
    drop(sender);
    finish(handle).await;
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let (addr, collector) =
        start_collector(vec![Reply::Fail(Status::invalid_argument("bad span"))]).await;
    let telemetry = Arc::new(Telemetry::new());
    let cfg = ExportConfig {
        batch_size: 4,
        ..config_for(addr)
    };
    let (sender, handle) = spawn(&cfg, telemetry.clone()).expect("spawn");
    send_n(&sender, 4);
    drop(sender);
    finish(handle).await;
    assert_eq!(collector.calls.load(Ordering::SeqCst), 1);
    assert_eq!(telemetry.get(Counter::ExportFailures), 1);
    assert_eq!(telemetry.get(Counter::SpansRejected), 4);
    assert_eq!(telemetry.get(Counter::ExportRetries), 0);
    assert_eq!(telemetry.get(Counter::SpansExported), 0);
}

#[tokio::test]
async fn partial_success_is_counted() {
    let partial = ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: 2,
            error_message: "2 spans too old".into(),
        }),
    };
    let (addr, _collector) = start_collector(vec![Reply::Ok(partial)]).await;
    let telemetry = Arc::new(Telemetry::new());
    let cfg = ExportConfig {
        batch_size: 5,
        ..config_for(addr)
    };
    let (sender, handle) = spawn(&cfg, telemetry.clone()).expect("spawn");
    send_n(&sender, 5);
    drop(sender);
    finish(handle).await;
    assert_eq!(telemetry.get(Counter::SpansExported), 3);
    assert_eq!(telemetry.get(Counter::SpansRejected), 2);
    assert_eq!(telemetry.get(Counter::ExportFailures), 0);
}

#[tokio::test]
async fn headers_arrive_as_metadata_and_gzip_is_accepted() {
    let (addr, collector) = start_collector(vec![]).await;
    let mut cfg = ExportConfig {
        batch_size: 1,
        compression: Compression::Gzip,
        ..config_for(addr)
    };
    cfg.headers
        .insert("Authorization".into(), "Bearer t0ken".into());
    cfg.headers.insert("x-tenant".into(), "team a".into());
    let (sender, handle) = spawn(&cfg, Arc::new(Telemetry::new())).expect("spawn");
    send_n(&sender, 1);
    drop(sender);
    finish(handle).await;
    let received = collector.received.lock().expect("lock");
    let (metadata, request) = &received[0];
    assert_eq!(
        metadata.get("authorization").and_then(|v| v.to_str().ok()),
        Some("Bearer t0ken")
    );
    assert_eq!(
        metadata.get("x-tenant").and_then(|v| v.to_str().ok()),
        Some("team a")
    );
    let ua = metadata
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(ua.starts_with("ebpf-agent-otlp-exporter/"), "{ua}");
    assert_eq!(
        metadata.get("grpc-encoding").and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
    assert_eq!(span_count(request), 1);
}

#[tokio::test]
async fn shutdown_delivers_everything_held() {
    let (addr, collector) = start_collector(vec![]).await;
    let telemetry = Arc::new(Telemetry::new());
    let cfg = ExportConfig {
        batch_timeout_ms: 3_600_000,
        ..config_for(addr)
    };
    let (sender, handle) = spawn(&cfg, telemetry.clone()).expect("spawn");
    let clone = sender.clone();
    send_n(&sender, 200);
    send_n(&clone, 1000);
    drop(sender);
    // One live clone keeps the exporter running.
    assert!(!handle.is_finished());
    drop(clone);
    finish(handle).await;
    assert_eq!(collector.spans_received(), 1200);
    assert!(
        collector.batch_sizes().iter().all(|&n| n <= 512),
        "{:?}",
        collector.batch_sizes()
    );
    assert_eq!(telemetry.get(Counter::SpansExported), 1200);
    assert_eq!(telemetry.get(Counter::SpansQueueDropped), 0);
}

/// A port nothing listens on (bound, then released).
async fn free_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("addr")
}

#[tokio::test]
async fn collector_down_at_start_then_up() {
    let addr = free_port().await;
    let telemetry = Arc::new(Telemetry::new());
    let cfg = ExportConfig {
        batch_size: 1,
        ..config_for(addr)
    };
    // Start-up does not need the collector.
    let (sender, handle) = spawn(&cfg, telemetry.clone()).expect("spawn");
    send_n(&sender, 1);
    eventually("a failed attempt", || {
        telemetry.get(Counter::ExportRetries) >= 1
    })
    .await;
    let (_, collector) = start_collector_on(addr, vec![]).await;
    eventually("delivered once the collector is up", || {
        collector.spans_received() == 1
    })
    .await;
    drop(sender);
    finish(handle).await;
    assert_eq!(telemetry.get(Counter::SpansExported), 1);
    assert_eq!(telemetry.get(Counter::ExportFailures), 0);
}

#[tokio::test]
async fn shutdown_is_bounded_when_the_collector_is_down() {
    let addr = free_port().await;
    let telemetry = Arc::new(Telemetry::new());
    // Retries would go on for an hour; the shutdown timeout cuts them short.
    let cfg = ExportConfig {
        batch_size: 1,
        max_retry_elapsed_ms: 3_600_000,
        shutdown_timeout_ms: 200,
        ..config_for(addr)
    };
    let (sender, handle) = spawn(&cfg, telemetry.clone()).expect("spawn");
    send_n(&sender, 3);
    eventually("retrying", || telemetry.get(Counter::ExportRetries) >= 1).await;
    drop(sender);
    let started = tokio::time::Instant::now();
    finish(handle).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(telemetry.get(Counter::SpansRejected), 3);
    assert_eq!(telemetry.get(Counter::SpansExported), 0);
}

#[tokio::test]
async fn spawn_rejects_bad_settings() {
    let telemetry = Arc::new(Telemetry::new());
    let err = |cfg: ExportConfig| {
        spawn(&cfg, telemetry.clone())
            .err()
            .expect("should fail")
            .to_string()
    };
    assert_eq!(
        err(ExportConfig {
            batch_size: 0,
            ..Default::default()
        }),
        "export.batch_size: must be 1..=65536, got 0"
    );
    let mut bad_header = ExportConfig {
        endpoint: Some("http://127.0.0.1:4317".into()),
        ..Default::default()
    };
    bad_header
        .headers
        .insert("x-key".into(), "new\nline".into());
    assert!(err(bad_header).starts_with("export.headers: the value of \"x-key\""));
    let missing_ca = ExportConfig {
        endpoint: Some("https://127.0.0.1:4317".into()),
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..Default::default()
    };
    assert!(err(missing_ca).starts_with("reading TLS file \"/nonexistent/ca.pem\": "));
}

#[tokio::test]
async fn grpc_over_tls_with_a_configured_ca() {
    let (addr, collector) = start_grpc("127.0.0.1:0".parse().expect("addr"), vec![], true).await;
    let telemetry = Arc::new(Telemetry::new());
    let cfg = ExportConfig {
        endpoint: Some(format!("https://{addr}")),
        ca_file: Some(TEST_CA.into()),
        batch_size: 1,
        ..Default::default()
    };
    let (sender, handle) = spawn(&cfg, telemetry.clone()).expect("spawn");
    send_n(&sender, 1);
    drop(sender);
    finish(handle).await;
    assert_eq!(collector.spans_received(), 1);
    assert_eq!(telemetry.get(Counter::SpansExported), 1);
}

#[tokio::test]
async fn grpc_over_tls_rejects_an_untrusted_server() {
    let (addr, collector) = start_grpc("127.0.0.1:0".parse().expect("addr"), vec![], true).await;
    let telemetry = Arc::new(Telemetry::new());
    // Trusting the leaf itself is not trusting its issuer: verification must fail.
    let leaf = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/export/testdata/server.pem"
    );
    let cfg = ExportConfig {
        endpoint: Some(format!("https://{addr}")),
        ca_file: Some(leaf.into()),
        batch_size: 1,
        max_retry_elapsed_ms: 0,
        ..Default::default()
    };
    let (sender, handle) = spawn(&cfg, telemetry.clone()).expect("spawn");
    send_n(&sender, 1);
    drop(sender);
    finish(handle).await;
    assert_eq!(collector.calls.load(Ordering::SeqCst), 0);
    assert_eq!(telemetry.get(Counter::ExportFailures), 1);
    assert_eq!(telemetry.get(Counter::SpansExported), 0);
}

#[test]
fn sender_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<SpanSender>();
}

#[test]
fn spawn_needs_a_runtime() {
    let err = spawn(&ExportConfig::default(), Arc::new(Telemetry::new()))
        .err()
        .expect("no runtime");
    assert!(matches!(err, ExportError::NoRuntime), "{err}");
}

mod http_protobuf {
    //! The OTLP/HTTP transport against a minimal hyper server.
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use prost::Message as _;

    type Seen = Arc<Mutex<Vec<(::http::request::Parts, ExportTraceServiceRequest)>>>;

    /// Answers 503 + `Retry-After: 0` first, then 200 with a partial success.
    async fn start_http_collector(tls: bool) -> (SocketAddr, Seen) {
        let acceptor = tls.then(|| {
            use rustls_pki_types::pem::PemObject as _;
            let chain = rustls_pki_types::CertificateDer::pem_slice_iter(SERVER_CERT)
                .collect::<Result<Vec<_>, _>>()
                .expect("cert");
            let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(SERVER_KEY).expect("key");
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Seen = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let seen_by_server = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, calls) = (seen_by_server.clone(), calls.clone());
                let service = service_fn(move |req: ::http::Request<hyper::body::Incoming>| {
                    let (seen, calls) = (seen.clone(), calls.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await?.to_bytes();
                        let response = if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                            ::http::Response::builder()
                                .status(503)
                                .header("retry-after", "0")
                                .body(Full::new(Bytes::new()))
                        } else {
                            let request =
                                ExportTraceServiceRequest::decode(body).unwrap_or_default();
                            seen.lock().expect("lock").push((parts, request));
                            let answer = ExportTraceServiceResponse {
                                partial_success: Some(ExportTracePartialSuccess {
                                    rejected_spans: 1,
                                    error_message: "one bad span".into(),
                                }),
                            };
                            ::http::Response::builder()
                                .header("content-type", "application/x-protobuf")
                                .body(Full::new(Bytes::from(answer.encode_to_vec())))
                        };
                        Ok::<_, hyper::Error>(response.expect("response"))
                    }
                });
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let http1 = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        None => http1.serve_connection(TokioIo::new(stream), service).await,
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(stream) => {
                                http1.serve_connection(TokioIo::new(stream), service).await
                            }
                            Err(_) => Ok(()),
                        },
                    }
                });
            }
        });
        (addr, seen)
    }

    #[tokio::test]
    async fn posts_protobuf_retries_503_and_counts_partial_success() {
        posts_protobuf(false).await;
    }

    #[tokio::test]
    async fn posts_protobuf_over_tls() {
        posts_protobuf(true).await;
    }

    async fn posts_protobuf(tls: bool) {
        let (addr, seen) = start_http_collector(tls).await;
        let telemetry = Arc::new(Telemetry::new());
        let mut cfg = ExportConfig {
            endpoint: Some(format!("{}://{addr}", if tls { "https" } else { "http" })),
            ca_file: tls.then(|| TEST_CA.into()),
            protocol: Protocol::HttpProtobuf,
            batch_size: 3,
            ..Default::default()
        };
        cfg.headers.insert("x-api-key".into(), "k".into());
        let (sender, handle) = spawn(&cfg, telemetry.clone()).expect("spawn");
        send_n(&sender, 3);
        drop(sender);
        finish(handle).await;
        assert_eq!(telemetry.get(Counter::ExportRetries), 1);
        assert_eq!(telemetry.get(Counter::SpansExported), 2);
        assert_eq!(telemetry.get(Counter::SpansRejected), 1);
        let seen = seen.lock().expect("lock");
        let (parts, request) = &seen[0];
        assert_eq!(parts.method, ::http::Method::POST);
        assert_eq!(parts.uri.path(), "/v1/traces");
        assert_eq!(parts.headers["content-type"], "application/x-protobuf");
        assert_eq!(parts.headers["x-api-key"], "k");
        assert_eq!(span_count(request), 3);
    }
}

#[tokio::test]
async fn failing_export_makes_the_agent_unready_until_a_call_succeeds() {
    use crate::telemetry::health::Phase;
    let (addr, _collector) =
        start_collector(vec![Reply::Fail(Status::invalid_argument("bad span"))]).await;
    let telemetry = Arc::new(Telemetry::new());
    let health = telemetry.health();
    health.set_phase(Phase::Running);
    health.beat();
    let cfg = ExportConfig {
        batch_size: 1,
        ..config_for(addr)
    };
    let (sender, handle) = spawn(&cfg, telemetry.clone()).expect("spawn");
    assert_eq!(health.readiness(Some(Duration::ZERO)), Ok("ready"));
    send_n(&sender, 1);
    eventually("given up", || telemetry.get(Counter::ExportFailures) == 1).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let why = health.readiness(Some(Duration::ZERO)).unwrap_err();
    assert!(why.contains("InvalidArgument: bad span"), "{why}");
    send_n(&sender, 1);
    eventually("delivered", || telemetry.get(Counter::SpansExported) == 1).await;
    assert_eq!(health.readiness(Some(Duration::ZERO)), Ok("ready"));
    drop(sender);
    finish(handle).await;
}
