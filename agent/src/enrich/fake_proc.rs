//! Test support: a fake procfs tree in a temporary directory, removed on drop. Only the files
//! [`super::process::read_process`] reads are created (`exe`, `cmdline`, `environ`, `comm`, and
//! `cgroup` when [`FakeProc::set_cgroup`] is called).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) struct FakeProc {
    root: PathBuf,
}

impl FakeProc {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "agent-fake-proc-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create fake proc root");
        Self { root }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Adds (or replaces) process `pid`. `exe: None` leaves `exe` out, as for a process whose
    /// link we may not read. `comm` is derived like the kernel does (15 bytes of the file name).
    pub(crate) fn add(&self, pid: u32, exe: Option<&str>, argv: &[&str], env: &[&str]) {
        let dir = self.root.join(pid.to_string());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let nul_joined = |items: &[&str]| {
            items
                .iter()
                .flat_map(|s| s.bytes().chain([0]))
                .collect::<Vec<u8>>()
        };
        std::fs::write(dir.join("cmdline"), nul_joined(argv)).unwrap();
        std::fs::write(dir.join("environ"), nul_joined(env)).unwrap();
        if let Some(exe) = exe {
            std::os::unix::fs::symlink(exe, dir.join("exe")).unwrap();
        }
        let name = exe.or(argv.first().copied()).unwrap_or("");
        let name = name
            .trim_end_matches(" (deleted)")
            .rsplit('/')
            .next()
            .unwrap_or("");
        let mut end = name.len().min(15);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        self.set_comm(pid, &name[..end]);
    }

    pub(crate) fn set_comm(&self, pid: u32, comm: &str) {
        std::fs::write(
            self.root.join(pid.to_string()).join("comm"),
            format!("{comm}\n"),
        )
        .unwrap();
    }

    /// Writes `/proc/{pid}/cgroup` (absent unless set: the process is then in no container).
    pub(crate) fn set_cgroup(&self, pid: u32, content: &str) {
        std::fs::write(self.root.join(pid.to_string()).join("cgroup"), content).unwrap();
    }

    pub(crate) fn remove(&self, pid: u32) {
        std::fs::remove_dir_all(self.root.join(pid.to_string())).unwrap();
    }
}

impl Drop for FakeProc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
