"""Traceparent injection (`propagation.inject_http1`), one node: the kernel writes a
`traceparent` into the plaintext HTTP/1 requests of pure clients, and the agent's CLIENT span
of each request has exactly the ids the server received.

The agent runs with injection on, its sockops program attached to a cgroup v2 directory of
this module's own; the clients (apps/inject_client.py, curl, a Node.js client) are started
inside it, the server (apps/header_echo.py, which answers with the headers and body it
received) outside it. For every request the test compares what the server received with the
spans the agent exported:
- injected: exactly one well-formed traceparent; its trace id and parent id are the CLIENT
  span's trace and span id; the CLIENT span is a root; the SERVER span (same node, so also
  stitched) is the CLIENT span's child — the header and the stitching agree;
- keep-alive connections, Content-Length and chunked request bodies and chunked responses
  arrive intact on both ends (the server echoes the body; the client checks it);
- many threads at once, each on its own connection: each request carries its own ids;
- two requests pipelined in one write: only the first is injected, the second keeps ids of
  the agent's own and is counted;
- a request whose head is split over two writes is not injected, and counted;
- curl, Node.js and asyncio clients, and an nginx reverse proxy inside the injected cgroup
  (its upstream socket enters the sockhash: it connects while serving), all answered promptly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.agent import Agent
from harness.inject import agent_metrics, cgroup2_root, parse_tp, traceparents
from harness.procs import free_port, wait_until
from harness.spans import KIND_CLIENT, KIND_SERVER, fmt_spans
from otlp_receiver import OtlpReceiver

APPS = Path(__file__).parent / "apps"
PY = sys.executable


class Node:
    """The agent with injection on and the cgroup its clients run in."""

    def __init__(self, agent_bin: Path, receiver: OtlpReceiver, workdir: Path) -> None:
        self.cgroup = cgroup2_root() / f"e2e-inject-{os.getpid()}"
        self.cgroup.mkdir(exist_ok=True)
        self.metrics_port = free_port()
        cfg = workdir / "agent.yaml"
        cfg.write_text(
            # This process polls the agent's /metrics: its own calls are not the test's.
            f"processes:\n  exclude_pids: [{os.getpid()}]\n"
            "propagation:\n"
            "  inject_http1: true\n"
            f"  cgroup: {self.cgroup}\n"
            "telemetry:\n"
            f"  listen: 127.0.0.1:{self.metrics_port}\n")
        self.workdir = workdir
        self.agent = Agent(agent_bin, workdir, receiver.endpoint, name="agent-inject",
                           config=cfg)
        assert "traceparent injection on" in self.agent.proc.stderr(), self.agent.stderr_tail()

    def in_cgroup(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        """Runs argv inside the cgroup (it joins before exec, so before its first connect)."""
        wrapped = ["sh", "-c", f'echo $$ > {self.cgroup}/cgroup.procs && exec "$@"', "sh", *argv]
        return subprocess.run(wrapped, capture_output=True, text=True, timeout=timeout,
                              check=True)

    def metric(self, name: str) -> int:
        got = agent_metrics(self.metrics_port)
        assert name in got, f"{name} not in /metrics"
        return got[name]

    def close(self) -> int:
        code = self.agent.stop()
        procs = (self.cgroup / "cgroup.procs").read_text().split()
        for p in procs:
            try:
                os.kill(int(p), 9)
            except ProcessLookupError:
                pass
        wait_until(lambda: not (self.cgroup / "cgroup.procs").read_text().split(), 5,
                   "the test cgroup to empty")
        self.cgroup.rmdir()
        return code


@pytest.fixture(scope="module")
def node(agent_bin: Path, receiver: OtlpReceiver, workroot: Path):
    d = workroot / "inject"
    d.mkdir(exist_ok=True)
    n = Node(agent_bin, receiver, d)
    try:
        yield n
    finally:
        code = n.close()
        shutil.rmtree(d, ignore_errors=True)
    assert code == 0, f"agent exited with {code}"


@pytest.fixture
def server():
    p = subprocess.Popen([PY, str(APPS / "header_echo.py")], stdout=subprocess.PIPE, text=True)
    port = int(p.stdout.readline())
    try:
        yield p.pid, port
    finally:
        p.kill()
        p.wait()


def spans_for(receiver: OtlpReceiver, paths: set[str], client_pid: int, server_pid: int,
              timeout: float = 15) -> dict[tuple[int, str], object]:
    """The CLIENT span (client_pid) and SERVER span (server_pid) of each path, by (kind, path)."""
    def found():
        out = {}
        for s in receiver.spans():
            path = s.attr("url.path")
            if path not in paths:
                continue
            if s.kind == KIND_CLIENT and s.pid == client_pid:
                out[(KIND_CLIENT, path)] = s
            elif s.kind == KIND_SERVER and s.pid == server_pid:
                out[(KIND_SERVER, path)] = s
        return out
    wait_until(lambda: len(found()) == 2 * len(paths), timeout,
               f"CLIENT and SERVER spans of {sorted(paths)}")
    return found()


def run_client(node: Node, port: int, *args: str) -> tuple[int, list[dict]]:
    """Runs apps/inject_client.py in the cgroup; returns its pid and its rows."""
    # The pid is the shell's, which execs the client: the same process.
    r = node.in_cgroup(["sh", "-c", 'echo "pid $$"; exec "$@"', "sh",
                        PY, str(APPS / "inject_client.py"), str(port), *args])
    lines = r.stdout.splitlines()
    pid = int(lines[0].split()[1])
    return pid, [json.loads(line) for line in lines[1:]]


def assert_injected(row: dict, spans: dict) -> None:
    tps = traceparents(row["headers"])
    assert len(tps) == 1, f"exactly one traceparent: {row}"
    trace, parent, flags = parse_tp(tps[0])
    c = spans[(KIND_CLIENT, row["path"].split("?")[0])]
    s = spans[(KIND_SERVER, row["path"].split("?")[0])]
    ctx = fmt_spans([c, s])
    assert (c.trace_id, c.span_id) == (trace, parent), f"injected ids = CLIENT span\n{tps}\n{ctx}"
    assert c.parent_span_id == "", f"a pure client's CLIENT span is a root\n{ctx}"
    assert int(flags, 16) & 1 == 1, "the default sampler samples every root"
    assert s.trace_id == trace and s.parent_span_id == c.span_id, f"SERVER under CLIENT\n{ctx}"
    # The header went right after the request line: before everything the client wrote.
    assert row["headers"][0][0].lower() == "traceparent", row["headers"]


def test_keepalive_bodies_and_chunked(node: Node, server, receiver: OtlpReceiver) -> None:
    spid, port = server
    before = node.metric("agent_kernel_traceparent_injected_total")
    pid, rows = run_client(node, port, "keepalive")
    assert [r["rid"] for r in rows] == ["get", "cl", "chunked-req", "chunked-resp"]
    assert all(r["status"] == 200 and r["body_ok"] for r in rows), rows
    spans = spans_for(receiver, {r["path"] for r in rows}, pid, spid)
    for r in rows:
        assert_injected(r, spans)
    assert len({spans[(KIND_CLIENT, r["path"])].trace_id for r in rows}) == 4, "one root each"
    # The body sizes the agent reports are the application's, not counting the header.
    cl = spans[(KIND_CLIENT, "/ka/cl")]
    assert cl.attr("http.request.body.size") in (None, 3002), cl.attributes
    wait_until(lambda: node.metric("agent_kernel_traceparent_injected_total") >= before + 4, 5,
               "the injected counter")


def test_concurrent_clients_each_get_their_own_ids(node: Node, server,
                                                    receiver: OtlpReceiver) -> None:
    spid, port = server
    pid, rows = run_client(node, port, "concurrent", "8", "5")
    assert len(rows) == 40 and all(r["status"] == 200 and r["body_ok"] for r in rows), rows
    spans = spans_for(receiver, {r["path"] for r in rows}, pid, spid, timeout=30)
    for r in rows:
        assert_injected(r, spans)
    assert len({spans[(KIND_CLIENT, r["path"])].span_id for r in rows}) == 40


def test_pipelined_only_the_first_is_injected(node: Node, server,
                                              receiver: OtlpReceiver) -> None:
    spid, port = server
    before = node.metric("agent_inject_pipelined_not_injected_total")
    pid, rows = run_client(node, port, "pipelined")
    assert [r["rid"] for r in rows] == ["pipe-1", "pipe-2"]
    spans = spans_for(receiver, {"/pipe/1", "/pipe/2"}, pid, spid)
    assert_injected(rows[0], spans)
    assert traceparents(rows[1]["headers"]) == [], rows[1]
    c2 = spans[(KIND_CLIENT, "/pipe/2")]
    assert c2.span_id != spans[(KIND_CLIENT, "/pipe/1")].span_id
    wait_until(lambda: node.metric("agent_inject_pipelined_not_injected_total") >= before + 1,
               5, "the pipelined counter")


def test_split_head_is_not_injected_and_counted(node: Node, server,
                                                receiver: OtlpReceiver) -> None:
    spid, port = server
    before = node.metric("agent_kernel_inject_skipped_head_incomplete_total")
    pid, rows = run_client(node, port, "split")
    assert traceparents(rows[0]["headers"]) == [], rows
    spans = spans_for(receiver, {"/split"}, pid, spid)
    c, s = spans[(KIND_CLIENT, "/split")], spans[(KIND_SERVER, "/split")]
    assert s.trace_id == c.trace_id and s.parent_span_id == c.span_id, "same-node stitching"
    wait_until(lambda: node.metric("agent_kernel_inject_skipped_head_incomplete_total")
               >= before + 1, 5, "the head-incomplete counter")


ASYNCIO_CLIENT = r"""
import asyncio, json, os, sys
async def main():
    print("pid", os.getpid(), flush=True)
    r, w = await asyncio.open_connection("127.0.0.1", int(sys.argv[1]))
    for i in range(3):
        w.write(f"GET /asyncio/{i} HTTP/1.1\r\nHost: e2e\r\n\r\n".encode())
        await w.drain()
        n = 0
        while (line := await r.readline()) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                n = int(line.split(b":")[1])
        print((await r.readexactly(n)).decode(), flush=True)
    w.close()
    await w.wait_closed()
asyncio.run(main())
"""


def test_curl_node_and_asyncio_clients(node: Node, server, receiver: OtlpReceiver) -> None:
    """Real clients of their own kind through an injected socket: curl (sendto), Node.js
    (libuv) and asyncio (epoll: the FIONREAD concern of kernels >= 6.12), several keep-alive
    requests each, every one answered in full."""
    spid, port = server
    r = node.in_cgroup(["sh", "-c", 'echo "pid $$"; exec "$@"', "sh", "curl", "-sS",
                        f"http://127.0.0.1:{port}/curl/1", f"http://127.0.0.1:{port}/curl/2"])
    lines = r.stdout.splitlines()
    cpid = int(lines[0].split()[1])
    docs = [json.loads(x) for x in "".join(lines[1:]).replace("}{", "}\n{").splitlines()]
    spans = spans_for(receiver, {"/curl/1", "/curl/2"}, cpid, spid)
    for d in docs:
        assert_injected(d, spans)
    if shutil.which("node") is None:
        pytest.fail("node is not installed: the Node.js half of this test cannot run")
    js = (
        "const http=require('http');const a=new http.Agent({keepAlive:true,maxSockets:1});"
        f"let n=0;function go(i){{http.get({{host:'127.0.0.1',port:{port},path:'/node/'+i,agent:a}},"
        "r=>{let b='';r.on('data',c=>b+=c);r.on('end',()=>{console.log(b);"
        "if(++n<3)go(n);else a.destroy();});});}"
        "console.log('pid '+process.pid);go(0);")
    r = node.in_cgroup(["node", "-e", js])
    lines = r.stdout.splitlines()
    npid = int(lines[0].split()[1])
    docs = [json.loads(x) for x in lines[1:]]
    assert [d["path"] for d in docs] == ["/node/0", "/node/1", "/node/2"]
    spans = spans_for(receiver, {d["path"] for d in docs}, npid, spid)
    for d in docs:
        assert_injected(d, spans)
    r = node.in_cgroup([PY, "-c", ASYNCIO_CLIENT, str(port)])
    lines = r.stdout.splitlines()
    apid = int(lines[0].split()[1])
    docs = [json.loads(x) for x in lines[1:]]
    assert [d["path"] for d in docs] == ["/asyncio/0", "/asyncio/1", "/asyncio/2"]
    spans = spans_for(receiver, {d["path"] for d in docs}, apid, spid)
    for d in docs:
        assert_injected(d, spans)


NGINX_CONF = """daemon off;
master_process off;
worker_processes 1;
error_log stderr;
pid {prefix}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream echo {{ server 127.0.0.1:{upstream}; keepalive 4; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def test_nginx_hop_inside_the_cgroup(node: Node, server, receiver: OtlpReceiver) -> None:
    """curl → nginx (reverse proxy, itself in the injected cgroup) → header_echo. nginx
    connects upstream while its worker serves curl's request, so the upstream socket enters
    the sockhash (a serving process's connect while serving) and nginx still answers promptly
    (the FIONREAD change of kernels >= 6.12 does not stall it here). nginx forwards curl's
    injected traceparent, so its own request is not injected again (counted), and the trace
    is one across all three."""
    if shutil.which("nginx") is None:
        pytest.fail("nginx is not installed (apt-get install nginx-light)", pytrace=False)
    spid, up = server
    prefix = node.workdir / "nginx"
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / d).mkdir(parents=True, exist_ok=True)
    port = free_port()
    (prefix / "nginx.conf").write_text(NGINX_CONF.format(prefix=prefix, port=port, upstream=up))
    has_tp = node.metric("agent_kernel_inject_skipped_has_traceparent_total")
    ngx = subprocess.Popen(["sh", "-c", f'echo $$ > {node.cgroup}/cgroup.procs && exec "$@"',
                            "sh", "nginx", "-e", "stderr", "-p", str(prefix), "-c",
                            str(prefix / "nginx.conf")], stderr=subprocess.PIPE)
    try:
        wait_until(lambda: (prefix / "nginx.pid").exists(), 10, "nginx to start")
        urls = [f"http://127.0.0.1:{port}/ngx/{i}" for i in range(3)]
        start = time.monotonic()
        r = node.in_cgroup(["sh", "-c", 'echo "pid $$"; exec "$@"', "sh", "curl", "-sS",
                            "--max-time", "5", *urls], timeout=20)
        assert time.monotonic() - start < 5, "nginx stalled"
        lines = r.stdout.splitlines()
        cpid = int(lines[0].split()[1])
        docs = [json.loads(x) for x in "".join(lines[1:]).replace("}{", "}\n{").splitlines()]
        assert [d["path"] for d in docs] == [f"/ngx/{i}" for i in range(3)]
        paths = {d["path"] for d in docs}

        def hop_spans():
            out = {}
            for s in receiver.spans():
                if s.attr("url.path") in paths:
                    out[(s.pid, s.kind, s.attr("url.path"))] = s
            return out
        wait_until(lambda: len(hop_spans()) == 4 * len(paths), 15,
                   "curl CLIENT, nginx SERVER and CLIENT, echo SERVER spans")
        spans = hop_spans()
        for d in docs:
            tps = traceparents(d["headers"])
            assert len(tps) == 1, d
            trace, parent, _ = parse_tp(tps[0])
            p = d["path"]
            curl = spans[(cpid, KIND_CLIENT, p)]
            ngx_srv = spans[(ngx.pid, KIND_SERVER, p)]
            ngx_cli = spans[(ngx.pid, KIND_CLIENT, p)]
            echo = spans[(spid, KIND_SERVER, p)]
            ctx = fmt_spans([curl, ngx_srv, ngx_cli, echo])
            assert (curl.trace_id, curl.span_id) == (trace, parent), f"{tps}\n{ctx}"
            assert ngx_srv.parent_span_id == curl.span_id, ctx
            assert {curl.trace_id, ngx_srv.trace_id, ngx_cli.trace_id, echo.trace_id} == {trace}, ctx
        wait_until(lambda: node.metric("agent_kernel_inject_skipped_has_traceparent_total")
                   >= has_tp + 3, 5, "nginx's forwarded requests to count as carrying one")
    finally:
        ngx.kill()
        ngx.wait()
