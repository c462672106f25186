//! Encoding the agent's [`Span`] model as an OTLP `ExportTraceServiceRequest`.
//!
//! A pure function: no I/O, no configuration. Spans are grouped into one `ResourceSpans` per
//! distinct `Arc<Resource>` (by pointer identity, in first-seen order; the span builder shares
//! one `Arc` per traced process), each with a single `ScopeSpans` naming this agent as the
//! instrumentation scope. Field semantics follow `opentelemetry/proto/trace/v1/trace.proto`.
//! Transport, batching and retries live elsewhere.

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
use opentelemetry_proto::tonic::trace::v1::{self as proto, status, ResourceSpans, ScopeSpans};

use crate::span::model::{AttrValue, Attribute, Resource, Span, SpanKind, StatusCode};

/// The instrumentation scope name the agent reports.
pub const SCOPE_NAME: &str = "ebpf-agent";

/// Builds the export request for `spans`.
pub fn encode(spans: &[Span]) -> ExportTraceServiceRequest {
    let mut groups: Vec<(&Arc<Resource>, Vec<proto::Span>)> = Vec::new();
    // Arc address → index in `groups`. The Arcs are borrowed from `spans` for the whole call,
    // so an address cannot be freed and reused by another resource meanwhile.
    let mut index: HashMap<*const Resource, usize> = HashMap::new();
    for span in spans {
        let i = *index.entry(Arc::as_ptr(&span.resource)).or_insert_with(|| {
            groups.push((&span.resource, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(encode_span(span));
    }
    let resource_spans = groups
        .into_iter()
        .map(|(resource, spans)| ResourceSpans {
            resource: Some(ProtoResource {
                attributes: encode_attributes(&resource.attributes),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: SCOPE_NAME.to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

fn encode_span(span: &Span) -> proto::Span {
    let status = match (span.status, &span.status_message) {
        // An absent Status means UNSET with no message; skip sending an empty message.
        (StatusCode::Unset, None) => None,
        (code, message) => Some(proto::Status {
            code: encode_status_code(code) as i32,
            message: message.clone().unwrap_or_default(),
        }),
    };
    proto::Span {
        trace_id: span.context.trace_id.to_vec(),
        span_id: span.context.span_id.to_vec(),
        trace_state: span.context.trace_state.clone().unwrap_or_default(),
        // trace.proto: "empty if this is a root span".
        parent_span_id: span
            .parent_span_id
            .map(|id| id.to_vec())
            .unwrap_or_default(),
        // trace.proto: bits 0-7 are the W3C trace flags. Bits 8 and 9 (whether the parent is
        // known to be remote, and if so that it is) stay 0: the agent does not know.
        flags: u32::from(span.context.flags),
        name: span.name.clone(),
        kind: encode_kind(span.kind) as i32,
        start_time_unix_nano: span.start_unix_nano,
        end_time_unix_nano: span.end_unix_nano,
        attributes: encode_attributes(&span.attributes),
        status,
        ..Default::default()
    }
}

fn encode_kind(kind: SpanKind) -> proto::span::SpanKind {
    use proto::span::SpanKind as P;
    match kind {
        SpanKind::Server => P::Server,
        SpanKind::Client => P::Client,
        SpanKind::Producer => P::Producer,
        SpanKind::Consumer => P::Consumer,
        SpanKind::Internal => P::Internal,
    }
}

fn encode_status_code(code: StatusCode) -> status::StatusCode {
    match code {
        StatusCode::Unset => status::StatusCode::Unset,
        StatusCode::Ok => status::StatusCode::Ok,
        StatusCode::Error => status::StatusCode::Error,
    }
}

pub(crate) fn encode_attributes(attributes: &[Attribute]) -> Vec<KeyValue> {
    encode_key_values(attributes.iter().map(|a| (a.key, &a.value)))
}

pub(crate) fn encode_key_values<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a AttrValue)>,
) -> Vec<KeyValue> {
    pairs
        .map(|(key, value)| KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(encode_value(value)),
            }),
            ..Default::default()
        })
        .collect()
}

fn encode_value(value: &AttrValue) -> any_value::Value {
    match value {
        AttrValue::Str(s) => any_value::Value::StringValue(s.clone()),
        AttrValue::Int(i) => any_value::Value::IntValue(*i),
        AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
        AttrValue::Double(d) => any_value::Value::DoubleValue(*d),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::span::model::SpanContext;

    /// A fully populated span; other tests in the module reuse it.
    pub(crate) fn sample_span(resource: &Arc<Resource>, n: u8) -> Span {
        Span {
            context: SpanContext {
                trace_id: [n; 16],
                span_id: [n.wrapping_add(1); 8],
                flags: 1,
                trace_state: Some("vendor=abc".into()),
            },
            parent_span_id: Some([0xaa; 8]),
            name: format!("GET /users/{n}"),
            kind: SpanKind::Server,
            start_unix_nano: 1_700_000_000_000_000_000,
            end_unix_nano: 1_700_000_000_003_200_000,
            status: StatusCode::Error,
            status_message: Some("boom".into()),
            attributes: vec![
                Attribute::new("http.request.method", "GET"),
                Attribute::new("http.response.status_code", 500i64),
                Attribute::new("network.secure", false),
                Attribute {
                    key: "sampling.ratio",
                    value: AttrValue::Double(0.25),
                },
            ],
            resource: resource.clone(),
        }
    }

    pub(crate) fn resource(service: &str) -> Arc<Resource> {
        Arc::new(Resource {
            attributes: vec![
                Attribute::new("service.name", service),
                Attribute::new("process.pid", 123i64),
            ],
        })
    }

    fn str_value(s: &str) -> Option<AnyValue> {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(s.into())),
        })
    }

    #[test]
    fn maps_every_field() {
        let res = resource("svc");
        let req = encode(&[sample_span(&res, 7)]);
        assert_eq!(req.resource_spans.len(), 1);
        let rs = &req.resource_spans[0];
        let attrs = &rs.resource.as_ref().expect("resource").attributes;
        assert_eq!(attrs.len(), 2);
        assert_eq!(
            (attrs[0].key.as_str(), &attrs[0].value),
            ("service.name", &str_value("svc"))
        );
        assert_eq!(
            attrs[1].value,
            Some(AnyValue {
                value: Some(any_value::Value::IntValue(123))
            })
        );
        assert_eq!(rs.scope_spans.len(), 1);
        let scope = rs.scope_spans[0].scope.as_ref().expect("scope");
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("ebpf-agent", env!("CARGO_PKG_VERSION"))
        );

        let s = &rs.scope_spans[0].spans[0];
        assert_eq!(s.trace_id, vec![7; 16]);
        assert_eq!(s.span_id, vec![8; 8]);
        assert_eq!(s.parent_span_id, vec![0xaa; 8]);
        assert_eq!(s.trace_state, "vendor=abc");
        assert_eq!(s.flags, 1);
        assert_eq!(s.name, "GET /users/7");
        assert_eq!(s.kind, proto::span::SpanKind::Server as i32);
        assert_eq!(
            (s.start_time_unix_nano, s.end_time_unix_nano),
            (1_700_000_000_000_000_000, 1_700_000_000_003_200_000)
        );
        assert_eq!(
            s.status,
            Some(proto::Status {
                code: status::StatusCode::Error as i32,
                message: "boom".into()
            })
        );
        let values: Vec<_> = s
            .attributes
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.clone()))
            .collect();
        assert_eq!(
            values,
            vec![
                ("http.request.method", str_value("GET")),
                (
                    "http.response.status_code",
                    Some(AnyValue {
                        value: Some(any_value::Value::IntValue(500))
                    })
                ),
                (
                    "network.secure",
                    Some(AnyValue {
                        value: Some(any_value::Value::BoolValue(false))
                    })
                ),
                (
                    "sampling.ratio",
                    Some(AnyValue {
                        value: Some(any_value::Value::DoubleValue(0.25))
                    })
                ),
            ]
        );
        assert!(s.events.is_empty() && s.links.is_empty());
        assert_eq!(s.dropped_attributes_count, 0);
    }

    #[test]
    fn root_span_and_absent_trace_state_are_empty() {
        let res = resource("svc");
        let mut span = sample_span(&res, 1);
        span.parent_span_id = None;
        span.context.trace_state = None;
        span.context.flags = 0;
        let req = encode(&[span]);
        let s = &req.resource_spans[0].scope_spans[0].spans[0];
        assert!(s.parent_span_id.is_empty());
        assert_eq!(s.trace_state, "");
        assert_eq!(s.flags, 0);
    }

    #[test]
    fn kinds_and_statuses() {
        use proto::span::SpanKind as P;
        let res = resource("svc");
        for (kind, want) in [
            (SpanKind::Server, P::Server),
            (SpanKind::Client, P::Client),
            (SpanKind::Producer, P::Producer),
            (SpanKind::Consumer, P::Consumer),
            (SpanKind::Internal, P::Internal),
        ] {
            let mut span = sample_span(&res, 1);
            span.kind = kind;
            assert_eq!(
                encode(&[span]).resource_spans[0].scope_spans[0].spans[0].kind,
                want as i32
            );
        }
        for (code, message, want) in [
            (StatusCode::Unset, None, None),
            (StatusCode::Ok, None, Some((status::StatusCode::Ok, ""))),
            (
                StatusCode::Error,
                None,
                Some((status::StatusCode::Error, "")),
            ),
            (
                StatusCode::Error,
                Some("timeout"),
                Some((status::StatusCode::Error, "timeout")),
            ),
            (
                StatusCode::Unset,
                Some("odd"),
                Some((status::StatusCode::Unset, "odd")),
            ),
        ] {
            let mut span = sample_span(&res, 1);
            span.status = code;
            span.status_message = message.map(str::to_owned);
            let got = encode(&[span]).resource_spans[0].scope_spans[0].spans[0]
                .status
                .clone();
            let want = want.map(|(c, m)| proto::Status {
                code: c as i32,
                message: m.to_owned(),
            });
            assert_eq!(got, want, "{code:?} {message:?}");
        }
    }

    #[test]
    fn groups_by_resource_identity_in_first_seen_order() {
        let a = resource("a");
        let b = resource("b");
        // Equal content, different Arc: a different process, so a different group.
        let a_twin = resource("a");
        let spans = [
            sample_span(&b, 1),
            sample_span(&a, 2),
            sample_span(&b, 3),
            sample_span(&a_twin, 4),
            sample_span(&a, 5),
        ];
        let req = encode(&spans);
        let groups: Vec<(String, Vec<u8>)> = req
            .resource_spans
            .iter()
            .map(|rs| {
                let svc = match &rs.resource.as_ref().expect("resource").attributes[0].value {
                    Some(AnyValue {
                        value: Some(any_value::Value::StringValue(s)),
                    }) => s.clone(),
                    other => panic!("unexpected {other:?}"),
                };
                (
                    svc,
                    rs.scope_spans[0]
                        .spans
                        .iter()
                        .map(|s| s.trace_id[0])
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            groups,
            vec![
                ("b".into(), vec![1, 3]),
                ("a".into(), vec![2, 5]),
                ("a".into(), vec![4])
            ]
        );
        assert!(encode(&[]).resource_spans.is_empty());
    }
}
