//! The tracker's bookkeeping against real processes and real library files; the attacher
//! records instead of attaching (attaching for real is covered by the eBPF integration tests
//! and the end-to-end suite).

use super::*;
use std::process::{Child, Command, Stdio};

#[derive(Default)]
struct Recorder {
    next: u64,
    attached: Vec<(&'static str, PathBuf, u64)>,
    detached: usize,
    live: HashMap<u64, &'static str>,
}

impl UprobeAttacher for Recorder {
    fn attach(
        &mut self,
        program: &'static str,
        target: &Path,
        off: u64,
    ) -> Result<u64, crate::ebpf::loader::ProbeError> {
        self.next += 1;
        self.attached.push((program, target.to_owned(), off));
        self.live.insert(self.next, program);
        Ok(self.next)
    }

    fn detach(&mut self, link: u64) {
        self.detached += 1;
        assert!(self.live.remove(&link).is_some(), "detached twice");
    }
}

/// A process that has libssl mapped (CPython loads it on `import ssl`) and waits.
fn python_with_ssl() -> Child {
    let mut c = Command::new("python3")
        .args([
            "-c",
            "import ssl, sys; print('ready', flush=True); sys.stdin.read()",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    c
}

fn stop(mut c: Child) -> u32 {
    let pid = c.id();
    drop(c.stdin.take());
    c.wait().unwrap();
    pid
}

#[test]
fn one_attach_per_file_and_detach_after_the_last_process() {
    let tel = Arc::new(Telemetry::new());
    let mut t = TlsTracker::new(tel);
    let mut rec = Recorder::default();
    let a = python_with_ssl();
    let b = python_with_ssl();
    t.scan(a.id(), &mut rec);
    let first = rec.attached.len();
    // libssl.so.3: SSL_read, SSL_write, SSL_read_ex, SSL_write_ex, SSL_do_handshake, each
    // entry + return.
    assert_eq!(first, 10, "{:?}", rec.attached);
    assert!(rec
        .attached
        .iter()
        .all(|(_, p, _)| p.to_string_lossy().contains("libssl")));
    assert_eq!(
        rec.attached
            .iter()
            .filter(|(p, _, _)| *p == "tls_exit_ssl")
            .count(),
        4
    );
    t.scan(b.id(), &mut rec);
    t.scan(a.id(), &mut rec); // again: nothing new
    assert_eq!(rec.attached.len(), first, "the same inode is attached once");
    let report = t.report();
    let mine: Vec<_> = report
        .iter()
        .filter(|r| r.pid == a.id() || r.pid == b.id())
        .collect();
    assert_eq!(mine.len(), 2);
    for r in mine {
        assert_eq!(r.files.len(), 1, "{r:?}");
        assert!(
            matches!(&r.files[0].1, Finding::Traced { library } if library.starts_with("OpenSSL 3")),
            "{r:?}"
        );
    }
    let pa = stop(a);
    t.process_exit(pa);
    assert_eq!(rec.detached, 0, "still used by the other process");
    let pb = stop(b);
    t.process_exit(pb);
    assert_eq!(rec.detached, 0, "probes linger after the last process");
    // A process starting meanwhile finds them attached.
    let c = python_with_ssl();
    t.scan(c.id(), &mut rec);
    assert_eq!(rec.attached.len(), first);
    let pc = stop(c);
    t.process_exit(pc);
    t.detach_idle(Instant::now(), &mut rec);
    assert_eq!(rec.detached, 0, "not idle for long yet");
    t.detach_idle(Instant::now() + LINGER, &mut rec);
    assert_eq!(rec.detached, first);
    assert!(rec.live.is_empty());
    assert_eq!(t.attached_files(), 0);
    // A new process reattaches.
    let d = python_with_ssl();
    t.scan(d.id(), &mut rec);
    assert_eq!(rec.attached.len(), 2 * first);
    let pd = stop(d);
    t.process_exit(pd);
}

#[test]
fn processes_without_tls_cost_one_look() {
    let tel = Arc::new(Telemetry::new());
    let mut t = TlsTracker::new(tel);
    let mut rec = Recorder::default();
    let mut c = Command::new("sleep").arg("30").spawn().unwrap();
    t.scan(c.id(), &mut rec);
    assert!(rec.attached.is_empty());
    assert!(t.report().iter().all(|r| r.pid != c.id()));
    c.kill().unwrap();
    c.wait().unwrap();
    t.process_exit(c.id());
    t.scan(999_999_999, &mut rec); // no such process: nothing happens
}
