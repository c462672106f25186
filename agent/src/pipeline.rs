//! The single-threaded data path: ring-buffer records in, spans out.
//!
//! Owns the order events are processed in. The ring buffer delivers records in the order their
//! syscalls *returned*, but causality runs on when bytes became observable: a client's write
//! exists from its syscall entry, while the server's read of it may return (and be recorded)
//! before the client's write returns. Records are therefore held for a short window and
//! released in order of [`Event::causal_ns`], which makes same-node stitching independent of
//! which CPU won the race. Payload buffers are pooled, so steady state allocates nothing per
//! record.
//!
//! Everything downstream (conn → protocol → span → export) is called from here, synchronously.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use agent_common::{ConnCloseEvent, ConnOpenEvent, DataEvent, EventHeader, Role};

use crate::conn::{ConnMeta, ConnTable, Limits};
use crate::ebpf::event::{decode, Event};
use crate::ebpf::seed::SeededConn;
use crate::enrich::worker::{Done, Job, ProcWorker};
use crate::span::builder::{Clock, Resources, SpanBuilder, SpanOptions, SpanSink};
use crate::telemetry::{Counter, Telemetry};

/// How long records wait for earlier-caused records that the ring delivers later. The races
/// it covers are microseconds wide; the wait only delays spans by this much.
pub const HOLD_NS: u64 = 3_000_000;
/// Pooled payload buffers kept for reuse.
const POOL_MAX: usize = 1024;
/// Processes waiting to be looked at for TLS libraries (exec/exit notices between two looks).
const MAX_PENDING_PROCS: usize = 4096;
/// Procfs jobs awaiting their answer (see `enrich::worker`); beyond it reads happen inline.
const MAX_PENDING_JOBS: usize = 4096;
/// Longest the data path waits for the metadata of a process that exited (see
/// `Pipeline::await_answer`); the worker answers in well under a millisecond unless the machine is starved of CPU.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

enum Owned {
    Open(ConnOpenEvent),
    Close(ConnCloseEvent),
    Data(DataEvent, Vec<u8>),
    Exit(EventHeader),
    /// (pid, parent goroutine, child goroutine).
    Spawn(u32, u64, u64),
}

struct Held {
    key: u64,
    arrival: u64,
    ev: Owned,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        (self.key, self.arrival) == (o.key, o.arrival)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.key, self.arrival).cmp(&(o.key, o.arrival))
    }
}

pub struct Pipeline<R: Resources, S: SpanSink> {
    held: BinaryHeap<Reverse<Held>>,
    arrivals: u64,
    pool: Vec<Vec<u8>>,
    conns: ConnTable,
    spans: SpanBuilder,
    resources: R,
    sink: S,
    telemetry: Arc<Telemetry>,
    /// (pid, fd) of connections user space dropped, for the kernel table.
    untrack: Vec<(u32, u32)>,
    /// Processes that exec'd or mapped an executable file, and processes that exited, since the
    /// last `take_process_changes` (for the TLS library tracker). Bounded: see `push`.
    execs: HashSet<u32>,
    exits: Vec<u32>,
    /// Port of this agent's OTLP endpoint, when it may be on this node.
    export_port: Option<u16>,
    scratch: Vec<(ConnMeta, crate::protocol::L7Event)>,
    /// Procfs reads done off this thread, when set (else inline, as in tests).
    worker: Option<ProcWorker>,
    /// pid → id of the resource job asked for it (an answer for an older id is stale: pids
    /// are reused).
    pending: HashMap<u32, u64>,
    jobs: u64,
    /// Moves whenever a process's traced protocols (selection rules) change, so that each
    /// connection looks its process's decision up again (see `ConnTable::data_selected`).
    selection_epoch: u64,
}

impl<R: Resources, S: SpanSink> Pipeline<R, S> {
    pub fn new(
        limits: Limits,
        opts: SpanOptions,
        resources: R,
        sink: S,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Self {
            held: BinaryHeap::new(),
            arrivals: 0,
            pool: Vec::new(),
            conns: ConnTable::new(limits, telemetry.clone()),
            spans: SpanBuilder::new(Clock::now(), opts, telemetry.clone()),
            resources,
            sink,
            telemetry,
            untrack: Vec::new(),
            execs: HashSet::new(),
            exits: Vec::new(),
            export_port: None,
            scratch: Vec::new(),
            worker: None,
            pending: HashMap::new(),
            jobs: 0,
            selection_epoch: 0,
        }
    }

    /// Moves procfs reads of process metadata to `worker`.
    pub fn set_worker(&mut self, worker: ProcWorker) {
        self.worker = Some(worker);
    }

    /// The port this agent exports to: the server side of the agent's own connections to it is
    /// never traced.
    pub fn set_export_port(&mut self, port: Option<u16>) {
        self.export_port = port;
    }

    /// Connections found in procfs at start-up.
    pub fn seed(&mut self, seeded: &[SeededConn], now_ns: u64) {
        for s in seeded {
            let meta = ConnMeta {
                conn_id: s.conn_id,
                pid: s.pid,
                fd: s.fd,
                role: s.role,
                local: s.local,
                remote: s.remote,
                comm: s.comm,
                tls: false,
                gaps: 0,
            };
            self.conns.open(meta, now_ns, &mut self.scratch);
            self.telemetry.incr(Counter::ConnsSeeded);
        }
        self.dispatch();
    }

    /// One raw ring-buffer record: decoded, copied out of the ring, held for ordering.
    pub fn push(&mut self, record: &[u8]) {
        self.telemetry.incr(Counter::EventsRead);
        let ev = match decode(record) {
            Ok(e) => e,
            Err(e) => {
                self.telemetry.incr(Counter::EventsMalformed);
                tracing::debug!("malformed record: {e}");
                return;
            }
        };
        let key = ev.causal_ns();
        let owned = match ev {
            Event::ConnOpen(o) => {
                self.read_ahead(o.header.pid, o.comm);
                Owned::Open(o)
            }
            Event::ConnClose(c) => Owned::Close(c),
            Event::Inject(i) => {
                // Not ordered with the rest: the table it goes to is keyed by the data record
                // it precedes in the ring, which is held and parsed after it.
                let ids = crate::span::injected::Injected {
                    trace_id: i.trace_id,
                    span_id: i.span_id,
                    flags: i.flags,
                };
                self.spans
                    .injected(i.header.conn_id, i.enter_ts_ns, ids, i.header.ts_ns);
                return;
            }
            Event::ProcExit(h) => Owned::Exit(h),
            Event::GoSpawn(s) => Owned::Spawn(s.header.pid, s.parent, s.child),
            Event::ProcExec(h) => {
                // Not ordered with the rest: only says "look at this process's mappings".
                if h.conn_id == agent_common::PROC_EXEC_NEW_PROGRAM {
                    // A new program: what was known of the pid is stale, and the earliest
                    // moment to read its metadata is now (a server may serve one request
                    // and die before its first record is processed).
                    self.pending.remove(&h.pid);
                    self.resources.forget(h.pid);
                    self.read_ahead(h.pid, [0; 16]);
                }
                if self.execs.len() < MAX_PENDING_PROCS {
                    self.execs.insert(h.pid);
                } else {
                    self.telemetry.incr(Counter::ProcScansDropped);
                }
                return;
            }
            // Bytes a known connection will drop (muted or TLS ciphertext the kernel copied
            // before it knew) are not copied out of the ring; the record still keeps its
            // place in the order (it marks the connection active).
            Event::Data(d, _) if !self.conns.wants_payload(&d) => Owned::Data(d, Vec::new()),
            Event::Data(d, p) => {
                // A resource built before its pod was known: read it again now the pod
                // watch has news (an atomic load; the read itself is on the worker).
                if self.resources.stale(d.header.pid) {
                    self.read_ahead(d.header.pid, [0; 16]);
                }
                let mut buf = self.pool.pop().unwrap_or_default();
                buf.clear();
                buf.extend_from_slice(p);
                Owned::Data(d, buf)
            }
        };
        self.arrivals += 1;
        self.held.push(Reverse(Held {
            key,
            arrival: self.arrivals,
            ev: owned,
        }));
    }

    /// A process's record arrived (it is processed after the hold), or it exec'd: start the
    /// procfs read of its metadata, so it runs while the record waits.
    fn read_ahead(&mut self, pid: u32, comm: [u8; 16]) {
        let Some(w) = &self.worker else {
            return;
        };
        if !self.resources.known(pid)
            && !self.pending.contains_key(&pid)
            && self.pending.len() < MAX_PENDING_JOBS
        {
            self.jobs += 1;
            let job = Job {
                id: self.jobs,
                pid,
                comm,
            };
            if w.submit(job) {
                self.pending.insert(pid, self.jobs);
            } else {
                self.telemetry.incr(Counter::ProcJobsRefused);
            }
        }
    }

    /// The server side of a connection to the port this agent exports to (maybe our own).
    fn is_export_server(&self, o: &ConnOpenEvent) -> bool {
        Role::from_u8(o.role) == Role::Server && Some(o.local.port) == self.export_port
    }

    /// Applies the procfs answers that are ready.
    fn collect_answers(&mut self) {
        while let Some(done) = self.worker.as_ref().and_then(ProcWorker::try_done) {
            self.apply(done);
        }
    }

    fn apply(&mut self, done: Done) {
        let Done {
            id,
            pid,
            resource,
            traits,
            cacheable,
        } = done;
        if self.pending.get(&pid) == Some(&id) {
            self.pending.remove(&pid);
            if cacheable {
                if self.resources.protocols(pid) != traits.protocols {
                    self.selection_epoch += 1;
                }
                self.resources.provide(pid, resource, traits);
            }
        }
    }

    /// Process `pid` exited with its metadata still being read (it lived for less than the
    /// ordering hold: a request cut off by a crash, a short-lived client). The read began
    /// when its first record arrived, most likely while it ran: wait a little for it rather
    /// than name its last spans by `comm` alone.
    fn await_answer(&mut self, pid: u32) {
        let deadline = std::time::Instant::now() + EXIT_WAIT;
        while self.pending.contains_key(&pid) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.worker.as_ref().and_then(|w| w.done_within(left)) {
                Some(done) => self.apply(done),
                None => return,
            }
        }
    }

    /// When the oldest held record is due (CLOCK_MONOTONIC ns), if any.
    pub fn next_due(&self) -> Option<u64> {
        self.held
            .peek()
            .map(|Reverse(h)| h.key.saturating_add(HOLD_NS))
    }

    /// Processes every held record older than the window (all of them when `now_ns` is MAX).
    pub fn process_due(&mut self, now_ns: u64) {
        self.collect_answers();
        let cutoff = now_ns.saturating_sub(HOLD_NS);
        while self
            .held
            .peek()
            .is_some_and(|Reverse(h)| h.key <= cutoff || now_ns == u64::MAX)
        {
            let Reverse(h) = self.held.pop().expect("peeked");
            self.process(h.ev);
        }
    }

    fn process(&mut self, ev: Owned) {
        match ev {
            Owned::Open(o) => {
                let meta = ConnMeta {
                    conn_id: o.header.conn_id,
                    pid: o.header.pid,
                    fd: o.fd,
                    role: Role::from_u8(o.role),
                    local: o.local,
                    remote: o.remote,
                    comm: o.comm,
                    tls: false,
                    gaps: 0,
                };
                // Read the process's metadata now, while it surely runs: a short-lived client
                // may be gone by the time its span ends. (With a worker, that read began when
                // the record arrived.)
                if self.worker.is_none() {
                    let _ = self.resources.resource(meta.pid, meta.comm_str());
                }
                self.conns.open(meta, o.header.ts_ns, &mut self.scratch);
                // The collector's side of this agent's own export connection: tracing it would
                // turn every export into spans to export. Only connections on the export port
                // are checked (against the addresses of our own few sockets), before any of
                // their bytes are parsed.
                if self.is_export_server(&o)
                    && crate::ebpf::seed::is_own_connection(&meta.remote, &meta.local)
                {
                    self.conns
                        .ignore(meta.conn_id, o.header.ts_ns, &mut self.scratch);
                }
            }
            Owned::Close(c) => {
                if c.flags & agent_common::data_flags::GAP_BEFORE != 0 {
                    // Records lost just before the close: what was in flight was cut by the
                    // hole, not completed by the close.
                    self.conns
                        .gap(c.header.conn_id, c.header.ts_ns, &mut self.scratch);
                }
                self.conns
                    .close(c.header.conn_id, c.header.ts_ns, &mut self.scratch)
            }
            Owned::Spawn(pid, parent, child) => self.spans.go_spawned(pid, parent, child),
            Owned::Exit(h) => {
                let fds = self.conns.process_exit(h.pid, h.ts_ns, &mut self.scratch);
                self.untrack.extend(fds);
                if self.exits.len() < MAX_PENDING_PROCS {
                    self.exits.push(h.pid);
                }
                // The spans its exit ended still have its metadata...
                self.await_answer(h.pid);
                self.dispatch();
                // ...but pids are reused: the next process with this pid gets fresh metadata.
                self.pending.remove(&h.pid);
                self.resources.forget(h.pid);
                self.spans.process_exit(h.pid);
            }
            Owned::Data(d, buf) => {
                let resources = &self.resources;
                self.conns.data_selected(
                    &d,
                    &buf,
                    &mut |pid| resources.protocols(pid),
                    self.selection_epoch,
                    &mut self.scratch,
                );
                if self.pool.len() < POOL_MAX
                    && buf.capacity() > 0
                    && buf.capacity() <= 2 * agent_common::MAX_PAYLOAD
                {
                    self.pool.push(buf);
                }
            }
        }
        self.dispatch();
    }

    fn dispatch(&mut self) {
        for (meta, ev) in self.scratch.drain(..) {
            self.spans
                .handle(&meta, ev, &self.conns, &mut self.resources, &mut self.sink);
        }
    }

    /// Periodic housekeeping: idle connections, clock drift.
    pub fn sweep(&mut self, now_ns: u64) {
        self.conns.sweep_idle(now_ns, &mut self.scratch);
        self.dispatch();
        let conns = &self.conns;
        self.spans.sweep(now_ns, |id| conns.meta(id).is_some());
        self.spans.set_clock(Clock::now());
    }

    /// Connections to stop copying payload for, since the last call.
    pub fn take_to_mute(&mut self) -> Vec<(u32, u32, u8)> {
        self.conns.take_to_mute()
    }

    /// Processes that exec'd or loaded a library, and processes that exited, since the last
    /// call.
    pub fn take_process_changes(&mut self) -> (Vec<u32>, Vec<u32>) {
        (
            self.execs.drain().collect(),
            std::mem::take(&mut self.exits),
        )
    }

    /// Connections dropped since the last call, for removal from the kernel's table.
    pub fn take_untracked(&mut self) -> Vec<(u32, u32)> {
        std::mem::take(&mut self.untrack)
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }
}

#[cfg(test)]
mod gap_tests;
#[cfg(test)]
mod tests;
