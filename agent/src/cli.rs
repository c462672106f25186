//! Command line: `agent run` (the default) and `agent check`.
//!
//! Settings are layered defaults < YAML file < standard `OTEL_*` environment variables <
//! these flags (`config::Config::resolve`). This module parses, sets up logging and dispatches; it does no work
//! of its own.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;
use crate::ebpf::loader;
use crate::ebpf::probes::{tracing_works, ProbeState};

#[derive(Parser, Debug)]
#[command(
    name = "agent",
    version,
    about = "eBPF zero-code tracing agent: spans for every HTTP exchange on this node, no code changes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trace the node and export spans (the default).
    Run(RunArgs),
    /// Say what the running kernel supports and what would be attached; exit 1 if tracing cannot work.
    Check(RunArgs),
}

#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// YAML config file (see deploy/agent.example.yaml for every field).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// OTLP/gRPC endpoint, e.g. http://127.0.0.1:4317. Without one, spans are printed to stdout.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Payload bytes captured per syscall (1..=16384).
    #[arg(long, value_name = "BYTES")]
    pub capture_bytes: Option<u32>,
    /// Trace only these processes (repeatable). Without it every process is traced.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Never trace these processes (repeatable).
    #[arg(long = "exclude-pid", value_name = "PID")]
    pub exclude_pids: Vec<u32>,
    /// Log filter (error|warn|info|debug|trace, or a tracing-subscriber directive).
    #[arg(long, value_name = "LEVEL", default_value = "info", env = "AGENT_LOG")]
    pub log_level: String,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let (is_check, args) = match cli.command {
        Some(Command::Check(a)) => (true, a),
        Some(Command::Run(a)) => (false, a),
        None => (false, cli.run),
    };
    init_logging(&args.log_level);
    let cfg = match Config::resolve(&args, |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agent: {e}");
            return ExitCode::from(2);
        }
    };
    if is_check {
        return check(&cfg);
    }
    match crate::app::run(cfg, args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr: stdout is the console exporter's.
    use std::io::IsTerminal as _;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// Loads and attaches for real (then detaches), so what it prints is what `run` would get.
fn check(cfg: &Config) -> ExitCode {
    let f = crate::ebpf::probes::KernelFeatures::detect();
    println!("kernel            {}", f.release);
    println!(
        "btf               {}",
        yes_no(f.btf, crate::ebpf::btf::VMLINUX_BTF)
    );
    println!(
        "tracefs           {}",
        f.tracefs
            .unwrap_or("not mounted (the agent mounts it at start)")
    );
    println!(
        "kprobes           {}",
        yes_no(
            f.kprobes,
            "not used: the tracepoint backend covers every probe"
        )
    );
    println!(
        "uprobes           {}",
        yes_no(f.uprobes, "TLS plaintext: OpenSSL, Go crypto/tls")
    );
    let mut loaded = match loader::load(&cfg.load_options()) {
        Ok(l) => l,
        Err(e) => {
            println!("load              FAILED: {e}");
            println!("result            tracing cannot work on this kernel");
            return ExitCode::FAILURE;
        }
    };
    println!("load              ok (eBPF object verified and loaded)");
    for s in &loaded.statuses {
        let state = match &s.state {
            ProbeState::Attached => "attached".to_owned(),
            ProbeState::Disabled => format!("disabled by probes.disabled: {}", s.spec.switch),
            ProbeState::Unsupported(why) => format!("SKIPPED: {why}"),
        };
        println!("probe {:<22} {:<44} {}", s.spec.program, s.target(), state);
    }
    println!(
        "inject            {}",
        match &loaded.injection {
            crate::ebpf::inject::InjectStatus::Off =>
                "off (propagation.inject_http1: false)".to_owned(),
            crate::ebpf::inject::InjectStatus::Attached(c) => format!(
                "on: sockops on cgroup {}, sk_msg on INJECT_SOCKS",
                c.display()
            ),
            crate::ebpf::inject::InjectStatus::Failed(why) => format!("NOT attached: {why}"),
        }
    );
    let opts = cfg.load_options();
    let traced = |pid: u32| opts.traces(pid);
    let telemetry = std::sync::Arc::new(crate::telemetry::Telemetry::new());
    match crate::tls::start(&mut loaded, &opts.disabled, traced, telemetry) {
        Err(why) => println!("tls               OFF: {why}"),
        Ok(t) => {
            let report = t.report();
            println!(
                "tls               on: {} files with probes; processes with a TLS library: {}",
                t.attached_files(),
                report.len()
            );
            for r in report {
                for (path, finding) in &r.files {
                    let state = match finding {
                        crate::tls::Finding::Traced { .. } => "traced".to_owned(),
                        crate::tls::Finding::NotTraced { reason, .. } => {
                            format!("NOT traced: {reason}")
                        }
                    };
                    println!(
                        "tls pid {:<8} {:<16} {:<28} {path}: {state}",
                        r.pid,
                        r.comm,
                        finding.library()
                    );
                }
            }
        }
    }
    let works = tracing_works(&loaded.statuses);
    let _ = loaded.kernel_counters();
    loaded.release_in_background(); // detaching the probes takes ~100 ms each: not our wait
    println!(
        "result            {}",
        if works {
            "tracing works (syscall tracepoint backend)"
        } else {
            "tracing cannot work: a required probe is missing"
        }
    );
    if works {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn yes_no(b: bool, detail: &str) -> String {
    if b {
        format!("yes ({detail})")
    } else {
        "no".to_owned()
    }
}
