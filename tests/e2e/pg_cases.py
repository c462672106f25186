"""The PostgreSQL traffic of each agent test, and the statements its spans must describe.

Each case runs real clients (psql, pgbench, apps/pg_client.py on psycopg) against the session's
server, checks that the traffic is what the expectation assumes (the clients' own reports and
the server's statement log), and returns the expected CLIENT spans as `Stmt`s. The agent tests
(test_postgres.py) assert on the spans; test_apps_pg_amqp.py runs the same cases with no agent,
so a span test can never fail because of its traffic.

Literal values that must appear nowhere in the exported data are in SECRETS (every string and
number literal the cases send; sanitised query texts replace them with `?`).
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from harness.pg import (PGBENCH_SETUP_STATEMENTS, PGBENCH_TX, PgRun, PgServer, Stmt, pg_client,
                        pgbench, pgbench_processed, psql, use_database, wait_for_log)
from harness.procs import run
from harness.scenario import Scenario, app_env

SCHEMA = "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL)"
# Literal values, new for every session: no other process on the machine (another test session
# traced by the same agent) can happen to send them. BIG is long enough never to occur by chance
# in an exported id, port or timestamp.
S1, S2 = f"sec-{secrets.token_hex(6)}", f"sec-{secrets.token_hex(6)}"
BIG = secrets.SystemRandom().randrange(4_000_000_000, 9_000_000_000)
SECRETS = [S1, S2, str(BIG), str(BIG + 1), str(BIG + 2)]

ITEMS_INSERT = "INSERT INTO items (id, name) VALUES (%s, %s)"  # psycopg: sent with $1, $2
ITEMS_BY_ID = "SELECT name FROM items WHERE id = %s"
DOLLAR = {ITEMS_INSERT: "INSERT INTO items (id, name) VALUES ($1, $2)",
          ITEMS_BY_ID: "SELECT name FROM items WHERE id = $1"}


def reference_sanitise(sql: str) -> str:
    """A straightforward sanitiser, for the self-tests: strings and numbers (with a sign) -> ?,
    $n placeholders and identifiers kept."""
    sql = re.sub(r"'(?:[^']|'')*'", "?", sql)
    return re.sub(r"(?<![\w$])-?\d+(?:\.\d+)?\b", "?", sql)


@dataclass
class Case:
    run: PgRun
    db: str
    expected: list[Stmt]
    # True: each statement was sent after the previous one's result came back, so its span
    # starts after the previous span ended. False (pipelines, several statements in one simple
    # Query): the order of starts and of ends only.
    sequential: bool = True
    secrets: list[str] = field(default_factory=lambda: list(SECRETS))


def _client_outcomes(run: PgRun) -> list[tuple[str, str | None]]:
    return [(r["outcome"], r["sqlstate"]) for r in run.rows]


def simple_multi_statement(scn: Scenario, pg: PgServer) -> Case:
    """psql -c with four statements: one simple Query message, four statements executed."""
    db = use_database(scn, pg, SCHEMA)
    since = pg.log_size()
    sql = (f"INSERT INTO items (id, name) VALUES ({BIG}, '{S1}'); "
           f"SELECT name FROM items WHERE id = {BIG}; "
           f"UPDATE items SET name = '{S2}' WHERE id = {BIG}; "
           f"DELETE FROM items WHERE id IN ({BIG}, {BIG + 1}, {BIG + 2})")
    run = psql(scn, pg, db, sql)
    assert run.stdout.split() == ["INSERT", "0", "1", S1, "UPDATE", "1", "DELETE", "1"], run.stdout
    logged = wait_for_log(pg, run.app, since, 1)
    assert logged[0].kind == "statement" and logged[0].text == sql
    return Case(run, db, [
        Stmt("INSERT", "items", "INSERT INTO items (id, name) VALUES (?, ?)"),
        Stmt("SELECT", "items", "SELECT name FROM items WHERE id = ?", rows=1),
        Stmt("UPDATE", "items", "UPDATE items SET name = ? WHERE id = ?"),
        Stmt("DELETE", "items", "DELETE FROM items WHERE id IN (?, ?, ?)"),
    ], sequential=False)


def simple_error_stops_the_query(scn: Scenario, pg: PgServer) -> Case:
    """psql -c 'SELECT 1; SELECT * FROM missing_items; SELECT 3': the server runs the first,
    fails the second (42P01) and never runs the third."""
    db = use_database(scn, pg, SCHEMA)
    since = pg.log_size()
    run = psql(scn, pg, db, "SELECT 1; SELECT * FROM missing_items; SELECT 3", expect_rc=1)
    assert run.stdout.split() == ["1"], run.stdout  # no "3": never executed
    assert 'relation "missing_items" does not exist' in run.stderr, run.stderr
    wait_for_log(pg, run.app, since, 1)
    return Case(run, db, [
        Stmt("SELECT", None, "SELECT ?", rows=1),
        Stmt("SELECT", "missing_items", "SELECT * FROM missing_items", sqlstate="42P01"),
    ], sequential=False)


def extended_and_prepared(scn: Scenario, pg: PgServer) -> Case:
    """psycopg's extended protocol: unnamed statements, a named prepared statement executed five
    times (one Parse), an explicit transaction, a unique violation."""
    db = use_database(scn, pg, SCHEMA)
    since = pg.log_size()
    plan = [{"sql": ITEMS_INSERT, "params": [BIG, S1]},
            {"sql": ITEMS_BY_ID, "params": [BIG]},
            {"sql": ITEMS_BY_ID, "params": [BIG], "prepare": True, "repeat": 5},
            {"transaction": [{"sql": "UPDATE items SET name = %s WHERE id = %s",
                              "params": [S2, BIG]}]},
            {"sql": ITEMS_INSERT, "params": [BIG, S1]}]
    run = pg_client(scn, pg, db, plan)
    assert _client_outcomes(run) == [("ok", None)] * 8 + [("error", "23505")], run.stdout
    logged = wait_for_log(pg, run.app, since, 11)  # + BEGIN and COMMIT
    assert [(x.kind, x.prepared is not None and x.prepared != "<unnamed>") for x in logged] == (
        [("execute", False)] * 2 + [("execute", True)] * 5
        + [("statement", False), ("execute", False), ("statement", False), ("execute", False)])
    return Case(run, db, [
        Stmt("INSERT", "items", DOLLAR[ITEMS_INSERT]),
        Stmt("SELECT", "items", DOLLAR[ITEMS_BY_ID], rows=1),
        *[Stmt("SELECT", "items", DOLLAR[ITEMS_BY_ID], rows=1)] * 5,
        Stmt("BEGIN", None, "BEGIN"),
        Stmt("UPDATE", "items", "UPDATE items SET name = $1 WHERE id = $2"),
        Stmt("COMMIT", None, "COMMIT"),
        Stmt("INSERT", "items", DOLLAR[ITEMS_INSERT], sqlstate="23505"),
    ])


PIPELINE_INSERT = "INSERT INTO items (id, name) VALUES ($1, $2)"
PIPELINE_SELECT = "SELECT name FROM items WHERE id = $1"
PIPELINE_UPDATE = "UPDATE items SET name = $1 WHERE id = $2"


def pipelines(scn: Scenario, pg: PgServer) -> Case:
    """psycopg conn.pipeline(), executemany (pipelined by psycopg), and a libpq pipeline whose
    second statement fails: the server skips the two after it until the Sync."""
    db = use_database(scn, pg, SCHEMA)
    since = pg.log_size()
    plan = [{"psycopg_pipeline": [{"sql": ITEMS_INSERT, "params": [1, S1]},
                                  {"sql": ITEMS_INSERT, "params": [2, S1]},
                                  {"sql": "SELECT count(*) FROM items"}]},
            {"many": ITEMS_INSERT, "rows": [[3, "a"], [4, "b"], [5, "c"]]},
            {"pipeline": [{"sql": PIPELINE_INSERT, "params": [BIG, S1]},
                          {"sql": PIPELINE_INSERT, "params": [1, S2]},  # 23505
                          {"sql": PIPELINE_SELECT, "params": [BIG]},
                          {"sql": PIPELINE_UPDATE, "params": [S2, BIG]}]},
            {"sql": "SELECT count(*) FROM items"}]
    run = pg_client(scn, pg, db, plan)
    assert _client_outcomes(run) == [("ok", None)] * 7 + [("error", "23505"), ("skipped", None),
                                                          ("skipped", None), ("ok", None)]
    assert [r["rows"] for r in run.rows if r["rows"] is not None] == [1, 1], run.stdout
    logged = wait_for_log(pg, run.app, since, 9)
    assert not [x for x in logged if x.text in (PIPELINE_SELECT, PIPELINE_UPDATE)], (
        "the server ran a statement that followed the error in the pipeline")
    assert pg.psql("SELECT count(*) FROM items", db=db) == "5"  # the failed pipeline rolled back
    ins = DOLLAR[ITEMS_INSERT]
    return Case(run, db, [
        Stmt("INSERT", "items", ins), Stmt("INSERT", "items", ins),
        Stmt("SELECT", "items", "SELECT count(*) FROM items", rows=1),
        Stmt("INSERT", "items", ins), Stmt("INSERT", "items", ins), Stmt("INSERT", "items", ins),
        Stmt("INSERT", "items", ins), Stmt("INSERT", "items", ins, sqlstate="23505"),
        Stmt("SELECT", "items", "SELECT count(*) FROM items", rows=1),
    ], sequential=False)


# -- pgbench --------------------------------------------------------------------------------

PGBENCH_TRANSACTIONS, PGBENCH_CLIENTS = 50, 2
_SIGNED = r"-? ?\?"  # a negative literal may be sanitised to ? or -?
PGBENCH_TEXTS = {  # per protocol: (operation, table) -> the statement's sanitised text
    "extended": {
        ("BEGIN", None): "BEGIN",
        ("UPDATE", "pgbench_accounts"):
            "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
        ("SELECT", "pgbench_accounts"): "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
        ("UPDATE", "pgbench_tellers"):
            "UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2",
        ("UPDATE", "pgbench_branches"):
            "UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2",
        ("INSERT", "pgbench_history"):
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
            "VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
        ("END", None): "END",
    },
}
PGBENCH_TEXTS["prepared"] = PGBENCH_TEXTS["extended"]
PGBENCH_SIMPLE_PATTERNS = {  # -M simple: values inlined by pgbench, sanitised by the agent
    key: re.escape(text).replace(r"\$1", _SIGNED).replace(r"\$2", r"\?").replace(
        r"\$3", r"\?").replace(r"\$4", _SIGNED)
    for key, text in PGBENCH_TEXTS["extended"].items()}


def pgbench_statements(mode: str) -> dict[str, Stmt]:
    """Span name -> the expected statement, for the 7 statements of pgbench's transaction."""
    out = {}
    for op, table in PGBENCH_TX:
        if mode == "simple":
            st = Stmt(op, table, "", pattern=PGBENCH_SIMPLE_PATTERNS[(op, table)])
        else:
            st = Stmt(op, table, PGBENCH_TEXTS[mode][(op, table)])
        if op == "SELECT":
            st.rows = 1
        out[st.name] = st
    return out


@dataclass
class PgbenchCase:
    run: PgRun
    db: str
    mode: str
    transactions: int

    @property
    def expected_spans(self) -> int:
        return len(PGBENCH_TX) * self.transactions + PGBENCH_SETUP_STATEMENTS


def pgbench_run(scn: Scenario, pg: PgServer, mode: str) -> PgbenchCase:
    """pgbench -n -t 50 -c 2 -M mode on a freshly initialised database (pgbench -i over the
    Unix socket: not traced)."""
    db = use_database(scn, pg)
    pg.pgbench_init(db)
    since = pg.log_size()
    run = pgbench(scn, pg, db, "-n", "-t", str(PGBENCH_TRANSACTIONS), "-c",
                  str(PGBENCH_CLIENTS), "-j", "1", "-M", mode)
    n = pgbench_processed(run)
    assert n == PGBENCH_TRANSACTIONS * PGBENCH_CLIENTS
    case = PgbenchCase(run, db, mode, n)
    logged = wait_for_log(pg, run.app, since, case.expected_spans)
    setup = [x for x in logged if "pgbench_branches" in x.text and x.text.startswith("select ")
             or "pg_partitioned_table" in x.text]
    assert len(setup) == PGBENCH_SETUP_STATEMENTS, [x.text for x in setup]
    kinds = {x.kind for x in logged if x not in setup}
    assert kinds == ({"statement"} if mode == "simple" else {"execute"}), kinds
    if mode == "prepared":
        assert all(x.prepared and x.prepared.startswith("P_") for x in logged if x not in setup)
    return case


def go_lib_pq(scn: Scenario, pg: PgServer, goclient: Path) -> Case:
    """apps/goclient (lib/pq, database/sql on one connection): statements with parameters
    (Parse/Describe/Sync, then Bind/Execute/Sync), one without (simple Query), a named
    prepared statement executed three times, BEGIN READ WRITE ... COMMIT, a unique violation.
    """
    db = use_database(scn, pg, SCHEMA)
    since = pg.log_size()
    app = f"e2e-go-{uuid.uuid4().hex[:8]}"
    proc, rc = run(scn._name("goclient"), [str(goclient), "pg",
                                           f"{pg.dsn(db, app)} sslmode=disable", str(BIG), S1,
                                           S2],
                   scn.workdir, timeout=60, env=app_env())
    scn._own(proc)
    rows = [json.loads(x) for x in proc.stdout().splitlines() if x.startswith("{")]
    assert rc == 0, proc.tail()
    assert [(r["step"], r["outcome"], r.get("rows")) for r in rows] == [
        ("insert", "ok", None), ("select", "ok", 1), ("count", "ok", 1),
        *[("prepared", "ok", 1)] * 3, ("transaction", "ok", None), ("duplicate", "error", None)]
    assert rows[-1]["sqlstate"] == "23505"
    logged = wait_for_log(pg, app, since, 10)
    assert [x.prepared for x in logged[3:6]] == ["1"] * 3, logged  # the named statement
    assert logged[6].text == "BEGIN READ WRITE"
    return Case(PgRun(proc.pid, app, rc, rows, proc.stdout(), proc.stderr()), db, [
        Stmt("INSERT", "items", DOLLAR[ITEMS_INSERT]),
        Stmt("SELECT", "items", DOLLAR[ITEMS_BY_ID], rows=1),
        Stmt("SELECT", "items", "SELECT count(*) FROM items", rows=1),
        *[Stmt("SELECT", "items", DOLLAR[ITEMS_BY_ID], rows=1)] * 3,
        Stmt("BEGIN", None, "BEGIN READ WRITE"),
        Stmt("UPDATE", "items", "UPDATE items SET name = $1 WHERE id = $2"),
        Stmt("COMMIT", None, "COMMIT"),
        Stmt("INSERT", "items", DOLLAR[ITEMS_INSERT], sqlstate="23505"),
    ])
