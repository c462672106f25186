//! TLS plaintext, captured where the application hands it to (or gets it from) its TLS library.
//!
//! OpenSSL (shared libssl or statically linked with exported symbols): a uprobe on entry to
//! SSL_read/SSL_write/SSL_read_ex/SSL_write_ex saves the arguments in `SSL_ACTIVE` (per
//! thread); the socket syscalls the library makes on that thread meanwhile tell which fd the
//! `SSL *` uses (`note_socket_io`, called from the syscall probes, fills `SSL_FD` and turns the
//! connection's raw capture off: its bytes are ciphertext); the uretprobe copies the plaintext
//! and outputs it as a data record of the connection, so TLS spans get the connection's
//! addresses and role like any other.
//!
//! Go crypto/tls: uprobes on `crypto/tls.(*Conn).Read`/`Write` read the arguments from Go's
//! register ABI and follow `c.conn` (a `*net.TCPConn`) to its fd. Go moves goroutine stacks, so
//! uretprobes (which patch the return address on the stack) would crash the program: user
//! space attaches `go_exit_tls_*` at each of the function's return instructions instead, and
//! the in-flight call is keyed by goroutine (`g`, in R14), which stays the same when the
//! goroutine moves to another thread.

use agent_common::{
    conn_flags, conn_key, counter, ConnInfo, Direction, GoKey, GoTlsArgs, IoArgs, SslArgs, SslConn,
    SslKey, Syscall,
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    programs::{ProbeContext, RetProbeContext},
};

use crate::io::{emit, BufKind};
use crate::maps::{count, CONNS, GO_ACTIVE, LAST_TLS_READ, SSL_ACTIVE, SSL_FD};

/// Called by the syscall probes for every read/write-family syscall on a tracked socket: if the
/// thread is inside an OpenSSL call, that `SSL *` uses this fd. Returns true if so (the
/// socket carries TLS).
#[inline(always)]
pub fn note_socket_io(pid_tgid: u64, fd: u32, conn_id: u64) -> bool {
    // SAFETY: lookup of a Copy value.
    let ssl = match unsafe { SSL_ACTIVE.get(&pid_tgid) } {
        Some(a) => a.ssl,
        None => return false,
    };
    let key = SslKey {
        ssl,
        pid: (pid_tgid >> 32) as u32,
        _pad: 0,
    };
    let conn = SslConn {
        conn_id,
        fd,
        _pad: 0,
    };
    let _ = SSL_FD.insert(&key, &conn, 0);
    true
}

/// A thread read TLS records from a socket (a read-family syscall on a connection known to
/// carry TLS, or whose bytes start with a TLS record header). Libraries that decrypt from
/// memory (Node.js feeds OpenSSL through BIO pairs) make no syscall inside SSL_read: their
/// `SSL *` is tied to the socket the thread last read TLS from.
#[inline(always)]
pub fn note_tls_read(pid_tgid: u64, fd: u32) {
    let _ = LAST_TLS_READ.insert(&pid_tgid, &fd, 0);
}

/// Whether captured bytes start with a TLS record header (content type 20..=23, version 3.x).
#[inline(always)]
pub fn looks_like_tls_record(first: u8, second: u8) -> bool {
    (20..=23).contains(&first) && second == 3
}

/// Entry of SSL_do_handshake (and so SSL_connect/SSL_accept, which call it): a call that moves
/// no plaintext, but whose syscalls tie the `SSL *` to its socket. Never replaces the entry
/// of a read/write it is nested in.
#[inline(always)]
pub fn ssl_enter_handshake(ctx: &ProbeContext) -> Result<(), i64> {
    let ssl: u64 = ctx.arg(0).ok_or(1i64)?;
    let args = SslArgs {
        ssl,
        buf: 0,
        count_ptr: 0,
        enter_ts: 0,
        direction: Direction::None as u8,
        _pad: [0; 7],
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    // BPF_NOEXIST: an enclosing SSL_read/SSL_write keeps its entry.
    SSL_ACTIVE
        .insert(&pid_tgid, &args, 1)
        .map_err(|e| e as i64)?;
    Ok(())
}

/// Return of SSL_do_handshake: forget its entry (only its own).
#[inline(always)]
pub fn ssl_exit_handshake() -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: lookup of a Copy value.
    if let Some(a) = unsafe { SSL_ACTIVE.get(&pid_tgid) } {
        if a.direction == Direction::None as u8 {
            let _ = SSL_ACTIVE.remove(&pid_tgid);
        }
    }
    Ok(())
}

/// Entry of SSL_read/SSL_write (`count_arg` false) or SSL_read_ex/SSL_write_ex (true).
#[inline(always)]
pub fn ssl_enter(ctx: &ProbeContext, dir: Direction, ex: bool) -> Result<(), i64> {
    if crate::maps::cgroup_muted() {
        count(counter::CGROUP_IO_SKIPPED);
        return Ok(());
    }
    let ssl: u64 = ctx.arg(0).ok_or(1i64)?;
    let buf: u64 = ctx.arg(1).ok_or(1i64)?;
    let count_ptr: u64 = if ex { ctx.arg(3).ok_or(1i64)? } else { 0 };
    let args = SslArgs {
        ssl,
        buf,
        count_ptr,
        // SAFETY: no preconditions.
        enter_ts: unsafe { bpf_ktime_get_ns() },
        direction: dir as u8,
        _pad: [0; 7],
    };
    // SAFETY: no preconditions.
    let pid_tgid = bpf_get_current_pid_tgid();
    SSL_ACTIVE
        .insert(&pid_tgid, &args, 0)
        .map_err(|e| e as i64)?;
    Ok(())
}

/// Return of any of the four: output the plaintext the call moved.
#[inline(always)]
pub fn ssl_exit(ctx: &RetProbeContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: lookup of a Copy value.
    let args = match unsafe { SSL_ACTIVE.get(&pid_tgid) } {
        Some(a) => *a,
        None => return Ok(()),
    };
    let _ = SSL_ACTIVE.remove(&pid_tgid);
    let rc: i64 = ctx.ret::<i32>() as i64;
    let n: i64 = if args.count_ptr != 0 {
        if rc != 1 {
            return Ok(()); // the _ex variants return 1 on success, the count via the pointer
        }
        // SAFETY: the helper checks the user address.
        unsafe { bpf_probe_read_user(args.count_ptr as *const u64) }.map_err(|e| e as i64)? as i64
    } else {
        rc
    };
    if n <= 0 || args.direction == Direction::None as u8 {
        return Ok(()); // WANT_READ/WANT_WRITE, errors, close_notify
    }
    let pid = (pid_tgid >> 32) as u32;
    let key = SslKey {
        ssl: args.ssl,
        pid,
        _pad: 0,
    };
    let Some((fd, info)) = session_socket(pid_tgid, pid, &key) else {
        count(counter::TLS_UNMAPPED);
        return Ok(());
    };
    if info.flags & conn_flags::MUTED == 0 {
        let io = plaintext_io(
            info.conn_id,
            fd,
            args.direction,
            args.buf,
            args.enter_ts,
            info.flags,
        );
        emit(pid_tgid, &io, BufKind::Plain, n);
    }
    Ok(())
}

/// The socket (and its connection) an `SSL *` uses: the one its syscalls were seen on, if
/// that fd still holds the same connection; else the one its thread last read TLS records from
/// (memory-BIO libraries), remembered from now on.
#[inline(always)]
fn session_socket(pid_tgid: u64, pid: u32, key: &SslKey) -> Option<(u32, ConnInfo)> {
    // SAFETY: lookups of Copy values.
    if let Some(m) = unsafe { SSL_FD.get(key) } {
        let m = *m;
        // SAFETY: as above.
        if let Some(info) = unsafe { CONNS.get(&conn_key(pid, m.fd)) } {
            if info.conn_id == m.conn_id {
                return Some((m.fd, *info));
            }
        }
    }
    // SAFETY: as above.
    let fd = *unsafe { LAST_TLS_READ.get(&pid_tgid) }?;
    // SAFETY: as above.
    let info = *unsafe { CONNS.get(&conn_key(pid, fd)) }?;
    let conn = SslConn {
        conn_id: info.conn_id,
        fd,
        _pad: 0,
    };
    let _ = SSL_FD.insert(key, &conn, 0);
    count(counter::TLS_FD_FROM_THREAD);
    Some((fd, info))
}

/// The record arguments for plaintext of a TLS call on a connection whose flags are `flags`.
#[inline(always)]
fn plaintext_io(
    conn_id: u64,
    fd: u32,
    direction: u8,
    buf: u64,
    enter_ts: u64,
    flags: u8,
) -> IoArgs {
    IoArgs {
        conn_id,
        buf,
        iovcnt: 0,
        enter_ts,
        fd,
        syscall: if direction == Direction::Ingress as u8 {
            Syscall::TlsRead as u8
        } else {
            Syscall::TlsWrite as u8
        },
        direction,
        conn_flags: flags,
        role: 0, // plaintext of TLS: no server context is taken from it (see `serverctx`)
    }
}

/// Field offsets that lead from a `*crypto/tls.Conn` to its socket's fd. Stable since Go 1.9:
/// `tls.Conn.conn` (a `net.Conn` interface: itab, data) is the first field; its data is a
/// `*net.TCPConn`, whose first field `conn.fd` is the `*net.netFD`; `netFD.pfd` (`poll.FD`)
/// starts with `fdmu` (`fdMutex`: u64 + 2 × u32) followed by `Sysfd int`.
const GO_TLS_CONN_IFACE_DATA: u64 = 8;
const GO_NETFD_SYSFD: u64 = 16;

/// Entry of `crypto/tls.(*Conn).Read` / `Write` (register ABI: receiver in RAX, the byte
/// slice's pointer and length in RBX and RCX; the goroutine in R14).
#[inline(always)]
pub fn go_enter(ctx: &ProbeContext, dir: Direction) -> Result<(), i64> {
    if crate::maps::cgroup_muted() {
        count(counter::CGROUP_IO_SKIPPED);
        return Ok(());
    }
    // SAFETY: a uprobe's context is the task's saved user registers.
    let regs = unsafe { &*ctx.regs };
    let (c, buf, g) = (regs.rax, regs.rbx, regs.r14);
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: the helper checks the user addresses.
    let tcp: u64 = unsafe { bpf_probe_read_user((c + GO_TLS_CONN_IFACE_DATA) as *const u64) }
        .map_err(|e| e as i64)?;
    // SAFETY: as above.
    let netfd: u64 = unsafe { bpf_probe_read_user(tcp as *const u64) }.map_err(|e| e as i64)?;
    // SAFETY: as above.
    let fd: i64 = unsafe { bpf_probe_read_user((netfd + GO_NETFD_SYSFD) as *const i64) }
        .map_err(|e| e as i64)?;
    if !(0..=i32::MAX as i64).contains(&fd) {
        count(counter::GO_TLS_UNTRACKED);
        return Ok(());
    }
    let info = match CONNS.get_ptr_mut(&conn_key(pid, fd as u32)) {
        Some(i) => i,
        None => {
            count(counter::GO_TLS_UNTRACKED);
            return Ok(());
        }
    };
    // SAFETY: a pointer to a live map value; racing writers store whole flag bytes.
    let info = unsafe {
        (*info).flags |= conn_flags::RAW_OFF;
        *info
    };
    if info.flags & conn_flags::MUTED != 0 {
        return Ok(());
    }
    let key = GoKey { g, pid, _pad: 0 };
    let args = GoTlsArgs {
        conn_id: info.conn_id,
        buf,
        // SAFETY: no preconditions.
        enter_ts: unsafe { bpf_ktime_get_ns() },
        fd: fd as u32,
        direction: dir as u8,
        _pad: [0; 3],
    };
    GO_ACTIVE.insert(&key, &args, 0).map_err(|e| e as i64)?;
    Ok(())
}

/// At a return instruction of Read/Write: `n int` is in RAX.
#[inline(always)]
pub fn go_exit(ctx: &ProbeContext) -> Result<(), i64> {
    // SAFETY: as in go_enter.
    let regs = unsafe { &*ctx.regs };
    let (n, g) = (regs.rax as i64, regs.r14);
    let pid_tgid = bpf_get_current_pid_tgid();
    let key = GoKey {
        g,
        pid: (pid_tgid >> 32) as u32,
        _pad: 0,
    };
    // SAFETY: lookup of a Copy value.
    let args = match unsafe { GO_ACTIVE.get(&key) } {
        Some(a) => *a,
        None => return Ok(()),
    };
    let _ = GO_ACTIVE.remove(&key);
    if n <= 0 {
        return Ok(());
    }
    let io = plaintext_io(
        args.conn_id,
        args.fd,
        args.direction,
        args.buf,
        args.enter_ts,
        // Looked up now, not at entry: GoTlsArgs has no room for it, and a uprobe costs far
        // more than the lookup.
        crate::gap::flags_now(key.pid, args.fd, args.conn_id),
    );
    emit(pid_tgid, &io, BufKind::Plain, n);
    Ok(())
}
