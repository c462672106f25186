//! The agent's kernel programs: syscall tracepoints that follow TCP connections and capture the
//! bytes processes send and receive on them. Thin wrappers here; logic in `conn` (lifecycle),
//! `io` (payload capture) and `sock` (fd → TCP endpoints); all maps and globals in `maps`.
//!
//! Program names follow `<area>_<enter|exit>_<function>`; user space attaches them from its probe
//! table (`agent::ebpf::probes`). Programs never fail the syscall: errors end the program quietly
//! (and are counted where user space needs to know).
#![no_std]
#![no_main]
// aya-ebpf's map methods take `impl Borrow<K>` / `impl Borrow<V>`, so clippy suggests passing
// keys and values by value. References are deliberate: a by-value struct argument is a copy,
// and a copy the optimiser does not elide takes space on the 512-byte BPF stack.
#![allow(clippy::needless_borrows_for_generic_args)]

mod conn;
mod gap;
mod goctx;
mod inject;
mod io;
mod maps;
mod serverctx;
mod sock;
mod tls;

use agent_common::{Direction, Syscall};
use aya_ebpf::{
    macros::{sk_msg, sock_ops, tracepoint, uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext, SkMsgContext, SockOpsContext, TracePointContext},
};
use io::BufKind;

#[tracepoint]
pub fn conn_enter_connect(ctx: TracePointContext) -> u32 {
    let _ = conn::try_enter_connect(&ctx);
    0
}

#[tracepoint]
pub fn conn_exit_connect(ctx: TracePointContext) -> u32 {
    let _ = conn::try_exit_connect(&ctx);
    0
}

/// Attached to both sys_exit_accept and sys_exit_accept4.
#[tracepoint]
pub fn conn_exit_accept(ctx: TracePointContext) -> u32 {
    let _ = conn::try_exit_accept(&ctx);
    0
}

#[tracepoint]
pub fn conn_enter_close(ctx: TracePointContext) -> u32 {
    let _ = conn::try_enter_close(&ctx);
    0
}

#[tracepoint]
pub fn proc_exit_process(ctx: TracePointContext) -> u32 {
    let _ = conn::try_proc_exit(&ctx);
    0
}

#[tracepoint]
pub fn proc_exec(ctx: TracePointContext) -> u32 {
    let _ = conn::try_proc_exec(&ctx);
    0
}

#[tracepoint]
pub fn proc_enter_mmap(ctx: TracePointContext) -> u32 {
    let _ = conn::try_enter_mmap(&ctx);
    0
}

#[uprobe]
pub fn tls_enter_ssl_read(ctx: ProbeContext) -> u32 {
    let _ = tls::ssl_enter(&ctx, Direction::Ingress, false);
    0
}

#[uprobe]
pub fn tls_enter_ssl_write(ctx: ProbeContext) -> u32 {
    let _ = tls::ssl_enter(&ctx, Direction::Egress, false);
    0
}

#[uprobe]
pub fn tls_enter_ssl_read_ex(ctx: ProbeContext) -> u32 {
    let _ = tls::ssl_enter(&ctx, Direction::Ingress, true);
    0
}

#[uprobe]
pub fn tls_enter_ssl_write_ex(ctx: ProbeContext) -> u32 {
    let _ = tls::ssl_enter(&ctx, Direction::Egress, true);
    0
}

#[uprobe]
pub fn tls_enter_ssl_handshake(ctx: ProbeContext) -> u32 {
    let _ = tls::ssl_enter_handshake(&ctx);
    0
}

#[uretprobe]
pub fn tls_exit_ssl_handshake(_ctx: RetProbeContext) -> u32 {
    let _ = tls::ssl_exit_handshake();
    0
}

/// Attached as a uretprobe to all four SSL functions.
#[uretprobe]
pub fn tls_exit_ssl(ctx: RetProbeContext) -> u32 {
    let _ = tls::ssl_exit(&ctx);
    0
}

#[uprobe]
pub fn tls_enter_go_read(ctx: ProbeContext) -> u32 {
    let _ = tls::go_enter(&ctx, Direction::Ingress);
    0
}

#[uprobe]
pub fn tls_enter_go_write(ctx: ProbeContext) -> u32 {
    let _ = tls::go_enter(&ctx, Direction::Egress);
    0
}

#[uprobe]
pub fn goctx_enter_write_loop(ctx: ProbeContext) -> u32 {
    let _ = goctx::enter_write_loop(&ctx);
    0
}

#[uprobe]
pub fn goctx_enter_round_trip(ctx: ProbeContext) -> u32 {
    let _ = goctx::enter_round_trip(&ctx);
    0
}

/// Entry of Go's `runtime.newproc1` (see `goctx`).
#[uprobe]
pub fn goctx_enter_newproc1(ctx: ProbeContext) -> u32 {
    let _ = goctx::enter_newproc1(&ctx);
    0
}

/// Attached (as a plain uprobe) at every return instruction of `runtime.newproc1`.
#[uprobe]
pub fn goctx_exit_newproc1(ctx: ProbeContext) -> u32 {
    let _ = goctx::exit_newproc1(&ctx);
    0
}

/// Attached (as a plain uprobe) at every return instruction of Read and Write.
#[uprobe]
pub fn tls_exit_go(ctx: ProbeContext) -> u32 {
    let _ = tls::go_exit(&ctx);
    0
}

/// Attached to the configured cgroup v2 directory when injection is on (see `inject`).
#[sock_ops]
pub fn inject_sockops(ctx: SockOpsContext) -> u32 {
    let _ = inject::sockops(&ctx);
    1
}

/// The verdict program of `INJECT_SOCKS`: always passes the message, sometimes with a
/// traceparent inserted (see `inject`).
#[sk_msg]
#[inline(always)] // into the entry function, where a tail call is allowed
pub fn inject_sk_msg(ctx: SkMsgContext) -> u32 {
    if inject::check(&ctx) {
        inject::tail_call(&ctx);
    }
    aya_ebpf::bindings::sk_action::SK_PASS
}

/// The second half of `inject_sk_msg`, reached by tail call (see `inject::check`). Loaded,
/// never attached.
#[sk_msg]
pub fn inject_sk_msg_write(ctx: SkMsgContext) -> u32 {
    inject::write(&ctx)
}

/// Reached by tail call from the read exits on server connections when injection is on: which
/// request the reading thread now serves (see `serverctx`). Loaded, never attached.
#[tracepoint]
pub fn server_ctx(_ctx: TracePointContext) -> u32 {
    let _ = serverctx::parse();
    0
}

macro_rules! data_probe {
    ($enter:ident, $exit:ident, $syscall:expr, $dir:expr, $kind:expr) => {
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            let _ = io::try_enter(&ctx, $syscall, $dir, $kind);
            0
        }
        #[tracepoint]
        #[inline(always)] // into the entry function, where a tail call is allowed
        pub fn $exit(ctx: TracePointContext) -> u32 {
            if let Ok(true) = io::try_exit(&ctx, $syscall, $kind) {
                serverctx::tail_call(&ctx);
            }
            0
        }
    };
}

data_probe!(
    data_enter_read,
    data_exit_read,
    Syscall::Read,
    Direction::Ingress,
    BufKind::Plain
);
data_probe!(
    data_enter_write,
    data_exit_write,
    Syscall::Write,
    Direction::Egress,
    BufKind::Plain
);
data_probe!(
    data_enter_recvfrom,
    data_exit_recvfrom,
    Syscall::RecvFrom,
    Direction::Ingress,
    BufKind::Plain
);
data_probe!(
    data_enter_sendto,
    data_exit_sendto,
    Syscall::SendTo,
    Direction::Egress,
    BufKind::Plain
);
data_probe!(
    data_enter_readv,
    data_exit_readv,
    Syscall::Readv,
    Direction::Ingress,
    BufKind::Iov
);
data_probe!(
    data_enter_writev,
    data_exit_writev,
    Syscall::Writev,
    Direction::Egress,
    BufKind::Iov
);
data_probe!(
    data_enter_recvmsg,
    data_exit_recvmsg,
    Syscall::RecvMsg,
    Direction::Ingress,
    BufKind::Msg
);
data_probe!(
    data_enter_sendmsg,
    data_exit_sendmsg,
    Syscall::SendMsg,
    Direction::Egress,
    BufKind::Msg
);
data_probe!(
    data_enter_sendfile,
    data_exit_sendfile,
    Syscall::SendFile,
    Direction::Egress,
    BufKind::None
);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // An endless loop, not `unreachable_unchecked`: if a panic were reachable, the verifier
    // (which refuses unbounded loops) rejects the program at load, where `agent check` reports
    // it; undefined behaviour would instead let the compiler assume the path away silently.
    #[allow(clippy::empty_loop)] // the loop is the point: see above
    loop {}
}
