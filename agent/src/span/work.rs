//! Which request a thread (or a process) is working for, when that can be known.
//!
//! Owns the "who caused this call" evidence the span builder uses for thread-based in-process
//! propagation: the SERVER and CONSUMER exchanges in flight per thread and per process, and the
//! spans a thread keeps working for after they ended (a message consumed without ack).
//!
//! The rule, from the principle that a wrong parent is worse than none: a call made on a thread
//! is caused by the request that thread is handling only when exactly one is in flight there.
//! With several in flight (an event loop — Node.js, Python asyncio, nginx — or pipelined
//! requests) the cause is [`Cause::Ambiguous`]: the call gets no parent from here, and the
//! builder counts it. For runtimes whose requests move between OS threads (Go: goroutines are
//! scheduled on any thread) the thread says nothing. When the kernel names the goroutine of a
//! Go program's records (`DataEvent::goroutine`: the goroutine that made the syscall, or for a
//! `net/http` client write, the goroutine that called `roundTrip`), the scope is that goroutine:
//! `net/http`'s server reads a request and runs its handler on one goroutine, so a call made
//! from it is caused by the one request in flight there. When the goroutine is not known, or
//! has nothing in flight (a goroutine the handler started, a client whose writer goroutine is
//! not tied to its caller), the scope is the whole process: exactly one request in flight in it.
//!
//! A goroutine started while its parent goroutine had exactly one request in flight (the
//! kernel reports every `runtime.newproc1`, see agent-ebpf's `goctx`) works for that request:
//! its calls get it as parent while it is in flight (after it ended, the builder finds no such
//! exchange: no parent). The link is taken at the moment of the `go` statement, never later,
//! and only for goroutines the request's own goroutine starts ([`MAX_SPAWN_DEPTH`] 1): the
//! runtimes' long-lived goroutines that multiplex many requests (gRPC's loopy writer, HTTP/2
//! and HTTP/1 Transport read and write loops) are started deeper, by connection-setup
//! goroutines, and must not pass the first request on to all the others. A goroutine started
//! with several requests (or none) in flight in its parent, or deeper, is known to have no
//! single cause, and gets none (not the process's).
//!
//! Counts and keys are kept as a count plus wrapping sums of the keys: when the count is one,
//! the sums are that one key. Every operation is O(1) and allocates nothing per exchange.

use rustc_hash::FxHashMap as HashMap;

use super::model::SpanContext;

/// An exchange: (connection id, sequence number on it).
pub type Key = (u64, u64);

/// What a thread's or process's state says about the cause of a call made there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Exactly one request in flight in the scope.
    One(Key),
    /// None in flight, but the thread still works for a span that ended.
    Lingering(SpanContext),
    /// Nothing in flight.
    Nothing,
    /// More than one request in flight: no way to tell which.
    Ambiguous,
}

#[derive(Debug, Default, Clone, Copy)]
struct Open {
    /// The process (of a thread's entry).
    pid: u32,
    count: u32,
    conn_sum: u64,
    seq_sum: u64,
}

impl Open {
    fn add(&mut self, (conn, seq): Key) {
        self.count += 1;
        self.conn_sum = self.conn_sum.wrapping_add(conn);
        self.seq_sum = self.seq_sum.wrapping_add(seq);
    }

    /// Returns whether the scope is now empty.
    fn remove(&mut self, (conn, seq): Key) -> bool {
        self.count = self.count.saturating_sub(1);
        self.conn_sum = self.conn_sum.wrapping_sub(conn);
        self.seq_sum = self.seq_sum.wrapping_sub(seq);
        self.count == 0
    }
}

#[derive(Debug, Clone)]
struct Linger {
    ctx: SpanContext,
    pid: u32,
    ended_ns: u64,
}

/// Goroutines whose start was seen, at most (a `g` is reused by the runtime for a later
/// goroutine, whose start replaces the entry, so this bounds distinct `g`s, not starts).
pub const MAX_SPAWNED: usize = 65536;
/// Levels of `go` statements a request's context follows (see the module doc for why one).
pub const MAX_SPAWN_DEPTH: u8 = 1;

/// How long a thread may keep working for a span that already ended (no-ack deliveries).
pub const LINGER_NS: u64 = 60 * 1_000_000_000;

/// Where to look for the request a call was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The calling thread (requests stay on their thread).
    Thread,
    /// The whole process (requests move between threads; nothing finer known).
    Process,
    /// This goroutine of a Go program, then the process when it has nothing in flight.
    Goroutine(u64),
}

/// Keyed by thread and process ids and by goroutines' `g` pointers (the kernel's and the
/// traced program's, not a peer's): a fast non-keyed hash. Every entry stands for exchanges in
/// flight (removed with its last one) or a lingering thread (bounded by [`LINGER_NS`]).
#[derive(Debug, Default)]
pub struct Work {
    threads: HashMap<u32, Open>,
    procs: HashMap<u32, Open>,
    /// (pid, goroutine) of Go programs whose records name the goroutine.
    goroutines: HashMap<(u32, u64), Open>,
    /// (pid, goroutine) → the request its parent was handling when it started it (and at
    /// what depth), or None: no single one.
    spawned: HashMap<(u32, u64), Option<(Key, u8)>>,
    linger: HashMap<u32, Linger>,
}

/// What [`Work::spawned`] recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spawn {
    /// The new goroutine works for its parent's one request.
    Inherits,
    /// Its parent had none, or several, in flight (or the depth limit was reached).
    NoCause,
    /// The table is full: not recorded (the goroutine's calls fall back to the process).
    Full,
}

impl Work {
    /// A SERVER or CONSUMER exchange began on thread `tid` of process `pid`, for goroutine
    /// `goroutine` (0: not known). The thread's lingering work for an older span, if any, is
    /// over.
    pub fn started(&mut self, tid: u32, pid: u32, goroutine: u64, key: Key) {
        let t = self.threads.entry(tid).or_default();
        t.pid = pid;
        t.add(key);
        self.procs.entry(pid).or_default().add(key);
        if goroutine != 0 {
            self.goroutines
                .entry((pid, goroutine))
                .or_default()
                .add(key);
        }
        self.linger.remove(&tid);
    }

    /// That exchange ended (the same `tid`, `pid` and `goroutine` it started with). `linger`:
    /// the thread goes on working for its span (`ctx`, since `ended_ns`).
    pub fn ended(
        &mut self,
        (tid, pid, goroutine): (u32, u32, u64),
        key: Key,
        linger: Option<(SpanContext, u64)>,
    ) {
        if self.threads.get_mut(&tid).is_some_and(|o| o.remove(key)) {
            self.threads.remove(&tid);
        }
        if self.procs.get_mut(&pid).is_some_and(|o| o.remove(key)) {
            self.procs.remove(&pid);
        }
        let g = (pid, goroutine);
        if goroutine != 0 && self.goroutines.get_mut(&g).is_some_and(|o| o.remove(key)) {
            self.goroutines.remove(&g);
        }
        if let Some((ctx, ended_ns)) = linger {
            self.linger.insert(tid, Linger { ctx, pid, ended_ns });
        }
    }

    /// Goroutine `parent` of Go program `pid` started goroutine `child` now.
    pub fn spawned(&mut self, pid: u32, parent: u64, child: u64) -> Spawn {
        let cause = match self.goroutines.get(&(pid, parent)) {
            Some(o) if o.count == 1 => Some(((o.conn_sum, o.seq_sum), 1)),
            Some(_) => None,
            None => self
                .spawned
                .get(&(pid, parent))
                .copied()
                .flatten()
                .filter(|&(_, depth)| depth < MAX_SPAWN_DEPTH)
                .map(|(key, depth)| (key, depth + 1)),
        };
        let slot = (pid, child);
        if self.spawned.len() >= MAX_SPAWNED && !self.spawned.contains_key(&slot) {
            return Spawn::Full;
        }
        self.spawned.insert(slot, cause);
        if cause.is_some() {
            Spawn::Inherits
        } else {
            Spawn::NoCause
        }
    }

    /// What caused a call made now on thread `tid` of process `pid`, looked for in `scope`.
    pub fn cause(&self, tid: u32, pid: u32, scope: Scope) -> Cause {
        let open = match scope {
            Scope::Thread => self.threads.get(&tid),
            Scope::Process => self.procs.get(&pid),
            Scope::Goroutine(g) => match self.goroutines.get(&(pid, g)) {
                Some(o) => Some(o),
                None => match self.spawned.get(&(pid, g)) {
                    Some(Some((key, _))) => return Cause::One(*key),
                    Some(None) => None,
                    None => self.procs.get(&pid),
                },
            },
        };
        match open {
            Some(o) if o.count == 1 => Cause::One((o.conn_sum, o.seq_sum)),
            Some(o) if o.count > 1 => Cause::Ambiguous,
            _ => match self.linger.get(&tid) {
                Some(l) => Cause::Lingering(l.ctx.clone()),
                None => Cause::Nothing,
            },
        }
    }

    /// Whether goroutine `g` of `pid` has requests in flight of its own (then an ambiguous
    /// [`Scope::Goroutine`] cause is the goroutine's, not the process's).
    pub fn goroutine_busy(&self, pid: u32, g: u64) -> bool {
        self.goroutines.contains_key(&(pid, g))
    }

    /// Threads attributed to some span (in flight or lingering).
    pub fn threads(&self) -> usize {
        self.threads.len()
            + self
                .linger
                .keys()
                .filter(|t| !self.threads.contains_key(t))
                .count()
    }

    /// The process exited: its threads work for nothing any more (its thread ids may be
    /// reused by another process).
    pub fn process_exit(&mut self, pid: u32) {
        self.linger.retain(|_, l| l.pid != pid);
        self.threads.retain(|_, o| o.pid != pid);
        self.procs.remove(&pid);
        self.goroutines.retain(|&(p, _), _| p != pid);
        self.spawned.retain(|&(p, _), _| p != pid);
    }

    /// Lingering attributions older than [`LINGER_NS`] end.
    pub fn sweep(&mut self, now_ns: u64) {
        self.linger
            .retain(|_, l| now_ns.saturating_sub(l.ended_ns) < LINGER_NS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(span: u8) -> SpanContext {
        SpanContext {
            trace_id: [1; 16],
            span_id: [span; 8],
            flags: 1,
            trace_state: None,
        }
    }

    #[test]
    fn one_in_flight_is_the_cause_several_are_ambiguous() {
        let mut w = Work::default();
        assert_eq!(w.cause(10, 1, Scope::Thread), Cause::Nothing);
        w.started(10, 1, 0, (7, 0));
        assert_eq!(w.cause(10, 1, Scope::Thread), Cause::One((7, 0)));
        w.started(10, 1, 0, (8, 3));
        assert_eq!(w.cause(10, 1, Scope::Thread), Cause::Ambiguous);
        // The first ends: the one left is known exactly.
        w.ended((10, 1, 0), (7, 0), None);
        assert_eq!(w.cause(10, 1, Scope::Thread), Cause::One((8, 3)));
        w.ended((10, 1, 0), (8, 3), None);
        assert_eq!(w.cause(10, 1, Scope::Thread), Cause::Nothing);
        assert_eq!(w.threads(), 0);
    }

    #[test]
    fn process_scope_sees_requests_on_every_thread() {
        let mut w = Work::default();
        w.started(10, 1, 0, (7, 0));
        w.started(11, 1, 0, (9, 0));
        // Thread scope: each thread has its own one.
        assert_eq!(w.cause(10, 1, Scope::Thread), Cause::One((7, 0)));
        assert_eq!(w.cause(12, 1, Scope::Thread), Cause::Nothing);
        // Process scope (Go): two in flight in the process, on any thread.
        assert_eq!(w.cause(10, 1, Scope::Process), Cause::Ambiguous);
        assert_eq!(w.cause(12, 1, Scope::Process), Cause::Ambiguous);
        w.ended((11, 1, 0), (9, 0), None);
        assert_eq!(w.cause(12, 1, Scope::Process), Cause::One((7, 0)));
        // Another process is its own scope.
        assert_eq!(w.cause(12, 2, Scope::Process), Cause::Nothing);
    }

    #[test]
    fn lingering_work_until_the_thread_starts_another_or_time_passes() {
        let mut w = Work::default();
        w.started(10, 1, 0, (7, 0));
        w.ended((10, 1, 0), (7, 0), Some((ctx(5), 100)));
        assert_eq!(w.cause(10, 1, Scope::Thread), Cause::Lingering(ctx(5)));
        assert_eq!(w.threads(), 1);
        w.sweep(100 + LINGER_NS - 1);
        assert_eq!(w.threads(), 1);
        w.sweep(100 + LINGER_NS);
        assert_eq!(w.threads(), 0);
        w.ended((10, 1, 0), (7, 1), Some((ctx(6), 200)));
        w.started(10, 1, 0, (7, 2));
        assert_eq!(w.cause(10, 1, Scope::Thread), Cause::One((7, 2)));
        w.ended((10, 1, 0), (7, 2), None);
        assert_eq!(
            w.cause(10, 1, Scope::Thread),
            Cause::Nothing,
            "replaced by the newer work"
        );
        w.ended((10, 1, 0), (7, 3), Some((ctx(7), 300)));
        w.started(11, 1, 0, (8, 0));
        w.process_exit(1);
        assert_eq!(w.threads(), 0);
        assert_eq!(w.cause(11, 1, Scope::Process), Cause::Nothing);
    }

    #[test]
    fn goroutine_scope_is_exact_among_many_in_flight() {
        let mut w = Work::default();
        // 40 requests in flight in one Go process, each on its own serving goroutine, on two
        // threads (goroutines migrate: the thread says nothing).
        for i in 0..40u64 {
            w.started(
                10 + (i % 2) as u32,
                1,
                0xc000_0000 + i * 0x1a0,
                (100 + i, 0),
            );
        }
        for i in 0..40u64 {
            let g = 0xc000_0000 + i * 0x1a0;
            // Any thread: the goroutine decides.
            assert_eq!(
                w.cause(99, 1, Scope::Goroutine(g)),
                Cause::One((100 + i, 0))
            );
        }
        assert_eq!(w.cause(99, 1, Scope::Process), Cause::Ambiguous);
        // A goroutine with nothing of its own (a writer not tied to its caller, a goroutine the
        // handler started): the process scope, ambiguous with 40 in flight.
        assert_eq!(w.cause(99, 1, Scope::Goroutine(0xdead)), Cause::Ambiguous);
        assert!(!w.goroutine_busy(1, 0xdead));
        // Another process's goroutine of the same address is another goroutine.
        assert_eq!(
            w.cause(99, 2, Scope::Goroutine(0xc000_0000)),
            Cause::Nothing
        );
        for i in 0..40u64 {
            let g = 0xc000_0000 + i * 0x1a0;
            w.ended((10 + (i % 2) as u32, 1, g), (100 + i, 0), None);
        }
        assert!(w.goroutines.is_empty() && w.procs.is_empty() && w.threads.is_empty());
    }

    #[test]
    fn a_reused_goroutine_inherits_nothing() {
        let mut w = Work::default();
        let g = 0xc000_1000;
        w.started(10, 1, g, (7, 0));
        w.started(11, 1, 0xc000_2000, (8, 0));
        // Pipelined requests on one serving goroutine: ambiguous there, and counted as such.
        w.started(10, 1, g, (7, 1));
        assert_eq!(w.cause(12, 1, Scope::Goroutine(g)), Cause::Ambiguous);
        assert!(w.goroutine_busy(1, g));
        w.ended((10, 1, g), (7, 0), None);
        w.ended((10, 1, g), (7, 1), None);
        // Its connection is done: a goroutine later given the same `g` finds no request of its
        // own; the process has one left, which is today's process-scope answer.
        assert!(!w.goroutine_busy(1, g));
        assert_eq!(w.cause(12, 1, Scope::Goroutine(g)), Cause::One((8, 0)));
        w.started(13, 1, g, (9, 0));
        assert_eq!(w.cause(12, 1, Scope::Goroutine(g)), Cause::One((9, 0)));
        // Exit forgets every goroutine of the process.
        w.process_exit(1);
        assert!(w.goroutines.is_empty());
        assert_eq!(w.cause(12, 1, Scope::Goroutine(g)), Cause::Nothing);
    }

    #[test]
    fn unknown_goroutine_keeps_process_scope() {
        let mut w = Work::default();
        // Records without a goroutine (old Go, probes missing): nothing per goroutine.
        w.started(10, 1, 0, (7, 0));
        w.started(11, 1, 0, (8, 0));
        assert!(w.goroutines.is_empty());
        assert_eq!(w.cause(10, 1, Scope::Process), Cause::Ambiguous);
        assert_eq!(
            w.cause(10, 1, Scope::Goroutine(0xc000_1000)),
            Cause::Ambiguous
        );
        w.ended((11, 1, 0), (8, 0), None);
        assert_eq!(w.cause(10, 1, Scope::Process), Cause::One((7, 0)));
    }

    #[test]
    fn a_started_goroutine_works_for_its_parents_one_request_at_the_go_statement() {
        let mut w = Work::default();
        let (handler_a, handler_b, accept) = (0xa0, 0xb0, 0x10);
        // Two requests in flight, each on its handler goroutine (threads say nothing in Go).
        w.started(10, 1, handler_a, (7, 0));
        w.started(11, 1, handler_b, (8, 0));
        assert_eq!(w.spawned(1, handler_a, 0xa1), Spawn::Inherits);
        assert_eq!(w.spawned(1, handler_b, 0xb1), Spawn::Inherits);
        // Grandchildren do not (a connection-setup goroutine's loops serve every request).
        assert_eq!(w.spawned(1, 0xa1, 0xa2), Spawn::NoCause);
        // The accept loop has no request: its goroutines get none, not the process's two.
        assert_eq!(w.spawned(1, accept, 0xc1), Spawn::NoCause);
        assert_eq!(w.cause(12, 1, Scope::Goroutine(0xa1)), Cause::One((7, 0)));
        assert_eq!(w.cause(12, 1, Scope::Goroutine(0xa2)), Cause::Nothing);
        assert_eq!(w.cause(13, 1, Scope::Goroutine(0xb1)), Cause::One((8, 0)));
        assert_eq!(w.cause(13, 1, Scope::Goroutine(0xc1)), Cause::Nothing);
        // Unknown goroutines still fall back to the process: ambiguous here.
        assert_eq!(w.cause(13, 1, Scope::Goroutine(0xdd)), Cause::Ambiguous);
        // The link was taken at the go statement: a later request of the parent is not it.
        w.ended((10, 1, handler_a), (7, 0), None);
        w.started(10, 1, handler_a, (7, 1));
        assert_eq!(w.cause(12, 1, Scope::Goroutine(0xa1)), Cause::One((7, 0)));
        // A reused g gets the context of its new start.
        assert_eq!(w.spawned(1, accept, 0xa1), Spawn::NoCause);
        assert_eq!(w.cause(12, 1, Scope::Goroutine(0xa1)), Cause::Nothing);
        // A parent with two requests at once: no single cause.
        w.started(10, 1, handler_b, (9, 0));
        assert_eq!(w.spawned(1, handler_b, 0xb2), Spawn::NoCause);
        w.process_exit(1);
        assert!(w.spawned.is_empty());
    }
}
