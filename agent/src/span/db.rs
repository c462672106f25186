//! PostgreSQL spans: name and attributes per the OpenTelemetry database semantic conventions
//! (`db.system.name=postgresql`).
//!
//! Owns what an executed statement looks like as a span. The SQL text is sanitised (literals
//! replaced by `?`, see `sql`) unless the operator turned that off; row contents and error
//! messages (which can quote values) never reach a span. A statement executed by name whose
//! text the agent never saw says so in its name (`EXECUTE`) and in
//! `db.postgresql.statement_text_unknown`, instead of pretending to know what ran.

use std::sync::Arc;

use super::builder::{ip_of, Inflight, SpanOptions};
use super::http::push_network;
use super::model::{Attribute, Resource, Span, StatusCode};
use super::sql::{operation_and_collection, sanitize};
use crate::protocol::{PgOutcome, Request};

pub(super) fn span(
    inf: Inflight,
    start_unix_nano: u64,
    end_unix_nano: u64,
    outcome: PgOutcome,
    resource: Arc<Resource>,
    opts: &SpanOptions,
) -> Span {
    let Request::Postgres(st) = &inf.request else {
        unreachable!("builder dispatches by request kind")
    };
    let mut attrs = Vec::with_capacity(16);
    attrs.push(Attribute::new("db.system.name", "postgresql"));
    if let Some(db) = &st.database {
        attrs.push(Attribute::new("db.namespace", db.as_str()));
    }
    let name = match &st.text {
        Some(text) => {
            let (op, coll) = operation_and_collection(text);
            if let Some(op) = &op {
                attrs.push(Attribute::new("db.operation.name", op.as_str()));
            }
            if let Some(c) = &coll {
                attrs.push(Attribute::new("db.collection.name", c.as_str()));
            }
            let query = if opts.sanitize_sql {
                sanitize(text)
            } else {
                text.clone()
            };
            attrs.push(Attribute::new("db.query.text", query));
            match (op, coll) {
                (Some(op), Some(c)) => format!("{op} {c}"),
                (Some(op), None) => op,
                _ => "postgresql".to_owned(),
            }
        }
        None => {
            attrs.push(Attribute::new("db.postgresql.statement_text_unknown", true));
            attrs.push(Attribute::new("db.operation.name", "EXECUTE"));
            "EXECUTE".to_owned()
        }
    };
    if let Some(name) = &st.prepared_name {
        if !name.is_empty() {
            attrs.push(Attribute::new(
                "db.postgresql.prepared_statement.name",
                name.as_str(),
            ));
        }
    }
    attrs.push(Attribute::new(
        "server.address",
        ip_of(&inf.meta.remote).to_string(),
    ));
    attrs.push(Attribute::new(
        "server.port",
        i64::from(inf.meta.remote.port),
    ));
    push_network(&mut attrs, &inf);
    let (status, message) = match outcome {
        PgOutcome::Complete { tag, rows } => {
            if tag.starts_with("SELECT") || rows > 0 {
                attrs.push(Attribute::new("db.response.returned_rows", rows as i64));
            }
            (StatusCode::Unset, None)
        }
        PgOutcome::Empty => (StatusCode::Unset, None),
        PgOutcome::Error { sqlstate, severity } => {
            attrs.push(Attribute::new("db.response.status_code", sqlstate.as_str()));
            attrs.push(Attribute::new("error.type", sqlstate.as_str()));
            (StatusCode::Error, Some(format!("{severity} {sqlstate}")))
        }
        PgOutcome::Aborted => {
            attrs.push(Attribute::new("error.type", "response_incomplete"));
            (
                StatusCode::Error,
                Some("connection closed before the result".to_owned()),
            )
        }
    };
    inf.finish(
        name,
        (start_unix_nano, end_unix_nano),
        (status, message),
        attrs,
        resource,
    )
}
