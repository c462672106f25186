//! Loads the real eBPF object with traceparent injection on, scoped to a cgroup v2 directory of
//! its own, and drives a real Python client (in that cgroup) against a real Python server
//! (outside it) over 127.0.0.1. Asserts on the bytes the server received and the records the
//! kernel produced:
//! - a request whose head is whole in one write arrives with exactly one well-formed
//!   `traceparent` right after its request line, and otherwise byte for byte as written; the
//!   client's send() returns its own length; the kernel's `InjectEvent` carries the same ids,
//!   the client connection's id and the syscall's entry time (that of its data record);
//! - a body sent with the head (Content-Length) arrives intact after the injected head;
//! - a request that carries a traceparent arrives untouched (counted);
//! - a request whose head is split over two writes arrives untouched (counted);
//! - closed sockets leave the sockhash.
//!
//! Needs root, cgroup v2 and a kernel with sk_msg/sockops, so it is `#[ignore]`d for plain
//! `cargo test`; `cargo xtask test` runs it (as root) with `--include-ignored`.

use agent::ebpf::event::{decode, Event};
use agent::ebpf::inject::{cgroup2_mount, InjectOptions, InjectStatus};
use agent::ebpf::loader::{load, LoadOptions};
use agent_common::{inject_counter, Direction, Role, TRACEPARENT_HEADER_LEN};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Reads every connection to EOF and prints what it got, hex, one line per connection.
const SERVER: &str = r#"
import socket, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(8)
print(srv.getsockname()[1], flush=True)
for _ in range(int(sys.argv[1])):
    c, _ = srv.accept()
    got = b""
    while True:
        b = c.recv(65536)
        if not b:
            break
        got += b
    print(got.hex(), flush=True)
    c.close()
"#;

/// One connection per case; prints what each send() returned. Waits for "go" first, so the
/// test can move it into the cgroup and attach.
const CLIENT: &str = r#"
import socket, sys, time
port = int(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
cases = [
    [b"GET /plain HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n"],
    [b"POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello=world"],
    [b"GET /has HTTP/1.1\r\nHost: a\r\nTraceParent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n"],
    [b"GET /split HTTP/1.1\r\nHost: a\r\nAcc", b"ept: */*\r\n\r\n"],
]
rets = []
for parts in cases:
    s = socket.socket(); s.connect(("127.0.0.1", port))
    for i, p in enumerate(parts):
        rets.append(s.send(p))
        if i + 1 < len(parts):
            time.sleep(0.05)
    s.shutdown(socket.SHUT_WR)
    while s.recv(100):
        pass
    s.close()
print(" ".join(map(str, rets)), flush=True)
"#;

struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
#[ignore = "needs root, cgroup v2 and sk_msg/sockops: cargo xtask test runs it"]
fn injects_whole_heads_only_and_reports_the_ids() {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = cgroup2_mount(&info).expect("a cgroup v2 mount");
    let cg = Cgroup(root.join(format!("agent-inject-test-{}", std::process::id())));
    std::fs::create_dir_all(&cg.0).expect("create a cgroup (needs root)");

    let cases = 4;
    let mut server = Command::new("python3")
        .args(["-c", SERVER, &cases.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut sout = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    sout.read_line(&mut line).unwrap();
    let port: u16 = line.trim().parse().unwrap();

    let mut client = Command::new("python3")
        .args(["-c", CLIENT, &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut cout = BufReader::new(client.stdout.take().unwrap());
    line.clear();
    cout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    std::fs::write(cg.0.join("cgroup.procs"), client.id().to_string()).unwrap();

    let opts = LoadOptions {
        capture_bytes: 1024,
        ring_buffer_bytes: 1 << 20,
        max_connections: 1024,
        trace_all: false,
        include_pids: vec![client.id()],
        exclude_pids: vec![],
        disabled: vec![],
        inject: Some(InjectOptions {
            cgroup: Some(cg.0.clone()),
            root_threshold: 1 << 56,
            parent_based: true,
            secret: 0x5eed,
        }),
    };
    let mut loaded = load(&opts).expect("load eBPF object (needs root)");
    assert_eq!(loaded.injection, InjectStatus::Attached(cg.0.clone()));
    let mut ring = loaded.take_events().unwrap();

    client.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    cout.read_line(&mut line).unwrap();
    let rets: Vec<usize> = line
        .split_whitespace()
        .map(|r| r.parse().unwrap())
        .collect();
    assert!(client.wait().unwrap().success());
    let mut received = Vec::new();
    for _ in 0..cases {
        line.clear();
        sout.read_line(&mut line).unwrap();
        received.push(unhex(line.trim()));
    }
    assert!(server.wait().unwrap().success());

    let sent: [&[&[u8]]; 4] = [
        &[b"GET /plain HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n"],
        &[b"POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello=world"],
        &[b"GET /has HTTP/1.1\r\nHost: a\r\nTraceParent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n"],
        &[b"GET /split HTTP/1.1\r\nHost: a\r\nAcc", b"ept: */*\r\n\r\n"],
    ];
    // The application's own byte counts, whatever the kernel inserted.
    let own: Vec<usize> = sent
        .iter()
        .flat_map(|c| c.iter().map(|p| p.len()))
        .collect();
    assert_eq!(rets, own, "send() must return the application's length");

    // Records: the client's connection opens, injection reports, data records.
    let mut opens = Vec::new();
    let mut injects = Vec::new();
    let mut egress = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && egress.len() < own.len() {
        match ring.next() {
            Some(item) => match decode(&item).expect("well-formed record") {
                Event::ConnOpen(o) => opens.push(o),
                Event::Inject(i) => injects.push((i, egress.len())),
                Event::Data(d, p) if d.header.direction == Direction::Egress as u8 => {
                    egress.push((d, p.to_vec()))
                }
                _ => {}
            },
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    assert_eq!(opens.len(), cases, "{opens:?}");
    assert!(opens.iter().all(|o| o.role == Role::Client as u8));
    assert_eq!(egress.len(), own.len(), "one data record per send");
    // The data records carry what the application wrote, not what the peer received.
    let flat: Vec<&[u8]> = sent.iter().flat_map(|c| c.iter().copied()).collect();
    for ((d, p), want) in egress.iter().zip(&flat) {
        assert_eq!(p.as_slice(), *want);
        assert_eq!(d.orig_len as usize, want.len());
    }

    // Cases 0 and 1 injected, each reported before its data record, for its connection.
    assert_eq!(injects.len(), 2, "{injects:?}");
    for (n, (ev, before)) in injects.iter().enumerate() {
        assert_eq!(*before, n, "report precedes its syscall's data record");
        let (d, _) = &egress[n];
        assert_eq!(ev.header.conn_id, d.header.conn_id);
        assert_eq!(ev.enter_ts_ns, d.enter_ts_ns);
        assert_eq!(ev.header.tid, d.header.tid);
        assert_eq!(ev.injected_len, TRACEPARENT_HEADER_LEN);
        assert_eq!(ev.flags, 1, "root_threshold 1<<56 samples every root");
        let original = flat[n];
        let line_end = original.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        let header = format!(
            "traceparent: 00-{}-{}-01\r\n",
            hex(&ev.trace_id),
            hex(&ev.span_id)
        );
        let mut want = original[..line_end].to_vec();
        want.extend_from_slice(header.as_bytes());
        want.extend_from_slice(&original[line_end..]);
        assert_eq!(
            String::from_utf8_lossy(&received[n]),
            String::from_utf8_lossy(&want),
            "the peer gets exactly the original plus the header after the request line"
        );
        assert_eq!(
            received[n].len(),
            original.len() + TRACEPARENT_HEADER_LEN as usize
        );
        assert_ne!(ev.trace_id, [0; 16]);
        assert_ne!(ev.span_id, [0; 8]);
    }
    assert_ne!(injects[0].0.trace_id, injects[1].0.trace_id, "new roots");
    // Cases 2 and 3 untouched.
    assert_eq!(received[2], flat[2]);
    assert_eq!(received[3], [flat[3], flat[4]].concat());

    // Every connection is closed: the kernel took the sockets out of the sockhash.
    assert_eq!(
        loaded.inject_sockets(),
        0,
        "closed sockets leave INJECT_SOCKS"
    );

    let k = loaded.inject_counters();
    assert_eq!(k[inject_counter::SOCKETS_ADDED as usize], cases as u64);
    assert_eq!(k[inject_counter::INJECTED as usize], 2);
    assert_eq!(k[inject_counter::SKIP_HAS_TRACEPARENT as usize], 1);
    assert_eq!(k[inject_counter::SKIP_HEAD_INCOMPLETE as usize], 1);
    // The split request's second write starts with a header line, not a request line.
    assert_eq!(k[inject_counter::SKIP_NOT_HTTP1 as usize], 1);
}
