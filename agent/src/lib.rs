//! The eBPF zero-code tracing agent as a library (the `agent` binary is a thin `main`).
//!
//! Data flows one way: `ebpf` (load, probe table, ring-buffer reader) → `conn` (per-connection
//! reassembly) → `protocol` (detect + parse) → `span` (pairing, trace context) → `enrich`
//! (process and resource metadata) → `export` (batch, OTLP or console). `app` wires the stages
//! and handles shutdown; `config` and `cli` say what to do; `telemetry` counts what went wrong.
//! It is a library so integration tests, benchmarks and fuzz targets reach the same code.

pub mod app;
pub mod cli;
pub mod config;
pub mod conn;
pub mod ebpf;
pub mod enrich;
pub mod export;
pub mod pipeline;
pub mod protocol;
pub mod span;
pub mod telemetry;
pub mod tls;
