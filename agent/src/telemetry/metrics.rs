//! The `/metrics` body: every [`Counter`] and [`Gauge`] as a `prometheus-client` registry,
//! encoded as OpenMetrics text when the scraper asks for it and as the Prometheus text format
//! (0.0.4) otherwise.
//!
//! The registry holds one collector that reads the [`Telemetry`] atomics at scrape time, so the
//! stages keep bumping plain relaxed atomics and nothing is copied per event. Metrics that need
//! `prometheus-client`'s own types (histograms with exemplars) register in the same registry;
//! both formats come from its one OpenMetrics encoder ([`to_prometheus_text`] rewrites the few
//! things the older format spells differently), so a new metric needs no encoder of its own.
//! Serving the bytes is `http.rs`'s job.

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::health::Gauge;
use super::{Counter, ProtocolCounter, Telemetry};
use crate::protocol::ProtocolId;

/// OpenMetrics 1.0 text, for scrapers that say they take it (Prometheus does).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format, for everything else (curl, older scrapers).
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Which exposition format a scrape gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    PrometheusText,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS,
            Format::PrometheusText => PROMETHEUS_TEXT,
        }
    }

    /// Picks the format from an `Accept` header (RFC 9110 §12.5.1): the acceptable range with
    /// the highest `q` among those we serve, OpenMetrics winning ties (a client that names it
    /// can read it); Prometheus text when nothing we serve is named, as exporters customarily
    /// do rather than answer 406.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let mut best: Option<(f32, Format)> = None;
        for range in accept.unwrap_or("").split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let (mut q, mut version) = (1.0f32, None);
            for p in parts {
                let Some((k, v)) = p.split_once('=') else {
                    continue;
                };
                let v = v.trim().trim_matches('"');
                match k.trim().to_ascii_lowercase().as_str() {
                    "q" => q = v.parse().unwrap_or(0.0),
                    "version" => version = Some(v.to_owned()),
                    _ => {}
                }
            }
            let format = match (media.as_str(), version.as_deref()) {
                ("application/openmetrics-text", None | Some("1.0.0")) => Format::OpenMetrics,
                ("text/plain", None | Some("0.0.4")) | ("text/*" | "*/*", _) => {
                    Format::PrometheusText
                }
                _ => continue,
            };
            let better = match best {
                None => true,
                Some((bq, bf)) => {
                    q > bq || (q == bq && format == Format::OpenMetrics && bf != format)
                }
            };
            if q > 0.0 && better {
                best = Some((q, format));
            }
        }
        best.map_or(Format::PrometheusText, |(_, f)| f)
    }
}

/// The agent's metrics registry. Built once when the endpoint starts; shared by every scrape.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(telemetry: Arc<Telemetry>) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Live(telemetry.clone())));
        telemetry.red().register(&mut registry);
        Self { registry }
    }

    /// The whole exposition in `format`.
    pub fn render(&self, format: Format) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String only fails if a collector does, and ours do not.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!("encoding metrics failed: {e}");
        }
        match format {
            Format::OpenMetrics => out,
            Format::PrometheusText => to_prometheus_text(&out),
        }
    }
}

/// Reads the counters and gauges as they are at scrape time.
struct Live(Arc<Telemetry>);

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live(Telemetry)")
    }
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for &c in Counter::ALL {
            let m = ConstCounter::new(self.0.get(c));
            // OpenMetrics names the family without `_total` and the encoder adds it back to
            // the sample (OpenMetrics 1.0, "Counter").
            let family = c.name().strip_suffix("_total").unwrap_or(c.name());
            m.encode(encoder.encode_descriptor(family, c.help(), None, m.metric_type())?)?;
        }
        for &c in ProtocolCounter::ALL {
            let family = c.name().strip_suffix("_total").unwrap_or(c.name());
            let mut f = encoder.encode_descriptor(
                family,
                c.help(),
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for &p in ProtocolId::ALL {
                let m = ConstCounter::new(self.0.protocol_get(p, c));
                m.encode(f.encode_family(&[("protocol", p.name())])?)?;
            }
        }
        let health = self.0.health();
        for &g in Gauge::ALL {
            let m = ConstGauge::new(health.gauge(g));
            m.encode(encoder.encode_descriptor(g.name(), g.help(), None, m.metric_type())?)?;
        }
        Ok(())
    }
}

/// Rewrites OpenMetrics 1.0 text into the Prometheus text format 0.0.4, which differs in:
/// counter families are named with their `_total` (as are their HELP and TYPE lines); no
/// `# UNIT`, `# EOF`, exemplars or `_created` samples; sample timestamps are milliseconds (we
/// drop them); types it lacks (info, stateset, gaugehistogram, unknown) become untyped.
pub fn to_prometheus_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    // The HELP line waits for its TYPE line, which decides the family's name here.
    let mut help: Option<(&str, &str)> = None;
    // The family being written and the sample suffixes that it must not carry.
    let mut family = "";
    let mut drop_suffixes: &[&str] = &[];
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, help.take());
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            family = name;
            let (exposed, kind): (String, Option<&str>) = match kind {
                "counter" => (format!("{name}_total"), Some("counter")),
                "gauge" | "histogram" | "summary" => (name.to_owned(), Some(kind)),
                "info" => (format!("{name}_info"), Some("gauge")),
                "stateset" => (name.to_owned(), Some("gauge")),
                _ => (name.to_owned(), None),
            };
            drop_suffixes = match kind {
                Some("counter" | "histogram" | "summary") => &["_created"],
                _ => &[],
            };
            match help.take() {
                Some((n, text)) if n == name => {
                    let _ = writeln!(out, "# HELP {exposed} {}", text.replace("\\\"", "\""));
                }
                other => flush_help(&mut out, other),
            }
            if let Some(kind) = kind {
                let _ = writeln!(out, "# TYPE {exposed} {kind}");
            }
            continue;
        }
        flush_help(&mut out, help.take());
        if line.starts_with('#') || line.is_empty() {
            continue; // # EOF, # UNIT, and anything else that is not a sample
        }
        let (series, rest) = split_series(line);
        let name = series.split('{').next().unwrap_or(series);
        if name
            .strip_prefix(family)
            .is_some_and(|suffix| drop_suffixes.contains(&suffix))
        {
            continue;
        }
        // What follows the series: the value, maybe a timestamp, maybe ` # {exemplar} value`.
        let value = rest.split_whitespace().next().unwrap_or("");
        let _ = writeln!(out, "{series} {value}");
    }
    flush_help(&mut out, help);
    out
}

fn flush_help(out: &mut String, help: Option<(&str, &str)>) {
    if let Some((name, text)) = help {
        let _ = writeln!(out, "# HELP {name} {}", text.replace("\\\"", "\""));
    }
}

/// Splits a sample line after its name and label set. Label values are quoted and may hold
/// spaces, `}` and `#` (escaped only `\\`, `\"`, `\n`), so the set is scanned, not searched.
fn split_series(line: &str) -> (&str, &str) {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() && !matches!(bytes[i], b'{' | b' ') {
        i += 1;
    }
    if i < bytes.len() && bytes[i] == b'{' {
        let mut quoted = false;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if quoted => i += 1,
                b'"' => quoted = !quoted,
                b'}' if !quoted => {
                    i += 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
    }
    let i = i.min(bytes.len());
    (&line[..i], &line[i..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::exemplar::HistogramWithExemplars;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::info::Info;

    #[test]
    fn negotiates_like_prometheus_and_curl_expect() {
        use Format::*;
        // Prometheus 2.x/3.x default scrape Accept header.
        let prom = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
                    encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;q=0.5,\
                    application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,\
                    */*;q=0.2";
        assert_eq!(Format::negotiate(Some(prom)), OpenMetrics);
        assert_eq!(Format::negotiate(None), PrometheusText);
        assert_eq!(Format::negotiate(Some("*/*")), PrometheusText);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text")),
            OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("text/plain, application/openmetrics-text")),
            OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("text/plain;q=0.9, application/openmetrics-text;q=0.5")),
            PrometheusText
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;version=0.0.1")),
            PrometheusText
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0, */*")),
            PrometheusText
        );
        assert_eq!(Format::negotiate(Some("application/json")), PrometheusText);
        assert_eq!(Format::negotiate(Some(";;,=,q=")), PrometheusText);
    }

    #[test]
    fn every_counter_and_gauge_is_read_live() {
        let t = Arc::new(Telemetry::new());
        let m = Metrics::new(t.clone());
        t.add(Counter::SpansCreated, 5);
        t.health().set_gauge(Gauge::ProbesAttached, 12);
        let om = m.render(Format::OpenMetrics);
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(om.contains("# TYPE agent_spans_created counter\nagent_spans_created_total 5\n"));
        assert!(om.contains("# TYPE agent_probes_attached gauge\nagent_probes_attached 12\n"));
        let text = m.render(Format::PrometheusText);
        for &c in Counter::ALL {
            let n = c.name();
            assert!(
                text.contains(&format!(
                    "# HELP {n} {}\n# TYPE {n} counter\n{n} {}\n",
                    c.help(),
                    t.get(c)
                )),
                "{n} missing or malformed:\n{text}"
            );
        }
        for &g in Gauge::ALL {
            let n = g.name();
            assert!(text.contains(&format!("# HELP {n} {}\n# TYPE {n} gauge\n", g.help())));
        }
        t.protocol_incr(ProtocolId::Http2, ProtocolCounter::ParseErrors);
        let text = m.render(Format::PrometheusText);
        for &c in ProtocolCounter::ALL {
            let n = c.name();
            assert!(text.contains(&format!("# HELP {n} {}\n# TYPE {n} counter\n", c.help())));
            for &p in ProtocolId::ALL {
                let v = t.protocol_get(p, c);
                let sample = format!("{n}{{protocol=\"{}\"}} {v}\n", p.name());
                assert!(text.contains(&sample), "{sample} missing:\n{text}");
            }
        }
        assert!(text.contains("agent_parse_errors_total{protocol=\"http2\"} 1\n"));
        assert!(!text.contains("# EOF"));
        // Read at scrape time: a later increment shows in the next scrape.
        t.incr(Counter::SpansCreated);
        assert!(m
            .render(Format::PrometheusText)
            .contains("\nagent_spans_created_total 6\n"));
    }

    #[test]
    fn help_texts_need_no_escaping() {
        // prometheus-client writes HELP verbatim; both formats would need these escaped.
        for h in Counter::ALL
            .iter()
            .map(|c| c.help())
            .chain(ProtocolCounter::ALL.iter().map(|c| c.help()))
            .chain(Gauge::ALL.iter().map(|g| g.help()))
        {
            assert!(!h.contains(['\\', '\n', '"']), "{h}");
        }
        for &c in Counter::ALL {
            assert!(c.name().ends_with("_total"), "{}", c.name());
        }
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Labels {
        route: String,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Trace {
        trace_id: String,
    }

    /// What the next metrics (histograms with exemplars) will look like, in both formats.
    #[test]
    fn histograms_with_exemplars_and_other_types_translate() {
        let mut r = Registry::default();
        let h = Family::<Labels, HistogramWithExemplars<Trace>>::new_with_constructor(|| {
            HistogramWithExemplars::new([0.1, 1.0].into_iter())
        });
        r.register(
            "agent_export_call_seconds",
            "time per export call",
            h.clone(),
        );
        r.register(
            "agent_build",
            "build information",
            Info::new(vec![("version", "1.0")]),
        );
        let route = Labels {
            route: "a} # \"b\" {c".into(),
        };
        let trace = Trace {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        };
        h.get_or_create(&route).observe(0.05, Some(trace), None);
        let mut om = String::new();
        prometheus_client::encoding::text::encode(&mut om, &r).unwrap();
        assert!(
            om.contains(" # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.05"),
            "{om}"
        );
        let text = to_prometheus_text(&om);
        // Registry::register ends help texts with a full stop; our collector does not.
        let want = "# HELP agent_export_call_seconds time per export call.\n\
            # TYPE agent_export_call_seconds histogram\n\
            agent_export_call_seconds_sum{route=\"a} # \\\"b\\\" {c\"} 0.05\n\
            agent_export_call_seconds_count{route=\"a} # \\\"b\\\" {c\"} 1\n\
            agent_export_call_seconds_bucket{le=\"0.1\",route=\"a} # \\\"b\\\" {c\"} 1\n\
            agent_export_call_seconds_bucket{le=\"1.0\",route=\"a} # \\\"b\\\" {c\"} 1\n\
            agent_export_call_seconds_bucket{le=\"+Inf\",route=\"a} # \\\"b\\\" {c\"} 1\n\
            # HELP agent_build_info build information.\n\
            # TYPE agent_build_info gauge\n\
            agent_build_info{version=\"1.0\"} 1\n";
        assert_eq!(text, want);
    }

    #[test]
    fn translation_drops_what_the_old_format_lacks() {
        let om = "# HELP x_seconds a \\\"quoted\\\" help\n# TYPE x_seconds counter\n\
                  # UNIT x_seconds seconds\nx_seconds_total 3 1700000000.5\n\
                  x_seconds_created 1700000000.0\n# TYPE y unknown\ny 1\n# HELP z lonely\n\
                  z{a=\"1\"} 2\nbroken{a=\"unterminated\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP x_seconds_total a \"quoted\" help\n# TYPE x_seconds_total counter\n\
             x_seconds_total 3\ny 1\n# HELP z lonely\nz{a=\"1\"} 2\nbroken{a=\"unterminated \n"
        );
    }
}
