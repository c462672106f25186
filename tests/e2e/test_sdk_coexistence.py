"""Beside an OpenTelemetry SDK: one trace, no duplicate spans, and the SDK's own parents.

    curl -> shop_sdk (apps/shop_sdk.py: INSERT, publish, GET notify/users/<id>) ~> RabbitMQ ~>
            shop_worker (apps/shop_worker.py: consume, INSERT, ack)
            notify (apps/service.py)

Only shop_sdk is instrumented: Flask, requests, psycopg and pika instrumentations under
`opentelemetry-instrument`, exporting to the receiver the agent exports to. Its spans are the
ground truth (harness/sdk.py tells them from the agent's by their resource). With `sdk.defer`
(the default), per order, with curl sending `traceparent: 00-T-P-01`:

    agent  curl CLIENT               trace T, parent P (as for any incoming traceparent)
    SDK    shop SERVER               trace T, parent P: the SDK continues the header curl sent,
                                     which names P, not curl's agent span (no header carries
                                     that), so the two are siblings under P
    SDK      INSERT orders           CLIENT, child of the SDK's SERVER span
    SDK      <queue> send            PRODUCER (BlockingChannel), child of the SDK's SERVER span
    SDK        <queue> send          PRODUCER (the Channel inside it: pika's instrumentation
                                     wraps both), the one the message's traceparent names (the
                                     worker prints what it got)
    SDK      GET                     CLIENT, child of the SDK's SERVER span
    agent      notify SERVER         child of the SDK's CLIENT span
    agent          worker CONSUMER   child of the SDK's inner PRODUCER span
    agent            worker INSERT   child of the worker's CONSUMER span

and no agent span of shop_sdk's own exchanges (its server side, database call, publish and the
call that carries its traceparent): each exchange is described by the SDK alone, each of the
others by the agent alone (the SDK's two spans of one publish are its own). Without a traceparent
the SDK's SERVER span is a root, and everything but curl's span is in its trace; curl's span is
the root of a trace of its own (curl sends no header, the agent injects none, so nothing can
tell the SDK about it).

With `sdk.defer: false` the agent's four spans for shop_sdk's exchanges exist beside the SDK's
(duplicates, by option), and the neighbours hang under the agent's spans, which are the ones
it stitches them to.

The SDK's exporter calls the receiver over OTLP/gRPC, and the agent sees those calls like any
other. The flow tests leave the agent's spans of them aside (`is_otlp_export`);
test_no_span_for_the_sdks_own_otlp_exports asserts there are none, and is an expected failure
until the agent stops tracing an SDK's own exports. The receiver runs in this pytest process,
which the agents of this module are told not to trace (`processes.exclude_pids`), as the
harness's own PostgreSQL work goes over a Unix socket: otherwise the receiver's side of each
export would be a span from the pytest process, which check_global rejects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

import amqp_cases
from harness.agent import Agent
from harness.expect import assert_resource
from harness.pg import PgServer, match_statements
from harness.rabbit import RabbitServer, assert_delivery, assert_publish, unique
from harness.procs import run
from harness.scenario import CURL_UA, PYTHON, Scenario, app_env
from harness.sdk import OTEL_INSTRUMENT, collect, is_otlp_export, sdk_env
from harness.spans import (KIND_CLIENT, KIND_CONSUMER, KIND_PRODUCER, KIND_SERVER,
                           assert_attrs, assert_child_of, assert_within, fmt_span, fmt_spans,
                           only)
from otlp_receiver import OtlpReceiver, ReceivedSpan
from test_queue_trace import SHOP_INSERT, WORKER_INSERT, by_message_id, db_child

# The agent's clock (CLOCK_MONOTONIC stamped in the kernel, converted) against the SDK's
# (time.time_ns() in the app): a span of one inside a span of the other, to this much.
CROSS_CLOCK_TOLERANCE_NS = 5_000_000


@pytest.fixture(scope="module")
def agent(agent_bin: Path, receiver: OtlpReceiver, workroot: Path, request):
    """This module's agent, with `sdk.defer` as the test's parameter (tests needing the other
    value run after all of one, with one agent at a time)."""
    defer: bool = request.param
    d = workroot / f"agent-sdk-{'defer' if defer else 'keep-both'}"
    d.mkdir(exist_ok=True)
    config = d / "agent.yaml"
    config.write_text(f"sdk:\n  defer: {str(defer).lower()}\n"
                      f"processes:\n  exclude_pids: [{os.getpid()}]\n")
    a = Agent(agent_bin, d, receiver.endpoint, config=config)
    try:
        yield a
    finally:
        code = a.stop()
    assert code == 0, f"agent exited with {code} on SIGTERM\n{a.stderr_tail()}"


defer = pytest.mark.parametrize("agent", [True], indirect=True, ids=["sdk.defer"])
keep_both = pytest.mark.parametrize("agent", [False], indirect=True, ids=["sdk.defer=false"])


# -- the SDK's spans: the ground truth --

@dataclass
class SdkOrder:
    server: ReceivedSpan  # Flask
    db: ReceivedSpan  # psycopg
    publish: ReceivedSpan  # pika, BlockingChannel.basic_publish
    producer: ReceivedSpan  # pika, the Channel.basic_publish inside it: the message names it
    client: ReceivedSpan  # requests, to notify

    def spans(self) -> list[ReceivedSpan]:
        return [self.server, self.db, self.publish, self.producer, self.client]


def sdk_order(sdk: list[ReceivedSpan], flow: amqp_cases.SdkFlow, o: int) -> SdkOrder:
    """The SDK's five spans of order `o`, one trace under its SERVER span. The pika
    instrumentation (0.66b1) instruments both the BlockingChannel and the Channel it wraps, so
    one publish gives two PRODUCER spans, the Channel's the child of the BlockingChannel's;
    the Channel's injects last, so the message's traceparent names it. Also run with no agent
    (test_apps_pg_amqp.py): this is what the SDK does by itself."""
    __tracebackhide__ = True
    server = only([s for s in sdk if s.attributes.get("url.path") == f"/order/{o}"],
                  f"the SDK's server span of order {o}", kind=KIND_SERVER)
    assert server.name == "GET /order/<int:order>", fmt_span(server)
    assert_attrs(server, {"http.route": "/order/<int:order>", "http.request.method": "GET",
                          "http.response.status_code": 200})
    notify = f"http://127.0.0.1:{flow.downstream.port}/users/{o}"
    client = only([s for s in sdk if s.attributes.get("url.full") == notify],
                  f"the SDK's client span of GET {notify}", kind=KIND_CLIENT)
    assert_attrs(client, {"http.request.method": "GET", "http.response.status_code": 200,
                          "server.port": flow.downstream.port})
    pubs = [s for s in sdk if s.attributes.get("messaging.message.id") == f"order-{o}"]
    publish = only([s for s in pubs if s.parent_span_id == server.span_id],
                   f"the SDK's publish of order {o}", kind=KIND_PRODUCER)
    producer = only([s for s in pubs if s.parent_span_id == publish.span_id],
                    f"the SDK's inner publish of order {o}", kind=KIND_PRODUCER)
    assert len(pubs) == 2, fmt_spans(pubs)
    for p in (publish, producer):
        assert p.name == f"{flow.queue} send", fmt_span(p)
        assert_attrs(p, {"messaging.system": "rabbitmq", "messaging.destination": flow.queue})
    assert_child_of(producer, publish)
    assert_within(producer, publish)
    dbs = [s for s in sdk if s.kind == KIND_CLIENT and s.parent_span_id == server.span_id
           and "db.system.name" in s.attributes]
    assert len(dbs) == 1, f"order {o}: expected one SDK db span under\n{fmt_span(server)}\n" \
                          f"{fmt_spans(sdk)}"
    db = dbs[0]
    assert db.attributes.get("db.system.name") == "postgresql", fmt_span(db)
    assert db.attributes.get("db.query.text", "").startswith("INSERT INTO orders"), fmt_span(db)
    for child in (db, publish, client):
        assert_child_of(child, server)
        assert_within(child, server)
    assert db.end_ns <= publish.start_ns <= publish.end_ns <= client.start_ns, (
        f"order {o}: INSERT, publish, GET, in that order\n{fmt_spans([db, publish, client])}")
    assert (producer.trace_id, producer.span_id) == flow.message_context[o], (
        f"order {o}: the message's traceparent {flow.message_context[o]} is not the SDK's "
        f"PRODUCER span\n{fmt_span(producer)}")
    if flow.traceparent:
        _, trace_id, parent_id, _ = flow.traceparent.split("-")
        assert (server.trace_id, server.parent_span_id) == (trace_id, parent_id), (
            f"the SDK's server span must continue curl's traceparent\n{fmt_span(server)}")
    else:
        assert server.parent_span_id == "", f"the SDK's server span must be a root\n" \
                                            f"{fmt_span(server)}"
    x = SdkOrder(server, db, publish, producer, client)
    for s in x.spans():
        assert_resource(s, flow.shop.service_name, "python3", flow.shop.pid)
    return x


# -- the agent's spans around it --

@dataclass
class AgentOrder:
    curl: ReceivedSpan
    notify: ReceivedSpan
    consumer: ReceivedSpan
    worker_db: ReceivedSpan


def agent_order(ours: list[ReceivedSpan], flow: amqp_cases.SdkFlow, o: int, row: dict,
                rabbit: RabbitServer, pg: PgServer) -> AgentOrder:
    """The agent's spans of order `o` from the uninstrumented processes, each checked; their
    parents are the caller's business (they differ with sdk.defer)."""
    __tracebackhide__ = True
    path = f"/order/{o}"
    curl = only(ours, f"curl's GET {path}", kind=KIND_CLIENT, pid=flow.call.pid, path=path)
    assert_attrs(curl, {"http.request.method": "GET", "http.response.status_code": 200,
                        "server.port": flow.shop.port, "user_agent.original": CURL_UA,
                        "url.full": f"http://127.0.0.1:{flow.shop.port}{path}"})
    assert_resource(curl, "curl", "curl", flow.call.pid)
    if "network.local.port" in curl.attributes:
        assert_attrs(curl, {"network.local.port": row["local_port"]})
    users = f"/users/{o}"
    notify = only(ours, f"notify's GET {users}", kind=KIND_SERVER, pid=flow.downstream.pid,
                  path=users)
    assert_attrs(notify, {"http.request.method": "GET", "http.response.status_code": 200,
                          "server.port": flow.downstream.port})
    assert_resource(notify, "notify", "python3", flow.downstream.pid)
    msg = flow.messages[o]
    consumer = by_message_id(ours, KIND_CONSUMER, flow.worker.pid, msg.message_id)
    assert_delivery(consumer, msg, port=rabbit.port, pid=flow.worker.pid)
    worker_db = db_child(ours, consumer, flow.worker.pid, WORKER_INSERT, flow.db, pg.port)
    assert_within(worker_db, consumer)
    return AgentOrder(curl, notify, consumer, worker_db)


def assert_deferred(ours: list[ReceivedSpan], sdk: list[ReceivedSpan],
                    flow: amqp_cases.SdkFlow, rabbit: RabbitServer, pg: PgServer
                    ) -> list[list[ReceivedSpan]]:
    """The sdk.defer contract for every order of `flow`; returns each order's 9 spans
    (curl's, the SDK's five, then notify's, the worker's CONSUMER and INSERT)."""
    __tracebackhide__ = True
    shop_ours = [s for s in ours if s.pid == flow.shop.pid]
    assert not shop_ours, (f"the agent made spans for exchanges the SDK of pid {flow.shop.pid} "
                           f"reports (duplicates):\n{fmt_spans(shop_ours)}")
    assert {s.pid for s in ours} == {flow.call.pid, flow.downstream.pid, flow.worker.pid}
    assert {s.pid for s in sdk} == {flow.shop.pid}
    orders = []
    for o, row in zip(flow.orders, flow.call.rows):
        x, a = sdk_order(sdk, flow, o), agent_order(ours, flow, o, row, rabbit, pg)
        assert_child_of(a.notify, x.client)  # the SDK's requests span, not a span of ours
        assert_within(a.notify, x.client, CROSS_CLOCK_TOLERANCE_NS)
        assert_child_of(a.consumer, x.producer)  # the SDK's pika span
        assert a.consumer.start_ns >= x.producer.start_ns - CROSS_CLOCK_TOLERANCE_NS
        assert_child_of(a.worker_db, a.consumer)
        if flow.traceparent:
            # Siblings under the header's parent id, in the header's trace.
            _, trace_id, parent_id, _ = flow.traceparent.split("-")
            assert (a.curl.trace_id, a.curl.parent_span_id) == (trace_id, parent_id), (
                f"curl's CLIENT span must be the child of the traceparent's parent-id\n"
                f"{fmt_span(a.curl)}")
            assert_within(x.server, a.curl, CROSS_CLOCK_TOLERANCE_NS)
        else:
            # Nothing tells the SDK of curl's span: it stays alone in a trace of its own.
            assert a.curl.parent_span_id == "", f"curl's span is a root\n{fmt_span(a.curl)}"
            alone = [s for s in ours + sdk if s.trace_id == a.curl.trace_id]
            assert alone == [a.curl], f"curl's trace:\n{fmt_spans(alone)}"
        spans = [a.curl, *x.spans(), a.notify, a.consumer, a.worker_db]
        trace = x.server.trace_id
        in_trace = [s for s in ours + sdk if s.trace_id == trace]
        expected = spans if flow.traceparent else spans[1:]
        assert sorted(map(id, in_trace)) == sorted(map(id, expected)), (
            f"order {o}: trace {trace} must hold exactly the order's spans:\n"
            f"{fmt_spans(in_trace)}\nexpected:\n{fmt_spans(expected)}")
        orders.append(spans)
    assert len({id(s) for spans in orders for s in spans}) == len(ours) + len(sdk), (
        "spans belonging to no order")
    return orders


@defer
def test_sdk_service_joins_curls_trace_and_neighbours_join_the_sdks_spans(
        agent: Agent, scn: Scenario, rabbitmq: RabbitServer, postgres: PgServer,
        receiver: OtlpReceiver) -> None:
    trace_id, parent_id = os.urandom(16).hex(), os.urandom(8).hex()
    flow = amqp_cases.sdk_shop_flow(scn, rabbitmq, postgres, receiver.endpoint, [401],
                                    traceparent=f"00-{trace_id}-{parent_id}-01")
    ours, sdk = collect(scn, agent=4, sdk=5, ignore=is_otlp_export)
    (spans,) = assert_deferred(ours, sdk, flow, rabbitmq, postgres)
    assert {s.trace_id for s in spans} == {trace_id}, f"not one trace:\n{fmt_spans(spans)}"
    assert parent_id not in {s.span_id for s in spans}, "a span reused the caller's span id"


@defer
def test_sdk_service_starts_the_trace_without_a_traceparent(
        agent: Agent, scn: Scenario, rabbitmq: RabbitServer, postgres: PgServer,
        receiver: OtlpReceiver) -> None:
    flow = amqp_cases.sdk_shop_flow(scn, rabbitmq, postgres, receiver.endpoint, [411, 412])
    ours, sdk = collect(scn, agent=8, sdk=10, ignore=is_otlp_export)
    orders = assert_deferred(ours, sdk, flow, rabbitmq, postgres)
    assert orders[0][1].trace_id != orders[1][1].trace_id, "two orders, two traces"


@keep_both
def test_sdk_defer_false_keeps_the_agents_spans_beside_the_sdks(
        agent: Agent, scn: Scenario, rabbitmq: RabbitServer, postgres: PgServer,
        receiver: OtlpReceiver) -> None:
    trace_id, parent_id = os.urandom(16).hex(), os.urandom(8).hex()
    flow = amqp_cases.sdk_shop_flow(scn, rabbitmq, postgres, receiver.endpoint, [421],
                                    traceparent=f"00-{trace_id}-{parent_id}-01")
    ours, sdk = collect(scn, agent=8, sdk=5, ignore=is_otlp_export)
    o, row = flow.orders[0], flow.call.rows[0]
    x, a = sdk_order(sdk, flow, o), agent_order(ours, flow, o, row, rabbitmq, postgres)
    shop = [s for s in ours if s.pid == flow.shop.pid]
    # One span of the agent beside each of the SDK's: the same exchange, seen twice.
    server = only(shop, "the agent's shop SERVER span", kind=KIND_SERVER, path=f"/order/{o}")
    client = only(shop, "the agent's shop CLIENT span", kind=KIND_CLIENT, path=f"/users/{o}")
    producer = by_message_id(shop, KIND_PRODUCER, flow.shop.pid, f"order-{o}")
    assert_publish(producer, flow.messages[o], port=rabbitmq.port, pid=flow.shop.pid)
    (db,) = match_statements([s for s in shop if "db.system.name" in s.attributes],
                             [SHOP_INSERT], db=flow.db, port=postgres.port, pid=flow.shop.pid)
    assert len(shop) == 4, fmt_spans(shop)
    for mine, theirs in ((server, x.server), (db, x.db), (producer, x.producer),
                         (client, x.client)):
        assert mine.kind == theirs.kind and mine.trace_id == theirs.trace_id == trace_id, (
            f"a duplicate in another trace or of another kind:\n{fmt_span(mine)}\n"
            f"{fmt_span(theirs)}")
    # The agent's own tree: what it stitches, it stitches to its own spans.
    assert_child_of(server, a.curl)
    for child in (db, producer, client):
        assert_child_of(child, server)
    assert_child_of(a.notify, client)
    assert_child_of(a.consumer, producer)
    assert_child_of(a.worker_db, a.consumer)
    assert (a.curl.parent_span_id, x.server.parent_span_id) == (parent_id, parent_id)
    # ... and the sdk.defer contract rejects this export: the strict checks catch duplicates.
    with pytest.raises(AssertionError, match="duplicates"):
        assert_deferred(ours, sdk, flow, rabbitmq, postgres)


# A process whose SDK exports one span and stays up a second longer (the agent reads the
# environment of the process it sees, which must still be there).
EXPORT_PROBE = ("import time; from opentelemetry import trace\n"
                "with trace.get_tracer('e2e').start_as_current_span('probe'): pass\n"
                "assert trace.get_tracer_provider().force_flush(10_000)\n"
                "time.sleep(1)\n")


@defer
def test_no_span_for_the_sdks_own_otlp_exports(agent: Agent, scn: Scenario,
                                               receiver: OtlpReceiver) -> None:
    proc, rc = run(scn._name("sdk_export"), [str(OTEL_INSTRUMENT), PYTHON, "-c", EXPORT_PROBE],
                   scn.workdir, timeout=30,
                   env=app_env(sdk_env(unique("sdk-export"), receiver.endpoint)))
    scn._own(proc)
    assert rc == 0, proc.tail()
    (_, sdk) = collect(scn, agent=0, sdk=1)  # the probe's span, and nothing of the agent's
    assert sdk[0].name == "probe", fmt_spans(sdk)
