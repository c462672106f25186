//! Kernel struct field offsets from the running kernel's BTF.
//!
//! Rust eBPF has no CO-RE relocations, so the programs cannot be compiled against one kernel's
//! layout. Instead user space reads /sys/kernel/btf/vmlinux, finds the offsets of the few
//! fields the programs follow (task → files → fdtable → file → socket → sock_common) and hands
//! them over as the `OFFSETS` global before load. Anonymous unions and structs (how
//! `sock_common` packs its address and port pairs) are searched through.

use agent_common::KernelOffsets;
use btf_rs::{Btf, Type};
use std::path::Path;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read kernel BTF at {path}: {source}")]
    Read { path: String, source: btf_rs::Error },
    #[error("kernel BTF has no struct {name}")]
    NoStruct { name: &'static str },
    #[error("kernel BTF: struct {strukt} has no field {field}")]
    NoField {
        strukt: &'static str,
        field: &'static str,
    },
    #[error("kernel BTF: {strukt}.{field} is a bitfield, cannot be read directly")]
    Bitfield {
        strukt: &'static str,
        field: &'static str,
    },
}

/// Reads the offsets the programs need from the BTF file at `path`.
pub fn kernel_offsets(path: &Path) -> Result<KernelOffsets, BtfError> {
    let btf = Btf::from_file(path).map_err(|source| BtfError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let f = |s: &'static str, field: &'static str| field_offset(&btf, s, field);
    let sk_common = f("sock", "__sk_common")?;
    let common =
        |field: &'static str| -> Result<u32, BtfError> { Ok(sk_common + f("sock_common", field)?) };
    Ok(KernelOffsets {
        task_files: f("task_struct", "files")?,
        files_fdt: f("files_struct", "fdt")?,
        fdt_max_fds: f("fdtable", "max_fds")?,
        fdt_fd: f("fdtable", "fd")?,
        file_inode: f("file", "f_inode")?,
        file_private_data: f("file", "private_data")?,
        inode_mode: f("inode", "i_mode")?,
        socket_type: f("socket", "type")?,
        socket_sk: f("socket", "sk")?,
        sk_family: common("skc_family")?,
        sk_num: common("skc_num")?,
        sk_dport: common("skc_dport")?,
        sk_rcv_saddr: common("skc_rcv_saddr")?,
        sk_daddr: common("skc_daddr")?,
        sk_v6_rcv_saddr: common("skc_v6_rcv_saddr")?,
        sk_v6_daddr: common("skc_v6_daddr")?,
        valid: 1,
    })
}

/// Byte offset of `field` in `struct strukt`, looking inside anonymous members.
fn field_offset(btf: &Btf, strukt: &'static str, field: &'static str) -> Result<u32, BtfError> {
    let types = btf
        .resolve_types_by_name(strukt)
        .map_err(|_| BtfError::NoStruct { name: strukt })?;
    let s = types
        .iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .ok_or(BtfError::NoStruct { name: strukt })?;
    let bits = find_member(btf, s, field, 0, 0).ok_or(BtfError::NoField { strukt, field })?;
    if bits % 8 != 0 {
        return Err(BtfError::Bitfield { strukt, field });
    }
    Ok(bits / 8)
}

/// Bit offset of `field` within `s` (plus `base`), searching anonymous struct/union members.
fn find_member(btf: &Btf, s: &btf_rs::Struct, field: &str, base: u32, depth: u32) -> Option<u32> {
    if depth > 4 {
        return None; // anonymous nesting in the structs we read is at most two deep
    }
    for m in &s.members {
        let name = btf.resolve_name(m).unwrap_or_default();
        if name == field {
            if m.bitfield_size().is_some_and(|b| b != 0) {
                return None;
            }
            return Some(base + m.bit_offset());
        }
        if name.is_empty() {
            if let Ok(Type::Struct(inner) | Type::Union(inner)) = btf.resolve_chained_type(m) {
                if let Some(off) = find_member(btf, &inner, field, base + m.bit_offset(), depth + 1)
                {
                    return Some(off);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs against the BTF of the machine running the tests; the file is world-readable, no
    /// root needed. A machine without BTF fails here loudly: the agent cannot run there either.
    #[test]
    fn reads_offsets_from_running_kernel() {
        let o = kernel_offsets(Path::new(VMLINUX_BTF)).expect("kernel BTF");
        assert_eq!(o.valid, 1);
        // Stable facts about these layouts: sock_common starts with the address pair, daddr
        // first; the v6 addresses come after the ports; socket.type follows socket.state.
        assert_eq!(o.sk_daddr, 0);
        assert_eq!(o.sk_rcv_saddr, 4);
        assert!(o.sk_dport >= 8 && o.sk_num == o.sk_dport + 2, "{o:?}");
        assert!(
            o.sk_v6_daddr > o.sk_num && o.sk_v6_rcv_saddr == o.sk_v6_daddr + 16,
            "{o:?}"
        );
        assert!(o.task_files > 0 && o.file_private_data > 0 && o.socket_sk > o.socket_type);
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let e = kernel_offsets(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/vmlinux"), "{e}");
    }
}
