"""Self-test of the PostgreSQL and RabbitMQ traffic the agent tests generate. Needs neither root
for eBPF nor the agent (root only because initdb runs as the postgres user).

Every case of pg_cases.py and amqp_cases.py runs here exactly as in the agent tests; each case
checks its own traffic (the clients' reports, the server's statement log, the deliveries), so
an agent test failure is never a traffic bug in disguise. That the servers stop without
leftovers is checked by their session fixtures' teardown (an error if a process survives).
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path

import pytest

import amqp_cases
import pg_cases
from pg_cases import reference_sanitise
from harness.pg import PgServer, norm_sql, text_matches
from harness.rabbit import RabbitServer
from harness.scenario import Scenario
from harness.spans import fmt_spans
from otlp_receiver import OtlpReceiver
from test_sdk_coexistence import sdk_order


@pytest.fixture
def bare(workroot: Path, request):
    """A Scenario with no agent and no receiver: just processes, always cleaned up."""
    d = workroot / request.node.name.replace("/", "_")
    d.mkdir()
    s = Scenario(None, None, d)
    try:
        yield s
    finally:
        s.close()
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("case", [pg_cases.simple_multi_statement,
                                  pg_cases.simple_error_stops_the_query,
                                  pg_cases.extended_and_prepared, pg_cases.pipelines],
                         ids=lambda f: f.__name__)
def test_pg_case_traffic(bare: Scenario, postgres: PgServer, case) -> None:
    """The case's own checks pass, and every expected db.query.text is what a straightforward
    sanitiser makes of a statement the server really logged."""
    c = case(bare, postgres)
    assert c.expected and c.run.pid in bare.pids
    sanitised = {norm_sql(reference_sanitise(piece))
                 for x in postgres.statements(c.run.app) for piece in x.text.split(";")}
    for st in c.expected:
        assert norm_sql(st.text) in sanitised, (st.text, sanitised)


def test_go_pg_traffic(bare: Scenario, postgres: PgServer, goclient: Path) -> None:
    c = pg_cases.go_lib_pq(bare, postgres, goclient)
    assert len(c.expected) == 10


def test_go_amqp_traffic(bare: Scenario, rabbitmq: RabbitServer, goclient: Path) -> None:
    c = amqp_cases.go_amqp091(bare, rabbitmq, goclient)
    assert c.publisher.pid != c.consumer.pid


@pytest.mark.parametrize("mode", ["extended", "prepared", "simple"])
def test_pgbench_traffic(bare: Scenario, postgres: PgServer, mode: str) -> None:
    """pgbench's statements, sanitised, are exactly 100 of each expected transaction
    statement plus the set-up ones."""
    since = postgres.log_size()
    c = pg_cases.pgbench_run(bare, postgres, mode)
    assert c.expected_spans == 7 * 100 + 2
    expected = pg_cases.pgbench_statements(mode)
    counts = Counter()
    for x in postgres.statements(c.run.app, since):
        text = reference_sanitise(x.text)
        names = [n for n, st in expected.items() if text_matches(text, st.text, st.pattern)]
        counts[names[0] if len(names) == 1 else text] += 1
    assert counts.pop("select count(*) from pgbench_branches") == 1
    assert len([k for k in counts if "pg_partitioned_table" in k]) == 1
    assert {k: v for k, v in counts.items() if "pg_partitioned_table" not in k} == {
        name: 100 for name in expected}



@pytest.mark.parametrize("case", [amqp_cases.direct_message, amqp_cases.with_traceparent,
                                  amqp_cases.same_body_twice, amqp_cases.fanout,
                                  amqp_cases.redelivery, amqp_cases.basic_get],
                         ids=lambda f: f.__name__)
def test_amqp_case_traffic(bare: Scenario, rabbitmq: RabbitServer, case) -> None:
    c = case(bare, rabbitmq)
    assert c.publisher.pid in bare.pids and all(x.pid in bare.pids for x in c.consumers)


def test_amqp_large_message_traffic(bare: Scenario, rabbitmq: RabbitServer) -> None:
    c = amqp_cases.direct_message(bare, rabbitmq, large=True)
    assert c.msg.body_size == amqp_cases.LARGE_BODY > 2 * 131072


def test_consumer_work_traffic(bare: Scenario, rabbitmq: RabbitServer,
                               postgres: PgServer) -> None:
    c = amqp_cases.consumer_work(bare, rabbitmq, postgres)
    assert f"GET {c.user_path}" in c.service.proc.stderr()  # the service's access log


@pytest.mark.parametrize("traceparent", [None, "00-4bf92f3577b34da6a3ce929d0e0e4736-"
                                               "00f067aa0ba902b7-01"], ids=["plain", "header"])
def test_shop_flow_traffic(bare: Scenario, rabbitmq: RabbitServer, postgres: PgServer,
                           traceparent) -> None:
    f = amqp_cases.shop_flow(bare, rabbitmq, postgres, [101, 102], traceparent)
    assert f.shop.pid in bare.pids and f.worker.pid in bare.pids


@pytest.mark.parametrize("traceparent", [None, "00-4bf92f3577b34da6a3ce929d0e0e4736-"
                                               "00f067aa0ba902b7-01"], ids=["plain", "header"])
def test_sdk_shop_flow_ground_truth(receiver: OtlpReceiver, workroot: Path,
                                    rabbitmq: RabbitServer, postgres: PgServer,
                                    traceparent) -> None:
    """No agent: apps/shop_sdk.py's SDK alone reports, per order, its SERVER span with the
    db, PRODUCER and CLIENT spans under it (sdk_order: the ground truth test_sdk_coexistence.py
    compares the agent's spans with), and the message names its (inner) PRODUCER span."""
    d = workroot / f"sdk-ground-truth-{traceparent is not None}"
    d.mkdir()
    s = Scenario(receiver, None, d)
    try:
        f = amqp_cases.sdk_shop_flow(s, rabbitmq, postgres, receiver.endpoint, [501, 502],
                                     traceparent)
        sdk = receiver.wait_for_spans(
            lambda x: x.resource.get("service.name") == f.shop.service_name, 15, 10)
        time.sleep(0.5)  # nothing more may come
        assert len(receiver.spans(lambda x: s.mine(x) or x.resource.get("service.name")
                                  == f.shop.service_name)) == 10, fmt_spans(sdk)
        orders = [sdk_order(sdk, f, o) for o in f.orders]
        traces = {x.server.trace_id for x in orders}
        assert len(traces) == (1 if traceparent else 2), fmt_spans(sdk)
    finally:
        s.close()
        shutil.rmtree(d, ignore_errors=True)
