//! Gaps: what the programs do when a data record does not fit in the ring buffer.
//!
//! The record is lost (counted: `RINGBUF_FULL`) and its connection is marked in `CONNS`
//! (`conn_flags::GAP`). The next record of that connection that does get written carries
//! `data_flags::GAP_BEFORE`, and the mark is cleared: user space then knows bytes are missing
//! on that connection before that record, and ends what was in flight on it instead of
//! parsing across the hole (see `agent::conn`). The extra work is on the failure path, plus
//! one bit test per record.
//!
//! Limits: the syscall probes read the mark at syscall entry, so a record whose syscall was
//! entered before another record of the same connection was lost (two threads on one socket
//! at once) does not carry the flag; the next one does. And user space sets other flag bits
//! with a read-modify-write of the whole `ConnInfo` (`agent::ebpf::loader`), which can undo a
//! mark set in between (only when a connection is muted or found to carry TLS).

use agent_common::{conn_flags, conn_key, counter, data_flags};

use crate::maps::{count, CONNS};

/// The record flags for a record of a connection whose flags were `flags`.
#[inline(always)]
pub fn record_flags(flags: u8) -> u8 {
    if flags & conn_flags::GAP != 0 {
        data_flags::GAP_BEFORE
    } else {
        0
    }
}

/// After trying to write a data record of `conn_id` (the socket `fd` of process `pid`) with
/// record flags `flags`: mark the connection on failure, clear the mark once a record that
/// reports it went out.
#[inline(always)]
pub fn after_output(written: bool, flags: u8, pid: u32, fd: u32, conn_id: u64) {
    if written && flags & data_flags::GAP_BEFORE == 0 {
        return; // the hot path
    }
    if !written {
        count(counter::RINGBUF_FULL);
    }
    let Some(info) = CONNS.get_ptr_mut(&conn_key(pid, fd)) else {
        if !written {
            count(counter::GAP_UNMARKED);
        }
        return;
    };
    // SAFETY: a pointer to a live map value; racing writers store whole flag bytes.
    unsafe {
        if (*info).conn_id != conn_id {
            // The fd holds another connection now: the lost record's connection is closed.
            if !written {
                count(counter::GAP_UNMARKED);
            }
            return;
        }
        if written {
            (*info).flags &= !conn_flags::GAP;
        } else {
            (*info).flags |= conn_flags::GAP;
        }
    }
}

/// The flags of connection `conn_id` at (`pid`, `fd`) now (0 when the fd holds no or another
/// connection), for probes that did not look them up at entry.
#[inline(always)]
pub fn flags_now(pid: u32, fd: u32, conn_id: u64) -> u8 {
    // SAFETY: lookup of a Copy value.
    match unsafe { CONNS.get(&conn_key(pid, fd)) } {
        Some(i) if i.conn_id == conn_id => i.flags,
        _ => 0,
    }
}
