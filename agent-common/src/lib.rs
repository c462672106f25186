//! The wire contract between the kernel programs (`agent-ebpf`) and user space (`agent`).
//!
//! Everything here is `#[repr(C)]`, `Copy`, has no padding the compiler could choose, and is
//! read by user space straight out of ring-buffer records and maps. Changing a layout is a
//! protocol change: bump [`EVENT_VERSION`] so a mismatched agent/object pair is detected at the
//! first event instead of producing garbage.
//!
//! Every ring-buffer record starts with one [`EventHeader`]; `header.kind` says which of the
//! payload structs follows ([`ConnOpenEvent`], [`ConnCloseEvent`], [`DataEvent`],
//! [`ProcExitEvent`]). A [`DataEvent`] is followed by `len` bytes of captured payload.
//!
//! This crate owns only types and constants. What the kernel does with them lives in
//! `agent-ebpf`; how user space interprets them lives in `agent::ebpf`.
#![no_std]

/// Version of the record layouts below. Checked by user space on every record.
pub const EVENT_VERSION: u8 = 3;

/// Hard upper bound for payload bytes copied per syscall. The runtime limit
/// ([`Config::capture_bytes`]) can only lower it. Must be a power of two: the kernel masks
/// lengths with `MAX_PAYLOAD - 1` so the verifier can prove every copy is in bounds.
pub const MAX_PAYLOAD: usize = 16384;
/// The scratch buffer that builds a data record is twice [`MAX_PAYLOAD`] so that a copy at any
/// offset below `MAX_PAYLOAD` of up to `MAX_PAYLOAD` bytes is provably in bounds (iovec arrays).
pub const SCRATCH_PAYLOAD: usize = 2 * MAX_PAYLOAD;
/// iovecs looked at per readv/writev/sendmsg/recvmsg. Later ones are counted as truncated.
pub const MAX_IOV: usize = 32;

/// Connection ids minted by user space for sockets found in procfs at start-up have this bit
/// set; ids minted by the kernel never do, so the two can never collide.
pub const USER_CONN_ID_BIT: u64 = 1 << 63;

/// What kind of record follows the header.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    ConnOpen = 1,
    ConnClose = 2,
    Data = 3,
    ProcExit = 4,
    /// A process exec'd or mapped an executable file (a library load): user space looks at its
    /// mappings for TLS libraries to attach uprobes to. Header only.
    ProcExec = 5,
}

impl EventKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::ConnOpen,
            2 => Self::ConnClose,
            3 => Self::Data,
            4 => Self::ProcExit,
            5 => Self::ProcExec,
            _ => return None,
        })
    }
}

/// Which way the bytes went, seen from the traced process.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Not a data record.
    None = 0,
    /// The process sent the bytes (write, writev, sendto, sendmsg, sendfile).
    Egress = 1,
    /// The process received the bytes (read, readv, recvfrom, recvmsg).
    Ingress = 2,
}

impl Direction {
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Egress,
            2 => Self::Ingress,
            _ => Self::None,
        }
    }
}

/// Which end of the TCP connection the process is.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Found in procfs without a listening socket to tell; decided later from the traffic.
    Unknown = 0,
    /// The process called connect().
    Client = 1,
    /// The process got the socket from accept().
    Server = 2,
}

impl Role {
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Client,
            2 => Self::Server,
            _ => Self::Unknown,
        }
    }
}

/// The syscall a data record came from (for diagnostics and for sendfile's payload-less bytes).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syscall {
    Read = 1,
    Write = 2,
    Readv = 3,
    Writev = 4,
    RecvFrom = 5,
    SendTo = 6,
    RecvMsg = 7,
    SendMsg = 8,
    /// Bytes went from a file straight to the socket: `len` is 0, `orig_len` counts them.
    SendFile = 9,
    /// Plaintext a TLS library decrypted for the process (uprobe on OpenSSL's SSL_read/_ex or
    /// Go's crypto/tls.(*Conn).Read). `enter_ts_ns` is the call's entry.
    TlsRead = 10,
    /// Plaintext the process handed a TLS library to encrypt (SSL_write/_ex, Go's Write).
    TlsWrite = 11,
}

impl Syscall {
    /// Whether the record carries TLS plaintext from a uprobe rather than a syscall's bytes.
    pub fn is_tls(v: u8) -> bool {
        v == Self::TlsRead as u8 || v == Self::TlsWrite as u8
    }
}

/// Common prefix of every ring-buffer record. 32 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// An [`EventKind`].
    pub kind: u8,
    /// [`EVENT_VERSION`] of the object that wrote the record.
    pub version: u8,
    /// A [`Direction`] (data records only).
    pub direction: u8,
    pub _pad0: u8,
    /// Process id (the kernel's tgid).
    pub pid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    pub _pad1: u32,
    /// CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns) when the syscall returned.
    pub ts_ns: u64,
    /// Connection id: unique for the agent's lifetime, survives fd reuse (see [`ConnInfo`]).
    pub conn_id: u64,
}

/// An IPv4 or IPv6 endpoint. IPv4 is stored as an IPv4-mapped IPv6 address (::ffff:a.b.c.d).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockAddr {
    /// Network byte order.
    pub addr: [u8; 16],
    /// Host byte order.
    pub port: u16,
    pub _pad: [u8; 6],
}

impl SockAddr {
    /// An IPv4 endpoint, stored IPv4-mapped as the kernel stores it.
    pub const fn v4(ip: [u8; 4], port: u16) -> Self {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12] = ip[0];
        addr[13] = ip[1];
        addr[14] = ip[2];
        addr[15] = ip[3];
        Self {
            addr,
            port,
            _pad: [0; 6],
        }
    }
}

/// The ring-buffer records, which user space may also need as bytes (replaying captures,
/// tests, benchmarks).
pub trait Record: Copy + sealed::Sealed {
    /// The record exactly as the kernel writes it.
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: implemented only (sealed) for this crate's #[repr(C)] records, which are made
        // of integers and integer arrays with explicit padding fields: no uninitialised bytes.
        unsafe {
            core::slice::from_raw_parts(
                self as *const Self as *const u8,
                core::mem::size_of::<Self>(),
            )
        }
    }
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! records {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Record for $t {}
    )*};
}

/// A TCP connection the kernel started tracking (connect/accept returned).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnOpenEvent {
    pub header: EventHeader,
    pub fd: u32,
    /// A [`Role`].
    pub role: u8,
    /// AF_INET (2) or AF_INET6 (10), as the socket was created.
    pub family: u8,
    pub _pad: [u8; 2],
    pub local: SockAddr,
    pub remote: SockAddr,
    /// The task's comm (executable name, at most 15 bytes, NUL-padded) at connect/accept: what
    /// user space names the process by when it exited before its /proc entry could be read.
    pub comm: [u8; 16],
}

/// The process closed a tracked socket.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnCloseEvent {
    pub header: EventHeader,
    pub fd: u32,
    pub _pad: u32,
}

/// Payload bytes one syscall moved on a tracked socket. Followed by `len` bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DataEvent {
    pub header: EventHeader,
    pub fd: u32,
    /// A [`Syscall`].
    pub syscall: u8,
    pub _pad: [u8; 3],
    /// Bytes captured and following this struct (`<= orig_len`, `<= capture_bytes`).
    pub len: u32,
    /// Bytes the syscall actually moved. `orig_len - len` bytes are missing after the payload.
    pub orig_len: u32,
    /// CLOCK_MONOTONIC nanoseconds when the syscall was entered.
    pub enter_ts_ns: u64,
}

/// `header.conn_id` of a `ProcExec` notice for a new program (see [`ProcExitEvent`]).
pub const PROC_EXEC_NEW_PROGRAM: u64 = 1;

/// A header-only process notice: `ProcExit` (the thread-group leader exited: everything keyed
/// by its pid can go) or `ProcExec` (it exec'd or mapped an executable file), by `header.kind`.
/// A `ProcExec` for a new program (sched_process_exec) has `header.conn_id` =
/// [`PROC_EXEC_NEW_PROGRAM`]; one for an executable mapping has 0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcExitEvent {
    pub header: EventHeader,
}

/// Per-connection state in the kernel's `CONNS` map, keyed by [`conn_key`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnInfo {
    pub conn_id: u64,
    /// A [`Role`].
    pub role: u8,
    /// [`conn_flags`] bits.
    pub flags: u8,
    pub _pad: [u8; 6],
}

/// Bits of [`ConnInfo::flags`].
pub mod conn_flags {
    /// User space parses nothing on this connection (unknown protocol, encrypted bytes): the
    /// kernel stops copying its payload; open/close are still reported.
    pub const MUTED: u8 = 1;
    /// The socket carries TLS: the kernel does not copy what its syscalls move (ciphertext).
    /// Plaintext still comes from the TLS library uprobes unless MUTED is also set. Set by the
    /// kernel when a TLS library call is seen using the socket, or by user space when the
    /// bytes look like TLS records.
    pub const RAW_OFF: u8 = 2;
}

/// An OpenSSL call in flight (SSL_read/SSL_write/_ex), from its uprobe to its uretprobe, in
/// `SSL_ACTIVE` keyed by pid_tgid. Syscalls the thread makes meanwhile tell which socket the
/// `SSL *` uses (`SSL_FD`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SslArgs {
    /// The `SSL *`.
    pub ssl: u64,
    /// The caller's plaintext buffer.
    pub buf: u64,
    /// `size_t *` where the _ex variants store the byte count; 0 for SSL_read/SSL_write (the
    /// return value is the count).
    pub count_ptr: u64,
    pub enter_ts: u64,
    /// A [`Direction`].
    pub direction: u8,
    pub _pad: [u8; 7],
}

/// Key of `SSL_FD`: an `SSL *` within one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SslKey {
    pub ssl: u64,
    pub pid: u32,
    pub _pad: u32,
}

/// Value of `SSL_FD`: the socket an `SSL *` was seen using, and the connection that socket
/// was then (an `SSL *` freed and reallocated for another connection must not inherit it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SslConn {
    pub conn_id: u64,
    pub fd: u32,
    pub _pad: u32,
}

/// A Go crypto/tls Read/Write in flight, from the entry probe to a probe on one of the
/// function's return instructions, in `GO_ACTIVE` keyed by [`GoKey`]: goroutines move between
/// threads while blocked, so the key is the goroutine (its `g`), not the thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GoTlsArgs {
    pub conn_id: u64,
    pub buf: u64,
    pub enter_ts: u64,
    pub fd: u32,
    /// A [`Direction`].
    pub direction: u8,
    pub _pad: [u8; 3],
}

/// Key of `GO_ACTIVE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoKey {
    /// The goroutine's `g` pointer (register R14 in Go's register ABI).
    pub g: u64,
    pub pid: u32,
    pub _pad: u32,
}

/// Arguments of a data syscall in flight, from its sys_enter to its sys_exit, in the
/// `ACTIVE_IO` map keyed by pid_tgid. User space writes one too, for a read that was already
/// blocked when the agent attached (its entry was never seen; /proc/<pid>/task/<tid>/syscall
/// shows its arguments).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoArgs {
    pub conn_id: u64,
    /// User buffer, or the iovec array when `iovcnt != 0`.
    pub buf: u64,
    pub iovcnt: u64,
    pub enter_ts: u64,
    pub fd: u32,
    /// A [`Syscall`]: the exit program checks it is its own.
    pub syscall: u8,
    /// A [`Direction`].
    pub direction: u8,
    pub _pad: [u8; 2],
}

/// Key of the `CONNS` map: the (pid, fd) pair a syscall names.
#[inline(always)]
pub fn conn_key(pid: u32, fd: u32) -> u64 {
    ((pid as u64) << 32) | fd as u64
}

/// Values of the `PID_FILTER` map.
pub mod pid_filter {
    /// Never trace this process (the agent itself, configured exclusions).
    pub const EXCLUDE: u8 = 1;
    /// Trace this process when `Config::trace_all` is false.
    pub const INCLUDE: u8 = 2;
}

/// Indices into the per-CPU `COUNTERS` array: what the kernel side lost or skipped.
pub mod counter {
    /// A record did not fit in the ring buffer (user space too slow): the event is lost.
    pub const RINGBUF_FULL: u32 = 0;
    /// Payload bytes were cut to `capture_bytes` (or `MAX_IOV` iovecs).
    pub const TRUNCATED: u32 = 1;
    /// A syscall exit found no saved arguments (map full, or agent started mid-call).
    pub const MISSING_ENTRY: u32 = 2;
    /// connect/accept returned a socket whose kernel struct could not be read.
    pub const SOCK_READ_FAILED: u32 = 3;
    /// A bpf_probe_read_user of the payload failed (page not present); record sent without it.
    pub const PAYLOAD_READ_FAILED: u32 = 4;
    /// A connection could not be inserted into `CONNS`.
    pub const CONN_INSERT_FAILED: u32 = 5;
    /// An OpenSSL read/write returned on an `SSL *` whose socket was never seen (its first
    /// syscall happened before the agent attached): the plaintext is dropped.
    pub const TLS_UNMAPPED: u32 = 6;
    /// A Go crypto/tls call whose socket is not a tracked TCP connection (or whose `net.Conn`
    /// is not a `*net.TCPConn`): the plaintext is dropped.
    pub const GO_TLS_UNTRACKED: u32 = 7;
    /// An `SSL *` whose reads/writes make no syscalls (memory BIOs, as Node.js uses) was tied
    /// to the socket its thread last read TLS records from. Counted: a heuristic.
    pub const TLS_FD_FROM_THREAD: u32 = 8;
    /// A connect/accept of a process in a cgroup listed in `CGROUP_FILTER` (the selection
    /// rules trace nothing of it): the connection is not tracked, nothing of it is copied.
    pub const CGROUP_CONNS_SKIPPED: u32 = 9;
    /// A read/write (or TLS library call) on a tracked connection by a process in a muted
    /// cgroup (the connection predates the mute): no payload copied.
    pub const CGROUP_IO_SKIPPED: u32 = 10;
    pub const COUNT: u32 = 11;
}

/// Runtime settings, set as a global in the object before load.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Payload bytes captured per syscall, `1..=MAX_PAYLOAD`.
    pub capture_bytes: u32,
    /// 1: trace every process not excluded in `PID_FILTER`; 0: only those marked INCLUDE.
    pub trace_all: u8,
    pub _pad: [u8; 3],
}

/// Kernel struct field offsets, read by user space from the running kernel's BTF
/// (/sys/kernel/btf/vmlinux) and set as a global before load: Rust eBPF has no CO-RE
/// relocations, so this is how the programs follow `task->files->fdt->fd[fd]->...->sk`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOffsets {
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_inode: u32,
    pub file_private_data: u32,
    pub inode_mode: u32,
    pub socket_type: u32,
    pub socket_sk: u32,
    pub sk_family: u32,
    pub sk_num: u32,
    pub sk_dport: u32,
    pub sk_rcv_saddr: u32,
    pub sk_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    pub sk_v6_daddr: u32,
    /// 1 once user space filled the struct; the programs do nothing socket-related before.
    pub valid: u32,
}

records!(
    EventHeader,
    ConnOpenEvent,
    ConnCloseEvent,
    DataEvent,
    ProcExitEvent
);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], Copy, made only of integers and integer arrays,
    // with explicit padding fields, so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::ConnInfo {}
    unsafe impl aya::Pod for super::IoArgs {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::SslArgs {}
    unsafe impl aya::Pod for super::SslKey {}
    unsafe impl aya::Pod for super::SslConn {}
    unsafe impl aya::Pod for super::GoTlsArgs {}
    unsafe impl aya::Pod for super::GoKey {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_are_stable() {
        assert_eq!(size_of::<EventHeader>(), 32);
        assert_eq!(size_of::<SockAddr>(), 24);
        assert_eq!(size_of::<ConnOpenEvent>(), 32 + 8 + 48 + 16);
        assert_eq!(size_of::<DataEvent>(), 32 + 24);
        assert_eq!(size_of::<ConnInfo>(), 16);
        assert!(MAX_PAYLOAD.is_power_of_two());
    }

    #[test]
    fn v4_is_ipv4_mapped() {
        let a = SockAddr::v4([127, 0, 0, 1], 80);
        assert_eq!(&a.addr[10..], &[0xff, 0xff, 127, 0, 0, 1]);
        assert_eq!(a.addr[..10], [0; 10]);
        let h = EventHeader {
            kind: 1,
            version: EVENT_VERSION,
            direction: 0,
            _pad0: 0,
            pid: 1,
            tid: 2,
            _pad1: 0,
            ts_ns: 3,
            conn_id: 4,
        };
        assert_eq!(h.as_bytes().len(), 32);
        assert_eq!(h.as_bytes()[0], 1);
    }

    #[test]
    fn conn_key_packs_pid_and_fd() {
        assert_eq!(conn_key(7, 3), (7u64 << 32) | 3);
    }
}
