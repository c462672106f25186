"""RabbitMQ (AMQP 0-9-1, pika clients): a PRODUCER span per basic.publish from the publishing
process, a CONSUMER span per delivery (basic.deliver: `process`, basic.get: `receive`) from
the consuming process, the CONSUMER span a child of its message's PRODUCER span.

The traffic is in amqp_cases.py (checked there against what the clients report, self-tested
without the agent in test_apps_pg_amqp.py). No span may come from the broker's processes
(beam.smp, epmd: Scenario.check_global) or name a process the test did not start.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import amqp_cases
from harness.expect import http_pair
from harness.pg import PgServer, Stmt, match_statements
from harness.rabbit import (RabbitServer, assert_delivery, assert_publish, by_kind_pid,
                            exactly)
from harness.scenario import Call, Scenario
from harness.spans import (CLOCK_TOLERANCE_NS, KIND_CLIENT, KIND_CONSUMER, KIND_PRODUCER,
                           assert_child_of, assert_within, fmt_span, fmt_spans, only)


def publish_span(spans, case: amqp_cases.MqCase, port: int):
    p = only(spans, "the publish", kind=KIND_PRODUCER, pid=case.publisher.pid)
    assert_publish(p, case.msg, port=port, pid=case.publisher.pid)
    return p


def assert_after(consumer, producer) -> None:
    """A delivery can only arrive after its publish started."""
    __tracebackhide__ = True
    assert consumer.start_ns >= producer.start_ns - CLOCK_TOLERANCE_NS, (
        f"delivered before it was published?\n{fmt_span(producer)}\n{fmt_span(consumer)}")


@pytest.mark.parametrize("large", [False, True], ids=["small", "three-frames"])
def test_publish_and_deliver_are_linked(scn: Scenario, rabbitmq: RabbitServer,
                                        large: bool) -> None:
    """No header: the agent saw both ends on this node, so the CONSUMER span is the PRODUCER
    span's child (content fingerprint). The publisher handles no request: PRODUCER is a root.
    The body (with a secret in it) is never exported."""
    case = amqp_cases.direct_message(scn, rabbitmq, large)
    scn.secrets.append(amqp_cases.BODY_SECRET)
    spans = scn.collect(2)
    p = publish_span(spans, case, rabbitmq.port)
    c = only(spans, "the delivery", kind=KIND_CONSUMER, pid=case.consumers[0].pid)
    assert_delivery(c, case.msg, port=rabbitmq.port, pid=case.consumers[0].pid)
    assert p.parent_span_id == "", f"the publish must be a root span\n{fmt_span(p)}"
    assert_child_of(c, p)
    assert_after(c, p)


def test_traceparent_in_the_message_headers(scn: Scenario, rabbitmq: RabbitServer) -> None:
    """The publisher's own traceparent header: PRODUCER joins that trace under the header's
    parent-id, CONSUMER is the PRODUCER span's child."""
    case = amqp_cases.with_traceparent(scn, rabbitmq)
    _, trace_id, parent_id, _ = case.traceparent.split("-")
    spans = scn.collect(2)
    p = publish_span(spans, case, rabbitmq.port)
    c = only(spans, "the delivery", kind=KIND_CONSUMER, pid=case.consumers[0].pid)
    assert_delivery(c, case.msg, port=rabbitmq.port, pid=case.consumers[0].pid)
    assert (p.trace_id, p.parent_span_id) == (trace_id, parent_id), (
        f"PRODUCER must be the child of the header's parent-id {parent_id} in trace "
        f"{trace_id}\n{fmt_span(p)}")
    assert_child_of(c, p)
    assert parent_id not in {s.span_id for s in spans}, "the agent reused the header's span id"


def test_same_body_twice_two_links(scn: Scenario, rabbitmq: RabbitServer) -> None:
    """Two byte-identical messages: the fingerprints are equal, so deliveries are linked to
    publishes in order: first delivery -> first publish, second -> second."""
    case = amqp_cases.same_body_twice(scn, rabbitmq)
    spans = scn.collect(4)
    pubs = exactly(by_kind_pid(spans, KIND_PRODUCER, case.publisher.pid), 2, "publishes")
    dels = exactly(by_kind_pid(spans, KIND_CONSUMER, case.consumers[0].pid), 2, "deliveries")
    for p, c in zip(pubs, dels):
        assert_publish(p, case.msg, port=rabbitmq.port, pid=case.publisher.pid)
        assert_delivery(c, case.msg, port=rabbitmq.port, pid=case.consumers[0].pid)
        assert p.parent_span_id == "", fmt_span(p)
        assert_child_of(c, p)
        assert_after(c, p)
    assert pubs[0].trace_id != pubs[1].trace_id, f"two publishes, two traces\n{fmt_spans(spans)}"


def test_fanout_one_publish_two_consumers(scn: Scenario, rabbitmq: RabbitServer) -> None:
    """One publish to a fanout exchange, delivered to two queues and two consumer processes:
    both CONSUMER spans are children of the one PRODUCER span."""
    case = amqp_cases.fanout(scn, rabbitmq)
    spans = scn.collect(3)
    p = publish_span(spans, case, rabbitmq.port)
    for consumer in case.consumers:
        c = only(spans, f"delivery to {consumer.pid}", kind=KIND_CONSUMER, pid=consumer.pid)
        assert_delivery(c, case.msg, port=rabbitmq.port, pid=consumer.pid)
        assert_child_of(c, p)
        assert_after(c, p)


def test_redelivery_after_nack_is_linked_too(scn: Scenario, rabbitmq: RabbitServer) -> None:
    """nack(requeue) then redelivery: two CONSUMER spans, both children of the PRODUCER span;
    the first ends at the nack, before the redelivery arrives (its status is not part of the
    contract); the second ends at the ack."""
    case = amqp_cases.redelivery(scn, rabbitmq)
    spans = scn.collect(3)
    p = publish_span(spans, case, rabbitmq.port)
    pid = case.consumers[0].pid
    first, second = exactly(by_kind_pid(spans, KIND_CONSUMER, pid), 2, "deliveries")
    assert_delivery(first, case.msg, port=rabbitmq.port, pid=pid, status=None)
    assert_delivery(second, case.msg, port=rabbitmq.port, pid=pid)
    for c in (first, second):
        assert_child_of(c, p)
        assert_after(c, p)
    assert first.end_ns <= second.start_ns, f"overlapping deliveries\n{fmt_spans([first, second])}"


def test_basic_get_is_a_receive(scn: Scenario, rabbitmq: RabbitServer) -> None:
    """basic.get: a CONSUMER span named `get {queue}`, child of the PRODUCER span."""
    case = amqp_cases.basic_get(scn, rabbitmq)
    spans = scn.collect(2)
    p = publish_span(spans, case, rabbitmq.port)
    getter = case.consumers[0]
    c = only(spans, "the get", kind=KIND_CONSUMER, pid=getter.pid)
    assert_delivery(c, case.msg, port=rabbitmq.port, pid=getter.pid, get=True)
    assert_child_of(c, p)
    assert_after(c, p)


def test_work_done_for_a_delivery_is_its_child(scn: Scenario, rabbitmq: RabbitServer,
                                              postgres: PgServer) -> None:
    """The consumer's HTTP call and SQL INSERT, made on the consuming thread before the ack,
    are children of the CONSUMER span and inside it; the HTTP server span is stitched to the
    consumer's CLIENT span as usual."""
    case = amqp_cases.consumer_work(scn, rabbitmq, postgres)
    spans = scn.collect(5)
    consumer = case.consumers[0]
    p = publish_span(spans, case, rabbitmq.port)
    c = only(spans, "the delivery", kind=KIND_CONSUMER, pid=consumer.pid)
    assert_delivery(c, case.msg, port=rabbitmq.port, pid=consumer.pid)
    assert_child_of(c, p)

    http = [s for s in spans if "http.request.method" in s.attributes]
    caller = Call(consumer.pid, [], 0, 0, "amqp_client", "python3")
    h_client, _ = http_pair(http, client=caller, server=case.service, method="GET",
                            path=case.user_path, template="/users/{id}")
    db_spans = [s for s in spans if s.kind == KIND_CLIENT and "db.system.name" in s.attributes]
    (db,) = match_statements(db_spans, [Stmt("INSERT", "shipments",
                                             "INSERT INTO shipments (order_id) VALUES ($1)")],
                             db=case.db, port=postgres.port, pid=consumer.pid)
    for child in (h_client, db):
        assert_child_of(child, c)
        assert_within(child, c)
    assert h_client.end_ns <= db.start_ns, "the HTTP call came before the INSERT"


def test_go_amqp091_publish_and_consume(scn: Scenario, rabbitmq: RabbitServer,
                                        goclient: Path) -> None:
    """A second client implementation (Go, amqp091-go): two publishes from one process, two
    deliveries to another, each delivery the child of its own publish."""
    case = amqp_cases.go_amqp091(scn, rabbitmq, goclient)
    spans = scn.collect(4)
    pubs = exactly(by_kind_pid(spans, KIND_PRODUCER, case.publisher.pid), 2, "publishes")
    dels = exactly(by_kind_pid(spans, KIND_CONSUMER, case.consumer.pid), 2, "deliveries")
    for p, c, msg in zip(pubs, dels, case.messages):
        assert_publish(p, msg, port=rabbitmq.port, pid=case.publisher.pid)
        assert_delivery(c, msg, port=rabbitmq.port, pid=case.consumer.pid)
        assert p.parent_span_id == "", fmt_span(p)
        assert_child_of(c, p)
        assert_after(c, p)
