//! Payload capture for read/write-family syscalls on tracked sockets.
//!
//! sys_enter saves the arguments (only for fds in CONNS: everything else costs one failed
//! lookup); sys_exit copies `min(ret, capture_bytes)` bytes — the bytes the syscall actually
//! moved — into a scratch slot and outputs header + payload to the ring buffer. The real length
//! (`orig_len`) is always reported so truncation is visible to user space.

use agent_common::{
    conn_flags, conn_key, counter, Direction, EventKind, IoArgs, Syscall, MAX_IOV, MAX_PAYLOAD,
};
use aya_ebpf::{
    cty::c_void,
    helpers::generated::bpf_probe_read_user as raw_probe_read_user,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_user,
    },
    programs::TracePointContext,
};

use crate::conn::{header, ARG0, ARG1, ARG2, ARG3, RET};
use crate::maps::{config, count, output_flags, DataRecord, ACTIVE_IO, CONNS, EVENTS, SCRATCH};

const MSG_PEEK: u64 = 2;

/// How the syscall passes its buffer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum BufKind {
    /// (fd, buf, len, ...)
    Plain,
    /// (fd, iov, iovcnt)
    Iov,
    /// (fd, struct user_msghdr *, flags)
    Msg,
    /// sendfile(out_fd, in_fd, ...): bytes never pass through user memory.
    None,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

pub fn try_enter(
    ctx: &TracePointContext,
    syscall: Syscall,
    dir: Direction,
    kind: BufKind,
) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: ARG0..ARG3 are within every syscall enter record used here (6 args).
    let fd: u64 = unsafe { ctx.read_at(ARG0) }.map_err(|e| e as i64)?;
    let info = match CONNS.get_ptr_mut(&conn_key((pid_tgid >> 32) as u32, fd as u32)) {
        Some(i) => i,
        None => return Ok(()),
    };
    // SAFETY: a pointer to a live map value; racing writers store whole flag bytes.
    let mut flags = unsafe { (*info).flags };
    if flags & conn_flags::MUTED != 0 {
        return Ok(()); // user space parses nothing here: copying would be pure cost
    }
    if crate::maps::cgroup_muted() {
        count(counter::CGROUP_IO_SKIPPED);
        return Ok(()); // the selection rules trace nothing of this process
    }
    // SAFETY: as above.
    let conn_id = unsafe { (*info).conn_id };
    if crate::tls::note_socket_io(pid_tgid, fd as u32, conn_id) && flags & conn_flags::RAW_OFF == 0
    {
        flags |= conn_flags::RAW_OFF;
        // SAFETY: as above.
        unsafe { (*info).flags = flags };
    }
    if flags & conn_flags::RAW_OFF != 0 {
        if dir == Direction::Ingress {
            crate::tls::note_tls_read(pid_tgid, fd as u32);
        }
        return Ok(()); // ciphertext: the TLS uprobes report the plaintext
    }
    // SAFETY: as above.
    let info = unsafe { *info };
    let (buf, iovcnt) = match kind {
        BufKind::Plain => {
            if syscall == Syscall::RecvFrom {
                // SAFETY: in bounds of sys_enter_recvfrom.
                let flags: u64 = unsafe { ctx.read_at(ARG3) }.map_err(|e| e as i64)?;
                if flags & MSG_PEEK != 0 {
                    return Ok(()); // the same bytes will be read again for real
                }
            }
            // SAFETY: in bounds.
            (
                unsafe { ctx.read_at::<u64>(ARG1) }.map_err(|e| e as i64)?,
                0,
            )
        }
        BufKind::Iov => {
            // SAFETY: in bounds.
            let iov: u64 = unsafe { ctx.read_at(ARG1) }.map_err(|e| e as i64)?;
            // SAFETY: in bounds.
            let cnt: u64 = unsafe { ctx.read_at(ARG2) }.map_err(|e| e as i64)?;
            (iov, cnt)
        }
        BufKind::Msg => {
            // SAFETY: in bounds.
            let msg: u64 = unsafe { ctx.read_at(ARG1) }.map_err(|e| e as i64)?;
            // SAFETY: in bounds.
            let flags: u64 = unsafe { ctx.read_at(ARG2) }.map_err(|e| e as i64)?;
            if flags & MSG_PEEK != 0 {
                return Ok(());
            }
            // struct user_msghdr { void *msg_name; int msg_namelen; struct iovec *msg_iov /*16*/;
            //                      __kernel_size_t msg_iovlen /*24*/; ... }
            // SAFETY: bpf_probe_read_user checks the user address.
            let iov: u64 =
                unsafe { bpf_probe_read_user((msg + 16) as *const u64) }.map_err(|e| e as i64)?;
            // SAFETY: as above.
            let cnt: u64 =
                unsafe { bpf_probe_read_user((msg + 24) as *const u64) }.map_err(|e| e as i64)?;
            (iov, cnt)
        }
        BufKind::None => (0, 0),
    };
    let args = IoArgs {
        conn_id: info.conn_id,
        buf,
        iovcnt,
        // SAFETY: no preconditions.
        enter_ts: unsafe { bpf_ktime_get_ns() },
        fd: fd as u32,
        syscall: syscall as u8,
        direction: dir as u8,
        conn_flags: flags,
        role: info.role,
    };
    ACTIVE_IO
        .insert(&pid_tgid, &args, 0)
        .map_err(|e| e as i64)?;
    Ok(())
}

/// True when the record written is a server connection's read that `serverctx` must see:
/// the caller (the program's entry function: a tail call is not allowed in a subprogram) then
/// tail-calls it.
pub fn try_exit(ctx: &TracePointContext, syscall: Syscall, kind: BufKind) -> Result<bool, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: lookup of a Copy value.
    let args = match unsafe { ACTIVE_IO.get(&pid_tgid) } {
        Some(a) => *a,
        None => return Ok(false),
    };
    let _ = ACTIVE_IO.remove(&pid_tgid);
    if args.syscall != syscall as u8 {
        return Ok(false); // a stale entry of another syscall: never attribute its bytes here
    }
    // SAFETY: RET is within the sys_exit record.
    let ret: i64 = unsafe { ctx.read_at(RET) }.map_err(|e| e as i64)?;
    let written = emit(pid_tgid, &args, kind, ret);
    if args.direction == Direction::Egress as u8 {
        crate::serverctx::after_write(pid_tgid, &args);
        return Ok(false);
    }
    Ok(written && crate::serverctx::wants_read(&args))
}

/// Outputs one data record: header plus `min(ret, capture_bytes)` bytes from the buffer (or
/// iovec array) in `args`. Used by the syscall exits and by the TLS uprobes. True when the
/// record was written (this CPU's scratch slot then holds it).
#[inline(always)]
pub fn emit(pid_tgid: u64, args: &IoArgs, kind: BufKind, ret: i64) -> bool {
    if ret <= 0 {
        return false; // EAGAIN, errors and EOF move no bytes
    }
    // SAFETY: no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let rec = match SCRATCH.get_ptr_mut(cpu) {
        Some(r) => r,
        None => return false,
    };
    // SAFETY: `rec` points at this CPU's scratch slot; nothing else runs on it concurrently.
    let rec: &mut DataRecord = unsafe { &mut *rec };
    let mut cap = config().capture_bytes as u64;
    if cap > MAX_PAYLOAD as u64 {
        cap = MAX_PAYLOAD as u64;
    }
    if cap > ret as u64 {
        cap = ret as u64;
    }
    let copied = match kind {
        BufKind::None => 0,
        BufKind::Plain => copy_user(rec, 0, args.buf, cap),
        BufKind::Iov | BufKind::Msg => copy_iov(rec, args.buf, args.iovcnt, cap),
    };
    if copied < ret as u64 && kind != BufKind::None {
        count(counter::TRUNCATED);
    }
    if args.direction == Direction::Ingress as u8
        && copied >= 2
        && crate::tls::looks_like_tls_record(rec.payload[0], rec.payload[1])
    {
        crate::tls::note_tls_read(pid_tgid, args.fd);
    }
    // SAFETY: no preconditions.
    let ts = unsafe { bpf_ktime_get_ns() };
    rec.event.header = header(EventKind::Data, pid_tgid, args.conn_id, args.direction, ts);
    rec.event.fd = args.fd;
    rec.event.syscall = args.syscall;
    let flags = crate::gap::record_flags(args.conn_flags);
    rec.event.flags = flags;
    rec.event._pad = [0; 2];
    rec.event.len = copied as u32;
    rec.event.orig_len = if ret > u32::MAX as i64 {
        u32::MAX
    } else {
        ret as u32
    };
    rec.event.enter_ts_ns = args.enter_ts;
    rec.event.goroutine = crate::goctx::goroutine(pid_tgid, args);
    // Mask so the verifier can bound the output size by the scratch slot size.
    let total =
        core::mem::size_of::<agent_common::DataEvent>() + (copied as usize & (MAX_PAYLOAD * 2 - 1));
    // SAFETY: `total` <= size_of::<DataRecord>() by the mask above; the slot is initialised up
    // to the header plus `copied` payload bytes.
    let bytes =
        unsafe { core::slice::from_raw_parts(rec as *const DataRecord as *const u8, total) };
    let written = EVENTS.output::<[u8]>(bytes, output_flags()).is_ok();
    crate::gap::after_output(
        written,
        flags,
        (pid_tgid >> 32) as u32,
        args.fd,
        args.conn_id,
    );
    written
}

/// Copies `len` (1..=MAX_PAYLOAD) user bytes to `payload[off..]` (off < MAX_PAYLOAD). Returns the
/// bytes copied (0 on a failed read, which is counted).
#[inline(always)]
fn copy_user(rec: &mut DataRecord, off: u64, src: u64, len: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    // The masks are no-ops for valid inputs; they let the verifier prove
    // off + len <= 2 * MAX_PAYLOAD = the payload buffer's size.
    let off = off & (MAX_PAYLOAD as u64 - 1);
    let len = ((len - 1) & (MAX_PAYLOAD as u64 - 1)) + 1;
    // SAFETY: dst is inside the scratch slot (see above); src is checked by the helper.
    let rc = unsafe {
        raw_probe_read_user(
            rec.payload.as_mut_ptr().add(off as usize) as *mut c_void,
            len as u32,
            src as *const c_void,
        )
    };
    if rc != 0 {
        count(counter::PAYLOAD_READ_FAILED);
        return 0;
    }
    len
}

/// Copies up to `cap` bytes from an iovec array, in order, into the payload.
#[inline(always)]
fn copy_iov(rec: &mut DataRecord, iov: u64, iovcnt: u64, cap: u64) -> u64 {
    let mut off: u64 = 0;
    let mut i: usize = 0;
    while i < MAX_IOV {
        if i as u64 >= iovcnt || off >= cap {
            break;
        }
        // SAFETY: the helper checks the user address.
        let v: Iovec = match unsafe { bpf_probe_read_user((iov as *const Iovec).wrapping_add(i)) } {
            Ok(v) => v,
            Err(_) => break,
        };
        let mut n = v.len;
        if n > cap - off {
            n = cap - off;
        }
        if n > 0 {
            let got = copy_user(rec, off, v.base, n);
            if got == 0 {
                break;
            }
            off += got;
        }
        i += 1;
    }
    off
}
