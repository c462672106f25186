//! Which goroutine a Go program's bytes were moved for: the evidence user space needs to give a
//! Go call the right parent when many requests are in flight (`agent::span::work`).
//!
//! Owns reading the goroutine at a syscall or TLS call and the two `net/http` Transport probes
//! that tie a connection's writer goroutine to the goroutine that asked for the write. Does not
//! own which processes are Go (user space fills `GO_PROCS`) or where the probes go
//! (`agent::tls` finds the functions and attaches them).
//!
//! In Go's register ABI (Go >= 1.17, amd64) R14 holds the running goroutine's `g` in Go code,
//! and the syscall assembly leaves it alone: the task's saved user R14 at a syscall is the
//! goroutine that made it. `net/http`'s client does not write from the goroutine that makes the
//! request: `(*persistConn).roundTrip` (on the caller's goroutine) hands the request to the
//! connection's `(*persistConn).writeLoop` goroutine. Both functions take the `*persistConn`
//! as their first argument (RAX), which links them without any struct offset.

use agent_common::{
    conn_key, counter, Direction, EventKind, GoKey, GoSpawnEvent, GoWriter, IoArgs, Role,
};
use aya_ebpf::{
    helpers::generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::map,
    maps::LruHashMap,
    programs::ProbeContext,
};

use crate::conn::header;
use crate::maps::{count, output_flags, CONNS, EVENTS, GO_CALLER, GO_PROCS, GO_WRITER};

/// Thread (pid_tgid) inside `runtime.newproc1` → the goroutine that executed the `go`
/// statement. newproc1 runs on the system stack of the caller's thread and cannot be
/// rescheduled, so its returns run on the same thread.
#[map]
static GO_SPAWNING: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

/// x86-64 `struct pt_regs` starts `r15, r14, ...`.
const PT_REGS_R14: usize = 1;

/// The current task's user-mode R14 (saved at kernel entry: a syscall or a uprobe's trap).
#[inline(always)]
fn user_r14() -> u64 {
    // SAFETY: no preconditions; both helpers are allowed in tracing programs (Linux 5.15+).
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u64;
    if regs.is_null() {
        return 0;
    }
    // SAFETY: the helper checks the kernel address.
    unsafe { bpf_probe_read_kernel(regs.wrapping_add(PT_REGS_R14)) }.unwrap_or(0)
}

/// The goroutine a data record of `args` is for: 0 for a process not in `GO_PROCS`; for a
/// write by a writeLoop goroutine, the goroutine that called `roundTrip` on its connection
/// (when seen, else 0: unknown); otherwise the goroutine that made the call.
#[inline(always)]
pub fn goroutine(pid_tgid: u64, args: &IoArgs) -> u64 {
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: plain map lookup.
    if unsafe { GO_PROCS.get(&pid) }.is_none() {
        return 0;
    }
    let g = user_r14();
    if g == 0 {
        return 0;
    }
    let key = GoKey { g, pid, _pad: 0 };
    let Some(w) = GO_WRITER.get_ptr_mut(&key) else {
        return g;
    };
    // SAFETY: a pointer to a live map value; only this goroutine's calls write it.
    let writer: GoWriter = unsafe { *w };
    // SAFETY: plain map lookup of a Copy value.
    let client = match unsafe { CONNS.get(&conn_key(pid, args.fd)) } {
        Some(i) => i.conn_id == args.conn_id && i.role == Role::Client as u8,
        None => false,
    };
    let mine = writer.conn_id == 0 || writer.conn_id == args.conn_id;
    if !client || !mine {
        // A writeLoop only ever writes its own client connection: this `g` belongs to
        // another goroutine now.
        let _ = GO_WRITER.remove(&key);
        count(counter::GO_WRITER_STALE);
        return g;
    }
    if args.direction != Direction::Egress as u8 {
        return g;
    }
    if writer.conn_id == 0 {
        // SAFETY: as above.
        unsafe { (*w).conn_id = args.conn_id };
    }
    let caller_key = GoKey {
        g: writer.pconn,
        pid,
        _pad: 0,
    };
    // SAFETY: plain map lookup of a Copy value.
    match unsafe { GO_CALLER.get(&caller_key) } {
        Some(&caller) if caller != 0 => {
            count(counter::GO_WRITE_VIA_TRANSPORT);
            caller
        }
        _ => {
            // Not the writeLoop's own g: it writes for every request of its connection (and
            // inherited the one that dialed it, see `agent::span::work`). Unknown: the
            // process scope decides.
            count(counter::GO_CALLER_MISSING);
            0
        }
    }
}

/// Entry of `net/http.(*persistConn).writeLoop`: the new goroutine (R14) writes for the
/// `*persistConn` in RAX.
#[inline(always)]
pub fn enter_write_loop(ctx: &ProbeContext) -> Result<(), i64> {
    // SAFETY: a uprobe's context is the task's saved user registers.
    let regs = unsafe { &*ctx.regs };
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let key = GoKey {
        g: regs.r14,
        pid,
        _pad: 0,
    };
    let writer = GoWriter {
        pconn: regs.rax,
        conn_id: 0,
    };
    GO_WRITER.insert(&key, &writer, 0).map_err(|e| e as i64)
}

/// Entry of `net/http.(*persistConn).roundTrip`: the goroutine in R14 asks the `*persistConn`
/// in RAX to send its request.
#[inline(always)]
pub fn enter_round_trip(ctx: &ProbeContext) -> Result<(), i64> {
    // SAFETY: as above.
    let regs = unsafe { &*ctx.regs };
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let (pconn, g) = (regs.rax, regs.r14);
    // The caller is no writeLoop: an entry for its `g` is a dead writer's.
    let _ = GO_WRITER.remove(&GoKey { g, pid, _pad: 0 });
    let key = GoKey {
        g: pconn,
        pid,
        _pad: 0,
    };
    GO_CALLER.insert(&key, &g, 0).map_err(|e| e as i64)
}

/// Entry of `runtime.newproc1(fn *funcval, callergp *g, callerpc uintptr) *g` (Go >= 1.18;
/// user space attaches it only then): `callergp` is in RBX. R14 is no help here: newproc1
/// runs on the system stack, where R14 is the thread's g0.
#[inline(always)]
pub fn enter_newproc1(ctx: &ProbeContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: plain map lookup.
    if unsafe { GO_PROCS.get(&((pid_tgid >> 32) as u32)) }.is_none() {
        return Ok(());
    }
    // SAFETY: a uprobe's context is the task's saved user registers.
    let parent = unsafe { (*ctx.regs).rbx };
    GO_SPAWNING
        .insert(&pid_tgid, &parent, 0)
        .map_err(|e| e as i64)
}

/// At each return of `runtime.newproc1`: the new goroutine is in RAX. Tells user space.
#[inline(always)]
pub fn exit_newproc1(ctx: &ProbeContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: plain map lookup of a Copy value.
    let Some(&parent) = (unsafe { GO_SPAWNING.get(&pid_tgid) }) else {
        return Ok(());
    };
    let _ = GO_SPAWNING.remove(&pid_tgid);
    // SAFETY: as above.
    let child = unsafe { (*ctx.regs).rax };
    // SAFETY: no preconditions.
    let ts = unsafe { bpf_ktime_get_ns() };
    let ev = GoSpawnEvent {
        header: header(EventKind::GoSpawn, pid_tgid, 0, Direction::None as u8, ts),
        parent,
        child,
    };
    if EVENTS.output::<GoSpawnEvent>(&ev, output_flags()).is_err() {
        count(counter::RINGBUF_FULL);
    }
    Ok(())
}

/// The process exited or exec'd another program: its goroutines are gone (user space marks a
/// new Go program again).
#[inline(always)]
pub fn forget(pid: u32) {
    let _ = GO_PROCS.remove(&pid);
}
