//! Kernel side, seen from user space: the probe table and capability detection (`probes`),
//! kernel struct offsets from BTF (`btf`), loading and attaching (`loader`), decoding ring-buffer
//! records (`event`), discovering connections that predate the agent (`seed`) and the
//! traceparent injection programs (`inject`).
//!
//! This module ends where typed events begin: what the events mean for connections and
//! protocols is `crate::conn`'s business.

pub mod btf;
pub mod event;
pub mod inject;
pub mod loader;
pub mod probes;
pub mod seed;
