//! Stub: HTTP/2 parser, being written.
use super::{Detection, Direction, L7Event, ParseError, Role, SegmentCtx};

pub fn detect(_dir: Direction, _role: Role, _bytes: &[u8]) -> Detection {
    Detection::NoMatch
}

#[derive(Debug)]
pub struct H2Conn {}

impl H2Conn {
    pub fn new(_request_dir: Direction) -> Self {
        Self {}
    }
    pub fn parse(
        &mut self,
        _dir: Direction,
        _buf: &[u8],
        _ctx: &SegmentCtx,
        _out: &mut Vec<L7Event>,
        _errors: &mut Vec<ParseError>,
    ) -> usize {
        0
    }
    pub fn skip(
        &mut self,
        _dir: Direction,
        _n: u64,
        _unconsumed: usize,
        _ctx: &SegmentCtx,
        _out: &mut Vec<L7Event>,
    ) -> bool {
        false
    }
    pub fn close(&mut self, _ts_ns: u64, _out: &mut Vec<L7Event>) {}
}
