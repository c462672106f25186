//! The probe table: what the agent attaches, what each entry needs from the kernel, and which
//! config switch turns it off.
//!
//! The loader walks [`PROBES`] in order, attaches what the running kernel supports and records a
//! [`ProbeStatus`] for every entry, so `agent check` and the start-up log can say exactly what was
//! skipped and why. This module only describes and detects; attaching lives in `loader`.
//!
//! Backends: every entry here uses syscall tracepoints, the backend that works on every kernel
//! with CONFIG_FTRACE_SYSCALLS (including kernels built without kprobes, like our CI's).
//! [`KernelFeatures`] also reports kprobe/uprobe availability so `check` tells operators what a
//! kprobe-based backend would have (none is implemented: none is needed for what is traced today).

use std::path::Path;

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    Tracepoint {
        category: &'static str,
        name: &'static str,
    },
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct ProbeSpec {
    /// Program name in the eBPF object (`<area>_<enter|exit>_<function>`).
    pub program: &'static str,
    pub attach: Attach,
    /// The `probes.disabled` entry that switches it off (several rows share one switch).
    pub switch: &'static str,
    /// Without it tracing cannot work at all (`check` fails).
    pub required: bool,
}

macro_rules! tp {
    ($prog:literal, $cat:literal, $name:literal, $switch:literal, $req:expr) => {
        ProbeSpec {
            program: $prog,
            attach: Attach::Tracepoint {
                category: $cat,
                name: $name,
            },
            switch: $switch,
            required: $req,
        }
    };
}

/// Every probe, in attach order. Exits before enters where both exist, so a syscall in flight at
/// start-up is never seen half (an exit without its entry is simply ignored).
pub const PROBES: &[ProbeSpec] = &[
    tp!(
        "conn_exit_connect",
        "syscalls",
        "sys_exit_connect",
        "connect",
        true
    ),
    tp!(
        "conn_enter_connect",
        "syscalls",
        "sys_enter_connect",
        "connect",
        true
    ),
    tp!(
        "conn_exit_accept",
        "syscalls",
        "sys_exit_accept4",
        "accept",
        true
    ),
    tp!(
        "conn_exit_accept",
        "syscalls",
        "sys_exit_accept",
        "accept",
        true
    ),
    tp!(
        "conn_enter_close",
        "syscalls",
        "sys_enter_close",
        "close",
        true
    ),
    tp!(
        "proc_exit_process",
        "sched",
        "sched_process_exit",
        "process_exit",
        false
    ),
    // New programs and library loads: where TLS libraries to put uprobes on show up.
    tp!("proc_exec", "sched", "sched_process_exec", "tls", false),
    tp!(
        "proc_enter_mmap",
        "syscalls",
        "sys_enter_mmap",
        "tls",
        false
    ),
    tp!("data_exit_read", "syscalls", "sys_exit_read", "read", true),
    tp!(
        "data_enter_read",
        "syscalls",
        "sys_enter_read",
        "read",
        true
    ),
    tp!(
        "data_exit_write",
        "syscalls",
        "sys_exit_write",
        "write",
        true
    ),
    tp!(
        "data_enter_write",
        "syscalls",
        "sys_enter_write",
        "write",
        true
    ),
    tp!(
        "data_exit_recvfrom",
        "syscalls",
        "sys_exit_recvfrom",
        "recvfrom",
        false
    ),
    tp!(
        "data_enter_recvfrom",
        "syscalls",
        "sys_enter_recvfrom",
        "recvfrom",
        false
    ),
    tp!(
        "data_exit_sendto",
        "syscalls",
        "sys_exit_sendto",
        "sendto",
        false
    ),
    tp!(
        "data_enter_sendto",
        "syscalls",
        "sys_enter_sendto",
        "sendto",
        false
    ),
    tp!(
        "data_exit_readv",
        "syscalls",
        "sys_exit_readv",
        "readv",
        false
    ),
    tp!(
        "data_enter_readv",
        "syscalls",
        "sys_enter_readv",
        "readv",
        false
    ),
    tp!(
        "data_exit_writev",
        "syscalls",
        "sys_exit_writev",
        "writev",
        false
    ),
    tp!(
        "data_enter_writev",
        "syscalls",
        "sys_enter_writev",
        "writev",
        false
    ),
    tp!(
        "data_exit_recvmsg",
        "syscalls",
        "sys_exit_recvmsg",
        "recvmsg",
        false
    ),
    tp!(
        "data_enter_recvmsg",
        "syscalls",
        "sys_enter_recvmsg",
        "recvmsg",
        false
    ),
    tp!(
        "data_exit_sendmsg",
        "syscalls",
        "sys_exit_sendmsg",
        "sendmsg",
        false
    ),
    tp!(
        "data_enter_sendmsg",
        "syscalls",
        "sys_enter_sendmsg",
        "sendmsg",
        false
    ),
    tp!(
        "data_exit_sendfile",
        "syscalls",
        "sys_exit_sendfile64",
        "sendfile",
        false
    ),
    tp!(
        "data_enter_sendfile",
        "syscalls",
        "sys_enter_sendfile64",
        "sendfile",
        false
    ),
];

/// Every switch name, for config validation.
pub fn switches() -> Vec<&'static str> {
    let mut v: Vec<_> = PROBES.iter().map(|p| p.switch).collect();
    v.dedup();
    v
}

/// What happened to one table row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeState {
    Attached,
    /// Turned off by `probes.disabled`.
    Disabled,
    /// The kernel lacks what it needs, or attaching failed; the reason says which.
    Unsupported(String),
}

#[derive(Clone, Debug)]
pub struct ProbeStatus {
    pub spec: ProbeSpec,
    pub state: ProbeState,
}

impl ProbeStatus {
    pub fn target(&self) -> String {
        match self.spec.attach {
            Attach::Tracepoint { category, name } => format!("tracepoint {category}:{name}"),
        }
    }
}

/// Whether tracing can work with these outcomes: every required row attached (a disabled
/// required row is the operator's choice and reported, but still means tracing cannot work).
pub fn tracing_works(statuses: &[ProbeStatus]) -> bool {
    statuses
        .iter()
        .filter(|s| s.spec.required)
        .all(|s| s.state == ProbeState::Attached)
}

/// What the running kernel offers, for `check` and for choosing what to attach.
#[derive(Clone, Debug)]
pub struct KernelFeatures {
    pub release: String,
    pub btf: bool,
    /// Mount point of tracefs, if mounted (after the loader tried to mount it).
    pub tracefs: Option<&'static str>,
    pub kprobes: bool,
    pub uprobes: bool,
}

pub const TRACEFS_PATHS: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

impl KernelFeatures {
    pub fn detect() -> Self {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        let tracefs = TRACEFS_PATHS
            .iter()
            .copied()
            .find(|p| Path::new(p).join("events").is_dir());
        // kprobe_events exists in tracefs only with CONFIG_KPROBE_EVENTS; the perf PMU type file
        // exists only with CONFIG_KPROBES. Either missing means kprobes cannot be attached.
        let kprobes = Path::new("/sys/bus/event_source/devices/kprobe/type").exists();
        let uprobes = Path::new("/sys/bus/event_source/devices/uprobe/type").exists();
        Self {
            release,
            btf: Path::new(super::btf::VMLINUX_BTF).exists(),
            tracefs,
            kprobes,
            uprobes,
        }
    }

    /// Whether the tracepoint exists on this kernel.
    pub fn has_tracepoint(&self, category: &str, name: &str) -> bool {
        self.tracefs.is_some_and(|t| {
            Path::new(t)
                .join("events")
                .join(category)
                .join(name)
                .is_dir()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for p in PROBES {
            assert!(
                p.program.starts_with("conn_")
                    || p.program.starts_with("data_")
                    || p.program.starts_with("proc_"),
                "{}",
                p.program
            );
            // Every enter has its exit in the same switch group, listed before it.
            if let Some(rest) = p.program.strip_prefix("data_enter_") {
                let exit = format!("data_exit_{rest}");
                let ei = PROBES
                    .iter()
                    .position(|q| q.program == exit)
                    .expect("exit row");
                let ni = PROBES.iter().position(|q| q.program == p.program).unwrap();
                assert!(ei < ni && PROBES[ei].switch == p.switch, "{}", p.program);
            }
        }
        let sw = switches();
        for name in [
            "connect",
            "accept",
            "close",
            "read",
            "write",
            "sendfile",
            "process_exit",
        ] {
            assert!(sw.contains(&name), "{name}");
        }
        let mut dedup = sw.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), sw.len(), "switch rows must be contiguous");
    }

    #[test]
    fn required_rows_decide() {
        let ok = |spec: ProbeSpec, state| ProbeStatus { spec, state };
        let all: Vec<_> = PROBES
            .iter()
            .map(|p| ok(*p, ProbeState::Attached))
            .collect();
        assert!(tracing_works(&all));
        let mut some = all.clone();
        some.iter_mut()
            .find(|s| s.spec.switch == "sendfile")
            .unwrap()
            .state = ProbeState::Disabled;
        assert!(tracing_works(&some));
        some.iter_mut()
            .find(|s| s.spec.switch == "read")
            .unwrap()
            .state = ProbeState::Unsupported("x".into());
        assert!(!tracing_works(&some));
    }
}
