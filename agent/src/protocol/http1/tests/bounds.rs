//! Hostile inputs against each bound on work and memory: what is kept and emitted stays
//! right, and the work the head search does (`head::SEARCHED`) stays linear in the input.
//! Timings are in `benches/http1.rs` (hostile section), never here.

use super::super::exchanges::MAX_PENDING;
use super::super::head::{MAX_HEAD, SEARCHED};
use super::unit::summary;
use super::{check_invariants, Replay, REQ, RESP};
use crate::protocol::{Direction, L7Event};

/// Feed `bytes` on `side` in `seg`-byte reads; returns the events and errors, and the bytes
/// the head search was given.
fn feed(side: usize, bytes: &[u8], seg: usize) -> (Vec<L7Event>, usize, u64) {
    let empty: &[u8] = b"";
    let (req, resp) = if side == REQ {
        (bytes, empty)
    } else {
        (empty, bytes)
    };
    let before = SEARCHED.with(|n| n.get());
    let mut r = Replay::new(req, resp, Direction::Egress);
    let mut left = bytes.len();
    while left > 0 {
        let n = left.min(seg);
        r.deliver(side, n);
        left -= n;
    }
    r.close();
    check_invariants(&r.events, true);
    let searched = SEARCHED.with(|n| n.get()) - before;
    (r.events, r.errors.len(), searched)
}

/// Lines that each look like the start of a head, none ending one: every line is a resync
/// candidate, and each candidate's head would run to the same end (or past MAX_HEAD).
fn lines(line: &[u8], total: usize, end: &[u8]) -> Vec<u8> {
    [line.repeat(total / line.len()), end.to_vec()].concat()
}

#[test]
fn heads_given_up_are_not_searched_again_by_resync() {
    let status = b"HTTP/1.1 200 OK\r\n";
    let request = b"GET / HTTP/1.1\r\n";
    for (side, line, last) in [
        (RESP, &status[..], &b"HTTP/1.1 204 No Content\r\n\r\n"[..]),
        (REQ, request, b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n"),
    ] {
        // No head end for 3 x MAX_HEAD bytes, then a genuine message.
        let input = lines(line, 3 * MAX_HEAD, last);
        let (events, errors, searched) = feed(side, &input, 4096);
        assert_eq!(errors, 1, "one error, for the head given up at MAX_HEAD");
        // Each byte searched about once (at most twice: the search resumes one byte back).
        assert!(
            searched <= 2 * input.len() as u64,
            "searched {searched} for {} bytes",
            input.len()
        );
        if side == REQ {
            let s = summary(&events);
            assert_eq!(s.first().map(String::as_str), Some("start 0 GET /last"));
        }
        // Every line a candidate whose head ends at one far empty line (which the last line
        // of a bad field ends).
        let input = lines(line, MAX_HEAD - 100, b"X\r\n\r\n").repeat(4);
        let (events, _, searched) = feed(side, &input, 4096);
        assert!(
            searched <= 2 * input.len() as u64,
            "searched {searched} for {} bytes",
            input.len()
        );
        assert!(events.is_empty() || side == REQ, "{:?}", summary(&events));
    }
}

#[test]
fn resumed_searches_find_what_a_fresh_parser_finds() {
    // The same hostile stream in one read, in 4096-byte reads and a byte per read: the same
    // events (the resumed search must not skip a head end).
    let mut input = lines(b"GET / HTTP/1.1\r\n", 2000, b"X\r\n\r\n");
    input.extend_from_slice(b"GET /a HTTP/1.1\r\n\r\n");
    input.extend(lines(b"GET / HTTP/1.1\r\n", MAX_HEAD + 50, b""));
    input.extend_from_slice(b"\r\nGET /b HTTP/1.1\r\nHost: b\r\n\r\n");
    let runs: Vec<Vec<String>> = [input.len(), 4096, 1]
        .iter()
        .map(|&seg| summary(&feed(REQ, &input, seg).0))
        .collect();
    assert_eq!(runs[0], runs[1]);
    assert_eq!(runs[0], runs[2]);
    assert!(
        runs[0].iter().any(|l| l.ends_with(" GET /a")),
        "{:?}",
        runs[0]
    );
    assert!(
        runs[0].iter().any(|l| l.ends_with(" GET /b")),
        "{:?}",
        runs[0]
    );
}

#[test]
fn pipelined_requests_never_answered_stay_bounded() {
    let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let input = get.repeat(10 * MAX_PENDING);
    let mut r = Replay::new(&input, b"", Direction::Egress);
    r.deliver(REQ, input.len());
    assert_eq!(r.conn.pending(), MAX_PENDING);
    // Every request was reported; the overflow aborted the oldest.
    assert_eq!(r.starts().len(), 10 * MAX_PENDING);
    assert_eq!(r.ends().len(), 9 * MAX_PENDING);
    let _ = RESP;
}
