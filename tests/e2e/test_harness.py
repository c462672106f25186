"""Self-test of the span assertions: they pass on a correct span pair and FAIL on each kind of
defect. Needs neither root nor the agent.

A hand-built OTLP export (what the agent should send for one curl -> service request) goes
through a private receiver; `Scenario.collect` + `http_pair` must accept it as is, and must
reject it after any one mutation. This is what keeps the agent tests from passing vacuously.
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

from harness.expect import http_pair
from harness.scenario import CURL_UA, Call, Scenario, Server
from otlp_receiver import OtlpReceiver

CPID, SPID, PORT, CPORT = 4_000_001, 4_000_002, 29999, 45678
BODY = 27  # len('{"id": "7", "name": "user"}'): the response body both sides saw
SECRET = "SECRET-e2e-selftest-token"


def kv(key: str, value) -> common_pb2.KeyValue:
    if isinstance(value, bool):
        v = common_pb2.AnyValue(bool_value=value)
    elif isinstance(value, int):
        v = common_pb2.AnyValue(int_value=value)
    else:
        v = common_pb2.AnyValue(string_value=value)
    return common_pb2.KeyValue(key=key, value=v)


def resource(svc: str, pid: int, exe: str) -> resource_pb2.Resource:
    return resource_pb2.Resource(attributes=[
        kv("service.name", svc), kv("process.pid", pid), kv("process.executable.name", exe),
        kv("host.name", socket.gethostname()), kv("telemetry.distro.name", "ebpf-agent")])


def good_pair(now: int) -> tuple[trace_pb2.Span, trace_pb2.Span]:
    """The CLIENT (curl) and SERVER (service) spans of GET /users/7?a=1 with status 200."""
    trace = os.urandom(16)
    common = [kv("http.request.method", "GET"), kv("url.path", "/users/7"),
              kv("url.scheme", "http"), kv("http.response.status_code", 200),
              kv("server.address", "127.0.0.1"), kv("server.port", PORT),
              kv("network.peer.address", "127.0.0.1"), kv("network.protocol.version", "1.1"),
              kv("url.query", "a=REDACTED"), kv("user_agent.original", CURL_UA),
              kv("http.response.body.size", BODY)]
    client = trace_pb2.Span(
        trace_id=trace, span_id=os.urandom(8), name="GET /users/{id}",
        kind=trace_pb2.Span.SPAN_KIND_CLIENT, start_time_unix_nano=now,
        end_time_unix_nano=now + 5_000_000,
        attributes=common + [kv("network.peer.port", PORT),
                             kv("url.full", f"http://127.0.0.1:{PORT}/users/7?a=REDACTED")])
    server = trace_pb2.Span(
        trace_id=trace, span_id=os.urandom(8), parent_span_id=client.span_id,
        name="GET /users/{id}", kind=trace_pb2.Span.SPAN_KIND_SERVER,
        start_time_unix_nano=now + 1_000_000, end_time_unix_nano=now + 4_000_000,
        attributes=common + [kv("network.peer.port", CPORT), kv("client.address", "127.0.0.1")])
    return client, server


def set_attr(span: trace_pb2.Span, key: str, value) -> None:
    for a in span.attributes:
        if a.key == key:
            a.CopyFrom(kv(key, value))
            return
    span.attributes.append(kv(key, value))


def send(port: int, client: trace_pb2.Span, server: trace_pb2.Span,
         client_res: resource_pb2.Resource | None = None, extra: list | None = None) -> None:
    req = trace_service_pb2.ExportTraceServiceRequest()
    for res, spans in ((client_res or resource("curl", CPID, "curl"), [client]),
                       (resource("service", SPID, "python3.11"), [server] + (extra or []))):
        rs = req.resource_spans.add(resource=res)
        rs.scope_spans.add().spans.extend(spans)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        trace_service_pb2_grpc.TraceServiceStub(ch).Export(req, timeout=5)


@pytest.fixture
def world(workroot: Path, request):
    rx = OtlpReceiver().start()
    d = workroot / request.node.name
    d.mkdir()
    scn = Scenario(rx, None, d, span_timeout=1.0, quiet=0.3)
    scn.pids |= {CPID, SPID}
    scn.ports.add(PORT)
    scn.secrets.append(SECRET)
    yield rx, scn
    rx.stop()
    shutil.rmtree(d, ignore_errors=True)


def verify(scn: Scenario) -> None:
    spans = scn.collect(2)
    call = Call(CPID, [], 0, 0, "curl", "curl")
    svc = Server(PORT, SPID, None, "service", "python3")  # type: ignore[arg-type]
    c, _ = http_pair(spans, client=call, server=svc, method="GET", path="/users/7", query="a=1",
                     template="/users/{id}", ua=CURL_UA, client_port=CPORT,
                     response_size=BODY)
    assert c.parent_span_id == "", "curl's CLIENT span must be a root"


def test_correct_pair_passes(world) -> None:
    rx, scn = world
    send(rx.port, *good_pair(time.time_ns()))
    verify(scn)


Mutation = Callable[[trace_pb2.Span, trace_pb2.Span], dict | None]


def drop_attr(span: trace_pb2.Span, key: str) -> None:
    span.attributes.pop([a.key for a in span.attributes].index(key))


def shift_back_an_hour(*spans: trace_pb2.Span) -> None:
    for x in spans:
        x.start_time_unix_nano -= 3_600_000_000_000
        x.end_time_unix_nano -= 3_600_000_000_000


def without_distro(res: resource_pb2.Resource) -> dict:
    keep = [a for a in res.attributes if a.key != "telemetry.distro.name"]
    return {"client_res": resource_pb2.Resource(attributes=keep)}


LEAKY_URL = f"http://127.0.0.1:{PORT}/users/7?a=1"
# defect -> (text the resulting AssertionError must contain, mutation of the good pair)
MUTATIONS: dict[str, tuple[str, Mutation]] = {
    "status code sent as a string": (
        "must be an int", lambda c, s: set_attr(s, "http.response.status_code", "200")),
    "wrong status code": (
        "http.response.status_code", lambda c, s: set_attr(c, "http.response.status_code", 201)),
    "query value not redacted": (
        "not fully redacted", lambda c, s: set_attr(s, "url.query", "a=1")),
    "query value leaked in url.full": ("url.full", lambda c, s: set_attr(c, "url.full", LEAKY_URL)),
    "route not templated": ("expected name", lambda c, s: setattr(s, "name", "GET /users/7")),
    "query in span name": ("span name", lambda c, s: setattr(c, "name", "GET /users/7?a=1")),
    "server not stitched to client": (
        "parent/child", lambda c, s: setattr(s, "parent_span_id", os.urandom(8))),
    "server in another trace": (
        "parent/child", lambda c, s: setattr(s, "trace_id", os.urandom(16))),
    "client not a root": ("root", lambda c, s: setattr(c, "parent_span_id", os.urandom(8))),
    "server ends after client": (
        "not inside", lambda c, s: setattr(s, "end_time_unix_nano", c.end_time_unix_nano + 10**7)),
    "zero duration": (
        "duration must be > 0",
        lambda c, s: setattr(c, "end_time_unix_nano", c.start_time_unix_nano)),
    "ERROR status on a 200": (
        "span status", lambda c, s: c.status.CopyFrom(trace_pb2.Status(code=2))),
    "wrong kind": (
        "unexpected kind", lambda c, s: setattr(s, "kind", trace_pb2.Span.SPAN_KIND_INTERNAL)),
    "duplicate attribute key": (
        "duplicate attribute keys", lambda c, s: s.attributes.append(kv("url.path", "/users/7"))),
    "missing network.peer.port": (
        "network.peer.port", lambda c, s: drop_attr(s, "network.peer.port")),
    "wrong client peer port": (
        "network.peer.port", lambda c, s: set_attr(s, "network.peer.port", CPORT + 1)),
    "user agent missing": ("user_agent.original", lambda c, s: drop_attr(c, "user_agent.original")),
    "secret header exported": (
        "secret",
        lambda c, s: set_attr(s, "http.request.header.authorization", f"Bearer {SECRET}")),
    "span from a foreign pid": (
        "did not start", lambda c, s: {"client_res": resource("curl", 1, "curl")}),
    "wrong service.name": (
        "service.name", lambda c, s: {"client_res": resource("curl-x", CPID, "curl")}),
    "wrong telemetry.distro.name": (
        "telemetry.distro.name", lambda c, s: without_distro(resource("curl", CPID, "curl"))),
    "one span too many": ("got 3", lambda c, s: {"extra": [s]}),
    "wrong response body size": (
        f"http.response.body.size={BODY + 1}",
        lambda c, s: set_attr(s, "http.response.body.size", BODY + 1)),
    "response body size missing": (
        "http.response.body.size=None", lambda c, s: drop_attr(c, "http.response.body.size")),
    "response body size as a string": (
        "must be an int", lambda c, s: set_attr(c, "http.response.body.size", str(BODY))),
    "request body size on a GET without a body": (
        "http.request.body.size=5", lambda c, s: set_attr(c, "http.request.body.size", 5)),
}


@pytest.mark.parametrize("mutation", MUTATIONS.keys())
def test_each_defect_is_caught(world, mutation: str) -> None:
    rx, scn = world
    client, server = good_pair(time.time_ns())
    expected_message, mutate = MUTATIONS[mutation]
    extra = mutate(client, server)
    send(rx.port, client, server, **(extra if isinstance(extra, dict) else {}))
    with pytest.raises(AssertionError, match=re.escape(expected_message)):
        verify(scn)


def test_missing_span_is_caught(world) -> None:
    rx, scn = world
    client, _ = good_pair(time.time_ns())
    req = trace_service_pb2.ExportTraceServiceRequest()
    req.resource_spans.add(resource=resource("curl", CPID, "curl")).scope_spans.add().spans.append(
        client)
    with grpc.insecure_channel(f"127.0.0.1:{rx.port}") as ch:
        trace_service_pb2_grpc.TraceServiceStub(ch).Export(req, timeout=5)
    with pytest.raises(AssertionError, match="expected exactly 2 spans"):
        scn.collect(2)

