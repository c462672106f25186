//! Rust toolchains: rustfmt and clippy on the toolchain running xtask, the pinned nightly that
//! builds and lints the eBPF crate (and builds the fuzz targets), bpf-linker built against that
//! nightly's own LLVM, and cargo-fuzz.
//!
//! Everything is checked before it is installed, so a second run downloads nothing.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{output, sh};

/// A rustup toolchain identified by its name and by the rustc build it must contain.
pub struct Pin {
    /// What `rustup toolchain install` is given.
    pub toolchain: &'static str,
    /// `commit-hash` of `rustc -vV` in that toolchain: a toolchain installed under another name
    /// (the `nightly` channel) with this commit is the same compiler and is used as it is.
    pub rustc_commit: &'static str,
}

/// The nightly that builds and lints agent-ebpf (`-Z build-std=core`) and whose libLLVM
/// bpf-linker links against. Pinned so that a new nightly can neither break the eBPF build nor
/// move bpf-linker to another LLVM under us; bump both fields together, deliberately.
///
/// rustc 1.97.0-nightly (e50aa6fba 2026-05-19), LLVM 22, is what the 2026-05-20 dist ships
/// (static.rust-lang.org/dist/2026-05-20/channel-rust-nightly.toml, `[pkg.rustc]`): a nightly's
/// dist date is usually the day after its commit-date, and `nightly-2026-05-19` is another
/// compiler (9eb3be26b 2026-05-18).
pub const NIGHTLY: Pin = Pin {
    toolchain: "nightly-2026-05-20",
    rustc_commit: "e50aa6fba4e63ab34c72bf9acfd2c307c1155d1a",
};

/// cargo-fuzz, installed into `toolchain_dir()` like bpf-linker. 0.13.1 builds with the stable
/// toolchain here (`--locked`) and drives the pinned nightly's libFuzzer and ASan.
const CARGO_FUZZ_VERSION: &str = "0.13.1";

/// bpf-linker builds against rustc's own LLVM (Debian's is too old for it).
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Components the eBPF build and lint need on the nightly.
const NIGHTLY_COMPONENTS: &[&str] = &["rust-src", "clippy"];
/// Components the test command's hygiene steps need on the toolchain running xtask.
const HOST_COMPONENTS: &[&str] = &["rustfmt", "clippy"];

/// The nightly and bpf-linker, ready to build or lint agent-ebpf.
pub struct Ebpf {
    /// The rustup toolchain name to pass as `+name`: `NIGHTLY.toolchain`, or `nightly` when
    /// that channel holds the same compiler.
    pub toolchain: String,
    /// The directory holding bpf-linker.
    pub bin: PathBuf,
}

impl Ebpf {
    /// `cargo +<pinned nightly>` with bpf-linker on PATH, for the BPF target.
    pub fn cargo(&self, root: &Path) -> Command {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("cargo");
        cmd.current_dir(root)
            .env("PATH", path)
            // The host's RUSTFLAGS (e.g. -C target-cpu) make no sense for BPF.
            .env_remove("RUSTFLAGS")
            .arg(format!("+{}", self.toolchain));
        cmd
    }
}

/// rustfmt and clippy on the toolchain running xtask (cargo's rustup proxy passes it on in
/// RUSTUP_TOOLCHAIN, so a plain `cargo fmt` from here uses the same one).
pub fn ensure_host_components() -> Result<()> {
    let installed = output(Command::new("rustup").args(["component", "list", "--installed"]))?;
    let missing = missing_components(&installed, HOST_COMPONENTS);
    if !missing.is_empty() {
        sh(Command::new("rustup")
            .args(["component", "add"])
            .args(&missing))?;
    }
    Ok(())
}

/// The pinned nightly with its components, and bpf-linker linked against its libLLVM.
pub fn ensure_ebpf() -> Result<Ebpf> {
    let toolchain = ensure_nightly()?;
    let t = toolchain_dir();
    let linker = t.join("bin/bpf-linker");
    let sysroot = output(
        Command::new("rustc")
            .arg(format!("+{toolchain}"))
            .args(["--print", "sysroot"]),
    )?
    .trim()
    .to_owned();
    let lib = Path::new(&sysroot).join("lib");
    let so = std::fs::read_dir(&lib)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so") || n.starts_with("libLLVM-"))
        .with_context(|| format!("{toolchain} ships no libLLVM"))?;
    let llvm_lib = t.join("llvm/lib");
    std::fs::create_dir_all(&llvm_lib)?;
    // libLLVM.so is found at link time, the versioned name at run time (bpf-linker's RUNPATH).
    for name in ["libLLVM.so", so.as_str()] {
        let link = llvm_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib.join(&so), &link)?;
    }
    // A linker that runs (its libLLVM resolves) and has the right version is kept.
    let have = Command::new(&linker)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success());
    let version_ok = have
        .as_ref()
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION));
    if !version_ok {
        let vv = rustc_vv(&toolchain)?;
        let major = vv
            .lines()
            .find_map(|l| l.strip_prefix("LLVM version: "))
            .and_then(|v| v.split('.').next())
            .context("rustc -vV has no LLVM version")?
            .to_owned();
        sh(Command::new("cargo")
            .env("LLVM_PREFIX", t.join("llvm"))
            .args(["install", "--locked", "--root"])
            .arg(&t)
            .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
            ]))?;
    }
    Ok(Ebpf {
        toolchain,
        bin: t.join("bin"),
    })
}

/// The pinned nightly and cargo-fuzz, ready to build and run agent/fuzz.
pub struct Fuzz {
    /// As [`Ebpf::toolchain`].
    pub toolchain: String,
    /// The directory holding cargo-fuzz.
    pub bin: PathBuf,
}

impl Fuzz {
    /// `cargo +<pinned nightly> fuzz` (cargo-fuzz on PATH), building the agent without its
    /// eBPF object: the fuzz targets need only the parsers.
    pub fn cargo_fuzz(&self, root: &Path) -> Command {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("cargo");
        cmd.current_dir(root)
            .env("PATH", path)
            .env("AGENT_ALLOW_MISSING_EBPF", "1")
            // cargo-fuzz sets its own (sanitizer, coverage) flags; the host's would change
            // every build's fingerprint.
            .env_remove("RUSTFLAGS")
            .arg(format!("+{}", self.toolchain))
            .arg("fuzz");
        cmd
    }
}

/// The pinned nightly, and cargo-fuzz (installed once, skipped when the pinned version runs).
pub fn ensure_fuzz() -> Result<Fuzz> {
    let toolchain = ensure_nightly()?;
    let t = toolchain_dir();
    let have = Command::new(t.join("bin/cargo-fuzz"))
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success());
    let version_ok = have.as_ref().is_some_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .any(|w| w == CARGO_FUZZ_VERSION)
    });
    if !version_ok {
        sh(Command::new("cargo")
            .args(["install", "--locked", "--root"])
            .arg(&t)
            .arg(format!("cargo-fuzz@{CARGO_FUZZ_VERSION}")))?;
    }
    Ok(Fuzz {
        toolchain,
        bin: t.join("bin"),
    })
}

/// The name of an installed toolchain holding the pinned nightly's compiler, installing the
/// pinned toolchain (minimal profile, plus its components) only when none does.
fn ensure_nightly() -> Result<String> {
    let list = output(Command::new("rustup").args(["toolchain", "list"]))?;
    let host = host_triple()?;
    let mut chosen = None;
    for name in [NIGHTLY.toolchain, "nightly"] {
        if !toolchain_listed(&list, name, &host) {
            continue;
        }
        let vv = rustc_vv(name)?;
        if commit_hash(&vv) == Some(NIGHTLY.rustc_commit) {
            chosen = Some(name);
            break;
        }
        eprintln!(
            "xtask: toolchain {name} is rustc {}, not the pinned {} ({})",
            commit_hash(&vv).unwrap_or("?"),
            NIGHTLY.toolchain,
            NIGHTLY.rustc_commit
        );
    }
    let toolchain = match chosen {
        Some(name) => name,
        None => {
            sh(Command::new("rustup").args([
                "toolchain",
                "install",
                NIGHTLY.toolchain,
                "--profile",
                "minimal",
                "--no-self-update",
                "--component",
                &NIGHTLY_COMPONENTS.join(","),
            ]))?;
            let vv = rustc_vv(NIGHTLY.toolchain)?;
            if commit_hash(&vv) != Some(NIGHTLY.rustc_commit) {
                bail!(
                    "{} installed rustc {}, but the pin says {}: fix xtask's NIGHTLY",
                    NIGHTLY.toolchain,
                    commit_hash(&vv).unwrap_or("?"),
                    NIGHTLY.rustc_commit
                );
            }
            NIGHTLY.toolchain
        }
    };
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        toolchain,
    ]))?;
    let missing = missing_components(&installed, NIGHTLY_COMPONENTS);
    if !missing.is_empty() {
        sh(Command::new("rustup")
            .args(["component", "add", "--toolchain", toolchain])
            .args(&missing))?;
    }
    eprintln!(
        "xtask: pinned nightly {toolchain} (rustc {})",
        &NIGHTLY.rustc_commit[..9]
    );
    Ok(toolchain.to_owned())
}

/// `rustc +name -vV`. RUSTUP_AUTO_INSTALL=0: a toolchain that is not there is an error here,
/// never a download of whatever that name means today.
fn rustc_vv(toolchain: &str) -> Result<String> {
    output(
        Command::new("rustc")
            .env("RUSTUP_AUTO_INSTALL", "0")
            .arg(format!("+{toolchain}"))
            .arg("-vV"),
    )
}

fn commit_hash(vv: &str) -> Option<&str> {
    vv.lines()
        .find_map(|l| l.strip_prefix("commit-hash: "))
        .map(str::trim)
}

pub(crate) fn host_triple() -> Result<String> {
    let vv = output(Command::new("rustc").arg("-vV"))?;
    vv.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|h| h.trim().to_owned())
        .context("rustc -vV has no host")
}

/// Whether `rustup toolchain list` shows `name` (rustup lists `nightly-<host>`, with
/// ` (active, default)` style suffixes).
fn toolchain_listed(list: &str, name: &str, host: &str) -> bool {
    let full = format!("{name}-{host}");
    list.lines()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .any(|l| l == name || l == full)
}

/// Which of `wanted` `rustup component list --installed` lacks (it lists `rust-src`, and
/// `clippy-x86_64-unknown-linux-gnu` for host components).
fn missing_components<'a>(installed: &str, wanted: &[&'a str]) -> Vec<&'a str> {
    wanted
        .iter()
        .copied()
        .filter(|c| {
            !installed
                .lines()
                .map(str::trim)
                .any(|l| l == *c || l.strip_prefix(c).is_some_and(|r| r.starts_with('-')))
        })
        .collect()
}

pub fn toolchain_dir() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache/agent-toolchain")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rustup_listings() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\n\
                    nightly-2026-05-20-x86_64-unknown-linux-gnu\n";
        let host = "x86_64-unknown-linux-gnu";
        assert!(toolchain_listed(list, "nightly-2026-05-20", host));
        assert!(!toolchain_listed(list, "nightly", host));
        assert!(toolchain_listed(list, "stable", host));
        let installed = "cargo-x86_64-unknown-linux-gnu\nclippy-x86_64-unknown-linux-gnu\n\
                         rust-std-x86_64-unknown-linux-gnu\n";
        assert_eq!(
            missing_components(installed, &["rust-src", "clippy", "rustfmt"]),
            ["rust-src", "rustfmt"]
        );
        let vv = "rustc 1.97.0-nightly\ncommit-hash: e50aa6fba4e63ab34c72bf9acfd2c307c1155d1a\n";
        assert_eq!(commit_hash(vv), Some(NIGHTLY.rustc_commit));
    }
}
