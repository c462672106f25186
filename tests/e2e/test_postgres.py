"""PostgreSQL: one CLIENT span per statement the server executed, from the client's process.

The traffic of each test is in pg_cases.py (checked there against the clients' reports and the
server's own statement log, and self-tested without the agent in test_apps_pg_amqp.py). Here:
exactly the expected spans (names, sanitised db.query.text, db.* attributes, SQLSTATE errors,
returned rows, order), each a root span of its own trace (the clients handle no request),
no span from any postgres server process (Scenario.check_global), and none of the literals
the statements carried anywhere in the exported bytes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import pg_cases
from harness.pg import PGBENCH_SETUP_STATEMENTS, PGBENCH_TX, PgServer, assert_statement, \
    match_statements
from harness.scenario import Scenario
from harness.spans import fmt_spans


def check_case(scn: Scenario, pg: PgServer, case: pg_cases.Case):
    scn.secrets += case.secrets
    spans = scn.collect(len(case.expected))
    picked = match_statements(spans, case.expected, db=case.db, port=pg.port, pid=case.run.pid,
                              sequential=case.sequential)
    assert all(s.parent_span_id == "" for s in spans), (
        f"statements sent outside any request must be root spans:\n{fmt_spans(spans)}")
    assert len({s.trace_id for s in spans}) == len(spans), f"one trace each:\n{fmt_spans(spans)}"
    return picked


def test_simple_query_with_four_statements(scn: Scenario, postgres: PgServer) -> None:
    """One Query message, four statements: four spans, literals sanitised, IN list allowed
    to collapse."""
    check_case(scn, postgres, pg_cases.simple_multi_statement(scn, postgres))


def test_error_stops_a_multi_statement_query(scn: Scenario, postgres: PgServer) -> None:
    """SELECT ok, then 42P01 (an ERROR span with the SQLSTATE), then nothing for the
    statement the server never ran."""
    ok, failed = check_case(scn, postgres, pg_cases.simple_error_stops_the_query(scn, postgres))
    assert failed.attributes["error.type"] == "42P01"


def test_extended_protocol_prepared_statement_and_transaction(scn: Scenario,
                                                              postgres: PgServer) -> None:
    """Unnamed statements, a prepared statement executed five times (five spans, each with
    the text from its one Parse), BEGIN/COMMIT, a unique violation (23505)."""
    check_case(scn, postgres, pg_cases.extended_and_prepared(scn, postgres))


def test_pipelines_executemany_and_skipped_statements(scn: Scenario,
                                                     postgres: PgServer) -> None:
    """Pipelined statements get one span each; after the 23505 in the libpq pipeline the
    server skipped two statements: no spans for them."""
    check_case(scn, postgres, pg_cases.pipelines(scn, postgres))


def test_go_lib_pq_statements(scn: Scenario, postgres: PgServer, goclient: Path) -> None:
    """A second client implementation (Go, lib/pq): two round trips per parameterised
    statement, a named prepared statement, BEGIN READ WRITE, a unique violation."""
    check_case(scn, postgres, pg_cases.go_lib_pq(scn, postgres, goclient))


@pytest.mark.parametrize("mode", ["extended", "prepared", "simple"])
def test_pgbench_one_span_per_statement(scn: Scenario, postgres: PgServer, mode: str) -> None:
    """pgbench -t 50 -c 2: 7 statements per transaction (BEGIN, 3 UPDATE, SELECT, INSERT, END)
    plus pgbench's 2 set-up SELECTs, all from pgbench's one process: exactly 702 spans."""
    check_pgbench(scn, postgres, pg_cases.pgbench_run(scn, postgres, mode))


def check_pgbench(scn: Scenario, postgres: PgServer, case: pg_cases.PgbenchCase) -> None:
    """Exactly the spans of a pgbench run: its set-up SELECTs and 7 per transaction."""
    __tracebackhide__ = True
    mode = case.mode
    spans = scn.collect(case.expected_spans)
    text = {s.span_id: str(s.attributes.get("db.query.text")) for s in spans}
    setup = [s for s in spans if text[s.span_id].lower().startswith(
        "select count(*) from pgbench_branches") or "pg_partitioned_table" in text[s.span_id]]
    assert len(setup) == PGBENCH_SETUP_STATEMENTS, fmt_spans(setup)
    for s in setup:
        assert s.attributes.get("db.operation.name") == "SELECT", fmt_spans([s])
    tx = [s for s in spans if s not in setup]
    expected = pg_cases.pgbench_statements(mode)
    counts = Counter(s.name for s in tx)
    assert counts == {name: case.transactions for name in expected}, (
        f"span names per statement, expected {case.transactions} of each of "
        f"{sorted(expected)}: {dict(counts)}")
    for s in tx:
        assert_statement(s, expected[s.name], db=case.db, port=postgres.port, pid=case.run.pid)
    assert all(s.parent_span_id == "" for s in spans)
    assert len({s.trace_id for s in spans}) == len(spans)
    assert len(PGBENCH_TX) == 7
