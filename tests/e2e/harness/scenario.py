"""One test's world: the servers and clients it started, and the spans that belong to it.

A span belongs to the test if it came from a pid the test started, or names one of the test's
(session-unique) server ports, and it ended after the test began. `collect(n)` waits for the
spans, waits a quiet period for extras, then asserts there are exactly `n` and that each one
passes the checks every span must pass (harness.spans.check_common).
"""

from __future__ import annotations

import importlib.util
import json
import os
import string
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from otlp_receiver import OtlpReceiver, ReceivedSpan

from .agent import Agent
from .procs import Proc, free_port, listening_ports, run, wait_until
from .spans import check_common, fmt_spans

APPS = Path(__file__).resolve().parent.parent / "apps"
PYTHON = sys.executable  # the real interpreter, not a pyenv shim script
NGINX = "/usr/sbin/nginx"
CURL_UA = "e2e-curl/1.0"
PYCLIENT_UA = "e2e-pyclient/1.0"
# Per URL: a JSON object of transfer facts, then curl's JSON object of the response headers.
CURL_WRITE_OUT = ('{"http_code":%{http_code},"num_connects":%{num_connects},'
                  '"local_port":%{local_port},"size_download":%{size_download},'
                  '"size_upload":%{size_upload},'
                  '"http_version":"%{http_version}","time_total":%{time_total}}\\n'
                  '%{header_json}\\n')
SPAN_TIMEOUT = 15.0  # generous: a loaded 2-core machine, batch timeout <= 1 s
QUIET = 1.5  # longer than the agent's batch timeout: time for unexpected extra spans to show up
WINDOW_SLACK_NS = 200_000_000  # wall-clock vs. kernel-clock conversion allowance


def _load_service_module():
    spec = importlib.util.spec_from_file_location("e2e_service", APPS / "service.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# apps/service.py as a module, for the exact bodies it sends (CHUNKS, chunked_wire_body, ...).
SERVICE = _load_service_module()


@dataclass
class Server:
    port: int
    pid: int
    proc: Proc
    service_name: str  # the service.name the agent must report
    exe: str  # what process.executable.name must start with
    root: Path | None = None  # nginx document root


@dataclass
class Call:
    """A finished client run: its pid and one result row per request."""
    pid: int
    rows: list[dict]
    t_start_ns: int
    t_end_ns: int
    service_name: str
    exe: str


def json_stream(text: str) -> list:
    """Consecutive JSON values in `text` (curl's -w output spans several lines per value)."""
    dec, values, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return values
        value, i = dec.raw_decode(text, i)
        values.append(value)


def app_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(extra or {})
    return env


@dataclass
class Scenario:
    receiver: OtlpReceiver | None
    agent: Agent | None
    workdir: Path
    t0_ns: int = field(default_factory=time.time_ns)
    pids: set[int] = field(default_factory=set)
    ports: set[int] = field(default_factory=set)
    procs: list[Proc] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    last_spans: list[ReceivedSpan] = field(default_factory=list)
    # Session servers (PostgreSQL, RabbitMQ) the test uses: objects with `name`, `exes`,
    # `mark()`, `pids(mark)` (their processes alive since the mark) and `tail()`. No span may
    # come from them; their log tails go in the report.
    servers: list = field(default_factory=list)
    _server_marks: dict = field(default_factory=dict)
    span_timeout: float = SPAN_TIMEOUT
    quiet: float = QUIET
    _n: int = 0

    def __repr__(self) -> str:
        return f"Scenario(pids={sorted(self.pids)}, ports={sorted(self.ports)})"

    def _name(self, base: str) -> str:
        self._n += 1
        return f"{self._n:02d}-{base}"

    # -- servers --
    def service(self, script: str = "service", env: dict[str, str] | None = None) -> Server:
        """apps/service.py, run as `python3 <script>.py`; service.name is OTEL_SERVICE_NAME
        when given in `env`, else the script name."""
        path = APPS / "service.py"
        if script != "service":
            path = self.workdir / f"{script}.py"
            if not path.exists():
                path.symlink_to(APPS / "service.py")
        port = free_port()
        proc = Proc(self._name(script), [PYTHON, str(path), "--port", str(port)], self.workdir,
                    env=app_env(env))
        self._own(proc, port)
        wait_until(lambda: f"READY {port}" in proc.stdout(), 10, f"{script} to listen", alive=proc)
        svc_name = (env or {}).get("OTEL_SERVICE_NAME", script)
        return Server(port, proc.pid, proc, svc_name, "python3")

    def nginx(self) -> Server:
        port = free_port()
        prefix = self.workdir / f"nginx-{port}"
        (prefix / "www").mkdir(parents=True)
        (prefix / "www" / "index.html").write_text("<html><body>e2e static file</body></html>\n")
        template = string.Template((APPS / "nginx.conf.template").read_text())
        conf = prefix / "nginx.conf"
        conf.write_text(template.substitute(PREFIX=str(prefix), PORT=port))
        proc = self.spawn("nginx", [NGINX, "-e", "stderr", "-p", f"{prefix}/", "-c", str(conf)],
                          port)
        return Server(port, proc.pid, proc, "nginx", "nginx", root=prefix / "www")

    def spawn(self, base: str, argv: list[str], port: int | None = None,
              env: dict[str, str] | None = None) -> Proc:
        """Any long-running process; with `port`, waits until something listens on it."""
        proc = Proc(self._name(base), argv, self.workdir, env=app_env(env))
        self._own(proc, port)
        if port is not None:
            wait_until(lambda: port in listening_ports(), 10, f"{base} to listen", alive=proc)
        return proc

    def use_server(self, srv, port: int) -> None:
        """A session server this test talks to: spans naming its port are the test's, and
        none may come from its own processes."""
        if srv not in self.servers:
            self.servers.append(srv)
            self._server_marks[id(srv)] = srv.mark()
        self.ports.add(port)

    def _own(self, proc: Proc, port: int | None = None) -> None:
        self.procs.append(proc)
        self.pids.add(proc.pid)
        if port is not None:
            self.ports.add(port)

    # -- clients --
    def curl(self, *urls: str, headers: tuple[str, ...] = (), http10: bool = False,
             http2: bool = False, cacert: Path | None = None, data: Path | None = None,
             rc: int = 0) -> Call:
        """One curl process fetching all `urls` (reusing one connection when it can).
        http2: --http2 (h2 over TLS via ALPN), or --http2-prior-knowledge for http:// URLs;
        cacert: the CA to trust for https:// URLs; data: POST this file's bytes to every URL
        (--data-binary; add a `Transfer-Encoding: chunked` header to send it chunked);
        rc: the exit code curl must end with (e.g. 52 "Empty reply from server")."""
        h2 = "--http2-prior-knowledge" if urls and urls[0].startswith("http:") else "--http2"
        version = "--http1.0" if http10 else h2 if http2 else "--http1.1"
        argv = ["curl", version, "-sS", "--max-time", "20", "-A", CURL_UA, "-w", CURL_WRITE_OUT]
        if cacert is not None:
            argv += ["--cacert", str(cacert)]
        for h in headers:
            argv += ["-H", h]
        if data is not None:
            argv += ["--data-binary", f"@{data}"]
        for url in urls:
            argv += ["-o", "/dev/null", url]
        t0 = time.time_ns()
        proc, got_rc = run(self._name("curl"), argv, self.workdir, timeout=30, env=app_env())
        t1 = time.time_ns()
        self._own(proc)
        pid, out, err = proc.pid, proc.stdout(), proc.stderr()
        # per URL: the transfer's variables, then its headers ("000": no response, not JSON)
        values = json_stream(out.replace('"http_code":000,', '"http_code":0,'))
        rows = [dict(v, headers=h) for v, h in zip(values[0::2], values[1::2])]
        assert got_rc == rc and len(rows) == len(urls), (
            f"curl exited with {got_rc}, expected {rc}: {err}\n{out}")
        return Call(pid, rows, t0, t1, "curl", "curl")

    def client(self, port: int, *requests: str, headers: tuple[str, ...] = (),
               ca: Path | None = None) -> Call:
        """apps/client.py: `requests` like "GET /users/1", "POST /echo 1000", on one connection;
        HTTPS trusting the CA `ca` when given."""
        argv = [PYTHON, str(APPS / "client.py"), "--port", str(port)]
        if ca is not None:
            argv += ["--ca", str(ca)]
        for h in headers:
            argv += ["--header", h]
        t0 = time.time_ns()
        proc, rc = run(self._name("client"), argv + list(requests), self.workdir, timeout=30,
                       env=app_env())
        t1 = time.time_ns()
        self._own(proc)
        pid, out, err = proc.pid, proc.stdout(), proc.stderr()
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert rc == 0 and len(rows) == len(requests), f"client failed (rc={rc}): {err}\n{out}"
        return Call(pid, rows, t0, t1, "client", "python3")

    # -- spans --
    def mine(self, s: ReceivedSpan) -> bool:
        return s.end_ns >= self.t0_ns - WINDOW_SLACK_NS and (
            s.pid in self.pids or s.attributes.get("server.port") in self.ports)

    def collect(self, expected: int) -> list[ReceivedSpan]:
        """Exactly the `expected` spans of this test's traffic, each checked by check_common."""
        __tracebackhide__ = True
        assert self.receiver is not None
        try:
            self.receiver.wait_for_spans(self.mine, self.span_timeout, expected)
        except TimeoutError:
            pass  # reported by the count assertion below, with what did arrive
        else:
            try:  # give unexpected extra spans (duplicates, phantom requests) time to arrive
                self.receiver.wait_for_spans(self.mine, self.quiet, expected + 1)
            except TimeoutError:
                pass
        spans = self.last_spans = self.receiver.spans(self.mine)
        if self.agent is not None and self.agent.exit_code is None:
            assert self.agent.proc.poll() is None, "the agent exited during the test"
        assert len(spans) == expected, (
            f"expected exactly {expected} spans for this test's traffic, got {len(spans)}:\n"
            f"{fmt_spans(spans)}")
        t_max = time.time_ns() + WINDOW_SLACK_NS
        for s in spans:
            check_common(s, self.pids, self.t0_ns - WINDOW_SLACK_NS, t_max)
        self.check_global()
        return spans

    def check_global(self) -> None:
        """Session-wide rules: nothing from the receiver's or the agent's own process, no
        malformed exports, and no secret this test used anywhere in the exported bytes."""
        __tracebackhide__ = True
        assert self.receiver is not None
        own = {os.getpid()} | ({self.agent.pid} if self.agent else set())
        leaked = self.receiver.spans(lambda s: s.pid in own)
        assert not leaked, f"spans from the receiver/agent processes {own}:\n{fmt_spans(leaked)}"
        assert self.receiver.errors() == [], self.receiver.errors()
        for srv in self.servers:
            # pids are reused (pid_max may be 32768): a server pid only identifies the server
            # in this test's window; its executable names identify it at any time.
            pids, t_min = srv.pids(self._server_marks.get(id(srv))), self.t0_ns - WINDOW_SLACK_NS
            leaked = self.receiver.spans(
                lambda s: (s.pid in pids and s.end_ns >= t_min)
                or s.resource.get("process.executable.name") in srv.exes)
            assert not leaked, f"spans from the {srv.name} server's processes:\n{fmt_spans(leaked)}"
        for secret in self.secrets:
            assert not self.receiver.raw_contains(secret.encode()), (
                f"secret {secret!r} found in the raw OTLP bytes")
            assert not any(secret in s.to_json() for s in self.receiver.spans()), (
                f"secret {secret!r} found in a decoded span")

    def report(self) -> str:
        logs = "\n".join([p.tail(15) for p in self.procs] + [srv.tail() for srv in self.servers])
        return (f"spans of this test ({len(self.last_spans)}):\n{fmt_spans(self.last_spans)}\n\n"
                f"test pids={sorted(self.pids)} ports={sorted(self.ports)}\n\n{logs}")

    def close(self) -> None:
        for p in reversed(self.procs):
            p.kill_group()
