//! Cross-node trace context: writing a W3C `traceparent` into outgoing plaintext HTTP/1
//! requests that carry none, so a server traced by another node's agent joins the trace.
//!
//! Two programs, both attached only when `propagation.inject_http1` is on:
//! - `inject_sockops` (cgroup v2 sock_ops): at `TCP_CONNECT_CB`, which runs inside connect() in
//!   the caller's context, it remembers the socket's cookie if the calling process may be
//!   injected (traced, connect seen by `conn_enter_connect`, not excluded by user space, and,
//!   for a process that serves, connecting while its thread serves a request); at `ACTIVE_ESTABLISHED_CB` it puts only remembered sockets into
//!   `INJECT_SOCKS` (the kernel allows SOCKHASH inserts only from the *_ESTABLISHED callbacks).
//!   Few sockets go in: on kernels >= 6.12 a socket in a sockhash reports FIONREAD differently.
//! - `inject_sk_msg` (sk_msg verdict on `INJECT_SOCKS`), run by sendmsg/write in the sender's
//!   context: if the message starts with a complete HTTP/1 request head without a traceparent
//!   and a syscall of this thread is being traced, it chooses the trace (below) and a new
//!   client span id, inserts the header after the request line and outputs an `InjectEvent`, which
//!   precedes the syscall's data record in the ring buffer (`report`). Otherwise the message
//!   passes untouched and the reason is counted. (Reporting from the syscall's exit instead
//!   made the data exit programs too complex for the verifier.)
//!
//! The trace: a process that never accepted a connection is a pure client, and its request
//! starts a new trace (stage 1). A process that serves (stage 2) passes on the trace of the
//! request its sending thread is handling, as `serverctx` tracks it; when the thread has no
//! request open, or is an event loop, the message is left alone (counted): the call may be
//! for any request. This module does not decide any span's parent; user space does, and
//! checks it agrees. It never changes what the sending application sees: the data record
//! still carries the application's own bytes.

use agent_common::{
    inject_counter, Direction, EventKind, InjectEvent, IoArgs, TRACEPARENT_HEADER_LEN,
};
use aya_ebpf::{
    bindings::{sk_action::SK_PASS, BPF_ANY, BPF_NOEXIST},
    cty::c_void,
    helpers::generated::{
        bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_msg_pull_data, bpf_probe_read_kernel,
    },
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{LruHashMap, PerCpuArray, ProgramArray, SockHash},
    programs::{SkMsgContext, SockOpsContext},
};

use crate::conn::header;
use crate::maps::{output_flags, ACTIVE_CONNECT, ACTIVE_IO, EVENTS};

/// Bytes of a message the kernel scans for a request head. A head longer than this is not
/// injected (counted as incomplete). Power of two: indices are masked with `HEAD_MAX - 1`.
pub const HEAD_MAX: usize = 1024;
const TP_LEN: usize = TRACEPARENT_HEADER_LEN as usize;
/// Bytes of an injected message made one linear piece (the helper copies at most a page).
const LINEAR_MAX: usize = 4096;

const BPF_SOCK_OPS_TCP_CONNECT_CB: u32 = 3;
const BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: u32 = 4;

/// Client sockets whose sends the sk_msg program sees, keyed by socket cookie. The kernel
/// removes a socket from it when the socket closes.
#[map]
pub static INJECT_SOCKS: SockHash<u64> = SockHash::with_max_entries(16384, 0);

/// Cookies of sockets whose connect() was found eligible, until they are established.
#[map]
pub static INJECT_PENDING: LruHashMap<u64, u32> = LruHashMap::with_max_entries(4096, 0);

/// Process → `EXCLUDED` (user space: Go programs, whose goroutines move between threads;
/// configured opt-outs) or `SERVED` (accepted a connection, set by `conn_exit_accept`: its
/// calls may be for a request it serves, see `serverctx`). Absent: a pure client.
#[map]
pub static INJECT_DENY: LruHashMap<u32, u8> = LruHashMap::with_max_entries(16384, 0);

/// The syscall (its entry ns) a thread (pid_tgid) last injected into: one syscall's bytes may
/// reach sk_msg in several messages, and only the first may start a request.
#[map]
pub static INJECT_STASH: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

/// Indexed by `inject_counter::*`.
#[map]
pub static INJECT_COUNTERS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(inject_counter::COUNT, 0);

/// Where sk_msg copies the head it scans, one slot per CPU (sk_msg does not nest on a CPU).
#[map]
pub static INJECT_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

use agent_common::inject_class::{EXCLUDED, SERVED};

#[repr(C)]
pub struct Scratch {
    pub head: [u8; HEAD_MAX],
    word: u64,
    tp: [u8; TP_LEN + 2],
    /// First half → second half of the verdict program: the request line's end, the size.
    line_end: u64,
    size: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Stash {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
    _pad: [u8; 7],
}

/// Injection settings (set by user space before load).
#[no_mangle]
pub static INJECT: agent_common::InjectConfig = agent_common::InjectConfig {
    enabled: 0,
    parent_based: 1,
    root_threshold: 1 << 56,
    secret: 0,
};

#[inline(always)]
pub fn settings() -> agent_common::InjectConfig {
    // SAFETY: reading a global; volatile so the compiler does not fold the load-time value.
    unsafe { core::ptr::read_volatile(&INJECT) }
}

#[inline(always)]
pub fn count(idx: u32) {
    if let Some(p) = INJECT_COUNTERS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *p += 1 };
    }
}

/// A process that served a connection is no longer a pure client (see `INJECT_DENY`); an
/// exclusion stays.
#[inline(always)]
pub fn note_server(pid: u32) {
    let _ = INJECT_DENY.insert(&pid, &SERVED, BPF_NOEXIST as u64);
}

/// The sampled flag of a root of `trace_id`: its last 56 bits below `threshold`
/// (`InjectConfig::root_threshold`).
#[inline(always)]
pub fn root_sampled(trace_id: &[u8; 16], threshold: u64) -> u8 {
    let mut random56: u64 = 0;
    let mut j = 9;
    while j < 16 {
        random56 = (random56 << 8) | trace_id[j] as u64;
        j += 1;
    }
    (random56 < threshold) as u8
}

pub fn sockops(ctx: &SockOpsContext) -> Result<(), i64> {
    if settings().enabled == 0 {
        return Ok(());
    }
    let op = ctx.op();
    if op == BPF_SOCK_OPS_TCP_CONNECT_CB {
        let pid_tgid = bpf_get_current_pid_tgid();
        let pid = (pid_tgid >> 32) as u32;
        // A connect() the connection tracker saw: traced process, real syscall (not a
        // kernel-internal socket), and not denied.
        // A serving process's socket only when its thread connects while serving a request
        // (a pool connected at start-up is not): fewer sockets in the sockhash.
        // SAFETY: plain map lookups.
        let class = unsafe { INJECT_DENY.get(&pid) }.copied();
        let eligible = unsafe { ACTIVE_CONNECT.get(&pid_tgid) }.is_some()
            && match class {
                Some(EXCLUDED) => false,
                Some(_) => crate::serverctx::serving(pid_tgid),
                None => true,
            };
        if !eligible {
            count(inject_counter::CONNECT_NOT_ELIGIBLE);
            return Ok(());
        }
        // SAFETY: the sock_ops context is a valid argument for this helper.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.ops as *mut c_void) };
        if INJECT_PENDING
            .insert(&cookie, &pid, BPF_ANY as u64)
            .is_err()
        {
            count(inject_counter::SOCKETS_ADD_FAILED);
        }
    } else if op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        // SAFETY: as above.
        let mut cookie = unsafe { bpf_get_socket_cookie(ctx.ops as *mut c_void) };
        // SAFETY: plain map lookup.
        if unsafe { INJECT_PENDING.get(&cookie) }.is_none() {
            return Ok(());
        }
        let _ = INJECT_PENDING.remove(&cookie);
        // SAFETY: ctx.ops is the live bpf_sock_ops of this callback.
        match INJECT_SOCKS.update(&mut cookie, unsafe { &mut *ctx.ops }, BPF_ANY as u64) {
            Ok(()) => count(inject_counter::SOCKETS_ADDED),
            Err(_) => count(inject_counter::SOCKETS_ADD_FAILED),
        }
    }
    Ok(())
}

/// Why a message is left alone.
enum Skip {
    NotHttp1,
    Incomplete,
    HasTraceparent,
    Context,
    Helper,
    ServerIdle,
    ServerConcurrent,
}

#[inline(always)]
fn count_skip(why: Skip) {
    count(match why {
        Skip::NotHttp1 => inject_counter::SKIP_NOT_HTTP1,
        Skip::Incomplete => inject_counter::SKIP_HEAD_INCOMPLETE,
        Skip::HasTraceparent => inject_counter::SKIP_HAS_TRACEPARENT,
        Skip::Context => inject_counter::SKIP_CONTEXT_UNKNOWN,
        Skip::Helper => inject_counter::SKIP_HELPER_FAILED,
        Skip::ServerIdle => inject_counter::SKIP_SERVER_IDLE,
        Skip::ServerConcurrent => inject_counter::SKIP_SERVER_CONCURRENT,
    });
}

/// The verdict program's first half: whether the message starts a request head that may be
/// injected. True: the entry function tail-calls `write` (`inject_sk_msg_write`), with the
/// head's facts in this CPU's scratch slot. Two programs because the verifier walks what
/// follows the head scan once per way out of its loops: the second half, verified on its own,
/// stays far from the instruction limit.
#[inline(always)]
pub fn check(ctx: &SkMsgContext) -> bool {
    match try_sk_msg(ctx) {
        Ok(()) => true,
        Err(why) => {
            count_skip(why);
            false
        }
    }
}

/// Where the first half leaves its findings for the second.
#[map]
pub static INJECT_PROG: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// From the first half's entry function: continues in `inject_sk_msg_write`.
#[inline(always)]
pub fn tail_call(ctx: &SkMsgContext) {
    // SAFETY: slot 0 holds `inject_sk_msg_write` (an sk_msg program, as the caller); if the
    // call fails the caller goes on and passes the message unchanged.
    unsafe { INJECT_PROG.tail_call(ctx, 0) };
    count(inject_counter::SKIP_HELPER_FAILED);
}

/// The verdict program's second half: chooses the ids, inserts the header, reports it.
/// Always passes the message.
#[inline(always)]
pub fn write(ctx: &SkMsgContext) -> u32 {
    if let Err(why) = try_write(ctx) {
        count_skip(why);
    }
    SK_PASS
}

fn try_sk_msg(ctx: &SkMsgContext) -> Result<(), Skip> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // The ids must reach user space: only a send whose syscall the data probes follow.
    // SAFETY: plain map lookup of a Copy value.
    let args: IoArgs = match unsafe { ACTIVE_IO.get(&pid_tgid) } {
        Some(a) if a.direction == Direction::Egress as u8 => *a,
        _ => return Err(Skip::Context),
    };
    // SAFETY: plain map lookup; an earlier message of this same syscall was injected already.
    if let Some(&s) = unsafe { INJECT_STASH.get(&pid_tgid) } {
        if s == args.enter_ts {
            return Err(Skip::NotHttp1);
        }
    }
    let size = ctx.size() as usize;
    if size < 16 {
        return Err(Skip::NotHttp1);
    }
    let n = if size > HEAD_MAX { HEAD_MAX } else { size };
    // SAFETY: the sk_msg context is valid for the helper.
    if unsafe { bpf_msg_pull_data(ctx.msg, 0, n as u32, 0) } != 0 {
        return Err(Skip::Helper);
    }
    let data = ctx.data();
    let avail = ctx.data_end().saturating_sub(data);
    let n = if avail < n { avail } else { n };
    if n < 16 {
        return Err(Skip::NotHttp1);
    }
    let scratch = INJECT_SCRATCH.get_ptr_mut(0).ok_or(Skip::Helper)?;
    // SAFETY: this CPU's slot; nothing else uses it while this program runs.
    let scratch: &mut Scratch = unsafe { &mut *scratch };
    let len = ((n - 1) & (HEAD_MAX - 1)) + 1;
    // SAFETY: dst is the scratch head (HEAD_MAX bytes, len <= HEAD_MAX); src is the pulled
    // linear message data, checked by the helper.
    if unsafe {
        bpf_probe_read_kernel(
            scratch.head.as_mut_ptr() as *mut c_void,
            len as u32,
            data as *const c_void,
        )
    } != 0
    {
        return Err(Skip::Helper);
    }
    let line_end = request_line_end(scratch, len).ok_or(Skip::NotHttp1)?;
    scan_headers(scratch, len, line_end)?;
    scratch.line_end = line_end as u64;
    scratch.size = size as u64;
    Ok(())
}

fn try_write(ctx: &SkMsgContext) -> Result<(), Skip> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: plain map lookup of a Copy value (checked by the first half).
    let args: IoArgs = match unsafe { ACTIVE_IO.get(&pid_tgid) } {
        Some(a) => *a,
        None => return Err(Skip::Context),
    };
    let scratch = INJECT_SCRATCH.get_ptr_mut(0).ok_or(Skip::Helper)?;
    // SAFETY: this CPU's slot, filled by the first half just before the tail call.
    let scratch: &mut Scratch = unsafe { &mut *scratch };
    let line_end = (scratch.line_end as usize) & (HEAD_MAX - 1);
    let size = scratch.size as usize;
    // SAFETY: plain map lookup of a Copy value.
    let class = unsafe { INJECT_DENY.get(&((pid_tgid >> 32) as u32)) }.copied();
    if class == Some(EXCLUDED) {
        return Err(Skip::Context); // excluded after it connected
    }

    let mut stash = Stash {
        trace_id: [0; 16],
        span_id: [0; 8],
        flags: 0,
        _pad: [0; 7],
    };
    // The trace: the thread's request when the process serves (stage 2), else a new root.
    let served = class == Some(SERVED);
    if served {
        // SAFETY: plain map lookup of a Copy value.
        match unsafe { crate::serverctx::SERVER_CTX.get(&pid_tgid) }.copied() {
            Some(c) if c.state == crate::serverctx::OPEN => {
                stash.trace_id = c.trace_id;
                stash.flags = c.flags;
            }
            Some(c) if c.state == crate::serverctx::EVENT_LOOP => {
                return Err(Skip::ServerConcurrent)
            }
            _ => return Err(Skip::ServerIdle),
        }
    }
    let mut i = 0;
    while i < 4 && !served {
        // SAFETY: no preconditions.
        let r = unsafe { bpf_get_prandom_u32() }.to_ne_bytes();
        stash.trace_id[i * 4] = r[0];
        stash.trace_id[i * 4 + 1] = r[1];
        stash.trace_id[i * 4 + 2] = r[2];
        stash.trace_id[i * 4 + 3] = r[3];
        i += 1;
    }
    // SAFETY: no preconditions.
    let a = unsafe { bpf_get_prandom_u32() } as u64;
    // SAFETY: no preconditions.
    let b = unsafe { bpf_get_prandom_u32() } as u64;
    let mut sid = (a << 32) | b;
    if sid == 0 {
        sid = 1; // W3C: an all-zero parent-id is invalid
    }
    stash.span_id = sid.to_be_bytes();
    if !served {
        stash.flags = root_sampled(&stash.trace_id, settings().root_threshold);
    }

    render(&mut scratch.tp, &stash);
    // SAFETY: the sk_msg context is valid for the helper.
    if unsafe {
        aya_ebpf::helpers::generated::bpf_msg_push_data(ctx.msg, line_end as u32, TP_LEN as u32, 0)
    } != 0
    {
        return Err(Skip::Helper);
    }
    // SAFETY: as above. After this, data..data_end is exactly the inserted gap.
    let pulled =
        unsafe { bpf_msg_pull_data(ctx.msg, line_end as u32, (line_end + TP_LEN) as u32, 0) } == 0;
    let data = ctx.data();
    if !pulled || data + TP_LEN > ctx.data_end() {
        // The gap is in the message but cannot be written: the peer would get garbage.
        // SAFETY: as above.
        unsafe {
            aya_ebpf::helpers::generated::bpf_msg_pop_data(
                ctx.msg,
                line_end as u32,
                TP_LEN as u32,
                0,
            )
        };
        return Err(Skip::Helper);
    }
    let dst = data as *mut u8;
    let mut k = 0;
    while k < TP_LEN {
        // SAFETY: data + TP_LEN <= data_end was checked just above.
        unsafe { *dst.add(k) = scratch.tp[k] };
        k += 1;
    }
    // The insertion left the message in three pieces (before, header, after), which TCP may
    // send as separate segments: the server could then read the head in several reads, and
    // a serving peer's kernel (`serverctx`) cannot open a request it did not read whole. One
    // linear piece for the head (and what follows, up to a page) keeps it in one segment.
    let total = size + TP_LEN;
    let linear = if total > LINEAR_MAX {
        LINEAR_MAX
    } else {
        total
    };
    // SAFETY: the sk_msg context is valid for the helper; failing leaves the pieces as they
    // are, a correct message.
    unsafe { bpf_msg_pull_data(ctx.msg, 0, linear as u32, 0) };
    let _ = INJECT_STASH.insert(&pid_tgid, &args.enter_ts, BPF_ANY as u64);
    count(inject_counter::INJECTED);
    if served {
        count(inject_counter::INJECTED_IN_REQUEST);
    }
    report(pid_tgid, &args, &stash);
    Ok(())
}

/// Tells user space what was inserted. Output here, in the sender's syscall, so the record
/// precedes the syscall's data record in the ring buffer (the exit writes that one later).
/// If the send then fails, no data record follows and user space lets the report expire.
#[inline(always)]
fn report(pid_tgid: u64, args: &IoArgs, stash: &Stash) {
    // SAFETY: no preconditions.
    let ts = unsafe { bpf_ktime_get_ns() };
    let ev = InjectEvent {
        header: header(
            EventKind::Inject,
            pid_tgid,
            args.conn_id,
            Direction::Egress as u8,
            ts,
        ),
        trace_id: stash.trace_id,
        span_id: stash.span_id,
        flags: stash.flags,
        _pad: [0; 3],
        injected_len: TRACEPARENT_HEADER_LEN,
        enter_ts_ns: args.enter_ts,
    };
    if EVENTS.output::<InjectEvent>(&ev, output_flags()).is_err() {
        crate::maps::count(agent_common::counter::RINGBUF_FULL);
    }
}

#[inline(always)]
pub fn at(buf: &[u8; HEAD_MAX], i: usize) -> u8 {
    buf[i & (HEAD_MAX - 1)]
}

/// 1 when `a == b`, else 0, without a branch. BPF has no conditional set: every `==` in a
/// loop body is a branch, and each branch a path the verifier walks for every iteration.
#[inline(always)]
pub fn eq(a: u8, b: u8) -> u64 {
    (((a ^ b) as u64).wrapping_sub(1)) >> 63
}

/// Hides a value from the verifier by a round trip through the scratch map: after a loop
/// exits at iteration `i`, the rest of the program would otherwise be verified once per `i`.
#[inline(always)]
pub fn launder(scratch: &mut Scratch, v: u64) -> u64 {
    // SAFETY: plain volatile accesses to this CPU's slot.
    unsafe {
        core::ptr::write_volatile(&mut scratch.word, v);
        core::ptr::read_volatile(&scratch.word)
    }
}

/// The offset just past the request line's CRLF when `head[..len]` starts with
/// `METHOD SP target SP HTTP/1.x CRLF` (RFC 9112 §3), else None.
#[inline(always)]
pub fn request_line_end(scratch: &mut Scratch, len: usize) -> Option<usize> {
    let buf = &scratch.head;
    // Method: 1..=16 uppercase letters, then SP.
    let mut i = 0;
    while i < 17 {
        let c = at(buf, i);
        if c == b' ' {
            break;
        }
        if !c.is_ascii_uppercase() {
            return None;
        }
        i += 1;
    }
    // Laundered: otherwise everything below is verified once per method length.
    let i = launder(scratch, i as u64) as usize;
    if i == 0 || i >= 17 {
        return None;
    }
    let buf = &scratch.head;
    // Target: visible ASCII up to SP. `end` is where it stops (SP or not), unknown to the
    // verifier afterwards.
    let mut j = i + 1;
    while j < HEAD_MAX - 16 {
        let c = at(buf, j);
        if c <= b' ' || c == 0x7f {
            break;
        }
        j += 1;
    }
    let j = launder(scratch, j as u64) as usize;
    let buf = &scratch.head;
    if j >= HEAD_MAX - 16 || j + 11 > len || at(buf, j) != b' ' || j == i + 1 {
        return None;
    }
    let v = [
        at(buf, j + 1),
        at(buf, j + 2),
        at(buf, j + 3),
        at(buf, j + 4),
        at(buf, j + 5),
        at(buf, j + 6),
        at(buf, j + 7),
        at(buf, j + 8),
        at(buf, j + 9),
        at(buf, j + 10),
    ];
    if v[0] != b'H'
        || v[1] != b'T'
        || v[2] != b'T'
        || v[3] != b'P'
        || v[4] != b'/'
        || v[5] != b'1'
        || v[6] != b'.'
        || !v[7].is_ascii_digit()
        || v[8] != b'\r'
        || v[9] != b'\n'
    {
        return None;
    }
    Some(j + 11)
}

/// `scan_headers` outcomes, laundered through the scratch map.
const FOUND: u64 = 1;
const HAS_TRACEPARENT: u64 = 2;
const INCOMPLETE: u64 = 3;

/// Checks the header block from `line_end`: it must end (an empty line) within the scanned
/// bytes and hold no `traceparent` field (any case).
#[inline(always)]
fn scan_headers(scratch: &mut Scratch, len: usize, line_end: usize) -> Result<(), Skip> {
    const NAME: &[u8; 12] = b"traceparent:";
    let buf = &scratch.head;
    // Position `i` is a line start when byte i-1 is LF: the request line ends in CRLF, so
    // line_end - 1 is LF.
    let mut result = INCOMPLETE;
    let mut i = line_end;
    while i < HEAD_MAX - 16 {
        if i + 1 >= len {
            break;
        }
        let start = eq(at(buf, i - 1), b'\n');
        let c = at(buf, i);
        if start & eq(c, b'\r') & eq(at(buf, i + 1), b'\n') != 0 {
            result = FOUND;
            break;
        }
        // ORing the differences folded to lower case: zero only for "traceparent:". A
        // control byte that folds onto a letter only makes us skip a request: the safe side.
        let mut diff = 0u8;
        let mut k = 0;
        while k < 12 {
            diff |= (at(buf, i + k) | 0x20) ^ NAME[k];
            k += 1;
        }
        if start & eq(diff, 0) != 0 {
            result = HAS_TRACEPARENT;
            break;
        }
        i += 1;
    }
    match launder(scratch, result) {
        FOUND => Ok(()),
        HAS_TRACEPARENT => Err(Skip::HasTraceparent),
        _ => Err(Skip::Incomplete),
    }
}

/// Writes `traceparent: 00-<trace>-<span>-<flags>\r\n` (W3C Trace Context §3.2).
#[inline(always)]
fn render(out: &mut [u8; TP_LEN + 2], s: &Stash) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    const PREFIX: &[u8; 16] = b"traceparent: 00-";
    let mut k = 0;
    while k < 16 {
        out[k] = PREFIX[k];
        k += 1;
    }
    let mut i = 0;
    while i < 16 {
        out[16 + 2 * i] = HEX[(s.trace_id[i] >> 4) as usize];
        out[17 + 2 * i] = HEX[(s.trace_id[i] & 15) as usize];
        i += 1;
    }
    out[48] = b'-';
    let mut i = 0;
    while i < 8 {
        out[49 + 2 * i] = HEX[(s.span_id[i] >> 4) as usize];
        out[50 + 2 * i] = HEX[(s.span_id[i] & 15) as usize];
        i += 1;
    }
    out[65] = b'-';
    out[66] = b'0';
    out[67] = HEX[(s.flags & 15) as usize];
    out[68] = b'\r';
    out[69] = b'\n';
}
