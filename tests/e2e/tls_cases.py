"""The traffic of each TLS test (test_tls.py), checked against the clients' own reports.

Each case starts real servers (nginx, the Go and node HTTPS servers, grpcio) in the test's
Scenario, runs real clients (curl, h2load, Python http.client, the Go client, grpcio) and
checks that the traffic is what the span assertions assume: status codes, negotiated protocol
(ALPN h2 vs. http/1.1), one kept-alive connection, h2load's own request and status counts.
test_apps_tls.py runs every case with no agent, so a span test never fails because of its
traffic.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from harness.pg import PgServer
from harness.procs import free_port
from harness.scenario import Call, Scenario, Server
from harness.tls import (GRPC_HEADERS, Certs, GoRun, GrpcServer, H2load, go_client,
                         go_server, grpc_client, grpc_frame_file, grpc_server, h2load,
                         nginx_tls, node_server)

# (path, status) of the nginx TLS server's routes, in the order the clients request them.
NGINX_ROUTES = [("/index.html", 200), ("/missing", 404), ("/boom", 500)]
# (path, status) of the Go and node servers' routes.
APP_ROUTES = [("/hello", 200), ("/missing", 404), ("/boom", 500)]
# (method, gRPC status name, code) of apps/grpc_app.py's shop.Inventory.
GRPC_CALLS = [("Reserve", "OK", 0), ("Missing", "NOT_FOUND", 5), ("Broken", "UNAVAILABLE", 14)]
GRPC_CODES = {m: code for m, _, code in GRPC_CALLS}


def _urls(port: int, routes: list[tuple[str, int]], scheme: str = "https") -> list[str]:
    return [f"{scheme}://127.0.0.1:{port}{path}" for path, _ in routes]


def _check_curl(call: Call, routes: list[tuple[str, int]], http2: bool) -> None:
    assert [r["http_code"] for r in call.rows] == [s for _, s in routes], call.rows
    assert [r["num_connects"] for r in call.rows] == [1] + [0] * (len(routes) - 1), (
        f"curl did not keep its one TLS connection: {call.rows}")
    assert {r["http_version"] for r in call.rows} == {"2" if http2 else "1.1"}, call.rows
    assert len({r["local_port"] for r in call.rows}) == 1, call.rows


# -- nginx ----------------------------------------------------------------------------------

@dataclass
class CurlCase:
    server: Server
    call: Call
    routes: list[tuple[str, int]]
    proto: str  # network.protocol.version: "1.1" or "2"
    scheme: str = "https"


def curl_to_nginx(scn: Scenario, certs: Certs, http2: bool) -> CurlCase:
    """curl --http1.1 / --http2 over TLS to nginx: static file, 404, 500 on one connection."""
    ngx = nginx_tls(scn, certs, free_port()).server
    call = scn.curl(*_urls(ngx.port, NGINX_ROUTES), http2=http2, cacert=certs.ca)
    _check_curl(call, NGINX_ROUTES, http2)
    assert call.rows[0]["size_download"] == (ngx.root / "index.html").stat().st_size
    return CurlCase(ngx, call, NGINX_ROUTES, "2" if http2 else "1.1")


def pyclient_to_nginx(scn: Scenario, certs: Certs) -> CurlCase:
    """Python http.client over the ssl module (SSL_write_ex/SSL_read_ex) to nginx, one
    kept-alive HTTP/1.1 connection."""
    ngx = nginx_tls(scn, certs, free_port()).server
    call = scn.client(ngx.port, *[f"GET {p}" for p, _ in NGINX_ROUTES], ca=certs.ca)
    assert [r["status"] for r in call.rows] == [s for _, s in NGINX_ROUTES], call.rows
    assert [r["connects"] for r in call.rows] == [1] * len(NGINX_ROUTES), call.rows
    assert len({r["local_port"] for r in call.rows}) == 1, call.rows
    return CurlCase(ngx, call, NGINX_ROUTES, "1.1")


@dataclass
class H2loadCase:
    server: Server
    run: H2load
    per_path: dict[str, tuple[int, int]]  # path -> (requests, HTTP status)


H2LOAD_N, H2LOAD_C, H2LOAD_M = 40, 2, 4


def h2load_to_nginx(scn: Scenario, certs: Certs) -> H2loadCase:
    """h2load -n 40 -c 2 -m 4 over TLS (ALPN h2) to nginx, alternating /index.html and
    /missing: h2load's own summary says 40 done, 20 2xx and 20 4xx (which h2load counts as
    "failed": a response, not a stream error)."""
    ngx = nginx_tls(scn, certs, free_port()).server
    urls = _urls(ngx.port, NGINX_ROUTES[:2])
    run = h2load(scn, urls, n=H2LOAD_N, c=H2LOAD_C, m=H2LOAD_M)
    half = H2LOAD_N // 2
    assert run.protocol == "h2", run.stdout
    assert (run.total, run.started, run.done, run.succeeded, run.failed, run.errored,
            run.timeout) == (H2LOAD_N, H2LOAD_N, H2LOAD_N, half, half, 0, 0), run.stdout
    assert run.status == {"2xx": half, "3xx": 0, "4xx": half, "5xx": 0}, run.stdout
    return H2loadCase(ngx, run, {"/index.html": (half, 200), "/missing": (half, 404)})


# -- gRPC -----------------------------------------------------------------------------------

@dataclass
class GrpcLoadCase:
    grpc: GrpcServer
    runs: list[tuple[str, H2load]]  # (method, the h2load run that called only that method)


def _grpc_load(scn: Scenario, url: str, method: str, n: int, c: int, m: int,
               proto: str) -> H2load:
    run = h2load(scn, [url], n=n, c=c, m=m, headers=GRPC_HEADERS, data=grpc_frame_file(scn))
    assert run.protocol == proto, run.stdout
    # gRPC answers HTTP 200 whatever the call's status (that is in the trailers).
    assert (run.done, run.succeeded, run.status["2xx"]) == (n, n, n), run.stdout
    return run


def h2load_grpc_h2c(scn: Scenario) -> GrpcLoadCase:
    """h2load as a gRPC client over h2c, straight to the grpcio server: 20 Reserve (OK) with
    -c 2 -m 4, then 6 Broken (UNAVAILABLE) with -c 1 -m 2 (one length-prefixed message each,
    content-type application/grpc, te: trailers)."""
    g = grpc_server(scn)
    base = f"http://127.0.0.1:{g.server.port}/shop.Inventory"
    runs = [("Reserve", _grpc_load(scn, f"{base}/Reserve", "Reserve", 20, 2, 4, "h2c")),
            ("Broken", _grpc_load(scn, f"{base}/Broken", "Broken", 6, 1, 2, "h2c"))]
    return GrpcLoadCase(g, runs)


@dataclass
class GrpcHopCase:
    grpc: GrpcServer
    proxy: Server  # nginx, with port = the port the client called
    client_pid: int
    calls: list[tuple[str, int]]  # (method, gRPC status code) in the order they were made
    scheme: str  # the client's url.scheme


def grpc_via_nginx_h2c(scn: Scenario, certs: Certs) -> GrpcHopCase:
    """grpcio client (plaintext) -> nginx h2c listener -> grpc_pass -> grpcio server:
    Reserve, Missing, Broken on one channel; nginx passes each status through."""
    g = grpc_server(scn)
    ngx = nginx_tls(scn, certs, g.server.port)
    call = grpc_client(scn, ngx.h2c_port, *[m for m, _, _ in GRPC_CALLS])
    assert [r["code"] for r in call.rows] == [name for _, name, _ in GRPC_CALLS], call.rows
    proxy = dataclasses.replace(ngx.server, port=ngx.h2c_port)
    return GrpcHopCase(g, proxy, call.pid, [(m, code) for m, _, code in GRPC_CALLS], "http")


GRPC_TLS_HOP_N = 10


def h2load_grpc_via_nginx_tls(scn: Scenario, certs: Certs) -> GrpcHopCase:
    """h2load over TLS (h2) -> nginx TLS listener -> grpc_pass (h2c) -> grpcio server: 10 calls
    one at a time (-c 1 -m 1), alternating Reserve (OK) and Broken (UNAVAILABLE)."""
    g = grpc_server(scn)
    ngx = nginx_tls(scn, certs, g.server.port)
    base = f"https://127.0.0.1:{ngx.server.port}/shop.Inventory"
    run = h2load(scn, [f"{base}/Reserve", f"{base}/Broken"], n=GRPC_TLS_HOP_N, c=1, m=1,
                 headers=GRPC_HEADERS, data=grpc_frame_file(scn))
    n = GRPC_TLS_HOP_N
    assert run.protocol == "h2", run.stdout
    assert (run.done, run.succeeded, run.status["2xx"]) == (n, n, n), run.stdout
    calls = [("Reserve", 0), ("Broken", 14)] * (n // 2)
    return GrpcHopCase(g, ngx.server, run.pid, calls, "https")


@dataclass
class GrpcTlsCase:
    grpc: GrpcServer
    tls_client: Call  # grpcio over TLS (BoringSSL): no spans expected
    plain_client: Call  # grpcio over h2c afterwards: the control, one CLIENT + one SERVER span


def grpcio_over_tls(scn: Scenario, certs: Certs) -> GrpcTlsCase:
    """grpcio client -> grpcio server over TLS (a secure channel trusting the CA): Reserve,
    Missing, Broken; then ANOTHER client process calls Reserve on the server's plaintext port."""
    g = grpc_server(scn, certs)
    tls = grpc_client(scn, g.tls_port, *[m for m, _, _ in GRPC_CALLS], ca=certs.ca)
    assert [r["code"] for r in tls.rows] == [name for _, name, _ in GRPC_CALLS], tls.rows
    plain = grpc_client(scn, g.server.port, "Reserve")
    assert [r["code"] for r in plain.rows] == ["OK"], plain.rows
    return GrpcTlsCase(g, tls, plain)


# -- Go and node ----------------------------------------------------------------------------

GO_REQUESTS = 6  # cycling over APP_ROUTES: each route twice


@dataclass
class GoCase:
    server: Server
    run: GoRun
    proto: str  # "1.1" or "2"
    scheme: str


def go_to_go(scn: Scenario, certs: Certs, server_bin: Path, client_bin: Path,
             http: str, plain: bool = False) -> GoCase:
    """The Go client -> the Go server (crypto/tls), HTTP/1.1 or HTTP/2 (ALPN), 6 requests in
    turn on one connection: /hello 200, /missing 404, /boom 500, twice.
    plain: the same in cleartext HTTP/1.1 (the control)."""
    assert not plain or http == "1.1", "cleartext is HTTP/1.1 only (no h2c in Go's stdlib)"
    srv = go_server(scn, server_bin, certs, plain)
    run = go_client(scn, client_bin, certs, srv.port, http, GO_REQUESTS,
                    *[p for p, _ in APP_ROUTES], plain=plain)
    want_proto = "HTTP/2.0" if http == "2" else "HTTP/1.1"
    rows = run.call.rows
    assert [(r["path"], r["status"]) for r in rows] == APP_ROUTES * (GO_REQUESTS // 3), rows
    assert {r["proto"] for r in rows} == {want_proto}, rows
    assert [r["reused"] for r in rows] == [False] + [True] * (GO_REQUESTS - 1), rows
    assert run.summary == {"done": GO_REQUESTS, "connections": 1, "protos": {want_proto: 6},
                           "codes": {"200": 2, "404": 2, "500": 2}}, run.summary
    return GoCase(srv, run, http, "http" if plain else "https")


def curl_to_node(scn: Scenario, certs: Certs, http2: bool, plain: bool = False) -> CurlCase:
    """curl --http1.1 / --http2 over TLS to node (http2.createSecureServer, allowHTTP1),
    one connection. plain: cleartext HTTP/1.1 to node:http (the control)."""
    assert not plain or not http2, "node's cleartext server is HTTP/1.1 only"
    scheme = "http" if plain else "https"
    srv = node_server(scn, certs, plain)
    call = scn.curl(*_urls(srv.port, APP_ROUTES, scheme), http2=http2, cacert=certs.ca)
    _check_curl(call, APP_ROUTES, http2)
    return CurlCase(srv, call, APP_ROUTES, "2" if http2 else "1.1", scheme)


# -- PostgreSQL -----------------------------------------------------------------------------

def pg_over_tls(case, scn: Scenario, pg: PgServer, *args):
    """A pg_cases case run against the ssl=on server (its clients use sslmode=require); the
    server's own log says each of the client's connections was TLS."""
    assert pg.ssl, "pg_over_tls needs the postgres_tls server"
    since = pg.log_size()
    c = case(scn, pg, *args)
    lines = pg.connections(c.run.app, since)
    assert lines and all(" SSL enabled (protocol=TLS" in x for x in lines), (
        f"connections of {c.run.app} not all TLS:\n" + "\n".join(lines))
    return c
