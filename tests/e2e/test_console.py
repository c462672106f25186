"""Console mode: without --otlp-endpoint the agent prints one line per span on stdout.

Runs its own agent (no endpoint) for this module; the OTLP agent of other modules is stopped
by then (module-scoped fixtures are torn down before the next module starts).
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from harness.agent import Agent
from harness.console import Request, check_console_http, parse_output
from harness.procs import free_port, wait_until
from harness.scenario import CURL_UA, PYTHON, QUIET, Scenario

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
    """Three requests from one curl to `python3 -m http.server`: exactly one CLIENT line
    (curl) and one SERVER line (the server) per request on the agent's stdout and no other
    line of the test's processes, every stdout line a well-formed span line; each with the
    attributes of its request (path, ports, status, user agent, body size as curl counted it,
    the protocol version curl saw); each SERVER line the CLIENT line's child (same-node
    stitching) and each request its own trace."""
    www = scn_console.workdir / "www"
    www.mkdir()
    (www / "x").write_text("hello\n")
    (www / "y").write_text("a longer file for the second request\n")
    (www / "z").write_text("")
    out = console_agent.proc.stdout
    before = len(out())  # the lines of earlier tests are not this test's
    port = free_port()
    server = scn_console.spawn("http.server", [PYTHON, "-m", "http.server", str(port), "--bind",
                                               "127.0.0.1", "--directory", str(www)], port)
    paths = ["/x", "/y", "/z"]
    call = scn_console.curl(*(f"http://127.0.0.1:{port}{p}" for p in paths))
    assert call.rows[0]["http_code"] == 200
    assert [r["http_code"] for r in call.rows] == [200, 200, 200], call.rows
    assert [r["size_download"] for r in call.rows] == [(www / p[1:]).stat().st_size
                                                       for p in paths], call.rows

    wait_until(lambda: span_line(out(), "SERVER", "/x") and span_line(out(), "CLIENT", "/x"),
               CONSOLE_DEADLINE, "SERVER and CLIENT lines for GET /x on the agent's stdout",
               interval=0.05)
    mine = lambda: [s for s in parse_output(out()[before:])  # noqa: E731
                    if s.pid in scn_console.pids or s.attributes.get("server.port") == str(port)]
    wait_until(lambda: len(mine()) >= 2 * len(paths), CONSOLE_DEADLINE,
               f"{2 * len(paths)} span lines of this test on the agent's stdout", interval=0.05)
    time.sleep(QUIET)  # time for unexpected extra lines to show up
    # curl says "1" for HTTP/1.0 (http.server's default), the conventions "1.0".
    requests = [Request(p, r["local_port"], r["size_download"],
                        {"1": "1.0"}.get(r["http_version"], r["http_version"]))
                for p, r in zip(paths, call.rows)]
    check_console_http(mine(), client_pid=call.pid, client_svc="curl", server_pid=server.pid,
                       server_svc="http.server", port=port, ua=CURL_UA, requests=requests)
