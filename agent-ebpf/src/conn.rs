//! Connection lifecycle: connect/accept create a tracked connection, close and process exit end it.

use agent_common::{
    conn_key, counter, pid_filter, ConnCloseEvent, ConnInfo, ConnOpenEvent, EventHeader, EventKind,
    ProcExitEvent, Role, EVENT_VERSION,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
    },
    programs::TracePointContext,
};

use crate::maps::{
    cgroup_muted, config, count, output_flags, ACTIVE_CONNECT, CONNS, CONN_SEQ, EVENTS, PID_FILTER,
};
use crate::sock::tcp_endpoints;

/// Offsets in the syscall tracepoint records (see /sys/kernel/tracing/events/syscalls/*/format).
pub const ARG0: usize = 16;
pub const ARG1: usize = 24;
pub const ARG2: usize = 32;
pub const ARG3: usize = 40;
pub const ARG4: usize = 48;
pub const RET: usize = 16;
const EINPROGRESS: i64 = -115;

/// Whether the process is traced at all (kernel-side filter: untraced processes cost one lookup).
#[inline(always)]
pub fn traced(pid: u32) -> bool {
    // SAFETY: plain map lookup of a Copy value.
    match unsafe { PID_FILTER.get(&pid) } {
        Some(&pid_filter::EXCLUDE) => false,
        Some(&pid_filter::INCLUDE) => true,
        _ => config().trace_all != 0,
    }
}

#[inline(always)]
pub fn header(
    kind: EventKind,
    pid_tgid: u64,
    conn_id: u64,
    direction: u8,
    ts_ns: u64,
) -> EventHeader {
    EventHeader {
        kind: kind as u8,
        version: EVENT_VERSION,
        direction,
        _pad0: 0,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        _pad1: 0,
        ts_ns,
        conn_id,
    }
}

#[inline(always)]
fn next_conn_id() -> u64 {
    // SAFETY: reading the CPU id has no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() } as u64;
    let seq = match CONN_SEQ.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        Some(p) => unsafe {
            *p += 1;
            *p
        },
        None => 0,
    };
    // Bit 63 stays clear (user-space ids set it); 15 bits of CPU, 48 bits of sequence.
    ((cpu & 0x7fff) << 48) | (seq & 0xffff_ffff_ffff)
}

pub fn try_enter_connect(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !traced((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    // SAFETY: ARG0 is within the sys_enter_connect record.
    let fd: u64 = unsafe { ctx.read_at(ARG0) }.map_err(|e| e as i64)?;
    ACTIVE_CONNECT
        .insert(&pid_tgid, &(fd as u32), 0)
        .map_err(|e| e as i64)?;
    Ok(())
}

pub fn try_exit_connect(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: lookup of a Copy value.
    let fd = match unsafe { ACTIVE_CONNECT.get(&pid_tgid) } {
        Some(fd) => *fd,
        None => return Ok(()),
    };
    let _ = ACTIVE_CONNECT.remove(&pid_tgid);
    // SAFETY: RET is within the sys_exit record.
    let ret: i64 = unsafe { ctx.read_at(RET) }.map_err(|e| e as i64)?;
    // A non-blocking connect returns EINPROGRESS with the local port already bound.
    if ret != 0 && ret != EINPROGRESS {
        return Ok(());
    }
    open(pid_tgid, fd, Role::Client)
}

pub fn try_exit_accept(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !traced((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    // SAFETY: RET is within the sys_exit record.
    let ret: i64 = unsafe { ctx.read_at(RET) }.map_err(|e| e as i64)?;
    if ret < 0 {
        return Ok(());
    }
    crate::inject::note_server((pid_tgid >> 32) as u32);
    open(pid_tgid, ret as u32, Role::Server)
}

fn open(pid_tgid: u64, fd: u32, role: Role) -> Result<(), i64> {
    let ep = match tcp_endpoints(fd) {
        Some(ep) => ep,
        None => {
            // Not a TCP socket (UDP connect for DNS, unix sockets) or unreadable.
            return Ok(());
        }
    };
    if cgroup_muted() {
        count(counter::CGROUP_CONNS_SKIPPED);
        return Ok(());
    }
    let pid = (pid_tgid >> 32) as u32;
    let conn_id = next_conn_id();
    let info = ConnInfo {
        conn_id,
        role: role as u8,
        flags: 0,
        _pad: [0; 6],
    };
    if CONNS.insert(&conn_key(pid, fd), &info, 0).is_err() {
        count(counter::CONN_INSERT_FAILED);
        return Ok(());
    }
    // SAFETY: no preconditions.
    let ts = unsafe { bpf_ktime_get_ns() };
    let ev = ConnOpenEvent {
        header: header(EventKind::ConnOpen, pid_tgid, conn_id, 0, ts),
        fd,
        role: role as u8,
        family: ep.family as u8,
        _pad: [0; 2],
        local: ep.local,
        remote: ep.remote,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    if EVENTS.output::<ConnOpenEvent>(&ev, output_flags()).is_err() {
        count(counter::RINGBUF_FULL);
        count(counter::OPEN_LOST);
        // User space will never know this connection: copying its bytes would only fill the
        // ring further with records for an unknown connection.
        let _ = CONNS.remove(&conn_key(pid, fd));
    }
    Ok(())
}

pub fn try_enter_close(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: ARG0 is within the sys_enter_close record.
    let fd: u64 = unsafe { ctx.read_at(ARG0) }.map_err(|e| e as i64)?;
    let key = conn_key((pid_tgid >> 32) as u32, fd as u32);
    // SAFETY: lookup of a Copy value.
    let info = match unsafe { CONNS.get(&key) } {
        Some(i) => *i,
        None => return Ok(()),
    };
    let _ = CONNS.remove(&key);
    // SAFETY: no preconditions.
    let ts = unsafe { bpf_ktime_get_ns() };
    let ev = ConnCloseEvent {
        header: header(EventKind::ConnClose, pid_tgid, info.conn_id, 0, ts),
        fd: fd as u32,
        flags: crate::gap::record_flags(info.flags),
        _pad: [0; 3],
    };
    if EVENTS
        .output::<ConnCloseEvent>(&ev, output_flags())
        .is_err()
    {
        count(counter::RINGBUF_FULL);
        count(counter::CLOSE_LOST);
    }
    Ok(())
}

/// sched:sched_process_exit, for thread-group leaders of traced processes: user space drops the
/// process's connections and metadata (the kernel closes its sockets without a close syscall).
pub fn try_proc_exit(_ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // Every thread: a new thread given this id must not inherit its request.
    crate::serverctx::forget(pid_tgid);
    if (pid_tgid >> 32) as u32 != pid_tgid as u32 {
        return Ok(()); // a thread, not the process
    }
    crate::goctx::forget(pid_tgid as u32);
    notify_process(EventKind::ProcExit, pid_tgid, 0);
    Ok(())
}

/// sched_process_exec: a new program runs; user space looks for TLS libraries in it.
pub fn try_proc_exec(_ctx: &TracePointContext) -> Result<(), i64> {
    crate::goctx::forget((bpf_get_current_pid_tgid() >> 32) as u32);
    notify_process(
        EventKind::ProcExec,
        bpf_get_current_pid_tgid(),
        agent_common::PROC_EXEC_NEW_PROGRAM,
    );
    Ok(())
}

const PROT_EXEC: u64 = 4;

/// sys_enter_mmap of a file with PROT_EXEC: the dynamic loader (or dlopen) maps a library,
/// which may be a TLS library (Python loads libssl on `import ssl`, long after exec).
pub fn try_enter_mmap(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: ARG2 (prot) and ARG4 (fd) are within sys_enter_mmap's six arguments.
    let prot: u64 = unsafe { ctx.read_at(ARG2) }.map_err(|e| e as i64)?;
    // SAFETY: as above.
    let fd: i64 = unsafe { ctx.read_at(ARG4) }.map_err(|e| e as i64)?;
    if prot & PROT_EXEC == 0 || fd < 0 {
        return Ok(()); // anonymous or data mappings: by far the most mmaps
    }
    notify_process(EventKind::ProcExec, bpf_get_current_pid_tgid(), 0);
    Ok(())
}

fn notify_process(kind: EventKind, pid_tgid: u64, detail: u64) {
    let pid = (pid_tgid >> 32) as u32;
    if !traced(pid) {
        return;
    }
    // SAFETY: no preconditions.
    let ts = unsafe { bpf_ktime_get_ns() };
    let ev = ProcExitEvent {
        header: header(kind, pid_tgid, detail, 0, ts),
    };
    if EVENTS.output::<ProcExitEvent>(&ev, output_flags()).is_err() {
        count(counter::RINGBUF_FULL);
    }
}
