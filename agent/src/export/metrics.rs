//! The RED metrics exporter: every `metrics.export_interval_ms` it reads the RED series
//! (`telemetry::red`) and sends them as OTLP metrics to the span collector — same endpoint,
//! protocol, headers, TLS and compression (`export.*`), gRPC `MetricsService/Export` or a POST
//! to `/v1/metrics` — or, with no endpoint, prints a readable summary on stdout. On shutdown it
//! sends (or prints) once more, within the shutdown timeout.
//!
//! It is a task of its own with its own connection, so a slow or failing metrics call never
//! holds up span export. Failures are retried with the span exporter's rule (`retry::decide`),
//! but never past the next interval: the histograms are cumulative, so the next export carries
//! everything a lost one had. A call given up on is counted in
//! `agent_metrics_export_failures_total`. Encoding is `otlp_metrics.rs`, the summary
//! `metrics_console.rs`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

use super::client::{grpc_channel, Failure, TlsFiles};
use super::config::{parse_endpoint, Compression, EndpointError, ExportConfig, Protocol};
use super::otlp_http::HttpClient;
use super::otlp_metrics::{collect, encode_metrics};
use super::retry::{decide, is_retryable, Backoff, Retry};
use super::ExportError;
use crate::span::model::Attribute;
use crate::telemetry::{Counter, Telemetry};

/// Where the metrics go.
// One instance per agent: the variants' size difference costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
enum Sink {
    Grpc {
        client: MetricsServiceClient<Channel>,
        metadata: MetadataMap,
    },
    Http(HttpClient),
    Console,
}

/// The running exporter; [`shutdown`](Self::shutdown) makes it export once more and stop.
pub struct MetricsExporter {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl MetricsExporter {
    /// Asks for the final export and waits for it, at most `grace`.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(());
        if tokio::time::timeout(grace, self.task).await.is_err() {
            tracing::warn!("the final RED metrics export did not finish within {grace:?}");
        }
    }
}

/// Starts the exporter task on the current runtime. `resource` describes the agent itself.
/// Returns `None` when `interval` is zero (export turned off).
pub fn spawn(
    cfg: &ExportConfig,
    endpoint_final: bool,
    interval: Duration,
    resource: Vec<Attribute>,
    telemetry: Arc<Telemetry>,
) -> Result<Option<MetricsExporter>, ExportError> {
    if interval.is_zero() {
        tracing::info!("RED metrics export off (metrics.export_interval_ms = 0)");
        return Ok(None);
    }
    tokio::runtime::Handle::try_current().map_err(|_| ExportError::NoRuntime)?;
    let sink = match &cfg.endpoint {
        None => Sink::Console,
        Some(endpoint) => sink_for(cfg, endpoint, endpoint_final)?,
    };
    let (stop, stopped) = oneshot::channel();
    let mut run = Run {
        sink,
        resource,
        telemetry,
        call_timeout: Duration::from_millis(cfg.timeout_ms),
        backoff: backoff_within(interval, Duration::from_millis(cfg.max_retry_elapsed_ms)),
        shutdown_timeout: Duration::from_millis(cfg.shutdown_timeout_ms),
        warned: false,
    };
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        to = if cfg.endpoint.is_some() {
            "the OTLP endpoint"
        } else {
            "the console"
        },
        "exporting RED metrics"
    );
    let task = tokio::spawn(async move {
        run.run(interval, stopped).await;
    });
    Ok(Some(MetricsExporter { stop, task }))
}

/// `endpoint_final`: an OTLP/HTTP endpoint is the metrics URL itself (from the environment),
/// not the traces URL to derive it from.
fn sink_for(cfg: &ExportConfig, endpoint: &str, endpoint_final: bool) -> Result<Sink, ExportError> {
    let uri = parse_endpoint(endpoint).map_err(|reason| ExportError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason,
    })?;
    let tls = TlsFiles::load(cfg)?;
    Ok(match cfg.protocol {
        Protocol::Grpc => {
            let (channel, metadata) = grpc_channel(cfg, &uri, tls.as_ref())?;
            let mut client = MetricsServiceClient::new(channel);
            if cfg.compression == Compression::Gzip {
                client = client
                    .send_compressed(CompressionEncoding::Gzip)
                    .accept_compressed(CompressionEncoding::Gzip);
            }
            Sink::Grpc { client, metadata }
        }
        Protocol::HttpProtobuf => {
            let uri = if endpoint_final {
                uri
            } else {
                metrics_http_uri(&uri).map_err(|e| ExportError::InvalidEndpoint {
                    endpoint: endpoint.to_owned(),
                    reason: EndpointError::NotAUrl(e),
                })?
            };
            Sink::Http(HttpClient::new(cfg, uri, tls)?)
        }
    })
}

/// The span exporter's backoff, fitted into one interval: retrying past the next export is
/// pointless (it supersedes this one), and with a short interval the first retry must come
/// well before it, so the delays shrink with the interval.
fn backoff_within(interval: Duration, budget: Duration) -> Backoff {
    let spans = Backoff::with_max_elapsed(budget.min(interval));
    Backoff {
        initial: spans.initial.min(interval / 8),
        max: spans.max.min(interval / 2),
        ..spans
    }
}

/// The OTLP/HTTP metrics URL for the configured (traces) endpoint: `…/v1/traces` becomes
/// `…/v1/metrics` (what `OTEL_EXPORTER_OTLP_ENDPOINT` gives and what most configs say); any
/// other path is a base URL and gets `/v1/metrics` appended, as the OTLP exporter spec does
/// for the generic endpoint.
pub(crate) fn metrics_http_uri(uri: &http::Uri) -> Result<http::Uri, String> {
    let path = uri.path().trim_end_matches('/');
    let base = path.strip_suffix("/v1/traces").unwrap_or(path);
    format!(
        "{}://{}{base}/v1/metrics",
        uri.scheme_str().unwrap_or("http"),
        uri.authority().map_or("", |a| a.as_str())
    )
    .parse()
    .map_err(|e: http::uri::InvalidUri| e.to_string())
}

struct Run {
    sink: Sink,
    resource: Vec<Attribute>,
    telemetry: Arc<Telemetry>,
    call_timeout: Duration,
    backoff: Backoff,
    shutdown_timeout: Duration,
    /// Whether a failure was logged as a warning: later ones are logged at debug.
    warned: bool,
}

impl Run {
    async fn run(&mut self, interval: Duration, mut stopped: oneshot::Receiver<()>) {
        let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // A stop during an export abandons it: the final export below supersedes it.
                _ = &mut stopped => break,
                _ = async { tick.tick().await; self.export_once(None).await } => {}
            }
        }
        let deadline = Instant::now() + self.shutdown_timeout;
        let _ = tokio::time::timeout_at(deadline, self.export_once(Some(deadline))).await;
        tracing::debug!("RED metrics exporter stopped");
    }

    /// Reads every series and sends (or prints) them, retrying as allowed.
    async fn export_once(&mut self, deadline: Option<Instant>) {
        let collected = collect(self.telemetry.red().collect());
        let now = unix_nano_now();
        if matches!(self.sink, Sink::Console) {
            if !collected.is_empty() {
                super::metrics_console::print(&collected);
                self.telemetry.incr(Counter::MetricsExports);
            }
            return;
        }
        // Chunks of one collection, each retried on its own. A chunk the collector refused for
        // good does not stop the others (they carry other series); one given up on because
        // the collector is unreachable or overloaded ends the round, since the rest would only
        // wait out the same timeouts, and the next round carries their totals anyway.
        for request in encode_metrics(&self.resource, &collected, now) {
            if let Err(code) = self.send(&request, deadline).await {
                if is_retryable(code, true) {
                    break;
                }
            }
        }
    }

    /// Sends one request, retrying as allowed; `Err` with the last code when given up on.
    async fn send(
        &mut self,
        request: &ExportMetricsServiceRequest,
        deadline: Option<Instant>,
    ) -> Result<(), tonic::Code> {
        let points: u64 = request
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| match &m.data {
                Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Histogram(h)) => {
                    h.data_points.len() as u64
                }
                _ => 0,
            })
            .sum();
        let first_try = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let budget = match deadline {
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .min(self.call_timeout),
                None => self.call_timeout,
            };
            let failure = match self.call(request, budget).await {
                Ok(rejected) => {
                    self.telemetry.incr(Counter::MetricsExports);
                    self.telemetry
                        .add(Counter::MetricsPointsRejected, rejected.min(points));
                    if self.warned {
                        self.warned = false;
                        tracing::info!("RED metrics export works again");
                    }
                    return Ok(());
                }
                Err(f) => f,
            };
            let decision = decide(
                failure.code,
                attempt,
                first_try.elapsed(),
                failure.retry_after,
                &self.backoff,
                fastrand::f64(),
            );
            let delay = match decision {
                Retry::After(d) if deadline.is_none_or(|dl| Instant::now() + d < dl) => d,
                _ => {
                    self.give_up(&failure);
                    return Err(failure.code);
                }
            };
            self.telemetry.incr(Counter::MetricsExportRetries);
            tracing::debug!(code = ?failure.code, error = %failure.message, attempt, ?delay, "RED metrics export failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// One call; `Ok` carries the data points the collector rejected (partial success).
    async fn call(
        &mut self,
        request: &ExportMetricsServiceRequest,
        timeout: Duration,
    ) -> Result<u64, Failure> {
        let response = match &mut self.sink {
            Sink::Grpc { client, metadata } => {
                let mut req = tonic::Request::new(request.clone());
                *req.metadata_mut() = metadata.clone();
                req.set_timeout(timeout);
                match tokio::time::timeout(timeout, client.export(req)).await {
                    Err(_) => return Err(Failure::timed_out(timeout)),
                    Ok(Err(status)) => return Err(Failure::from_status(&status)),
                    Ok(Ok(r)) => r.into_inner(),
                }
            }
            Sink::Http(http) => {
                let body = http.post(request.encode_to_vec(), timeout).await?;
                // The data is in; an unreadable answer only loses the partial-success details.
                ExportMetricsServiceResponse::decode(body).unwrap_or_default()
            }
            Sink::Console => return Ok(0),
        };
        Ok(response
            .partial_success
            .map_or(0, |p| u64::try_from(p.rejected_data_points).unwrap_or(0)))
    }

    fn give_up(&mut self, failure: &Failure) {
        self.telemetry.incr(Counter::MetricsExportFailures);
        if self.warned {
            tracing::debug!(code = ?failure.code, error = %failure.message, "RED metrics export failed");
        } else {
            self.warned = true;
            tracing::warn!(
                code = ?failure.code,
                error = %failure.message,
                counter = Counter::MetricsExportFailures.name(),
                "RED metrics export failed; the next export carries the same totals (further failures are only counted)"
            );
        }
    }
}

fn unix_nano_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_fit_in_one_interval() {
        let b = backoff_within(Duration::from_secs(60), Duration::from_secs(30));
        assert_eq!(b, Backoff::with_max_elapsed(Duration::from_secs(30)));
        let b = backoff_within(Duration::from_millis(800), Duration::from_secs(30));
        assert_eq!(
            (b.initial, b.max, b.max_elapsed),
            (
                Duration::from_millis(100),
                Duration::from_millis(400),
                Duration::from_millis(800)
            )
        );
        // With no retry budget, no retries.
        let b = backoff_within(Duration::from_secs(60), Duration::ZERO);
        assert_eq!(b.max_elapsed, Duration::ZERO);
    }

    #[test]
    fn http_metrics_url_follows_the_traces_url() {
        let m = |s: &str| {
            metrics_http_uri(&s.parse().expect("uri"))
                .expect("metrics uri")
                .to_string()
        };
        assert_eq!(m("http://c:4318"), "http://c:4318/v1/metrics");
        assert_eq!(m("http://c:4318/"), "http://c:4318/v1/metrics");
        assert_eq!(m("http://c:4318/v1/traces"), "http://c:4318/v1/metrics");
        assert_eq!(m("https://gw/otlp/v1/traces"), "https://gw/otlp/v1/metrics");
        assert_eq!(m("http://gw/otlp/"), "http://gw/otlp/v1/metrics");
    }
}
