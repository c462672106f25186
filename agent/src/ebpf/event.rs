//! Decoding ring-buffer records into typed events.
//!
//! The only place user space reads the wire contract's bytes. Every record is length-checked
//! against its kind before any field is read; a record that does not fit is reported as
//! malformed (and counted by the caller), never trusted.

use agent_common::{
    ConnCloseEvent, ConnOpenEvent, DataEvent, Direction, EventHeader, EventKind, GoSpawnEvent,
    InjectEvent, ProcExitEvent, EVENT_VERSION,
};
use std::mem::size_of;

/// One decoded record. `Data` borrows its payload from the ring buffer.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    ConnOpen(ConnOpenEvent),
    ConnClose(ConnCloseEvent),
    Data(DataEvent, &'a [u8]),
    ProcExit(EventHeader),
    /// A process exec'd or mapped an executable file (see `EventKind::ProcExec`).
    ProcExec(EventHeader),
    /// The kernel wrote a traceparent into a request (see `EventKind::Inject`).
    Inject(InjectEvent),
    /// A Go program started a goroutine (see `EventKind::GoSpawn`).
    GoSpawn(GoSpawnEvent),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its {need}-byte struct")]
    Short { len: usize, need: usize },
    #[error("record kind {0} unknown")]
    Kind(u8),
    #[error("record version {0}, this agent reads version {EVENT_VERSION}: agent and eBPF object mismatch")]
    Version(u8),
    #[error("data record claims {claimed} payload bytes, {present} present")]
    Payload { claimed: u32, present: usize },
}

/// Reads a plain-old-data struct from the front of `buf`.
fn read<T: Copy>(buf: &[u8]) -> Result<T, DecodeError> {
    if buf.len() < size_of::<T>() {
        return Err(DecodeError::Short {
            len: buf.len(),
            need: size_of::<T>(),
        });
    }
    // SAFETY: length checked above; T is one of agent_common's #[repr(C)] integer-only structs
    // (every bit pattern valid); read_unaligned because ring records are only 8-byte aligned.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr() as *const T) })
}

pub fn decode(buf: &[u8]) -> Result<Event<'_>, DecodeError> {
    let h: EventHeader = read(buf)?;
    if h.version != EVENT_VERSION {
        return Err(DecodeError::Version(h.version));
    }
    match EventKind::from_u8(h.kind).ok_or(DecodeError::Kind(h.kind))? {
        EventKind::ConnOpen => Ok(Event::ConnOpen(read(buf)?)),
        EventKind::ConnClose => Ok(Event::ConnClose(read(buf)?)),
        EventKind::ProcExit => Ok(Event::ProcExit(read::<ProcExitEvent>(buf)?.header)),
        EventKind::ProcExec => Ok(Event::ProcExec(read::<ProcExitEvent>(buf)?.header)),
        EventKind::Inject => Ok(Event::Inject(read(buf)?)),
        EventKind::GoSpawn => Ok(Event::GoSpawn(read(buf)?)),
        EventKind::Data => {
            let d: DataEvent = read(buf)?;
            let payload = &buf[size_of::<DataEvent>()..];
            if d.len as usize > payload.len() || d.len > d.orig_len {
                return Err(DecodeError::Payload {
                    claimed: d.len,
                    present: payload.len(),
                });
            }
            Ok(Event::Data(d, &payload[..d.len as usize]))
        }
    }
}

impl Event<'_> {
    pub fn header(&self) -> &EventHeader {
        match self {
            Event::ConnOpen(e) => &e.header,
            Event::ConnClose(e) => &e.header,
            Event::Data(e, _) => &e.header,
            Event::ProcExit(h) | Event::ProcExec(h) => h,
            Event::Inject(e) => &e.header,
            Event::GoSpawn(e) => &e.header,
        }
    }

    /// The moment the event's effect became possible for others to observe: a write's bytes
    /// exist from its syscall entry, a read's only at its exit. Ordering by this key puts a
    /// client's request before the server's read of it, even though the ring buffer may deliver
    /// the server's record first (its exit can beat the client's exit).
    pub fn causal_ns(&self) -> u64 {
        match self {
            Event::Data(d, _) if Direction::from_u8(d.header.direction) == Direction::Egress => {
                d.enter_ts_ns
            }
            e => e.header().ts_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::Record;

    fn rec<T: Record>(v: &T) -> Vec<u8> {
        v.as_bytes().to_vec()
    }
    use agent_common::SockAddr;

    fn header(kind: EventKind) -> EventHeader {
        EventHeader {
            kind: kind as u8,
            version: EVENT_VERSION,
            direction: 0,
            _pad0: 0,
            pid: 7,
            tid: 8,
            _pad1: 0,
            ts_ns: 100,
            conn_id: 9,
        }
    }

    #[test]
    fn decodes_data_with_payload() {
        let mut h = header(EventKind::Data);
        h.direction = Direction::Egress as u8;
        let d = DataEvent {
            header: h,
            fd: 3,
            syscall: 2,
            flags: 0,
            _pad: [0; 2],
            len: 5,
            orig_len: 9,
            enter_ts_ns: 50,
            goroutine: 0,
        };
        let mut buf = rec(&d);
        buf.extend_from_slice(b"hello");
        match decode(&buf).unwrap() {
            e @ Event::Data(d, p) => {
                assert_eq!(p, b"hello");
                assert_eq!(d.orig_len, 9);
                assert_eq!(e.causal_ns(), 50);
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn rejects_bad_records() {
        assert!(matches!(decode(&[1, 2, 3]), Err(DecodeError::Short { .. })));
        let mut h = header(EventKind::Data);
        h.version = 99;
        assert_eq!(decode(&rec(&h)).unwrap_err(), DecodeError::Version(99));
        let mut h = header(EventKind::Data);
        h.kind = 42;
        assert_eq!(decode(&rec(&h)).unwrap_err(), DecodeError::Kind(42));
        let d = DataEvent {
            header: header(EventKind::Data),
            fd: 3,
            syscall: 1,
            flags: 0,
            _pad: [0; 2],
            len: 100,
            orig_len: 100,
            enter_ts_ns: 0,
            goroutine: 0,
        };
        assert!(matches!(
            decode(&rec(&d)),
            Err(DecodeError::Payload {
                claimed: 100,
                present: 0
            })
        ));
        // Truncated ConnOpen.
        let o = ConnOpenEvent {
            header: header(EventKind::ConnOpen),
            fd: 1,
            role: 1,
            family: 2,
            _pad: [0; 2],
            local: SockAddr::default(),
            remote: SockAddr::default(),
            comm: [0; 16],
        };
        let b = rec(&o);
        assert!(matches!(decode(&b[..40]), Err(DecodeError::Short { .. })));
        assert!(matches!(decode(&b), Ok(Event::ConnOpen(_))));
    }

    #[test]
    fn ingress_orders_by_exit() {
        let mut h = header(EventKind::Data);
        h.direction = Direction::Ingress as u8;
        let d = DataEvent {
            header: h,
            fd: 3,
            syscall: 1,
            flags: 0,
            _pad: [0; 2],
            len: 0,
            orig_len: 0,
            enter_ts_ns: 50,
            goroutine: 0,
        };
        assert_eq!(decode(&rec(&d)).unwrap().causal_ns(), 100);
    }
}
