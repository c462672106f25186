//! The span record handed from the span builder to the exporters.
//!
//! Deliberately independent of the OTLP protobuf types: building spans does not depend on how
//! they leave the agent, and the exporters (OTLP, console) each encode from this one model.
//! Attribute keys are `&'static str` because every key the agent emits is a fixed semantic
//! convention name; only values are owned.

use std::sync::Arc;

pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Client,
    Producer,
    Consumer,
    Internal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusCode {
    Unset,
    Ok,
    Error,
}

#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
}

impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        AttrValue::Str(v)
    }
}
impl From<&str> for AttrValue {
    fn from(v: &str) -> Self {
        AttrValue::Str(v.to_owned())
    }
}
impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue::Int(v)
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Attribute {
    pub key: &'static str,
    pub value: AttrValue,
}

impl Attribute {
    pub fn new(key: &'static str, value: impl Into<AttrValue>) -> Self {
        Self {
            key,
            value: value.into(),
        }
    }
}

/// Who produced the spans: one per traced process (service.name, process.pid, host.name, ...).
/// Spans of one process share one `Arc<Resource>`, which exporters use to group them.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Resource {
    pub attributes: Vec<Attribute>,
}

impl Resource {
    pub fn get(&self, key: &str) -> Option<&AttrValue> {
        self.attributes
            .iter()
            .find(|a| a.key == key)
            .map(|a| &a.value)
    }
}

/// The W3C trace context a span lives in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// W3C trace-flags (bit 0: sampled).
    pub flags: u8,
    /// The `tracestate` header value to carry along, if any (already validated).
    pub trace_state: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub context: SpanContext,
    pub parent_span_id: Option<SpanId>,
    pub name: String,
    pub kind: SpanKind,
    /// Unix epoch nanoseconds.
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub status: StatusCode,
    pub status_message: Option<String>,
    pub attributes: Vec<Attribute>,
    pub resource: Arc<Resource>,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes
            .iter()
            .find(|a| a.key == key)
            .map(|a| &a.value)
    }
}

/// Lower-case hex of any id, for logs and the console exporter.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// What the span stage needs to know about a process besides its resource.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessTraits {
    /// Its requests move between OS threads (Go's goroutines).
    pub threads_migrate: bool,
    /// An OpenTelemetry SDK in the process exports its own spans.
    pub sdk_traces: bool,
    /// The process is in a pod the Kubernetes watch did not know when its resource was built;
    /// the watch's generation then (`enrich::k8s::K8sView::generation`). `enrich::ResourceCache` has the resource
    /// rebuilt once the generation moves (a new pod arrived).
    pub pod_pending_since: Option<u64>,
}
