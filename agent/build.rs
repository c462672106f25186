//! Embeds the eBPF object built by `cargo xtask build-ebpf`.
//!
//! A build never silently produces an agent without its programs: if the object is missing the
//! build fails and says how to make it. Only an explicit `AGENT_ALLOW_MISSING_EBPF=1` (for unit
//! tests of pure modules on machines without the eBPF toolchain) embeds an empty object, and
//! such an agent refuses to start with a message saying so.
use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("..");
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let obj = std::env::var("AGENT_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| target_dir.join("bpfel-unknown-none/release/agent-ebpf"));
    println!("cargo:rerun-if-env-changed=AGENT_EBPF_OBJECT");
    println!("cargo:rerun-if-env-changed=AGENT_ALLOW_MISSING_EBPF");
    println!("cargo:rerun-if-changed={}", obj.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("agent-ebpf.o");
    if obj.is_file() {
        std::fs::copy(&obj, &out).expect("copy eBPF object");
    } else if std::env::var("AGENT_ALLOW_MISSING_EBPF").as_deref() == Ok("1") {
        println!("cargo:warning=eBPF object {} missing: embedding an empty one (AGENT_ALLOW_MISSING_EBPF=1); this agent cannot trace", obj.display());
        std::fs::write(&out, b"").expect("write empty object");
    } else {
        panic!(
            "eBPF object {} not found: run `cargo xtask build-ebpf` first (or `cargo xtask build`)",
            obj.display()
        );
    }
}
