//! The kernel side of selection: which cgroups the kernel should skip outright.
//!
//! A workload the rules trace nothing of (`protocols: [none]`) should cost nothing: its
//! connections are not tracked and its bytes never copied. The eBPF programs check the
//! current task's cgroup v2 id (`bpf_get_current_cgroup_id`, which is the inode number of
//! the cgroup's directory) against the `CGROUP_FILTER` map before tracking a connection or
//! copying a read/write. This module decides that map's content: it walks the cgroup v2
//! tree, reads each directory's path the way [`crate::enrich::cgroup`] reads a process's
//! (container id, pod uid), decides it with the [`Selector`] and the pod watch's metadata,
//! and reports the set of directory inodes to mute. `app` applies the difference to the map.
//!
//! Decisions per cgroup and per process agree because both go through [`Selector::decide`]
//! with the same workload (pod, pod not known yet, or host). A pod the watch does not know yet
//! is never muted (nothing to match on); the user-space check catches up once it is known.
//!
//! Bounds: at most [`MAX_DIRS`] directories are looked at per walk, [`MAX_DEPTH`] deep, and
//! at most [`MAX_MUTED`] cgroups are muted (the map's size); beyond that the rest is left to
//! the user-space check, logged once.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{ProtocolSet, Selector, Workload};
use crate::enrich::cgroup;
use crate::enrich::k8s::K8sView;

/// Directories looked at per walk (a node with 110 pods has well under 2,000).
pub const MAX_DIRS: usize = 65_536;
/// Depth of the walk below the cgroup v2 root (kubelet's systemd layout is 4 deep; kind
/// nests a node's tree inside a container's, about 10).
pub const MAX_DEPTH: usize = 16;
/// Cgroups muted at once: the size of the kernel's `CGROUP_FILTER` map.
pub const MAX_MUTED: usize = 16_384;

/// Where cgroup v2 is mounted, from a `/proc/self/mountinfo` text: the first `cgroup2` mount
/// (`/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on hybrid ones).
pub fn v2_root(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        // `id parent maj:min root mountpoint opts [optional...] - fstype source superopts`
        let (pre, post) = l.split_once(" - ")?;
        let fstype = post.split(' ').next()?;
        if fstype != "cgroup2" {
            return None;
        }
        pre.split(' ').nth(4).map(PathBuf::from)
    })
}

/// The cgroup v2 mount point of this machine, if any.
pub fn find_v2_root() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    v2_root(&text)
}

/// What a walk found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Inodes (cgroup ids) to mute.
    pub muted: HashSet<u64>,
    pub dirs: usize,
    /// The walk stopped at [`MAX_DIRS`], or more than [`MAX_MUTED`] were to be muted.
    pub truncated: bool,
}

/// What `selector` traces of processes in the cgroup directory at `rel` (its path below the
/// v2 root, from `/`): read like a process's cgroup path (see [`cgroup::parse`]).
fn decide_dir(rel: &str, selector: &Selector, k8s: Option<&K8sView>) -> ProtocolSet {
    let line = format!("0::{rel}\n");
    match cgroup::parse(line.as_bytes()).and_then(|c| c.pod) {
        Some(p) => match k8s.and_then(|v| v.read(|s| s.get(&p.uid))) {
            Some(pod) => selector.decide(Workload::Pod(&pod)),
            None => selector.decide(Workload::UnknownPod),
        },
        None => selector.decide(Workload::Host),
    }
}

/// Walks the tree under `root` and decides every cgroup with `selector`; pods are looked up
/// in `k8s` (none: every pod counts as not known, so only host rules can mute).
pub fn scan(root: &Path, selector: &Selector, k8s: Option<&K8sView>) -> Scan {
    let mut out = Scan::default();
    let mut stack: Vec<(PathBuf, String, usize)> = vec![(root.to_owned(), "/".to_owned(), 0)];
    while let Some((dir, rel, depth)) = stack.pop() {
        if out.dirs >= MAX_DIRS {
            out.truncated = true;
            break;
        }
        out.dirs += 1;
        let Ok(md) = std::fs::metadata(&dir) else {
            continue; // removed meanwhile
        };
        if decide_dir(&rel, selector, k8s) == ProtocolSet::NONE {
            if out.muted.len() < MAX_MUTED {
                out.muted.insert(md.ino());
            } else {
                out.truncated = true;
            }
        }
        if depth >= MAX_DEPTH {
            continue;
        }
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let name = e.file_name();
                let Some(name) = name.to_str() else {
                    continue; // not a name any runtime or kubelet writes
                };
                let child_rel = if rel == "/" {
                    format!("/{name}")
                } else {
                    format!("{rel}/{name}")
                };
                stack.push((e.path(), child_rel, depth + 1));
            }
        }
    }
    out
}

/// The changes that turn the map's content `current` into `wanted`: (to mute, to unmute).
pub fn diff(current: &HashSet<u64>, wanted: &HashSet<u64>) -> (Vec<u64>, Vec<u64>) {
    (
        wanted.difference(current).copied().collect(),
        current.difference(wanted).copied().collect(),
    )
}

/// How often the cgroup tree is walked when nothing the decisions depend on changed, to pick
/// up new containers' cgroups (their processes are dropped in user space meanwhile: the
/// per-process decision does not wait for this walk).
pub const SCAN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// How often the scanner looks whether the rules or the pods changed (two atomic loads); a
/// change is walked at once, so with the 1 s housekeeping tick that applies the result a rule
/// change is in force in the kernel within about 1.5 s of being read.
pub const CHANGE_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Walks the tree under `root` on its own thread, with the rules in force in `selection`: at
/// once when the rules or the pods' namespaces, labels or owners change, else every
/// [`SCAN_INTERVAL`]; sends each walk whose muted set differs from the last one sent. (A
/// walk of 1,200 kubelet-shaped directories took 26 ms in a debug build here.) The thread
/// ends when the receiver is dropped.
pub fn spawn_scanner(
    root: PathBuf,
    selection: super::SelectionHandle,
    k8s: Option<K8sView>,
) -> std::io::Result<std::sync::mpsc::Receiver<Scan>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Scan>(1);
    std::thread::Builder::new()
        .name("cgroups".into())
        .spawn(move || {
            let mut last: Option<HashSet<u64>> = None;
            let stamp = || (selection.version(), k8s.as_ref().map(K8sView::revision));
            loop {
                let walked_under = stamp();
                let started = std::time::Instant::now();
                let s = scan(&root, &selection.current(), k8s.as_ref());
                tracing::trace!(dirs = s.dirs, muted = s.muted.len(), took = ?started.elapsed(), "cgroup walk");
                if last.as_ref() != Some(&s.muted) {
                    let muted = s.muted.clone();
                    match tx.try_send(s) {
                        Ok(()) => last = Some(muted),
                        Err(std::sync::mpsc::TrySendError::Full(_)) => {
                            // The last result is not applied yet: walk again shortly.
                            std::thread::sleep(CHANGE_POLL);
                            continue;
                        }
                        Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return,
                    }
                }
                let since = std::time::Instant::now();
                while since.elapsed() < SCAN_INTERVAL && stamp() == walked_under {
                    std::thread::sleep(CHANGE_POLL);
                }
            }
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::enrich::k8s::PodMeta;
    use std::time::Instant;

    const UID: &str = "5f2c1a9e-3b7d-4c8e-9a1f-2d6e8b4c0a17";
    const UID2: &str = "6a3d2b0f-4c8e-4d9f-8b2a-3e7f9c5d1b28";
    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const ID2: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

    fn selector(y: &str) -> Selector {
        Selector::compile(&Config::from_yaml(y, "t").unwrap().selection, None).unwrap()
    }

    #[test]
    fn finds_the_cgroup2_mount() {
        let hybrid = "25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw\n\
                      27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(v2_root(hybrid), Some("/sys/fs/cgroup/unified".into()));
        let unified = "30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(v2_root(unified), Some("/sys/fs/cgroup".into()));
        assert_eq!(v2_root("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"), None);
    }

    /// A directory tree shaped like the kubelet's (systemd driver and cgroupfs driver), in a
    /// temporary directory: inodes are real, cgroupfs semantics are not needed to decide.
    #[test]
    fn mutes_the_cgroups_of_workloads_that_trace_nothing() {
        let root = std::env::temp_dir().join(format!("agent-cg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let shop = root.join(format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        ));
        let pay = root.join(format!("kubepods/burstable/pod{UID2}/{ID2}"));
        let host = root.join("system.slice/sshd.service");
        for d in [&shop, &pay, &host] {
            std::fs::create_dir_all(d).unwrap();
        }
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let view = K8sView::new(None, None);
        let mk = |uid: &str, ns: &str| PodMeta {
            uid: uid.into(),
            namespace: ns.into(),
            name: "p".into(),
            ..Default::default()
        };
        let sel = selector("selection: {rules: [{namespaces: [shop], protocols: [none]}]}");
        // Pods not known yet: nothing muted.
        let s = scan(&root, &sel, Some(&view));
        assert!(s.muted.is_empty(), "{s:?}");
        assert!(s.dirs >= 10 && !s.truncated, "{s:?}");
        view.update(|st| {
            st.upsert(mk(UID, "shop"), Instant::now());
            st.upsert(mk(UID2, "payments"), Instant::now())
        });
        let s = scan(&root, &sel, Some(&view));
        assert_eq!(s.muted, HashSet::from([ino(&shop)]));
        // Host rule: every cgroup outside pods, pods' own slices included, but not pods'
        // containers that are traced.
        let sel = selector("selection: {rules: [{host: true, protocols: [none]}]}");
        let s = scan(&root, &sel, Some(&view));
        assert!(s.muted.contains(&ino(&host)) && s.muted.contains(&ino(&root)));
        assert!(!s.muted.contains(&ino(&shop)) && !s.muted.contains(&ino(&pay)));
        // Protocol-level rules leave the kernel alone (user space drops what is not traced).
        let sel = selector("selection: {rules: [{namespaces: ['*'], protocols: [http]}]}");
        assert!(scan(&root, &sel, Some(&view)).muted.is_empty());
        let (add, remove) = diff(&HashSet::from([1, 2]), &HashSet::from([2, 3]));
        assert_eq!((add, remove), (vec![3], vec![1]));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
