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

/// The stages' dependency direction, checked on the sources: a module may use the ones
/// before it in the data flow, never one after it (so `protocol` stands alone, and there is no
/// cycle between `protocol`, `span`, `enrich` and `export`). Comments may name anything.
#[cfg(test)]
mod layering {
    use std::path::Path;

    /// (module, modules it must not use)
    const RULES: &[(&str, &[&str])] = &[
        (
            "protocol",
            &[
                "conn",
                "span",
                "enrich",
                "export",
                "telemetry",
                "pipeline",
                "app",
                "config",
                "tls",
                "ebpf",
            ],
        ),
        ("span", &["enrich", "export", "pipeline", "app", "config"]),
        ("enrich", &["export", "pipeline", "app"]),
        ("export", &["enrich", "conn", "protocol", "pipeline", "app"]),
    ];

    fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    #[test]
    fn stages_use_only_the_stages_before_them() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut bad = Vec::new();
        for (module, forbidden) in RULES {
            let mut files = Vec::new();
            let dir = src.join(module);
            if dir.is_dir() {
                sources(&dir, &mut files);
            }
            let file = src.join(format!("{module}.rs"));
            if file.is_file() {
                files.push(file);
            }
            assert!(!files.is_empty(), "no sources for {module}");
            for f in files {
                let text = std::fs::read_to_string(&f).unwrap();
                for (n, line) in text.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or("");
                    for other in *forbidden {
                        if code.contains(&format!("crate::{other}::"))
                            || code.contains(&format!("crate::{other};"))
                            || code.contains(&format!("crate::{other}}}"))
                        {
                            bad.push(format!("{}:{}: {module} uses {other}", f.display(), n + 1));
                        }
                    }
                }
            }
        }
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }
}
