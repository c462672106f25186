//! Hand-written streams for what real captures rarely show: errors in every position of
//! simple and extended queries, portal suspension, COPY with the Sync libpq sends before the
//! data, FunctionCall and asynchronous messages, unknown statements, timing.

use super::{
    cat, events_of, m, msg, run_steps, select_one, summary, with_connection, Be, Fe, Replay, REQ,
    RESP,
};
use crate::protocol::{Direction, L7Event, Request};

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
    // ignores the first Sync (and a Flush) during copy-in and answers only the second.
    for before_data in [m::sync(), cat(&[m::sync(), m::flush()])] {
        let got = with_connection(vec![
            Fe(cat(&[
                m::parse("", "COPY t FROM STDIN"),
                m::bind("", "", &[]),
                m::describe(b'P', ""),
                m::execute("", 0),
                before_data,
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
