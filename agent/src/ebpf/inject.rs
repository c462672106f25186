//! Attaching the traceparent injection programs (agent-ebpf's `inject`): the sockops program
//! to a cgroup v2 directory, the sk_msg verdict program to the `INJECT_SOCKS` sockhash.
//!
//! Owns where they attach, why they were not, and reading their counters. What is injected
//! and when is decided in the kernel; how user space adopts the ids is `span::builder`'s.

use agent_common::inject_counter;
use aya::maps::ProgramArray;
use aya::maps::{HashMap as BpfHashMap, PerCpuArray, SockHash};
use aya::programs::{CgroupAttachMode, SkMsg, SockOps, TracePoint};
use aya::Ebpf;
use std::path::PathBuf;

/// What the loader needs to turn injection on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectOptions {
    /// The cgroup v2 directory to attach the sockops program to; None: the v2 root.
    pub cgroup: Option<PathBuf>,
    /// See `agent_common::InjectConfig::root_threshold`.
    pub root_threshold: u64,
    /// See `agent_common::InjectConfig::parent_based`.
    pub parent_based: bool,
    /// The key of `agent_common::derive_trace_id` (random per run); the span builder derives
    /// the same ids (`SpanOptions::derive_roots`).
    pub secret: u64,
}

/// Whether injection runs, for `agent check` and the start-up log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InjectStatus {
    /// `propagation.inject_http1` is false.
    Off,
    /// Attached to this cgroup v2 directory.
    Attached(PathBuf),
    /// Configured on, but not attached, and why.
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("no cgroup v2 hierarchy is mounted (/proc/self/mountinfo has no cgroup2 line)")]
    NoCgroup2,
    #[error("cgroup directory {path}: {source}")]
    Cgroup {
        path: String,
        source: std::io::Error,
    },
    #[error("program {0} missing from the object")]
    MissingProgram(&'static str),
    #[error("map INJECT_SOCKS missing from the object")]
    MissingMap,
    #[error("{what}: {chain}")]
    Program { what: &'static str, chain: String },
}

/// The mount point of the cgroup v2 hierarchy in `mountinfo` (proc(5): field 5 is the mount
/// point; the filesystem type follows the ` - ` separator).
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

fn program_err(what: &'static str) -> impl Fn(aya::programs::ProgramError) -> InjectError {
    move |e| InjectError::Program {
        what,
        chain: super::loader::error_chain(&e),
    }
}

fn program_fd(fd: &aya::programs::ProgramFd) -> Result<aya::programs::ProgramFd, InjectError> {
    fd.try_clone().map_err(|source| InjectError::Cgroup {
        path: "a program fd".into(),
        source,
    })
}

/// Puts `fd` into slot 0 of the program array `name` (a tail call's target).
fn set_slot(
    ebpf: &mut Ebpf,
    name: &'static str,
    fd: &aya::programs::ProgramFd,
) -> Result<(), InjectError> {
    let m = ebpf
        .map_mut(name)
        .ok_or(InjectError::MissingProgram(name))?;
    let mut arr = ProgramArray::try_from(m).map_err(|e| InjectError::Program {
        what: name,
        chain: e.to_string(),
    })?;
    arr.set(0, fd, 0).map_err(|e| InjectError::Program {
        what: name,
        chain: e.to_string(),
    })
}

/// Loads and attaches both programs. The sk_msg program goes on first, so no socket is in the
/// sockhash without it.
pub fn attach(ebpf: &mut Ebpf, opts: &InjectOptions) -> Result<PathBuf, InjectError> {
    let cgroup = match &opts.cgroup {
        Some(p) => p.clone(),
        None => {
            let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            cgroup2_mount(&info).ok_or(InjectError::NoCgroup2)?
        }
    };
    let dir = std::fs::File::open(&cgroup).map_err(|source| InjectError::Cgroup {
        path: cgroup.display().to_string(),
        source,
    })?;
    let socks = {
        let m = ebpf.map("INJECT_SOCKS").ok_or(InjectError::MissingMap)?;
        let h: SockHash<_, u64> = SockHash::try_from(m).map_err(|e| InjectError::Program {
            what: "INJECT_SOCKS",
            chain: e.to_string(),
        })?;
        h.fd().try_clone().map_err(|source| InjectError::Cgroup {
            path: "INJECT_SOCKS".into(),
            source,
        })?
    };
    // The verdict program's second half (agent-ebpf's `inject::write`), reached by tail call:
    // in place before the first half can run.
    let write: &mut SkMsg = ebpf
        .program_mut("inject_sk_msg_write")
        .ok_or(InjectError::MissingProgram("inject_sk_msg_write"))?
        .try_into()
        .map_err(program_err("inject_sk_msg_write"))?;
    write
        .load()
        .map_err(program_err("loading inject_sk_msg_write"))?;
    let write_fd = program_fd(write.fd().map_err(program_err("inject_sk_msg_write"))?)?;
    set_slot(ebpf, "INJECT_PROG", &write_fd)?;
    let msg: &mut SkMsg = ebpf
        .program_mut("inject_sk_msg")
        .ok_or(InjectError::MissingProgram("inject_sk_msg"))?
        .try_into()
        .map_err(program_err("inject_sk_msg"))?;
    msg.load().map_err(program_err("loading inject_sk_msg"))?;
    msg.attach(&socks)
        .map_err(program_err("attaching inject_sk_msg to INJECT_SOCKS"))?;
    // Which request a server thread serves (agent-ebpf's `serverctx`): the read exits tail-call
    // it; until it is in place they skip it, and serving processes are not injected.
    let ctx_prog: &mut TracePoint = ebpf
        .program_mut("server_ctx")
        .ok_or(InjectError::MissingProgram("server_ctx"))?
        .try_into()
        .map_err(program_err("server_ctx"))?;
    ctx_prog.load().map_err(program_err("loading server_ctx"))?;
    let ctx_fd = program_fd(ctx_prog.fd().map_err(program_err("server_ctx"))?)?;
    set_slot(ebpf, "SERVER_CTX_PROG", &ctx_fd)?;
    let ops: &mut SockOps = ebpf
        .program_mut("inject_sockops")
        .ok_or(InjectError::MissingProgram("inject_sockops"))?
        .try_into()
        .map_err(program_err("inject_sockops"))?;
    ops.load().map_err(program_err("loading inject_sockops"))?;
    // A bpf_link (kernels >= 5.7, which aya uses) coexists with other links on the same
    // directory whatever the mode; `AllowMultiple` would pass BPF_F_ALLOW_MULTI, which
    // link_create refuses (EINVAL, seen on 6.18).
    ops.attach(&dir, CgroupAttachMode::Single)
        .map_err(program_err("attaching inject_sockops"))?;
    Ok(cgroup)
}

/// The injection counters summed over CPUs, indexed by `agent_common::inject_counter`.
pub fn counters(ebpf: &mut Ebpf) -> [u64; inject_counter::COUNT as usize] {
    let mut out = [0u64; inject_counter::COUNT as usize];
    if let Some(arr) = ebpf
        .map_mut("INJECT_COUNTERS")
        .and_then(|m| PerCpuArray::<_, u64>::try_from(m).ok())
    {
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(v) = arr.get(&(i as u32), 0) {
                *slot = v.iter().sum();
            }
        }
    }
    out
}

/// Sockets in the injection sockhash now (the kernel removes a socket when it closes).
pub fn sockets(ebpf: &Ebpf) -> usize {
    ebpf.map("INJECT_SOCKS")
        .and_then(|m| SockHash::<_, u64>::try_from(m).ok())
        .map_or(0, |h| h.keys().filter(Result::is_ok).count())
}

/// Never injects into connections `pid` opens from now on (a Go program, an opt-out).
/// False when the map refused.
pub fn deny(ebpf: &mut Ebpf, pid: u32) -> bool {
    ebpf.map_mut("INJECT_DENY")
        .and_then(|m| BpfHashMap::<_, u32, u8>::try_from(m).ok())
        .is_some_and(|mut m| {
            m.insert(pid, agent_common::inject_class::EXCLUDED, 0)
                .is_ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_v2_mount_in_a_hybrid_layout() {
        let info = "\
24 30 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw
29 24 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
30 29 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev shared:10 - cgroup2 cgroup2 rw,nsdelegate
31 29 0:28 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,name=systemd
";
        assert_eq!(
            cgroup2_mount(info),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_mount("31 29 0:28 / /x rw - cgroup cgroup rw\n"),
            None
        );
        assert_eq!(cgroup2_mount("garbage\n\n - \n"), None);
    }
}
