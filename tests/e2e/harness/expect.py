"""The expected CLIENT + SERVER span pair for one HTTP request between two traced processes."""

from __future__ import annotations

from otlp_receiver import KIND_CLIENT, KIND_SERVER, ReceivedSpan

from .scenario import Call, Server
from .spans import (assert_attrs, assert_body_size, assert_child_of, assert_name, assert_within,
                    fmt_span, only, redacted)

LOCALHOST = "127.0.0.1"


def assert_resource(s: ReceivedSpan, service_name: str, exe_prefix: str, pid: int) -> None:
    __tracebackhide__ = True
    r = s.resource
    assert r.get("service.name") == service_name, f"service.name != {service_name!r}\n{fmt_span(s)}"
    assert r.get("process.pid") == pid, f"process.pid != {pid}\n{fmt_span(s)}"
    exe = r.get("process.executable.name")
    assert isinstance(exe, str) and exe.startswith(exe_prefix), (
        f"process.executable.name={exe!r}, expected {exe_prefix!r}...\n{fmt_span(s)}")


def http_pair(spans: list[ReceivedSpan], *, client: Call | Server, server: Server,
              method: str, path: str, query: str | None = None, template: str | None = None,
              status: int = 200, ua: str | None = None, client_port: int | None = None,
              proto: str = "1.1", response_size: tuple[int, ...] = (),
              request_size: tuple[int, ...] = ()) -> tuple[ReceivedSpan, ReceivedSpan]:
    """Finds and checks the CLIENT span (from `client`'s pid) and the SERVER span (from
    `server`'s pid) of one request; the SERVER span must be the CLIENT span's child and lie
    inside it. `client` may be a server process calling out (the chain tests).

    client_port: the client's ephemeral port, when the test knows it.
    response_size/request_size: allowed values of http.*.body.size when the agent sets them.
    """
    __tracebackhide__ = True
    cpid, csvc, cexe = client.pid, client.service_name, client.exe
    spid, port, ssvc, sexe = server.pid, server.port, server.service_name, server.exe
    c = only(spans, f"client side of {method} {path}", kind=KIND_CLIENT, pid=cpid, path=path)
    s = only(spans, f"server side of {method} {path}", kind=KIND_SERVER, pid=spid, path=path)

    common = {"http.request.method": method, "url.path": path, "url.scheme": "http",
              "http.response.status_code": status, "server.address": LOCALHOST,
              "server.port": port, "network.peer.address": LOCALHOST,
              "network.protocol.version": proto}
    qs = f"?{redacted(query)}" if query else ""
    assert_attrs(c, {**common, "network.peer.port": port,
                     "url.full": f"http://{LOCALHOST}:{port}{path}{qs}"})
    assert_attrs(s, {**common, "client.address": LOCALHOST,
                     **({"network.peer.port": client_port} if client_port else {})})
    for span in (c, s):
        assert_name(span, method, path, template)
        if query:
            assert_attrs(span, {"url.query": redacted(query)})
        else:
            assert "url.query" not in span.attributes, f"url.query but no query\n{fmt_span(span)}"
        if ua:
            assert_attrs(span, {"user_agent.original": ua})
        else:
            assert "user_agent.original" not in span.attributes, (
                f"user_agent.original although none was sent\n{fmt_span(span)}")
        if response_size:
            assert_body_size(span, "http.response.body.size", *response_size)
        if request_size:
            assert_body_size(span, "http.request.body.size", *request_size)
    assert_resource(c, csvc, cexe, cpid)
    assert_resource(s, ssvc, sexe, spid)
    assert_child_of(s, c)
    assert_within(s, c)
    return c, s
