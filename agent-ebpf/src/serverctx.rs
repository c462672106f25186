//! Which request a server thread is handling, so that the requests it sends while handling it
//! carry that request's trace across nodes (injection stage 2; `inject` writes the header).
//!
//! Per thread, `SERVER_CTX` holds the request the thread last read on a connection it accepted:
//! - a read on a server connection that starts with an HTTP/1 request line (`parse`, reached
//!   by tail call from the read exits so their verification stays small) opens the thread's
//!   request. Its trace is that of the request's own `traceparent`, or, when it carries none
//!   the kernel can read, the trace id user space gives the request's SERVER span
//!   (`agent_common::derive_trace_id` of the connection and the record's time). Open only when
//!   the read holds the whole head and nothing beyond its body (`Content-Length`, else none):
//!   a split head or pipelined bytes leave the request unknown;
//! - the thread's first write on that connection (its response) closes it;
//! - a read on another server connection while a request is open, or a second request on the
//!   same one, marks the thread an event loop for good (several requests in flight on one
//!   thread): its calls are never injected, since which request one is for is unknown;
//! - the thread's exit forgets it (a new thread may get its id).
//!
//! The sk_msg program injects into a request of a serving process only while its thread's
//! request is open. User space checks the injected trace against the SERVER span it parents
//! the call under (`span::builder`): a disagreement leaves the call without a parent.

use agent_common::{derive_trace_id, inject_counter, Direction, EventKind, IoArgs, Role};
use aya_ebpf::{
    bindings::BPF_ANY,
    cty::c_void,
    helpers::generated::bpf_probe_read_kernel,
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id},
    macros::map,
    maps::{LruHashMap, PerCpuArray, ProgramArray},
    programs::TracePointContext,
};

use crate::inject::{self, at, eq, launder, Scratch, HEAD_MAX};
use crate::maps::SCRATCH;

/// A request is open: the thread's calls are for it.
pub const OPEN: u8 = 1;
/// The thread's last request was answered, or its extent was unknown.
pub const CLOSED: u8 = 2;
/// The thread has had two requests in flight at once: never injected again.
pub const EVENT_LOOP: u8 = 3;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ServerCtx {
    pub conn_id: u64,
    pub trace_id: [u8; 16],
    /// W3C trace flags for requests made for it (bit 0: sampled).
    pub flags: u8,
    /// `OPEN`, `CLOSED` or `EVENT_LOOP`.
    pub state: u8,
    pub _pad: [u8; 6],
}

/// Thread (pid_tgid) → the request it serves. LRU: a thread that went away ages out.
#[map]
pub static SERVER_CTX: LruHashMap<u64, ServerCtx> = LruHashMap::with_max_entries(16384, 0);

/// Slot 0: the `server_ctx` program, set by user space when injection is on.
#[map]
pub static SERVER_CTX_PROG: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Where `parse` copies the head it scans (the sk_msg program has its own).
#[map]
static CTX_SCRATCH: PerCpuArray<CtxScratch> = PerCpuArray::with_max_entries(1, 0);

/// After a read's data record was written: whether `parse` must see it (a server
/// connection's, with injection on).
#[inline(always)]
pub fn wants_read(args: &IoArgs) -> bool {
    args.role == Role::Server as u8 && inject::settings().enabled != 0
}

/// Continues in `parse` (from a read exit's entry function, after `wants_read`).
#[inline(always)]
pub fn tail_call(ctx: &TracePointContext) {
    // SAFETY: slot 0 holds `server_ctx` (a tracepoint program, as the caller); when it is
    // empty the helper fails and the caller goes on, to its end.
    unsafe { SERVER_CTX_PROG.tail_call(ctx, 0) };
}

/// After a write: the first one on the connection of the thread's open request is its
/// response, which closes it.
#[inline(always)]
pub fn after_write(pid_tgid: u64, args: &IoArgs) {
    if args.role != Role::Server as u8 || inject::settings().enabled == 0 {
        return;
    }
    if let Some(c) = SERVER_CTX.get_ptr_mut(&pid_tgid) {
        // SAFETY: a pointer to a live map value of this thread; only this thread writes it.
        unsafe {
            if (*c).state == OPEN && (*c).conn_id == args.conn_id {
                (*c).state = CLOSED;
            }
        }
    }
}

/// Whether the thread serves a request now (its connects may carry that request's calls).
#[inline(always)]
pub fn serving(pid_tgid: u64) -> bool {
    // SAFETY: plain map lookup.
    unsafe { SERVER_CTX.get(&pid_tgid) }.is_some_and(|c| c.state == OPEN)
}

/// The thread exits: its id may be given to a new thread, which must start with no request.
#[inline(always)]
pub fn forget(pid_tgid: u64) {
    if inject::settings().enabled != 0 {
        let _ = SERVER_CTX.remove(&pid_tgid);
    }
}

#[inline(always)]
fn set(pid_tgid: u64, c: &ServerCtx) {
    let _ = SERVER_CTX.insert(&pid_tgid, c, BPF_ANY as u64);
}

/// The `server_ctx` program's body: reads this CPU's data record slot, which the read exit
/// filled just before the tail call.
pub fn parse() -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let rec = SCRATCH.get(cpu).ok_or(())?;
    let h = &rec.event.header;
    if h.kind != EventKind::Data as u8
        || h.direction != Direction::Ingress as u8
        || h.tid != pid_tgid as u32
    {
        return Err(()); // not this read's record
    }
    let conn_id = h.conn_id;
    let ts_ns = h.ts_ns;
    let orig_len = rec.event.orig_len as u64;
    let len = rec.event.len as usize;
    // SAFETY: plain map lookup of a Copy value.
    if let Some(p) = unsafe { SERVER_CTX.get(&pid_tgid) } {
        if p.state == EVENT_LOOP {
            return Ok(());
        }
        if p.state == OPEN && p.conn_id != conn_id {
            return event_loop(pid_tgid, conn_id);
        }
    }
    if len < 16 {
        return Ok(()); // too short to start a request head this side reads
    }
    let cs = CTX_SCRATCH.get_ptr_mut(0).ok_or(())?;
    // SAFETY: this CPU's slot; nothing else uses it while this program runs.
    let cs: &mut CtxScratch = unsafe { &mut *cs };
    let n = if len > HEAD_MAX { HEAD_MAX } else { len };
    let n = ((n - 1) & (HEAD_MAX - 1)) + 1;
    // SAFETY: dst is the scratch head (HEAD_MAX bytes, n <= HEAD_MAX); src is the record's
    // payload, at least `len >= n` bytes of it written.
    if unsafe {
        bpf_probe_read_kernel(
            cs.s.head.as_mut_ptr() as *mut c_void,
            n as u32,
            rec.payload.as_ptr() as *const c_void,
        )
    } != 0
    {
        return Err(());
    }
    let Some(line_end) = inject::request_line_end(&mut cs.s, n) else {
        return Ok(()); // a body, or not HTTP/1
    };
    // Looked up again rather than held across the loops (which would double the states the
    // verifier walks): a request while this connection's previous one is open is pipelined.
    // SAFETY: plain map lookup.
    if unsafe { SERVER_CTX.get(&pid_tgid) }.is_some_and(|p| p.state == OPEN) {
        return event_loop(pid_tgid, conn_id);
    }
    let mut c = ServerCtx {
        conn_id,
        trace_id: [0; 16],
        flags: 0,
        state: CLOSED,
        _pad: [0; 6],
    };
    let (head_end, tp, cl) = scan(cs, n, line_end);
    let scratch = &mut cs.s;
    let body = if cl == 0 {
        Some(0)
    } else {
        content_length(scratch, cl, head_end)
    };
    let whole = match body {
        Some(b) => head_end != 0 && orig_len <= head_end + b,
        None => false,
    };
    let cfg = inject::settings();
    let parsed = if tp != 0 && head_end != 0 {
        traceparent(scratch, tp, head_end, &mut c.trace_id)
    } else {
        None
    };
    match parsed {
        Some(flags) => {
            c.flags = if cfg.parent_based != 0 {
                flags & 1
            } else {
                inject::root_sampled(&c.trace_id, cfg.root_threshold)
            };
        }
        None => {
            c.trace_id = derive_trace_id(cfg.secret, conn_id, ts_ns);
            c.flags = inject::root_sampled(&c.trace_id, cfg.root_threshold);
        }
    }
    if whole {
        c.state = OPEN;
        inject::count(inject_counter::SERVER_REQUEST_OPEN);
    } else {
        inject::count(inject_counter::SERVER_REQUEST_UNKNOWN);
    }
    set(pid_tgid, &c);
    Ok(())
}

fn event_loop(pid_tgid: u64, conn_id: u64) -> Result<(), ()> {
    set(
        pid_tgid,
        &ServerCtx {
            conn_id,
            trace_id: [0; 16],
            flags: 0,
            state: EVENT_LOOP,
            _pad: [0; 6],
        },
    );
    inject::count(inject_counter::SERVER_THREAD_CONCURRENT);
    Ok(())
}

/// 1 when `x == 0`, else 0, without a branch.
#[inline(always)]
fn is_zero(x: u64) -> u64 {
    (x.wrapping_sub(1) & !x) >> 63
}

/// Line starts `scan` records, plus one (a head with more header lines is not opened).
const MAX_LINES: usize = 32;

#[repr(C)]
pub struct CtxScratch {
    s: Scratch,
    lines: [u64; MAX_LINES],
}

/// From the end of the request line: the offset just past the head's empty line (0: not
/// within the scanned bytes), and the line starts of the first `traceparent` and
/// `content-length` fields (any case; 0: none, or more than `MAX_LINES` lines).
///
/// Two passes, to keep the verifier's walk short: the first only finds line starts (it walks
/// up to a kilobyte, once per byte), the second compares field names at those few.
#[inline(always)]
fn scan(cs: &mut CtxScratch, len: usize, line_end: usize) -> (u64, u64, u64) {
    const TP: &[u8; 12] = b"traceparent:";
    const CL: &[u8; 15] = b"content-length:";
    let mut end = 0u64;
    let mut k = 0u64;
    let mut i = line_end;
    while i < HEAD_MAX - 16 {
        if i + 1 >= len {
            break;
        }
        let buf = &cs.s.head;
        let start = eq(at(buf, i - 1), b'\n');
        if start & eq(at(buf, i), b'\r') & eq(at(buf, i + 1), b'\n') != 0 {
            end = (i + 2) as u64;
            break;
        }
        // Written at every byte, kept (k moves on) only at a line start.
        cs.lines[(k as usize) & (MAX_LINES - 1)] = i as u64;
        k += start;
        i += 1;
    }
    let end = launder(&mut cs.s, end);
    let k = launder(&mut cs.s, k);
    // At MAX_LINES the slots wrapped (the first was overwritten): refuse, as for more.
    if end == 0 || k >= MAX_LINES as u64 {
        return (0, 0, 0);
    }
    let (mut tp, mut cl) = (0u64, 0u64);
    let mut j = 0;
    while j < MAX_LINES {
        if j as u64 >= k {
            break;
        }
        let at_line = cs.lines[j] as usize;
        let buf = &cs.s.head;
        let mut d_tp = 0u8;
        let mut n = 0;
        while n < 12 {
            d_tp |= (at(buf, at_line + n) | 0x20) ^ TP[n];
            n += 1;
        }
        let mut d_cl = 0u8;
        let mut n = 0;
        while n < 15 {
            d_cl |= (at(buf, at_line + n) | 0x20) ^ CL[n];
            n += 1;
        }
        // First matches only. A name found past the scanned bytes is refused later (its value
        // must end before the head does).
        tp |= (at_line as u64) * (eq(d_tp, 0) & is_zero(tp));
        cl |= (at_line as u64) * (eq(d_cl, 0) & is_zero(cl));
        j += 1;
    }
    let tp = launder(&mut cs.s, tp);
    let cl = launder(&mut cs.s, cl);
    (end, tp, cl)
}

/// Skips up to two spaces or tabs (HTTP optional whitespace) from `q`.
#[inline(always)]
fn skip_ows(buf: &[u8; HEAD_MAX], q: u64) -> u64 {
    let c = at(buf, q as usize);
    let q = q + (eq(c, b' ') | eq(c, b'\t'));
    let c = at(buf, q as usize);
    q + (eq(c, b' ') | eq(c, b'\t'))
}

/// 1 when `c` ends a field value here: CR or optional whitespace.
#[inline(always)]
fn value_end(c: u8) -> bool {
    c == b'\r' || c == b' ' || c == b'\t'
}

/// The `Content-Length` value of the field whose line starts at `line`; None when it is not
/// 1..=9 digits ending the field before the head does.
#[inline(always)]
fn content_length(scratch: &mut Scratch, line: u64, head_end: u64) -> Option<u64> {
    let q = skip_ows(&scratch.head, line + 15);
    let q = launder(scratch, q);
    // The value ends in CR before the head does; the masked reads stay in the scratch.
    if q >= head_end || q >= (HEAD_MAX - 16) as u64 {
        return None;
    }
    let buf = &scratch.head;
    let mut v = 0u64;
    let mut k = 0u64;
    while k < 10 {
        let c = at(buf, (q + k) as usize);
        if !c.is_ascii_digit() {
            break;
        }
        v = v * 10 + (c - b'0') as u64;
        k += 1;
    }
    let k = launder(scratch, k);
    if k == 0 || k > 9 || !value_end(at(&scratch.head, (q + k) as usize)) {
        return None;
    }
    Some(v)
}

/// Decodes the `traceparent` field whose line starts at `line` into `trace_id`; returns its
/// flags. None unless it is exactly a version-00 value (W3C Trace Context §3.2: lowercase hex,
/// ids not all zero) between optional whitespace, ending before the head does — the values
/// user space accepts too, except higher versions (then both sides differ and the call is
/// left unparented, counted).
#[inline(always)]
fn traceparent(
    scratch: &mut Scratch,
    line: u64,
    head_end: u64,
    trace_id: &mut [u8; 16],
) -> Option<u8> {
    let q = skip_ows(&scratch.head, line + 12);
    let q = launder(scratch, q);
    if q + 55 + 2 > head_end || q >= (HEAD_MAX - 64) as u64 {
        return None;
    }
    let q = q as usize;
    let buf = &scratch.head;
    if at(buf, q) != b'0'
        || at(buf, q + 1) != b'0'
        || at(buf, q + 2) != b'-'
        || at(buf, q + 35) != b'-'
        || at(buf, q + 52) != b'-'
        || !value_end(at(buf, q + 55))
    {
        return None;
    }
    let mut bad = 0u64;
    let mut nz_trace = 0u64;
    let mut i = 0;
    while i < 16 {
        let (hi, b1) = hex(at(buf, q + 3 + 2 * i));
        let (lo, b2) = hex(at(buf, q + 4 + 2 * i));
        bad |= b1 | b2;
        let v = (hi << 4) | lo;
        nz_trace |= v as u64;
        trace_id[i] = v;
        i += 1;
    }
    let mut nz_parent = 0u64;
    let mut i = 0;
    while i < 16 {
        let (v, b) = hex(at(buf, q + 36 + i));
        bad |= b;
        nz_parent |= v as u64;
        i += 1;
    }
    let (f_hi, b1) = hex(at(buf, q + 53));
    let (f_lo, b2) = hex(at(buf, q + 54));
    bad |= b1 | b2;
    if bad != 0 || nz_trace == 0 || nz_parent == 0 {
        return None;
    }
    Some((f_hi << 4) | f_lo)
}

/// Lowercase hex digit → its value; every other byte → 0x10 (so `v >> 4` is the invalid
/// bit). A table: compare-and-select code would become branches, and every branch in the
/// decoding loops a path for the verifier to walk.
static HEX_VALUE: [u8; 256] = {
    let mut t = [0x10u8; 256];
    let mut c = 0;
    while c < 10 {
        t[b'0' as usize + c] = c as u8;
        c += 1;
    }
    let mut c = 0;
    while c < 6 {
        t[b'a' as usize + c] = 10 + c as u8;
        c += 1;
    }
    t
};

/// A lowercase hex digit's value (low 4 bits), and 1 when `c` is not one.
#[inline(always)]
fn hex(c: u8) -> (u8, u64) {
    // SAFETY: a volatile read of an immutable static, so the compiler keeps the load.
    let v = unsafe { core::ptr::read_volatile(&HEX_VALUE[c as usize]) };
    (v & 0x0f, (v >> 4) as u64)
}
