//! The console form of the RED metrics (no collector configured): a readable summary printed
//! on stdout every export interval, beside the span lines.
//!
//! One line per operation, the series of a metric grouped by every attribute except the
//! outcome ones (`error.type` and the status codes), so a line shows an endpoint's traffic
//! with its errors rather than one line per status: the count, how many of those ended in
//! error (observations whose series carries `error.type`, which the span stage sets on
//! every failed exchange), and p50/p99 estimated from the buckets. Every line starts with `# `,
//! which no span line does, so a reader of stdout tells them apart (the e2e harness does).

use std::fmt::Write as _;
use std::io::Write as _;

use super::otlp_metrics::Collected;
use crate::span::model::AttrValue;
use crate::telemetry::red::series::{quantile, SLOTS};
use crate::telemetry::red::Metric;

/// Attributes that say how an operation ended, not which operation it was.
const OUTCOME: &[&str] = &[
    "error.type",
    "http.response.status_code",
    "rpc.grpc.status_code",
    "db.response.status_code",
];

/// One summary line's data.
struct Line {
    metric: Metric,
    key: String,
    count: u64,
    errors: u64,
    buckets: [u64; SLOTS],
}

/// The summary text (empty when nothing was recorded).
pub fn format(collected: &[Collected]) -> String {
    let mut lines: Vec<Line> = Vec::new();
    for (series, snap) in collected {
        let mut key = String::new();
        let mut error = false;
        for (k, v) in &series.attributes {
            if *k == "error.type" {
                error = true;
            }
            if OUTCOME.contains(k) {
                continue;
            }
            let _ = write!(key, " {k}={}", display(v));
        }
        let i = match lines
            .iter()
            .position(|l| l.metric == series.metric && l.key == key)
        {
            Some(i) => i,
            None => {
                lines.push(Line {
                    metric: series.metric,
                    key,
                    count: 0,
                    errors: 0,
                    buckets: [0; SLOTS],
                });
                lines.len() - 1
            }
        };
        let line = &mut lines[i];
        line.count += snap.count;
        if error {
            line.errors += snap.count;
        }
        for (sum, c) in line.buckets.iter_mut().zip(&snap.bucket_counts) {
            *sum += c;
        }
    }
    if lines.is_empty() {
        return String::new();
    }
    lines.sort_by(|a, b| (a.metric as usize, &a.key).cmp(&(b.metric as usize, &b.key)));
    let mut out = String::from("# RED metrics, cumulative since each series started:\n");
    for l in &lines {
        let q = |p| quantile(&l.buckets, p).map_or_else(|| "-".to_owned(), ms);
        let _ = writeln!(
            out,
            "# {}{} count={} errors={} p50={} p99={}",
            l.metric.otel_name(),
            l.key,
            l.count,
            l.errors,
            q(0.5),
            q(0.99)
        );
    }
    out
}

/// Writes the summary to stdout in one locked write, so span lines never land inside it.
pub fn print(collected: &[Collected]) {
    let text = format(collected);
    if text.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    // A closed stdout is the span console's concern (it counts); the summary just stops.
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn display(v: &AttrValue) -> String {
    match v {
        // Quoted only when needed, so `http.route=/users/{id}` stays readable.
        AttrValue::Str(s) if s.is_empty() || s.contains([' ', '"', '=']) => format!("{s:?}"),
        AttrValue::Str(s) => s.clone(),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::Bool(b) => b.to_string(),
        AttrValue::Double(d) => d.to_string(),
    }
}

fn ms(secs: f64) -> String {
    format!("{:.1}ms", secs * 1000.0)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::export::otlp_metrics::collect;
    use crate::telemetry::red::series::Series;

    #[test]
    fn one_line_per_operation_with_its_errors_and_quantiles() {
        let attrs = |status: i64, error: bool| {
            let mut a = vec![
                ("service.name", AttrValue::Str("shop".into())),
                ("http.request.method", AttrValue::Str("GET".into())),
                ("http.response.status_code", AttrValue::Int(status)),
                ("http.route", AttrValue::Str("/users/{id}".into())),
            ];
            if error {
                a.push(("error.type", AttrValue::Str(status.to_string())));
            }
            a
        };
        let ok = Arc::new(Series::new(Metric::HttpServer, attrs(200, false), 0));
        let failed = Arc::new(Series::new(Metric::HttpServer, attrs(500, true), 0));
        let db = Arc::new(Series::new(
            Metric::DbClient,
            vec![("db.operation.name", AttrValue::Str("SELECT".into()))],
            0,
        ));
        for _ in 0..9 {
            ok.observe(0.007, None);
        }
        failed.observe(0.007, None);
        db.observe(0.001, None);
        let text = format(&collect(vec![db, failed, ok]));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines.iter().all(|l| l.starts_with("# ")), "{text}");
        assert_eq!(
            lines[1],
            "# http.server.request.duration service.name=shop http.request.method=GET \
             http.route=/users/{id} count=10 errors=1 p50=7.5ms p99=10.0ms"
        );
        assert_eq!(
            lines[2],
            "# db.client.operation.duration db.operation.name=SELECT count=1 errors=0 \
             p50=2.5ms p99=5.0ms"
        );
        assert_eq!(format(&[]), "");
    }
}
