//! `cargo xtask fuzz`: build the cargo-fuzz targets in agent/fuzz (pinned nightly, ASan) and run
//! each for a time budget, failing when one finds a crash, a hang or an out-of-memory.
//!
//! Corpora: libFuzzer writes what it finds to agent/fuzz/target/corpus/<target> (ignored by
//! git, kept between runs); it also reads the committed minimized seeds in
//! agent/fuzz/corpus/<target> and inputs built from the recorded fixtures in
//! agent/src/protocol/testdata (written to agent/fuzz/target/seeds/<target> on every run, so
//! a new fixture seeds the fuzzer without a copy in git). Crashes land in
//! agent/fuzz/artifacts/<target> (ignored: one becomes a regression input only with a unit
//! test that replays it).
//!
//! Owns the fuzz runs only; the toolchain and cargo-fuzz come from `toolchain`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::{sh, toolchain};

/// Every target in agent/fuzz/Cargo.toml, with the fixture directory that seeds it.
pub const TARGETS: &[(&str, Seeds)] = &[
    ("http1", Seeds::Streams("http1")),
    ("http2", Seeds::Streams("http2")),
    ("h2c", Seeds::Streams("h2c")),
    ("postgres", Seeds::Streams("postgres")),
    ("amqp", Seeds::Streams("amqp")),
    ("tls_detect", Seeds::Prefixes),
    ("config", Seeds::Config),
];

/// Where a target's fixture seeds come from.
pub enum Seeds {
    /// A protocol's fixtures (`<name>.c2s` + `<name>.s2c`) as the driver's two streams.
    Streams(&'static str),
    /// The first bytes each side of every fixture starts with, behind a selector byte.
    Prefixes,
    /// The documented example config.
    Config,
}

/// libFuzzer's per-input time limit (seconds): an input this slow is reported as a hang.
const INPUT_TIMEOUT_S: u32 = 10;

/// One target's run.
pub struct Run {
    pub target: &'static str,
    pub executions: u64,
    pub seconds: f64,
}

impl Run {
    fn summary(&self) -> String {
        format!(
            "{:<10} {:>11} executions in {:5.0} s ({:.0}/s), no crash",
            self.target,
            self.executions,
            self.seconds,
            self.executions as f64 / self.seconds.max(0.001)
        )
    }
}

/// Build the targets, then run `only` (or all) for `seconds` each; prints one line per target
/// with its executions. Fails at the end if any target failed (the others still run).
pub fn fuzz(root: &Path, seconds: u64, only: Option<&str>) -> Result<Vec<Run>> {
    let targets: Vec<_> = TARGETS
        .iter()
        .filter(|(t, _)| only.is_none_or(|o| o == *t))
        .collect();
    if targets.is_empty() {
        let names: Vec<_> = TARGETS.iter().map(|(t, _)| *t).collect();
        bail!(
            "no fuzz target {:?}; they are {names:?}",
            only.unwrap_or("")
        );
    }
    let tc = toolchain::ensure_fuzz()?;
    let fuzz_dir = root.join("agent/fuzz");
    let t = Instant::now();
    let mut build = tc.cargo_fuzz(root);
    build.args(["build", "--fuzz-dir"]).arg(&fuzz_dir);
    if let Some(o) = only {
        build.arg(o);
    }
    sh(&mut build)?;
    eprintln!("xtask: fuzz build took {:.1} s", t.elapsed().as_secs_f64());

    let mut runs = Vec::new();
    let mut failed = Vec::new();
    for (target, seeds) in targets {
        match run_one(root, target, seeds, seconds) {
            Ok(r) => {
                eprintln!("xtask: fuzz {}", r.summary());
                runs.push(r);
            }
            Err(e) => {
                eprintln!("xtask: fuzz {target}: FAILED: {e:#}");
                failed.push(*target);
            }
        }
    }
    eprintln!("xtask: fuzz summary:");
    for r in &runs {
        eprintln!("xtask:   {}", r.summary());
    }
    if !failed.is_empty() {
        bail!(
            "fuzz targets {failed:?} failed; crash inputs are in {}",
            fuzz_dir.join("artifacts").display()
        );
    }
    Ok(runs)
}

fn run_one(root: &Path, target: &'static str, seeds: &Seeds, seconds: u64) -> Result<Run> {
    let fuzz_dir = root.join("agent/fuzz");
    let work = fuzz_dir.join("target/corpus").join(target);
    let committed = fuzz_dir.join("corpus").join(target);
    let seed_dir = fuzz_dir.join("target/seeds").join(target);
    let artifacts = fuzz_dir.join("artifacts").join(target);
    let logs = fuzz_dir.join("target/logs");
    for d in [&work, &committed, &seed_dir, &artifacts, &logs] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    write_seeds(root, seeds, &seed_dir)?;
    let log = logs.join(format!("{target}.log"));
    // The binary `cargo fuzz build` made, run directly: `cargo fuzz run` rebuilds the agent
    // every time (its build script watches the eBPF object, which a fuzz build lacks).
    let bin = fuzz_dir
        .join("target")
        .join(toolchain::host_triple()?)
        .join("release")
        .join(target);
    let mut cmd = std::process::Command::new(&bin);
    // The first corpus directory is where libFuzzer writes new inputs; the others are read.
    cmd.arg(&work)
        .arg(&committed)
        .arg(&seed_dir)
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_S}"))
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()));
    // Both streams into one log: stdout and stderr share one open file description so their
    // lines interleave instead of overwriting each other.
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&log)?;
    cmd.stdout(file.try_clone()?).stderr(file);
    eprintln!(
        "xtask: fuzz {target} for {seconds} s (log: {})",
        log.display()
    );
    let t = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    let secs = t.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if !status.success() {
        let tail: Vec<_> = text.lines().rev().take(40).collect();
        for l in tail.iter().rev() {
            eprintln!("  | {l}");
        }
        bail!(
            "{target} exited with {status} (full log: {})",
            log.display()
        );
    }
    let executions = final_stat(&text, "stat::number_of_executed_units")
        .with_context(|| format!("no final stats in {}", log.display()))?;
    Ok(Run {
        target,
        executions,
        seconds: secs,
    })
}

/// A `stat::name: value` line of libFuzzer's `-print_final_stats=1`.
fn final_stat(log: &str, name: &str) -> Option<u64> {
    log.lines().rev().find_map(|l| {
        l.trim()
            .strip_prefix(name)?
            .trim_start_matches(':')
            .trim()
            .parse()
            .ok()
    })
}

/// Writes `seeds` into `dir` (replacing what a previous run wrote there).
fn write_seeds(root: &Path, seeds: &Seeds, dir: &Path) -> Result<()> {
    let testdata = root.join("agent/src/protocol/testdata");
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    match seeds {
        Seeds::Streams(proto) => {
            for (name, c2s, s2c) in fixtures(&testdata.join(proto))? {
                // Request direction egress and ingress (bit 0); the preface/upgrade prefix off
                // (the fixtures carry their own); two segment size classes.
                for (flags, size) in [(0u8, 3u8), (1, 4)] {
                    let input = seed_input(&c2s, &s2c, flags, size);
                    inputs.push((format!("{name}-{flags}{size}"), input));
                }
            }
        }
        Seeds::Prefixes => {
            for proto in ["http1", "http2", "h2c", "postgres", "amqp"] {
                for (name, c2s, s2c) in fixtures(&testdata.join(proto))? {
                    for (side, bytes) in [("c2s", &c2s), ("s2c", &s2c)] {
                        let mut v = vec![if side == "c2s" { 0 } else { 1 }];
                        v.extend_from_slice(&bytes[..bytes.len().min(64)]);
                        inputs.push((format!("{proto}-{name}-{side}"), v));
                    }
                }
            }
            // A TLS ClientHello record header (RFC 8446 §5.1) and an alert.
            inputs.push((
                "tls-hello".into(),
                vec![0, 22, 3, 1, 2, 0, 1, 0, 1, 0xfc, 3, 3],
            ));
            inputs.push(("tls-alert".into(), vec![1, 21, 3, 3, 0, 2, 2, 40]));
        }
        Seeds::Config => {
            let p = root.join("deploy/agent.example.yaml");
            inputs.push((
                "agent.example.yaml".into(),
                std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
            ));
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in inputs {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}

/// A recorded fixture: its name and its two streams.
type Fixture = (String, Vec<u8>, Vec<u8>);

/// Every fixture (`<name>.c2s` + `<name>.s2c`) in `dir`.
fn fixtures(dir: &Path) -> Result<Vec<Fixture>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "c2s"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|c2s| {
            let name = c2s
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let s2c = c2s.with_extension("s2c");
            Ok((
                name,
                std::fs::read(&c2s).with_context(|| format!("reading {}", c2s.display()))?,
                std::fs::read(&s2c).with_context(|| format!("reading {}", s2c.display()))?,
            ))
        })
        .collect()
}

/// The input agent/fuzz/src/lib.rs's `split` takes apart into these two streams (the same
/// layout as its `seed_input`: a little-endian u16 split point, two control bytes, the
/// streams). Request streams of 64 KiB or more are split elsewhere, still a valid input.
fn seed_input(c2s: &[u8], s2c: &[u8], flags: u8, size_class: u8) -> Vec<u8> {
    let at = u16::try_from(c2s.len()).unwrap_or(u16::MAX);
    let mut v = Vec::with_capacity(4 + c2s.len() + s2c.len());
    v.extend_from_slice(&at.to_le_bytes());
    v.push(flags);
    v.push(size_class);
    v.extend_from_slice(c2s);
    v.extend_from_slice(s2c);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_stats() {
        let log = "#2\tINITED cov: 3\nDone 1234 runs in 2 second(s)\n\
                   stat::number_of_executed_units: 1234\nstat::average_exec_per_sec:     617\n";
        assert_eq!(
            final_stat(log, "stat::number_of_executed_units"),
            Some(1234)
        );
        assert_eq!(
            final_stat("no stats", "stat::number_of_executed_units"),
            None
        );
    }

    #[test]
    fn seed_layout_splits_at_the_request_stream() {
        let v = seed_input(b"abc", b"de", 1, 4);
        assert_eq!(v, [3, 0, 1, 4, b'a', b'b', b'c', b'd', b'e']);
    }
}
