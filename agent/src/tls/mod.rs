//! TLS libraries in running processes: finding them, attaching the plaintext uprobes to each
//! distinct file once, detaching when the last process using it is gone.
//!
//! Owns: which files (by device and inode: a container's own libssl is a different file from
//! the host's) have been looked at, what they contain ([`inspect`]), the uprobe links attached
//! to them, and which processes map them. Does not own: what the probes do (agent-ebpf's `tls`)
//! or how plaintext is parsed (it arrives as ordinary data records, see `crate::conn`).
//!
//! Processes are looked at when the agent starts (all of /proc), and afterwards when the kernel
//! reports that one exec'd or mapped an executable file (`EventKind::ProcExec`: the dynamic
//! loader, or `dlopen` — Python maps libssl only on `import ssl`). Only the executable and
//! libraries whose name says TLS (`ssl`, `grpc`) are inspected, each file once, so a busy node
//! pays for a `/proc/<pid>/maps` read per new process and nothing per event.
//!
//! Uprobes are attached per file for every process that maps it (the kernel keys them by
//! inode), through `/proc/<pid>/root/<path>` so files inside containers resolve.

pub mod inspect;

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ebpf::loader::ProbeError;
use crate::telemetry::{Counter, Telemetry};
use inspect::TlsRuntime;

/// Files remembered (TLS or not) before the ones no live process maps are forgotten.
const MAX_FILES: usize = 8192;
/// How long a file's probes stay attached after the last process mapping it exited. A client
/// binary run again and again (a CLI, a cron job) keeps its probes, so its next run is traced
/// from its first request instead of from when the agent got round to looking at it.
const LINGER: Duration = Duration::from_secs(60);

/// Where uprobes go: the loaded eBPF object in the agent, a recorder in tests. `attach`
/// returns a handle for `detach`.
pub trait UprobeAttacher {
    fn attach(
        &mut self,
        program: &'static str,
        target: &Path,
        file_offset: u64,
    ) -> Result<u64, ProbeError>;
    fn detach(&mut self, link: u64);
    /// Marks `pid` as a Go program with the register ABI: the kernel then reads the goroutine
    /// of its records (see agent-ebpf's `goctx`). False when that could not be done.
    fn mark_go(&mut self, _pid: u32) -> bool {
        false
    }
}

impl UprobeAttacher for crate::ebpf::loader::Loaded {
    fn attach(
        &mut self,
        program: &'static str,
        target: &Path,
        file_offset: u64,
    ) -> Result<u64, ProbeError> {
        self.attach_uprobe(program, target, file_offset)
    }

    fn detach(&mut self, link: u64) {
        self.detach_uprobe(link)
    }

    fn mark_go(&mut self, pid: u32) -> bool {
        self.mark_go_process(pid)
    }
}

/// (st_dev, st_ino) of a file.
type FileId = (u64, u64);

/// What was found in one file and whether it is traced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// The uprobes are attached.
    Traced { library: String },
    /// A TLS library the agent cannot trace, and why.
    NotTraced { library: String, reason: String },
}

impl Finding {
    pub fn library(&self) -> &str {
        match self {
            Finding::Traced { library } | Finding::NotTraced { library, .. } => library,
        }
    }
}

struct FileState {
    /// The path as the process sees it (for reports).
    path: String,
    /// Where the agent opens it (`/proc/<pid>/root/<path>` of a process that maps it).
    open_path: PathBuf,
    /// None: no TLS library in this file.
    runtime: Option<TlsRuntime>,
    /// Attach error of the last try, if the runtime is traceable but attaching failed.
    error: Option<String>,
    links: Vec<u64>,
    pids: HashSet<u32>,
    /// When the last process mapping it exited (probes linger, see [`LINGER`]).
    idle_since: Option<Instant>,
}

impl FileState {
    fn finding(&self) -> Option<Finding> {
        let rt = self.runtime.as_ref()?;
        let library = describe(rt);
        if let Some(reason) = untraceable(rt).or_else(|| self.error.clone()) {
            return Some(Finding::NotTraced { library, reason });
        }
        Some(Finding::Traced { library })
    }
}

/// One process's TLS libraries, for `agent check` and the log.
#[derive(Clone, Debug)]
pub struct ProcessReport {
    pub pid: u32,
    pub comm: String,
    /// (path, finding) for every TLS library the process maps.
    pub files: Vec<(String, Finding)>,
}

pub struct TlsTracker {
    files: HashMap<FileId, FileState>,
    /// pid → the TLS files it maps (only files with a TLS runtime).
    procs: HashMap<u32, Vec<FileId>>,
    /// Whether the Go `net/http` Transport programs are loaded (Err: why not).
    go_context: Result<(), String>,
    telemetry: Arc<Telemetry>,
}

/// Why TLS plaintext will not be captured at all.
#[derive(Debug, thiserror::Error)]
pub enum TlsUnavailable {
    #[error("disabled by probes.disabled: tls")]
    Disabled,
    #[error("the kernel has no uprobe PMU (/sys/bus/event_source/devices/uprobe)")]
    NoUprobes,
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Rejected(Vec<ProbeError>),
}

/// Loads the TLS uprobe programs and looks at every running process. Err says why TLS
/// plaintext will not be captured at all (switched off, no uprobes, programs rejected).
pub fn start(
    loaded: &mut crate::ebpf::loader::Loaded,
    disabled: &[String],
    traced: impl Fn(u32) -> bool,
    telemetry: Arc<Telemetry>,
) -> Result<TlsTracker, TlsUnavailable> {
    if disabled.iter().any(|d| d == "tls") {
        return Err(TlsUnavailable::Disabled);
    }
    if !loaded.features.uprobes {
        return Err(TlsUnavailable::NoUprobes);
    }
    let errors = loaded.load_uprobes();
    if !errors.is_empty() {
        return Err(TlsUnavailable::Rejected(errors));
    }
    let mut t = TlsTracker::new(telemetry);
    let go_errors = loaded.load_go_context();
    if !go_errors.is_empty() {
        let why = go_errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        tracing::warn!("Go goroutine-aware trace context unavailable: {why}");
        t.go_context = Err(why);
    }
    t.scan_all(traced, loaded);
    Ok(t)
}

impl TlsTracker {
    pub fn new(telemetry: Arc<Telemetry>) -> Self {
        Self {
            files: HashMap::new(),
            procs: HashMap::new(),
            go_context: Ok(()),
            telemetry,
        }
    }

    /// Looks at every running process `traced` accepts.
    pub fn scan_all(&mut self, traced: impl Fn(u32) -> bool, att: &mut impl UprobeAttacher) {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        let pids: Vec<u32> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&p| traced(p))
            .collect();
        for pid in pids {
            self.scan(pid, att);
        }
    }

    /// Looks at one process's executable and TLS-looking libraries; attaches to new ones.
    pub fn scan(&mut self, pid: u32, att: &mut impl UprobeAttacher) {
        if pid == std::process::id() {
            return;
        }
        let Some(paths) = candidate_paths(pid) else {
            return; // gone already
        };
        let mut mine: Vec<FileId> = self.procs.get(&pid).cloned().unwrap_or_default();
        for path in paths {
            let at = open_path(pid, &path);
            let Ok(md) = std::fs::metadata(&at) else {
                continue;
            };
            let id = (md.dev(), md.ino());
            if !self.files.contains_key(&id) {
                self.make_room();
                let started = Instant::now();
                let (runtime, error) = match inspect::inspect_quick(&at) {
                    Ok(rt) => (rt, None),
                    Err(e) => {
                        tracing::debug!("inspecting {path} (pid {pid}): {e}");
                        (None, None)
                    }
                };
                tracing::debug!("inspected {path} in {:?}", started.elapsed());
                self.files.insert(
                    id,
                    FileState {
                        path: path.clone(),
                        open_path: at,
                        runtime,
                        error,
                        links: Vec::new(),
                        pids: HashSet::new(),
                        idle_since: None,
                    },
                );
            }
            let Some(f) = self.files.get_mut(&id) else {
                continue;
            };
            if f.runtime.is_none() {
                continue;
            }
            f.pids.insert(pid);
            // Again after every exec (the kernel forgets the mark then).
            if matches!(f.runtime, Some(TlsRuntime::Go { regabi: true, .. })) && !att.mark_go(pid) {
                tracing::debug!("pid {pid}: not marked as Go: its calls get no goroutine");
            }
            f.idle_since = None;
            if !mine.contains(&id) {
                mine.push(id);
            }
            if f.links.is_empty()
                && f.error.is_none()
                && f.runtime.as_ref().is_some_and(|r| untraceable(r).is_none())
            {
                // The file may have been reached through a process that since exited.
                f.open_path = open_path(pid, &path);
                attach_file(f, att, &self.telemetry);
                if !f.links.is_empty() {
                    attach_transport(f, att, &self.go_context, &self.telemetry);
                }
                // Probes first, then the slow part: the release version from the banner.
                if let Some(TlsRuntime::OpenSsl {
                    version,
                    version_exact,
                    ..
                }) = f.runtime.as_mut()
                {
                    if !*version_exact {
                        if let Some(v) = inspect::openssl_banner_version(&f.open_path) {
                            *version = Some(v);
                            *version_exact = true;
                        }
                    }
                }
            }
        }
        if !mine.is_empty() {
            self.procs.insert(pid, mine);
        }
    }

    /// A process exited: files no live process maps any more start lingering (see `reap`).
    /// Whether `pid` runs a Go program (known once `scan` looked at it): its goroutines move
    /// between threads, so per-thread trace context does not hold for it.
    pub fn is_go(&self, pid: u32) -> bool {
        self.procs.get(&pid).is_some_and(|ids| {
            ids.iter().any(|id| {
                self.files.get(id).is_some_and(|f| {
                    matches!(
                        f.runtime,
                        Some(TlsRuntime::Go { .. } | TlsRuntime::GoWithoutTls { .. })
                    )
                })
            })
        })
    }

    pub fn process_exit(&mut self, pid: u32) {
        let Some(ids) = self.procs.remove(&pid) else {
            return;
        };
        for id in ids {
            let Some(f) = self.files.get_mut(&id) else {
                continue;
            };
            f.pids.remove(&pid);
            if f.pids.is_empty() {
                f.idle_since = Some(Instant::now());
                f.error = None; // a later process may get a fresh attempt
            }
        }
    }

    /// Forgets processes that exited without their exit being seen (lost records) and
    /// detaches files no process has mapped for [`LINGER`].
    pub fn reap(&mut self, att: &mut impl UprobeAttacher) {
        let gone: Vec<u32> = self
            .procs
            .keys()
            .copied()
            .filter(|pid| !Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        for pid in gone {
            self.process_exit(pid);
        }
        self.detach_idle(Instant::now(), att);
    }

    /// Detaches files no process has mapped for [`LINGER`].
    fn detach_idle(&mut self, now: Instant, att: &mut impl UprobeAttacher) {
        for f in self.files.values_mut() {
            let idle = f
                .idle_since
                .is_some_and(|t| now.saturating_duration_since(t) >= LINGER);
            if idle && f.pids.is_empty() && !f.links.is_empty() {
                for link in f.links.drain(..) {
                    att.detach(link);
                }
                self.telemetry.incr(Counter::TlsFilesDetached);
                tracing::info!("TLS probes detached from {} (no process uses it)", f.path);
            }
        }
    }

    /// Detaches everything (for tests and shutdown paths that keep the object loaded).
    pub fn detach_all(&mut self, att: &mut impl UprobeAttacher) {
        for f in self.files.values_mut() {
            for link in f.links.drain(..) {
                att.detach(link);
            }
        }
    }

    /// Every live process known to map a TLS library, with what was found.
    pub fn report(&self) -> Vec<ProcessReport> {
        let mut out: Vec<ProcessReport> = self
            .procs
            .iter()
            .map(|(&pid, ids)| ProcessReport {
                pid,
                comm: std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|s| s.trim_end().to_owned())
                    .unwrap_or_default(),
                files: ids
                    .iter()
                    .filter_map(|id| {
                        let f = self.files.get(id)?;
                        Some((f.path.clone(), f.finding()?))
                    })
                    .collect(),
            })
            .collect();
        out.sort_by_key(|r| r.pid);
        out
    }

    /// Number of files with uprobes attached now.
    pub fn attached_files(&self) -> usize {
        self.files.values().filter(|f| !f.links.is_empty()).count()
    }

    /// Keeps the file cache bounded: forgets files no live process maps.
    fn make_room(&mut self) {
        if self.files.len() < MAX_FILES {
            return;
        }
        self.files
            .retain(|_, f| !f.pids.is_empty() || !f.links.is_empty());
        if self.files.len() >= MAX_FILES {
            // Every remembered file is in use: forget non-TLS ones (looked at again if seen).
            self.files.retain(|_, f| f.runtime.is_some());
        }
    }
}

/// A human-readable name for what was found.
fn describe(rt: &TlsRuntime) -> String {
    match rt {
        TlsRuntime::OpenSsl {
            version,
            version_exact,
            ..
        } => match version {
            Some(v) if *version_exact => format!("OpenSSL {v}"),
            // From the symbol versions: the ABI series, not the release.
            Some(v) => format!("OpenSSL {v} ABI"),
            None => "OpenSSL".to_owned(),
        },
        TlsRuntime::Go {
            version,
            from_pclntab,
            transport,
            ..
        } => format!(
            "Go crypto/tls ({version}{}{})",
            if *from_pclntab {
                ", stripped: functions from pclntab"
            } else {
                ""
            },
            match transport {
                Ok(_) => String::new(),
                Err(why) => format!("; no net/http goroutine context: {why}"),
            }
        ),
        TlsRuntime::BoringSsl => "BoringSSL (statically linked)".to_owned(),
        TlsRuntime::GoWithoutTls { version } => format!("Go ({version}) without crypto/tls"),
    }
}

/// Why a runtime cannot be traced, if it cannot.
fn untraceable(rt: &TlsRuntime) -> Option<String> {
    match rt {
        TlsRuntime::OpenSsl { funcs, .. }
            if !funcs.iter().any(|f| f.name.starts_with("SSL_read"))
                || !funcs.iter().any(|f| f.name.starts_with("SSL_write")) =>
        {
            Some("no SSL_read/SSL_write symbols".to_owned())
        }
        TlsRuntime::OpenSsl { .. } => None,
        TlsRuntime::Go { regabi: false, .. } => Some(
            "Go before 1.17 passes arguments on the stack; only the register ABI is supported"
                .to_owned(),
        ),
        TlsRuntime::Go {
            read: None,
            write: None,
            ..
        } => Some("crypto/tls.(*Conn).Read/Write not found".to_owned()),
        TlsRuntime::Go { .. } => None,
        TlsRuntime::BoringSsl => Some(
            "BoringSSL is linked without exported symbols (e.g. grpcio): no stable probe points"
                .to_owned(),
        ),
        TlsRuntime::GoWithoutTls { .. } => Some("does not use crypto/tls".to_owned()),
    }
}

/// (program, file offset) pairs for one runtime.
fn probe_points(rt: &TlsRuntime) -> Vec<(&'static str, u64)> {
    let mut out = Vec::new();
    match rt {
        TlsRuntime::OpenSsl { funcs, .. } => {
            for f in funcs {
                let entry = match f.name {
                    "SSL_read" => "tls_enter_ssl_read",
                    "SSL_write" => "tls_enter_ssl_write",
                    "SSL_read_ex" => "tls_enter_ssl_read_ex",
                    "SSL_write_ex" => "tls_enter_ssl_write_ex",
                    "SSL_do_handshake" => {
                        out.push(("tls_enter_ssl_handshake", f.file_offset));
                        out.push(("tls_exit_ssl_handshake", f.file_offset));
                        continue;
                    }
                    _ => continue,
                };
                out.push((entry, f.file_offset));
                out.push(("tls_exit_ssl", f.file_offset));
            }
        }
        TlsRuntime::Go { read, write, .. } => {
            for (func, entry) in [(read, "tls_enter_go_read"), (write, "tls_enter_go_write")] {
                if let Some(f) = func {
                    out.push((entry, f.file_offset));
                    out.extend(f.return_offsets.iter().map(|&o| ("tls_exit_go", o)));
                }
            }
        }
        TlsRuntime::BoringSsl | TlsRuntime::GoWithoutTls { .. } => {}
    }
    out
}

/// Attaches every probe point of a file, or none: a half-attached file would report
/// plaintext in one direction only.
fn attach_file(f: &mut FileState, att: &mut impl UprobeAttacher, telemetry: &Telemetry) {
    let Some(rt) = &f.runtime else { return };
    for (prog, off) in probe_points(rt) {
        match att.attach(prog, &f.open_path, off) {
            Ok(link) => f.links.push(link),
            Err(e) => {
                for l in f.links.drain(..) {
                    att.detach(l);
                }
                tracing::warn!("TLS library {} ({}) not traced: {e}", f.path, describe(rt));
                telemetry.incr(Counter::TlsAttachFailed);
                f.error = Some(e.to_string());
                return;
            }
        }
    }
    telemetry.incr(Counter::TlsFilesAttached);
    tracing::info!(
        "TLS probes attached to {} ({}, {} probe points)",
        f.path,
        describe(rt),
        f.links.len()
    );
}

/// Attaches the Go `net/http` Transport probes (goroutine-aware trace context, agent-ebpf's
/// `goctx`) of a file whose TLS probes are attached: both or neither. Their absence costs only
/// parents of concurrent Go calls (they stay unparented), so it is logged and counted, never
/// fatal to TLS capture.
fn attach_transport(
    f: &mut FileState,
    att: &mut impl UprobeAttacher,
    loaded: &Result<(), String>,
    telemetry: &Telemetry,
) {
    let Some(TlsRuntime::Go { transport, .. }) = &f.runtime else {
        return;
    };
    let skipped = |why: &str| {
        tracing::info!("Go context probes not attached to {}: {why}", f.path);
        telemetry.incr(Counter::GoContextProbesSkipped);
    };
    let (points, spawn) = match (transport, loaded) {
        (Ok(t), Ok(())) => (
            [
                ("goctx_enter_write_loop", t.write_loop),
                ("goctx_enter_round_trip", t.round_trip),
            ],
            t.spawn.clone(),
        ),
        (Err(why), _) | (_, Err(why)) => return skipped(why),
    };
    let mut links = Vec::with_capacity(points.len());
    for (prog, off) in points {
        match att.attach(prog, &f.open_path, off) {
            Ok(link) => links.push(link),
            Err(e) => {
                for l in links {
                    att.detach(l);
                }
                return skipped(&e.to_string());
            }
        }
    }
    // Goroutine starts: entry and every return of runtime.newproc1, all or none.
    let spawn_points: Vec<(&str, u64)> = spawn
        .iter()
        .flat_map(|s| {
            std::iter::once(("goctx_enter_newproc1", s.file_offset))
                .chain(s.return_offsets.iter().map(|&o| ("goctx_exit_newproc1", o)))
        })
        .collect();
    let mut spawn_links = Vec::with_capacity(spawn_points.len());
    let mut spawn_note = if spawn.is_some() {
        "goroutine starts followed"
    } else {
        "goroutine starts not followed (Go before 1.18, or runtime.newproc1 not found)"
    };
    for (prog, off) in spawn_points {
        match att.attach(prog, &f.open_path, off) {
            Ok(link) => spawn_links.push(link),
            Err(e) => {
                tracing::info!("goroutine-start probes not attached to {}: {e}", f.path);
                for l in spawn_links.drain(..) {
                    att.detach(l);
                }
                spawn_note = "goroutine starts not followed (probe refused)";
                break;
            }
        }
    }
    tracing::info!("Go context probes attached to {} ({spawn_note})", f.path);
    f.links.extend(links);
    f.links.extend(spawn_links);
}

/// Where the agent opens a file a process maps: the path itself when the process shares the
/// agent's root (it stays valid after the process exits), else through the process's root
/// (containers).
fn open_path(pid: u32, path: &str) -> PathBuf {
    let same_root = match (
        std::fs::metadata(format!("/proc/{pid}/root/")),
        std::fs::metadata("/proc/self/root/"),
    ) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    };
    if same_root {
        PathBuf::from(path)
    } else {
        PathBuf::from(format!("/proc/{pid}/root{path}"))
    }
}

/// The executable and the TLS-looking libraries a process maps (paths as it sees them).
fn candidate_paths(pid: u32) -> Option<Vec<String>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let mut out: Vec<String> = Vec::new();
    if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
        if let Some(s) = exe.to_str() {
            if !s.ends_with(" (deleted)") {
                out.push(s.to_owned());
            }
        }
    }
    for line in maps.lines() {
        // address perms offset dev inode path (the path may contain spaces)
        let perms = line.split_ascii_whitespace().nth(1).unwrap_or("");
        let Some(path) = line.find(" /").map(|i| &line[i + 1..]) else {
            continue;
        };
        if !perms.contains('x') || path.ends_with(" (deleted)") {
            continue;
        }
        let name = path.rsplit('/').next().unwrap_or(path);
        if (name.contains("ssl") || name.contains("grpc")) && !out.iter().any(|p| p == path) {
            out.push(path.to_owned());
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests;
