//! Hand-written streams for what real captures rarely show: errors in every position,
//! portal suspension, COPY with the Sync libpq sends before the data, FunctionCall,
//! encryption requests, capture gaps, garbage, lying lengths, limits.

use super::super::session::MAX_OPS;
use super::super::statements::{Statements, MAX_PORTALS, MAX_STATEMENTS, MAX_TEXT_BYTES};
use super::super::wire::MAX_TEXT;
use super::{check_invariants, m, msg, summary, Replay, REQ, RESP};
use crate::protocol::{Direction, L7Event, Request};

/// Steps of a hand-written connection: frontend bytes, backend bytes, uncaptured bytes.
enum Step {
    Fe(Vec<u8>),
    Be(Vec<u8>),
    FeGap(usize),
    BeGap(usize),
}
use Step::{Be, BeGap, Fe, FeGap};

/// Run the steps (each a segment or a gap), then close. Returns the replay and, per gap,
/// whether `skip` absorbed it.
fn run_steps<'a>(
    steps: &[Step],
    fe: &'a mut Vec<u8>,
    be: &'a mut Vec<u8>,
) -> (Replay<'a>, Vec<bool>) {
    for s in steps {
        match s {
            Fe(b) => fe.extend_from_slice(b),
            Be(b) => be.extend_from_slice(b),
            FeGap(n) => fe.extend(std::iter::repeat_n(b'?', *n)),
            BeGap(n) => be.extend(std::iter::repeat_n(b'?', *n)),
        }
    }
    let mut r = Replay::new(fe, be, Direction::Egress);
    let mut absorbed = Vec::new();
    for s in steps {
        match s {
            Fe(b) => r.deliver(REQ, b.len()),
            Be(b) => r.deliver(RESP, b.len()),
            FeGap(n) => absorbed.push(r.gap(REQ, *n)),
            BeGap(n) => absorbed.push(r.gap(RESP, *n)),
        }
        check_invariants(&r.events, false);
    }
    r.close();
    check_invariants(&r.events, true);
    (r, absorbed)
}

fn events_of(steps: &[Step]) -> Vec<String> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    summary(&run_steps(steps, &mut a, &mut b).0.events)
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// Startup through ReadyForQuery for user `app`, database `db`.
fn connected() -> [Step; 2] {
    [
        Fe(m::startup(&["user", "app", "database", "db"])),
        Be(cat(&[
            m::auth_ok(),
            m::param_status("server_version", "15.18"),
            m::key_data(),
            m::ready(),
        ])),
    ]
}

fn with_connection(steps: Vec<Step>) -> Vec<String> {
    let mut all: Vec<Step> = connected().into_iter().collect();
    all.extend(steps);
    events_of(&all)
}

fn select_one() -> Vec<u8> {
    cat(&[
        m::row_description(),
        m::data_row(b"1"),
        m::complete("SELECT 1"),
        m::ready(),
    ])
}

#[test]
fn multi_statement_query_stops_at_the_failing_statement() {
    let got = with_connection(vec![
        Fe(m::query("SELECT 1; SELECT 1/0; SELECT 3")),
        Be(cat(&[
            m::row_description(),
            m::data_row(b"1"),
            m::complete("SELECT 1"),
            m::error("22012"),
            m::ready(),
        ])),
        Fe(m::query("SELECT 'after'")),
        Be(select_one()),
    ]);
    assert_eq!(
        got,
        [
            "start 0 SELECT 1",
            "end 0 SELECT 1 rows=1",
            "start 1 SELECT 1/0",
            "end 1 ERROR 22012",
            "start 2 SELECT 'after'",
            "end 2 SELECT 1 rows=1",
        ]
    );
}

#[test]
fn syntax_error_reports_the_whole_query_once() {
    let got = with_connection(vec![
        Fe(m::query(" SELECT 1; SELEC 2; SELECT 3 ")),
        Be(cat(&[m::error("42601"), m::ready()])),
        // A syntax error in a single statement is that statement's.
        Fe(m::query("SELEC 2;")),
        Be(cat(&[m::error("42601"), m::ready()])),
        // Other errors of a first statement are its own.
        Fe(m::query("SELECT * FROM nope; SELECT 2")),
        Be(cat(&[m::error("42P01"), m::ready()])),
    ]);
    assert_eq!(
        got,
        [
            "start 0 SELECT 1; SELEC 2; SELECT 3",
            "end 0 ERROR 42601",
            "start 1 SELEC 2",
            "end 1 ERROR 42601",
            "start 2 SELECT * FROM nope",
            "end 2 ERROR 42P01",
        ]
    );
}

#[test]
fn empty_queries_and_surplus_answers() {
    let got = with_connection(vec![
        Fe(m::query("")),
        Be(cat(&[m::empty_query(), m::ready()])),
        Fe(m::query(" ; -- nothing")),
        Be(cat(&[m::empty_query(), m::ready()])),
        // More answers than the statements we split out: the surplus is not reported.
        Fe(m::query("SELECT 1")),
        Be(cat(&[
            m::complete("SELECT 1"),
            m::complete("SELECT 1"),
            m::ready(),
        ])),
    ]);
    assert_eq!(
        got,
        [
            "start 0 ",
            "end 0 empty",
            "start 1 ; -- nothing",
            "end 1 empty",
            "start 2 SELECT 1",
            "end 2 SELECT 1 rows=0",
        ]
    );
}

#[test]
fn extended_error_skips_the_rest_of_the_batch() {
    let got = with_connection(vec![
        Fe(cat(&[
            m::parse("", "INSERT INTO t VALUES ($1)"),
            m::bind("", "", &[b"1"]),
            m::execute("", 0),
            m::bind("", "", &[b"1"]),
            m::execute("", 0),
            m::bind("", "", &[b"2"]),
            m::execute("", 0),
            m::sync(),
        ])),
        Be(cat(&[
            m::parse_complete(),
            m::bind_complete(),
            m::complete("INSERT 0 1"),
            m::bind_complete(),
            m::error("23505"),
            m::ready(),
        ])),
        Fe(cat(&[
            m::bind("", "", &[b"3"]),
            m::execute("", 0),
            m::sync(),
        ])),
        Be(cat(&[
            m::bind_complete(),
            m::complete("INSERT 0 1"),
            m::ready(),
        ])),
    ]);
    assert_eq!(
        got,
        [
            "start 0 INSERT INTO t VALUES ($1) name=\"\"",
            "end 0 INSERT 0 1 rows=0",
            "start 1 INSERT INTO t VALUES ($1) name=\"\"",
            "end 1 ERROR 23505",
            "start 2 INSERT INTO t VALUES ($1) name=\"\"",
            "end 2 INSERT 0 1 rows=0",
        ]
    );
}

#[test]
fn error_before_the_sync_is_sent_skips_what_follows_until_it() {
    // The client flushes, sees the error, and only then sends more and its Sync.
    let got = with_connection(vec![
        Fe(cat(&[
            m::parse("", "SELECT bad"),
            m::bind("", "", &[]),
            m::execute("", 0),
            m::flush(),
        ])),
        Be(m::error("42703")),
        Fe(cat(&[
            m::parse("", "SELECT 2"),
            m::bind("", "", &[]),
            m::execute("", 0),
            m::sync(),
        ])),
        Be(m::ready()),
        Fe(m::query("SELECT 3")),
        Be(select_one()),
    ]);
    assert_eq!(
        got,
        [
            "start 0 SELECT bad name=\"\"",
            "end 0 ERROR 42703",
            "start 1 SELECT 3",
            "end 1 SELECT 1 rows=1",
        ]
    );
}

#[test]
fn parse_and_bind_errors_are_reported_on_their_statement() {
    let got = with_connection(vec![
        // Parse fails: the Execute sent with it gets the error.
        Fe(cat(&[
            m::parse("s1", "SELECT * FROM missing"),
            m::bind("", "s1", &[]),
            m::describe(b'P', ""),
            m::execute("", 0),
            m::sync(),
        ])),
        Be(cat(&[m::error("42P01"), m::ready()])),
        // A Parse alone (preparing): reported on the Parse.
        Fe(cat(&[m::parse("s2", "SELECT nope()"), m::sync()])),
        Be(cat(&[m::error("42883"), m::ready()])),
        // Bind fails (bad parameter): the Execute of its group gets it.
        Fe(cat(&[
            m::parse("s3", "SELECT $1::int"),
            m::sync(),
            m::bind("", "s3", &[b"x"]),
            m::execute("", 0),
            m::sync(),
        ])),
        Be(cat(&[
            m::parse_complete(),
            m::ready(),
            m::error("22P02"),
            m::ready(),
        ])),
        // A Bind alone is not reported.
        Fe(cat(&[m::bind("p", "s3", &[b"y"]), m::sync()])),
        Be(cat(&[m::error("22P02"), m::ready()])),
    ]);
    assert_eq!(
        got,
        [
            "start 0 SELECT * FROM missing name=\"s1\"",
            "end 0 ERROR 42P01",
            "start 1 SELECT nope() name=\"s2\"",
            "end 1 ERROR 42883",
            "start 2 SELECT $1::int name=\"s3\"",
            "end 2 ERROR 22P02",
        ]
    );
}

#[test]
fn portal_suspension_and_resumption() {
    let got = with_connection(vec![
        Fe(cat(&[
            m::parse("", "SELECT g FROM generate_series(1, 3) g"),
            m::bind("cur", "", &[]),
            m::execute("cur", 2),
            m::flush(),
        ])),
        Be(cat(&[
            m::parse_complete(),
            m::bind_complete(),
            m::data_row(b"1"),
            m::data_row(b"2"),
            m::suspended(),
        ])),
        Fe(cat(&[m::execute("cur", 2), m::sync()])),
        Be(cat(&[
            m::data_row(b"3"),
            m::complete("SELECT 1"),
            m::ready(),
        ])),
    ]);
    assert_eq!(
        got,
        [
            "start 0 SELECT g FROM generate_series(1, 3) g name=\"\"",
            "end 0 SUSPENDED rows=2",
            "start 1 SELECT g FROM generate_series(1, 3) g name=\"\"",
            "end 1 SELECT 1 rows=1",
        ]
    );
}

#[test]
fn statements_and_portals_unknown_to_the_agent() {
    // Joined late: no startup, statement and portal defined before.
    let got = events_of(&[
        Fe(cat(&[
            m::bind("", "P_3", &[b"7"]),
            m::execute("", 0),
            m::sync(),
        ])),
        Be(cat(&[
            m::bind_complete(),
            m::complete("UPDATE 1"),
            m::ready(),
        ])),
        Fe(cat(&[m::execute("C_1", 10), m::sync()])),
        Be(cat(&[
            m::data_row(b"x"),
            m::complete("FETCH 1"),
            m::ready(),
        ])),
    ]);
    assert_eq!(
        got,
        [
            "start 0 <unknown> name=\"P_3\"",
            "end 0 UPDATE 1 rows=0",
            "start 1 <unknown>",
            "end 1 FETCH 1 rows=1",
        ]
    );
}

#[test]
fn close_forgets_and_reparse_replaces() {
    let got = with_connection(vec![
        Fe(cat(&[
            m::parse("s", "SELECT 1"),
            m::close(b'S', "s"),
            m::bind("", "s", &[]),
            m::execute("", 0),
            m::sync(),
        ])),
        Be(cat(&[
            m::parse_complete(),
            m::close_complete(),
            m::error("26000"),
            m::ready(),
        ])),
        Fe(cat(&[
            m::parse("s", "SELECT 2"),
            m::bind("", "s", &[]),
            m::parse("s2", "SELECT 3"),
            m::execute("", 0),
            m::sync(),
        ])),
        Be(cat(&[
            m::parse_complete(),
            m::bind_complete(),
            m::parse_complete(),
            m::complete("SELECT 1"),
            m::ready(),
        ])),
    ]);
    assert_eq!(
        got,
        [
            "start 0 <unknown> name=\"s\"",
            "end 0 ERROR 26000",
            "start 1 SELECT 2 name=\"s\"",
            "end 1 SELECT 1 rows=0",
        ]
    );
}

#[test]
fn copy_in_extended_ignores_the_sync_sent_before_the_data() {
    // libpq: Parse/Bind/Describe/Execute/Sync, then CopyData..., CopyDone, Sync. The server
    // ignores the first Sync during copy-in and answers only the second.
    let got = with_connection(vec![
        Fe(cat(&[
            m::parse("", "COPY t FROM STDIN"),
            m::bind("", "", &[]),
            m::describe(b'P', ""),
            m::execute("", 0),
            m::sync(),
        ])),
        Be(cat(&[
            m::parse_complete(),
            m::bind_complete(),
            m::no_data(),
            m::copy_in(),
        ])),
        Fe(cat(&[
            m::copy_data(b"1\tsecret-row\n"),
            m::copy_data(b"2\tb\n"),
            m::copy_done(),
            m::sync(),
        ])),
        Be(cat(&[m::complete("COPY 2"), m::ready()])),
        Fe(m::query("SELECT 1")),
        Be(select_one()),
    ]);
    assert_eq!(
        got,
        [
            "start 0 COPY t FROM STDIN name=\"\"",
            "end 0 COPY 2 rows=0",
            "start 1 SELECT 1",
            "end 1 SELECT 1 rows=1",
        ]
    );
}

#[test]
fn copy_out_and_failed_copy_in_simple() {
    let got = with_connection(vec![
        Fe(m::query("COPY t TO STDOUT")),
        Be(cat(&[
            m::copy_out(),
            m::copy_data(b"1\tsecret\n"),
            m::copy_data(b"2\tb\n"),
            msg(b'c', b""),
            m::complete("COPY 2"),
            m::ready(),
        ])),
        Fe(m::query("COPY t FROM STDIN; SELECT 1")),
        Be(m::copy_in()),
        Fe(cat(&[
            m::copy_data(b"bad\n"),
            msg(b'f', b"client gave up\0"),
        ])),
        Be(cat(&[m::error("57014"), m::ready()])),
    ]);
    assert_eq!(
        got,
        [
            "start 0 COPY t TO STDOUT",
            "end 0 COPY 2 rows=0",
            "start 1 COPY t FROM STDIN",
            "end 1 ERROR 57014",
        ]
    );
}

#[test]
fn function_call_notices_and_async_messages_make_no_spans() {
    let got = with_connection(vec![
        Fe(m::function_call()),
        Be(cat(&[m::notice(), m::function_result(), m::ready()])),
        Fe(m::query("LISTEN ch; SELECT 1")),
        Be(cat(&[
            m::complete("LISTEN"),
            m::notice(),
            m::param_status("TimeZone", "UTC"),
            msg(b'A', &[0, 0, 0, 9, b'c', b'h', 0, b'p', 0]),
            m::row_description(),
            m::data_row(b"1"),
            m::complete("SELECT 1"),
            m::ready(),
        ])),
        Fe(m::terminate()),
    ]);
    assert_eq!(
        got,
        [
            "start 0 LISTEN ch",
            "end 0 LISTEN rows=0",
            "start 1 SELECT 1",
            "end 1 SELECT 1 rows=1",
        ]
    );
}

#[test]
fn startup_records_user_and_database() {
    for (params, want) in [
        (
            &["user", "u1", "database", "d1"][..],
            (Some("u1"), Some("d1")),
        ),
        (
            &["user", "u2", "application_name", "x"][..],
            (Some("u2"), Some("u2")),
        ),
    ] {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let steps = [
            Fe(m::ssl_request()),
            Be(b"N".to_vec()),
            Fe(m::startup(params)),
            Be(cat(&[m::auth_ok(), m::ready()])),
            Fe(m::query("SELECT 1")),
            Be(select_one()),
        ];
        let (r, _) = run_steps(&steps, &mut a, &mut b);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let L7Event::RequestStart {
            request: Request::Postgres(s),
            ..
        } = &r.events[0]
        else {
            panic!("{:?}", r.events);
        };
        assert_eq!((s.user.as_deref(), s.database.as_deref()), want);
    }
}

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
        // The TLS handshake may be seen before the server's answer is.
        vec![Fe(cat(&[m::ssl_request(), tls.clone()])), Be(b"S".to_vec())],
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
fn error_fields_keep_only_severity_and_sqlstate() {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let steps = [
        Fe(m::query("INSERT INTO t VALUES ('hunter2')")),
        Be(cat(&[m::error("23505"), m::ready()])),
        // An old server sends no V field: the (possibly localised) S is used.
        Fe(m::query("SELECT 1")),
        Be(cat(&[
            m::error_fields(&[("S", "FEHLER"), ("C", "XX000"), ("M", "hunter2")]),
            m::ready(),
        ])),
    ];
    let (r, _) = run_steps(&steps, &mut a, &mut b);
    assert_eq!(
        summary(&r.events),
        [
            "start 0 INSERT INTO t VALUES ('hunter2')",
            "end 0 ERROR 23505",
            "start 1 SELECT 1",
            "end 1 FEHLER XX000",
        ]
    );
    let ends = format!("{:?}", r.ends());
    assert!(!ends.contains("hunter2") && !ends.contains("Key"), "{ends}");
}

#[test]
fn start_time_is_the_first_message_of_the_group() {
    let fe = [
        m::parse("", "SELECT 1"),
        cat(&[m::bind("", "", &[]), m::execute("", 0), m::sync()]),
        cat(&[m::bind("", "", &[]), m::execute("", 0), m::sync()]),
    ];
    let be = cat(&[
        m::parse_complete(),
        m::bind_complete(),
        m::complete("SELECT 1"),
        m::ready(),
    ]);
    let be2 = cat(&[m::bind_complete(), m::complete("SELECT 1"), m::ready()]);
    let (fe_all, be_all) = (fe.concat(), [be.clone(), be2.clone()].concat());
    let mut r = Replay::new(&fe_all, &be_all, Direction::Egress);
    r.deliver(REQ, fe[0].len());
    r.deliver(REQ, fe[1].len());
    r.deliver(RESP, be.len());
    r.deliver(REQ, fe[2].len());
    r.deliver(RESP, be2.len());
    let starts: Vec<(u32, u64)> = r
        .starts()
        .iter()
        .map(|e| match e {
            L7Event::RequestStart { tid, start_ns, .. } => (*tid, *start_ns),
            _ => unreachable!(),
        })
        .collect();
    let (p, b2) = (r.ctx_at(REQ, 0), r.ctx_at(REQ, fe[0].len() + fe[1].len()));
    assert_eq!(starts, [(p.tid, p.first_ns), (b2.tid, b2.first_ns)]);
    let end = r.ctx_at(RESP, be.len() - 1);
    assert!(matches!(r.ends()[0], L7Event::ExchangeEnd { end_ns, .. } if *end_ns == end.last_ns));
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
