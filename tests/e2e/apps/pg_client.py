"""Uninstrumented PostgreSQL client (psycopg 3, autocommit) for the e2e tests.

    pg_client.py --dsn DSN PLAN_JSON

PLAN_JSON is a list of steps, run in order on ONE connection:
  {"sql": S}                         no parameters: psycopg sends a simple Query
  {"sql": S, "params": [...]}        extended protocol, unnamed statement (Parse/Bind/Execute)
  {"sql": S, "params": [...], "prepare": true, "repeat": N}
                                     a named prepared statement, Parse once, executed N times
  {"pipeline": [step, ...]}          libpq pipeline mode, steps with "params" ($1 placeholders):
                                     all sent in one flush with one Sync at the end, then the
                                     results read; after an error the server skips the rest
  {"psycopg_pipeline": [step, ...]}  psycopg's conn.pipeline() (no error expected inside)
  {"many": S, "rows": [[...], ...]}  cursor.executemany (psycopg pipelines it)
  {"transaction": [step, ...]}       BEGIN ... COMMIT around the steps
  {"wait_for": PATH}                 print "WAITING", then sleep until PATH exists

Prints one JSON line per statement execution: {"sql", "outcome": ok|error|skipped, "sqlstate",
"rows"} (rows: rows returned, for statements that return rows), and first a line
{"backend_pid": N}. Exits 0 even when statements fail: failures are part of the plans.
"""

from __future__ import annotations

import json
import os
import sys
import time

import psycopg
from psycopg.pq import DiagnosticField, ExecStatus


def report(sql: str, outcome: str, sqlstate: str | None = None, rows: int | None = None) -> None:
    print(json.dumps({"sql": sql, "outcome": outcome, "sqlstate": sqlstate, "rows": rows}),
          flush=True)


def rows_of(cur) -> int | None:
    return len(cur.fetchall()) if cur.description is not None else None


def run_step(conn, step: dict) -> None:
    cur = conn.cursor()
    if "wait_for" in step:
        print("WAITING", flush=True)
        while not os.path.exists(step["wait_for"]):
            time.sleep(0.02)
    elif "pipeline" in step:
        run_pipeline(conn, step["pipeline"])
    elif "psycopg_pipeline" in step:
        with conn.pipeline():
            curs = [(inner, conn.cursor()) for inner in step["psycopg_pipeline"]]
            for inner, c in curs:
                c.execute(inner["sql"], inner.get("params"))
        for inner, c in curs:
            report(inner["sql"], "ok", rows=rows_of(c))
    elif "many" in step:
        cur.executemany(step["many"], [tuple(r) for r in step["rows"]])
        for _ in step["rows"]:
            report(step["many"], "ok")
    elif "transaction" in step:
        with conn.transaction():
            for inner in step["transaction"]:
                run_step(conn, inner)
    else:
        params = step.get("params")
        for _ in range(step.get("repeat", 1)):
            try:
                cur.execute(step["sql"], params, prepare=step.get("prepare"))
            except psycopg.Error as e:
                report(step["sql"], "error", e.sqlstate)
            else:
                report(step["sql"], "ok", rows=rows_of(cur))


def run_pipeline(conn, steps: list[dict]) -> None:
    """libpq pipeline mode, driven directly (psycopg's Pipeline reads results while it sends,
    so whether the server gets to skip anything would be down to timing): every statement's
    Parse/Bind/Describe/Execute, then one Sync, leave in one flush; then the results are read.
    After an error the server skips each remaining statement (PIPELINE_ABORTED) until the Sync.
    """
    pg = conn.pgconn
    pg.nonblocking = 0
    pg.enter_pipeline_mode()
    for step in steps:
        params = [None if p is None else str(p).encode() for p in step.get("params", [])]
        pg.send_query_params(step["sql"].encode(), params)
    pg.pipeline_sync()
    pg.flush()
    for step in steps:
        res = pg.get_result()
        status = ExecStatus(res.status)
        if status == ExecStatus.PIPELINE_ABORTED:
            report(step["sql"], "skipped")
        elif status == ExecStatus.FATAL_ERROR:
            report(step["sql"], "error", res.error_field(DiagnosticField.SQLSTATE).decode())
        else:
            rows = res.ntuples if status == ExecStatus.TUPLES_OK else None
            report(step["sql"], "ok", rows=rows)
        assert pg.get_result() is None  # end of this statement's results
    res = pg.get_result()
    assert res is not None and ExecStatus(res.status) == ExecStatus.PIPELINE_SYNC, res
    pg.exit_pipeline_mode()


def main() -> int:
    dsn, plan = sys.argv[sys.argv.index("--dsn") + 1], json.loads(sys.argv[-1])
    with psycopg.connect(dsn, autocommit=True) as conn:
        print(json.dumps({"backend_pid": conn.info.backend_pid}), flush=True)
        for step in plan:
            run_step(conn, step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
