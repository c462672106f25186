//! `cargo xtask`: everything needed to build, run and test the agent on a fresh machine.
//!
//! - `build-ebpf`: the kernel programs (installs the pinned nightly with rust-src, and
//!   bpf-linker, first, once; see `toolchain`).
//! - `build`: build-ebpf, then the agent, which embeds the object.
//! - `run [-- ARGS]`: build (release) and run the agent as root.
//! - `check`: build and run `agent check`.
//! - `setup`: only the test dependencies (apt packages, the Python venv).
//! - `fuzz [--seconds N] [--target T]`: build the cargo-fuzz targets (pinned nightly, installs
//!   cargo-fuzz once) and run each for N seconds; fails on any crash (see `fuzz`).
//! - `test`: rustfmt and clippy first (fail fast), then install the test dependencies (apt, a
//!   Python venv; see `setup`), build, run unit tests, a short fuzz run of every target
//!   (`FUZZ_TEST_SECONDS` each), the root-only eBPF integration tests,
//!   the benchmarks (they assert their results) and the end-to-end suite against real servers
//!   and a real OTLP receiver.
//!
//! Every step is idempotent: a second run skips what is already installed.

mod fuzz;
mod setup;
mod toolchain;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the eBPF object (target/bpfel-unknown-none/release/agent-ebpf).
    BuildEbpf,
    /// Build the eBPF object and the agent.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build (release) and run the agent; arguments after `--` go to the agent.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build and run `agent check`.
    Check,
    /// Print performance figures: parser and pipeline benchmarks, and the agent's overhead
    /// under load (nginx + wrk, with and without the agent).
    Bench,
    /// Install the test dependencies only: Debian packages and the Python venv
    /// (target/e2e-venv, with tests/requirements.txt), for running pytest by hand.
    Setup,
    /// Build the cargo-fuzz targets (agent/fuzz) and run each for a time budget; fails when a
    /// target finds a crash, hang or out-of-memory (inputs in agent/fuzz/artifacts/<target>).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target (http1, http2, h2c, postgres, amqp, tls_detect, config).
        #[arg(long)]
        target: Option<String>,
    },
    /// Install test dependencies, build, and run every test layer.
    Test {
        /// Skip apt installs and the venv's pip install (they are idempotent but take a few
        /// seconds); the venv must exist.
        #[arg(long)]
        no_setup: bool,
        /// Extra arguments for pytest (e.g. `-k chain`).
        #[arg(long, allow_hyphen_values = true)]
        pytest: Option<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    std::env::set_current_dir(&root)?;
    match cli.cmd {
        Cmd::BuildEbpf => build_ebpf(&root),
        Cmd::Build { release } => build(&root, release),
        Cmd::Run { args } => {
            build(&root, true)?;
            run_agent(&root, &args)
        }
        Cmd::Check => {
            build(&root, true)?;
            run_agent(&root, &["check".to_owned()])
        }
        Cmd::Setup => {
            let venv = setup::test_deps(&root)?;
            eprintln!("xtask: tests' Python: {}", venv.python().display());
            Ok(())
        }
        Cmd::Test { no_setup, pytest } => test(&root, no_setup, pytest.as_deref()),
        Cmd::Bench => bench(&root),
        Cmd::Fuzz { seconds, target } => {
            fuzz::fuzz(&root, seconds, target.as_deref())?;
            Ok(())
        }
    }
}

fn workspace_root() -> Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(dir
        .parent()
        .context("xtask lives in the workspace")?
        .to_path_buf())
}

pub(crate) fn sh(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", display(cmd));
    let st = cmd
        .status()
        .with_context(|| format!("running {}", display(cmd)))?;
    if !st.success() {
        bail!("{} failed with {st}", display(cmd));
    }
    Ok(())
}

pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {}", display(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            display(cmd),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn build_ebpf(root: &Path) -> Result<()> {
    build_ebpf_with(root, &toolchain::ensure_ebpf()?)
}

/// The eBPF crate, for its own target (it cannot build for the host), with core from source.
const EBPF_CRATE: [&str; 6] = [
    "-p",
    "agent-ebpf",
    "--target",
    "bpfel-unknown-none",
    "-Z",
    "build-std=core",
];

fn build_ebpf_with(root: &Path, ebpf: &toolchain::Ebpf) -> Result<()> {
    sh(ebpf
        .cargo(root)
        .arg("build")
        .args(EBPF_CRATE)
        .arg("--release"))?;
    let obj = root.join("target/bpfel-unknown-none/release/agent-ebpf");
    if !obj.is_file() {
        bail!("eBPF build produced no object at {}", obj.display());
    }
    eprintln!(
        "xtask: eBPF object {} ({} bytes)",
        obj.display(),
        std::fs::metadata(&obj)?.len()
    );
    Ok(())
}

fn build(root: &Path, release: bool) -> Result<()> {
    build_ebpf(root)?;
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root).args(["build", "-p", "agent"]);
    if release {
        cmd.arg("--release");
    }
    sh(&mut cmd)
}

pub(crate) fn is_root() -> bool {
    output(Command::new("id").arg("-u"))
        .map(|s| s.trim() == "0")
        .unwrap_or(false)
}

fn run_agent(root: &Path, args: &[String]) -> Result<()> {
    let bin = root.join("target/release/agent");
    let mut cmd = if is_root() {
        Command::new(&bin)
    } else {
        let mut c = Command::new("sudo");
        c.arg(&bin);
        c
    };
    cmd.args(args);
    sh(&mut cmd)
}

fn bench(root: &Path) -> Result<()> {
    let venv = setup::test_deps(root)?;
    if !Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok_and(|o| !o.stdout.is_empty() || !o.stderr.is_empty())
    {
        sh(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "wrk"]))?;
    }
    build(root, true)?;
    let benches = std::fs::read_dir(root.join("agent/benches"))?
        .filter_map(|e| e.ok())
        // Bench targets are the .rs files; a directory (benches/support) is their shared code.
        .filter(|e| e.path().extension().is_some_and(|x| x == "rs"))
        .filter_map(|e| {
            e.path()
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .collect::<Vec<_>>();
    for b in benches {
        sh(Command::new("cargo").args(["bench", "-p", "agent", "--bench", &b]))?;
    }
    sh(venv
        .activate(&mut Command::new(venv.python()))
        .arg("tests/bench/overhead.py")
        .arg("--agent")
        .arg(root.join("target/release/agent")))?;
    // The same over HTTPS: plaintext from the TLS uprobes instead of the syscalls.
    sh(venv
        .activate(&mut Command::new(venv.python()))
        .arg("tests/bench/overhead.py")
        .arg("--agent")
        .arg(root.join("target/release/agent"))
        .arg("--tls"))?;
    // The agent against its peer, the OpenTelemetry SDK, on the same Flask service.
    sh(venv
        .activate(&mut Command::new(venv.python()))
        .arg("tests/bench/sdk_peer.py")
        .arg("--agent")
        .arg(root.join("target/release/agent")))
}

/// Seconds each fuzz target runs inside `cargo xtask test`: 7 targets take about 2.5 min with
/// a warm fuzz build (the cold nightly + ASan build adds a few minutes once per machine).
const FUZZ_TEST_SECONDS: u64 = 20;

/// How long each step of the test command took, printed at the end (also when a step fails).
#[derive(Default)]
struct Steps(Vec<(&'static str, f64)>);

impl Steps {
    fn run<T>(&mut self, name: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let t = Instant::now();
        let r = f();
        self.0.push((name, t.elapsed().as_secs_f64()));
        if r.is_err() {
            self.print();
        }
        r.with_context(|| format!("step {name:?}"))
    }

    fn print(&self) {
        eprintln!("xtask: step timings:");
        for (name, secs) in &self.0 {
            eprintln!("xtask:   {secs:7.1} s  {name}");
        }
    }
}

fn test(root: &Path, no_setup: bool, pytest: Option<&str>) -> Result<()> {
    let mut steps = Steps::default();
    // 0. Hygiene first: a formatting slip or a lint fails in seconds, not after the e2e suite.
    steps.run("rustfmt --check", || {
        toolchain::ensure_host_components()?;
        sh(Command::new("cargo").args(["fmt", "--all", "--", "--check"]))
    })?;
    let venv = steps.run("set-up (apt, Python venv)", || {
        if no_setup {
            setup::existing_venv(root)
        } else {
            setup::test_deps(root)
        }
    })?;
    let ebpf = steps.run(
        "eBPF toolchain (pinned nightly, bpf-linker)",
        toolchain::ensure_ebpf,
    )?;
    // agent-ebpf cannot build for the host: it is linted for its own target.
    steps.run("clippy agent-ebpf (bpfel-unknown-none)", || {
        sh(ebpf
            .cargo(root)
            .arg("clippy")
            .args(EBPF_CRATE)
            .args(["--", "-D", "warnings"]))
    })?;
    steps.run("build-ebpf", || build_ebpf_with(root, &ebpf))?;
    // After build-ebpf: the agent's build script embeds the object.
    steps.run("clippy host crates (all targets)", || {
        sh(Command::new("cargo").args([
            "clippy",
            "--workspace",
            "--exclude",
            "agent-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    // 1. Unit tests of the default members (no root needed by these). Not --workspace: that
    //    would also build agent-ebpf for the host, which it cannot be. A test whose
    //    prerequisite (a library, a tool) is missing fails here instead of skipping.
    steps.run("unit tests", || {
        sh(venv
            .activate(&mut Command::new("cargo"))
            .env("AGENT_TESTS_REQUIRE_ALL", "1")
            .args(["test", "--lib", "--bins"]))
    })?;
    // 1b. The Kubernetes pod watch: the real kube-rs client against a local server speaking
    //     the API's list/watch wire format (no cluster can run here).
    steps.run("pod watch integration tests", || {
        sh(Command::new("cargo").args(["test", "-p", "agent", "--test", "k8s_watch"]))
    })?;
    // 1c. Every fuzz target for a short budget (the CI run; the long offline runs are
    //     `cargo xtask fuzz --seconds N`): a crash, hang or OOM fails the test command.
    steps.run("fuzz (every target, FUZZ_TEST_SECONDS each)", || {
        fuzz::fuzz(root, FUZZ_TEST_SECONDS, None).map(|_| ())
    })?;
    // 2. eBPF integration tests: real object, real kernel, real sockets (root).
    steps.run("eBPF integration tests", || {
        sh(venv.activate(&mut Command::new("cargo")).args([
            "test",
            "-p",
            "agent",
            "--test",
            "ebpf_capture",
            "--test",
            "ebpf_inject",
            "--",
            "--include-ignored",
            "--test-threads=1",
        ]))
    })?;
    // 3. The benchmarks assert that they measured real work (every exchange reported, every
    //    span delivered): run them, so that those checks run too (about 20 s on 2 cores).
    //    `--bench '*'` is the bench targets only: a plain `cargo bench` would also build the
    //    lib's and bin's unit tests in release mode, minutes for nothing the unit tests miss.
    //    They build with the release profile, which the e2e step's agent then reuses.
    steps.run("benchmarks (cargo bench -p agent --bench '*')", || {
        sh(Command::new("cargo").args(["bench", "-p", "agent", "--bench", "*"]))
    })?;
    // 4. End to end: release agent, real servers and clients, a real OTLP receiver; pytest
    //    and the processes it starts (sys.executable) run the venv's python.
    steps.run("release build", || {
        sh(Command::new("cargo").args(["build", "-p", "agent", "--release"]))
    })?;
    // Manifests and the Dockerfile, rendered and validated offline (no cluster, no root).
    steps.run("deploy manifests (pytest tests/deploy)", || {
        let mut cmd = Command::new(venv.python());
        sh(venv.activate(&mut cmd).args([
            "-m",
            "pytest",
            "tests/deploy",
            "-q",
            "-p",
            "no:cacheprovider",
        ]))
    })?;
    let e2e = root.join("tests/e2e");
    if e2e.is_dir() {
        steps.run("end-to-end (pytest tests/e2e)", || {
            let mut cmd = Command::new(venv.python());
            venv.activate(&mut cmd)
                .env("AGENT_BIN", root.join("target/release/agent"))
                .args(["-m", "pytest", "tests/e2e", "-q", "-p", "no:cacheprovider"]);
            if let Some(extra) = pytest {
                cmd.args(extra.split_whitespace());
            }
            sh(&mut cmd)
        })?;
    }
    steps.print();
    Ok(())
}
