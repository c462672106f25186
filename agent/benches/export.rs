//! Export capacity: how many spans per second the OTLP/gRPC exporter delivers to a collector
//! that does nothing but count (an in-process tonic server on 127.0.0.1), with and without
//! gzip and with a collector that takes 5 ms per call; whether the default bounded queue drops
//! anything at a steady 50k spans/s offered; and what encoding alone costs. Prints figures;
//! asserts only that everything sent arrived (or was counted as dropped).
//!
//! Run: cargo bench -p agent --bench export

use agent::export::{encode, spawn, Compression, ExportConfig};
use agent::span::model::{Attribute, Resource, Span, SpanContext, SpanKind, StatusCode};
use agent::telemetry::{Counter, Telemetry};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::codec::CompressionEncoding;

/// Counts the spans it receives; answers after `latency` (a collector farther away, or busy).
struct Counting(Arc<AtomicU64>, Duration);

#[tonic::async_trait]
impl TraceService for Counting {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        if !self.1.is_zero() {
            tokio::time::sleep(self.1).await;
        }
        self.0.fetch_add(n as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn http_span(resource: &Arc<Resource>, i: u64) -> Span {
    let mut attributes = vec![
        Attribute::new("http.request.method", "GET"),
        Attribute::new("url.path", format!("/api/users/{i}")),
        Attribute::new("url.scheme", "http"),
        Attribute::new("http.response.status_code", 200i64),
        Attribute::new("server.address", "10.0.3.17"),
        Attribute::new("server.port", 8080i64),
        Attribute::new("client.address", "10.0.1.5"),
        Attribute::new("client.port", 52344i64),
        Attribute::new("network.peer.address", "10.0.1.5"),
        Attribute::new("network.peer.port", 52344i64),
        Attribute::new("network.local.address", "10.0.3.17"),
        Attribute::new("network.local.port", 8080i64),
        Attribute::new("network.transport", "tcp"),
        Attribute::new("network.type", "ipv4"),
        Attribute::new("network.protocol.version", "1.1"),
        Attribute::new("user_agent.original", "Go-http-client/1.1"),
        Attribute::new("http.response.body.size", 512i64),
    ];
    attributes.shrink_to_fit();
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&i.to_le_bytes());
    Span {
        context: SpanContext {
            trace_id,
            span_id: (i + 1).to_le_bytes(),
            flags: 1,
            trace_state: None,
        },
        parent_span_id: Some(i.to_be_bytes()),
        name: "GET /api/users/{id}".into(),
        kind: SpanKind::Server,
        start_unix_nano: 1_700_000_000_000_000_000 + i,
        end_unix_nano: 1_700_000_000_001_000_000 + i,
        status: StatusCode::Unset,
        status_message: None,
        attributes,
        resource: resource.clone(),
    }
}

fn main() {
    const N: u64 = 200_000;
    let resource = Arc::new(Resource {
        attributes: vec![
            Attribute::new("service.name", "checkout"),
            Attribute::new("process.pid", 4242i64),
            Attribute::new("host.name", "node-7"),
        ],
    });
    let spans: Vec<Span> = (0..N).map(|i| http_span(&resource, i)).collect();

    // Encoding alone, in batches of 512.
    let t = Instant::now();
    let mut bytes = 0usize;
    for chunk in spans.chunks(512) {
        bytes += prost::Message::encoded_len(&encode(chunk));
    }
    let enc = t.elapsed().as_secs_f64();
    println!(
        "encode: {N} spans in {enc:.3} s = {:.0} spans/s, {:.0} bytes/span",
        N as f64 / enc,
        bytes as f64 / N as f64
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cases = [
        (
            "as fast as it takes them",
            Compression::None,
            Duration::ZERO,
            None,
        ),
        (
            "as fast as it takes them, gzip",
            Compression::Gzip,
            Duration::ZERO,
            None,
        ),
        (
            "collector answering after 5 ms",
            Compression::None,
            Duration::from_millis(5),
            None,
        ),
        (
            "steady 50k spans/s offered, default queue",
            Compression::None,
            Duration::ZERO,
            Some(50_000),
        ),
    ];
    for (what, compression, latency, rate) in cases {
        let spans = spans.clone();
        rt.block_on(export_case(what, spans, compression, latency, rate));
    }
}

/// Sends `spans` through a real exporter to a counting collector. `rate`: offer this many
/// spans per second to the default-size queue (drops are counted, not prevented); without
/// it, pace to the queue so the figure is delivery capacity, not drop rate.
async fn export_case(
    what: &str,
    spans: Vec<Span>,
    compression: Compression,
    latency: Duration,
    rate: Option<u64>,
) {
    let n = spans.len() as u64;
    let received = Arc::new(AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tokio::spawn(
        tonic::transport::Server::builder().serve_with_incoming(
            TraceServiceServer::new(Counting(received.clone(), latency))
                .accept_compressed(CompressionEncoding::Gzip),
            incoming,
        ),
    );
    let telemetry = Arc::new(Telemetry::new());
    let cfg = ExportConfig {
        endpoint: Some(format!("http://{addr}")),
        compression,
        queue_size: if rate.is_some() {
            ExportConfig::default().queue_size
        } else {
            65536
        },
        ..Default::default()
    };
    let (sender, task) = spawn(&cfg, telemetry.clone()).unwrap();
    let start = Instant::now();
    for (sent, s) in spans.into_iter().enumerate() {
        let sent = sent as u64;
        match rate {
            Some(per_s) => {
                // Offer at the rate, in steps of 1 ms worth of spans.
                let step = (per_s / 1000).max(1);
                if sent.is_multiple_of(step) {
                    let due = start + Duration::from_secs_f64(sent as f64 / per_s as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
            }
            None => {
                while sent - received.load(Ordering::Relaxed) >= 60_000 {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
        }
        sender.send(s);
    }
    drop(sender);
    task.await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    let got = received.load(Ordering::Relaxed);
    let dropped = telemetry.get(Counter::SpansQueueDropped);
    let rejected = telemetry.get(Counter::SpansRejected);
    println!(
        "OTLP/gRPC export, {what}: {got} spans in {secs:.3} s = {:.0} spans/s (batch {}, {} batches in flight at most)",
        got as f64 / secs,
        cfg.batch_size,
        cfg.max_concurrent_exports
    );
    println!("  dropped {dropped}, rejected {rejected}");
    assert_eq!(
        got + dropped + rejected,
        n,
        "every span sent arrived or was counted"
    );
    if rate.is_none() {
        assert_eq!(got, n, "every span sent arrived");
    }
    server.abort();
}
