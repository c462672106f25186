"""Two nodes, one agent each, one trace: traceparent injection (`propagation.inject_http1`)
carries the trace across nodes through services that send no trace headers themselves.

Each "node" is a network namespace with its own address, joined to the other by a veth pair,
and a cgroup v2 directory its processes run in; each agent traces only its node's processes
(`processes.pids`) and attaches its sockops program to its node's cgroup. The chain:

    node 1: inject_client.py  --HTTP/1-->  node 2: relay.py  --HTTP/1-->  node 1: header_echo.py
            (pure client)                  (serves, calls downstream)     (answers)

None of them knows about tracing. For each request the test reads what relay.py and
header_echo.py received (both echo the headers) and the spans both agents exported:
- the client's CLIENT span is a root; its ids are in the traceparent relay.py got;
- relay.py's SERVER span is its child (agent 2, from that header);
- relay.py's CLIENT span for the downstream call is the SERVER span's child, and its ids are
  in the traceparent header_echo.py got: the kernel of node 2 wrote the trace of the request
  the relay's thread was serving (stage 2);
- header_echo.py's SERVER span (agent 1) is that CLIENT span's child: four spans, two agents,
  one trace with the right parents.
Cases: keep-alive connections with Content-Length and chunked bodies, 8 clients x 5 requests
in flight at once, two requests pipelined in one write (the relay reads both at once: its
kernel cannot tell which request a call is for, so the downstream call is not injected, and
counted), a head split over two writes (injected nowhere, counted), and a caller no agent
traces (the relay's SERVER span starts the trace; agent 2 and node 2's kernel derive the same
trace id, so relay -> echo is still one trace). And an asyncio relay with many requests in
flight on its one thread: whatever its kernel injected carries the right trace, and once the
thread is known to be an event loop nothing is injected.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.agent import Agent
from harness.inject import agent_metrics, cgroup2_root, parse_tp, traceparents
from harness.procs import free_port, wait_until
from harness.spans import KIND_CLIENT, KIND_SERVER, fmt_spans
from otlp_receiver import OtlpReceiver

APPS = Path(__file__).parent / "apps"
PY = sys.executable
ADDR = {1: "10.231.0.1", 2: "10.231.0.2"}
CASES = {
    "keepalive": ("keepalive",),
    "concurrent": ("concurrent", "8", "5"),
    "pipelined": ("pipelined",),
    "split": ("split",),
}


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


class Nodes:
    """Two network namespaces joined by a veth pair, a cgroup each, the three services, and
    one agent per node."""

    def __init__(self, agent_bin: Path, receiver: OtlpReceiver, workdir: Path) -> None:
        tag = os.getpid()
        self.ns = {n: f"e2e-node{n}-{tag}" for n in (1, 2)}
        self.cgroup = {n: cgroup2_root() / f"e2e-node{n}-{tag}" for n in (1, 2)}
        self.procs: list[subprocess.Popen] = []
        self.agents: dict[int, Agent] = {}
        self.metrics: dict[int, int] = {}
        self.agent_bin, self.receiver, self.workdir = agent_bin, receiver, workdir

    def start(self) -> None:
        """Makes the nodes, starts the services, then the agents (`close` undoes any part)."""
        agent_bin, receiver, workdir = self.agent_bin, self.receiver, self.workdir
        tag = os.getpid()
        for n in (1, 2):
            sh("ip", "netns", "add", self.ns[n])
            self.cgroup[n].mkdir(exist_ok=True)
        v1, v2 = f"e2ev1-{tag}"[:15], f"e2ev2-{tag}"[:15]
        sh("ip", "link", "add", v1, "type", "veth", "peer", "name", v2)
        for n, dev in ((1, v1), (2, v2)):
            sh("ip", "link", "set", dev, "netns", self.ns[n])
            sh("ip", "-n", self.ns[n], "addr", "add", f"{ADDR[n]}/24", "dev", dev)
            sh("ip", "-n", self.ns[n], "link", "set", dev, "up")
            sh("ip", "-n", self.ns[n], "link", "set", "lo", "up")
        env = {"PYTHONPATH": str(APPS)}
        self.echo = self.spawn(1, [PY, str(APPS / "header_echo.py")], ECHO_HOST=ADDR[1], **env)
        echo_port = int(self.echo.stdout.readline())
        self.relay = self.spawn(2, [PY, str(APPS / "relay.py"), ADDR[1], str(echo_port)],
                                ECHO_HOST=ADDR[2], **env)
        self.relay_port = int(self.relay.stdout.readline())
        self.async_relay = self.spawn(2, [PY, str(APPS / "async_relay.py"), ADDR[1],
                                          str(echo_port)], ECHO_HOST=ADDR[2])
        async_port = int(self.async_relay.stdout.readline())
        # Clients start now, waiting on stdin, so that node 1's agent knows their pids.
        targets = {name: (self.relay_port, args) for name, args in CASES.items()}
        targets["async"] = (async_port, ("concurrent", "8", "3"))
        self.clients = {
            name: self.spawn(1, [PY, str(APPS / "inject_client.py"), str(port), *args],
                             INJECT_HOST=ADDR[2], INJECT_WAIT="1")
            for name, (port, args) in targets.items()
        }
        pids = {1: [self.echo.pid, *(c.pid for c in self.clients.values())],
                2: [self.relay.pid, self.async_relay.pid]}
        for n in (1, 2):
            self.metrics[n] = free_port()
            cfg = workdir / f"agent-node{n}.yaml"
            cfg.write_text(
                f"processes:\n  pids: {pids[n]}\n"
                "propagation:\n"
                "  inject_http1: true\n"
                f"  cgroup: {self.cgroup[n]}\n"
                "telemetry:\n"
                f"  listen: 127.0.0.1:{self.metrics[n]}\n")
            self.agents[n] = Agent(agent_bin, workdir, receiver.endpoint, name=f"agent-node{n}",
                                   config=cfg)
            assert "traceparent injection on" in self.agents[n].proc.stderr(), \
                self.agents[n].stderr_tail()

    def spawn(self, node: int, argv: list[str], **env: str) -> subprocess.Popen:
        """Starts argv in the node's cgroup (joined before exec, so before any connect) and
        network namespace; `ip netns exec` execs, so the pid is the program's."""
        wrapped = ["sh", "-c",
                   f'echo $$ > {self.cgroup[node]}/cgroup.procs && exec ip netns exec '
                   f'{self.ns[node]} "$@"', "sh", *argv]
        p = subprocess.Popen(wrapped, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, **env})
        self.procs.append(p)
        return p

    def run_client(self, case: str) -> list[dict]:
        """Lets the waiting client of `case` go; its JSON rows."""
        out, _ = self.clients[case].communicate("go\n", timeout=60)
        assert self.clients[case].returncode == 0, f"client {case} failed"
        return [json.loads(line) for line in out.splitlines()]

    def metric(self, node: int, name: str) -> int:
        got = agent_metrics(self.metrics[node])
        assert name in got, f"{name} not in node {node}'s /metrics"
        return got[name]

    def inject_counters(self, node: int) -> dict[str, int]:
        """The node's injection and server-context counters, for failure messages."""
        return {k: v for k, v in agent_metrics(self.metrics[node]).items()
                if k.startswith(("agent_kernel_inject", "agent_kernel_server",
                                 "agent_kernel_traceparent", "agent_inject"))}

    def close(self) -> list[int]:
        codes = [a.stop() for a in self.agents.values()]
        for p in self.procs:
            p.kill()
            p.wait()
        for n in (1, 2):
            subprocess.run(["ip", "netns", "del", self.ns[n]], capture_output=True)
            if self.cgroup[n].exists():
                wait_until(lambda: not (self.cgroup[n] / "cgroup.procs").read_text().split(),
                           5, "the node's cgroup to empty")
                self.cgroup[n].rmdir()
        return codes


@pytest.fixture(scope="module")
def nodes(agent_bin: Path, receiver: OtlpReceiver, workroot: Path):
    if subprocess.run(["ip", "-V"], capture_output=True).returncode != 0:
        pytest.fail("iproute2 is not installed: the two nodes cannot be made", pytrace=False)
    d = workroot / "two-nodes"
    d.mkdir(exist_ok=True)
    n = Nodes(agent_bin, receiver, d)
    try:
        n.start()
        yield n
    finally:
        codes = n.close()
    assert codes == [0, 0], f"agents exited with {codes}"


def chain_spans(receiver: OtlpReceiver, nodes: Nodes, client_pid: int, paths: set[str],
                timeout: float = 20, relay_pid: int | None = None, down: str = "/down"
                ) -> dict[tuple[str, str], object]:
    """By (hop, path): the client's CLIENT span, the relay's SERVER and CLIENT spans, the
    echo's SERVER span of each request path (downstream paths are <down><path>)."""
    relay_pid = relay_pid or nodes.relay.pid
    want = {
        (client_pid, KIND_CLIENT, ""): "client",
        (relay_pid, KIND_SERVER, ""): "relay_server",
        (relay_pid, KIND_CLIENT, down): "relay_client",
        (nodes.echo.pid, KIND_SERVER, down): "echo",
    }

    def found():
        out: dict[tuple[str, str], list] = {}
        for s in receiver.spans():
            path = s.attr("url.path") or ""
            prefix = down if path.startswith(down + "/") else ""
            hop = want.get((s.pid, s.kind, prefix))
            if hop and path[len(prefix):] in paths:
                out.setdefault((hop, path[len(prefix):]), []).append(s)
        return out
    wait_until(lambda: len(found()) == 4 * len(paths), timeout,
               f"the four spans of each of {sorted(paths)}")
    got = found()
    dup = {k: len(v) for k, v in got.items() if len(v) != 1}
    # Each process is traced by its own node's agent only: one span per hop, not two.
    assert not dup, f"spans reported more than once: {dup}"
    return {k: v[0] for k, v in got.items()}


def assert_one_trace(row: dict, spans: dict) -> None:
    """All four spans of the row's request are one trace with the right parents, and the ids
    in the headers each service received are the CLIENT spans' that sent them."""
    path = row["path"].split("?")[0]
    c, rs, rc, e = (spans[(hop, path)] for hop in ("client", "relay_server", "relay_client",
                                                   "echo"))
    ctx = fmt_spans([c, rs, rc, e])
    tp_in = traceparents(row["headers"])
    tp_down = traceparents(row["downstream"]["headers"])
    assert len(tp_in) == 1 and len(tp_down) == 1, f"one traceparent each hop\n{row}\n{ctx}"
    trace, parent, _ = parse_tp(tp_in[0])
    assert (c.trace_id, c.span_id, c.parent_span_id) == (trace, parent, ""), \
        f"node 1 injected the client's CLIENT span, a root\n{tp_in}\n{ctx}"
    assert (rs.trace_id, rs.parent_span_id) == (trace, c.span_id), f"relay SERVER\n{ctx}"
    trace2, parent2, _ = parse_tp(tp_down[0])
    assert (trace2, parent2) == (trace, rc.span_id), \
        f"node 2 injected the relay's CLIENT span, in the client's trace\n{tp_down}\n{ctx}"
    assert (rc.trace_id, rc.parent_span_id) == (trace, rs.span_id), f"relay CLIENT\n{ctx}"
    assert (e.trace_id, e.parent_span_id) == (trace, rc.span_id), f"echo SERVER\n{ctx}"


def test_keepalive_and_bodies_one_trace_across_both_agents(nodes: Nodes,
                                                           receiver: OtlpReceiver) -> None:
    rows = nodes.run_client("keepalive")
    assert [r["rid"] for r in rows] == ["get", "cl", "chunked-req", "chunked-resp"]
    assert all(r["status"] == 200 and r["body_ok"] for r in rows), rows
    assert rows[1]["downstream"]["body"] == "x=" + "y" * 3000, "the relay forwarded the body"
    spans = chain_spans(receiver, nodes, nodes.clients["keepalive"].pid,
                        {r["path"] for r in rows})
    for r in rows:
        if r["rid"] == "chunked-req" and not traceparents(r["downstream"]["headers"]):
            # The relay's read held the head and chunks: the kernel could not know where the
            # request ends, so it did not inject. Then the spans must not claim a parent
            # they cannot know either: the echo's SERVER span is not in the client's trace.
            e = spans[("echo", r["path"])]
            assert e.trace_id != spans[("client", r["path"])].trace_id
            continue
        assert_one_trace(r, spans)
    assert nodes.metric(2, "agent_kernel_traceparent_injected_in_request_total") >= 3


def test_forty_in_flight_each_its_own_trace(nodes: Nodes, receiver: OtlpReceiver) -> None:
    rows = nodes.run_client("concurrent")
    assert len(rows) == 40 and all(r["status"] == 200 and r["body_ok"] for r in rows), rows
    spans = chain_spans(receiver, nodes, nodes.clients["concurrent"].pid,
                        {r["path"] for r in rows}, timeout=40)
    try:
        for r in rows:
            assert_one_trace(r, spans)
    except AssertionError as e:
        raise AssertionError(f"{e}\nnode 1: {nodes.inject_counters(1)}\n"
                             f"node 2: {nodes.inject_counters(2)}") from None
    assert len({spans[("client", r["path"])].trace_id for r in rows}) == 40


def test_pipelined_at_the_relay_is_not_injected_and_counted(nodes: Nodes,
                                                            receiver: OtlpReceiver) -> None:
    unknown = nodes.metric(2, "agent_kernel_server_requests_unknown_total")
    rows = nodes.run_client("pipelined")
    assert [r["rid"] for r in rows] == ["pipe-1", "pipe-2"]
    spans = chain_spans(receiver, nodes, nodes.clients["pipelined"].pid, {"/pipe/1", "/pipe/2"})
    assert len(traceparents(rows[0]["headers"])) == 1, "the client's first request: injected"
    for r in rows:
        p = r["path"]
        ctx = fmt_spans([spans[(h, p)] for h in ("client", "relay_server", "relay_client",
                                                 "echo")])
        assert traceparents(r["downstream"]["headers"]) == [], f"not injected at the relay\n{ctx}"
        # The relay's own spans still hang together in process; the echo starts anew.
        rs, rc = spans[("relay_server", p)], spans[("relay_client", p)]
        assert rc.parent_span_id in ("", rs.span_id), ctx
        assert spans[("echo", p)].parent_span_id == "", ctx
    assert nodes.metric(2, "agent_kernel_server_requests_unknown_total") > unknown


def test_split_head_is_injected_nowhere_and_counted(nodes: Nodes,
                                                   receiver: OtlpReceiver) -> None:
    """The client's head in two writes: node 1 does not inject it; the relay reads it in two
    reads, so node 2 cannot tell where it ends and does not inject its call either. Both are
    counted, and no span claims a parent it cannot know."""
    incomplete = nodes.metric(1, "agent_kernel_inject_skipped_head_incomplete_total")
    unknown = nodes.metric(2, "agent_kernel_server_requests_unknown_total")
    rows = nodes.run_client("split")
    spans = chain_spans(receiver, nodes, nodes.clients["split"].pid, {"/split"})
    assert traceparents(rows[0]["headers"]) == [], rows
    assert traceparents(rows[0]["downstream"]["headers"]) == [], rows
    c, rs, rc, e = (spans[(h, "/split")] for h in ("client", "relay_server", "relay_client",
                                                   "echo"))
    ctx = fmt_spans([c, rs, rc, e])
    assert rs.parent_span_id == "" and rs.trace_id != c.trace_id, ctx
    assert (rc.trace_id, rc.parent_span_id) == (rs.trace_id, rs.span_id), "in process\n" + ctx
    assert e.parent_span_id == "" and e.trace_id != rs.trace_id, ctx
    assert nodes.metric(1, "agent_kernel_inject_skipped_head_incomplete_total") > incomplete
    assert nodes.metric(2, "agent_kernel_server_requests_unknown_total") > unknown


def test_untraced_caller_the_relay_starts_the_trace_both_sides_derive(
        nodes: Nodes, receiver: OtlpReceiver) -> None:
    """A caller no agent traces (curl on node 1, not in node 1's pids): the relay's request
    has no traceparent. Agent 2 derives the SERVER span's trace id from the connection and
    the request's record time; node 2's kernel derived the same one for the call it injected,
    so relay -> echo is one trace across the agents."""
    paths = [f"/untraced/{i}" for i in range(3)]
    curl = nodes.spawn(1, ["curl", "-sS", "--max-time", "10",
                           *(f"http://{ADDR[2]}:{nodes.relay_port}{p}" for p in paths)])
    out, _ = curl.communicate(timeout=30)
    docs = [json.loads(x) for x in out.replace("}{", "}\n{").splitlines()]
    assert [d["path"] for d in docs] == paths, out

    def hops():
        got = {}
        for s in receiver.spans():
            path = s.attr("url.path") or ""
            key = {(nodes.relay.pid, KIND_SERVER): "relay_server",
                   (nodes.relay.pid, KIND_CLIENT): "relay_client",
                   (nodes.echo.pid, KIND_SERVER): "echo"}.get((s.pid, s.kind))
            if key and path.removeprefix("/down") in paths:
                got.setdefault((key, path.removeprefix("/down")), []).append(s)
        return got
    wait_until(lambda: len(hops()) == 3 * len(paths), 20, "relay and echo spans")
    got = hops()
    for d in docs:
        (rs,), (rc,), (e,) = (got[(h, d["path"])] for h in ("relay_server", "relay_client",
                                                            "echo"))
        ctx = fmt_spans([rs, rc, e])
        assert traceparents(d["headers"]) == [], d
        (tp,) = traceparents(d["downstream"]["headers"])
        trace, parent, _ = parse_tp(tp)
        assert rs.parent_span_id == "" and rs.trace_id == trace, f"derived alike\n{tp}\n{ctx}"
        assert (rc.trace_id, rc.span_id, rc.parent_span_id) == (trace, parent, rs.span_id), ctx
        assert (e.trace_id, e.parent_span_id) == (trace, rc.span_id), ctx
    assert not any(s.pid == curl.pid for s in receiver.spans()), "curl is traced by no agent"


def test_event_loop_relay_never_passes_on_a_wrong_trace(nodes: Nodes,
                                                        receiver: OtlpReceiver) -> None:
    """The asyncio relay serves 8 connections x 3 requests on one thread, several in flight at
    once. Its kernel injects a call only while the thread has one request open; once it has
    read a second one before answering the first, the thread is an event loop and nothing it
    sends is injected again. Whatever was injected carries the right request's trace: no echo
    SERVER span joins another request's trace, and none claims a parent it cannot know."""
    concurrent = nodes.metric(2, "agent_kernel_server_threads_concurrent_total")
    rows = nodes.run_client("async")
    assert len(rows) == 24 and all(r["status"] == 200 and r["body_ok"] for r in rows), rows
    spans = chain_spans(receiver, nodes, nodes.clients["async"].pid, {r["path"] for r in rows},
                        timeout=40, relay_pid=nodes.async_relay.pid, down="/adown")
    injected = wrong = 0
    for r in rows:
        p = r["path"]
        c, rs, rc, e = (spans[(h, p)] for h in ("client", "relay_server", "relay_client",
                                                "echo"))
        ctx = fmt_spans([c, rs, rc, e])
        assert (rs.trace_id, rs.parent_span_id) == (c.trace_id, c.span_id), ctx
        tps = traceparents(r["downstream"]["headers"])
        if tps:
            injected += 1
            trace, parent, _ = parse_tp(tps[0])
            wrong += trace != c.trace_id
            assert (trace, parent) == (rc.trace_id, rc.span_id), ctx
        # In process the relay's CLIENT span has its own request's SERVER span or nothing.
        assert rc.parent_span_id in ("", rs.span_id), ctx
        if e.trace_id == c.trace_id:
            assert e.parent_span_id == rc.span_id, ctx
        else:
            assert e.parent_span_id in ("", rc.span_id), ctx
    print(f"event-loop relay: {injected}/24 downstream calls injected, {wrong} wrong")
    assert wrong == 0
    assert nodes.metric(2, "agent_kernel_server_threads_concurrent_total") > concurrent


def test_each_agent_traced_only_its_node(nodes: Nodes, receiver: OtlpReceiver) -> None:
    node1 = {nodes.echo.pid, *(c.pid for c in nodes.clients.values())}
    pids = {s.pid for s in receiver.spans()
            if s.pid in node1 | {nodes.relay.pid, nodes.async_relay.pid}}
    assert nodes.relay.pid in pids and nodes.echo.pid in pids, pids
    for n in (1, 2):
        assert nodes.metric(n, "agent_inject_cause_mismatch_total") == 0, \
            f"node {n}: kernel and user space disagreed about a call's request"
