//! Hand-written streams for recovery and limits: encryption and cancel connections, capture
//! gaps inside and outside bodies, garbage and lying lengths, answers that do not fit,
//! truncated startup, pipeline depth and cache bounds.

use super::super::session::MAX_OPS;
use super::super::statements::{Statements, MAX_PORTALS, MAX_STATEMENTS, MAX_TEXT_BYTES};
use super::super::wire::MAX_TEXT;
use super::{
    cat, events_of, m, run_steps, select_one, summary, with_connection, Be, BeGap, Fe, FeGap,
};
use crate::protocol::{L7Event, Request};

#[test]
fn encryption_and_cancel_connections_are_ignored_quietly() {
    let tls = b"\x16\x03\x01\x00\x05hello\x17\x03\x03\x00\x10Q\x00\x00\x00\x09abcd\x00".to_vec();
    for steps in [
        vec![
            Fe(m::ssl_request()),
            Be(b"S".to_vec()),
            Fe(tls.clone()),
            Be(tls.clone()),
        ],
        vec![
            Fe(m::gssenc_request()),
            Be(b"G".to_vec()),
            Fe(tls.clone()),
            Be(tls.clone()),
        ],
        // The TLS handshake (or GSSAPI token) may be seen before the server's answer is.
        vec![Fe(cat(&[m::ssl_request(), tls.clone()])), Be(b"S".to_vec())],
        vec![
            Fe(cat(&[
                m::gssenc_request(),
                b"\0\0\x01\x00\x60\x82\x01\x02".to_vec(),
            ])),
            Be(b"G".to_vec()),
        ],
        vec![Fe(m::cancel_request()), Be(Vec::new())],
    ] {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let (r, _) = run_steps(&steps, &mut a, &mut b);
        assert!(r.events.is_empty(), "{:?}", r.events);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
    }
    // GSSENCRequest refused, then SSLRequest refused, then plaintext.
    let got = events_of(&[
        Fe(m::gssenc_request()),
        Be(b"N".to_vec()),
        Fe(m::ssl_request()),
        Be(b"N".to_vec()),
        Fe(m::startup(&["user", "u"])),
        Be(cat(&[m::auth_ok(), m::ready()])),
        Fe(m::query("SELECT 1")),
        Be(select_one()),
    ]);
    assert_eq!(got, ["start 0 SELECT 1", "end 0 SELECT 1 rows=1"]);
}

#[test]
fn close_aborts_the_statement_being_answered_only() {
    let got = with_connection(vec![
        Fe(m::query("SELECT pg_sleep(10); SELECT 2")),
        Be(cat(&[m::row_description(), m::data_row(b"")])),
        // Sent but never answered: not reported.
        Fe(m::query("SELECT 3")),
    ]);
    assert_eq!(got, ["start 0 SELECT pg_sleep(10)", "end 0 aborted"]);
}

#[test]
fn gaps_inside_bodies_are_absorbed() {
    let big_row = m::data_row(&vec![b'x'; 100_000]);
    let (head, tail) = big_row.split_at(1000);
    let query = m::query(&format!("SELECT '{}'", "y".repeat(100_000)));
    let (q_head, q_tail) = query.split_at(70_000);
    let bind = m::bind("", "s", &[&vec![b'z'; 50_000]]);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let steps = [
        Fe(q_head.to_vec()),
        FeGap(q_tail.len()),
        Be(m::row_description()),
        Be(head.to_vec()),
        BeGap(tail.len() - 10),
        Be(tail[tail.len() - 10..].to_vec()),
        Be(cat(&[m::complete("SELECT 1"), m::ready()])),
        Fe(m::parse("s", "SELECT $1")),
        Fe(bind[..100].to_vec()),
        FeGap(bind.len() - 100),
        Fe(cat(&[m::execute("", 0), m::sync()])),
        Be(cat(&[
            m::parse_complete(),
            m::bind_complete(),
            m::complete("SELECT 1"),
            m::ready(),
        ])),
    ];
    let (r, absorbed) = run_steps(&steps, &mut a, &mut b);
    assert_eq!(absorbed, [true, true, true]);
    let got = summary(&r.events);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[1], "end 0 SELECT 1 rows=1");
    assert_eq!(
        got[2..],
        ["start 1 SELECT $1 name=\"s\"", "end 1 SELECT 1 rows=0"]
    );
    // The long text is kept up to the bound.
    let L7Event::RequestStart {
        request: Request::Postgres(s),
        ..
    } = &r.events[0]
    else {
        panic!()
    };
    assert_eq!(s.text.as_ref().map(String::len), Some(MAX_TEXT));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}

#[test]
fn gaps_outside_bodies_abort_and_realign_at_ready_for_query() {
    let got = with_connection(vec![
        // Backend bytes lost between messages: the open statement is aborted, answers are
        // ignored until a ReadyForQuery, then reporting resumes.
        Fe(m::query("SELECT 1")),
        Be(m::row_description()),
        BeGap(20),
        Be(cat(&[
            m::data_row(b"1"),
            m::complete("SELECT 1"),
            m::ready(),
        ])),
        Fe(m::query("SELECT 2")),
        Be(select_one()),
        // Frontend bytes lost: a whole query we never saw; its answers make no span.
        FeGap(30),
        Be(select_one()),
        Fe(m::query("SELECT 3")),
        Be(select_one()),
        // Lost inside a query's head: that query is gone, the next one is fine.
        Fe(m::query("SELECT 4")[..6].to_vec()),
        FeGap(5),
        Be(select_one()),
        Fe(m::query("SELECT 5")),
        Be(select_one()),
    ]);
    assert_eq!(
        got,
        [
            "start 0 SELECT 1",
            "end 0 aborted",
            "start 1 SELECT 2",
            "end 1 SELECT 1 rows=1",
            "start 2 SELECT 3",
            "end 2 SELECT 1 rows=1",
            "start 3 SELECT 5",
            "end 3 SELECT 1 rows=1",
        ]
    );
}

#[test]
fn garbage_and_lying_lengths_never_make_spans() {
    let junk: &[&[u8]] = &[
        b"\x00\x00\x00\x00\x00",
        b"Q\x00\x00\x00\x02",       // length < 4
        b"Q\xff\xff\xff\xff",       // negative
        b"Q\x7f\xff\xff\xffSELECT", // beyond the limit
        b"S\x00\x00\x27\x15",       // Sync beyond the small-message limit
        b"\x01garbage\xff",
        b"GET / HTTP/1.1\r\n\r\n",
    ];
    for bytes in junk {
        // As the frontend after a good query, and as the backend in the middle of answers.
        let got = with_connection(vec![
            Fe(m::query("SELECT 1")),
            Be(select_one()),
            Fe(bytes.to_vec()),
            Fe(m::query("SELECT 2")),
            Be(select_one()),
        ]);
        assert_eq!(
            got[..2],
            ["start 0 SELECT 1", "end 0 SELECT 1 rows=1"],
            "{bytes:?}"
        );
        assert!(got.len() == 2 || got[2..] == ["start 1 SELECT 2", "end 1 SELECT 1 rows=1"]);
        let got = with_connection(vec![
            Fe(m::query("SELECT 1; SELECT 2")),
            Be(cat(&[m::row_description(), bytes.to_vec()])),
            Be(cat(&[
                m::data_row(b"1"),
                m::complete("SELECT 1"),
                m::ready(),
            ])),
            Fe(m::query("SELECT 3")),
            Be(select_one()),
        ]);
        // A plausible length may swallow what follows (then nothing more is reported).
        assert_eq!(got[..2], ["start 0 SELECT 1", "end 0 aborted"], "{bytes:?}");
        assert!(got.len() == 2 || got[2..] == ["start 1 SELECT 3", "end 1 SELECT 1 rows=1"]);
    }
}

#[test]
fn answers_that_do_not_fit_are_errors_and_realign() {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let steps = [
        Fe(cat(&[m::parse("", "SELECT 1"), m::sync()])),
        // CommandComplete while a Parse awaits ParseComplete.
        Be(cat(&[m::complete("SELECT 1"), m::ready()])),
        Fe(m::query("SELECT 2")),
        Be(select_one()),
    ];
    let (r, _) = run_steps(&steps, &mut a, &mut b);
    assert_eq!(
        summary(&r.events),
        ["start 0 SELECT 2", "end 0 SELECT 1 rows=1"]
    );
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    // Answers to messages sent before the agent saw the connection are no error.
    let got = events_of(&[
        Be(cat(&[
            m::data_row(b"1"),
            m::complete("SELECT 1"),
            m::ready(),
        ])),
        Fe(m::query("SELECT 2")),
        Be(select_one()),
    ]);
    assert_eq!(got, ["start 0 SELECT 2", "end 0 SELECT 1 rows=1"]);
}

#[test]
fn truncated_startup_and_unknown_protocol() {
    let startup = m::startup(&["user", "u"]);
    let got = events_of(&[Fe(startup[..startup.len() - 3].to_vec())]);
    assert!(got.is_empty());
    // Protocol 2.0: not followed.
    let mut v2 = startup.clone();
    v2[4..8].copy_from_slice(&0x0002_0000u32.to_be_bytes());
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (r, _) = run_steps(
        &[
            Fe(v2),
            Be(m::ready()),
            Fe(m::query("SELECT 1")),
            Be(select_one()),
        ],
        &mut a,
        &mut b,
    );
    assert!(r.events.is_empty());
    assert_eq!(r.errors.len(), 1);
}

#[test]
fn pipeline_depth_and_caches_are_bounded() {
    let mut fe = Vec::new();
    for _ in 0..MAX_OPS + 10 {
        fe.extend(m::sync());
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut be = Vec::new();
    for _ in 0..MAX_OPS + 10 {
        be.extend(m::ready());
    }
    let (r, _) = run_steps(
        &[Fe(fe), Be(be), Fe(m::query("SELECT 1")), Be(select_one())],
        &mut a,
        &mut b,
    );
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert_eq!(
        summary(&r.events),
        ["start 0 SELECT 1", "end 0 SELECT 1 rows=1"]
    );
    assert!(r.conn.session().aligned());
    assert_eq!(r.conn.session().pending(), 0);

    // Named statements: the least recently used go first, by count and by bytes.
    let mut st = Statements::new();
    st.parse(b"keep", b"SELECT 'keep'");
    for i in 0..MAX_STATEMENTS + 50 {
        st.parse(format!("s{i}").as_bytes(), b"SELECT 1");
        st.bind(b"", b"keep");
    }
    assert!(st.len().0 <= MAX_STATEMENTS);
    assert!(st.lookup(b"keep").text.is_some());
    assert_eq!(st.lookup(b"s0").text, None);
    let big = vec![b'x'; MAX_TEXT];
    for i in 0..MAX_TEXT_BYTES / MAX_TEXT + 2 {
        st.parse(format!("big{i}").as_bytes(), &big);
    }
    assert!(st.text_bytes() <= MAX_TEXT_BYTES);
    assert!(st.lookup(b"big0").text.is_none());
    // Named portals too.
    for i in 0..MAX_PORTALS + 10 {
        st.bind(format!("p{i}").as_bytes(), b"keep");
    }
    assert!(st.len().1 <= MAX_PORTALS);
    assert_eq!(st.portal(b"p0"), None);
    assert!(st
        .portal(format!("p{}", MAX_PORTALS + 9).as_bytes())
        .is_some());
}
