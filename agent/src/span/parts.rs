//! The interface between the span builder and the per-protocol span functions (`http`,
//! `http2`, `db`, `messaging`): what a function is given besides its protocol's own request
//! and outcome ([`Exchange`], [`SpanOptions`]), and what it returns ([`SpanParts`]). The
//! builder owns everything else about the span: ids, parent, kind, times and resource.

use super::model::{Attribute, SpanKind, StatusCode};
use super::sampler::Sampler;
use crate::conn::ConnMeta;

/// What the span layer may reveal and which sides produce spans.
#[derive(Clone, Copy, Debug)]
pub struct SpanOptions {
    /// Replace query-string values with REDACTED.
    pub redact_query: bool,
    /// Replace SQL literals with `?` in db.query.text.
    pub sanitize_sql: bool,
    /// Head sampling (see `sampler`).
    pub sampler: Sampler,
    /// Export a sampled-out span anyway when it ended in error, marked with
    /// [`super::builder::KEPT_ERROR_ATTRIBUTE`] (the agent sees the outcome before export).
    pub keep_errors: bool,
    /// Make no span for what an OpenTelemetry SDK in the process reports itself (its context
    /// is still followed); false keeps both.
    pub defer_to_sdk: bool,
    /// With traceparent injection on: the key with which a SERVER span that arrived without
    /// trace context gets its trace id derived (`agent_common::derive_trace_id`), as the kernel
    /// does for the requests its thread makes; None: drawn at random.
    pub derive_roots: Option<u64>,
}

impl Default for SpanOptions {
    fn default() -> Self {
        Self {
            redact_query: true,
            sanitize_sql: true,
            sampler: Sampler::default(),
            keep_errors: false,
            defer_to_sdk: true,
            derive_roots: None,
        }
    }
}

/// The exchange a span function describes, beyond its request and outcome: the connection
/// it was seen on and the span's kind (which side of the call this process is).
#[derive(Clone, Copy, Debug)]
pub struct Exchange<'a> {
    pub meta: &'a ConnMeta,
    pub kind: SpanKind,
}

impl Exchange<'_> {
    /// This process served the request (a SERVER span).
    pub fn server(&self) -> bool {
        self.kind == SpanKind::Server
    }
}

/// What a protocol's span function makes of an exchange.
#[derive(Debug)]
pub struct SpanParts {
    pub name: String,
    pub status: StatusCode,
    pub status_message: Option<String>,
    pub attributes: Vec<Attribute>,
}
