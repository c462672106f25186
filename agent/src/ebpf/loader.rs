//! Loads the embedded eBPF object, configures it for the running kernel and attaches the probe
//! table. Owns the loaded object for the agent's lifetime: dropping [`Loaded`] detaches
//! everything.

use agent_common::{
    conn_key, counter, pid_filter, Config as KConfig, ConnInfo, IoArgs, KernelOffsets, MAX_PAYLOAD,
};
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::uprobe::{UProbeLink, UProbeScope};
use aya::programs::{TracePoint, UProbe};
use aya::{Ebpf, EbpfLoader};
use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::btf;
use super::inject::{InjectOptions, InjectStatus};
use super::probes::{Attach, KernelFeatures, ProbeState, ProbeStatus, PROBES, TRACEFS_PATHS};

/// The kernel programs, built by `cargo xtask build-ebpf` and embedded by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("this agent was built without its eBPF programs (AGENT_ALLOW_MISSING_EBPF=1): rebuild with `cargo xtask build`")]
    NoObject,
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    #[error("loading the eBPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("eBPF map {0} missing from the object")]
    MissingMap(&'static str),
}

/// Why one program could not be loaded or attached (the probe is then reported as not
/// attached, with this as its reason; the agent goes on without it).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("program {0} missing from the object")]
    MissingProgram(&'static str),
    #[error("{program}: {source}")]
    WrongType {
        program: &'static str,
        source: aya::programs::ProgramError,
    },
    /// The verifier's log is in the message: the whole error chain is kept.
    #[error("verifier rejected {program}: {chain}")]
    Rejected {
        program: &'static str,
        chain: String,
    },
    #[error("attach {program} to {target}: {chain}")]
    Attach {
        program: &'static str,
        target: String,
        chain: String,
    },
    #[error("mounting tracefs at {path} failed: {source}")]
    Tracefs {
        path: &'static str,
        source: std::io::Error,
    },
}

/// The TLS uprobe programs in the object (see agent-ebpf's `tls` module).
pub const UPROBE_PROGRAMS: [&str; 10] = [
    "tls_enter_ssl_read",
    "tls_enter_ssl_write",
    "tls_enter_ssl_read_ex",
    "tls_enter_ssl_write_ex",
    "tls_exit_ssl",
    "tls_enter_ssl_handshake",
    "tls_exit_ssl_handshake",
    "tls_enter_go_read",
    "tls_enter_go_write",
    "tls_exit_go",
];

/// The Go `net/http` Transport uprobes (see agent-ebpf's `goctx` module): loaded apart from
/// the TLS ones, so that a rejection costs goroutine-aware context only, never TLS capture.
pub const GO_CONTEXT_PROGRAMS: [&str; 4] = [
    "goctx_enter_write_loop",
    "goctx_enter_round_trip",
    "goctx_enter_newproc1",
    "goctx_exit_newproc1",
];

/// What to load with.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Payload bytes captured per syscall (1..=MAX_PAYLOAD).
    pub capture_bytes: u32,
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub ring_buffer_bytes: u32,
    /// Kernel connection table size.
    pub max_connections: u32,
    /// Trace every process not excluded (true) or only `include_pids` (false).
    pub trace_all: bool,
    pub include_pids: Vec<u32>,
    pub exclude_pids: Vec<u32>,
    /// `probes.disabled` switch names.
    pub disabled: Vec<String>,
    /// Traceparent injection (`propagation.inject_http1`); None: off.
    pub inject: Option<InjectOptions>,
}

impl LoadOptions {
    /// Whether `pid` is traced under these options (never the agent itself), as the kernel's
    /// PID_FILTER decides it.
    pub fn traces(&self, pid: u32) -> bool {
        pid != std::process::id()
            && !self.exclude_pids.contains(&pid)
            && (self.trace_all || self.include_pids.contains(&pid))
    }
}

pub struct Loaded {
    ebpf: Ebpf,
    /// Uprobe links (owned: detached when dropped) by the handle `attach_uprobe` gave out.
    uprobe_links: HashMap<u64, UProbeLink>,
    next_link: u64,
    /// Where detached links go to be dropped (see [`LinkReaper`]).
    reaper: LinkReaper,
    pub statuses: Vec<ProbeStatus>,
    pub features: KernelFeatures,
    /// Whether the traceparent injection programs run (see `super::inject`).
    pub injection: InjectStatus,
}

/// Drops uprobe links off the event loop. Removing a probe point waits for RCU grace periods
/// in the kernel under a global mutex (measured here: ~100 ms per probe point on 6.18, the
/// same when many are closed at once), so a Go binary's ~17 probe points would stall the
/// agent for seconds if detached inline. A background thread drops them one by one.
#[derive(Default)]
struct LinkReaper {
    tx: Option<std::sync::mpsc::Sender<UProbeLink>>,
}

impl LinkReaper {
    fn drop_later(&mut self, link: UProbeLink) {
        if self.tx.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<UProbeLink>();
            let spawned = std::thread::Builder::new()
                .name("uprobe-reaper".into())
                .spawn(move || rx.into_iter().for_each(drop));
            if spawned.is_err() {
                drop(link); // no thread: detach inline, slow but correct
                return;
            }
            self.tx = Some(tx);
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(link);
        }
    }
}

/// Mounts tracefs if the kernel has it but nobody mounted it (common on minimal hosts):
/// tracepoints cannot be attached by name without it.
pub fn ensure_tracefs() -> Result<(), ProbeError> {
    if TRACEFS_PATHS
        .iter()
        .any(|p| Path::new(p).join("events").is_dir())
    {
        return Ok(());
    }
    let target = TRACEFS_PATHS[0];
    // SAFETY: mount(2) with valid NUL-terminated strings and no data argument.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(ProbeError::Tracefs {
            path: target,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones use memcg. Raising the
/// limit may be refused (containers): that is only a problem on old kernels, so don't fail.
fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        tracing::debug!(
            "setrlimit(RLIMIT_MEMLOCK) refused: fine on kernels >= 5.11 (memcg accounting)"
        );
    }
}

pub fn load(opts: &LoadOptions) -> Result<Loaded, LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    if let Err(e) = ensure_tracefs() {
        tracing::warn!("{e}");
    }
    raise_memlock();
    let offsets: KernelOffsets = btf::kernel_offsets(Path::new(btf::VMLINUX_BTF))?;
    let kcfg = KConfig {
        capture_bytes: opts.capture_bytes.clamp(1, MAX_PAYLOAD as u32),
        trace_all: opts.trace_all as u8,
        _pad: [0; 3],
    };
    let inject_cfg = agent_common::InjectConfig {
        enabled: opts.inject.is_some() as u32,
        parent_based: opts.inject.as_ref().is_some_and(|i| i.parent_based) as u32,
        root_threshold: opts.inject.as_ref().map_or(0, |i| i.root_threshold),
        secret: opts.inject.as_ref().map_or(0, |i| i.secret),
    };
    let cpus = aya::util::nr_cpus().map(|n| n as u32).unwrap_or(256).max(1);
    let mut ebpf = EbpfLoader::new()
        .override_global("CONFIG", &kcfg, true)
        .override_global("INJECT", &inject_cfg, true)
        .override_global("OFFSETS", &offsets, true)
        .map_max_entries("EVENTS", opts.ring_buffer_bytes)
        .map_max_entries("CONNS", opts.max_connections)
        .map_max_entries("SCRATCH", cpus)
        .load(OBJECT)?;

    // Filter before attaching, so the agent never sees its own traffic.
    {
        let mut filter: BpfHashMap<_, u32, u8> = map(&mut ebpf, "PID_FILTER")?;
        let me = std::process::id();
        let entries = std::iter::once((me, pid_filter::EXCLUDE))
            .chain(opts.exclude_pids.iter().map(|&p| (p, pid_filter::EXCLUDE)))
            .chain(
                opts.include_pids
                    .iter()
                    .filter(|&&p| p != me)
                    .map(|&p| (p, pid_filter::INCLUDE)),
            );
        for (pid, v) in entries {
            filter.insert(pid, v, 0).map_err(|source| LoadError::Map {
                name: "PID_FILTER",
                source,
            })?;
        }
    }

    let features = KernelFeatures::detect();
    let statuses = attach_all(&mut ebpf, &features, &opts.disabled);
    let injection = match &opts.inject {
        None => InjectStatus::Off,
        Some(i) => match super::inject::attach(&mut ebpf, i) {
            Ok(cgroup) => InjectStatus::Attached(cgroup),
            Err(e) => InjectStatus::Failed(e.to_string()),
        },
    };
    Ok(Loaded {
        injection,
        ebpf,
        uprobe_links: HashMap::new(),
        next_link: 0,
        reaper: LinkReaper::default(),
        statuses,
        features,
    })
}

fn attach_all(ebpf: &mut Ebpf, features: &KernelFeatures, disabled: &[String]) -> Vec<ProbeStatus> {
    let mut loaded: HashSet<&'static str> = HashSet::new();
    let mut out = Vec::with_capacity(PROBES.len());
    for spec in PROBES {
        let state = if disabled.iter().any(|d| d == spec.switch) {
            ProbeState::Disabled
        } else {
            match spec.attach {
                Attach::Tracepoint { category, name } => {
                    if !features.has_tracepoint(category, name) {
                        ProbeState::Unsupported(format!(
                            "tracepoint {category}:{name} not found in tracefs"
                        ))
                    } else {
                        match attach_tracepoint(ebpf, &mut loaded, spec.program, category, name) {
                            Ok(()) => ProbeState::Attached,
                            Err(e) => ProbeState::Unsupported(e.to_string()),
                        }
                    }
                }
            }
        };
        out.push(ProbeStatus { spec: *spec, state });
    }
    out
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    loaded: &mut HashSet<&'static str>,
    program: &'static str,
    category: &str,
    name: &str,
) -> Result<(), ProbeError> {
    let prog = ebpf
        .program_mut(program)
        .ok_or(ProbeError::MissingProgram(program))?;
    let tp: &mut TracePoint = prog
        .try_into()
        .map_err(|source| ProbeError::WrongType { program, source })?;
    if loaded.insert(program) {
        // The verifier's log is in the error's source chain: keep all of it.
        tp.load().map_err(|e| ProbeError::Rejected {
            program,
            chain: error_chain(&e),
        })?;
    }
    tp.attach(category, name).map_err(|e| ProbeError::Attach {
        program,
        target: format!("{category}:{name}"),
        chain: error_chain(&e),
    })?;
    Ok(())
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn map<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    let m = ebpf.map_mut(name).ok_or(LoadError::MissingMap(name))?;
    T::try_from(m).map_err(|source| LoadError::Map { name, source })
}

impl Loaded {
    /// The ring buffer, moved out for the reader task.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, LoadError> {
        let m = self
            .ebpf
            .take_map("EVENTS")
            .ok_or(LoadError::MissingMap("EVENTS"))?;
        RingBuf::try_from(m).map_err(|source| LoadError::Map {
            name: "EVENTS",
            source,
        })
    }

    /// Adds a connection found in procfs to the kernel table so its traffic is captured.
    pub fn track_connection(&mut self, pid: u32, fd: u32, info: ConnInfo) -> Result<(), LoadError> {
        let mut conns: BpfHashMap<_, u64, ConnInfo> = map(&mut self.ebpf, "CONNS")?;
        conns
            .insert(conn_key(pid, fd), info, 0)
            .map_err(|source| LoadError::Map {
                name: "CONNS",
                source,
            })
    }

    /// Saves the arguments of a read that was already blocked when the probes attached (see
    /// `seed::blocked_reads`), so its exit is captured. Never overwrites an entry the kernel
    /// made itself (BPF_NOEXIST): that one is fresher.
    pub fn prime_blocked_read(&mut self, pid_tgid: u64, args: IoArgs) -> bool {
        let Ok(mut active) = map::<BpfHashMap<_, u64, IoArgs>>(&mut self.ebpf, "ACTIVE_IO") else {
            return false;
        };
        active.insert(pid_tgid, args, 1).is_ok()
    }

    /// Sets a `conn_flags` bit on a connection: MUTED stops payload capture for a connection
    /// user space parses nothing on, RAW_OFF stops copying a TLS connection's ciphertext.
    /// Returns false if the kernel no longer tracks it (closed, or evicted from its LRU table).
    pub fn set_connection_flag(&mut self, pid: u32, fd: u32, flag: u8) -> bool {
        let Ok(mut conns) = map::<BpfHashMap<_, u64, ConnInfo>>(&mut self.ebpf, "CONNS") else {
            return false;
        };
        let key = conn_key(pid, fd);
        match conns.get(&key, 0) {
            Ok(mut info) => {
                info.flags |= flag;
                // BPF_EXIST: never re-create an entry the kernel dropped meanwhile.
                conns.insert(key, info, 2).is_ok()
            }
            Err(_) => false,
        }
    }

    /// Mutes (`true`) or unmutes the cgroup of id `cgroup_id` in the kernel's selection filter
    /// (see `crate::selection::cgroups`). False when the map refused (full, or missing).
    pub fn set_cgroup_muted(&mut self, cgroup_id: u64, muted: bool) -> bool {
        let Ok(mut f) = map::<BpfHashMap<_, u64, u8>>(&mut self.ebpf, "CGROUP_FILTER") else {
            return false;
        };
        if muted {
            f.insert(cgroup_id, 1, 0).is_ok()
        } else {
            f.remove(&cgroup_id).is_ok()
        }
    }

    /// Drops the kernel's entries for a connection user space gave up on (process exit).
    pub fn untrack_connection(&mut self, pid: u32, fd: u32) {
        if let Ok(mut conns) = map::<BpfHashMap<_, u64, ConnInfo>>(&mut self.ebpf, "CONNS") {
            let _ = conns.remove(&conn_key(pid, fd));
        }
    }

    /// Loads the TLS uprobe programs (once; attaching happens per library, see `crate::tls`).
    /// Returns one line per program that could not be loaded.
    pub fn load_uprobes(&mut self) -> Vec<ProbeError> {
        self.load_uprobe_programs(&UPROBE_PROGRAMS)
    }

    /// Loads the Go Transport uprobes ([`GO_CONTEXT_PROGRAMS`]); one line per rejected one.
    pub fn load_go_context(&mut self) -> Vec<ProbeError> {
        self.load_uprobe_programs(&GO_CONTEXT_PROGRAMS)
    }

    fn load_uprobe_programs(&mut self, names: &[&'static str]) -> Vec<ProbeError> {
        let mut errors = Vec::new();
        for &name in names {
            let r = match self.ebpf.program_mut(name) {
                None => Err(ProbeError::MissingProgram(name)),
                Some(p) => match <&mut UProbe>::try_from(p) {
                    Err(source) => Err(ProbeError::WrongType {
                        program: name,
                        source,
                    }),
                    Ok(u) => u.load().map_err(|e| ProbeError::Rejected {
                        program: name,
                        chain: error_chain(&e),
                    }),
                },
            };
            if let Err(e) = r {
                errors.push(e);
            }
        }
        errors
    }

    /// Marks `pid` as a Go program with the register ABI (`GO_PROCS`): its records then carry
    /// the goroutine. The kernel forgets it at exit and exec. False when the map refused.
    pub fn mark_go_process(&mut self, pid: u32) -> bool {
        map::<BpfHashMap<_, u32, u8>>(&mut self.ebpf, "GO_PROCS")
            .is_ok_and(|mut m| m.insert(pid, 1, 0).is_ok())
    }

    /// Attaches a loaded uprobe program at a file offset in `target`, for every process that
    /// maps that file (the kernel keys uprobes by inode).
    pub fn attach_uprobe(
        &mut self,
        program: &'static str,
        target: &Path,
        file_offset: u64,
    ) -> Result<u64, ProbeError> {
        let prog = self
            .ebpf
            .program_mut(program)
            .ok_or(ProbeError::MissingProgram(program))?;
        let u: &mut UProbe = prog
            .try_into()
            .map_err(|source| ProbeError::WrongType { program, source })?;
        let attach_err = |chain: String| ProbeError::Attach {
            program,
            target: format!("{}+{file_offset:#x}", target.display()),
            chain,
        };
        let link = u
            .attach(file_offset, target, UProbeScope::AllProcesses)
            .map_err(|e| attach_err(error_chain(&e)))?;
        let link = u.take_link(link).map_err(|e| attach_err(error_chain(&e)))?;
        self.next_link += 1;
        self.uprobe_links.insert(self.next_link, link);
        Ok(self.next_link)
    }

    /// Detaches what `attach_uprobe` attached (the handle it returned).
    /// Never blocks: see [`LinkReaper`].
    pub fn detach_uprobe(&mut self, handle: u64) {
        if let Some(link) = self.uprobe_links.remove(&handle) {
            self.reaper.drop_later(link);
        }
    }

    /// Makes the agent's exit fast: the kernel removes every probe point (tracepoints and
    /// uprobes alike) when the last reference to its perf event is closed, ~100 ms each,
    /// serialised — seconds for an agent with a few TLS binaries attached. A forked child
    /// takes over those references and closes them after this process has exited (it waits
    /// for the write end of a pipe that only this process holds), so the closes here are
    /// cheap and the slow part happens in the background. Call once, just before exiting.
    pub fn release_in_background(&mut self) {
        let mut fds = [0i32; 2];
        // SAFETY: pipe(2) with a valid two-int array.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return;
        }
        // SAFETY: the child only calls async-signal-safe functions (close, read, _exit)
        // before exiting, as required after fork in a multi-threaded process.
        match unsafe { libc::fork() } {
            0 => unsafe {
                libc::close(fds[1]);
                let mut b = 0u8;
                while libc::read(fds[0], &mut b as *mut u8 as *mut libc::c_void, 1) < 0 {}
                libc::_exit(0);
            },
            -1 => {
                // SAFETY: closing the fds pipe() returned.
                unsafe {
                    libc::close(fds[0]);
                    libc::close(fds[1]);
                }
            }
            _ => {
                // SAFETY: as above. The write end stays open until this process exits.
                unsafe { libc::close(fds[0]) };
            }
        }
    }

    /// The injection counters, indexed by `agent_common::inject_counter`.
    pub fn inject_counters(&mut self) -> [u64; agent_common::inject_counter::COUNT as usize] {
        super::inject::counters(&mut self.ebpf)
    }

    /// Sockets in the injection sockhash now (see `super::inject::sockets`).
    pub fn inject_sockets(&self) -> usize {
        super::inject::sockets(&self.ebpf)
    }

    /// Never injects into connections `pid` opens from now on (see `super::inject::deny`).
    pub fn deny_injection(&mut self, pid: u32) -> bool {
        super::inject::deny(&mut self.ebpf, pid)
    }

    /// Kernel-side counters summed over CPUs, indexed by `agent_common::counter`.
    pub fn kernel_counters(&mut self) -> [u64; counter::COUNT as usize] {
        let mut out = [0u64; counter::COUNT as usize];
        if let Ok(arr) = map::<PerCpuArray<_, u64>>(&mut self.ebpf, "COUNTERS") {
            for (i, slot) in out.iter_mut().enumerate() {
                if let Ok(v) = arr.get(&(i as u32), 0) {
                    *slot = v.iter().sum();
                }
            }
        }
        out
    }
}
