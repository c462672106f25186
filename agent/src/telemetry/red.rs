//! RED metrics (rate, errors, duration) of the traced services, recorded from every finished
//! span as OpenTelemetry semantic-convention duration histograms, served on `/metrics` beside
//! the agent's own counters.
//!
//! Which metric a span feeds follows its kind and protocol ([`Metric::of`]); the label set is
//! the convention's attribute list for that metric, read off the span (`http.route` is the
//! route template in the span name, never the raw path). Every span is recorded, sampled out
//! or not: the conventions' metrics describe all requests, and head sampling exists to cut
//! trace volume, not to bias rates. Only exported spans (sampled, or kept for their error) lend
//! their ids to an exemplar, so an exemplar always points at a trace the backend has.
//!
//! Names follow the OTel→Prometheus conversion (OTLP→Prometheus compatibility spec): dots
//! become underscores and the unit is appended, so `http.server.request.duration` (unit `s`)
//! is served as `http_server_request_duration_seconds`. Label names are converted the same way.
//!
//! Cardinality is bounded: at most [`MAX_SERIES`] label sets per metric; later new label sets
//! are recorded in one overflow series labelled `otel_metric_overflow="true"` (the metrics SDK
//! specification's cardinality limit) and counted in `agent_red_metrics_overflowed_total`.
//!
//! Hot path: [`Recorder::record`] runs on the pipeline thread once per span. A label set seen
//! before is found in the recorder's own cache by a hash of the borrowed attribute values and
//! observed through a cloned histogram handle: no allocation and no `Family` lock; only a new
//! label set builds owned strings. This module does not decide what a span is; `span` does.
//!
//! Each series also has a lock-free record ([`series::Series`], same observation, same
//! buckets, OTel attribute names and types) that the OTLP metrics exporter and the console
//! summary read through [`RedMetrics::collect`] (prometheus-client keeps its histograms'
//! buckets and exemplars private to its own encoders).

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::registry::{Registry, Unit};
use rustc_hash::FxHashMap;

use super::{Counter, Telemetry};
use crate::span::model::{hex, AttrValue, Span, SpanId, SpanKind, TraceId};

pub mod series;
use series::Series;

/// Label sets kept per metric before new ones go to the overflow series.
pub const MAX_SERIES: usize = 2000;

/// Explicit bucket boundaries (seconds) the HTTP conventions recommend for
/// `http.*.request.duration`; the RPC, database and messaging conventions recommend the same.
pub const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Label of the overflow series (Prometheus spelling of `otel.metric.overflow`).
pub const OVERFLOW_LABEL: &str = "otel_metric_overflow";

/// Where a label's value comes from.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// A span attribute.
    Attr(&'static str),
    /// The resource's `service.name`.
    Service,
    /// The route template: the span name after the method (`GET /users/{id}` → `/users/{id}`).
    Route,
}

/// One label: its Prometheus name and where its value comes from.
type LabelSpec = (&'static str, Source);

/// The OpenTelemetry attribute name of a label (what OTLP export uses).
fn otel_key(spec: &LabelSpec) -> &'static str {
    match spec.1 {
        Source::Attr(k) => k,
        Source::Service => "service.name",
        Source::Route => "http.route",
    }
}

/// The overflow series' attribute (metrics SDK spec, cardinality limits).
pub const OVERFLOW_ATTRIBUTE: &str = "otel.metric.overflow";

const SERVICE: LabelSpec = ("service_name", Source::Service);
const ERROR: LabelSpec = ("error_type", Source::Attr("error.type"));
const SERVER_ADDRESS: LabelSpec = ("server_address", Source::Attr("server.address"));
const SERVER_PORT: LabelSpec = ("server_port", Source::Attr("server.port"));

/// The metrics, with their convention names, units and attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    HttpServer,
    HttpClient,
    RpcServer,
    RpcClient,
    DbClient,
    MessagingClient,
    MessagingProcess,
}

impl Metric {
    pub const ALL: [Metric; 7] = [
        Metric::HttpServer,
        Metric::HttpClient,
        Metric::RpcServer,
        Metric::RpcClient,
        Metric::DbClient,
        Metric::MessagingClient,
        Metric::MessagingProcess,
    ];

    /// The OTel name; served with dots as underscores and `_seconds` appended.
    pub fn otel_name(self) -> &'static str {
        match self {
            Metric::HttpServer => "http.server.request.duration",
            Metric::HttpClient => "http.client.request.duration",
            // The RPC conventions renamed `rpc.server.duration` (ms) to
            // `rpc.server.call.duration` (s); we use the current, seconds-based names.
            Metric::RpcServer => "rpc.server.call.duration",
            Metric::RpcClient => "rpc.client.call.duration",
            Metric::DbClient => "db.client.operation.duration",
            Metric::MessagingClient => "messaging.client.operation.duration",
            Metric::MessagingProcess => "messaging.process.duration",
        }
    }

    /// The Prometheus family name (without the unit suffix the registry appends).
    pub fn prometheus_base(self) -> String {
        self.otel_name().replace('.', "_")
    }

    pub fn help(self) -> &'static str {
        match self {
            Metric::HttpServer => {
                "Duration of HTTP server requests (from the agent's server spans)"
            }
            Metric::HttpClient => {
                "Duration of HTTP client requests (from the agent's client spans)"
            }
            Metric::RpcServer => "Duration of incoming RPCs (gRPC server spans)",
            Metric::RpcClient => "Duration of outgoing RPCs (gRPC client spans)",
            Metric::DbClient => "Duration of database client operations",
            Metric::MessagingClient => {
                "Duration of messaging operations (publish, receive, settle)"
            }
            Metric::MessagingProcess => "Duration of processing delivered messages",
        }
    }

    /// The labels, from the metric's semantic-convention attributes.
    fn labels(self) -> &'static [LabelSpec] {
        use Source::Attr;
        match self {
            Metric::HttpServer => &[
                SERVICE,
                ("http_request_method", Attr("http.request.method")),
                (
                    "http_response_status_code",
                    Attr("http.response.status_code"),
                ),
                ("http_route", Source::Route),
                ERROR,
                ("network_protocol_version", Attr("network.protocol.version")),
                ("url_scheme", Attr("url.scheme")),
            ],
            Metric::HttpClient => &[
                SERVICE,
                ("http_request_method", Attr("http.request.method")),
                (
                    "http_response_status_code",
                    Attr("http.response.status_code"),
                ),
                SERVER_ADDRESS,
                SERVER_PORT,
                ERROR,
                ("network_protocol_version", Attr("network.protocol.version")),
                ("url_scheme", Attr("url.scheme")),
            ],
            Metric::RpcServer | Metric::RpcClient => &[
                SERVICE,
                ("rpc_system", Attr("rpc.system")),
                ("rpc_service", Attr("rpc.service")),
                ("rpc_method", Attr("rpc.method")),
                ("rpc_grpc_status_code", Attr("rpc.grpc.status_code")),
                ERROR,
                SERVER_ADDRESS,
                SERVER_PORT,
            ],
            Metric::DbClient => &[
                SERVICE,
                ("db_system_name", Attr("db.system.name")),
                ("db_operation_name", Attr("db.operation.name")),
                ("db_collection_name", Attr("db.collection.name")),
                ("db_response_status_code", Attr("db.response.status_code")),
                ERROR,
                SERVER_ADDRESS,
                SERVER_PORT,
            ],
            Metric::MessagingClient | Metric::MessagingProcess => &[
                SERVICE,
                ("messaging_system", Attr("messaging.system")),
                ("messaging_operation_name", Attr("messaging.operation.name")),
                ("messaging_operation_type", Attr("messaging.operation.type")),
                (
                    "messaging_destination_name",
                    Attr("messaging.destination.name"),
                ),
                ERROR,
                SERVER_ADDRESS,
                SERVER_PORT,
            ],
        }
    }

    /// The metric a finished span feeds, if any. gRPC calls (HTTP/2 spans with `rpc.system`)
    /// feed the RPC metrics only, as a gRPC instrumentation would.
    pub fn of(span: &Span) -> Option<Metric> {
        let has = |k| span.attr(k).is_some();
        Some(match span.kind {
            SpanKind::Server if has("rpc.system") => Metric::RpcServer,
            SpanKind::Client if has("rpc.system") => Metric::RpcClient,
            SpanKind::Server if has("http.request.method") => Metric::HttpServer,
            SpanKind::Client if has("http.request.method") => Metric::HttpClient,
            SpanKind::Client if has("db.system.name") => Metric::DbClient,
            SpanKind::Producer | SpanKind::Consumer | SpanKind::Client
                if has("messaging.system") =>
            {
                match span.attr("messaging.operation.type") {
                    Some(AttrValue::Str(t)) if t == "process" => Metric::MessagingProcess,
                    _ => Metric::MessagingClient,
                }
            }
            _ => return None,
        })
    }
}

/// The exemplar's labels: the ids of the span that made the observation, kept as bytes and
/// spelled in hex only when scraped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceExemplar {
    pub trace_id: TraceId,
    pub span_id: SpanId,
}

impl EncodeLabelSet for TraceExemplar {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let (t, s) = (hex(&self.trace_id), hex(&self.span_id));
        [("trace_id", t.as_str()), ("span_id", s.as_str())]
            .as_slice()
            .encode(encoder)
    }
}

/// An owned label set as the registry stores it.
pub type Labels = Vec<(&'static str, String)>;
type Histogram = HistogramWithExemplars<TraceExemplar>;

#[derive(Clone, Copy, Debug)]
struct Buckets;
impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        HistogramWithExemplars::new(BUCKETS.into_iter())
    }
}

/// The histogram families, one per [`Metric`]. Shared by the recorder and the endpoint.
pub struct RedMetrics {
    families: Vec<Family<Labels, Histogram, Buckets>>,
    /// Label sets per family (`Family` counts them only for tests).
    series: Vec<AtomicUsize>,
    max_series: usize,
    /// Every series' lock-free record, for the OTLP exporter and the console summary. Locked
    /// only when a label set is new and when a reader collects (once per export interval).
    records: Mutex<FxHashMap<(Metric, Labels), Arc<Series>>>,
}

impl Default for RedMetrics {
    fn default() -> Self {
        Self::with_max_series(MAX_SERIES)
    }
}

impl RedMetrics {
    pub fn with_max_series(max_series: usize) -> Self {
        Self {
            families: Metric::ALL
                .iter()
                .map(|_| Family::new_with_constructor(Buckets))
                .collect(),
            series: Metric::ALL.iter().map(|_| AtomicUsize::new(0)).collect(),
            max_series: max_series.max(1),
            records: Mutex::new(FxHashMap::default()),
        }
    }

    fn family(&self, m: Metric) -> &Family<Labels, Histogram, Buckets> {
        &self.families[m as usize]
    }

    /// Label sets of `m` in use (the overflow series included).
    pub fn series(&self, m: Metric) -> usize {
        self.series[m as usize].load(Ordering::Relaxed)
    }

    /// The histogram of `labels` in `m` and its lock-free record (whose attributes are
    /// `attributes`, called only if the record is new), created (and counted) if new.
    fn create(
        &self,
        m: Metric,
        labels: &Labels,
        attributes: impl FnOnce() -> Vec<(&'static str, AttrValue)>,
    ) -> (Histogram, Arc<Series>) {
        self.series[m as usize].fetch_add(1, Ordering::Relaxed);
        let histogram = self.family(m).get_or_create_owned(labels);
        // A poisoned lock only means another thread panicked mid-insert; the map is intact.
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let record = records
            .entry((m, labels.clone()))
            .or_insert_with(|| Arc::new(Series::new(m, attributes(), unix_nano_now())))
            .clone();
        (histogram, record)
    }

    /// Every series recorded so far (a cheap copy of handles; the data stays shared).
    pub fn collect(&self) -> Vec<Arc<Series>> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.values().cloned().collect()
    }

    /// Adds the families to `registry` (clones share the same data).
    pub fn register(&self, registry: &mut Registry) {
        for m in Metric::ALL {
            registry.register_with_unit(
                m.prometheus_base(),
                m.help(),
                Unit::Seconds,
                self.family(m).clone(),
            );
        }
    }
}

/// A label value borrowed from the span.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Val<'a> {
    Absent,
    Str(&'a str),
    Int(i64),
    Bool(bool),
}

impl Hash for Val<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match self {
            Val::Absent => 0u8.hash(h),
            Val::Str(s) => s.hash(h),
            Val::Int(i) => i.hash(h),
            Val::Bool(b) => b.hash(h),
        }
    }
}

/// The same value, owned (cached beside the histogram to confirm a hash match).
#[derive(Clone, Debug, PartialEq)]
enum OwnedVal {
    Absent,
    Str(String),
    Int(i64),
    Bool(bool),
}

impl OwnedVal {
    fn matches(&self, v: &Val<'_>) -> bool {
        match (self, v) {
            (OwnedVal::Absent, Val::Absent) => true,
            (OwnedVal::Str(a), Val::Str(b)) => a == b,
            (OwnedVal::Int(a), Val::Int(b)) => a == b,
            (OwnedVal::Bool(a), Val::Bool(b)) => a == b,
            _ => false,
        }
    }

    fn from_val(v: &Val<'_>) -> Self {
        match *v {
            Val::Absent => OwnedVal::Absent,
            Val::Str(s) => OwnedVal::Str(s.to_owned()),
            Val::Int(i) => OwnedVal::Int(i),
            Val::Bool(b) => OwnedVal::Bool(b),
        }
    }

    /// The value as an OpenTelemetry attribute value (types kept: a status code is an int).
    fn attr(&self) -> Option<AttrValue> {
        match self {
            OwnedVal::Absent => None,
            OwnedVal::Str(s) => Some(AttrValue::Str(s.clone())),
            OwnedVal::Int(i) => Some(AttrValue::Int(*i)),
            OwnedVal::Bool(b) => Some(AttrValue::Bool(*b)),
        }
    }

    fn label(&self) -> Option<String> {
        match self {
            OwnedVal::Absent => None,
            OwnedVal::Str(s) => Some(s.clone()),
            OwnedVal::Int(i) => Some(i.to_string()),
            OwnedVal::Bool(b) => Some(b.to_string()),
        }
    }
}

/// Most labels any metric has.
const MAX_LABELS: usize = 8;

struct Cached {
    metric: Metric,
    values: Vec<OwnedVal>,
    histogram: Histogram,
    record: Arc<Series>,
}

/// Records spans into [`RedMetrics`]; one per pipeline thread (it keeps its own cache).
pub struct Recorder {
    red: Arc<Telemetry>,
    cache: FxHashMap<u64, Vec<Cached>>,
    overflow: Vec<Option<(Histogram, Arc<Series>)>>,
    keys: ahash::RandomState,
}

impl Recorder {
    pub fn new(telemetry: Arc<Telemetry>) -> Self {
        Self {
            red: telemetry,
            cache: FxHashMap::default(),
            overflow: Metric::ALL.iter().map(|_| None).collect(),
            keys: ahash::RandomState::new(),
        }
    }

    /// Records one finished span; `exported` says whether it lends its ids to an exemplar.
    pub fn record(&mut self, span: &Span, exported: bool) {
        let Some(metric) = Metric::of(span) else {
            return;
        };
        let specs = metric.labels();
        let mut vals = [Val::Absent; MAX_LABELS];
        // Keyed (random per recorder) aHash, not Fx: the values come from the network, and a
        // peer must not be able to line up colliding label sets in one cache chain. SipHash
        // did the same at four times the cost (a tenth of the pipeline's work per span).
        let mut h = self.keys.build_hasher();
        metric.hash(&mut h);
        for (slot, (_, source)) in vals.iter_mut().zip(specs) {
            *slot = value(span, *source);
            slot.hash(&mut h);
        }
        let vals = &vals[..specs.len()];
        let key = h.finish();
        let secs = span.end_unix_nano.saturating_sub(span.start_unix_nano) as f64 / 1e9;
        let ids = exported.then_some((
            &span.context.trace_id,
            &span.context.span_id,
            span.end_unix_nano,
        ));
        let exemplar = exported.then_some(TraceExemplar {
            trace_id: span.context.trace_id,
            span_id: span.context.span_id,
        });
        let found = self.cache.get(&key).and_then(|entries| {
            entries.iter().find(|c| {
                c.metric == metric && c.values.iter().zip(vals).all(|(o, v)| o.matches(v))
            })
        });
        if let Some(c) = found {
            c.histogram.observe(secs, exemplar, None);
            c.record.observe(secs, ids);
            return;
        }
        let red = self.red.red();
        // Every label set in a family came through this cache (the endpoint only reads), so
        // a full family means this set is new: it goes to the overflow series, uncached.
        if red.series(metric) >= red.max_series {
            self.red.incr(Counter::RedMetricsOverflowed);
            let (hist, record) = self.overflow[metric as usize].get_or_insert_with(|| {
                red.create(metric, &vec![(OVERFLOW_LABEL, "true".to_owned())], || {
                    vec![(OVERFLOW_ATTRIBUTE, AttrValue::Bool(true))]
                })
            });
            hist.observe(secs, exemplar, None);
            record.observe(secs, ids);
            return;
        }
        let values: Vec<OwnedVal> = vals.iter().map(OwnedVal::from_val).collect();
        let labels: Labels = specs
            .iter()
            .zip(&values)
            .filter_map(|((name, _), v)| v.label().map(|l| (*name, l)))
            .collect();
        let (histogram, record) = red.create(metric, &labels, || {
            specs
                .iter()
                .zip(&values)
                .filter_map(|(spec, v)| v.attr().map(|a| (otel_key(spec), a)))
                .collect()
        });
        histogram.observe(secs, exemplar, None);
        record.observe(secs, ids);
        self.cache.entry(key).or_default().push(Cached {
            metric,
            values,
            histogram,
            record,
        });
    }
}

fn unix_nano_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn value<'a>(span: &'a Span, source: Source) -> Val<'a> {
    let v = match source {
        Source::Attr(k) => span.attr(k),
        Source::Service => span.resource.get("service.name"),
        Source::Route => {
            return span
                .name
                .split_once(' ')
                .map_or(Val::Absent, |(_, route)| Val::Str(route))
        }
    };
    match v {
        Some(AttrValue::Str(s)) => Val::Str(s),
        Some(AttrValue::Int(i)) => Val::Int(*i),
        Some(AttrValue::Bool(b)) => Val::Bool(*b),
        // No convention attribute of these metrics is a double.
        Some(AttrValue::Double(_)) | None => Val::Absent,
    }
}

#[cfg(test)]
mod tests;
