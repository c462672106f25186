//! Spans: pairing requests with responses and choosing parents (`builder`), trace context
//! (`context`), and what each protocol's exchange looks like as a span — one function per
//! protocol taking exactly its request and outcome (`http`, `http2`, `db`, `messaging`),
//! through the interface in `parts`, with the shared `network` attributes and the helpers
//! `route` and `url` — the span record itself (`model`), and the ids the kernel injected
//! into requests, waiting for their spans (`injected`).

pub mod builder;
pub mod context;
mod db;
mod http;
mod http2;
pub mod injected;
pub mod messaging;
pub mod model;
mod network;
mod parts;
pub mod route;
pub mod sampler;
pub mod url;
mod work;
