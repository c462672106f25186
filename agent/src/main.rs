//! `agent`: the eBPF zero-code tracing agent (see README.md for the picture).
//!
//! Data flows one way: `ebpf` (load, probe table, ring-buffer reader) → `conn` (per-connection
//! reassembly) → `protocol` (detect + parse) → `span` (pairing, trace context) → `enrich`
//! (process and resource metadata) → `export` (batch, OTLP or console). `app` wires the stages
//! and handles shutdown; `config` and `cli` say what to do; `telemetry` counts what went wrong.

mod app;
mod cli;
mod config;
mod conn;
mod ebpf;
mod enrich;
mod export;
mod protocol;
mod span;
mod telemetry;

fn main() -> std::process::ExitCode {
    cli::main()
}
