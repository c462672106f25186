"""Self-test of the PostgreSQL and RabbitMQ span assertions: they pass on a correct export and
FAIL on each kind of defect. Needs neither root nor the agent.

Hand-built OTLP exports (what the agent should send for three statements, and for one message
published and delivered) go through a private receiver; `Scenario.collect` with
`match_statements` / `assert_publish` / `assert_delivery` must accept them as they are and
reject them after any one mutation. This is what keeps the agent tests from passing vacuously.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Callable

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from harness.pg import Stmt, match_statements
from harness.rabbit import Msg, assert_delivery, assert_publish
from harness.scenario import Scenario
from harness.spans import KIND_CONSUMER, KIND_PRODUCER, assert_child_of, only
from otlp_receiver import OtlpReceiver

APP, PUB, CONS, SERVER_PID = 4_100_001, 4_100_002, 4_100_003, 4_100_009
PG_PORT, MQ_PORT, DB = 29998, 29997, "e2e_selftest"
SECRET = "4815162342"
BODY_SECRET = "secret-body-selftest"
SK = trace_pb2.Span


def kv(key: str, value) -> common_pb2.KeyValue:
    if isinstance(value, bool):
        v = common_pb2.AnyValue(bool_value=value)
    elif isinstance(value, int):
        v = common_pb2.AnyValue(int_value=value)
    else:
        v = common_pb2.AnyValue(string_value=value)
    return common_pb2.KeyValue(key=key, value=v)


def resource(pid: int, svc: str = "app", exe: str = "python3") -> resource_pb2.Resource:
    return resource_pb2.Resource(attributes=[
        kv("service.name", svc), kv("process.pid", pid), kv("process.executable.name", exe),
        kv("host.name", socket.gethostname()), kv("telemetry.distro.name", "ebpf-agent")])


class FakeServer:
    """Stands in for PgServer/RabbitServer in Scenario.servers."""
    name, exes = "fake", frozenset({"postgres", "beam.smp"})

    def mark(self) -> None:
        return None

    def pids(self, since: None = None) -> set[int]:
        return {SERVER_PID}

    def tail(self) -> str:
        return ""


def set_attr(span: trace_pb2.Span, key: str, value) -> None:
    for a in span.attributes:
        if a.key == key:
            a.CopyFrom(kv(key, value))
            return
    span.attributes.append(kv(key, value))


def drop_attr(span: trace_pb2.Span, key: str) -> None:
    span.attributes.pop([a.key for a in span.attributes].index(key))


def send(port: int, groups: list[tuple[resource_pb2.Resource, list[trace_pb2.Span]]]) -> None:
    req = trace_service_pb2.ExportTraceServiceRequest()
    for res, spans in groups:
        req.resource_spans.add(resource=res).scope_spans.add().spans.extend(spans)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        trace_service_pb2_grpc.TraceServiceStub(ch).Export(req, timeout=5)


@pytest.fixture
def world(workroot: Path, request):
    rx = OtlpReceiver().start()
    d = workroot / request.node.name.replace("/", "_")
    d.mkdir()
    scn = Scenario(rx, None, d, span_timeout=1.0, quiet=0.3)
    scn.pids |= {APP, PUB, CONS}
    scn.ports |= {PG_PORT, MQ_PORT}
    scn.servers.append(FakeServer())
    scn.secrets += [SECRET, BODY_SECRET]
    yield rx, scn
    rx.stop()
    shutil.rmtree(d, ignore_errors=True)


# -- PostgreSQL ---------------------------------------------------------------------------

STATEMENTS = [
    Stmt("INSERT", "items", "INSERT INTO items (id, name) VALUES (?, ?)"),
    Stmt("SELECT", "items", "SELECT name FROM items WHERE id IN (?, ?, ?)", rows=2),
    Stmt("INSERT", "items", "INSERT INTO items (id, name) VALUES ($1, $2)", sqlstate="23505"),
]


def db_span(st: Stmt, start: int, text: str | None = None,
            port: int = PG_PORT) -> trace_pb2.Span:
    attrs = [kv("db.system.name", "postgresql"), kv("db.namespace", DB),
             kv("db.operation.name", st.op), kv("db.query.text", text or st.text),
             kv("server.address", "127.0.0.1"), kv("server.port", port),
             kv("network.peer.address", "127.0.0.1"), kv("network.peer.port", port)]
    if st.table:
        attrs.append(kv("db.collection.name", st.table))
    if st.rows is not None:
        attrs.append(kv("db.response.returned_rows", st.rows))
    status = trace_pb2.Status()
    if st.sqlstate:
        attrs += [kv("db.response.status_code", st.sqlstate), kv("error.type", st.sqlstate)]
        status = trace_pb2.Status(code=2)
    return trace_pb2.Span(trace_id=os.urandom(16), span_id=os.urandom(8), name=st.name,
                          kind=SK.SPAN_KIND_CLIENT, start_time_unix_nano=start,
                          end_time_unix_nano=start + 2_000_000, attributes=attrs, status=status)


def good_statements(now: int) -> list[trace_pb2.Span]:
    # The IN list collapsed, as the contract allows.
    texts = [None, "SELECT name FROM items WHERE id IN (?)", None]
    return [db_span(st, now + i * 3_000_000, t) for i, (st, t) in enumerate(zip(STATEMENTS, texts))]


def verify_pg(scn: Scenario) -> None:
    spans = scn.collect(3)
    match_statements(spans, STATEMENTS, db=DB, port=PG_PORT, pid=APP)


def test_correct_statements_pass(world) -> None:
    rx, scn = world
    send(rx.port, [(resource(APP), good_statements(time.time_ns()))])
    verify_pg(scn)


Spans = list[trace_pb2.Span]
PG_MUTATIONS: dict[str, tuple[str, Callable[[Spans], dict | None]]] = {
    "number literal left in the text": (
        "a number left", lambda s: set_attr(s[0], "db.query.text",
                                            f"INSERT INTO items (id, name) VALUES ({SECRET}, ?)")),
    "string literal left in the text": (
        "string literal", lambda s: set_attr(s[0], "db.query.text",
                                             "INSERT INTO items (id, name) VALUES (?, 'x')")),
    "$1 replaced by ?": (
        "no span for statement #2", lambda s: set_attr(s[2], "db.query.text",
                                                       "INSERT INTO items (id, name) VALUES (?, ?)")),
    "error span without ERROR status": (
        "error status", lambda s: s[2].status.CopyFrom(trace_pb2.Status(code=0))),
    "error.type missing": ("error status", lambda s: drop_attr(s[2], "error.type")),
    "wrong SQLSTATE": (
        "no span for statement #2", lambda s: (set_attr(s[2], "db.response.status_code", "23503"),
                                               set_attr(s[2], "error.type", "23503"))),
    "ERROR status on a success": (
        "status without error", lambda s: s[0].status.CopyFrom(trace_pb2.Status(code=2))),
    "returned rows as a string": (
        "db.response.returned_rows", lambda s: set_attr(s[1], "db.response.returned_rows", "2")),
    "wrong returned rows": (
        "db.response.returned_rows", lambda s: set_attr(s[1], "db.response.returned_rows", 3)),
    "name without the table": ("span name vs", lambda s: setattr(s[0], "name", "INSERT")),
    "lower-case operation": (
        "db.operation.name", lambda s: (set_attr(s[0], "db.operation.name", "insert"),
                                        setattr(s[0], "name", "insert items"))),
    "wrong database": ("db.namespace", lambda s: set_attr(s[1], "db.namespace", "postgres")),
    "wrong peer port": ("network.peer.port", lambda s: set_attr(s[1], "network.peer.port", 1)),
    "server.port as a string": (
        "server.port must be an int", lambda s: set_attr(s[1], "server.port", str(PG_PORT))),
    "SERVER kind": ("must be CLIENT", lambda s: setattr(s[1], "kind", SK.SPAN_KIND_SERVER)),
    "out of order": (
        "out of order", lambda s: (setattr(s[0], "start_time_unix_nano",
                                           s[1].end_time_unix_nano + 1),
                                   setattr(s[0], "end_time_unix_nano",
                                           s[1].end_time_unix_nano + 2_000_000))),
    "a span for a skipped statement": (
        "got 4", lambda s: {"extra": [db_span(Stmt("SELECT", "items", "SELECT ?"),
                                              s[2].end_time_unix_nano + 1)]}),
    # (a span that is not the test's by pid or port: only the server rule can catch it)
    "a span from the postgres server": (
        "fake server's processes", lambda s: {"extra_res": resource(SERVER_PID, "postgres",
                                                                    "postgres")}),
    "a span from a server pid (another executable name)": (
        "fake server's processes", lambda s: {"extra_res": resource(SERVER_PID, "x", "python3")}),
    "text-unknown flag on a known text": (
        "unknown-text statement", lambda s: set_attr(s[0], "db.postgresql.statement_text_unknown",
                                                     True)),
    "collection missing": (
        "no span for statement #0", lambda s: (drop_attr(s[0], "db.collection.name"),
                                               setattr(s[0], "name", "INSERT"))),
}


@pytest.mark.parametrize("mutation", PG_MUTATIONS.keys())
def test_each_statement_defect_is_caught(world, mutation: str) -> None:
    rx, scn = world
    spans = good_statements(time.time_ns())
    message, mutate = PG_MUTATIONS[mutation]
    extra = mutate(spans) or {}
    groups = [(resource(APP), spans + (extra.get("extra", []) if isinstance(extra, dict) else []))]
    if isinstance(extra, dict) and "extra_res" in extra:
        groups.append((extra["extra_res"], [db_span(STATEMENTS[0], time.time_ns(), port=1)]))
    send(rx.port, groups)
    with pytest.raises(AssertionError, match=re.escape(message)):
        verify_pg(scn)


def test_unknown_text_statement(world) -> None:
    """EXECUTE: no text, the flag set; a text or a missing flag is caught."""
    rx, scn = world
    st = Stmt("EXECUTE", None, None)

    def span(now: int) -> trace_pb2.Span:
        x = db_span(Stmt("EXECUTE", None, "x"), now)
        drop_attr(x, "db.query.text")
        drop_attr(x, "db.namespace")  # unknown when the start-up message was not seen
        set_attr(x, "db.postgresql.statement_text_unknown", True)
        return x
    send(rx.port, [(resource(APP), [span(time.time_ns())])])
    match_statements(scn.collect(1), [st], db=None, port=PG_PORT, pid=APP)

    for bad in ("text", "flag"):
        rx2 = OtlpReceiver().start()
        try:
            scn2 = Scenario(rx2, None, scn.workdir, span_timeout=1.0, quiet=0.3)
            scn2.pids.add(APP)
            x = span(time.time_ns())
            if bad == "text":
                set_attr(x, "db.query.text", "SELECT ?")
            else:
                drop_attr(x, "db.postgresql.statement_text_unknown")
            send(rx2.port, [(resource(APP), [x])])
            with pytest.raises(AssertionError):
                match_statements(scn2.collect(1), [st], db=None, port=PG_PORT, pid=APP)
        finally:
            rx2.stop()


# -- RabbitMQ -----------------------------------------------------------------------------

MSG = Msg("", "orders-q", 42, message_id="m-1", correlation_id="c-1")


def mq_span(kind: int, parent: trace_pb2.Span | None, now: int,
            port: int = MQ_PORT) -> trace_pb2.Span:
    producer = kind == SK.SPAN_KIND_PRODUCER
    verb, op = ("publish", "publish") if producer else ("deliver", "deliver")
    attrs = [kv("messaging.system", "rabbitmq"),
             kv("messaging.operation.type", "send" if producer else "process"),
             kv("messaging.operation.name", op), kv("messaging.destination.name", "orders-q"),
             kv("messaging.rabbitmq.destination.routing_key", "orders-q"),
             kv("messaging.message.id", "m-1"), kv("messaging.message.conversation_id", "c-1"),
             kv("messaging.message.body.size", 42), kv("server.address", "127.0.0.1"),
             kv("server.port", port)]
    return trace_pb2.Span(trace_id=parent.trace_id if parent else os.urandom(16),
                          span_id=os.urandom(8),
                          parent_span_id=parent.span_id if parent else b"",
                          name=f"{verb} orders-q", kind=kind, start_time_unix_nano=now,
                          end_time_unix_nano=now + 1_000_000, attributes=attrs)


def good_message(now: int) -> tuple[trace_pb2.Span, trace_pb2.Span]:
    p = mq_span(SK.SPAN_KIND_PRODUCER, None, now)
    return p, mq_span(SK.SPAN_KIND_CONSUMER, p, now + 2_000_000)


def verify_mq(scn: Scenario) -> None:
    spans = scn.collect(2)
    p = only(spans, "publish", kind=KIND_PRODUCER, pid=PUB)
    c = only(spans, "delivery", kind=KIND_CONSUMER, pid=CONS)
    assert_publish(p, MSG, port=MQ_PORT, pid=PUB)
    assert_delivery(c, MSG, port=MQ_PORT, pid=CONS)
    assert p.parent_span_id == ""
    assert_child_of(c, p)


def test_correct_message_passes(world) -> None:
    rx, scn = world
    p, c = good_message(time.time_ns())
    send(rx.port, [(resource(PUB), [p]), (resource(CONS), [c])])
    verify_mq(scn)


def test_delivery_without_the_producer_only_attributes_passes(world) -> None:
    """server.* and the conversation id are listed for PRODUCER spans only."""
    rx, scn = world
    p, c = good_message(time.time_ns())
    for key in ("server.address", "server.port", "messaging.message.conversation_id"):
        drop_attr(c, key)
    send(rx.port, [(resource(PUB), [p]), (resource(CONS), [c])])
    verify_mq(scn)


MQ_MUTATIONS: dict[str, tuple[str, Callable]] = {
    "consumer not linked": ("parent/child",
                            lambda p, c: setattr(c, "parent_span_id", os.urandom(8))),
    "consumer in another trace": ("parent/child",
                                  lambda p, c: setattr(c, "trace_id", os.urandom(16))),
    "consumer as CLIENT": ("PRODUCER or CONSUMER",
                           lambda p, c: setattr(c, "kind", SK.SPAN_KIND_CLIENT)),
    "named by the operation type": ("span name", lambda p, c: setattr(c, "name", "process orders-q")),
    "wrong operation name": ("messaging.operation",
                             lambda p, c: set_attr(c, "messaging.operation.name", "get")),
    "body size as a string": ("must be an int",
                              lambda p, c: set_attr(p, "messaging.message.body.size", "42")),
    "wrong body size": ("messaging.message.body.size",
                        lambda p, c: set_attr(c, "messaging.message.body.size", 41)),
    "message id missing": ("messaging.message.id",
                           lambda p, c: drop_attr(p, "messaging.message.id")),
    "routing key wrong": ("routing_key", lambda p, c: set_attr(
        p, "messaging.rabbitmq.destination.routing_key", "other")),
    "destination is the exchange ''": ("span name", lambda p, c: (
        set_attr(p, "messaging.destination.name", ""), setattr(p, "name", "publish "))),
    "ERROR status on a publish": ("status", lambda p, c: p.status.CopyFrom(
        trace_pb2.Status(code=2))),
    "body exported": ("secret", lambda p, c: set_attr(p, "messaging.message.body",
                                                      BODY_SECRET)),
    "a span from the broker": ("fake server's processes", lambda p, c: {
        "extra": (resource(SERVER_PID, "rabbitmq", "beam.smp"), [mq_span(
            SK.SPAN_KIND_CONSUMER, None, c.start_time_unix_nano, port=1)])}),
    "wrong server.port on the delivery": ("server.port",
                                          lambda p, c: set_attr(c, "server.port", 1)),
    "no server.port on the publish": ("server.port must be an int",
                                      lambda p, c: drop_attr(p, "server.port")),
    "wrong conversation id on the delivery": ("conversation_id", lambda p, c: set_attr(
        c, "messaging.message.conversation_id", "c-2")),
    "a duplicate delivery": ("got 3", lambda p, c: {"extra": (resource(CONS), [mq_span(
        SK.SPAN_KIND_CONSUMER, p, c.start_time_unix_nano + 1)])}),
}


@pytest.mark.parametrize("mutation", MQ_MUTATIONS.keys())
def test_each_message_defect_is_caught(world, mutation: str) -> None:
    rx, scn = world
    p, c = good_message(time.time_ns())
    message, mutate = MQ_MUTATIONS[mutation]
    extra = mutate(p, c)
    groups = [(resource(PUB), [p]), (resource(CONS), [c])]
    if isinstance(extra, dict):
        groups.append(extra["extra"])
    send(rx.port, groups)
    with pytest.raises(AssertionError, match=re.escape(message)):
        verify_mq(scn)
