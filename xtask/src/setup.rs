//! What the tests need besides Rust: Debian packages, and a Python virtual environment with
//! tests/requirements.txt (pytest, the OTLP receiver's grpcio, the e2e apps' clients).
//!
//! A venv, not `pip install` into the system interpreter: Debian 12's python3 refuses that
//! (PEP 668, "externally-managed-environment"), and a venv keeps the pinned packages away from
//! whatever else the machine's Python has. It lives under target/ (`cargo clean` removes it).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{is_root, output, sh};

/// Debian packages the tests run (python3-venv: Debian's `python3 -m venv` needs it; with
/// another python3 first on PATH, e.g. pyenv's, it is merely unused).
const APT_PACKAGES: &[&str] = &["nginx-light", "curl", "python3-venv"];

/// Where the tests' virtual environment lives, relative to the workspace root.
const VENV_DIR: &str = "target/e2e-venv";
/// Written into the venv once its packages are installed; a venv without a matching stamp
/// (another requirements file, another base interpreter, an interrupted install) is rebuilt.
const STAMP: &str = "requirements.stamp";

/// The tests' Python: a virtual environment made by the `python3` on PATH.
pub struct Venv {
    pub dir: PathBuf,
}

impl Venv {
    pub fn python(&self) -> PathBuf {
        self.dir.join("bin/python3")
    }

    /// `cmd` as if the venv were activated: its `python3` first on PATH, so child processes
    /// that run `python3` (tests that probe for grpcio, the e2e harness's helpers) get the
    /// packages too.
    pub fn activate<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        let path = format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env("PATH", path).env("VIRTUAL_ENV", &self.dir)
    }
}

/// Debian packages (ours and tests/e2e/APT_PACKAGES) and the venv, each only when missing.
pub fn test_deps(root: &Path) -> Result<Venv> {
    if !is_root() {
        bail!("the test suite loads eBPF programs and installs packages: run it as root");
    }
    apt(root)?;
    venv(root)
}

fn apt(root: &Path) -> Result<()> {
    // The e2e suite may declare more (one per line, '#' comments) in tests/e2e/APT_PACKAGES.
    let declared = std::fs::read_to_string(root.join("tests/e2e/APT_PACKAGES")).unwrap_or_default();
    let wanted: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .chain(
            declared
                .lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| !l.is_empty()),
        )
        .collect();
    let missing: Vec<&str> = wanted.into_iter().filter(|p| !apt_installed(p)).collect();
    if !missing.is_empty() {
        sh(Command::new("apt-get").args(["update", "-q"]))?;
        sh(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing))?;
    }
    Ok(())
}

fn apt_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// The venv with tests/requirements.txt installed: kept when its stamp matches, else made
/// afresh (`--clear`) and stamped after pip succeeded.
fn venv(root: &Path) -> Result<Venv> {
    let venv = Venv {
        dir: root.join(VENV_DIR),
    };
    let want = stamp(root)?;
    let stamp_file = venv.dir.join(STAMP);
    let have = std::fs::read_to_string(&stamp_file).unwrap_or_default();
    if have == want && runs(&venv.python()) {
        eprintln!("xtask: Python venv {} is up to date", venv.dir.display());
        return Ok(venv);
    }
    let _ = std::fs::remove_file(&stamp_file);
    sh(Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv.dir))
    .context("creating the tests' venv (Debian: apt-get install python3-venv)")?;
    sh(Command::new(venv.python())
        .args([
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(root.join("tests/requirements.txt")))?;
    std::fs::write(&stamp_file, want)?;
    Ok(venv)
}

/// The venv as it is, for `--no-setup`: it must exist (a stale stamp is only reported).
pub fn existing_venv(root: &Path) -> Result<Venv> {
    let venv = Venv {
        dir: root.join(VENV_DIR),
    };
    if !runs(&venv.python()) {
        bail!(
            "no Python venv at {}: run `cargo xtask test` once without --no-setup",
            venv.dir.display()
        );
    }
    let have = std::fs::read_to_string(venv.dir.join(STAMP)).unwrap_or_default();
    if have != stamp(root)? {
        eprintln!(
            "xtask: warning: {} does not match tests/requirements.txt or python3 (--no-setup: not rebuilt)",
            venv.dir.display()
        );
    }
    Ok(venv)
}

/// What the venv was built from: the base interpreter (a venv is tied to it) and a hash of
/// the requirements file's bytes.
fn stamp(root: &Path) -> Result<String> {
    let reqs = root.join("tests/requirements.txt");
    let bytes = std::fs::read(&reqs).with_context(|| format!("reading {}", reqs.display()))?;
    let base = output(Command::new("python3").args([
        "-c",
        "import sys; print(sys.executable, sys.version.split()[0])",
    ]))
    .context("python3 is needed for the tests")?;
    Ok(format!(
        "python3: {}\nrequirements.txt fnv1a64: {:016x}\n",
        base.trim(),
        fnv1a64(&bytes)
    ))
}

fn runs(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", ""])
        .status()
        .is_ok_and(|s| s.success())
}

/// FNV-1a, 64 bit: a stable content hash (std's hasher may change between releases) for
/// telling one requirements file from another, not for security.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
