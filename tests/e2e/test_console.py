"""Console mode: without --otlp-endpoint the agent prints one line per span on stdout.

Runs its own agent (no endpoint) for this module; the OTLP agent of other modules is stopped
by then (module-scoped fixtures are torn down before the next module starts).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from harness.agent import Agent
from harness.procs import free_port, wait_until
from harness.scenario import PYTHON, Scenario

CONSOLE_DEADLINE = 2.0  # the contract: the span line is out within 2 s of the response


@pytest.fixture(scope="module")
def console_agent(agent_bin: Path, workroot: Path):
    d = workroot / "agent-console"
    d.mkdir()
    a = Agent(agent_bin, d, endpoint=None, name="agent-console")
    try:
        yield a
    finally:
        code = a.stop()
    assert code == 0, f"console agent exited with {code} on SIGTERM\n{a.stderr_tail()}"


@pytest.fixture
def scn_console(console_agent: Agent, workroot: Path, request):
    d = workroot / request.node.name
    d.mkdir()
    s = Scenario(None, console_agent, d)
    try:
        yield s
    finally:
        s.close()
        shutil.rmtree(d, ignore_errors=True)


def span_line(stdout: str, kind: str, path: str) -> str | None:
    for line in stdout.splitlines():
        if re.search(rf"\b{kind}\b", line) and "GET" in line and path in line:
            return line
    return None


def test_console_prints_server_and_client_lines(console_agent: Agent,
                                                scn_console: Scenario) -> None:
    www = scn_console.workdir / "www"
    www.mkdir()
    (www / "x").write_text("hello\n")
    port = free_port()
    scn_console.spawn("http.server", [PYTHON, "-m", "http.server", str(port), "--bind",
                                      "127.0.0.1", "--directory", str(www)], port)
    call = scn_console.curl(f"http://127.0.0.1:{port}/x")
    assert call.rows[0]["http_code"] == 200

    out = console_agent.proc.stdout
    wait_until(lambda: span_line(out(), "SERVER", "/x") and span_line(out(), "CLIENT", "/x"),
               CONSOLE_DEADLINE, "SERVER and CLIENT lines for GET /x on the agent's stdout",
               interval=0.05)
