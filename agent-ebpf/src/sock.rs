//! From a file descriptor of the current task to its TCP endpoints.
//!
//! Follows `current->files->fdt->fd[fd]` to the `struct file`, checks it is a socket (inode
//! mode S_IFSOCK), a stream socket, AF_INET or AF_INET6, and reads both endpoints from
//! `struct sock_common`. Field offsets come from the running kernel's BTF via the OFFSETS global
//! (Rust eBPF has no CO-RE). Every read is a bpf_probe_read_kernel that may fail: failure means
//! "not a socket we track", never a crash.

use agent_common::SockAddr;
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};

use crate::maps::offsets;

const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;
const SOCK_STREAM: i16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

pub struct Endpoints {
    pub family: u16,
    pub local: SockAddr,
    pub remote: SockAddr,
}

#[inline(always)]
unsafe fn read<T>(base: *const u8, off: u32) -> Option<T> {
    bpf_probe_read_kernel(base.add(off as usize) as *const T).ok()
}

/// The endpoints of the TCP socket behind `fd` in the current task, if it is one.
#[inline(always)]
pub fn tcp_endpoints(fd: u32) -> Option<Endpoints> {
    let o = offsets();
    if o.valid == 0 {
        return None;
    }
    // SAFETY: every dereference goes through bpf_probe_read_kernel, which checks the address.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let files: *const u8 = read(task, o.task_files)?;
        let fdt: *const u8 = read(files, o.files_fdt)?;
        let max_fds: u32 = read(fdt, o.fdt_max_fds)?;
        if fd >= max_fds {
            return None;
        }
        let fd_array: *const *const u8 = read(fdt, o.fdt_fd)?;
        let file: *const u8 = bpf_probe_read_kernel(fd_array.add(fd as usize)).ok()?;
        if file.is_null() {
            return None;
        }
        let inode: *const u8 = read(file, o.file_inode)?;
        let mode: u16 = read(inode, o.inode_mode)?;
        if mode & S_IFMT != S_IFSOCK {
            return None;
        }
        let socket: *const u8 = read(file, o.file_private_data)?;
        let stype: i16 = read(socket, o.socket_type)?;
        if stype != SOCK_STREAM {
            return None;
        }
        let sk: *const u8 = read(socket, o.socket_sk)?;
        if sk.is_null() {
            return None;
        }
        let family: u16 = read(sk, o.sk_family)?;
        let mut local = SockAddr::default();
        let mut remote = SockAddr::default();
        if family == AF_INET {
            let l: [u8; 4] = read(sk, o.sk_rcv_saddr)?;
            let r: [u8; 4] = read(sk, o.sk_daddr)?;
            // IPv4-mapped, so user space handles one address type.
            local = SockAddr::v4(l, 0);
            remote = SockAddr::v4(r, 0);
        } else if family == AF_INET6 {
            local.addr = read(sk, o.sk_v6_rcv_saddr)?;
            remote.addr = read(sk, o.sk_v6_daddr)?;
        } else {
            return None;
        }
        local.port = read(sk, o.sk_num)?;
        let dport: u16 = read(sk, o.sk_dport)?;
        remote.port = u16::from_be(dport);
        Some(Endpoints {
            family,
            local,
            remote,
        })
    }
}
