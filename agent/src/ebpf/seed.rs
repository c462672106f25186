//! Connections that existed before the agent started, found in procfs.
//!
//! The kernel programs only learn about connections at connect/accept. Long-lived keep-alive
//! connections (connection pools, proxies) opened earlier would stay invisible, so at start-up
//! we walk /proc/<pid>/fd for sockets, look their inodes up in the owning network namespace's
//! TCP table (/proc/<pid>/net/tcp{,6}, read once per namespace) and register every ESTABLISHED
//! one with the kernel and the connection table. The role is inferred: a socket whose local
//! port is a listening port of its namespace was accepted (server), otherwise it was connected
//! (client).

use agent_common::{ConnInfo, Direction, IoArgs, Role, SockAddr, Syscall, USER_CONN_ID_BIT};
use procfs::net::{TcpNetEntry, TcpState};
use procfs::process::FDTarget;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

/// A pre-existing connection, already added to the kernel's table.
#[derive(Clone, Debug)]
pub struct SeededConn {
    pub pid: u32,
    pub fd: u32,
    pub conn_id: u64,
    pub role: Role,
    pub local: SockAddr,
    pub remote: SockAddr,
    /// /proc/<pid>/comm, NUL-padded like the kernel's.
    pub comm: [u8; 16],
}

fn comm_of(pid: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    if let Ok(c) = std::fs::read(format!("/proc/{pid}/comm")) {
        let c = c.strip_suffix(b"\n").unwrap_or(&c);
        let n = c.len().min(15);
        out[..n].copy_from_slice(&c[..n]);
    }
    out
}

/// Converts a std socket address to the wire form (IPv4 mapped into IPv6).
pub fn sock_addr(a: &SocketAddr) -> SockAddr {
    let addr = match a.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    SockAddr {
        addr,
        port: a.port(),
        _pad: [0; 6],
    }
}

struct NetnsTable {
    by_inode: HashMap<u64, TcpNetEntry>,
    listening_ports: HashSet<u16>,
}

fn netns_table(proc: &procfs::process::Process) -> Option<NetnsTable> {
    let mut entries = proc.tcp().ok()?;
    entries.extend(proc.tcp6().unwrap_or_default());
    let listening_ports = entries
        .iter()
        .filter(|e| e.state == TcpState::Listen)
        .map(|e| e.local_address.port())
        .collect();
    let by_inode = entries
        .into_iter()
        .filter(|e| e.state == TcpState::Established)
        .map(|e| (e.inode, e))
        .collect();
    Some(NetnsTable {
        by_inode,
        listening_ports,
    })
}

/// Walks procfs for ESTABLISHED TCP sockets of processes `traced` accepts, at most `limit`.
/// `register` adds each to the kernel table; failures there are skipped (and logged once).
pub fn discover(
    traced: impl Fn(u32) -> bool,
    limit: usize,
    mut register: impl FnMut(u32, u32, ConnInfo) -> Result<(), String>,
) -> Vec<SeededConn> {
    let mut out = Vec::new();
    let mut tables: HashMap<u64, Option<NetnsTable>> = HashMap::new();
    let mut next_id = 1u64;
    let mut warned = false;
    let Ok(procs) = procfs::process::all_processes() else {
        return out;
    };
    for proc in procs.flatten() {
        let pid = proc.pid as u32;
        if !traced(pid) {
            continue;
        }
        // Processes vanish during the walk; every read may fail and is then skipped.
        let Ok(fds) = proc.fd() else { continue };
        let socks: Vec<(u32, u64)> = fds
            .flatten()
            .filter_map(|fd| match fd.target {
                FDTarget::Socket(inode) => Some((fd.fd as u32, inode)),
                _ => None,
            })
            .collect();
        if socks.is_empty() {
            continue;
        }
        let netns = std::fs::read_link(format!("/proc/{pid}/ns/net"))
            .ok()
            .and_then(|l| {
                l.to_string_lossy()
                    .trim_start_matches("net:[")
                    .trim_end_matches(']')
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0);
        let Some(table) = tables.entry(netns).or_insert_with(|| netns_table(&proc)) else {
            continue;
        };
        let comm = comm_of(pid);
        for (fd, inode) in socks {
            let Some(e) = table.by_inode.get(&inode) else {
                continue;
            };
            if out.len() >= limit {
                return out;
            }
            let role = if table.listening_ports.contains(&e.local_address.port()) {
                Role::Server
            } else {
                Role::Client
            };
            let conn_id = USER_CONN_ID_BIT | next_id;
            next_id += 1;
            let info = ConnInfo {
                conn_id,
                role: role as u8,
                flags: 0,
                _pad: [0; 6],
            };
            if let Err(err) = register(pid, fd, info) {
                if !warned {
                    tracing::warn!(
                        "could not track pre-existing connection pid={pid} fd={fd}: {err}"
                    );
                    warned = true;
                }
                continue;
            }
            out.push(SeededConn {
                pid,
                fd,
                conn_id,
                role,
                local: sock_addr(&e.local_address),
                remote: sock_addr(&e.remote_address),
                comm,
            });
        }
    }
    out
}

/// Whether the TCP connection `local`→`remote` (as this agent sees it) is one of the agent's
/// own sockets. Used to recognise the collector's side of the agent's export connection,
/// which must never be traced (each export would make a span that is exported, and so on).
///
/// Cheap enough for the data path: it asks the kernel for the addresses of this process's own
/// few sockets (`getsockname`/`getpeername` on the fds in `/proc/self/fd`) rather than reading
/// the node's whole TCP table.
pub fn is_own_connection(local: &SockAddr, remote: &SockAddr) -> bool {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    fds.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .any(|fd| {
            endpoint(fd, libc::getsockname).as_ref() == Some(local)
                && endpoint(fd, libc::getpeername).as_ref() == Some(remote)
        })
}

type NameFn = unsafe extern "C" fn(i32, *mut libc::sockaddr, *mut libc::socklen_t) -> i32;

/// One end of socket `fd` (`getsockname` or `getpeername`), if it is an IP socket.
fn endpoint(fd: i32, name: NameFn) -> Option<SockAddr> {
    // SAFETY: sockaddr_storage is plain data for which all-zero bytes are valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `ss` and `len` are valid for writes and `len` is `ss`'s size; on a non-socket or
    // closed fd the call fails (ENOTSOCK, EBADF) without touching them.
    if unsafe { name(fd, (&raw mut ss).cast(), &mut len) } != 0 {
        return None;
    }
    let addr: SocketAddr = match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in (family AF_INET) into the storage.
            let sin: libc::sockaddr_in = unsafe { std::ptr::read((&raw const ss).cast()) };
            SocketAddr::new(
                IpAddr::V4(u32::from_be(sin.sin_addr.s_addr).into()),
                u16::from_be(sin.sin_port),
            )
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 (family AF_INET6) into the storage.
            let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read((&raw const ss).cast()) };
            SocketAddr::new(
                IpAddr::V6(sin6.sin6_addr.s6_addr.into()),
                u16::from_be(sin6.sin6_port),
            )
        }
        _ => return None,
    };
    Some(sock_addr(&addr))
}

/// The syscall a thread is blocked in, from /proc/<pid>/task/<tid>/syscall: its number and
/// first four arguments. None when the thread is running or not in a syscall.
fn blocked_syscall(text: &str) -> Option<(i64, [u64; 4])> {
    let mut it = text.split_whitespace();
    let nr: i64 = it.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let mut args = [0u64; 4];
    for a in &mut args {
        *a = u64::from_str_radix(it.next()?.trim_start_matches("0x"), 16).ok()?;
    }
    Some((nr, args))
}

/// Reads 8 bytes of another process's memory (root can; used for a recvmsg's msghdr).
fn read_u64(pid: u32, addr: u64) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, addr).ok()?;
    Some(u64::from_ne_bytes(b))
}

/// Reads a pre-existing connection's owner was blocked in when the probes attached. Their
/// sys_enter happened before the agent existed, so the kernel has no saved arguments and
/// would drop the bytes they return — on an idle keep-alive server, exactly the next request.
/// /proc/<pid>/task/<tid>/syscall shows the arguments, so user space saves them for the
/// kernel (`ACTIVE_IO`, keyed by pid_tgid) and the ordinary exit probe captures the read.
pub fn blocked_reads(seeded: &[SeededConn], now_ns: u64) -> Vec<(u64, IoArgs)> {
    const MSG_PEEK: u64 = 2;
    let mut by_pid: HashMap<u32, HashMap<u32, u64>> = HashMap::new();
    for s in seeded {
        by_pid.entry(s.pid).or_default().insert(s.fd, s.conn_id);
    }
    let mut out = Vec::new();
    for (pid, fds) in by_pid {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(task.path().join("syscall")) else {
                continue;
            };
            let Some((nr, [fd, a1, a2, a3])) = blocked_syscall(&text) else {
                continue;
            };
            let Some(&conn_id) = u32::try_from(fd).ok().and_then(|fd| fds.get(&fd)) else {
                continue;
            };
            let (syscall, buf, iovcnt) = match nr {
                libc::SYS_read => (Syscall::Read, a1, 0),
                libc::SYS_recvfrom if a3 & MSG_PEEK == 0 => (Syscall::RecvFrom, a1, 0),
                libc::SYS_readv => (Syscall::Readv, a1, a2),
                libc::SYS_recvmsg if a2 & MSG_PEEK == 0 => {
                    // struct user_msghdr: msg_iov at +16, msg_iovlen at +24.
                    let (Some(iov), Some(cnt)) = (read_u64(pid, a1 + 16), read_u64(pid, a1 + 24))
                    else {
                        continue;
                    };
                    (Syscall::RecvMsg, iov, cnt)
                }
                _ => continue,
            };
            let args = IoArgs {
                conn_id,
                buf,
                iovcnt,
                enter_ts: now_ns,
                fd: fd as u32,
                syscall: syscall as u8,
                direction: Direction::Ingress as u8,
                conn_flags: 0,
                role: 0, // not known here: no server context is taken from a seeded read
            };
            out.push(((u64::from(pid) << 32) | u64::from(tid), args));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_own_connections() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let l = sock_addr(&client.local_addr().unwrap());
        let r = sock_addr(&client.peer_addr().unwrap());
        assert!(is_own_connection(&l, &r));
        let mut other = r;
        other.port = other.port.wrapping_add(1);
        assert!(!is_own_connection(&l, &other));
        // The mirrored pair is the accepted socket, which this process also holds; a pair none
        // of its sockets has is not ours.
        assert!(is_own_connection(&r, &l));
        let mut stranger = l;
        stranger.addr[15] = 2;
        assert!(!is_own_connection(&stranger, &r));
        // IPv6.
        if let Ok(listener6) = std::net::TcpListener::bind("[::1]:0") {
            let c6 = std::net::TcpStream::connect(listener6.local_addr().unwrap()).unwrap();
            let l6 = sock_addr(&c6.local_addr().unwrap());
            let r6 = sock_addr(&c6.peer_addr().unwrap());
            assert!(is_own_connection(&l6, &r6));
            assert!(!is_own_connection(&l6, &r));
        }
    }

    #[test]
    fn parses_proc_task_syscall() {
        assert_eq!(
            blocked_syscall(
                "0 0x4 0x55b703e6b4c0 0x2000 0x0 0x0 0x0 0x7ffefb82bc78 0x7fda38d162ad\n"
            ),
            Some((0, [4, 0x55b703e6b4c0, 0x2000, 0]))
        );
        assert_eq!(blocked_syscall("running\n"), None);
        assert_eq!(blocked_syscall("-1 0x7ffefb82bc78 0x7fda38d162ad\n"), None);
        assert_eq!(blocked_syscall("0 0x4\n"), None, "truncated");
    }

    /// A thread of this test process blocked in recv() on a connection shows up with the
    /// connection's id and the arguments of that recv.
    #[test]
    fn finds_a_thread_blocked_in_recv() {
        use std::io::Read as _;
        use std::os::fd::AsRawFd as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let fd = server.as_raw_fd() as u32;
        let reader = std::thread::spawn(move || {
            let mut s = server;
            let mut buf = [0u8; 64];
            s.read(&mut buf).unwrap()
        });
        let me = std::process::id();
        let seeded = vec![SeededConn {
            pid: me,
            fd,
            conn_id: 42,
            role: Role::Server,
            local: SockAddr::default(),
            remote: SockAddr::default(),
            comm: [0; 16],
        }];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let found = loop {
            let f = blocked_reads(&seeded, 7);
            if !f.is_empty() || std::time::Instant::now() > deadline {
                break f;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        std::io::Write::write_all(&mut client, b"x").unwrap();
        assert_eq!(reader.join().unwrap(), 1);
        assert_eq!(found.len(), 1, "{found:?}");
        let (pid_tgid, args) = found[0];
        assert_eq!(pid_tgid >> 32, u64::from(me));
        assert_eq!((args.conn_id, args.fd, args.enter_ts), (42, fd, 7));
        assert_eq!(args.direction, Direction::Ingress as u8);
        assert!(args.syscall == Syscall::Read as u8 || args.syscall == Syscall::RecvFrom as u8);
    }

    #[test]
    fn maps_ipv4_into_ipv6() {
        let s = sock_addr(&"127.0.0.1:8080".parse().unwrap());
        assert_eq!(&s.addr[10..], &[0xff, 0xff, 127, 0, 0, 1]);
        assert_eq!(s.port, 8080);
        let s6 = sock_addr(&"[::1]:443".parse().unwrap());
        assert_eq!(s6.addr[15], 1);
    }

    /// Finds this test process's own established loopback connection (both ends), with roles
    /// inferred from the listening socket. Reads only our own /proc entries: no root needed.
    #[test]
    fn discovers_own_connection_with_roles() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let me = std::process::id();
        let mut registered = 0;
        let found = discover(
            |p| p == me,
            1000,
            |_, _, _| {
                registered += 1;
                Ok(())
            },
        );
        let ours: Vec<_> = found
            .iter()
            .filter(|c| c.local.port == port || c.remote.port == port)
            .collect();
        assert_eq!(ours.len(), 2, "{found:?}");
        assert!(ours
            .iter()
            .any(|c| c.role == Role::Server && c.local.port == port));
        assert!(ours
            .iter()
            .any(|c| c.role == Role::Client && c.remote.port == port));
        assert!(ours.iter().all(|c| c.conn_id & USER_CONN_ID_BIT != 0));
        assert_eq!(registered, found.len());
        assert!(
            ours.iter().all(|c| c.comm != [0; 16]),
            "comm read from /proc"
        );
    }
}
