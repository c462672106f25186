"""pytest fixtures for the e2e suite.

session: `receiver` (in-process OTLP/gRPC receiver), `agent_bin` ($AGENT_BIN, or a failure),
         `workroot` (temp dir, removed at the end), `postgres` and `rabbitmq` (one server each,
         started on first use, always stopped at the end), `goclient` (the Go client, built),
         `tls_certs` (a CA and a 127.0.0.1/localhost server certificate), `gotls` (the Go
         HTTPS server/client, built, plus a stripped server), `postgres_tls` (a second
         PostgreSQL with ssl=on),
         `h2cserver` (the Go h2c server, built)
module:  `agent` (one agent per test module, exporting to `receiver`; must exit 0 on SIGTERM)
test:    `scn` (a Scenario: starts servers/clients, collects this test's spans, cleans up)

On a failed test the report gets the test's spans, its processes' log tails and the agent's
stderr tail.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest

from harness.agent import Agent, require_agent_bin
from harness.goclient import build_goclient, build_h2cserver
from harness.pg import PgServer
from harness.rabbit import RabbitServer
from harness.scenario import Scenario
from harness.tls import Certs, GoTls, build_gotls, make_certs
from otlp_receiver import OtlpReceiver


@pytest.fixture(scope="session")
def agent_bin() -> Path:
    return require_agent_bin()


@pytest.fixture(scope="session")
def receiver():
    rx = OtlpReceiver().start()
    yield rx
    rx.stop()


@pytest.fixture(scope="session")
def workroot():
    d = Path(tempfile.mkdtemp(prefix="e2e-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    pg = PgServer()
    try:
        yield pg
    finally:
        pg.stop()
    assert not pg.leftovers, f"postgres processes survived the shutdown: {pg.leftovers}"


@pytest.fixture(scope="session")
def rabbitmq():
    rabbit = RabbitServer()
    try:
        yield rabbit
    finally:
        rabbit.stop()
    assert not rabbit.leftovers, f"rabbitmq processes survived the shutdown: {rabbit.leftovers}"


@pytest.fixture(scope="session")
def goclient(workroot: Path) -> Path:
    """apps/goclient built offline (lib/pq, amqp091-go from Debian packages)."""
    return build_goclient(workroot / "go")


@pytest.fixture(scope="session")
def tls_certs(workroot: Path) -> Certs:
    """A throw-away CA and a server certificate it signed for 127.0.0.1 and localhost."""
    return make_certs(workroot / "certs")


@pytest.fixture(scope="session")
def gotls(workroot: Path) -> GoTls:
    """apps/gotls (stdlib net/http + crypto/tls) built offline: server, client, stripped server."""
    return build_gotls(workroot / "go")


@pytest.fixture(scope="session")
def postgres_tls(tls_certs: Certs):
    """PostgreSQL with ssl=on; its clients connect with sslmode=require."""
    pg = PgServer(tls_certs)
    try:
        yield pg
    finally:
        pg.stop()
    assert not pg.leftovers, f"postgres processes survived the shutdown: {pg.leftovers}"


@pytest.fixture(scope="session")
def h2cserver(workroot: Path) -> Path:
    """apps/h2cserver built offline (net/http + x/net/http2/h2c from Debian packages)."""
    return build_h2cserver(workroot / "go")


def _dir_for(root: Path, nodeid: str) -> Path:
    d = root / re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid)[-120:]
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def agent(agent_bin: Path, receiver: OtlpReceiver, workroot: Path, request):
    a = Agent(agent_bin, _dir_for(workroot, f"agent-{request.module.__name__}"), receiver.endpoint)
    try:
        yield a
    finally:
        code = a.stop()
    assert code == 0, f"agent exited with {code} on SIGTERM\n{a.stderr_tail()}"


@pytest.fixture
def scn(agent: Agent, receiver: OtlpReceiver, workroot: Path, request):
    s = Scenario(receiver, agent, _dir_for(workroot, request.node.nodeid))
    try:
        yield s
    finally:
        s.close()
        shutil.rmtree(s.workdir, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.failed:
        return
    values = list(getattr(item, "funcargs", {}).values()) + [getattr(item, "e2e_scenario", None)]
    scenarios = [v for v in values if isinstance(v, Scenario)]
    agents = {id(a): a for a in [v for v in values if isinstance(v, Agent)]
              + [s.agent for s in scenarios if s.agent is not None]}
    for s in scenarios:
        rep.sections.append(("e2e: spans and process logs", s.report()))
    for a in agents.values():
        rep.sections.append((f"e2e: agent pid {a.pid} stderr (tail)", a.stderr_tail()))
