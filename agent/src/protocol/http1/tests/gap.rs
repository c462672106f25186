//! Records lost to a full ring buffer (`Parser::gap`): every open exchange ends aborted, and
//! both directions resynchronise at the next request / status line, which may start any read
//! after the hole. Nothing after the hole is paired with a request before it.

use super::super::Http1Conn;
use super::check_invariants;
use super::unit::summary;
use crate::protocol::testkit::{replay_steps, Step};
use crate::protocol::Direction;

#[allow(non_snake_case)] // read like the protocol's two streams, as in the other test files
fn Req(b: &[u8]) -> Step {
    Step::Req(b.to_vec())
}

#[allow(non_snake_case)]
fn Resp(b: &[u8]) -> Step {
    Step::Resp(b.to_vec())
}

#[allow(non_snake_case)]
fn Lost(req: &[u8], resp: &[u8]) -> Step {
    Step::Lost(req.to_vec(), resp.to_vec())
}

fn run(request_dir: Direction, steps: &[Step]) -> Vec<String> {
    summary(&replay_steps::<Http1Conn>(request_dir, steps, check_invariants).events)
}

const BODY_4K: &[u8] = &[b'z'; 4096];

#[test]
fn a_hole_inside_a_request_body_aborts_the_request_and_its_answer_pairs_with_nothing() {
    // The server's side: it read the head and some body, lost reads of the body, read the
    // rest; answered 201; then the client sent the next request.
    let got = run(
        Direction::Ingress,
        &[
            Req(b"POST /upload HTTP/1.1\r\nContent-Length: 12288\r\n\r\n"),
            Req(BODY_4K),
            Lost(BODY_4K, b""),
            Req(BODY_4K),
            Resp(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
            Req(b"GET /next HTTP/1.1\r\n\r\n"),
            Resp(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        ],
    );
    assert_eq!(
        got,
        [
            "start 0 POST /upload",
            "end 0 aborted req=4096",
            "start 1 GET /next",
            "end 1 200 body=2 req=0"
        ]
    );
}

#[test]
fn a_lost_request_is_not_answered_by_its_response() {
    // The client's side: its write of GET /2 was lost; the 404 that answers it must not end
    // GET /3.
    let got = run(
        Direction::Egress,
        &[
            Req(b"GET /1 HTTP/1.1\r\n\r\n"),
            Resp(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"),
            Lost(b"GET /2 HTTP/1.1\r\n\r\n", b""),
            Resp(b"HTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\nb"),
            Req(b"GET /3 HTTP/1.1\r\n\r\n"),
            Resp(b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nc"),
        ],
    );
    assert_eq!(
        got,
        [
            "start 0 GET /1",
            "end 0 200 body=1 req=0",
            "start 1 GET /3",
            "end 1 201 body=1 req=0"
        ]
    );
}

#[test]
fn a_lost_response_head_ends_its_exchange_aborted_and_the_next_one_is_exact() {
    // The client read the first half of the response's body without its head: a lost head
    // followed by body bytes (which do not end in a newline) and then the next exchange,
    // whose status line starts a read.
    let got = run(
        Direction::Egress,
        &[
            Req(b"GET /1 HTTP/1.1\r\n\r\n"),
            Lost(b"", b"HTTP/1.1 500 Oops\r\nContent-Length: 8192\r\n\r\n"),
            Resp(BODY_4K),
            Resp(BODY_4K),
            Req(b"GET /2 HTTP/1.1\r\n\r\n"),
            Resp(b"HTTP/1.1 204 No Content\r\n\r\n"),
        ],
    );
    assert_eq!(
        got,
        [
            "start 0 GET /1",
            "end 0 aborted req=0",
            "start 1 GET /2",
            "end 1 204 body=0 req=0"
        ]
    );
}

#[test]
fn a_read_until_close_body_cut_by_a_hole_is_not_completed_by_the_close() {
    let got = run(
        Direction::Egress,
        &[
            Req(b"GET /stream HTTP/1.1\r\n\r\n"),
            Resp(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nfirst part"),
            Lost(b"", b" lost part"),
            Resp(b" last part"),
        ],
    );
    assert_eq!(got, ["start 0 GET /stream", "end 0 aborted req=0"]);
}
