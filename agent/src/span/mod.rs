//! Spans: pairing requests with responses, trace context, naming.

pub mod builder;
pub mod context;
pub mod model;
pub mod route;
pub mod sql;
pub mod url;
