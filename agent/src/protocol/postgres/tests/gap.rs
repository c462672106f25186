//! Records lost to a full ring buffer (`Parser::gap`): an unknown number of bytes is missing
//! in either direction. Nothing after the hole is paired with anything before it; reporting
//! resumes once the session is realigned on ReadyForQuery.

use super::super::PgConn;
use super::{cat, check_invariants, m, select_one, summary};
use crate::protocol::testkit::{replay_steps, Step as S};
use crate::protocol::Direction;

fn run(steps: &[S]) -> Vec<String> {
    summary(&replay_steps::<PgConn>(Direction::Egress, steps, check_invariants).events)
}

fn connected() -> Vec<S> {
    vec![
        S::Req(m::startup(&["user", "app", "database", "db"])),
        S::Resp(cat(&[m::auth_ok(), m::key_data(), m::ready()])),
    ]
}

/// `SELECT n`'s answer: one row, its tag, ReadyForQuery.
fn answer(n: u8) -> Vec<u8> {
    cat(&[
        m::row_description(),
        m::data_row(&[b'0' + n]),
        m::complete(&format!("SELECT {n}")),
        m::ready(),
    ])
}

/// Queries 4.. after the hole, each answered: what the session reports of them.
fn then_queries(mut steps: Vec<S>, from: u8, to: u8) -> Vec<S> {
    for n in from..=to {
        steps.push(S::Req(m::query(&format!("SELECT {n}"))));
        steps.push(S::Resp(answer(n)));
    }
    steps
}

#[test]
fn a_lost_answer_aborts_its_statement_and_later_ones_are_exact_once_realigned() {
    let mut steps = connected();
    steps.push(S::Req(m::query("SELECT 1")));
    steps.push(S::Resp(select_one()));
    steps.push(S::Req(m::query("SELECT 2")));
    // The first part of the answer arrived, its end (with ReadyForQuery) did not.
    let a2 = answer(2);
    let (head, tail) = a2.split_at(12);
    steps.push(S::Resp(head.to_vec()));
    steps.push(S::Lost(Vec::new(), tail.to_vec()));
    let got = run(&then_queries(steps, 3, 9));
    // SELECT 2 ends aborted at the hole; the ReadyForQuery owed for it was lost, so the
    // session stays unaligned until it has seen enough of them: SELECT 3..5 go unreported
    // (never misreported), and from then on every statement is exact.
    let mut want = vec![
        "start 0 SELECT 1".to_owned(),
        "end 0 SELECT 1 rows=1".to_owned(),
        "start 1 SELECT 2".to_owned(),
        "end 1 aborted".to_owned(),
    ];
    let first = 9 - (got.len() - want.len()) / 2 + 1;
    for (seq, n) in (2..).zip(first as u8..=9) {
        want.push(format!("start {seq} SELECT {n}"));
        want.push(format!("end {seq} SELECT {n} rows=1"));
    }
    assert_eq!(got, want);
    assert!(first <= 7, "reporting resumed only at SELECT {first}");
}

#[test]
fn lost_queries_and_answers_in_both_directions_pair_nothing_across_the_hole() {
    let mut steps = connected();
    steps.push(S::Req(m::query("SELECT 1")));
    // SELECT 1's answer and two more round trips were lost whole.
    steps.push(S::Lost(
        cat(&[m::query("SELECT 2"), m::query("SELECT 3")]),
        cat(&[answer(1), answer(2), answer(3)]),
    ));
    let got = run(&then_queries(steps, 4, 9));
    // SELECT 1 was never answered as far as the parser saw: not reported at all (a
    // statement starts with its answer); whatever is reported is a statement with its own
    // answer.
    assert!(!got.iter().any(|l| l.contains("SELECT 1")), "{got:?}");
    for pair in got.chunks(2) {
        let n = pair[0].rsplit(' ').next().unwrap();
        assert!(pair[1].ends_with(&format!("SELECT {n} rows=1")), "{got:?}");
    }
    assert!(
        got.iter().any(|l| l.ends_with("SELECT 9 rows=1")),
        "{got:?}"
    );
}

#[test]
fn a_hole_inside_a_long_row_does_not_complete_its_statement() {
    let mut steps = connected();
    steps.push(S::Req(m::query("SELECT big")));
    let row = m::data_row(&vec![b'x'; 50_000]);
    let (head, tail) = row.split_at(1000);
    steps.push(S::Resp(cat(&[m::row_description(), head.to_vec()])));
    steps.push(S::Lost(Vec::new(), tail[..20_000].to_vec()));
    steps.push(S::Resp(cat(&[
        tail[20_000..].to_vec(),
        m::complete("SELECT 1"),
        m::ready(),
    ])));
    let got = run(&then_queries(steps, 1, 9));
    assert_eq!(got[..2], ["start 0 SELECT big", "end 0 aborted"]);
    assert!(
        got.iter().any(|l| l.ends_with("SELECT 9 rows=1")),
        "{got:?}"
    );
    assert!(!got
        .iter()
        .any(|l| l.contains("SELECT 1 rows=1") && l.starts_with("end 0")));
}
