//! Encoding the RED histograms (`telemetry::red`) as an OTLP `ExportMetricsServiceRequest`.
//!
//! A pure function of the series' snapshots and the time: one `ResourceMetrics` for the agent
//! itself (the agent is the producer of these metrics; which service each series describes is
//! its `service.name` data-point attribute, exactly as the Prometheus side labels it), one
//! `ScopeMetrics` naming the agent, one `Metric` per semantic-convention name that has data.
//! Histograms are explicit-bucket with the Prometheus side's boundaries and CUMULATIVE
//! temporality: every export repeats the totals since the series' start, so a failed export
//! loses nothing the next one does not carry (metrics.proto, "Temporality"). Exemplars carry
//! the trace and span id of an exported span in their bucket. Transport and timing live in
//! `metrics.rs`.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, metric, AggregationTemporality, Exemplar, Histogram, HistogramDataPoint, Metric,
    ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;

use super::otlp::{encode_attributes, encode_key_values, SCOPE_NAME};
use crate::span::model::Attribute;
use crate::telemetry::red::series::{Series, Snapshot};
use crate::telemetry::red::{Metric as RedMetric, BUCKETS};

/// A series and what it held at collection time.
pub type Collected = (Arc<Series>, Snapshot);

/// Reads every series once (the encoder and the console summary both start from this).
pub fn collect(series: Vec<Arc<Series>>) -> Vec<Collected> {
    series
        .into_iter()
        .map(|s| {
            let snap = s.snapshot();
            (s, snap)
        })
        .filter(|(_, snap)| snap.count > 0)
        .collect()
}

/// Data points per request at most. With every metric at its label-set limit (7 × 2000
/// series) one request would be several MiB, past the 4 MiB a gRPC server (the Collector's
/// default `max_recv_msg_size_mib`) takes; 1000 points stay well under 1 MiB.
pub const MAX_POINTS_PER_REQUEST: usize = 1000;

/// The requests for `series` as of `now_unix_nano`, each with at most
/// [`MAX_POINTS_PER_REQUEST`] data points; none when nothing was recorded yet (an empty
/// request would only cost the collector a call).
pub fn encode_metrics(
    resource: &[Attribute],
    series: &[Collected],
    now_unix_nano: u64,
) -> Vec<ExportMetricsServiceRequest> {
    encode_chunked(resource, series, now_unix_nano, MAX_POINTS_PER_REQUEST)
}

fn encode_chunked(
    resource: &[Attribute],
    series: &[Collected],
    now_unix_nano: u64,
    max_points: usize,
) -> Vec<ExportMetricsServiceRequest> {
    let points: Vec<(RedMetric, HistogramDataPoint)> = RedMetric::ALL
        .iter()
        .flat_map(|&m| {
            series
                .iter()
                .filter(move |(s, _)| s.metric == m)
                .map(move |(s, snap)| (m, data_point(s, snap, now_unix_nano)))
        })
        .collect();
    let mut requests = Vec::new();
    let mut points = points.into_iter().peekable();
    while points.peek().is_some() {
        let mut metrics: Vec<Metric> = Vec::new();
        for (m, point) in points.by_ref().take(max_points.max(1)) {
            match metrics.last_mut() {
                Some(last) if last.name == m.otel_name() => {
                    if let Some(metric::Data::Histogram(h)) = &mut last.data {
                        h.data_points.push(point);
                    }
                }
                _ => metrics.push(Metric {
                    name: m.otel_name().to_owned(),
                    description: m.help().to_owned(),
                    unit: "s".to_owned(),
                    data: Some(metric::Data::Histogram(Histogram {
                        data_points: vec![point],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    })),
                    ..Default::default()
                }),
            }
        }
        requests.push(request(resource, metrics));
    }
    requests
}

fn request(resource: &[Attribute], metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(ProtoResource {
                attributes: encode_attributes(resource),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: SCOPE_NAME.to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn data_point(s: &Series, snap: &Snapshot, now: u64) -> HistogramDataPoint {
    HistogramDataPoint {
        attributes: encode_key_values(s.attributes.iter().map(|(k, v)| (*k, v))),
        start_time_unix_nano: s.start_unix_nano,
        // A series created after `now` was read (it raced the collection) must not end
        // before it starts.
        time_unix_nano: now.max(s.start_unix_nano),
        count: snap.count,
        sum: Some(snap.sum),
        bucket_counts: snap.bucket_counts.to_vec(),
        explicit_bounds: BUCKETS.to_vec(),
        exemplars: snap
            .exemplars
            .iter()
            .map(|e| Exemplar {
                time_unix_nano: e.time_unix_nano,
                span_id: e.span_id.to_vec(),
                trace_id: e.trace_id.to_vec(),
                value: Some(exemplar::Value::AsDouble(e.value)),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::model::AttrValue;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.to_owned(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    #[test]
    fn many_series_are_split_into_requests_of_bounded_size() {
        let series: Vec<_> = (0..5)
            .map(|i| {
                let s = Arc::new(Series::new(
                    if i < 3 {
                        RedMetric::HttpServer
                    } else {
                        RedMetric::DbClient
                    },
                    vec![("n", AttrValue::Int(i))],
                    0,
                ));
                s.observe(0.001, None);
                s
            })
            .collect();
        let reqs = encode_chunked(&[], &collect(series), 1, 2);
        let shape: Vec<Vec<(String, usize)>> = reqs
            .iter()
            .map(|r| {
                r.resource_metrics[0].scope_metrics[0]
                    .metrics
                    .iter()
                    .map(|m| match &m.data {
                        Some(metric::Data::Histogram(h)) => (m.name.clone(), h.data_points.len()),
                        _ => panic!("not a histogram"),
                    })
                    .collect()
            })
            .collect();
        let http = "http.server.request.duration".to_owned();
        let db = "db.client.operation.duration".to_owned();
        assert_eq!(
            shape,
            vec![
                vec![(http.clone(), 2)],
                vec![(http, 1), (db.clone(), 1)],
                vec![(db, 1)]
            ]
        );
    }

    #[test]
    fn nothing_recorded_is_no_request() {
        assert!(encode_metrics(&[], &[], 1).is_empty());
        let idle = Arc::new(Series::new(RedMetric::HttpServer, vec![], 1));
        assert!(collect(vec![idle]).is_empty());
    }

    #[test]
    fn histograms_are_cumulative_with_the_prometheus_buckets_and_exemplars() {
        let server = Arc::new(Series::new(
            RedMetric::HttpServer,
            vec![
                ("service.name", AttrValue::Str("shop".into())),
                ("http.response.status_code", AttrValue::Int(200)),
            ],
            1_000,
        ));
        server.observe(0.002, Some((&[7; 16], &[8; 8], 1_500)));
        server.observe(0.3, None);
        let db = Arc::new(Series::new(RedMetric::DbClient, vec![], 1_000));
        db.observe(0.02, None);
        let resource = [Attribute::new("service.name", "ebpf-agent".to_owned())];
        let reqs = encode_metrics(&resource, &collect(vec![server, db]), 2_000);
        assert_eq!(reqs.len(), 1);
        let req = &reqs[0];

        let rm = &req.resource_metrics[0];
        assert_eq!(
            rm.resource.as_ref().expect("resource").attributes,
            vec![kv(
                "service.name",
                any_value::Value::StringValue("ebpf-agent".into())
            )]
        );
        let metrics = &rm.scope_metrics[0].metrics;
        let names: Vec<_> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "http.server.request.duration",
                "db.client.operation.duration"
            ]
        );
        assert_eq!(metrics[0].unit, "s");
        let Some(metric::Data::Histogram(h)) = &metrics[0].data else {
            panic!("not a histogram: {:?}", metrics[0].data)
        };
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let dp = &h.data_points[0];
        assert_eq!(
            dp.attributes,
            vec![
                kv("service.name", any_value::Value::StringValue("shop".into())),
                kv("http.response.status_code", any_value::Value::IntValue(200)),
            ]
        );
        assert_eq!((dp.start_time_unix_nano, dp.time_unix_nano), (1_000, 2_000));
        assert_eq!(dp.count, 2);
        assert!((dp.sum.expect("sum") - 0.302).abs() < 1e-9);
        assert_eq!(dp.explicit_bounds, BUCKETS.to_vec());
        assert_eq!(dp.bucket_counts.len(), BUCKETS.len() + 1);
        assert_eq!(dp.bucket_counts.iter().sum::<u64>(), dp.count);
        assert_eq!(dp.bucket_counts[0], 1);
        assert_eq!(dp.bucket_counts[7], 1, "0.3 s is in (0.25, 0.5]");
        assert_eq!(dp.exemplars.len(), 1);
        let e = &dp.exemplars[0];
        assert_eq!(
            (e.trace_id.clone(), e.span_id.clone(), e.time_unix_nano),
            (vec![7; 16], vec![8; 8], 1_500)
        );
        assert_eq!(e.value, Some(exemplar::Value::AsDouble(0.002)));
    }
}
