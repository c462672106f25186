//! Hostile inputs against each bound on work and memory: what is kept and emitted stays
//! right, cuts are reported as `ParseError::Limited`, and incremental searches give the
//! answers a search from scratch gives. Timings are in `benches/postgres.rs` (hostile
//! section), never here.

use super::super::detect::{partial_text, scan_frontend, valid_frontend, Scan};
use super::super::frontend::{head_len, HeadScan};
use super::super::session::{MAX_OPS, MAX_QUEUED_TEXT};
use super::super::statements::{Statements, MAX_STATEMENTS, MAX_TEXT_BYTES};
use super::super::wire::{HEADER, MAX_TEXT, NAME_HEAD};
use super::{cat, connected, m, summary, Be, Fe, Replay, Step, REQ, RESP};
use crate::protocol::{Direction, ParseError};

fn sql(len: usize) -> String {
    let mut t = String::from("SELECT ");
    while t.len() < len {
        t.push_str("a, ");
    }
    t.truncate(len);
    t
}

/// Deliver the connection's startup, then `fe` one byte per read, then `be` at once.
fn trickled(fe: &[u8], be: &[u8]) -> (Replay<'static>, usize) {
    let [Fe(startup), Be(ready)] = connected() else {
        unreachable!()
    };
    let c: &'static [u8] = Box::leak([startup.clone(), fe.to_vec()].concat().into_boxed_slice());
    let s: &'static [u8] = Box::leak([ready.clone(), be.to_vec()].concat().into_boxed_slice());
    let mut r = Replay::new(c, s, Direction::Egress);
    r.deliver(REQ, startup.len());
    r.deliver(RESP, ready.len());
    for _ in 0..fe.len() {
        r.deliver(REQ, 1);
    }
    r.deliver(RESP, be.len());
    (r, startup.len())
}

#[test]
fn heads_arriving_a_byte_per_read_are_searched_incrementally() {
    // The resumed search answers as a search from scratch does, at every prefix.
    for (ty, body) in [
        (b'Q', cat(&[sql(300).into_bytes(), vec![0]])),
        (
            b'P',
            cat(&[b"stmt\0".to_vec(), sql(300).into_bytes(), vec![0, 0, 0]]),
        ),
        (b'B', b"portal\0stmt\0\0\0\0\0\0\0".to_vec()),
        // Not terminated within the bound: the bound is the head.
        (b'B', vec![b'n'; NAME_HEAD + 10]),
    ] {
        let mut scan = HeadScan::default();
        for k in 0..=body.len() {
            let fresh = head_len(ty, body.len() as u64, &body[..k], &mut HeadScan::default());
            let resumed = head_len(ty, body.len() as u64, &body[..k], &mut scan);
            assert_eq!(resumed, fresh, "{} prefix {k}", ty as char);
            if fresh.is_some() {
                break;
            }
        }
    }
    // End to end: a 64 KiB query a byte per read is reported whole, timed from its first read.
    let text = sql(MAX_TEXT - 1);
    let answer = cat(&[m::complete("SELECT 0"), m::ready()]);
    let (r, at) = trickled(&m::query(&text), &answer);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        summary(&r.events),
        [
            format!("start 0 {text}"),
            "end 0 SELECT 0 rows=0".to_string()
        ]
    );
    let first = r.ctx_at(REQ, at).first_ns;
    assert!(matches!(
        r.events[0],
        crate::protocol::L7Event::RequestStart { start_ns, .. } if start_ns == first
    ));
}

#[test]
fn resync_candidates_arriving_a_byte_per_read_are_checked_incrementally() {
    // A Parse's name checked in steps gives the verdicts a check from scratch gives.
    let body = cat(&[vec![b'n'; 1000], vec![0], sql(200).into_bytes()]);
    let mut checked = 0;
    for k in 0..=body.len() {
        let fresh = partial_text(b'P', &body[..k], false, &mut 0);
        let resumed = partial_text(b'P', &body[..k], false, &mut checked);
        assert_eq!(resumed, fresh, "prefix {k}");
        if fresh.is_some() {
            assert_eq!(fresh, Some(true));
            break;
        }
    }
    let mut bad = body.clone();
    bad[500] = 0x07;
    let mut checked = 0;
    let verdicts: Vec<_> = (0..=501)
        .map(|k| partial_text(b'P', &bad[..k], false, &mut checked))
        .collect();
    assert_eq!(verdicts[500], None);
    assert_eq!(verdicts[501], Some(false));
    // Names longer than a signature allows are rejected as soon as that shows.
    let long = vec![b'n'; 1100];
    let mut checked = 0;
    let first_no = (0..=long.len())
        .position(|k| partial_text(b'P', &long[..k], false, &mut checked).is_some());
    assert_eq!(first_no, Some(1025));
    // End to end: garbage, then a Parse with a 1000-byte name a byte per read. Resync lands
    // on it (nothing is reported until the backend is between queries again, but the
    // statement is recorded), so executing it by name later reports its text.
    let name = "n".repeat(1000);
    let group = cat(&[
        m::parse(&name, "SELECT 1"),
        m::bind("", &name, &[]),
        m::execute("", 0),
        m::sync(),
    ]);
    let again = cat(&[m::bind("", &name, &[]), m::execute("", 0), m::sync()]);
    let answers = cat(&[
        m::parse_complete(),
        m::bind_complete(),
        m::complete("SELECT 1"),
        m::ready(),
    ]);
    let answers_again = cat(&[m::bind_complete(), m::complete("SELECT 1"), m::ready()]);
    let [Fe(startup), Be(ready)] = connected() else {
        unreachable!()
    };
    let c = cat(&[
        startup.clone(),
        b"\x01".to_vec(),
        group.clone(),
        again.clone(),
    ]);
    let s = cat(&[ready.clone(), answers.clone(), answers_again.clone()]);
    let mut r = Replay::new(&c, &s, Direction::Egress);
    r.deliver(REQ, startup.len());
    r.deliver(RESP, ready.len());
    for _ in 0..1 + group.len() {
        r.deliver(REQ, 1);
    }
    r.deliver(RESP, answers.len());
    r.deliver(REQ, again.len());
    r.deliver(RESP, answers_again.len());
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert_eq!(
        summary(&r.events),
        [
            format!("start 0 SELECT 1 name={name:?}"),
            "end 0 SELECT 1 rows=0".to_string()
        ]
    );
}

/// `n` Bind candidates nested in one block: each sits in the parameter value of the one
/// before, its own parameters running over the same values; all end at one bad format code.
fn nested_binds(n: usize) -> Vec<u8> {
    const HEAD: usize = 11;
    let end = n * (4 + HEAD) + HEAD + 4;
    let mut b = Vec::new();
    for k in 0..=n {
        let at = b.len();
        b.push(b'B');
        b.extend_from_slice(&((end - at - 1) as u32).to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 0]);
        b.extend_from_slice(&((n - k) as u16).to_be_bytes());
        if k < n {
            b.extend_from_slice(&(HEAD as u32).to_be_bytes());
        }
    }
    b.extend_from_slice(&[0, 1, 0, 7]);
    assert_eq!(b.len(), end);
    b
}

#[test]
fn resync_checks_bind_parameters_within_a_budget() {
    // The budget gate: a Bind is invalid once its parameters exceed what is left.
    let many: Vec<&[u8]> = vec![b"x"; 100];
    let bind = m::bind("", "s", &many);
    let body = &bind[HEADER..];
    assert!(valid_frontend(b'B', body, &mut 100).is_some());
    assert!(valid_frontend(b'B', body, &mut 99).is_none());
    // A genuine Bind with 10000 parameters after garbage still fits the budget of its scan.
    let huge: Vec<&[u8]> = vec![b""; 10_000];
    let buf = cat(&[b"\x01".to_vec(), m::bind("", "s", &huge)]);
    assert_eq!(scan_frontend(&buf, 0, &mut 0), Scan::Found(1));
    // Nested candidates are all rejected, and a Query after them is found.
    let block = nested_binds(4000);
    let buf = cat(&[block.clone(), m::query("SELECT 1")]);
    assert_eq!(scan_frontend(&buf, 0, &mut 0), Scan::Found(block.len()));
}

#[test]
fn text_held_by_unanswered_messages_is_bounded() {
    // Queries of 60 KB pipelined and never answered: the session stops holding them once
    // MAX_QUEUED_TEXT would be exceeded (reported once), long before MAX_OPS.
    let q = m::query(&sql(60_000));
    let n = 40;
    let [Fe(startup), Be(ready)] = connected() else {
        unreachable!()
    };
    let c = cat(&[startup.clone(), q.repeat(n)]);
    let mut r = Replay::new(&c, &ready, Direction::Egress);
    r.deliver(REQ, startup.len());
    r.deliver(RESP, ready.len());
    let mut most = 0;
    for _ in 0..n {
        r.deliver(REQ, q.len());
        most = most.max(r.conn.session().queued_text());
    }
    assert!(most <= MAX_QUEUED_TEXT, "{most}");
    assert!(r.conn.session().pending() < MAX_OPS);
    let limited: Vec<_> = r
        .errors
        .iter()
        .filter(|e| {
            matches!(
                e,
                ParseError::Limited {
                    protocol: crate::protocol::ProtocolId::Postgres,
                    ..
                }
            )
        })
        .collect();
    assert_eq!((limited.len(), r.errors.len()), (1, 1), "{:?}", r.errors);
    // Lost track: nothing is held, nothing wrong is reported.
    assert!(!r.conn.session().aligned());
    assert_eq!(r.conn.session().queued_text(), 0);
    assert!(r.events.is_empty());
}

#[test]
fn caches_stay_bounded_and_ordered_under_churn() {
    let mut st = Statements::new();
    st.parse(b"keep", b"SELECT 'keep'");
    for i in 0..10 * MAX_STATEMENTS {
        st.parse(format!("s{i}").as_bytes(), b"SELECT 1");
        // Binds of statements never seen are cached by name too.
        st.bind(format!("p{i}").as_bytes(), format!("u{i}").as_bytes());
        if i % 16 == 0 {
            st.bind(b"", b"keep");
        }
        assert!(st.consistent(), "after {i}");
    }
    assert!(st.len().0 <= MAX_STATEMENTS);
    assert!(st.lookup(b"keep").text.is_some());
    // Portals keep their statements' texts alive: they are charged for them.
    let big = vec![b'x'; MAX_TEXT];
    for i in 0..8 {
        let name = format!("big{i}");
        st.parse(name.as_bytes(), &big);
        st.bind(format!("bp{i}").as_bytes(), name.as_bytes());
    }
    assert!(st.portal_bytes() <= MAX_TEXT_BYTES, "{}", st.portal_bytes());
    assert!(st.portal(b"bp7").is_some_and(|b| b.text.is_some()));
    assert_eq!(st.portal(b"bp0"), None);
    assert!(st.consistent());
}

#[test]
fn one_query_string_of_many_statements_is_split_in_linear_work() {
    // 5000 statements in one string, each answered: one span each, in order.
    let text = "SELECT 1;".repeat(5000);
    let mut answers = Vec::new();
    for _ in 0..5000 {
        answers.extend(m::complete("SELECT 1"));
    }
    answers.extend(m::ready());
    let mut steps: Vec<Step> = connected().into_iter().collect();
    steps.extend([Fe(m::query(&text)), Be(answers)]);
    let events = super::events_of(&steps);
    assert_eq!(events.len(), 10_000);
    assert_eq!(events[0], "start 0 SELECT 1");
    assert_eq!(events[9_999], "end 4999 SELECT 1 rows=0");
}
