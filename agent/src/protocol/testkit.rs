//! Test support shared by every protocol parser's tests: a replay driver that feeds a
//! connection's two recorded byte streams to a parser the way `crate::conn` does (unconsumed
//! bytes are handed back in front of the next segment; uncaptured bytes are reported with
//! `skip`), giving every segment its own tid and timestamps so timing can be checked.
//!
//! Each parser's tests keep their own fixtures and golden formats; only the driving is here.

use super::{Direction, L7Event, ParseError, SegmentCtx};

/// What the replay driver needs from a parser: the `ConnParser` contract, plus the bound on
/// what it may leave unconsumed (its buffering limit), which the driver asserts.
pub(crate) trait ReplayParser {
    /// Most bytes of one direction the parser may leave unconsumed.
    const MAX_UNCONSUMED: usize;
    fn new(request_dir: Direction) -> Self;
    fn parse(
        &mut self,
        dir: Direction,
        buf: &[u8],
        ctx: &SegmentCtx,
        out: &mut Vec<L7Event>,
        errors: &mut Vec<ParseError>,
    ) -> usize;
    fn skip(
        &mut self,
        dir: Direction,
        n: u64,
        unconsumed: usize,
        ctx: &SegmentCtx,
        out: &mut Vec<L7Event>,
    ) -> bool;
    fn close(&mut self, ts_ns: u64, out: &mut Vec<L7Event>);
}

/// Implements [`ReplayParser`] for a parser type by delegating to its inherent methods.
macro_rules! replay_parser {
    ($conn:ty, $max_unconsumed:expr) => {
        impl $crate::protocol::testkit::ReplayParser for $conn {
            const MAX_UNCONSUMED: usize = $max_unconsumed;
            fn new(request_dir: $crate::protocol::Direction) -> Self {
                <$conn>::new(request_dir)
            }
            fn parse(
                &mut self,
                dir: $crate::protocol::Direction,
                buf: &[u8],
                ctx: &$crate::protocol::SegmentCtx,
                out: &mut Vec<$crate::protocol::L7Event>,
                errors: &mut Vec<$crate::protocol::ParseError>,
            ) -> usize {
                <$conn>::parse(self, dir, buf, ctx, out, errors)
            }
            fn skip(
                &mut self,
                dir: $crate::protocol::Direction,
                n: u64,
                unconsumed: usize,
                ctx: &$crate::protocol::SegmentCtx,
                out: &mut Vec<$crate::protocol::L7Event>,
            ) -> bool {
                <$conn>::skip(self, dir, n, unconsumed, ctx, out)
            }
            fn close(&mut self, ts_ns: u64, out: &mut Vec<$crate::protocol::L7Event>) {
                <$conn>::close(self, ts_ns, out)
            }
        }
    };
}
pub(crate) use replay_parser;

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
