"""Coverage under concurrent load: pgbench and a pika publisher/consumer run at the same time,
and every executed statement and every message must have exactly one span — counted against
what the clients themselves report (pgbench's processed transactions, the publisher's
confirmed publishes, the consumer's acked deliveries).

The publisher sends the SAME message N times (same body, same properties), so every copy has
the same content fingerprint: each delivery must still link to a distinct publish, in order.
"""

from __future__ import annotations

import pg_cases
from harness.pg import PgServer
from harness.procs import wait_until
from harness.rabbit import RabbitServer, amqp_argv, finish, json_rows, start_consumer, unique, use_broker
from harness.scenario import Scenario
from harness.spans import KIND_CLIENT, KIND_CONSUMER, KIND_PRODUCER, fmt_spans

MESSAGES = 200


def test_pgbench_and_pika_load_one_span_per_operation(scn: Scenario, postgres: PgServer,
                                                      rabbitmq: RabbitServer) -> None:
    use_broker(scn, rabbitmq)
    queue = unique("load")
    consumer = start_consumer(scn, rabbitmq, queue, "--count", str(MESSAGES))
    publisher = scn.spawn("publish", amqp_argv(rabbitmq, "publish", "--exchange", "",
                                               "--routing-key", queue, "--body-size", "64",
                                               "--count", str(MESSAGES)))
    bench = pg_cases.pgbench_run(scn, postgres, "extended")  # runs while messages flow
    wait_until(lambda: publisher.poll() is not None, 60, "the publisher to finish", interval=0.1)
    assert publisher.poll() == 0, publisher.tail()
    published = json_rows(publisher)
    delivered = finish(consumer, MESSAGES, timeout=60).rows
    assert len(published) == MESSAGES and all(r.get("confirmed", True) for r in published)
    assert len(delivered) == MESSAGES and all(r["acked"] for r in delivered)

    spans = scn.collect(bench.expected_spans + 2 * MESSAGES)
    db = [s for s in spans if s.kind == KIND_CLIENT and s.pid == bench.run.pid]
    producers = [s for s in spans if s.kind == KIND_PRODUCER and s.pid == publisher.pid]
    consumers = [s for s in spans if s.kind == KIND_CONSUMER and s.pid == consumer.pid]
    assert len(db) == bench.expected_spans, f"{len(db)} statement spans for {bench.expected_spans}"
    assert len(producers) == MESSAGES and len(consumers) == MESSAGES, fmt_spans(spans[:20])
    by_id = {p.span_id: p for p in producers}
    parents = [c.parent_span_id for c in consumers]
    assert all(p in by_id for p in parents), "a delivery not linked to a publish"
    assert len(set(parents)) == MESSAGES, "two deliveries linked to the same publish"
    for c in consumers:
        assert c.trace_id == by_id[c.parent_span_id].trace_id
