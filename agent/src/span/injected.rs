//! The ids the kernel wrote into requests (`propagation.inject_http1`), waiting for the client
//! span of the request they went into.
//!
//! The kernel must choose the trace id and the client span id at send time, before user space
//! has parsed anything; it reports them in an `InjectEvent` keyed by the connection and the
//! sending syscall's entry time, which is exactly the `start_ns` of the client request that
//! starts in that syscall's bytes (the kernel only injects a message that begins with a request
//! line). This table holds the reports until that request starts. Bounded: a report no request
//! takes (its request was not parsed) expires; a full table refuses new reports. Both counted.
//!
//! This module decides nothing about parents; `builder` does.

use rustc_hash::FxHashMap;

use super::model::{SpanId, TraceId};

/// Reports held at most (a report lives from the syscall's exit to its request's parse: a
/// few milliseconds at the pipeline's hold).
pub const MAX_REPORTS: usize = 16384;
/// A report not taken after this long is dropped (counted as unclaimed).
pub const EXPIRY_NS: u64 = 10_000_000_000;

/// What the kernel wrote: `traceparent: 00-<trace_id>-<span_id>-<flags>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injected {
    pub trace_id: TraceId,
    /// The client span's id (the header's parent-id).
    pub span_id: SpanId,
    pub flags: u8,
}

#[derive(Clone, Copy, Debug)]
enum Slot {
    Pending(Injected),
    /// Taken by the first request of its syscall; later ones starting in the same bytes are
    /// pipelined requests the kernel did not inject.
    Taken,
}

/// What `take` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// The request carries these ids.
    Ids(Injected),
    /// A pipelined request after an injected one in the same write: not injected.
    Pipelined,
    /// No report: the request went out as the application wrote it.
    None,
}

#[derive(Default)]
pub struct Injections {
    /// (connection id, syscall entry ns) → the report, and when it was noted.
    slots: FxHashMap<(u64, u64), (Slot, u64)>,
}

impl Injections {
    /// Holds a report. False when the table is full (the report is dropped).
    pub fn note(&mut self, conn_id: u64, enter_ns: u64, ids: Injected, now_ns: u64) -> bool {
        if self.slots.len() >= MAX_REPORTS && !self.slots.contains_key(&(conn_id, enter_ns)) {
            return false;
        }
        self.slots
            .insert((conn_id, enter_ns), (Slot::Pending(ids), now_ns));
        true
    }

    /// The report for the client request of `conn_id` that started at `start_ns`.
    pub fn take(&mut self, conn_id: u64, start_ns: u64) -> Found {
        match self.slots.get_mut(&(conn_id, start_ns)) {
            None => Found::None,
            Some((Slot::Taken, _)) => Found::Pipelined,
            Some((slot @ Slot::Pending(_), _)) => {
                let Slot::Pending(ids) = std::mem::replace(slot, Slot::Taken) else {
                    unreachable!("matched Pending above")
                };
                Found::Ids(ids)
            }
        }
    }

    /// Drops entries older than [`EXPIRY_NS`]; returns how many reports expired untaken.
    pub fn sweep(&mut self, now_ns: u64) -> u64 {
        let mut unclaimed = 0;
        self.slots.retain(|_, (slot, at)| {
            let keep = now_ns.saturating_sub(*at) < EXPIRY_NS;
            if !keep && matches!(slot, Slot::Pending(_)) {
                unclaimed += 1;
            }
            keep
        });
        unclaimed
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: Injected = Injected {
        trace_id: [7; 16],
        span_id: [9; 8],
        flags: 1,
    };

    #[test]
    fn first_request_of_the_write_takes_the_ids_later_ones_are_pipelined() {
        let mut t = Injections::default();
        assert!(t.note(1, 100, IDS, 0));
        assert_eq!(t.take(1, 99), Found::None);
        assert_eq!(t.take(2, 100), Found::None);
        assert_eq!(t.take(1, 100), Found::Ids(IDS));
        assert_eq!(t.take(1, 100), Found::Pipelined);
        assert_eq!(t.sweep(EXPIRY_NS - 1), 0);
        assert_eq!(t.sweep(EXPIRY_NS), 0, "taken: expires without counting");
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn bounded_and_untaken_reports_are_counted() {
        let mut t = Injections::default();
        for i in 0..MAX_REPORTS as u64 {
            assert!(t.note(i, 1, IDS, 5));
        }
        assert!(!t.note(u64::MAX, 1, IDS, 5), "full");
        assert!(t.note(3, 1, IDS, 5), "replacing an entry is not growth");
        assert_eq!(t.sweep(5 + EXPIRY_NS), MAX_REPORTS as u64);
        assert_eq!(t.len(), 0);
    }
}
