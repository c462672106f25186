"""W3C trace context from `traceparent`/`tracestate` headers, exactly, under concurrency.

apps/tp_client.py opens 40 connections to the Python service at once and sends on each, at
the same moment, `GET /slow/<rid>?ms=300` with its own random traceparent
`00-<trace id>-<parent id>-01` and tracestate `e2e=r<rid>`; the request id <rid> in the path
tells which request a span belongs to. Every request is in flight together with the others.

- `test_header_alone_decides_the_server_context`: the agent traces only the server
  (`--pid`), so the server's span has no same-node CLIENT span to be stitched to: its trace id
  and parent span id must be exactly those of its own request's header, and its tracestate
  that request's (W3C Trace Context §3.2/§3.3; OTel: the remote parent).
- `test_header_and_stitching_agree`: the agent traces everything: each CLIENT span (from
  tp_client) continues its request's header (that trace, the header's parent id as its
  parent, its tracestate), and the SERVER span is that CLIENT span's child (same-node
  stitching agrees with the header, which names the same trace).

Each module-level test runs its own agent (started after the server: the `--pid` of the
first must exist), so this module does not use the shared `agent` fixture.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.agent import Agent
from harness.expect import LOCALHOST, assert_http_pair, assert_resource
from harness.procs import run
from harness.scenario import APPS, PYTHON, Call, Scenario, Server, app_env
from harness.spans import KIND_CLIENT, KIND_SERVER, assert_attrs, assert_name, fmt_span, only
from otlp_receiver import OtlpReceiver

N = 40
DELAY_MS = 300
UA = "e2e-tpclient/1.0"
TEMPLATE = "/slow/{id}"


@dataclass
class Req:
    rid: str
    trace_id: str
    parent_id: str
    tracestate: str

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.parent_id}-01"

    @property
    def path(self) -> str:
        return f"/slow/{self.rid}"


def new_requests() -> list[Req]:
    return [Req(str(1000 + i), os.urandom(16).hex(), os.urandom(8).hex(), f"e2e=r{1000 + i}")
            for i in range(N)]


@pytest.fixture
def world(agent_bin: Path, receiver: OtlpReceiver, workroot: Path, request):
    """A Scenario whose agent the test starts (`start(*args)`), stopped (exit 0) at the end."""
    d = workroot / request.node.name
    d.mkdir()
    scn = Scenario(receiver, None, d)
    request.node.e2e_scenario = scn  # for the failure report
    agents: list[Agent] = []

    def start(*args: str) -> Agent:
        a = Agent(agent_bin, d, receiver.endpoint, name=f"agent-{len(agents)}", args=args)
        agents.append(a)
        scn.agent = a
        return a

    try:
        yield scn, start
    finally:
        scn.close()
        codes = [a.stop() for a in agents]
        shutil.rmtree(d, ignore_errors=True)
    assert codes == [0] * len(agents), f"agent exit codes {codes}"


def tp_client(scn: Scenario, port: int, reqs: list[Req]) -> Call:
    spec = scn.workdir / "requests.txt"
    spec.write_text("".join(f"{r.rid} {r.traceparent} {r.tracestate}\n" for r in reqs))
    argv = [PYTHON, str(APPS / "tp_client.py"), "--port", str(port), "--requests", str(spec),
            "--ms", str(DELAY_MS)]
    t0 = time.time_ns()
    proc, rc = run("tp_client", argv, scn.workdir, timeout=60, env=app_env())
    t1 = time.time_ns()
    scn.procs.append(proc)
    scn.pids.add(proc.pid)
    rows = [json.loads(line) for line in proc.stdout().splitlines() if line.startswith("{")]
    assert rc == 0 and len(rows) == len(reqs), f"tp_client failed (rc={rc}): {proc.stderr()}"
    assert all(r["status"] == 200 for r in rows), rows
    assert len({r["local_port"] for r in rows}) == len(reqs), "one connection per request"
    # All requests were in flight together: each was sent before any response came back.
    assert max(r["t_sent_ns"] for r in rows) < min(r["t_done_ns"] for r in rows), (
        "the requests did not overlap")
    return Call(proc.pid, rows, t0, t1, "tp_client", "python3")


def max_overlap(spans) -> int:
    """The most spans open at one instant."""
    edges = sorted([(s.start_ns, 1) for s in spans] + [(s.end_ns, -1) for s in spans])
    best = cur = 0
    for _, d in edges:
        cur += d
        best = max(best, cur)
    return best


def check_server_span(s, r: Req, row: dict, svc: Server) -> None:
    __tracebackhide__ = True
    assert_attrs(s, {"http.request.method": "GET", "url.path": r.path,
                     "url.query": "ms=REDACTED", "http.response.status_code": 200,
                     "client.address": LOCALHOST, "network.peer.port": row["local_port"],
                     "server.port": svc.port, "user_agent.original": UA,
                     "http.response.body.size": row["body_size"]})
    assert_name(s, "GET", r.path, TEMPLATE)
    assert_resource(s, svc.service_name, svc.exe, svc.pid)


def test_header_alone_decides_the_server_context(world) -> None:
    scn, start = world
    svc = scn.service()
    start("--pid", str(svc.pid))
    reqs = new_requests()
    call = tp_client(scn, svc.port, reqs)
    rows = {row["rid"]: row for row in call.rows}

    spans = scn.collect(N)  # the client is not traced: one SERVER span per request, no more
    assert {(s.kind, s.pid) for s in spans} == {(KIND_SERVER, svc.pid)}
    for r in reqs:
        s = only(spans, f"request {r.rid}", kind=KIND_SERVER, pid=svc.pid, path=r.path)
        check_server_span(s, r, rows[r.rid], svc)
        assert (s.trace_id, s.parent_span_id) == (r.trace_id, r.parent_id), (
            f"request {r.rid} sent traceparent {r.traceparent}: its SERVER span must be in "
            f"that trace with parent {r.parent_id}\n{fmt_span(s)}")
        assert s.trace_state == r.tracestate, (
            f"tracestate {s.trace_state!r}, the request sent {r.tracestate!r}\n{fmt_span(s)}")
        assert s.span_id != r.parent_id, f"the caller's span id reused\n{fmt_span(s)}"
        assert s.flags & 0xFF == 0x01, f"trace flags 01 not kept\n{fmt_span(s)}"
    assert max_overlap(spans) >= N // 2, "the server did not handle the requests concurrently"


def test_header_and_stitching_agree(world) -> None:
    scn, start = world
    svc = scn.service()
    start()
    reqs = new_requests()
    call = tp_client(scn, svc.port, reqs)
    rows = {row["rid"]: row for row in call.rows}

    spans = scn.collect(2 * N)
    for r in reqs:
        c = only(spans, f"request {r.rid}", kind=KIND_CLIENT, pid=call.pid, path=r.path)
        s = only(spans, f"request {r.rid}", kind=KIND_SERVER, pid=svc.pid, path=r.path)
        row = rows[r.rid]
        assert_http_pair(c, s, client=call, server=svc, method="GET", path=r.path,
                         query=f"ms={DELAY_MS}", template=TEMPLATE, ua=UA,
                         client_port=row["local_port"], response_size=row["body_size"])
        assert (c.trace_id, c.parent_span_id) == (r.trace_id, r.parent_id), (
            f"request {r.rid} sent traceparent {r.traceparent}: its CLIENT span must continue "
            f"it\n{fmt_span(c)}")
        # assert_http_pair: s is c's child, so s is in the header's trace too.
        assert s.trace_id == r.trace_id and s.parent_span_id == c.span_id, fmt_span(s)
        assert (c.trace_state, s.trace_state) == (r.tracestate, r.tracestate), (
            f"tracestate of request {r.rid}: {r.tracestate!r}\n{fmt_span(c)}\n{fmt_span(s)}")
    assert max_overlap([s for s in spans if s.kind == KIND_SERVER]) >= N // 2, (
        "the server did not handle the requests concurrently")
