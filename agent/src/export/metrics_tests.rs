//! Tests of the RED metrics exporter ([`metrics::spawn`]) against an in-process tonic
//! `MetricsService` on 127.0.0.1:0: periodic and final export, counts and exemplars from real
//! recorded spans, retries per the OTLP spec and the failure counter.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1::{metric, HistogramDataPoint};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use super::metrics;
use super::otlp::tests::{resource, sample_span};
use super::ExportConfig;
use crate::span::model::Attribute;
use crate::telemetry::red::Recorder;
use crate::telemetry::{Counter, Telemetry};

const PATIENCE: Duration = Duration::from_secs(15);

#[derive(Default)]
struct Collector {
    /// Failures for the next calls, in order; then success.
    script: Mutex<VecDeque<Status>>,
    received: Mutex<Vec<ExportMetricsServiceRequest>>,
    calls: AtomicUsize,
}

struct Service(Arc<Collector>);

#[tonic::async_trait]
impl MetricsService for Service {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(status) = self.0.script.lock().expect("lock").pop_front() {
            return Err(status);
        }
        self.0
            .received
            .lock()
            .expect("lock")
            .push(request.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

async fn start(script: Vec<Status>) -> (ExportConfig, Arc<Collector>) {
    let collector = Arc::new(Collector {
        script: Mutex::new(script.into()),
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(tonic::transport::Server::builder().serve_with_incoming(
        MetricsServiceServer::new(Service(collector.clone())),
        incoming,
    ));
    let cfg = ExportConfig {
        endpoint: Some(format!("http://{addr}")),
        ..Default::default()
    };
    (cfg, collector)
}

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

/// The `http.server.request.duration` points of the last request received.
fn last_points(c: &Collector) -> Vec<HistogramDataPoint> {
    let received = c.received.lock().expect("lock");
    let Some(req) = received.last() else {
        return vec![];
    };
    req.resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .filter(|m| m.name == "http.server.request.duration")
        .flat_map(|m| match &m.data {
            Some(metric::Data::Histogram(h)) => h.data_points.clone(),
            _ => vec![],
        })
        .collect()
}

/// A server span of `GET /users/{id}` (the shared sample names its route by `n`).
fn span(n: u8) -> crate::span::model::Span {
    let mut s = sample_span(&resource("shop"), n);
    s.name = "GET /users/{id}".into();
    s
}

fn own_resource() -> Vec<Attribute> {
    vec![Attribute::new("service.name", "ebpf-agent".to_owned())]
}

#[tokio::test]
async fn exports_every_interval_and_once_more_at_shutdown() {
    let (cfg, collector) = start(vec![]).await;
    let telemetry = Arc::new(Telemetry::new());
    let mut recorder = Recorder::new(telemetry.clone());
    let first = span(1);
    recorder.record(&first, true);
    recorder.record(&span(2), false);
    let exporter = metrics::spawn(
        &cfg,
        false,
        Duration::from_millis(100),
        own_resource(),
        telemetry.clone(),
    )
    .expect("spawn")
    .expect("on");
    eventually("a periodic export", || !last_points(&collector).is_empty()).await;
    let points = last_points(&collector);
    assert_eq!(points.len(), 1, "{points:?}");
    assert_eq!(points[0].count, 2);
    // Only the exported span lends its ids to the exemplar.
    let ids: Vec<_> = points[0]
        .exemplars
        .iter()
        .map(|e| (e.trace_id.clone(), e.span_id.clone()))
        .collect();
    assert_eq!(
        ids,
        vec![(
            first.context.trace_id.to_vec(),
            first.context.span_id.to_vec()
        )]
    );

    // Spans recorded just before shutdown are in the final export, whatever the interval.
    let calls = collector.calls.load(Ordering::SeqCst);
    recorder.record(&span(3), true);
    exporter.shutdown(PATIENCE).await;
    assert!(collector.calls.load(Ordering::SeqCst) > calls);
    assert_eq!(last_points(&collector)[0].count, 3, "cumulative totals");
    assert!(telemetry.get(Counter::MetricsExports) >= 2);
    assert_eq!(telemetry.get(Counter::MetricsExportFailures), 0);
}

#[tokio::test]
async fn unavailable_is_retried_and_resource_exhausted_without_retry_info_is_not() {
    let exhausted = Status::resource_exhausted("slow down");
    let retry_info = Status::with_error_details(
        Code::Unavailable,
        "try later",
        ErrorDetails::with_retry_info(Some(Duration::from_millis(10))),
    );
    let (cfg, collector) = start(vec![exhausted, retry_info]).await;
    let telemetry = Arc::new(Telemetry::new());
    let mut recorder = Recorder::new(telemetry.clone());
    recorder.record(&span(1), true);
    let exporter = metrics::spawn(
        &cfg,
        false,
        Duration::from_millis(200),
        own_resource(),
        telemetry.clone(),
    )
    .expect("spawn")
    .expect("on");
    // First interval: RESOURCE_EXHAUSTED without RetryInfo is permanent (OTLP spec): given up.
    // Second: UNAVAILABLE is retried, and the retry lands.
    eventually("an accepted export after the failures", || {
        !last_points(&collector).is_empty()
    })
    .await;
    assert_eq!(telemetry.get(Counter::MetricsExportFailures), 1);
    assert_eq!(telemetry.get(Counter::MetricsExportRetries), 1);
    assert_eq!(collector.calls.load(Ordering::SeqCst), 3);
    assert_eq!(last_points(&collector)[0].count, 1);
    exporter.shutdown(PATIENCE).await;
}

#[tokio::test]
async fn a_collector_that_is_down_is_counted_and_never_blocks_shutdown() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let cfg = ExportConfig {
        endpoint: Some(format!("http://{addr}")),
        max_retry_elapsed_ms: 0,
        timeout_ms: 500,
        shutdown_timeout_ms: 500,
        ..Default::default()
    };
    let telemetry = Arc::new(Telemetry::new());
    Recorder::new(telemetry.clone()).record(&span(1), true);
    let exporter = metrics::spawn(
        &cfg,
        false,
        Duration::from_millis(100),
        own_resource(),
        telemetry.clone(),
    )
    .expect("spawn")
    .expect("on");
    eventually("failures counted", || {
        telemetry.get(Counter::MetricsExportFailures) >= 2
    })
    .await;
    let started = std::time::Instant::now();
    exporter.shutdown(Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(telemetry.get(Counter::MetricsExports), 0);
}

#[tokio::test]
async fn zero_interval_is_off() {
    let telemetry = Arc::new(Telemetry::new());
    let off = metrics::spawn(
        &ExportConfig::default(),
        false,
        Duration::ZERO,
        own_resource(),
        telemetry,
    )
    .expect("spawn");
    assert!(off.is_none());
}

/// OTLP/HTTP: the POST goes to `/v1/metrics` beside the configured `/v1/traces`, gzipped
/// with the configured headers, and a partial success is counted.
#[tokio::test]
async fn http_protobuf_posts_to_v1_metrics_with_headers_and_gzip() {
    use std::io::Read as _;

    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsPartialSuccess;
    use prost::Message as _;

    type Seen = Arc<Mutex<Vec<(http::request::Parts, ExportMetricsServiceRequest)>>>;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Seen = Arc::default();
    let seen_by_server = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen_by_server.clone();
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let seen = seen.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let gz = body.collect().await?.to_bytes();
                    let mut raw = Vec::new();
                    flate2::read::GzDecoder::new(&gz[..])
                        .read_to_end(&mut raw)
                        .expect("gzip body");
                    let request =
                        ExportMetricsServiceRequest::decode(&raw[..]).expect("a metrics request");
                    seen.lock().expect("lock").push((parts, request));
                    let answer = ExportMetricsServiceResponse {
                        partial_success: Some(ExportMetricsPartialSuccess {
                            rejected_data_points: 1,
                            error_message: "one bad point".into(),
                        }),
                    };
                    Ok::<_, hyper::Error>(
                        http::Response::builder()
                            .header("content-type", "application/x-protobuf")
                            .body(Full::new(Bytes::from(answer.encode_to_vec())))
                            .expect("response"),
                    )
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    let cfg = ExportConfig {
        endpoint: Some(format!("http://{addr}/otlp/v1/traces")),
        protocol: super::Protocol::HttpProtobuf,
        compression: super::Compression::Gzip,
        headers: [("x-tenant".to_owned(), "t1".to_owned())].into(),
        ..Default::default()
    };
    let telemetry = Arc::new(Telemetry::new());
    Recorder::new(telemetry.clone()).record(&span(1), true);
    let exporter = metrics::spawn(
        &cfg,
        false,
        Duration::from_millis(100),
        own_resource(),
        telemetry.clone(),
    )
    .expect("spawn")
    .expect("on");
    eventually("a POST", || !seen.lock().expect("lock").is_empty()).await;
    exporter.shutdown(PATIENCE).await;
    let seen = seen.lock().expect("lock");
    let (parts, request) = &seen[0];
    assert_eq!(parts.uri.path(), "/otlp/v1/metrics");
    assert_eq!(parts.headers["x-tenant"], "t1");
    assert_eq!(parts.headers["content-encoding"], "gzip");
    assert_eq!(parts.headers["content-type"], "application/x-protobuf");
    let names: Vec<_> = request.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["http.server.request.duration"]);
    assert!(telemetry.get(Counter::MetricsPointsRejected) >= 1);
}
