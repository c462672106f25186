//! Spans: pairing requests with responses (`builder`), trace context (`context`), and what each
//! protocol's exchange looks like as a span (`http`, `db`, `messaging`), with the helpers they
//! use (`route`, `url`, `sql`) and the span record itself (`model`).

pub mod builder;
pub mod context;
mod db;
mod http;
mod http2;
pub mod messaging;
pub mod model;
pub mod route;
pub mod sampler;
pub mod sql;
pub mod url;
mod work;
