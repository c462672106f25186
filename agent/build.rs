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
    // `cargo xtask build-ebpf` writes the object under the workspace's own target/; a build
    // with another target dir (the fuzz crate's, a CARGO_TARGET_DIR) finds it there too. A
    // watched path that does not exist makes cargo rerun this script (and rebuild the agent)
    // every time, so the existing one is watched.
    let rel = "bpfel-unknown-none/release/agent-ebpf";
    let candidates = match std::env::var("AGENT_EBPF_OBJECT") {
        Ok(p) => vec![PathBuf::from(p)],
        Err(_) => vec![target_dir.join(rel), root.join("target").join(rel)],
    };
    let obj = candidates
        .iter()
        .find(|p| p.is_file())
        .unwrap_or(&candidates[0])
        .clone();
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
