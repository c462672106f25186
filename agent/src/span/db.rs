//! PostgreSQL spans: name and attributes per the OpenTelemetry database semantic conventions
//! (`db.system.name=postgresql`).
//!
//! Owns what an executed statement looks like as a span. The SQL text is sanitised (literals
//! replaced by `?`, see `sql`) unless the operator turned that off; row contents and error
//! messages (which can quote values) never reach a span. A statement executed by name whose
//! text the agent never saw says so in its name (`EXECUTE`) and in
//! `db.postgresql.statement_text_unknown`, instead of pretending to know what ran.

use super::model::{Attribute, StatusCode};
use super::network::{push_network, push_server_is_peer};
use super::parts::{Exchange, SpanOptions, SpanParts};
use crate::protocol::postgres::sql::{operation_and_collection, sanitize};
use crate::protocol::{PgOutcome, PgStatement};

/// The span of one executed statement.
pub(super) fn span(
    st: &PgStatement,
    outcome: PgOutcome,
    ex: &Exchange<'_>,
    opts: &SpanOptions,
) -> SpanParts {
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
    push_server_is_peer(&mut attrs, ex.meta);
    push_network(&mut attrs, ex.meta);
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
    SpanParts {
        name,
        status,
        status_message: message,
        attributes: attrs,
    }
}
