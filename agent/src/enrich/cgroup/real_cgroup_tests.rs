//! Real processes in real cgroups: kubelet-shaped cgroup v2 directories are created, a `sleep`
//! is moved in through `cgroup.procs`, and [`read_process`] on the real `/proc` must name its
//! container and pod. Needs root and a writable cgroup v2 mount (`/sys/fs/cgroup/unified` on
//! hybrid hosts like ours, `/sys/fs/cgroup` on v2-only ones). Without them the test prints a
//! SKIP line, or fails when `AGENT_TESTS_REQUIRE_ALL` or `CI` is set.
//!
//! Names are random per run (pod uid, container id), and a lock file serialises the tests that
//! create shared parents (`kubepods.slice`, `kubepods`), so parallel test threads and parallel
//! runs never remove each other's directories. Only directories a test created are removed,
//! deepest first, also when it fails (the guard's `Drop`); a parent that existed before (a real
//! kubelet's) is left alone.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::super::process::read_process;
use super::{ContainerRef, ContainerRuntime, PodRef, QosClass};

fn required() -> bool {
    ["AGENT_TESTS_REQUIRE_ALL", "CI"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// `None` after printing a SKIP (or panicking when every test is required).
fn cgroup2_root_or_skip(test: &str) -> Option<PathBuf> {
    match cgroup2_root() {
        Ok(root) => Some(root),
        Err(why) if required() => {
            panic!("{test}: cannot run ({why}), and AGENT_TESTS_REQUIRE_ALL or CI is set")
        }
        Err(why) => {
            eprintln!("SKIP {test}: {why}");
            None
        }
    }
}

fn cgroup2_root() -> Result<PathBuf, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        return Err(format!(
            "needs root to create cgroups (effective uid {euid})"
        ));
    }
    // mountinfo: `... mount-point ... - fstype source options`.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split(' ').next() == Some("cgroup2")).then(|| left.split(' ').nth(4))?
        })
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists())
        .ok_or_else(|| "no cgroup v2 hierarchy is mounted".to_owned())
}

fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(fastrand::u32(..16), 16).unwrap())
        .collect()
}

fn random_uid() -> String {
    let h = random_hex(32);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Kubelet-shaped directories under a cgroup v2 root, and the process moved into the deepest.
struct CgroupGuard {
    /// Directories this test created, outermost first.
    created: Vec<PathBuf>,
    leaf: PathBuf,
    child: Option<Child>,
    /// Held until the directories are gone (dropped after `Drop::drop` runs).
    _lock: File,
}

impl CgroupGuard {
    fn create(root: &Path, relative: &str) -> io::Result<Self> {
        let lock = File::create(std::env::temp_dir().join("agent-cgroup-tests.lock"))?;
        lock.lock()?;
        let mut guard = Self {
            created: Vec::new(),
            leaf: root.to_owned(),
            child: None,
            _lock: lock,
        };
        for part in relative.split('/') {
            guard.leaf.push(part);
            match std::fs::create_dir(&guard.leaf) {
                Ok(()) => guard.created.push(guard.leaf.clone()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(guard)
    }

    /// Starts `sleep 30` and moves it into the leaf cgroup; returns its pid.
    fn run_sleep(&mut self) -> io::Result<u32> {
        let child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()?;
        let pid = child.id();
        self.child = Some(child);
        std::fs::write(self.leaf.join("cgroup.procs"), pid.to_string())?;
        Ok(pid)
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for dir in self.created.iter().rev() {
            // A cgroup is busy until its last task is reaped; that is immediate after wait(),
            // but give the kernel a moment rather than leave a directory behind.
            let mut result = std::fs::remove_dir(dir);
            for _ in 0..50 {
                if result.is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
                result = std::fs::remove_dir(dir);
            }
            if let Err(e) = result {
                eprintln!("could not remove test cgroup {}: {e}", dir.display());
            }
        }
    }
}

/// Puts a `sleep` into `relative` (under the cgroup v2 root) and checks what `read_process`
/// sees for it.
fn check(test: &str, relative: &str, want: ContainerRef) {
    let Some(root) = cgroup2_root_or_skip(test) else {
        return;
    };
    let mut guard = CgroupGuard::create(&root, relative)
        .unwrap_or_else(|e| panic!("{test}: create {relative} under {}: {e}", root.display()));
    let pid = guard.run_sleep().expect("start sleep in the cgroup");
    let file = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    assert!(
        file.lines().any(|l| l == format!("0::/{relative}")),
        "{test}: the process is not where it was put:\n{file}"
    );
    let info = read_process(Path::new("/proc"), pid).expect("read the real /proc");
    assert_eq!(
        info.container,
        Some(want),
        "{test}: /proc/{pid}/cgroup:\n{file}"
    );
    assert_eq!(info.exe_name, "sleep");
}

#[test]
fn real_process_in_a_systemd_driver_pod_cgroup() {
    let uid = random_uid();
    let id = random_hex(64);
    let uid_ = uid.replace('-', "_");
    check(
        "real_process_in_a_systemd_driver_pod_cgroup",
        &format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{id}.scope"
        ),
        ContainerRef {
            id,
            runtime: Some(ContainerRuntime::Containerd),
            pod: Some(PodRef {
                uid,
                qos: Some(QosClass::Burstable),
            }),
        },
    );
}

#[test]
fn real_process_in_a_cgroupfs_driver_pod_cgroup() {
    let uid = random_uid();
    let id = random_hex(64);
    check(
        "real_process_in_a_cgroupfs_driver_pod_cgroup",
        &format!("kubepods/besteffort/pod{uid}/{id}"),
        ContainerRef {
            id,
            runtime: None,
            pod: Some(PodRef {
                uid,
                qos: Some(QosClass::BestEffort),
            }),
        },
    );
}
