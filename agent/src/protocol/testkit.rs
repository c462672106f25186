//! Test support shared by every protocol parser's tests: a replay driver that feeds a
//! connection's two recorded byte streams to a parser the way `crate::conn` does (unconsumed
//! bytes are handed back in front of the next segment; uncaptured bytes are reported with
//! `skip`), giving every segment its own tid and timestamps so timing can be checked.
//!
//! Each parser's tests keep their own fixtures and golden formats; only the driving is here.

use super::{Direction, L7Event, ParseError, Parser, Protocol, SegmentCtx};

/// What the replay driver needs from a parser beyond the [`Parser`] contract: a constructor
/// and the bound on what it may leave unconsumed (its buffering limit), which the driver
/// asserts. Every [`Protocol`] has both; the h2c tests drive [`super::ConnParser`] itself.
pub(crate) trait ReplayParser: Parser {
    /// Most bytes of one direction the parser may leave unconsumed.
    const MAX_UNCONSUMED: usize;
    fn new(request_dir: Direction) -> Self;
}

impl<P: Protocol> ReplayParser for P {
    const MAX_UNCONSUMED: usize = <P as Protocol>::MAX_UNCONSUMED;
    fn new(request_dir: Direction) -> Self {
        <P as Protocol>::new(request_dir)
    }
}

/// Drives one connection: per side (0: requests, 1: responses), a stream of bytes delivered in
/// segments.
pub(crate) struct Replay<'a, P> {
    pub conn: P,
    pub streams: [&'a [u8]; 2],
    pub dirs: [Direction; 2],
    /// First unconsumed byte, per side.
    pub from: [usize; 2],
    /// Bytes delivered (or skipped), per side.
    pub to: [usize; 2],
    /// (end offset, ctx) of each segment delivered, per side.
    pub segments: [Vec<(usize, SegmentCtx)>; 2],
    clock: u64,
    pub events: Vec<L7Event>,
    pub errors: Vec<ParseError>,
    pub close_ns: Option<u64>,
}

impl<'a, P: ReplayParser> Replay<'a, P> {
    pub fn new(requests: &'a [u8], responses: &'a [u8], request_dir: Direction) -> Self {
        let response_dir = if request_dir == Direction::Egress {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        Self {
            conn: P::new(request_dir),
            streams: [requests, responses],
            dirs: [request_dir, response_dir],
            from: [0; 2],
            to: [0; 2],
            segments: [Vec::new(), Vec::new()],
            clock: 0,
            events: Vec::new(),
            errors: Vec::new(),
            close_ns: None,
        }
    }

    /// Start each side at the given offset (joining mid-connection).
    pub fn starting_at(mut self, req: usize, resp: usize) -> Self {
        self.from = [req, resp];
        self.to = [req, resp];
        self
    }

    fn next_ctx(&mut self) -> SegmentCtx {
        self.clock += 1;
        SegmentCtx {
            tid: 1000 + self.clock as u32,
            goroutine: 0,
            first_ns: self.clock * 1000,
            last_ns: self.clock * 1000 + 500,
        }
    }

    /// Deliver the next `len` bytes of `side` as one segment.
    pub fn deliver(&mut self, side: usize, len: usize) {
        let ctx = self.next_ctx();
        self.to[side] += len;
        assert!(
            self.to[side] <= self.streams[side].len(),
            "delivering past the end of the stream"
        );
        self.segments[side].push((self.to[side], ctx));
        let buf = &self.streams[side][self.from[side]..self.to[side]];
        let n = self.conn.parse(
            self.dirs[side],
            buf,
            &ctx,
            &mut self.events,
            &mut self.errors,
        );
        assert!(n <= buf.len(), "consumed {n} of {} bytes", buf.len());
        self.from[side] += n;
        assert!(
            self.to[side] - self.from[side] <= P::MAX_UNCONSUMED,
            "unconsumed bytes unbounded"
        );
    }

    /// The next `len` bytes of `side` move uncaptured. Returns what `skip` said.
    pub fn gap(&mut self, side: usize, len: usize) -> bool {
        let ctx = self.next_ctx();
        let unconsumed = self.to[side] - self.from[side];
        let absorbed = self.conn.skip(
            self.dirs[side],
            len as u64,
            unconsumed,
            &ctx,
            &mut self.events,
        );
        // An empty gap changes nothing, whatever is unconsumed.
        assert!(
            !absorbed || unconsumed == 0 || len == 0,
            "a gap after unconsumed bytes cannot be absorbed"
        );
        self.to[side] += len;
        self.segments[side].push((self.to[side], ctx));
        // The caller drops the unconsumed bytes when the gap was not absorbed.
        self.from[side] = self.to[side];
        absorbed
    }

    /// Records of the connection were lost (the ring buffer was full): the next `lens[side]`
    /// bytes of each side never arrive, and the parser is told with `gap`, as `crate::conn`
    /// does, which then drops what both sides left unconsumed. Returns what `gap` said.
    pub fn lost(&mut self, lens: [usize; 2]) -> bool {
        let ctx = self.next_ctx();
        let resynced = self.conn.gap(ctx.first_ns, &mut self.events);
        for (side, len) in lens.into_iter().enumerate() {
            self.to[side] += len;
            assert!(
                self.to[side] <= self.streams[side].len(),
                "losing past the end of the stream"
            );
            self.from[side] = self.to[side];
        }
        resynced
    }

    pub fn close(&mut self) {
        self.clock += 1;
        let ts = self.clock * 1000 + 1;
        self.conn.close(ts, &mut self.events);
        self.close_ns = Some(ts);
    }

    /// The segment that delivered byte `offset` of `side`.
    pub fn ctx_at(&self, side: usize, offset: usize) -> SegmentCtx {
        let segs = &self.segments[side];
        let i = segs.partition_point(|(end, _)| *end <= offset);
        segs.get(i)
            .map(|(_, ctx)| *ctx)
            .expect("offset not delivered")
    }

    pub fn starts(&self) -> Vec<&L7Event> {
        self.events
            .iter()
            .filter(|e| matches!(e, L7Event::RequestStart { .. }))
            .collect()
    }

    pub fn ends(&self) -> Vec<&L7Event> {
        self.events
            .iter()
            .filter(|e| matches!(e, L7Event::ExchangeEnd { .. }))
            .collect()
    }
}

/// One step of a hand-written connection that loses records: bytes of one side delivered as
/// one segment, or bytes of each side that never arrive ([`Replay::lost`]).
pub(crate) enum Step {
    Req(Vec<u8>),
    Resp(Vec<u8>),
    /// Request-side and response-side bytes lost.
    Lost(Vec<u8>, Vec<u8>),
}

/// Replays `steps` (on copies that live as long as the test process: it is short), checking
/// `check(events, closed)` after each and after the close; every `Lost` must be resynchronised
/// from. Returns the replay, closed.
pub(crate) fn replay_steps<P: ReplayParser>(
    request_dir: Direction,
    steps: &[Step],
    check: impl Fn(&[L7Event], bool),
) -> Replay<'static, P> {
    let (mut req, mut resp) = (Vec::new(), Vec::new());
    for s in steps {
        match s {
            Step::Req(b) => req.extend_from_slice(b),
            Step::Resp(b) => resp.extend_from_slice(b),
            Step::Lost(q, p) => {
                req.extend_from_slice(q);
                resp.extend_from_slice(p);
            }
        }
    }
    let [req, resp] = [req, resp].map(|v| &*Box::leak(v.into_boxed_slice()));
    let mut r = Replay::new(req, resp, request_dir);
    for s in steps {
        match s {
            Step::Req(b) => r.deliver(0, b.len()),
            Step::Resp(b) => r.deliver(1, b.len()),
            Step::Lost(q, p) => assert!(r.lost([q.len(), p.len()]), "no resynchronisation"),
        }
        check(&r.events, false);
    }
    r.close();
    check(&r.events, true);
    r
}

/// Recorded reads (`(side, length)`, side 0 = requests, 1 = responses) grouped into runs of
/// one side: (side, end offset, other side's bytes relayed before the run began).
fn runs(segs: &[(usize, usize)]) -> Vec<(usize, usize, usize)> {
    let mut done = [0usize; 2];
    let mut out: Vec<(usize, usize, usize)> = Vec::new();
    for &(side, len) in segs {
        done[side] += len;
        match out.last_mut() {
            Some(run) if run.0 == side => run.1 = done[side],
            _ => out.push((side, done[side], done[1 - side])),
        }
    }
    out
}

/// Interleaves each side's pieces (lengths) causally, as the recording `segs` allow: a piece
/// goes once the other side's bytes that were relayed before its run began are delivered (a
/// response never precedes its request). Returns `(side, length)` segments; panics, naming
/// fixture `name`, if the pieces cannot be ordered.
pub(crate) fn schedule(
    name: &str,
    segs: &[(usize, usize)],
    req: &[usize],
    resp: &[usize],
) -> Vec<(usize, usize)> {
    const REQ: usize = 0;
    const RESP: usize = 1;
    let runs = runs(segs);
    // (length, other-side bytes needed first)
    let cut = |side: usize, pieces: &[usize]| -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut at = 0;
        for &len in pieces {
            let end = at + len;
            while at < end {
                let (run_end, need) = runs
                    .iter()
                    .find(|r| r.0 == side && r.1 > at)
                    .map_or((end, usize::MAX), |r| (r.1, r.2));
                let stop = end.min(run_end);
                out.push((stop - at, need));
                at = stop;
            }
        }
        out
    };
    let (req, resp) = (cut(REQ, req), cut(RESP, resp));
    let (mut out, mut ri, mut si, mut done) = (Vec::new(), 0, 0, [0usize; 2]);
    while ri < req.len() || si < resp.len() {
        let resp_ok = si < resp.len() && (resp[si].1 <= done[REQ] || ri == req.len());
        if resp_ok || ri == req.len() {
            out.push((RESP, resp[si].0));
            done[RESP] += resp[si].0;
            si += 1;
        } else {
            assert!(
                req[ri].1 <= done[RESP] || si == resp.len(),
                "{name}: schedule deadlock"
            );
            out.push((REQ, req[ri].0));
            done[REQ] += req[ri].0;
            ri += 1;
        }
    }
    out
}

/// `len` bytes cut into pieces of `size` (the last may be shorter).
pub(crate) fn pieces(len: usize, size: usize) -> Vec<usize> {
    (0..len)
        .step_by(size.max(1))
        .map(|at| size.min(len - at))
        .collect()
}

/// One side's read lengths as recorded.
pub(crate) fn side_pieces(segs: &[(usize, usize)], side: usize) -> Vec<usize> {
    segs.iter().filter(|s| s.0 == side).map(|s| s.1).collect()
}
