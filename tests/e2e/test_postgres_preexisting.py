"""A statement prepared before the agent started: its text was never seen.

apps/pg_client.py connects, prepares a statement (psycopg prepare=True: a named Parse) and runs
it once, all before any agent exists. Then the agent starts (it finds the connection in
procfs) and the client runs the prepared statement three more times (Bind/Execute by name
only), then a simple query, then a statement prepared after the agent started.

Expected: three spans named EXECUTE with no db.query.text and
db.postgresql.statement_text_unknown=true; the two statements the agent saw parsed get their
text as usual; db.namespace may be missing (the start-up message was before the agent).
Nothing for the two statements executed before the agent.

Its own module: it starts its own agent, and a module agent must not run at the same time.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

from harness.agent import Agent
from harness.pg import PgServer, Stmt, match_statements, use_database, wait_for_log
from harness.procs import Proc, wait_until
from harness.scenario import APPS, PYTHON, Scenario, app_env
from otlp_receiver import OtlpReceiver
from pg_cases import BIG, DOLLAR, ITEMS_BY_ID, ITEMS_INSERT, S1, S2, SCHEMA, SECRETS

BY_NAME = "SELECT id FROM items WHERE name = %s"


def test_statement_prepared_before_the_agent(agent_bin: Path, receiver: OtlpReceiver,
                                             postgres: PgServer, workroot: Path,
                                             request) -> None:
    d = workroot / request.node.name
    d.mkdir()
    scn = Scenario(receiver, None, d)
    request.node.e2e_scenario = scn
    agent = None
    try:
        db = use_database(scn, postgres, SCHEMA)
        since = postgres.log_size()
        go = d / "go"
        plan = [{"sql": ITEMS_INSERT, "params": [BIG, S1]},
                {"sql": ITEMS_BY_ID, "params": [BIG], "prepare": True},
                {"wait_for": str(go)},
                {"sql": ITEMS_BY_ID, "params": [BIG], "prepare": True, "repeat": 3},
                {"sql": "SELECT count(*) FROM items"},
                {"sql": BY_NAME, "params": [S2], "prepare": True, "repeat": 2}]
        app = "e2e-preexisting"
        client = Proc("pg_client", [PYTHON, str(APPS / "pg_client.py"), "--dsn",
                                    postgres.dsn(db, app), json.dumps(plan)], d, env=app_env())
        scn.procs.append(client)
        scn.pids.add(client.pid)
        wait_until(lambda: "WAITING" in client.stdout(), 15, "the client's first statements",
                   alive=client)

        agent = Agent(agent_bin, d, receiver.endpoint, name="agent-pg-preexisting")
        scn.agent = agent
        agent_started = time.time_ns()
        go.touch()
        assert client.wait(30) == 0, client.tail()
        rows = [json.loads(x) for x in client.stdout().splitlines() if x.startswith('{"sql"')]
        assert [(r["outcome"], r["rows"]) for r in rows] == (
            [("ok", None), ("ok", 1)] + [("ok", 1)] * 3 + [("ok", 1)] + [("ok", 0)] * 2), rows
        logged = wait_for_log(postgres, app, since, 8)
        assert [x.prepared for x in logged[1:5]] == ["_pg3_0"] * 4, logged

        scn.secrets += SECRETS
        spans = scn.collect(6)
        match_statements(spans, [
            *[Stmt("EXECUTE", None, None)] * 3,
            Stmt("SELECT", "items", "SELECT count(*) FROM items", rows=1),
            *[Stmt("SELECT", "items", "SELECT id FROM items WHERE name = $1", rows=0)] * 2,
        ], db=None, port=postgres.port, pid=client.pid)
        assert all(s.start_ns >= agent_started for s in spans)
        assert DOLLAR[ITEMS_BY_ID] not in {s.attributes.get("db.query.text") for s in spans}
    finally:
        if agent is not None:
            code = agent.stop(signal.SIGTERM)
            assert code == 0, agent.stderr_tail()
        scn.close()
        shutil.rmtree(d, ignore_errors=True)
