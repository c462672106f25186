"""The agent never traces its own OTLP export: neither its client side (the agent's pid is not
traced) nor the collector's side of those connections (the receiving process's accepted
sockets on the export port: agent/src/pipeline.rs `set_export_port` +
ebpf/seed.rs `is_own_connection`). Without both, every export would be a span, exported in
turn, and so on.

Everywhere else the receiver runs inside pytest, which the agent traces like any process, so
a leak would surface there too; here the receiver is a process of its own
(`otlp_receiver.py --port P --out spans.jsonl`), the agent exports to it, and:

1. four rounds of curl -> service traffic, each waited for until its spans arrived, so the
   agent made at least four export calls (the receiver stamps each call's spans alike);
2. the control: another process, not the agent (apps/otlp_export_once.py), exports to the
   same port. The agent must trace THAT connection like any gRPC call: a CLIENT span from
   the exporter and a SERVER span from the receiver process, both with server.port P. This
   proves the agent sees the receiver process and the export port, so the absence of spans
   for its own exports is the exclusion at work, not blindness;
3. exactly the traffic's 8 HTTP spans and the control's 2 are there: no span from the agent's
   pid, no other span with server.port P, no other span from the receiver process.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from harness.agent import Agent
from harness.expect import assert_resource, http_pair
from harness.procs import free_port, run, wait_until
from harness.scenario import APPS, CURL_UA, PYTHON, Scenario, app_env
from harness.spans import (KIND_CLIENT, KIND_SERVER, assert_attrs, assert_child_of, fmt_spans,
                           only)
from otlp_receiver import ReceivedSpan

ROUNDS = 4
TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


class JsonlReceiver:
    """What Scenario needs of a receiver, read from a separate receiver process's JSON-lines
    output (one span per line, written as each export call arrives)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def spans(self, predicate=None) -> list[ReceivedSpan]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        out = [ReceivedSpan(**json.loads(line)) for line in text.splitlines(keepends=True)
               if line.endswith("\n")]  # a line being written is read next time
        return [s for s in out if predicate is None or predicate(s)]

    def wait_for_spans(self, predicate, timeout: float, min_count: int = 1) -> list[ReceivedSpan]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.spans(predicate)
            if len(found) >= min_count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(found)} of {min_count} spans within {timeout}s")
            time.sleep(0.1)

    def errors(self) -> list[str]:
        return []  # the receiver process rejects malformed exports; the agent logs the error

    def raw_contains(self, needle: bytes) -> bool:
        return needle in self.path.read_bytes()


@pytest.fixture
def world(agent_bin: Path, workroot: Path, request):
    """The receiver process, an agent exporting to it, and a Scenario reading its output."""
    d = workroot / request.node.name
    d.mkdir()
    port, out = free_port(), d / "spans.jsonl"
    scn = Scenario(JsonlReceiver(out), None, d)  # type: ignore[arg-type]
    request.node.e2e_scenario = scn
    agent = None
    try:
        rx = scn.spawn("otlp_receiver", [PYTHON, str(Path(__file__).parent / "otlp_receiver.py"),
                                         "--port", str(port), "--out", str(out)], port)
        agent = scn.agent = Agent(agent_bin, d, f"http://127.0.0.1:{port}", name="agent-export")
        yield scn, rx, port, agent
    finally:
        code = agent.stop() if agent is not None else 0
        scn.close()
        shutil.rmtree(d, ignore_errors=True)
    assert code == 0, f"agent exited with {code}"


def test_own_export_connections_are_never_traced(world) -> None:
    scn, rx, port, agent = world
    svc = scn.service()
    calls = []
    for i in range(ROUNDS):
        call = scn.curl(f"http://127.0.0.1:{svc.port}/users/{i + 1}")
        calls.append(call)
        scn.receiver.wait_for_spans(lambda s, pid=call.pid: s.pid == pid, 15)
    exporter, rc = run("otlp_export_once", [PYTHON, str(APPS / "otlp_export_once.py"),
                                            "--port", str(port)], scn.workdir, timeout=30,
                       env=app_env())
    scn.procs.append(exporter)
    scn.pids |= {exporter.pid, rx.pid}
    assert rc == 0 and "EXPORTED" in exporter.stdout(), exporter.tail()
    wait_until(lambda: scn.receiver.spans(lambda s: s.name == "made-up"), 10,
               "the control export to arrive")

    spans = scn.collect(2 * ROUNDS + 2)

    # 3. Nothing of the agent's own exports: no span from the agent, and on the export port
    #    only the control's two spans.
    assert not [s for s in scn.receiver.spans() if s.pid == agent.pid], "a span from the agent"
    on_port = [s for s in spans if s.attributes.get("server.port") == port]
    assert sorted((s.kind, s.pid) for s in on_port) == sorted(
        [(KIND_CLIENT, exporter.pid), (KIND_SERVER, rx.pid)]), (
        f"spans with server.port={port} (the export port) other than the control's:\n"
        f"{fmt_spans(on_port)}")
    assert [s for s in spans if s.pid == rx.pid] == [s for s in on_port if s.pid == rx.pid]

    # 2. The control: the exporter's call is traced on both sides, like any gRPC call.
    c = only(on_port, "the control exporter's call", kind=KIND_CLIENT, pid=exporter.pid)
    s = only(on_port, "the receiver's side of the control call", kind=KIND_SERVER, pid=rx.pid)
    for span in (c, s):
        assert_attrs(span, {"rpc.system": "grpc", "rpc.service": TRACE_SERVICE,
                            "rpc.method": "Export", "rpc.grpc.status_code": 0,
                            "server.port": port})
    assert_resource(c, "otlp_export_once", "python3", exporter.pid)
    assert_resource(s, "otlp_receiver", "python3", rx.pid)
    assert_child_of(s, c)

    # 1. The traffic, each round exported by its own call (at least ROUNDS export calls).
    for i, call in enumerate(calls):
        http_pair(spans, client=call, server=svc, method="GET", path=f"/users/{i + 1}",
                  template="/users/{id}", ua=CURL_UA, client_port=call.rows[0]["local_port"],
                  response_size=call.rows[0]["size_download"])
    rounds = {s.received_at_ns for s in spans if s.attributes.get("server.port") == svc.port}
    assert len(rounds) >= ROUNDS, f"the agent exported {ROUNDS} rounds in {len(rounds)} calls"
