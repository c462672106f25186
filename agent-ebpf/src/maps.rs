//! Every map and global the programs use, in one place. Sizes here are defaults: user space
//! resizes EVENTS, CONNS and SCRATCH before load (see `agent::ebpf::loader`).

use agent_common::{
    counter, Config, ConnInfo, DataEvent, GoKey, GoTlsArgs, GoWriter, IoArgs, KernelOffsets,
    SslArgs, SslConn, SslKey, SCRATCH_PAYLOAD,
};
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};

/// Records for user space. Byte size set by user space (`ring_buffer_bytes`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Tracked TCP sockets: `conn_key(pid, fd)` → connection id and role. LRU so that sockets of
/// processes that exited without close() (the kernel closes them, no syscall fires) age out.
#[map]
pub static CONNS: LruHashMap<u64, ConnInfo> = LruHashMap::with_max_entries(65536, 0);

/// Arguments of a syscall in flight, keyed by pid_tgid, from sys_enter to sys_exit.
#[map]
pub static ACTIVE_IO: LruHashMap<u64, IoArgs> = LruHashMap::with_max_entries(16384, 0);

/// OpenSSL calls in flight, keyed by pid_tgid (see `tls`).
#[map]
pub static SSL_ACTIVE: LruHashMap<u64, SslArgs> = LruHashMap::with_max_entries(16384, 0);

/// The socket fd each `SSL *` was seen using. LRU: `SSL *`s are freed without a probe.
#[map]
pub static SSL_FD: LruHashMap<SslKey, SslConn> = LruHashMap::with_max_entries(65536, 0);

/// The socket fd each thread last read TLS records from (see `tls::note_tls_read`).
#[map]
pub static LAST_TLS_READ: LruHashMap<u64, u32> = LruHashMap::with_max_entries(16384, 0);

/// Go crypto/tls calls in flight, keyed by goroutine.
#[map]
pub static GO_ACTIVE: LruHashMap<GoKey, GoTlsArgs> = LruHashMap::with_max_entries(16384, 0);

/// fd of a connect() in flight, keyed by pid_tgid.
#[map]
pub static ACTIVE_CONNECT: LruHashMap<u64, u32> = LruHashMap::with_max_entries(16384, 0);

/// Process filter: pid → `pid_filter::EXCLUDE` / `INCLUDE` (see `Config::trace_all`).
#[map]
pub static PID_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

/// Cgroups (cgroup v2 ids, `bpf_get_current_cgroup_id`: the inode number of the cgroup's
/// directory) whose processes the selection rules trace nothing of → 1. Filled and cleared by
/// user space (`agent::selection::cgroups`); checked before anything is tracked or copied.
#[map]
pub static CGROUP_FILTER: HashMap<u64, u8> = HashMap::with_max_entries(16384, 0);

/// Whether the current task's cgroup is muted by the selection rules.
#[inline(always)]
pub fn cgroup_muted() -> bool {
    // SAFETY: no preconditions; available to tracing programs since Linux 4.18.
    let id = unsafe { aya_ebpf::helpers::generated::bpf_get_current_cgroup_id() };
    // SAFETY: plain map lookup of a Copy value.
    unsafe { CGROUP_FILTER.get(&id) }.is_some()
}

/// Running totals of what the kernel side lost or skipped, indexed by `counter::*`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Per-CPU sequence for connection ids.
#[map]
pub static CONN_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Where a data record is built before it is copied into EVENTS: one slot per CPU, indexed by
/// CPU id. A plain array, not a per-CPU one, because the slot is larger than the 32 KiB per-CPU
/// value limit. Nesting on one CPU cannot happen: the kernel does not run a tracing program
/// while another one is active on the same CPU (bpf_prog_active).
#[map]
pub static SCRATCH: Array<DataRecord> = Array::with_max_entries(256, 0);

/// A data record under construction.
#[repr(C)]
pub struct DataRecord {
    pub event: DataEvent,
    pub payload: [u8; SCRATCH_PAYLOAD],
}

/// Runtime settings (set by user space before load).
#[no_mangle]
pub static CONFIG: Config = Config {
    capture_bytes: 4096,
    trace_all: 1,
    _pad: [0; 3],
};

/// Kernel struct offsets from BTF (set by user space before load).
#[no_mangle]
pub static OFFSETS: KernelOffsets = KernelOffsets {
    task_files: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_inode: 0,
    file_private_data: 0,
    inode_mode: 0,
    socket_type: 0,
    socket_sk: 0,
    sk_family: 0,
    sk_num: 0,
    sk_dport: 0,
    sk_rcv_saddr: 0,
    sk_daddr: 0,
    sk_v6_rcv_saddr: 0,
    sk_v6_daddr: 0,
    valid: 0,
};

#[inline(always)]
pub fn config() -> Config {
    // SAFETY: reading a global; volatile so the compiler does not fold the load-time value.
    unsafe { core::ptr::read_volatile(&CONFIG) }
}

#[inline(always)]
pub fn offsets() -> KernelOffsets {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

/// bpf_ringbuf_query / output flags (include/uapi/linux/bpf.h).
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
/// Unread bytes in the ring buffer before a record wakes the reader.
const WAKEUP_BYTES: u64 = 256 * 1024;

/// Flags for writing a record: do not wake user space for every record (a wake-up costs more
/// than handling the record); wake it once a backlog builds. User space also drains on a short
/// timer, so a quiet trickle of records is never stranded.
#[inline(always)]
pub fn output_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

#[inline(always)]
pub fn count(idx: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *p += 1 };
    }
}

/// Processes user space recognised as Go with the register ABI (Go >= 1.17 on amd64, where R14
/// holds the current goroutine's `g`): tgid → 1. Filled by user space (`agent::tls`), removed by
/// the kernel at exit and exec. Every other process pays one failed lookup per captured record.
/// LRU: an exit the kernel did not see (the leader thread ended first) cannot fill it; an
/// evicted Go process only loses its goroutines (its calls fall back to the process scope).
#[map]
pub static GO_PROCS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(16384, 0);

/// `net/http.(*persistConn).writeLoop` goroutines, by (pid, g): the connection they write for
/// (see `goctx`). LRU: a writeLoop ends with its connection, without a probe.
#[map]
pub static GO_WRITER: LruHashMap<GoKey, GoWriter> = LruHashMap::with_max_entries(16384, 0);

/// The goroutine that last called `net/http.(*persistConn).roundTrip`, by (pid, `*persistConn`
/// in `GoKey::g`): whom that connection's writeLoop writes for (see `goctx`).
#[map]
pub static GO_CALLER: LruHashMap<GoKey, u64> = LruHashMap::with_max_entries(16384, 0);
