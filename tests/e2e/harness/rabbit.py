"""RabbitMQ for the e2e suite: one broker per session, and the expected PRODUCER / CONSUMER span
of one AMQP 0-9-1 message.

The broker runs from /usr/lib/rabbitmq/bin/rabbitmq-server with everything (node data, logs,
cookie, plugins file, epmd) in a temp dir and on 127.0.0.1 ports of its own, so nothing on the
machine (a system broker, another test session) can collide with it. Our own epmd is started
first, in the foreground, so its pid is ours to stop (the broker would otherwise daemonize one
that outlives it).
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from otlp_receiver import STATUS_UNSET, ReceivedSpan

from .pg import _children, finish_off
from .procs import Proc, free_port, listening_ports, run, tail_file, wait_until
from .scenario import APPS, PYTHON, Scenario, app_env
from .spans import KIND_CONSUMER, KIND_PRODUCER, assert_attrs, fmt_span, fmt_spans

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
EPMD = "/usr/bin/epmd"
LOCALHOST = "127.0.0.1"
START_TIMEOUT = 60.0  # 5-10 s normally; a loaded 2-core machine is slower
STOP_TIMEOUT = 20.0


class RabbitServer:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="e2e-rabbit-"))
        home = self.root / "home"
        home.mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "rabbitmq-env.conf").write_text("")
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        base = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
                "HOME": str(home), "ERL_EPMD_PORT": str(self.epmd_port),
                "ERL_EPMD_ADDRESS": LOCALHOST}
        self.epmd = Proc("epmd", [EPMD, "-port", str(self.epmd_port)], self.root, env=base)
        self.proc: Proc | None = None
        try:
            wait_until(lambda: self.epmd_port in listening_ports(), 10, "epmd to listen",
                       interval=0.05, alive=self.epmd)
            env = {**base,
                   "RABBITMQ_NODENAME": "rabbit@localhost",
                   "RABBITMQ_NODE_IP_ADDRESS": LOCALHOST,
                   "RABBITMQ_NODE_PORT": str(self.port),
                   "RABBITMQ_DIST_PORT": str(self.dist_port),
                   "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
                       "-kernel inet_dist_use_interface {127,0,0,1}",
                   "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
                   "RABBITMQ_LOG_BASE": str(self.root / "log"),
                   "RABBITMQ_LOGS": "-",  # the log goes to stdout: rabbitmq.stdout
                   "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
                   "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
                   "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq"),
                   "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config")}
            self.proc = Proc("rabbitmq", [RABBITMQ_SERVER], self.root, env=env)
            self.pid = self.proc.pid
            wait_until(lambda: self.port in listening_ports(), START_TIMEOUT,
                       "rabbitmq to listen", interval=0.1, alive=self.proc)
            self._ping()
        except BaseException:
            self.stop()
            raise

    def _ping(self) -> None:
        """An AMQP handshake from a child process (never from pytest's own pid)."""
        r = subprocess.run([PYTHON, str(APPS / "amqp_client.py"), "--port",
                            str(self.port), "ping"], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"AMQP ping failed:\n{r.stdout}\n{r.stderr}\n{self.tail()}")

    name = "rabbitmq"
    exes = frozenset({"beam.smp", "epmd", "erl_child_setup", "inet_gethost"})

    def mark(self) -> None:
        return None

    def pids(self, since: None = None) -> set[int]:
        """The broker's live processes (the wrapper script, beam.smp and its helpers, epmd)."""
        live = _children(self.pid) if self.proc and self.proc.poll() is None else set()
        return {self.pid, self.epmd.pid} | live

    def stop(self) -> None:
        """SIGTERM: the wrapper script stops the node cleanly; then the group is killed, and our
        epmd (stopped last: the node unregisters from it on the way down)."""
        tree = {self.epmd.pid}
        if self.proc is not None:
            tree |= {self.proc.pid} | _children(self.proc.pid)  # before they are reparented
            if self.proc.poll() is None:
                self.proc.signal(signal.SIGTERM)
                try:
                    self.proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    pass
            self.proc.kill_group(grace=2)
        self.epmd.kill_group(grace=2)
        # erl_child_setup and inet_gethost have process groups of their own.
        self.leftovers = finish_off(tree)
        shutil.rmtree(self.root, ignore_errors=True)

    def tail(self) -> str:
        log = self.root / "rabbitmq.stdout"
        return f"--- rabbitmq (pid {getattr(self, 'pid', '?')}, port {self.port})\n{tail_file(log)}"


# ---------------------------------------------------------------------------------------------
# The span contract for one message.

@dataclass
class Msg:
    """One message as its PRODUCER / CONSUMER span must describe it."""
    exchange: str  # "" = the default exchange
    routing_key: str
    body_size: int
    message_id: str | None = None
    correlation_id: str | None = None

    @property
    def destination(self) -> str:
        return self.exchange or self.routing_key


def _message_attrs(s: ReceivedSpan, m: Msg, port: int, producer: bool) -> dict:
    """The attributes both sides must have; the contract lists the conversation id and
    server.* for PRODUCER spans only, so on CONSUMER spans they are checked when present."""
    expected = {"messaging.system": "rabbitmq", "messaging.destination.name": m.destination,
                "messaging.rabbitmq.destination.routing_key": m.routing_key,
                "messaging.message.body.size": m.body_size}
    optional = {"server.address": LOCALHOST, "server.port": port,
                "messaging.message.conversation_id": m.correlation_id}
    for key, value in [("messaging.message.id", m.message_id)] + list(optional.items()):
        if producer or key == "messaging.message.id":
            if value is None:
                assert key not in s.attributes, f"{key} but the message has none\n{fmt_span(s)}"
            else:
                expected[key] = value
        elif key in s.attributes:
            expected[key] = value
    return expected


def assert_publish(s: ReceivedSpan, m: Msg, *, port: int, pid: int) -> None:
    __tracebackhide__ = True
    ctx = f"\n{fmt_span(s)}"
    assert s.kind == KIND_PRODUCER, f"a publish must be a PRODUCER span{ctx}"
    assert s.pid == pid, f"span from pid {s.pid}, expected the publisher {pid}{ctx}"
    assert s.name == f"publish {m.destination}", f"expected name 'publish {m.destination}'{ctx}"
    assert s.status_code == STATUS_UNSET, f"status must be UNSET{ctx}"
    assert_attrs(s, {**_message_attrs(s, m, port, True), "messaging.operation.type": "send",
                     "messaging.operation.name": "publish"})


def assert_delivery(s: ReceivedSpan, m: Msg, *, port: int, pid: int, get: bool = False,
                    status: int | None = STATUS_UNSET) -> None:
    """basic.deliver (type `process`) or basic.get (type `receive`); named
    `{messaging.operation.name} {destination}` per the conventions. status=None: not checked."""
    __tracebackhide__ = True
    ctx = f"\n{fmt_span(s)}"
    verb, op = ("receive", "get") if get else ("process", "deliver")
    assert s.kind == KIND_CONSUMER, f"a {op} must be a CONSUMER span{ctx}"
    assert s.pid == pid, f"span from pid {s.pid}, expected the consumer {pid}{ctx}"
    assert s.name == f"{op} {m.destination}", f"expected name '{op} {m.destination}'{ctx}"
    if status is not None:
        assert s.status_code == status, f"status must be {status}{ctx}"
    assert_attrs(s, {**_message_attrs(s, m, port, False), "messaging.operation.type": verb,
                     "messaging.operation.name": op})


def by_kind_pid(spans: list[ReceivedSpan], kind: int, pid: int) -> list[ReceivedSpan]:
    """Spans of one kind from one process, in start order."""
    return sorted((s for s in spans if s.kind == kind and s.pid == pid),
                  key=lambda s: (s.start_ns, s.end_ns))


def exactly(spans: list[ReceivedSpan], n: int, what: str) -> list[ReceivedSpan]:
    __tracebackhide__ = True
    assert len(spans) == n, f"expected {n} {what}, got {len(spans)}:\n{fmt_spans(spans)}"
    return spans


# ---------------------------------------------------------------------------------------------
# Traffic: apps/amqp_client.py processes the test owns.

@dataclass
class AmqpRun:
    pid: int
    proc: Proc
    rows: list[dict]


def json_rows(proc: Proc) -> list[dict]:
    return [json.loads(x) for x in proc.stdout().splitlines() if x.startswith("{")]


def use_broker(scn: Scenario, rabbit: RabbitServer) -> None:
    scn.use_server(rabbit, rabbit.port)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def amqp_argv(rabbit: RabbitServer, *args: str) -> list[str]:
    return [PYTHON, str(APPS / "amqp_client.py"), "--port", str(rabbit.port), *args]


def start_consumer(scn: Scenario, rabbit: RabbitServer, queue: str, *args: str) -> AmqpRun:
    """`amqp_client.py consume` in the background, returned once its consumer is registered."""
    proc = scn.spawn("consume", amqp_argv(rabbit, "consume", "--queue", queue, *args))
    wait_until(lambda: f"READY {queue}" in proc.stdout(), 20, f"consumer on {queue}",
               alive=proc)
    return AmqpRun(proc.pid, proc, [])


def finish(run: AmqpRun, n: int, timeout: float = 30) -> AmqpRun:
    """Waits for a consumer to handle its deliveries and exit 0; returns its `n` rows."""
    __tracebackhide__ = True
    try:
        rc = run.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"consumer still running after {timeout}s\n{run.proc.tail()}")
    run.rows = json_rows(run.proc)
    assert rc == 0 and len(run.rows) == n, (
        f"consumer exited {rc} with {len(run.rows)} deliveries, expected {n}\n{run.proc.tail()}")
    return run


def amqp(scn: Scenario, rabbit: RabbitServer, cmd: str, *args: str, n: int) -> AmqpRun:
    """A short amqp_client.py run (publish, get, declare) that must exit 0 with `n` rows."""
    __tracebackhide__ = True
    proc, rc = run(scn._name(cmd), amqp_argv(rabbit, cmd, *args), scn.workdir, timeout=30,
                   env=app_env())
    scn._own(proc)
    rows = json_rows(proc)
    assert rc == 0 and len(rows) == n, f"{cmd} exited {rc} with {len(rows)} rows\n{proc.tail()}"
    return AmqpRun(proc.pid, proc, rows)
