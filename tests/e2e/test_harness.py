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

from harness.console import Request, check_console_http, parse_output
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
    "incomplete exchange with a status code": (
        "incomplete exchange with response attributes",
        lambda c, s: set_attr(s, "error.type", "response_incomplete")),
    "incomplete exchange without ERROR status": (
        "without ERROR status",
        lambda c, s: [drop_attr(s, "http.response.status_code"),
                      drop_attr(s, "http.response.body.size"),
                      set_attr(s, "error.type", "response_incomplete")] and None),
    "timestamps from the past": ("got 0", lambda c, s: shift_back_an_hour(c, s)),
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


# -- the console-mode checks (harness/console.py) --------------------------------------------

CONSOLE_PORT, CURL_PID, HTTPD_PID = 28888, 4_000_011, 4_000_012
CONSOLE_REQUESTS = [Request("/x", 41001, 6, "1.0"), Request("/y", 41002, 37, "1.0")]


def console_lines() -> list[str]:
    """What a correct agent prints for CONSOLE_REQUESTS (console.rs format_span)."""
    lines = []
    for r in CONSOLE_REQUESTS:
        trace, cspan, sspan = os.urandom(16).hex(), os.urandom(8).hex(), os.urandom(8).hex()
        common = (f"http.request.method=GET url.path={r.path} url.scheme=http")
        tail = (f"network.peer.address=127.0.0.1 network.local.address=127.0.0.1 "
                f"network.transport=tcp network.type=ipv4 user_agent.original={CURL_UA} "
                f"http.response.status_code=200 http.response.body.size={r.body_size} "
                f"network.protocol.version={r.version}")
        lines.append(
            f"06:20:01.123Z CLIENT GET  1.2ms UNSET trace={trace} span={cspan} parent=- "
            f"svc=curl pid={CURL_PID} {common} server.address=127.0.0.1 "
            f"server.port={CONSOLE_PORT} url.full=http://127.0.0.1:{CONSOLE_PORT}{r.path} "
            f"network.peer.port={CONSOLE_PORT} network.local.port={r.local_port} {tail}")
        lines.append(
            f"06:20:01.124Z SERVER GET  812µs UNSET trace={trace} span={sspan} parent={cspan} "
            f"svc=http.server pid={HTTPD_PID} {common} server.address=127.0.0.1 "
            f"server.port={CONSOLE_PORT} client.address=127.0.0.1 client.port={r.local_port} "
            f"network.peer.port={r.local_port} network.local.port={CONSOLE_PORT} {tail}")
    return lines


def check_console(lines: list[str]) -> None:
    check_console_http(parse_output("\n".join(lines) + "\n"), client_pid=CURL_PID,
                       client_svc="curl", server_pid=HTTPD_PID, server_svc="http.server",
                       port=CONSOLE_PORT, ua=CURL_UA, requests=CONSOLE_REQUESTS)


def test_console_correct_output_passes() -> None:
    check_console(console_lines())


def _sub(i: int, old: str, new: str) -> Callable[[list[str]], list[str]]:
    def mutate(lines: list[str]) -> list[str]:
        assert old in lines[i], (old, lines[i])
        lines[i] = lines[i].replace(old, new, 1)
        return lines
    return mutate


def _reparent(lines: list[str]) -> list[str]:
    lines[1] = re.sub(r"parent=[0-9a-f]{16}", f"parent={os.urandom(8).hex()}", lines[1])
    return lines


def _retrace(lines: list[str]) -> list[str]:
    lines[3] = re.sub(r"trace=[0-9a-f]{32}", f"trace={os.urandom(16).hex()}", lines[3])
    return lines


CONSOLE_MUTATIONS: dict[str, tuple[str, Callable[[list[str]], list[str]]]] = {
    "a SERVER line missing": ("expected 2 CLIENT lines", lambda ls: ls[:-1]),
    "a line twice": ("expected 2 CLIENT lines", lambda ls: ls + ls[:1]),
    "SERVER line not stitched": ("child", _reparent),
    "SERVER line in another trace": ("child", _retrace),
    "client line not a root": ("root", _sub(0, "parent=-", f"parent={'ab' * 8}")),
    "wrong response body size": ("http.response.body.size", _sub(1, "body.size=6", "body.size=7")),
    "response body size missing": ("http.response.body.size",
                                   _sub(2, " http.response.body.size=37", "")),
    "wrong peer port on the server": ("network.peer.port",
                                      _sub(3, "network.peer.port=41002", "network.peer.port=1")),
    "wrong status code": ("http.response.status_code", _sub(0, "status_code=200", "status_code=204")),
    "ERROR status": ("span status must be UNSET", _sub(1, " UNSET ", " ERROR ")),
    "garbage on stdout": ("not a console span line", lambda ls: ls + ["hello"]),
    "a value with a space unquoted": ("unparseable attributes",
                                      _sub(0, f"user_agent.original={CURL_UA}",
                                           "user_agent.original=curl 8")),
    "wrong pid": ("expected 2 CLIENT lines", _sub(2, f"pid={CURL_PID}", "pid=1")),
}


@pytest.mark.parametrize("mutation", CONSOLE_MUTATIONS.keys())
def test_console_each_defect_is_caught(mutation: str) -> None:
    expected_message, mutate = CONSOLE_MUTATIONS[mutation]
    with pytest.raises(AssertionError, match=re.escape(expected_message)):
        check_console(mutate(console_lines()))
