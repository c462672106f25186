"""One trace across HTTP, PostgreSQL and RabbitMQ, through a queue.

    curl -> shop (apps/shop.py: INSERT the order, publish a message) ~> RabbitMQ ~>
    shop_worker (apps/shop_worker.py: consume, INSERT a shipment, ack)

None of the processes is instrumented. Expected per order, in ONE trace, every parent exact:

    curl CLIENT                          root (no traceparent)
      shop SERVER                        GET /order/<id>
        shop db CLIENT                   INSERT orders
        shop PRODUCER                    publish <queue>
          worker CONSUMER                deliver <queue> (ends at the ack)
            worker db CLIENT             INSERT shipments

With a traceparent (00-T-P-01) sent by curl, which the shop copies into the message's headers
(naive propagation), the same six spans are in trace T with the same parents, except that
curl's CLIENT span is the child of P (as for any incoming traceparent). The PRODUCER's header
names trace T, the trace its thread is already handling, so the agent takes it for forwarded
and keeps the PRODUCER under the shop's SERVER span; the CONSUMER is the PRODUCER's child.
"""

from __future__ import annotations

import os

import amqp_cases
from harness.expect import http_pair
from harness.pg import PgServer, Stmt, match_statements
from harness.rabbit import RabbitServer, assert_delivery, assert_publish
from harness.scenario import CURL_UA, Scenario
from harness.spans import (CLOCK_TOLERANCE_NS, KIND_CLIENT, KIND_CONSUMER, KIND_PRODUCER,
                           assert_child_of, assert_within, fmt_span, fmt_spans, only)

SHOP_INSERT = Stmt("INSERT", "orders", "INSERT INTO orders (id) VALUES ($1)")
WORKER_INSERT = Stmt("INSERT", "shipments", "INSERT INTO shipments (order_id) VALUES ($1)")


def by_message_id(spans, kind: int, pid: int, message_id: str):
    return only([s for s in spans if s.attributes.get("messaging.message.id") == message_id],
                f"{'publish' if kind == KIND_PRODUCER else 'delivery'} of {message_id}",
                kind=kind, pid=pid)


def db_child(spans, parent, pid: int, st: Stmt, db: str, port: int):
    """The one statement span from `pid` that is `parent`'s child (the spans of two orders'
    identical statements differ only in their parents)."""
    __tracebackhide__ = True
    mine = [s for s in spans if s.kind == KIND_CLIENT and "db.system.name" in s.attributes
            and s.pid == pid]
    children = [s for s in mine if s.parent_span_id == parent.span_id]
    assert len(children) == 1, (
        f"expected one {st.name!r} span from pid {pid} as the child of\n{fmt_span(parent)}\n"
        f"database spans of pid {pid}:\n{fmt_spans(mine)}")
    (child,) = match_statements(children, [st], db=db, port=port, pid=pid)
    return child


def check_order(spans, flow: amqp_cases.Flow, order: int, row: dict, rabbit: RabbitServer,
                pg: PgServer) -> list:
    """The six spans of one order, every parent checked; returns them."""
    msg = flow.messages[order]
    worker_pid = flow.worker.pid
    curl_c, shop_s = http_pair(spans, client=flow.call, server=flow.shop, method="GET",
                               path=f"/order/{order}", template="/order/{id}", ua=CURL_UA,
                               client_port=row["local_port"])
    prod = by_message_id(spans, KIND_PRODUCER, flow.shop.pid, msg.message_id)
    assert_publish(prod, msg, port=rabbit.port, pid=flow.shop.pid)
    cons = by_message_id(spans, KIND_CONSUMER, worker_pid, msg.message_id)
    assert_delivery(cons, msg, port=rabbit.port, pid=worker_pid)
    # shop_s is curl_c's child (http_pair); the rest of the tree:
    shop_db = db_child(spans, shop_s, flow.shop.pid, SHOP_INSERT, flow.db, pg.port)
    worker_db = db_child(spans, cons, worker_pid, WORKER_INSERT, flow.db, pg.port)
    assert_child_of(prod, shop_s)
    assert_child_of(cons, prod)
    for inner, outer in ((shop_db, shop_s), (prod, shop_s), (worker_db, cons)):
        assert_within(inner, outer)
    assert shop_db.end_ns <= prod.start_ns, "the shop INSERTs, then publishes"
    assert cons.start_ns >= prod.start_ns - CLOCK_TOLERANCE_NS
    chain = [curl_c, shop_s, shop_db, prod, cons, worker_db]
    assert len({s.trace_id for s in chain}) == 1, f"not one trace:\n{fmt_spans(chain)}"
    return chain


def test_order_flow_is_one_trace(scn: Scenario, rabbitmq: RabbitServer,
                                 postgres: PgServer) -> None:
    flow = amqp_cases.shop_flow(scn, rabbitmq, postgres, [101, 102])
    spans = scn.collect(12)
    assert {s.pid for s in spans} == {flow.call.pid, flow.shop.pid, flow.worker.pid}
    chains = [check_order(spans, flow, o, row, rabbitmq, postgres)
              for o, row in zip(flow.orders, flow.call.rows)]
    for chain in chains:
        assert chain[0].parent_span_id == "", f"curl's span must be the root\n{fmt_spans(chain)}"
        assert len([s for s in spans if s.trace_id == chain[0].trace_id]) == 6, (
            f"a trace with spans from elsewhere:\n{fmt_spans(spans)}")
    assert chains[0][0].trace_id != chains[1][0].trace_id, "two orders, two traces"


def test_order_flow_with_traceparent_in_the_message(scn: Scenario, rabbitmq: RabbitServer,
                                                    postgres: PgServer) -> None:
    trace_id, parent_id = os.urandom(16).hex(), os.urandom(8).hex()
    tp = f"00-{trace_id}-{parent_id}-01"
    flow = amqp_cases.shop_flow(scn, rabbitmq, postgres, [201], traceparent=tp)
    spans = scn.collect(6)
    assert {s.pid for s in spans} == {flow.call.pid, flow.shop.pid, flow.worker.pid}
    chain = check_order(spans, flow, 201, flow.call.rows[0], rabbitmq, postgres)
    curl_c = chain[0]
    assert (curl_c.trace_id, curl_c.parent_span_id) == (trace_id, parent_id), (
        f"curl's CLIENT span must be the child of the traceparent's parent-id\n"
        f"{fmt_spans([curl_c])}")
    assert parent_id not in {s.span_id for s in spans}, "the agent reused the caller's span id"
