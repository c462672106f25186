//! Spans: pairing requests with responses, trace context, naming.

pub mod context;
pub mod builder;
pub mod model;
pub mod route;
pub mod url;
