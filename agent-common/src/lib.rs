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
pub const EVENT_VERSION: u8 = 7;

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
    /// The sk_msg program wrote a `traceparent` header into the request this thread is
    /// sending: an [`InjectEvent`], output during the syscall, before its data record.
    Inject = 6,
    /// A Go program started a goroutine: a [`GoSpawnEvent`] (from `runtime.newproc1`'s
    /// returns).
    GoSpawn = 7,
}

impl EventKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::ConnOpen,
            2 => Self::ConnClose,
            3 => Self::Data,
            4 => Self::ProcExit,
            5 => Self::ProcExec,
            6 => Self::Inject,
            7 => Self::GoSpawn,
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
    /// [`data_flags`] bits: `GAP_BEFORE` when records of the connection were lost after the
    /// last one user space got (what was in flight did not end with the close).
    pub flags: u8,
    pub _pad: [u8; 3],
}

/// Payload bytes one syscall moved on a tracked socket. Followed by `len` bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DataEvent {
    pub header: EventHeader,
    pub fd: u32,
    /// A [`Syscall`].
    pub syscall: u8,
    /// [`data_flags`] bits.
    pub flags: u8,
    pub _pad: [u8; 2],
    /// Bytes captured and following this struct (`<= orig_len`, `<= capture_bytes`).
    pub len: u32,
    /// Bytes the syscall actually moved. `orig_len - len` bytes are missing after the payload.
    pub orig_len: u32,
    /// CLOCK_MONOTONIC nanoseconds when the syscall was entered.
    pub enter_ts_ns: u64,
    /// For a process user space marked as Go with the register ABI (`GO_PROCS`): the goroutine
    /// (its `g`, R14 at the syscall or TLS call) the bytes were moved for — for a write by
    /// `net/http`'s `persistConn.writeLoop`, the goroutine that called `roundTrip` (see
    /// [`GoWriter`]). 0 when not known.
    pub goroutine: u64,
}

/// Bits of [`DataEvent::flags`].
pub mod data_flags {
    /// Records of this connection were lost before this one (the ring buffer was full, see
    /// [`super::conn_flags::GAP`]): an unknown number of bytes, in either direction, is
    /// missing between the previous record of the connection user space got and this one.
    pub const GAP_BEFORE: u8 = 1;
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
    /// A data record of this connection could not be written to the ring buffer (full). Set
    /// by the kernel on the failure; the next record of the connection that is written
    /// carries [`super::data_flags::GAP_BEFORE`] and clears it. The syscall probes read it at
    /// syscall entry (it travels in [`super::IoArgs::conn_flags`]), so the hot path pays one
    /// bit test.
    pub const GAP: u8 = 4;
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

/// Value of `GO_WRITER`, keyed by a [`GoKey`] of a `net/http.(*persistConn).writeLoop`
/// goroutine: the `*persistConn` it writes for, and the connection its first write went to
/// (0 until then). A write on another connection means the `g` was reused by another
/// goroutine: the entry is dropped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoWriter {
    pub pconn: u64,
    pub conn_id: u64,
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
    /// The connection's [`conn_flags`] when the syscall was entered (only `GAP` is used).
    pub conn_flags: u8,
    /// The connection's [`Role`] (0 when not a tracked socket's syscall).
    pub role: u8,
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
    /// A write by a `net/http` writeLoop goroutine was attributed to the goroutine that called
    /// `roundTrip` on its connection.
    pub const GO_WRITE_VIA_TRANSPORT: u32 = 11;
    /// A `GO_WRITER` entry was dropped: its goroutine wrote on another connection than its
    /// first one, or on a server connection (the `g` was reused).
    pub const GO_WRITER_STALE: u32 = 12;
    /// A writeLoop goroutine wrote, but no `roundTrip` was seen on its connection (the
    /// connection predates the agent, or the entry was evicted): the writer's own goroutine.
    pub const GO_CALLER_MISSING: u32 = 13;
    /// A `ConnOpen` record did not fit in the ring buffer (also counted in `RINGBUF_FULL`):
    /// user space never learns of the connection, its data records are for an unknown one.
    pub const OPEN_LOST: u32 = 14;
    /// A `ConnClose` record did not fit in the ring buffer (also counted in `RINGBUF_FULL`):
    /// user space ends the connection when its fd is reused, its process exits, or it idles.
    pub const CLOSE_LOST: u32 = 15;
    /// A data record did not fit in the ring buffer and its connection had left `CONNS`
    /// meanwhile (closed or evicted), so no gap could be marked on it (also in `RINGBUF_FULL`).
    pub const GAP_UNMARKED: u32 = 16;
    pub const COUNT: u32 = 17;
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

/// Bytes of the header the kernel inserts: `traceparent: 00-<32 hex>-<16 hex>-<2 hex>\r\n`
/// (W3C Trace Context §3.2, version 00).
pub const TRACEPARENT_HEADER_LEN: u32 = 70;

/// What the sk_msg program put into an outgoing HTTP/1 request (see `agent-ebpf`'s `inject`).
/// `header.conn_id` is the connection, `header.tid` the sending thread; `enter_ts_ns` equals
/// the `enter_ts_ns` of the syscall's data record, so user space ties the ids to the request
/// that starts in it. The request's client span takes exactly these ids.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InjectEvent {
    pub header: EventHeader,
    pub trace_id: [u8; 16],
    /// The client span's id: the header's parent-id field.
    pub span_id: [u8; 8],
    /// W3C trace flags written (bit 0: sampled).
    pub flags: u8,
    pub _pad: [u8; 3],
    /// Bytes inserted ([`TRACEPARENT_HEADER_LEN`]): the peer received the syscall's bytes plus
    /// these.
    pub injected_len: u32,
    pub enter_ts_ns: u64,
}

/// The injection settings, set as the global `INJECT` before load (a separate global from
/// [`Config`] so this feature's layout can change on its own).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct InjectConfig {
    /// 1: the sockops program puts eligible client sockets into the SOCKHASH.
    pub enabled: u32,
    /// 1: the sampler follows the parent's sampled flag (`parentbased_*`): a request made for
    /// a server request that carried a traceparent keeps that header's sampled flag. 0: the
    /// decision is the trace id's, as for a root.
    pub parent_based: u32,
    /// The sampler's threshold for root traces the kernel starts: sampled when the trace id's
    /// last 56 bits (W3C level 2 random bits) are below it (`1 << 56`: always; 0: never). The
    /// same rule as user space's `traceidratio`, so both sides decide alike.
    pub root_threshold: u64,
    /// The key of [`derive_trace_id`], random per agent run.
    pub secret: u64,
}

/// The splitmix64 finaliser: a bijection of u64 whose outputs look independent.
#[inline(always)]
pub const fn mix64(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The trace id of a server request that arrived without a (valid) traceparent, when
/// injection is on: derived, not drawn, so the kernel (which must write it into the requests
/// the server makes while handling it, before user space has parsed anything) and user space
/// (which builds the SERVER span) agree without telling each other. The inputs are what both
/// sides know of the request: the connection id and the time the record that starts it was
/// written (`EventHeader::ts_ns`), keyed with a per-run secret so ids are not predictable
/// across agents or runs. Never all zero (an invalid W3C trace id).
#[inline(always)]
pub const fn derive_trace_id(secret: u64, conn_id: u64, ts_ns: u64) -> [u8; 16] {
    let a = mix64(secret ^ mix64(conn_id.wrapping_add(0x9e37_79b9_7f4a_7c15)));
    let hi = mix64(a ^ ts_ns);
    let mut lo = mix64(hi ^ secret.rotate_left(32) ^ 0x2545_f491_4f6c_dd1d);
    if hi == 0 && lo == 0 {
        lo = 1;
    }
    let h = hi.to_be_bytes();
    let l = lo.to_be_bytes();
    [
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], l[0], l[1], l[2], l[3], l[4], l[5], l[6],
        l[7],
    ]
}

/// Values of the kernel's `INJECT_DENY` map (process → class), written by both sides.
pub mod inject_class {
    /// Never injected: user space excluded it (a Go program, an opt-out).
    pub const EXCLUDED: u8 = 1;
    /// Accepted a connection (set by the kernel): injected only while the sending thread
    /// serves a request.
    pub const SERVED: u8 = 2;
}

/// Indices into the per-CPU `INJECT_COUNTERS` array: what the injection path did and why it
/// left a message alone.
pub mod inject_counter {
    /// A client socket was put into the SOCKHASH at connection establishment.
    pub const SOCKETS_ADDED: u32 = 0;
    /// Putting a socket into the SOCKHASH failed (full) or the pending table was full.
    pub const SOCKETS_ADD_FAILED: u32 = 1;
    /// A connect that may not be injected: the process is excluded or untraced, or it serves
    /// and the connecting thread was not serving a request.
    pub const CONNECT_NOT_ELIGIBLE: u32 = 2;
    /// A traceparent was inserted.
    pub const INJECTED: u32 = 3;
    /// The message does not start with an HTTP/1 request line (not HTTP/1, TLS, a body).
    pub const SKIP_NOT_HTTP1: u32 = 4;
    /// The request head does not end in this message (split over writes) or is longer than
    /// the kernel scans.
    pub const SKIP_HEAD_INCOMPLETE: u32 = 5;
    /// The request already carries a traceparent header.
    pub const SKIP_HAS_TRACEPARENT: u32 = 6;
    /// The trace context is unknown: no syscall of this thread is being traced, or the
    /// process is excluded.
    pub const SKIP_CONTEXT_UNKNOWN: u32 = 7;
    /// A kernel helper failed (pull/push data): the message was passed unchanged if possible.
    pub const SKIP_HELPER_FAILED: u32 = 8;
    /// A process that serves requests sent a request from a thread with no request of its
    /// own open (none read whole, or already answered): which request it is for is unknown.
    pub const SKIP_SERVER_IDLE: u32 = 9;
    /// A thread that has had two requests in flight at once (an event loop) sent a request:
    /// which of them it is for is unknown, so it is never injected.
    pub const SKIP_SERVER_CONCURRENT: u32 = 10;
    /// A traceparent was inserted carrying the trace of the request the thread is serving
    /// (also counted in `INJECTED`).
    pub const INJECTED_IN_REQUEST: u32 = 11;
    /// A server thread read a whole request head, nothing after its body: its calls may be
    /// injected with its trace.
    pub const SERVER_REQUEST_OPEN: u32 = 12;
    /// A server thread read a request start whose extent is unknown (head split over reads or
    /// longer than scanned, chunked or pipelined bytes after it): its calls are not injected.
    pub const SERVER_REQUEST_UNKNOWN: u32 = 13;
    /// A server thread read a request while another was open: marked an event loop.
    pub const SERVER_THREAD_CONCURRENT: u32 = 14;
    pub const COUNT: u32 = 15;
}

/// A goroutine was created (`runtime.newproc1` returned): which goroutine (`g`) started
/// which, so user space can give calls made from the new one the request the starting one was
/// handling at that moment (`agent::span::work`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GoSpawnEvent {
    pub header: EventHeader,
    /// The goroutine that executed the `go` statement (`callergp`).
    pub parent: u64,
    /// The new goroutine (`newproc1`'s result).
    pub child: u64,
}

records!(
    EventHeader,
    InjectEvent,
    GoSpawnEvent,
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
    unsafe impl aya::Pod for super::GoWriter {}
    unsafe impl aya::Pod for super::InjectConfig {}
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
        assert_eq!(size_of::<DataEvent>(), 32 + 32);
        assert_eq!(core::mem::offset_of!(DataEvent, flags), 37);
        assert_eq!(core::mem::offset_of!(DataEvent, len), 40);
        assert_eq!(size_of::<ConnCloseEvent>(), 32 + 8);
        assert_eq!(size_of::<IoArgs>(), 40);
        assert_eq!(size_of::<ConnInfo>(), 16);
        assert_eq!(size_of::<InjectEvent>(), 32 + 16 + 8 + 8 + 8);
        assert_eq!(size_of::<InjectConfig>(), 24);
        assert_eq!(
            "traceparent: 00-00000000000000000000000000000000-0000000000000000-00\r\n".len(),
            TRACEPARENT_HEADER_LEN as usize
        );
        assert!(MAX_PAYLOAD.is_power_of_two());
    }

    #[test]
    fn derived_trace_ids_are_stable_distinct_and_never_zero() {
        // The kernel and user space must compute the same function: pin one value.
        let t = derive_trace_id(1, 2, 3);
        assert_eq!(t, derive_trace_id(1, 2, 3));
        assert_ne!(t, [0; 16]);
        let mut seen = std::collections::HashSet::new();
        for conn in 0..64u64 {
            for ts in 0..64u64 {
                assert!(seen.insert(derive_trace_id(7, conn, ts)), "{conn} {ts}");
            }
        }
        assert_ne!(derive_trace_id(7, 1, 1), derive_trace_id(8, 1, 1));
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
