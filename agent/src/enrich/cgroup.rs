//! Which container, and which Kubernetes pod, a process runs in: read from the cgroup paths in
//! `/proc/{pid}/cgroup`.
//!
//! This module owns the parsing of that file and the shapes of the cgroup paths that container
//! runtimes and the kubelet create. It does not talk to a runtime or the Kubernetes API (a
//! container id and a pod uid are what later stages join on), and it does not build resource
//! attributes (see [`super::build_resource`]).
//!
//! # The file
//! One line per hierarchy, `hierarchy-id:controllers:path` (`cgroups(7)`): cgroup v2 is the
//! single line `0::/path`; cgroup v1 has `N:controller[,controller]:/path` lines; hybrid hosts
//! have both, and either side may be the one that names the container: v1 lines at `/` with
//! the path on the v2 line (this machine's layout, a process moved in through
//! `/sys/fs/cgroup/unified`), or v1 lines at `/docker/<id>` and the v2 line at
//! `/system.slice/containerd.service` (Docker on a hybrid host, ctrsploit/ctrsploit#280). The
//! v2 line is tried first, then the v1 lines in file order; the first that names a container
//! wins. Only the first two `:` separate fields: the path may hold `:` itself.
//!
//! # The paths
//! A path is read segment by segment. The *last* segment that names a container is the one:
//! a container can sit inside another one (kind's nodes are Docker containers whose pods'
//! containers nest below), and runtimes may put a child below the container's own cgroup
//! (crun's `…/crio-<id>.scope/container`, Podman's `…/libpod-<id>.scope/container`). A pod is
//! the pod segment after the previous container segment, so a container started inside a pod's
//! container (Docker in Docker) is not reported as a container of that pod.
//!
//! Container segments (`.scope` optional, id exactly 64 lowercase hex):
//! `cri-containerd-<id>` (containerd), `crio-<id>` (CRI-O), `docker-<id>` (Docker),
//! `libpod-<id>` (Podman), a bare `<id>` (runtime unknown; Docker when under `/docker/`),
//! and runc's systemd form `<slice>:<prefix>:<id>` written literally as one segment.
//! `crio-conmon-<id>` and `libpod-conmon-<id>` are the runtimes' monitor processes, which run
//! beside the container and not in it: such a process is in no container.
//!
//! Pod segments: `…kubepods[-burstable|-besteffort]-pod<uid>.slice` (kubelet's systemd cgroup
//! driver; the uid's `-` are written `_` because `-` is the slice hierarchy separator, and are
//! turned back), `pod<uid>` under `kubepods`, `burstable` or `besteffort` (the cgroupfs driver).
//! Guaranteed pods have no QoS level of their own: `kubepods-pod<uid>.slice`,
//! `/kubepods/pod<uid>`. A uid is a UUID, or 32 hex digits for static pods (the kubelet names
//! them by a hash of their manifest). Segments `..` (a process outside the reader's cgroup
//! namespace, `cgroup_namespaces(7)`) are skipped; a cgroupfs pod just below one has an unknown
//! QoS class.
//!
//! # Why only 64-hex ids
//! Docker, containerd's CRI plugin, CRI-O and Podman all name containers by 32 random bytes in
//! hex. Shorter hex strings are common in cgroup paths that are not containers (this machine's
//! sandbox puts processes in `memory:/process_api/<32 hex>`; ECS task ids are 32 hex), so
//! accepting them would put a container id on processes that have none.
//!
//! # Trust
//! Cgroup names are chosen by whoever may create cgroups: root, and users with a delegated
//! subtree (rootless Podman, systemd user sessions). Such a user can name a cgroup like another
//! container; a file in which a hierarchy appears twice (a name with a newline forging a line)
//! is rejected whole. Reads are bounded by [`MAX_CGROUP_FILE`] and nothing here panics.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Bound on what we read of `/proc/{pid}/cgroup`. Thirteen v1 controllers with kind-depth
/// paths (~250 bytes) take about 3.5 KiB; a line cut by the bound is dropped.
pub const MAX_CGROUP_FILE: usize = 8 * 1024;

/// The container runtime, as named by `container.runtime.name` (OpenTelemetry semantic
/// conventions, container registry; `cri-o` as in Kubernetes' `cri-o://` container ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerRuntime {
    Containerd,
    CriO,
    Docker,
    Podman,
}

impl ContainerRuntime {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Containerd => "containerd",
            Self::CriO => "cri-o",
            Self::Docker => "docker",
            Self::Podman => "podman",
        }
    }
}

/// A pod's QoS class, spelled as Kubernetes' `status.qosClass`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guaranteed => "Guaranteed",
            Self::Burstable => "Burstable",
            Self::BestEffort => "BestEffort",
        }
    }
}

/// The Kubernetes pod a container belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    /// `metadata.uid`, with dashes (`275ecb36-5aa8-4c2a-9c47-d8bb681b9aff`), or 32 hex digits
    /// for a static pod.
    pub uid: String,
    /// `None` when the path does not show it (a cgroupfs pod seen across cgroup namespaces).
    pub qos: Option<QosClass>,
}

/// The container a process runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRef {
    /// The full id: 64 lowercase hex digits.
    pub id: String,
    /// `None` when the path does not say (a bare id under a cgroupfs-driver pod is containerd's
    /// or Docker's).
    pub runtime: Option<ContainerRuntime>,
    pub pod: Option<PodRef>,
}

/// Reads `{proc_dir}/cgroup` (`proc_dir` is `/proc/{pid}`) and parses it. Any failure (no such
/// file, no permission, not a container) is `None`.
pub fn read(proc_dir: &Path) -> Option<ContainerRef> {
    let mut buf = Vec::with_capacity(1024);
    // One byte past the bound tells whether the line at the bound goes on.
    File::open(proc_dir.join("cgroup"))
        .and_then(|f| f.take(MAX_CGROUP_FILE as u64 + 1).read_to_end(&mut buf))
        .ok()?;
    parse(&buf)
}

/// Parses the content of a `/proc/{pid}/cgroup` file (see the module documentation). Only the
/// first [`MAX_CGROUP_FILE`] bytes are looked at; a line that goes on past them is dropped, so
/// a cut path (which could end right after an outer container's id) is never used.
pub fn parse(content: &[u8]) -> Option<ContainerRef> {
    let mut bytes = &content[..content.len().min(MAX_CGROUP_FILE)];
    if content.get(MAX_CGROUP_FILE).is_some_and(|&b| b != b'\n') {
        let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        bytes = &bytes[..end];
    }
    let text = String::from_utf8_lossy(bytes);
    let mut v2 = None;
    let mut v1 = Vec::new();
    let mut hierarchies = HashSet::new();
    for line in text.lines() {
        let Some((hierarchy, controllers, path)) = split_line(line) else {
            continue;
        };
        if !hierarchies.insert(hierarchy) {
            return None; // forged or corrupt: each hierarchy has exactly one line
        }
        if hierarchy == "0" && controllers.is_empty() {
            v2 = Some(path);
        } else {
            v1.push(path);
        }
    }
    for path in v2.into_iter().chain(v1) {
        match scan_path(path) {
            Verdict::Container(c) => return Some(c),
            Verdict::Monitor => return None,
            Verdict::Nothing => {}
        }
    }
    None
}

/// `hierarchy-id:controllers:path`, the path absolute; ` (deleted)` (the kernel's mark for a
/// dead cgroup of a zombie, `proc_cgroup_show` in kernel/cgroup/cgroup.c) removed.
fn split_line(line: &str) -> Option<(&str, &str, &str)> {
    let mut fields = line.splitn(3, ':');
    let hierarchy = fields.next()?;
    let controllers = fields.next()?;
    let path = fields.next()?;
    if hierarchy.is_empty()
        || hierarchy.len() > 10
        || !hierarchy.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    if !path.starts_with('/') {
        return None;
    }
    Some((
        hierarchy,
        controllers,
        path.strip_suffix(" (deleted)").unwrap_or(path),
    ))
}

enum Verdict {
    Container(ContainerRef),
    /// A runtime's monitor (conmon): not a container's process.
    Monitor,
    Nothing,
}

enum Segment {
    Container(String, Option<ContainerRuntime>),
    Monitor,
}

fn scan_path(path: &str) -> Verdict {
    let mut found = Verdict::Nothing;
    let mut pod: Option<PodRef> = None;
    let mut parent = "";
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        let mut container = None;
        if let Some((slice, prefix, id)) = colon_form(seg) {
            // runc's systemd cgroupsPath `slice:prefix:name`, written literally by containerd
            // with SystemdCgroup=false under a systemd-driver kubelet: kubernetes#106514,
            // containerd#5226 (`…/kubepods-burstable-pod<uid>.slice:cri-containerd:<id>`).
            if let Some(p) = systemd_pod(slice) {
                pod = Some(p);
            }
            container = prefix_runtime(prefix)
                .filter(|_| is_container_id(id))
                .map(|rt| Segment::Container(id.to_owned(), Some(rt)));
        } else if let Some(p) = systemd_pod(seg).or_else(|| cgroupfs_pod(seg, parent)) {
            pod = Some(p);
        } else {
            container = container_segment(seg, parent);
        }
        match container {
            Some(Segment::Container(id, runtime)) => {
                found = Verdict::Container(ContainerRef {
                    id,
                    runtime,
                    pod: pod.take(),
                })
            }
            Some(Segment::Monitor) => {
                found = Verdict::Monitor;
                pod = None;
            }
            None => {}
        }
        parent = seg;
    }
    found
}

/// `a:b:c` with three non-empty parts.
fn colon_form(seg: &str) -> Option<(&str, &str, &str)> {
    let mut parts = seg.splitn(3, ':');
    let (a, b, c) = (parts.next()?, parts.next()?, parts.next()?);
    (!a.is_empty() && !b.is_empty() && !c.is_empty()).then_some((a, b, c))
}

/// The runtime whose cgroup-name prefix this is (`cri-containerd`, `crio`, `docker`, `libpod`).
fn prefix_runtime(prefix: &str) -> Option<ContainerRuntime> {
    match prefix {
        "cri-containerd" => Some(ContainerRuntime::Containerd),
        "crio" => Some(ContainerRuntime::CriO),
        "docker" => Some(ContainerRuntime::Docker),
        "libpod" => Some(ContainerRuntime::Podman),
        _ => None,
    }
}

fn container_segment(seg: &str, parent: &str) -> Option<Segment> {
    let name = seg.strip_suffix(".scope").unwrap_or(seg);
    // The monitors first: `crio-conmon-<id>` also starts with `crio-`.
    for monitor in ["crio-conmon-", "libpod-conmon-"] {
        if name.strip_prefix(monitor).is_some_and(is_container_id) {
            return Some(Segment::Monitor);
        }
    }
    if let Some((prefix, id)) = name.split_once('-') {
        // `cri-containerd-<id>`: the prefix has a dash of its own.
        let (prefix, id) = match (prefix, id.strip_prefix("containerd-")) {
            ("cri", Some(id)) => ("cri-containerd", id),
            _ => (prefix, id),
        };
        if let Some(rt) = prefix_runtime(prefix).filter(|_| is_container_id(id)) {
            return Some(Segment::Container(id.to_owned(), Some(rt)));
        }
    }
    // A bare id: Docker's cgroupfs driver (`/docker/<id>`), or any runtime under a
    // cgroupfs-driver pod (`/kubepods/burstable/pod<uid>/<id>`).
    is_container_id(name).then(|| {
        let runtime = (parent == "docker").then_some(ContainerRuntime::Docker);
        Segment::Container(name.to_owned(), runtime)
    })
}

/// A systemd-driver pod slice: `[<root>-]kubepods[-burstable|-besteffort]-pod<uid>.slice`
/// (kubelet `cm/cgroup_manager_linux.go`; kind runs kubelet with `--cgroup-root=/kubelet`, so
/// its slices are `kubelet-kubepods-…`, containerd/nri#227).
fn systemd_pod(seg: &str) -> Option<PodRef> {
    let name = seg.strip_suffix(".slice")?;
    let (prefix, uid) = name.rsplit_once("-pod")?;
    let qos = if ends_with_unit(prefix, "kubepods-burstable") {
        Some(QosClass::Burstable)
    } else if ends_with_unit(prefix, "kubepods-besteffort") {
        Some(QosClass::BestEffort)
    } else if ends_with_unit(prefix, "kubepods") {
        Some(QosClass::Guaranteed)
    } else {
        return None;
    };
    let uid = uid.replace('_', "-");
    is_pod_uid(&uid).then_some(PodRef { uid, qos })
}

/// `prefix` is `unit` or ends in `-unit`.
fn ends_with_unit(prefix: &str, unit: &str) -> bool {
    prefix
        .strip_suffix(unit)
        .is_some_and(|rest| rest.is_empty() || rest.ends_with('-'))
}

/// A cgroupfs-driver pod: `pod<uid>` below `kubepods` (Guaranteed), `burstable` or
/// `besteffort`, or below `..` when seen from another cgroup namespace (QoS unknown).
fn cgroupfs_pod(seg: &str, parent: &str) -> Option<PodRef> {
    let uid = seg.strip_prefix("pod")?;
    let qos = match parent {
        "kubepods" => Some(QosClass::Guaranteed),
        "burstable" => Some(QosClass::Burstable),
        "besteffort" => Some(QosClass::BestEffort),
        ".." => None,
        _ => return None,
    };
    is_pod_uid(uid).then(|| PodRef {
        uid: uid.to_owned(),
        qos,
    })
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && is_lower_hex(s)
}

/// A UUID in its 8-4-4-4-12 form, or 32 hex digits (a static pod's manifest hash).
fn is_pod_uid(s: &str) -> bool {
    if s.len() == 32 {
        return is_lower_hex(s);
    }
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && is_lower_hex(g))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod real_cgroup_tests;
