"""The expected CLIENT + SERVER span pair for one HTTP request between two traced processes."""

from __future__ import annotations

from collections import Counter

from otlp_receiver import KIND_CLIENT, KIND_SERVER, ReceivedSpan

from .scenario import Call, Server
from .spans import (CLOCK_TOLERANCE_NS, KIND_NAMES, assert_attrs, assert_body_size,
                    assert_child_of, assert_name, assert_within, expected_rpc_status, fmt_span,
                    fmt_spans, only, redacted)

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
              proto: str = "1.1", response_size: int | None = None,
              request_size: int | None = None,
              scheme: str = "http") -> tuple[ReceivedSpan, ReceivedSpan]:
    """Finds and checks the CLIENT span (from `client`'s pid) and the SERVER span (from
    `server`'s pid) of one request; the SERVER span must be the CLIENT span's child and lie
    inside it. `client` may be a server process calling out (the chain tests).

    client_port: the client's ephemeral port, when the test knows it.
    response_size/request_size: the body sizes the client (or server) itself reports; both
    spans must carry exactly these http.*.body.size values (see assert_body_size). None: the
    test does not know the response size; the request size of a GET or HEAD is known to be 0
    (none of the tests' clients sends a body with them).
    scheme: "https" over TLS (url.scheme, and url.full on the CLIENT span).
    """
    __tracebackhide__ = True
    c = only(spans, f"client side of {method} {path}", kind=KIND_CLIENT, pid=client.pid,
             path=path)
    s = only(spans, f"server side of {method} {path}", kind=KIND_SERVER, pid=server.pid,
             path=path)
    assert_http_pair(c, s, client=client, server=server, method=method, path=path, query=query,
                     template=template, status=status, ua=ua, client_port=client_port,
                     proto=proto, response_size=response_size, request_size=request_size,
                     scheme=scheme)
    return c, s


def assert_http_pair(c: ReceivedSpan, s: ReceivedSpan, *, client: Call | Server,
                     server: Server, method: str, path: str, query: str | None = None,
                     template: str | None = None, status: int = 200, ua: str | None = None,
                     client_port: int | None = None, proto: str = "1.1",
                     response_size: int | None = None, request_size: int | None = None,
                     scheme: str = "http") -> None:
    """The checks of http_pair on a CLIENT span `c` and SERVER span `s` already picked."""
    __tracebackhide__ = True
    cpid, csvc, cexe = client.pid, client.service_name, client.exe
    spid, port, ssvc, sexe = server.pid, server.port, server.service_name, server.exe
    assert (c.kind, c.pid, s.kind, s.pid) == (KIND_CLIENT, cpid, KIND_SERVER, spid), (
        f"expected a CLIENT span from pid {cpid} and a SERVER span from pid {spid}:\n"
        f"{fmt_span(c)}\n{fmt_span(s)}")
    common = {"http.request.method": method, "url.path": path, "url.scheme": scheme,
              "http.response.status_code": status, "server.address": LOCALHOST,
              "server.port": port, "network.peer.address": LOCALHOST,
              "network.protocol.version": proto}
    qs = f"?{redacted(query)}" if query else ""
    assert_attrs(c, {**common, "network.peer.port": port,
                     "url.full": f"{scheme}://{LOCALHOST}:{port}{path}{qs}"})
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
        if response_size is not None:
            assert_body_size(span, "http.response.body.size", response_size)
        if request_size is None and method in ("GET", "HEAD"):
            request_size = 0
        if request_size is not None:
            assert_body_size(span, "http.request.body.size", request_size)
    assert_resource(c, csvc, cexe, cpid)
    assert_resource(s, ssvc, sexe, spid)
    assert_child_of(s, c)
    assert_within(s, c)


def sequential_pairs(spans: list[ReceivedSpan], client_pid: int, server_pid: int,
                     n: int) -> list[tuple[ReceivedSpan, ReceivedSpan]]:
    """The (CLIENT, SERVER) spans of `n` requests a client sent one after the other: exactly n
    CLIENT spans from `client_pid`, in start order (the i-th is the i-th request; none may
    overlap the next), each with exactly one child SERVER span from `server_pid`."""
    __tracebackhide__ = True
    cs = sorted((x for x in spans if x.kind == KIND_CLIENT and x.pid == client_pid),
                key=lambda x: x.start_ns)
    assert len(cs) == n, (f"expected {n} CLIENT spans from pid {client_pid}, got {len(cs)}:\n"
                          f"{fmt_spans(spans)}")
    for a, b in zip(cs, cs[1:]):
        assert a.end_ns <= b.start_ns + CLOCK_TOLERANCE_NS, (
            f"sequential requests overlap:\n{fmt_span(a)}\n{fmt_span(b)}")
    out = []
    for c in cs:
        kids = [x for x in spans if x.kind == KIND_SERVER and x.pid == server_pid
                and x.parent_span_id == c.span_id and x.trace_id == c.trace_id]
        assert len(kids) == 1, (f"expected one SERVER span from pid {server_pid} as the child of"
                                f"\n{fmt_span(c)}\nspans:\n{fmt_spans(spans)}")
        out.append((c, kids[0]))
    return out


def check_load_pairs(spans: list[ReceivedSpan], client_pid: int, server_pid: int, port: int,
                     per_key: dict, key, scheme: str, response_sizes: dict | None = None,
                     request_sizes: dict | None = None
                     ) -> list[tuple[ReceivedSpan, ReceivedSpan]]:
    """Concurrent requests (h2load -m > 1): exactly per_key[k][0] CLIENT spans from the
    client and as many SERVER spans from the server for each key k = key(span); every SERVER
    span is the child of its own CLIENT span (one-to-one, same key, inside its interval);
    the HTTP/2 attributes every span of the load must have; response_sizes/request_sizes:
    the exact http.*.body.size of both spans for the keys they name (see assert_body_size)."""
    __tracebackhide__ = True
    clients = [x for x in spans if x.kind == KIND_CLIENT]
    servers = [x for x in spans if x.kind == KIND_SERVER]
    assert {x.pid for x in clients} == {client_pid}, fmt_spans(clients)
    assert {x.pid for x in servers} == {server_pid}, fmt_spans(servers)
    want = {k: n for k, (n, _) in per_key.items()}
    for side in (clients, servers):
        got = Counter(key(x) for x in side)
        assert got == want, (f"{KIND_NAMES[side[0].kind] if side else ''} spans per key: "
                             f"{dict(got)}, expected {want}\n{fmt_spans(spans)}")
    by_id = {c.span_id: c for c in clients}
    parents = Counter(s.parent_span_id for s in servers)
    assert set(parents) <= set(by_id) and max(parents.values()) == 1, (
        "each SERVER span must be the child of its own CLIENT span:\n" + fmt_spans(spans))
    pairs = []
    for s in servers:
        c = by_id[s.parent_span_id]
        assert key(c) == key(s), f"paired across requests:\n{fmt_span(c)}\n{fmt_span(s)}"
        assert_child_of(s, c)
        assert_within(s, c)
        status = per_key[key(s)][1]
        common = {"http.request.method": "POST" if "rpc.system" in s.attributes else "GET",
                  "url.scheme": scheme, "network.protocol.version": "2",
                  "http.response.status_code": status, "server.port": port}
        assert_attrs(c, {**common, "server.address": LOCALHOST, "network.peer.port": port,
                         "url.full": f"{scheme}://{LOCALHOST}:{port}{c.attributes['url.path']}"})
        assert_attrs(s, {**common, "client.address": LOCALHOST})
        for span in (c, s):
            if key(s) in (response_sizes or {}):
                assert_body_size(span, "http.response.body.size", response_sizes[key(s)])
            if key(s) in (request_sizes or {}):
                assert_body_size(span, "http.request.body.size", request_sizes[key(s)])
        pairs.append((c, s))
    return pairs


def url_path(s: ReceivedSpan) -> str | None:
    return s.attributes.get("url.path")


def assert_grpc(s: ReceivedSpan, method: str, code: int, port: int) -> None:
    """A gRPC span of shop.Inventory/<method> that ended with `code`, to the server on `port`
    (server.address/server.port on a CLIENT span; server.port on a SERVER span)."""
    __tracebackhide__ = True
    expected = {"rpc.system": "grpc", "rpc.service": "shop.Inventory", "rpc.method": method,
                "rpc.grpc.status_code": code, "url.path": f"/shop.Inventory/{method}",
                "http.request.method": "POST", "http.response.status_code": 200,
                "network.protocol.version": "2", "server.port": port}
    if s.kind == KIND_CLIENT:
        expected.update({"server.address": LOCALHOST, "network.peer.address": LOCALHOST,
                         "network.peer.port": port})
    assert_attrs(s, expected)
    assert s.name == f"shop.Inventory/{method}", fmt_span(s)
    assert s.status_code == expected_rpc_status(s.kind, code), (
        f"status for gRPC code {code}\n{fmt_span(s)}")


def check_grpc_hops(spans: list[ReceivedSpan], *, client_pid: int, proxy: Server,
                    upstream: Server, calls: list[tuple[str, int]], scheme: str) -> None:
    """gRPC calls made one at a time through a proxy (nginx grpc_pass) on the same node.
    Per call (method, gRPC code), in the order made: client CLIENT -> proxy SERVER (stitched)
    -> proxy CLIENT (sent while the proxy handled that request) -> upstream SERVER (stitched);
    4 spans, one trace, each inside its parent, the status each side must report.
    proxy.port: the port the client called; scheme: the client's url.scheme."""
    __tracebackhide__ = True
    entries = sorted((x for x in spans if x.kind == KIND_CLIENT and x.pid == client_pid),
                     key=lambda x: x.start_ns)
    assert len(entries) == len(calls), fmt_spans(spans)
    for entry, (method, code) in zip(entries, calls):
        trace = [x for x in spans if x.trace_id == entry.trace_id]
        assert len(trace) == 4, f"{method}: expected 4 spans in its trace\n{fmt_spans(trace)}"
        hop = [entry]
        for kind, pid in ((KIND_SERVER, proxy.pid), (KIND_CLIENT, proxy.pid),
                          (KIND_SERVER, upstream.pid)):
            kids = [x for x in trace if x.parent_span_id == hop[-1].span_id]
            assert len(kids) == 1 and (kids[0].kind, kids[0].pid) == (kind, pid), (
                f"{method}: after\n{fmt_span(hop[-1])}\nexpected one child of kind {kind} "
                f"from pid {pid}:\n{fmt_spans(trace)}")
            assert_within(kids[0], hop[-1])
            hop.append(kids[0])
        for span, port in zip(hop, (proxy.port, proxy.port, upstream.port, upstream.port)):
            assert_grpc(span, method, code, port)
        assert hop[0].attributes.get("url.scheme") == scheme, fmt_span(hop[0])
        assert hop[2].attributes.get("url.scheme") == "http", fmt_span(hop[2])  # grpc://
