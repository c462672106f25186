"""The RabbitMQ traffic of each agent test (test_rabbitmq.py, test_queue_trace.py,
test_sdk_coexistence.py), and the messages its spans must describe.

Each case runs real pika clients (apps/amqp_client.py, apps/shop.py, apps/shop_sdk.py,
apps/shop_worker.py) against the session's broker and checks, from the clients' own reports,
that the traffic is what the expectation assumes: what was published and confirmed, what was
delivered, with which delivery tag and redelivered flag, and what was acked.
test_apps_pg_amqp.py runs the same cases with no agent.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from harness.pg import PgServer, use_database
from harness.procs import Proc, free_port, run, wait_until
from harness.rabbit import (AmqpRun, Msg, RabbitServer, json_rows, amqp, finish, start_consumer,
                            unique, use_broker)
from harness.scenario import APPS, PYTHON, Call, Scenario, Server, app_env
from harness.sdk import OTEL_INSTRUMENT, sdk_env

LARGE_BODY = 300_000  # three body frames at the default frame_max of 131072
BODY_SECRET = f"body-{secrets.token_hex(8)}"  # in a message body; bodies are never exported


@dataclass
class MqCase:
    msg: Msg
    publisher: AmqpRun
    consumers: list[AmqpRun]
    traceparent: str | None = None


def _delivered(run: AmqpRun, msg: Msg, *, tags: list[int], redelivered: list[bool],
               acked: list[bool], op: str = "deliver") -> None:
    __tracebackhide__ = True
    rows = run.rows
    assert [r["delivery_tag"] for r in rows] == tags, rows
    assert [r["redelivered"] for r in rows] == redelivered, rows
    assert [r["acked"] for r in rows] == acked, rows
    for r in rows:
        assert (r["op"], r["exchange"], r["routing_key"], r["body_size"], r["message_id"],
                r["correlation_id"]) == (op, msg.exchange, msg.routing_key, msg.body_size,
                                         msg.message_id, msg.correlation_id), r


def direct_message(scn: Scenario, rabbit: RabbitServer, large: bool = False) -> MqCase:
    """One message through the default exchange to a consumer (manual ack); small bodies carry
    BODY_SECRET, large ones span several body frames."""
    use_broker(scn, rabbit)
    q = unique("orders")
    body = (["--body-size", str(LARGE_BODY)] if large
            else ["--body", f"order #1 for {BODY_SECRET}"])
    size = LARGE_BODY if large else len(f"order #1 for {BODY_SECRET}")
    msg = Msg("", q, size, message_id=unique("msg"), correlation_id=unique("conv"))
    consumer = start_consumer(scn, rabbit, q, "--count", "1")
    pub = amqp(scn, rabbit, "publish", "--routing-key", q, *body, "--message-id",
               msg.message_id, "--correlation-id", msg.correlation_id, n=1)
    _delivered(finish(consumer, 1), msg, tags=[1], redelivered=[False], acked=[True])
    return MqCase(msg, pub, [consumer])


def with_traceparent(scn: Scenario, rabbit: RabbitServer) -> MqCase:
    """The publisher puts its own W3C traceparent in the message's headers table."""
    use_broker(scn, rabbit)
    q = unique("traced")
    tp = f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"
    msg = Msg("", q, 5, message_id=unique("msg"))
    consumer = start_consumer(scn, rabbit, q, "--count", "1")
    pub = amqp(scn, rabbit, "publish", "--routing-key", q, "--body", "hello", "--message-id",
               msg.message_id, "--traceparent", tp, n=1)
    finish(consumer, 1)
    _delivered(consumer, msg, tags=[1], redelivered=[False], acked=[True])
    assert consumer.rows[0]["traceparent"] == tp
    return MqCase(msg, pub, [consumer], traceparent=tp)


def same_body_twice(scn: Scenario, rabbit: RabbitServer) -> MqCase:
    """Two byte-identical messages (same body, same properties, no ids), published one after
    the other by one process: two deliveries, in publish order."""
    use_broker(scn, rabbit)
    q = unique("twins")
    msg = Msg("", q, len("same body"))
    consumer = start_consumer(scn, rabbit, q, "--count", "2")
    pub = amqp(scn, rabbit, "publish", "--routing-key", q, "--body", "same body", "--count", "2",
               n=2)
    _delivered(finish(consumer, 2), msg, tags=[1, 2], redelivered=[False, False],
               acked=[True, True])
    return MqCase(msg, pub, [consumer])


def fanout(scn: Scenario, rabbit: RabbitServer) -> MqCase:
    """One publish to a fanout exchange bound to two queues, each with its own consumer
    process: one delivery each."""
    use_broker(scn, rabbit)
    x = unique("fan")
    msg = Msg(x, "fan-rk", len("to everyone"), message_id=unique("msg"))
    consumers = [start_consumer(scn, rabbit, unique(f"fan-{n}"), "--bind", f"{x}:fanout",
                                "--count", "1") for n in "ab"]
    pub = amqp(scn, rabbit, "publish", "--exchange", x, "--routing-key", "fan-rk", "--body",
               "to everyone", "--message-id", msg.message_id, n=1)
    for c in consumers:
        _delivered(finish(c, 1), msg, tags=[1], redelivered=[False], acked=[True])
    return MqCase(msg, pub, consumers)


def redelivery(scn: Scenario, rabbit: RabbitServer) -> MqCase:
    """The consumer nacks the first delivery with requeue; the broker delivers it again
    (redelivered) and it is acked."""
    use_broker(scn, rabbit)
    q = unique("retry")
    msg = Msg("", q, len("try again"), message_id=unique("msg"))
    consumer = start_consumer(scn, rabbit, q, "--count", "2", "--nack-first")
    pub = amqp(scn, rabbit, "publish", "--routing-key", q, "--body", "try again",
               "--message-id", msg.message_id, n=1)
    _delivered(finish(consumer, 2), msg, tags=[1, 2], redelivered=[False, True],
               acked=[False, True])
    return MqCase(msg, pub, [consumer])


def basic_get(scn: Scenario, rabbit: RabbitServer) -> MqCase:
    """basic.get (polling, manual ack) of a message that was published before the get."""
    use_broker(scn, rabbit)
    q = unique("polled")
    msg = Msg("", q, len("poll me"), message_id=unique("msg"))
    amqp(scn, rabbit, "declare", "--queue", q, n=0)
    pub = amqp(scn, rabbit, "publish", "--routing-key", q, "--body", "poll me", "--message-id",
               msg.message_id, n=1)
    getter = amqp(scn, rabbit, "get", "--queue", q, "--count", "1", n=1)
    _delivered(getter, msg, tags=[1], redelivered=[False], acked=[True], op="get")
    return MqCase(msg, pub, [getter])


@dataclass
class WorkCase(MqCase):
    service: Server | None = None
    db: str = ""
    user_path: str = ""


def consumer_work(scn: Scenario, rabbit: RabbitServer, pg: PgServer) -> WorkCase:
    """While handling the delivery (before its ack) the consumer GETs a path from
    apps/service.py and INSERTs a row into PostgreSQL."""
    use_broker(scn, rabbit)
    db = use_database(scn, pg, "CREATE TABLE shipments (order_id text NOT NULL)")
    svc = scn.service()
    q = unique("work")
    msg = Msg("", q, len("do work"), message_id=unique("msg"))
    consumer = start_consumer(scn, rabbit, q, "--count", "1", "--http-get",
                              f"http://127.0.0.1:{svc.port}/users/77", "--pg-dsn",
                              pg.dsn(db, "e2e-consumer"), "--pg-sql",
                              "INSERT INTO shipments (order_id) VALUES (%s)")
    pub = amqp(scn, rabbit, "publish", "--routing-key", q, "--body", "do work", "--message-id",
               msg.message_id, n=1)
    finish(consumer, 1)
    _delivered(consumer, msg, tags=[1], redelivered=[False], acked=[True])
    assert consumer.rows[0]["work"] == {"http_status": 200, "pg_rowcount": 1}
    assert pg.psql("SELECT order_id FROM shipments", db=db) == msg.message_id
    return WorkCase(msg, pub, [consumer], service=svc, db=db, user_path="/users/77")


# -- the end-to-end flow: curl -> shop (HTTP) -> PostgreSQL + RabbitMQ -> shop_worker -> PG --

FLOW_SCHEMA = ("CREATE TABLE orders (id bigint PRIMARY KEY);"
               "CREATE TABLE shipments (order_id text NOT NULL)")


@dataclass
class Flow:
    shop: Server
    worker: Proc
    queue: str
    db: str
    call: Call  # curl
    orders: list[int]
    messages: dict[int, Msg]  # order -> its message
    traceparent: str | None


def shop_flow(scn: Scenario, rabbit: RabbitServer, pg: PgServer, orders: list[int],
              traceparent: str | None = None) -> Flow:
    """Starts the worker and the shop, orders `orders` with ONE curl (one kept-alive
    connection), waits until the worker has handled every message."""
    use_broker(scn, rabbit)
    db = use_database(scn, pg, FLOW_SCHEMA)
    q = unique("shop")
    worker = start_worker(scn, rabbit, pg, db, q)
    port = free_port()
    shop_proc = scn.spawn("shop", [PYTHON, str(APPS / "shop.py"), "--port", str(port),
                                   "--amqp-port", str(rabbit.port), "--queue", q, "--pg-dsn",
                                   pg.dsn(db, "e2e-shop")], port=port)
    shop = Server(port, shop_proc.pid, shop_proc, "shop", "python3")
    call = order(scn, port, orders, traceparent)
    got = handled(worker, orders)
    assert [r["traceparent"] for r in got] == [traceparent] * len(orders), got
    messages = recorded(pg, db, q, orders, got)
    return Flow(shop, worker, q, db, call, orders, messages, traceparent)


def start_worker(scn: Scenario, rabbit: RabbitServer, pg: PgServer, db: str, q: str) -> Proc:
    """apps/shop_worker.py consuming `q`, returned once its consumer is registered."""
    worker = scn.spawn("shop_worker", [PYTHON, str(APPS / "shop_worker.py"), "--amqp-port",
                                       str(rabbit.port), "--queue", q, "--pg-dsn",
                                       pg.dsn(db, "e2e-worker")])
    wait_until(lambda: f"READY {q}" in worker.stdout(), 20, "the worker's consumer",
               alive=worker)
    return worker


def order(scn: Scenario, port: int, orders: list[int], traceparent: str | None,
          keepalive: bool = True) -> Call:
    """ONE curl ordering `orders` from the shop on `port`: over one kept-alive connection, or
    (keepalive=False: the server closes each) one connection per order."""
    headers = (f"traceparent: {traceparent}",) if traceparent else ()
    call = scn.curl(*(f"http://127.0.0.1:{port}/order/{o}" for o in orders), headers=headers)
    assert [r["http_code"] for r in call.rows] == [200] * len(orders), call.rows
    connects = [1] + [0 if keepalive else 1] * (len(orders) - 1)
    assert [r["num_connects"] for r in call.rows] == connects, call.rows
    return call


def handled(worker: Proc, orders: list[int]) -> list[dict]:
    """The worker's rows once it has handled every order's message, each checked."""
    def rows() -> list[dict]:
        return [json.loads(x) for x in worker.stdout().splitlines() if x.startswith("{")]
    wait_until(lambda: len(rows()) >= len(orders), 20, "the worker to handle every order",
               alive=worker)
    got = rows()
    assert [r["message_id"] for r in got] == [f"order-{o}" for o in orders], got
    assert [r["redelivered"] for r in got] == [False] * len(orders), got
    return got


def recorded(pg: PgServer, db: str, q: str, orders: list[int], got: list[dict]
             ) -> dict[int, Msg]:
    """Both INSERTs of every order are in the database; each order's message."""
    assert pg.psql("SELECT count(*) FROM orders", db=db) == str(len(orders))
    assert pg.psql("SELECT count(*) FROM shipments", db=db) == str(len(orders))
    return {o: Msg("", q, r["body_size"], message_id=f"order-{o}") for o, r in zip(orders, got)}


# -- the same flow with the shop instrumented by the OpenTelemetry SDK (apps/shop_sdk.py) and a
#    downstream HTTP service it calls: curl -> shop_sdk -> PG + RabbitMQ + apps/service.py ~>
#    shop_worker -> PG. Only shop_sdk is instrumented. --

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@dataclass
class SdkFlow:
    shop: Server  # service_name: its OTEL_SERVICE_NAME (unique per test)
    downstream: Server  # apps/service.py, GET /users/<order> for each order
    worker: Proc
    queue: str
    db: str
    call: Call  # curl
    orders: list[int]
    messages: dict[int, Msg]
    traceparent: str | None  # what curl sent
    # order -> (trace id, parent id) of the traceparent the SDK put in the order's message
    message_context: dict[int, tuple[str, str]]


def sdk_shop_flow(scn: Scenario, rabbit: RabbitServer, pg: PgServer, endpoint: str,
                  orders: list[int], traceparent: str | None = None) -> SdkFlow:
    """Starts the worker, the downstream service and apps/shop_sdk.py under
    opentelemetry-instrument (exporting to the OTLP receiver at `endpoint`), orders `orders`
    with ONE curl, waits until the worker has handled every message. Checks that the SDK
    propagated: each message carries a traceparent of its own (sampled), in curl's trace when
    curl sent one."""
    use_broker(scn, rabbit)
    db = use_database(scn, pg, FLOW_SCHEMA)
    q = unique("sdkshop")
    worker = start_worker(scn, rabbit, pg, db, q)
    downstream = scn.service("notify")
    port, name = free_port(), unique("shop-sdk")
    shop_proc = scn.spawn("shop_sdk", [str(OTEL_INSTRUMENT), PYTHON, str(APPS / "shop_sdk.py"),
                                       "--port", str(port), "--amqp-port", str(rabbit.port),
                                       "--queue", q, "--pg-dsn", pg.dsn(db, "e2e-shop-sdk"),
                                       "--notify", f"http://127.0.0.1:{downstream.port}"],
                          port=port, env=sdk_env(name, endpoint))
    shop = Server(port, shop_proc.pid, shop_proc, name, "python3")
    call = order(scn, port, orders, traceparent, keepalive=False)  # Werkzeug closes
    got = handled(worker, orders)
    contexts = {}
    for o, r in zip(orders, got):
        m = _TRACEPARENT.match(r["traceparent"] or "")
        # Version 00; the SDK also sets the random-trace-id flag (0x02, Trace Context level 2).
        assert m and int(m.group(3), 16) & 1, (
            f"order {o}: the SDK put no sampled traceparent in the message: {r}")
        contexts[o] = (m.group(1), m.group(2))
    if traceparent:
        assert {t for t, _ in contexts.values()} == {traceparent.split("-")[1]}, (
            f"the SDK did not continue curl's trace {traceparent}: {got}")
    assert len({p for _, p in contexts.values()}) == len(orders), got
    access_log = downstream.proc.stderr()
    assert all(f"GET /users/{o} " in access_log for o in orders), access_log
    messages = recorded(pg, db, q, orders, got)
    return SdkFlow(shop, downstream, worker, q, db, call, orders, messages, traceparent,
                   contexts)


@dataclass
class GoCase:
    publisher: AmqpRun
    consumer: AmqpRun
    messages: list[Msg]  # in publish order


def go_amqp091(scn: Scenario, rabbit: RabbitServer, goclient: Path) -> GoCase:
    """apps/goclient (amqp091-go): one process publishes two messages (confirms, ids go-0 and
    go-1, correlation id go-conv) to the default exchange, another consumes them (ack)."""
    use_broker(scn, rabbit)
    q = unique("go")
    proc = scn.spawn("go_consume", [str(goclient), "consume", str(rabbit.port), q, "2"])
    wait_until(lambda: f"READY {q}" in proc.stdout(), 20, "the Go consumer", alive=proc)
    consumer = AmqpRun(proc.pid, proc, [])
    pub_proc, rc = run(scn._name("go_publish"), [str(goclient), "publish", str(rabbit.port), q,
                                                 "2"], scn.workdir, timeout=30, env=app_env())
    scn._own(pub_proc)
    pub = AmqpRun(pub_proc.pid, pub_proc, json_rows(pub_proc))
    assert rc == 0 and len(pub.rows) == 2, pub_proc.tail()
    finish(consumer, 2)
    messages = [Msg("", q, len(f"go message {i}"), message_id=f"go-{i}",
                    correlation_id="go-conv") for i in range(2)]
    assert [(r["message_id"], r["correlation_id"], r["body_size"], r["redelivered"],
             r["delivery_tag"]) for r in consumer.rows] == [
        (m.message_id, m.correlation_id, m.body_size, False, i + 1)
        for i, m in enumerate(messages)]
    return GoCase(pub, consumer, messages)
