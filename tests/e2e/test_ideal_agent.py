"""The PostgreSQL (also over TLS) / RabbitMQ / queue-trace agent tests, run against a simulated
ideal agent.
Needs the servers (root for initdb) but not the agent.

Each agent test runs unchanged, with its real traffic, against a private receiver; right after
its case function has produced the traffic, the spans a correct agent would export for exactly
that traffic (built from the case's own record of it: pids, ports, message ids, the server's
statement log) are sent to the receiver. Every agent test must pass. Together with
test_harness_pg_amqp.py (each defect fails the assertions) this shows the agent tests can
pass and can fail: a test that could never pass would be as useless as one that never fails.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

import amqp_cases
import pg_cases
import test_postgres
import test_queue_trace
import test_rabbitmq
import test_tls
from harness.pg import PgServer, Stmt
from harness.rabbit import Msg, RabbitServer
from harness.scenario import CURL_UA, Scenario
from otlp_receiver import OtlpReceiver
from pg_cases import reference_sanitise

SK = trace_pb2.Span
MS = 1_000_000


def kv(key: str, value) -> common_pb2.KeyValue:
    if isinstance(value, bool):
        v = common_pb2.AnyValue(bool_value=value)
    elif isinstance(value, int):
        v = common_pb2.AnyValue(int_value=value)
    else:
        v = common_pb2.AnyValue(string_value=value)
    return common_pb2.KeyValue(key=key, value=v)


class Export:
    """Spans grouped by process, each with the resource the agent would give it."""

    def __init__(self, scn: Scenario) -> None:
        self.groups: dict[int, tuple[resource_pb2.Resource, list[trace_pb2.Span]]] = {}
        # Spans from up to 400 ms ago, but inside the test.
        self.t = max(time.time_ns() - 400 * MS, scn.t0_ns + MS)
        self.step_ms = 1.0

    def tick(self, ms: float | None = None) -> int:
        self.t += int((self.step_ms if ms is None else ms) * MS)
        return self.t

    def span(self, pid: int, svc: str, exe: str, name: str, kind: int, attrs: dict,
             start: int, end: int, parent: trace_pb2.Span | None = None,
             trace_parent: tuple[str, str] | None = None, error: bool = False
             ) -> trace_pb2.Span:
        if parent is not None:
            trace_id, parent_id = parent.trace_id, parent.span_id
        elif trace_parent is not None:
            trace_id, parent_id = bytes.fromhex(trace_parent[0]), bytes.fromhex(trace_parent[1])
        else:
            trace_id, parent_id = os.urandom(16), b""
        s = trace_pb2.Span(trace_id=trace_id, span_id=os.urandom(8), parent_span_id=parent_id,
                           name=name, kind=kind, start_time_unix_nano=start,
                           end_time_unix_nano=end,
                           attributes=[kv(k, v) for k, v in attrs.items() if v is not None],
                           status=trace_pb2.Status(code=2 if error else 0))
        if pid not in self.groups:
            self.groups[pid] = (resource_pb2.Resource(attributes=[
                kv("service.name", svc), kv("process.pid", pid),
                kv("process.executable.name", exe), kv("host.name", socket.gethostname()),
                kv("telemetry.distro.name", "ebpf-agent")]), [])
        self.groups[pid][1].append(s)
        return s

    def send(self, rx: OtlpReceiver) -> None:
        req = trace_service_pb2.ExportTraceServiceRequest()
        for res, spans in self.groups.values():
            req.resource_spans.add(resource=res).scope_spans.add().spans.extend(spans)
        with grpc.insecure_channel(f"127.0.0.1:{rx.port}") as ch:
            trace_service_pb2_grpc.TraceServiceStub(ch).Export(req, timeout=5)

    # -- one span per protocol exchange --
    def statement(self, pid: int, svc: str, st: Stmt, db: str | None, port: int,
                  text: str | None = None, parent=None, start=None, end=None):
        text = st.text if text is None else text
        attrs = {"db.system.name": "postgresql", "db.namespace": db,
                 "db.operation.name": st.op if st.text is not None else "EXECUTE",
                 "db.collection.name": st.table, "db.query.text": text or None,
                 "server.address": "127.0.0.1", "server.port": port,
                 "network.peer.address": "127.0.0.1", "network.peer.port": port,
                 "db.response.returned_rows": st.rows,
                 "db.response.status_code": st.sqlstate, "error.type": st.sqlstate}
        if st.text is None:
            attrs["db.postgresql.statement_text_unknown"] = True
        start = self.tick() if start is None else start
        end = self.tick() if end is None else end
        return self.span(pid, svc, "x", st.name, SK.SPAN_KIND_CLIENT, attrs, start, end,
                         parent=parent, error=st.sqlstate is not None)

    def message(self, pid: int, svc: str, m: Msg, port: int, op: str, parent=None,
                trace_parent=None, start=None, end=None):
        verb, op_type, kind = {"publish": ("publish", "send", SK.SPAN_KIND_PRODUCER),
                               "deliver": ("deliver", "process", SK.SPAN_KIND_CONSUMER),
                               "get": ("get", "receive", SK.SPAN_KIND_CONSUMER)}[op]
        attrs = {"messaging.system": "rabbitmq", "messaging.operation.type": op_type,
                 "messaging.operation.name": op, "messaging.destination.name": m.destination,
                 "messaging.rabbitmq.destination.routing_key": m.routing_key,
                 "messaging.message.id": m.message_id,
                 "messaging.message.conversation_id": m.correlation_id,
                 "messaging.message.body.size": m.body_size,
                 "server.address": "127.0.0.1", "server.port": port}
        start = self.tick() if start is None else start
        end = self.tick() if end is None else end
        return self.span(pid, svc, "python3", f"{verb} {m.destination}", kind, attrs, start,
                         end, parent=parent, trace_parent=trace_parent)

    def http(self, client: tuple[int, str, str], server: tuple[int, str], port: int, path: str,
             route: str, client_port: int, ua: str | None, parent=None, trace_parent=None,
             inside=None):
        """CLIENT and SERVER spans of one GET; the server one the client one's child."""
        common = {"http.request.method": "GET", "url.path": path, "url.scheme": "http",
                  "http.response.status_code": 200, "server.address": "127.0.0.1",
                  "server.port": port, "network.peer.address": "127.0.0.1",
                  "network.protocol.version": "1.1", "user_agent.original": ua}
        c0 = self.tick()
        c = self.span(*client, f"GET {route}", SK.SPAN_KIND_CLIENT,
                      {**common, "network.peer.port": port,
                       "url.full": f"http://127.0.0.1:{port}{path}"}, c0, c0 + 10 * MS,
                      parent=parent, trace_parent=trace_parent)
        s = self.span(server[0], server[1], "python3", f"GET {route}", SK.SPAN_KIND_SERVER,
                      {**common, "client.address": "127.0.0.1", "network.peer.port": client_port},
                      c0 + MS, c0 + 9 * MS, parent=c)
        return c, s


# -- synthesising what an ideal agent sends for each case ------------------------------------

def sim_pg(case: pg_cases.Case, scn: Scenario, pg: PgServer, *_) -> None:
    x = Export(scn)
    svc = "psql" if case.run.rows == [] else "pg_client"
    for st in case.expected:
        x.statement(case.run.pid, svc, st, case.db, pg.port)
    x.send(scn.receiver)


def sim_pgbench(case: pg_cases.PgbenchCase, scn: Scenario, pg: PgServer, *_) -> None:
    x = Export(scn)
    x.step_ms = 0.2  # 702 statements in 280 ms
    expected = pg_cases.pgbench_statements(case.mode)
    for logged in pg.statements(case.run.app):
        text = reference_sanitise(logged.text).rstrip(";")
        names = [n for n, st in expected.items() if re.fullmatch(
            st.pattern or re.escape(st.text), text)]
        if names:
            st = expected[names[0]]
        elif "pgbench_branches" in text:
            st = Stmt("SELECT", "pgbench_branches", text, rows=1)
        else:
            st = Stmt("SELECT", None, text, rows=1)
        x.statement(case.run.pid, "pgbench", st, case.db, pg.port, text=text)
    x.send(scn.receiver)


def sim_mq(case: amqp_cases.MqCase, scn: Scenario, rabbit: RabbitServer, *_) -> None:
    x = Export(scn)
    get = case.consumers[0].rows[0]["op"] == "get"
    tp = case.traceparent.split("-")[1:3] if case.traceparent else None
    pubs = [x.message(case.publisher.pid, "amqp_client", case.msg, rabbit.port, "publish",
                      trace_parent=tp) for _ in case.publisher.rows]
    for consumer in case.consumers:
        for n, row in enumerate(consumer.rows):
            x.message(consumer.pid, "amqp_client", case.msg, rabbit.port,
                      "get" if get else "deliver", parent=pubs[min(n, len(pubs) - 1)])
    x.send(scn.receiver)


def sim_work(case: amqp_cases.WorkCase, scn: Scenario, rabbit: RabbitServer,
             pg: PgServer) -> None:
    x = Export(scn)
    pid = case.consumers[0].pid
    p = x.message(case.publisher.pid, "amqp_client", case.msg, rabbit.port, "publish")
    c0 = x.tick()
    x.tick(30)
    c = x.message(pid, "amqp_client", case.msg, rabbit.port, "deliver", parent=p, start=c0,
                  end=x.t + 30 * MS)
    x.http((pid, "amqp_client", "python3"), (case.service.pid, "service"), case.service.port,
           case.user_path, "/users/{id}", 1, None, parent=c)
    x.tick(10)
    x.statement(pid, "amqp_client",
                Stmt("INSERT", "shipments", "INSERT INTO shipments (order_id) VALUES ($1)"),
                case.db, pg.port, parent=c)
    x.send(scn.receiver)


def sim_go_mq(case: amqp_cases.GoCase, scn: Scenario, rabbit: RabbitServer, *_) -> None:
    x = Export(scn)
    pubs = [x.message(case.publisher.pid, "goclient", m, rabbit.port, "publish")
            for m in case.messages]
    for p, m in zip(pubs, case.messages):
        x.message(case.consumer.pid, "goclient", m, rabbit.port, "deliver", parent=p)
    x.send(scn.receiver)


def sim_flow(flow: amqp_cases.Flow, scn: Scenario, rabbit: RabbitServer, pg: PgServer,
             *_) -> None:
    x = Export(scn)
    tp = flow.traceparent.split("-")[1:3] if flow.traceparent else None
    for order, row in zip(flow.orders, flow.call.rows):
        msg = flow.messages[order]
        curl_c, shop_s = x.http((flow.call.pid, "curl", "curl"), (flow.shop.pid, "shop"),
                                flow.shop.port, f"/order/{order}", "/order/{id}",
                                row["local_port"], CURL_UA, trace_parent=tp)
        t = shop_s.start_time_unix_nano
        x.statement(flow.shop.pid, "shop", test_queue_trace.SHOP_INSERT, flow.db, pg.port,
                    parent=shop_s, start=t + MS, end=t + 2 * MS)
        # A forwarded header of the trace the thread handles: the SERVER span is the parent.
        p = x.message(flow.shop.pid, "shop", msg, rabbit.port, "publish", parent=shop_s,
                      start=t + 3 * MS, end=t + 4 * MS)
        c = x.message(flow.worker.pid, "shop_worker", msg, rabbit.port, "deliver", parent=p,
                      start=t + 5 * MS, end=t + 20 * MS)
        x.statement(flow.worker.pid, "shop_worker", test_queue_trace.WORKER_INSERT, flow.db,
                    pg.port, parent=c, start=t + 6 * MS, end=t + 7 * MS)
        x.tick(30)
    x.send(scn.receiver)


# -- running each agent test with the simulation ------------------------------------------

@pytest.fixture
def sim_scn(workroot: Path, request):
    rx = OtlpReceiver().start()
    d = workroot / re.sub(r"[^\w.-]+", "_", request.node.name)
    d.mkdir()
    scn = Scenario(rx, None, d, quiet=0.3)
    request.node.e2e_scenario = scn
    try:
        yield scn
    finally:
        scn.close()
        rx.stop()
        shutil.rmtree(d, ignore_errors=True)


def simulate(monkeypatch, module, case_name: str, synth) -> None:
    real = getattr(module, case_name)

    def with_ideal_agent(*args, **kwargs):
        case = real(*args, **kwargs)
        synth(case, *args)
        return case
    monkeypatch.setattr(module, case_name, with_ideal_agent)


PG_TESTS = [("simple_multi_statement", test_postgres.test_simple_query_with_four_statements),
            ("simple_error_stops_the_query",
             test_postgres.test_error_stops_a_multi_statement_query),
            ("extended_and_prepared",
             test_postgres.test_extended_protocol_prepared_statement_and_transaction),
            ("pipelines", test_postgres.test_pipelines_executemany_and_skipped_statements)]


@pytest.mark.parametrize("case,test", PG_TESTS, ids=[c for c, _ in PG_TESTS])
def test_postgres_tests_pass(sim_scn, postgres, monkeypatch, case, test) -> None:
    simulate(monkeypatch, pg_cases, case, sim_pg)
    test(sim_scn, postgres)


def test_postgres_go_test_passes(sim_scn, postgres, goclient, monkeypatch) -> None:
    simulate(monkeypatch, pg_cases, "go_lib_pq", sim_pg)
    test_postgres.test_go_lib_pq_statements(sim_scn, postgres, goclient)


@pytest.mark.parametrize("mode", ["extended", "prepared", "simple"])
def test_pgbench_test_passes(sim_scn, postgres, monkeypatch, mode) -> None:
    simulate(monkeypatch, pg_cases, "pgbench_run", sim_pgbench)
    test_postgres.test_pgbench_one_span_per_statement(sim_scn, postgres, mode)


@pytest.mark.parametrize("case", ["simple_multi_statement", "extended_and_prepared"])
def test_postgres_tls_tests_pass(sim_scn, postgres_tls, monkeypatch, case) -> None:
    simulate(monkeypatch, pg_cases, case, sim_pg)
    test_tls.test_postgres_statements_over_tls(sim_scn, postgres_tls, case)


def test_pgbench_tls_test_passes(sim_scn, postgres_tls, monkeypatch) -> None:
    simulate(monkeypatch, pg_cases, "pgbench_run", sim_pgbench)
    test_tls.test_pgbench_over_tls(sim_scn, postgres_tls)


MQ_TESTS = [("direct_message", lambda s, r: test_rabbitmq.test_publish_and_deliver_are_linked(
                s, r, False)),
            ("direct_message", lambda s, r: test_rabbitmq.test_publish_and_deliver_are_linked(
                s, r, True)),
            ("with_traceparent", test_rabbitmq.test_traceparent_in_the_message_headers),
            ("same_body_twice", test_rabbitmq.test_same_body_twice_two_links),
            ("fanout", test_rabbitmq.test_fanout_one_publish_two_consumers),
            ("redelivery", test_rabbitmq.test_redelivery_after_nack_is_linked_too),
            ("basic_get", test_rabbitmq.test_basic_get_is_a_receive)]


@pytest.mark.parametrize("case,test", MQ_TESTS,
                         ids=["small", "large"] + [c for c, _ in MQ_TESTS[2:]])
def test_rabbitmq_tests_pass(sim_scn, rabbitmq, monkeypatch, case, test) -> None:
    simulate(monkeypatch, amqp_cases, case, sim_mq)
    test(sim_scn, rabbitmq)


def test_rabbitmq_work_test_passes(sim_scn, rabbitmq, postgres, monkeypatch) -> None:
    simulate(monkeypatch, amqp_cases, "consumer_work", sim_work)
    test_rabbitmq.test_work_done_for_a_delivery_is_its_child(sim_scn, rabbitmq, postgres)


def test_rabbitmq_go_test_passes(sim_scn, rabbitmq, goclient, monkeypatch) -> None:
    simulate(monkeypatch, amqp_cases, "go_amqp091", sim_go_mq)
    test_rabbitmq.test_go_amqp091_publish_and_consume(sim_scn, rabbitmq, goclient)


@pytest.mark.parametrize("header", [False, True])
def test_queue_trace_tests_pass(sim_scn, rabbitmq, postgres, monkeypatch, header) -> None:
    simulate(monkeypatch, amqp_cases, "shop_flow", sim_flow)
    if header:
        test_queue_trace.test_order_flow_with_traceparent_in_the_message(sim_scn, rabbitmq,
                                                                         postgres)
    else:
        test_queue_trace.test_order_flow_is_one_trace(sim_scn, rabbitmq, postgres)
