//! Loads the real eBPF object on the running kernel, drives real TCP on 127.0.0.1 and ::1 from
//! a child process, and asserts the records the kernel produced: connection opens with roles,
//! addresses and fds, every data syscall family with exact lengths and payloads, truncation
//! reported through `orig_len`, sendfile's payload-less bytes, and closes.
//!
//! Needs root and a kernel with BPF syscall tracepoints, so it is `#[ignore]`d for plain
//! `cargo test`; `cargo xtask test` runs it (as root) with `--include-ignored`.

use agent::ebpf::event::{decode, Event};
use agent::ebpf::loader::{load, LoadOptions};
use agent_common::{Direction, Role, Syscall};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The child: a server and a client in one Python process, each step using a different syscall
/// family. It prints the ports and waits for "go" so the agent can attach first.
const CHILD: &str = r#"
import os, socket, sys, tempfile, threading
fam = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
host = "::1" if fam == socket.AF_INET6 else "127.0.0.1"
srv = socket.socket(fam, socket.SOCK_STREAM); srv.bind((host, 0)); srv.listen(1)
port = srv.getsockname()[1]
blob = tempfile.NamedTemporaryFile(delete=False); blob.write(b"F" * 3000); blob.close()
def serve():
    c, _ = srv.accept()
    req = b""
    while len(req) < 11:
        req += c.recv(100)                      # recvfrom
    c.sendmsg([b"resp-", b"one"])               # sendmsg, 2 iovecs
    n = 0
    while n < 20000:
        n += len(os.read(c.fileno(), 65536))    # read
    with open(blob.name, "rb") as f:
        os.sendfile(c.fileno(), f.fileno(), 0, 3000)   # sendfile
    c.close()
t = threading.Thread(target=serve); t.start()
print(port, os.getpid(), flush=True)
sys.stdin.readline()
cl = socket.socket(fam, socket.SOCK_STREAM); cl.connect((host, port))
print(cl.getsockname()[1], cl.fileno(), flush=True)
cl.sendall(b"hello-world")                      # sendto
buf = bytearray(8); got = 0
while got < 8:
    got += cl.recv_into(memoryview(buf)[got:])  # recvfrom
os.writev(cl.fileno(), [b"A" * 10000, b"B" * 10000])   # writev, 20000 bytes > capture
n = 0
while n < 3000:
    n += len(cl.recv(65536))
t.join(); cl.close(); os.unlink(blob.name)
print("done", flush=True)
"#;

/// A Python child running `script`, its stdin and stdout piped.
fn spawn_python(script: &str) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let out = BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

/// Loads the object tracing only `pid`, capturing at most 1024 bytes per syscall.
fn load_tracing_only(pid: u32) -> agent::ebpf::loader::Loaded {
    load_with_ring(pid, 1 << 20)
}

/// [`load_tracing_only`] with a ring buffer of `ring_buffer_bytes`.
fn load_with_ring(pid: u32, ring_buffer_bytes: u32) -> agent::ebpf::loader::Loaded {
    let opts = LoadOptions {
        capture_bytes: 1024,
        ring_buffer_bytes,
        max_connections: 1024,
        trace_all: false,
        include_pids: vec![pid],
        exclude_pids: vec![],
        disabled: vec![],
        inject: None,
    };
    load(&opts).expect("load eBPF object (needs root)")
}

fn run_case(family: &str) {
    let mut child = Command::new("python3")
        .args(["-c", CHILD, family])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let mut it = line.split_whitespace();
    let server_port: u16 = it.next().unwrap().parse().unwrap();
    let pid: u32 = it.next().unwrap().parse().unwrap();

    let mut loaded = load_tracing_only(pid);
    let mut ring = loaded.take_events().unwrap();

    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let mut it = line.split_whitespace();
    let client_port: u16 = it.next().unwrap().parse().unwrap();
    let client_fd: u32 = it.next().unwrap().parse().unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "done");
    assert!(child.wait().unwrap().success());

    // Collect until both connections closed (or time out).
    let mut opens = Vec::new();
    let mut data = Vec::new();
    let mut closes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while closes.len() < 2 && Instant::now() < deadline {
        match ring.next() {
            Some(item) => match decode(&item).expect("well-formed record") {
                Event::ConnOpen(o) => opens.push(o),
                Event::ConnClose(c) => closes.push(c),
                Event::Data(d, p) => data.push((d, p.to_vec())),
                Event::ProcExit(_) | Event::ProcExec(_) | Event::Inject(_) | Event::GoSpawn(_) => {}
            },
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    assert_eq!(opens.len(), 2, "one client and one server open: {opens:?}");
    let client = opens
        .iter()
        .find(|o| o.role == Role::Client as u8)
        .expect("client open");
    let server = opens
        .iter()
        .find(|o| o.role == Role::Server as u8)
        .expect("server open");
    assert_eq!(client.header.pid, pid);
    assert_eq!(client.fd, client_fd);
    assert_eq!(
        (client.local.port, client.remote.port),
        (client_port, server_port)
    );
    assert_eq!(
        (server.local.port, server.remote.port),
        (server_port, client_port)
    );
    assert_eq!(client.local.addr, server.remote.addr);
    assert_eq!(client.family, if family == "6" { 10 } else { 2 });
    assert_ne!(client.header.conn_id, server.header.conn_id);
    // The kernel names the process (for when it exits before /proc can be read).
    assert!(client.comm.starts_with(b"python3"), "{:?}", client.comm);

    let on = |id: u64, dir: Direction| -> Vec<&(agent_common::DataEvent, Vec<u8>)> {
        data.iter()
            .filter(|(d, _)| d.header.conn_id == id && d.header.direction == dir as u8)
            .collect()
    };
    let (c, s) = (client.header.conn_id, server.header.conn_id);
    let c_out = on(c, Direction::Egress);
    let s_in = on(s, Direction::Ingress);
    let s_out = on(s, Direction::Egress);
    let c_in = on(c, Direction::Ingress);

    // Client request: sendto, captured whole.
    assert_eq!(c_out[0].0.syscall, Syscall::SendTo as u8);
    assert_eq!(c_out[0].1, b"hello-world");
    assert!(c_out[0].0.enter_ts_ns <= c_out[0].0.header.ts_ns);
    // writev of 20000 bytes: capture cut to 1024, real length reported.
    let wv = c_out
        .iter()
        .find(|(d, _)| d.syscall == Syscall::Writev as u8)
        .expect("writev record");
    assert_eq!((wv.0.len, wv.0.orig_len), (1024, 20000));
    assert!(wv.1.iter().all(|&b| b == b'A'));
    // Server side sees the same bytes in order: recvfrom of the request, then reads of 20000.
    let s_in_bytes: Vec<u8> = s_in
        .iter()
        .flat_map(|(_, p)| p.iter().copied())
        .take(11)
        .collect();
    assert_eq!(s_in_bytes, b"hello-world");
    assert_eq!(s_in[0].0.syscall, Syscall::RecvFrom as u8);
    let read_total: u64 = s_in
        .iter()
        .filter(|(d, _)| d.syscall == Syscall::Read as u8)
        .map(|(d, _)| d.orig_len as u64)
        .sum();
    assert_eq!(read_total, 20000);
    // Server response: sendmsg with two iovecs gathered into one payload; then sendfile.
    assert_eq!(s_out[0].0.syscall, Syscall::SendMsg as u8);
    assert_eq!(s_out[0].1, b"resp-one");
    let sf = s_out
        .iter()
        .find(|(d, _)| d.syscall == Syscall::SendFile as u8)
        .expect("sendfile record");
    assert_eq!((sf.0.len, sf.0.orig_len), (0, 3000));
    // Client receives 8 + 3000 bytes in total.
    let c_in_total: u64 = c_in.iter().map(|(d, _)| d.orig_len as u64).sum();
    assert_eq!(c_in_total, 3008);
    // Records of one thread arrive in syscall order.
    assert!(c_out
        .windows(2)
        .all(|w| w[0].0.header.ts_ns <= w[1].0.header.ts_ns));
    // Both closes, with the fds and ids of the opens.
    assert!(closes
        .iter()
        .any(|x| x.header.conn_id == c && x.fd == client_fd));
    assert!(closes.iter().any(|x| x.header.conn_id == s));
    // Nothing from other processes (the filter is in the kernel).
    assert!(data.iter().all(|(d, _)| d.header.pid == pid));
    let k = loaded.kernel_counters();
    assert!(k[agent_common::counter::TRUNCATED as usize] >= 1, "{k:?}");
}

#[test]
#[ignore = "needs root and a kernel with BPF syscall tracepoints; run by `cargo xtask test`"]
fn captures_ipv4_loopback_tcp() {
    run_case("4");
}

#[test]
#[ignore = "needs root and a kernel with BPF syscall tracepoints; run by `cargo xtask test`"]
fn captures_ipv6_loopback_tcp() {
    run_case("6");
}

/// A muted connection (user space parses nothing on it) costs no payload copies any more, but
/// its close is still reported; other connections are unaffected.
#[test]
#[ignore = "needs root and a kernel with BPF syscall tracepoints; run by `cargo xtask test`"]
fn muted_connection_stops_payload_but_not_close() {
    const MUTE_CHILD: &str = r#"
import socket, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
sys.stdin.readline()
cl = socket.socket(); cl.connect(("127.0.0.1", srv.getsockname()[1])); c, _ = srv.accept()
print(cl.fileno(), flush=True)
cl.sendall(b"before-mute"); c.recv(100)
sys.stdin.readline()
cl.sendall(b"after-mute"); c.recv(100)
cl.close(); c.close()
print("done", flush=True)
"#;
    let (mut child, mut out) = spawn_python(MUTE_CHILD);
    let pid = child.id();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let mut loaded = load_tracing_only(pid);
    let mut ring = loaded.take_events().unwrap();
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let client_fd: u32 = line.trim().parse().unwrap();

    let mut seen = Seen::default();
    seen.drain(&mut ring, client_fd, |s| {
        s.payloads.iter().any(|(_, b)| b == b"before-mute")
    });
    let conn = seen.client_conn.expect("client connection opened");
    assert!(seen
        .payloads
        .iter()
        .any(|(c, b)| *c == conn && b == b"before-mute"));
    assert!(
        loaded.set_connection_flag(pid, client_fd, agent_common::conn_flags::MUTED),
        "the kernel tracks the connection"
    );
    stdin.write_all(b"go\n").unwrap();
    seen.drain(&mut ring, client_fd, |s| s.closed.len() >= 2);
    let (payloads, closed) = (&seen.payloads, &seen.closed);
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "done");
    assert!(child.wait().unwrap().success());
    // The client's second write was not copied; the server's read of it (another connection) was.
    assert!(
        !payloads
            .iter()
            .any(|(c, b)| *c == conn && b == b"after-mute"),
        "muted payload captured"
    );
    assert!(
        payloads
            .iter()
            .any(|(c, b)| *c != conn && b == b"after-mute"),
        "other side unaffected"
    );
    assert!(closed.contains(&conn), "close still reported");
    assert!(
        !loaded.set_connection_flag(pid, client_fd, agent_common::conn_flags::MUTED),
        "closed connections are gone from the kernel table"
    );
}

/// What the mute test collects from the ring.
#[derive(Default)]
struct Seen {
    payloads: Vec<(u64, Vec<u8>)>,
    closed: Vec<u64>,
    client_conn: Option<u64>,
}

impl Seen {
    fn drain(
        &mut self,
        ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
        client_fd: u32,
        until: impl Fn(&Seen) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !until(self) && Instant::now() < deadline {
            match ring.next() {
                Some(item) => match decode(&item).expect("well-formed record") {
                    Event::ConnOpen(o) if o.fd == client_fd && o.role == Role::Client as u8 => {
                        self.client_conn = Some(o.header.conn_id)
                    }
                    Event::Data(d, p) => self.payloads.push((d.header.conn_id, p.to_vec())),
                    Event::ConnClose(c) => self.closed.push(c.header.conn_id),
                    _ => {}
                },
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

/// OpenSSL plaintext through the uprobes: a Python process (CPython's ssl module calls
/// SSL_do_handshake, SSL_read_ex and SSL_write_ex in libssl.so.3) runs a TLS server and
/// client. The plaintext both sides moved arrives as TlsWrite/TlsRead records of the right
/// connections, whole and in order; no SSL call was left without its socket.
///
/// And the ciphertext is not copied. What the kernel promises (agent-common `conn_flags::RAW_OFF`,
/// agent-ebpf `io::try_enter`, `tls::note_socket_io`): the first read/write-family syscall a
/// thread makes on a socket while inside an SSL call (the handshake included) sets RAW_OFF on
/// the connection, and from that syscall on nothing its syscalls move is copied. So the raw
/// records of a TLS connection are exactly the bytes it moved before its first SSL call. To
/// make that observable the two sides first exchange a cleartext preamble on the plain socket
/// (`STARTTLS\r\n`, `GO\r\n`, like SMTP's or PostgreSQL's upgrade to TLS), then wrap it:
/// each connection's raw records must be exactly its preamble, each direction, and all of them
/// must come before its first TLS record. The preamble also shows raw capture was on for these
/// very connections, so the absence of handshake and record ciphertext is RAW_OFF's doing.
#[test]
#[ignore = "needs root and a kernel with BPF syscall tracepoints and uprobes; run by `cargo xtask test`"]
fn captures_openssl_plaintext_and_not_its_ciphertext() {
    const TLS_CHILD: &str = r#"
import os, socket, ssl, subprocess, sys, tempfile, threading
d = tempfile.mkdtemp()
subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                "-keyout", d + "/k.pem", "-out", d + "/c.pem", "-subj", "/CN=localhost",
                "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); sctx.load_cert_chain(d + "/c.pem", d + "/k.pem")
cctx = ssl.create_default_context(cafile=d + "/c.pem")
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
sys.stdin.readline()
def exact(sock, n):
    got = b""
    while len(got) < n:
        got += sock.recv(n - len(got))          # never past the preamble
    return got
def serve():
    c, _ = srv.accept()
    assert exact(c, 10) == b"STARTTLS\r\n"
    c.sendall(b"GO\r\n")
    s = sctx.wrap_socket(c, server_side=True)
    req = b""
    while not req.endswith(b"\r\n\r\n"):
        req += s.recv(4096)
    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
    s.recv(10); s.close()
t = threading.Thread(target=serve); t.start()
raw = socket.create_connection(("127.0.0.1", srv.getsockname()[1]))
raw.sendall(b"STARTTLS\r\n")
assert exact(raw, 4) == b"GO\r\n"
cl = cctx.wrap_socket(raw, server_hostname="127.0.0.1")
print(cl.fileno(), flush=True)
cl.sendall(b"GET /private HTTP/1.1\r\nHost: x\r\n\r\n")
got = b""
while not got.endswith(b"secret"):
    got += cl.recv(4096)
cl.close(); t.join()
print("done", flush=True)
"#;
    let mut child = Command::new("python3")
        .args(["-c", TLS_CHILD])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let mut loaded = load_tracing_only(pid);
    let telemetry = std::sync::Arc::new(agent::telemetry::Telemetry::new());
    let tls =
        agent::tls::start(&mut loaded, &[], |p| p == pid, telemetry).expect("TLS probes load");
    assert!(
        tls.report().iter().any(|r| r.pid == pid
            && matches!(
                r.files.first(),
                Some((_, agent::tls::Finding::Traced { .. }))
            )),
        "libssl found and traced in the child: {:?}",
        tls.report()
    );
    let mut ring = loaded.take_events().unwrap();
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let client_fd: u32 = line.trim().parse().unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "done");
    assert!(child.wait().unwrap().success());

    let mut data: Vec<(agent_common::DataEvent, Vec<u8>)> = Vec::new();
    let mut client_conn = None;
    let mut opens = Vec::new();
    let mut closes = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while closes < 2 && Instant::now() < deadline {
        match ring.next() {
            Some(item) => match decode(&item).expect("well-formed record") {
                Event::ConnOpen(o) => {
                    if o.fd == client_fd && o.role == Role::Client as u8 {
                        client_conn = Some(o.header.conn_id);
                    }
                    opens.push(o);
                }
                Event::Data(d, p) => data.push((d, p.to_vec())),
                Event::ConnClose(_) => closes += 1,
                _ => {}
            },
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    let client_conn = client_conn.expect("client connection opened");
    let plain = |dir: Syscall, client: bool| -> Vec<u8> {
        data.iter()
            .filter(|(d, _)| d.syscall == dir as u8 && (d.header.conn_id == client_conn) == client)
            .flat_map(|(_, p)| p.iter().copied())
            .collect()
    };
    let request = b"GET /private HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret".to_vec();
    assert_eq!(plain(Syscall::TlsWrite, true), request);
    assert_eq!(plain(Syscall::TlsRead, false), request);
    assert_eq!(plain(Syscall::TlsWrite, false), response);
    assert_eq!(plain(Syscall::TlsRead, true), response);
    // Raw (syscall) records: per connection and direction exactly the cleartext preamble,
    // every one of them before the connection's first TLS record; nothing after the first SSL
    // call used the socket (handshake and record ciphertext alike).
    assert_eq!(
        opens.len(),
        2,
        "the client and the server connection: {opens:?}"
    );
    let server_conn = opens
        .iter()
        .find(|o| o.role == Role::Server as u8)
        .expect("server open")
        .header
        .conn_id;
    for (conn, out, inp) in [
        (client_conn, &b"STARTTLS\r\n"[..], &b"GO\r\n"[..]),
        (server_conn, &b"GO\r\n"[..], &b"STARTTLS\r\n"[..]),
    ] {
        let raw = |dir: Direction| -> (Vec<u8>, u64) {
            let recs: Vec<_> = data
                .iter()
                .filter(|(d, _)| {
                    d.header.conn_id == conn
                        && d.header.direction == dir as u8
                        && !Syscall::is_tls(d.syscall)
                })
                .collect();
            (
                recs.iter().flat_map(|(_, p)| p.iter().copied()).collect(),
                recs.iter().map(|(d, _)| u64::from(d.orig_len)).sum(),
            )
        };
        for (dir, want) in [(Direction::Egress, out), (Direction::Ingress, inp)] {
            let (bytes, moved) = raw(dir);
            assert_eq!(
                (bytes.as_slice(), moved),
                (want, want.len() as u64),
                "raw records of conn {conn} ({dir:?}): only the preamble, nothing after the \
                 first SSL call used the socket"
            );
        }
        let first_tls = data
            .iter()
            .filter(|(d, _)| d.header.conn_id == conn && Syscall::is_tls(d.syscall))
            .map(|(d, _)| d.enter_ts_ns)
            .min()
            .expect("TLS records on the connection");
        assert!(
            data.iter()
                .filter(|(d, _)| d.header.conn_id == conn && !Syscall::is_tls(d.syscall))
                .all(|(d, _)| d.header.ts_ns < first_tls),
            "a raw record of conn {conn} after its first TLS record"
        );
    }
    let k = loaded.kernel_counters();
    assert_eq!(k[agent_common::counter::TLS_UNMAPPED as usize], 0, "{k:?}");
}

/// The selection rules' kernel filter: once a process's cgroup v2 id is in `CGROUP_FILTER`,
/// its reads and writes on a connection tracked before are not copied and its new connections
/// are not tracked at all, each counted; unmuted, capture resumes.
#[test]
#[ignore = "needs root, cgroup v2 and BPF syscall tracepoints; run by `cargo xtask test`"]
fn muted_cgroup_is_neither_tracked_nor_copied() {
    use agent_common::counter;
    use std::os::unix::fs::MetadataExt;
    const CHILD: &str = r#"
import socket, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(8)
print(srv.getsockname()[1], flush=True)
sys.stdin.readline()
cl = socket.socket(); cl.connect(("127.0.0.1", srv.getsockname()[1])); c, _ = srv.accept()
cl.sendall(b"before-mute"); c.recv(100)
print("1", flush=True); sys.stdin.readline()
cl.sendall(b"muted-old"); c.recv(100)
cl2 = socket.socket(); cl2.connect(("127.0.0.1", srv.getsockname()[1])); c2, _ = srv.accept()
cl2.sendall(b"muted-new"); c2.recv(100)
print(cl2.fileno(), flush=True); sys.stdin.readline()
cl.sendall(b"after-unmute"); c.recv(100)
print("done", flush=True)
"#;
    let root = agent::selection::cgroups::find_v2_root().expect("a cgroup v2 mount");
    let dir = root.join(format!("agent-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a cgroup (needs root)");
    let cgroup_id = std::fs::metadata(&dir).unwrap().ino();
    let mut child = Command::new("python3")
        .args(["-c", CHILD])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let pid = child.id();
    std::fs::write(dir.join("cgroup.procs"), pid.to_string()).expect("move the child");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let mut loaded = load_tracing_only(pid);
    let mut ring = loaded.take_events().unwrap();
    let stdin = child.stdin.as_mut().unwrap();
    let mut step = |stdin: &mut std::process::ChildStdin, line: &mut String| {
        stdin.write_all(b"go\n").unwrap();
        line.clear();
        out.read_line(line).unwrap();
    };
    step(stdin, &mut line);
    let mut seen = Seen::default();
    seen.drain(&mut ring, u32::MAX, |s| {
        s.payloads.iter().any(|(_, b)| b == b"before-mute")
    });
    let before = loaded.kernel_counters();
    assert!(loaded.set_cgroup_muted(cgroup_id, true));
    step(stdin, &mut line);
    let new_fd: u32 = line.trim().parse().unwrap();
    assert!(loaded.set_cgroup_muted(cgroup_id, false));
    step(stdin, &mut line);
    assert_eq!(line.trim(), "done");
    seen.drain(&mut ring, new_fd, |s| {
        s.payloads.iter().any(|(_, b)| b == b"after-unmute")
    });
    let after = loaded.kernel_counters();
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_dir(&dir);
    let muted: Vec<_> = seen
        .payloads
        .iter()
        .filter(|(_, b)| b.starts_with(b"muted"))
        .collect();
    assert!(muted.is_empty(), "muted bytes copied: {muted:?}");
    assert!(seen.client_conn.is_none(), "the new connection was tracked");
    assert!(
        seen.payloads.iter().any(|(_, b)| b == b"after-unmute"),
        "capture resumes"
    );
    let d = |i: u32| after[i as usize] - before[i as usize];
    // Two syscalls on each side of the old connection; connect and accept of the new one.
    assert!(d(counter::CGROUP_IO_SKIPPED) >= 2, "{after:?}");
    assert_eq!(d(counter::CGROUP_CONNS_SKIPPED), 2, "{after:?}");
}

/// A Go service that handles /req/<rid> by GETting /down/<rid> from a downstream in the same
/// process, driven by 8 concurrent requests from its own client: stdlib only.
const GO_FANOUT: &str = r#"package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

func serve(h http.HandlerFunc) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go http.Serve(ln, h)
	return ln.Addr().String()
}

func get(c *http.Client, url string) {
	resp, err := c.Get(url)
	if err != nil {
		panic(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

func main() {
	down := serve(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		w.Write([]byte("ok"))
	})
	front := serve(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(30 * time.Millisecond)
		get(http.DefaultClient, "http://"+down+"/down/"+strings.TrimPrefix(r.URL.Path, "/req/"))
		w.Write([]byte("done"))
	})
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n')
	driver := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			get(driver, fmt.Sprintf("http://%s/req/r%d", front, i))
		}(i)
	}
	wg.Wait()
	fmt.Println("done")
}
"#;

/// Builds [`GO_FANOUT`] with the system Go toolchain (offline, stdlib only).
fn build_go_fanout() -> Option<std::path::PathBuf> {
    let go = std::path::Path::new("/usr/bin/go");
    if !go.exists() {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("agent-goctx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("go.mod"), "module x\n\ngo 1.19\n").unwrap();
    std::fs::write(dir.join("main.go"), GO_FANOUT).unwrap();
    let out = dir.join("fanout");
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    let st = Command::new(go)
        .current_dir(&dir)
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTELEMETRY", "off")
        .env("CGO_ENABLED", "0")
        .env("HOME", home)
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .status()
        .expect("go build");
    assert!(st.success(), "go build of the fan-out program");
    Some(out)
}

/// Go goroutines in data records (agent-ebpf's `goctx`): with 8 requests in flight, the
/// record that carried each `GET /req/<rid>` into the service and the one that carried its
/// downstream `GET /down/<rid>` out name the same goroutine — the handler's, although the
/// write was made by the Transport's writeLoop goroutine — and no two requests share one.
#[test]
#[ignore = "needs root, BPF tracepoints and uprobes, and the Go toolchain; run by `cargo xtask test`"]
fn go_records_name_the_requests_goroutine() {
    let Some(bin) = build_go_fanout() else {
        eprintln!("SKIPPED: /usr/bin/go missing (apt-get install golang-go)");
        return;
    };
    let mut child = Command::new(&bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("fan-out program");
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let mut loaded = load_tracing_only(pid);
    let telemetry = std::sync::Arc::new(agent::telemetry::Telemetry::new());
    let tls = agent::tls::start(&mut loaded, &[], |p| p == pid, telemetry).expect("uprobes load");
    let mut ring = loaded.take_events().unwrap();
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "done");
    let _ = child.kill();
    let _ = child.wait();

    let mut data: Vec<(agent_common::DataEvent, Vec<u8>)> = Vec::new();
    let mut roles = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match ring.next() {
            Some(item) => match decode(&item).expect("well-formed record") {
                Event::ConnOpen(o) => {
                    roles.insert(o.header.conn_id, o.role);
                }
                Event::Data(d, p) => data.push((d, p.to_vec())),
                _ => {}
            },
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    let k = loaded.kernel_counters();
    let _ = std::fs::remove_dir_all(bin.parent().unwrap());
    // The goroutine of the record that carried `head` the way `dir` on a `role` connection.
    let goroutine = |head: &str, dir: Direction, role: Role| -> u64 {
        let hits: Vec<u64> = data
            .iter()
            .filter(|(d, p)| {
                d.header.direction == dir as u8
                    && roles.get(&d.header.conn_id) == Some(&(role as u8))
                    && p.starts_with(head.as_bytes())
            })
            .map(|(d, _)| d.goroutine)
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "one record carries {head:?} ({dir:?}, {role:?})"
        );
        hits[0]
    };
    let mut seen = std::collections::HashSet::new();
    for i in 0..8 {
        let served = goroutine(&format!("GET /req/r{i} "), Direction::Ingress, Role::Server);
        let called = goroutine(&format!("GET /down/r{i} "), Direction::Egress, Role::Client);
        assert_ne!(served, 0, "r{i}: the serving goroutine is known");
        assert_eq!(
            called,
            served,
            "r{i}: the downstream call is attributed to the goroutine that handles the request \
             (counters {k:?}, report {:?})",
            tls.report()
        );
        assert!(seen.insert(served), "r{i}: a goroutine of its own");
    }
    assert!(
        k[agent_common::counter::GO_WRITE_VIA_TRANSPORT as usize] >= 16,
        "writeLoop writes resolved through roundTrip: {k:?}"
    );
}

/// A full ring buffer (nobody drains it during a burst): records that do not fit are lost and
/// counted, and the next record of each connection that lost some carries `GAP_BEFORE` —
/// exactly those, checked against the sequence numbers the client wrote; a connection whose
/// last records were lost says so in its close.
#[test]
#[ignore = "needs root and a kernel with BPF syscall tracepoints; run by `cargo xtask test`"]
fn full_ring_marks_the_next_record_of_each_connection_that_lost_one() {
    const GAP_CHILD: &str = r#"
import socket, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(2)
print(srv.getsockname()[1], flush=True)
sys.stdin.readline()
cl = socket.socket(); cl.connect(("127.0.0.1", srv.getsockname()[1])); c, _ = srv.accept()
cl2 = socket.socket(); cl2.connect(("127.0.0.1", srv.getsockname()[1])); c2, _ = srv.accept()
print(cl.fileno(), cl2.fileno(), flush=True)
for i in range(200):
    cl.sendall(b"%06d" % i + b"x" * 994)
    got = 0
    while got < 1000:
        got += len(c.recv(1000 - got))
for i in range(10):
    cl2.sendall(b"y" * 1000); c2.recv(1000)
print("burst done", flush=True)
sys.stdin.readline()
c.sendall(b"after"); cl.recv(5)
cl2.close(); c2.close(); cl.close(); c.close()
print("done", flush=True)
"#;
    let (mut child, mut out) = spawn_python(GAP_CHILD);
    let pid = child.id();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let mut loaded = load_with_ring(pid, 65536); // the smallest the config allows
    let mut ring = loaded.take_events().unwrap();
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let fds: Vec<u32> = line
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "burst done");
    let full = loaded.kernel_counters()[agent_common::counter::RINGBUF_FULL as usize];
    assert!(full > 0, "200 KB of records did not overflow a 64 KiB ring");
    // Drain what fitted, then let the child finish.
    let mut events: Vec<(u8, u64, u8, Vec<u8>, u32)> = Vec::new(); // kind, conn, flags, payload, fd
    let take = |ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
                events: &mut Vec<(u8, u64, u8, Vec<u8>, u32)>| {
        while let Some(item) = ring.next() {
            match decode(&item).expect("well-formed record") {
                Event::ConnOpen(o) => events.push((1, o.header.conn_id, 0, Vec::new(), o.fd)),
                Event::ConnClose(c) => {
                    events.push((2, c.header.conn_id, c.flags, Vec::new(), c.fd))
                }
                Event::Data(d, p) => events.push((
                    3 + d.header.direction,
                    d.header.conn_id,
                    d.flags,
                    p.to_vec(),
                    d.fd,
                )),
                _ => {}
            }
        }
    };
    take(&mut ring, &mut events);
    stdin.write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "done");
    assert!(child.wait().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while events.iter().filter(|e| e.0 == 2).count() < 4 && Instant::now() < deadline {
        take(&mut ring, &mut events);
        std::thread::sleep(Duration::from_millis(10));
    }
    let conn_of = |fd: u32| {
        events
            .iter()
            .find(|e| e.0 == 1 && e.4 == fd)
            .map(|e| e.1)
            .expect("client open delivered (before the burst)")
    };
    let (cl, cl2) = (conn_of(fds[0]), conn_of(fds[1]));
    let egress = 3 + Direction::Egress as u8;
    let ingress = 3 + Direction::Ingress as u8;
    let gap = agent_common::data_flags::GAP_BEFORE;
    // The client's writes, in order: a record carries the mark exactly when a write of the
    // connection before it (since the previous delivered record) was lost.
    let mut prev: Option<u32> = None;
    let mut lost_writes = 0;
    for (_, _, flags, p, _) in events.iter().filter(|e| e.1 == cl && e.0 == egress) {
        let seq: u32 = std::str::from_utf8(&p[..6]).unwrap().parse().unwrap();
        let expect_gap = seq != prev.map_or(0, |s| s + 1);
        assert_eq!(flags & gap != 0, expect_gap, "write {seq} after {prev:?}");
        lost_writes += seq - prev.map_or(0, |s| s + 1);
        prev = Some(seq);
    }
    // The burst ended with the ring full, so its last writes were lost: the first record of
    // the connection after the drain (the client's read of "after") carries the mark.
    assert!(
        prev.is_some_and(|s| s < 199),
        "last write delivered: {prev:?}"
    );
    let after = events
        .iter()
        .find(|e| e.1 == cl && e.0 == ingress && e.3 == b"after")
        .expect("the client's read after the drain");
    assert_eq!(after.2 & gap, gap, "{lost_writes} writes lost before it");
    // The second client's writes came when the ring was full: all lost; its close says so.
    let cl2_close = events
        .iter()
        .find(|e| e.1 == cl2 && e.0 == 2)
        .expect("close of the second client");
    assert_eq!(cl2_close.2 & gap, gap, "close after lost records");
    // The first client's close came after a delivered record: unmarked.
    let cl_close = events
        .iter()
        .find(|e| e.1 == cl && e.0 == 2)
        .expect("close");
    assert_eq!(cl_close.2 & gap, 0);
}
