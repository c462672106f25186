"""HTTP/2 in cleartext (prior knowledge) and gRPC, from real clients and servers.

gRPC: a Python grpcio server and client (apps/grpc_app.py, uninstrumented) make three unary
calls on ONE HTTP/2 connection: Reserve (OK), Missing (NOT_FOUND), Broken (UNAVAILABLE).
Expected per call: a CLIENT span (client process) and a SERVER span (server process), named
`shop.Inventory/<Method>`, with rpc.system=grpc, rpc.service, rpc.method, rpc.grpc.status_code
and network.protocol.version=2; the SERVER span is the CLIENT span's child (same-node
stitching, matched by stream id); status per the OTel RPC conventions: NOT_FOUND is an error
for the client only, UNAVAILABLE for both.

HTTP/2 without gRPC: curl --http2-prior-knowledge against nginx (h2c), a 200 and a 404.

h2load as a gRPC client (h2c, several streams in flight per connection), counted against its
own summary; and a gRPC hop through nginx (h2c listener, grpc_pass): client -> nginx SERVER ->
nginx CLIENT -> grpcio SERVER, one trace per call (traffic in tls_cases.py, whose TLS
counterparts are in test_tls.py).
"""

from __future__ import annotations

import json
import string

import tls_cases
from harness.expect import assert_grpc, check_grpc_hops, check_load_pairs
from harness.procs import free_port, run
from harness.scenario import APPS, NGINX, PYTHON, Scenario, app_env
from harness.spans import (KIND_CLIENT, KIND_SERVER, assert_body_size, assert_child_of,
                           assert_within, fmt_spans)
from harness.tls import Certs
from otlp_receiver import STATUS_ERROR, STATUS_UNSET

CALLS = [("Reserve", "OK", 0), ("Missing", "NOT_FOUND", 5), ("Broken", "UNAVAILABLE", 14)]

NGINX_H2C = """daemon off;
master_process off;
worker_processes 1;
error_log stderr;
pid $prefix/nginx.pid;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $prefix/body;
    proxy_temp_path $prefix/proxy;
    fastcgi_temp_path $prefix/fastcgi;
    uwsgi_temp_path $prefix/uwsgi;
    scgi_temp_path $prefix/scgi;
    server {
        listen 127.0.0.1:$port http2;
        root $prefix/www;
        location = /missing { return 404; }
        location / { try_files $$uri =404; }
    }
}
"""


def test_grpc_unary_calls(scn: Scenario) -> None:
    port = free_port()
    server = scn.spawn("grpc_server", [PYTHON, str(APPS / "grpc_app.py"), "server", "--port",
                                       str(port)], port)
    proc, rc = run("grpc_client", [PYTHON, str(APPS / "grpc_app.py"), "client", "--port",
                                   str(port)] + [m for m, _, _ in CALLS], scn.workdir, timeout=30,
                   env=app_env())
    scn.procs.append(proc)
    scn.pids.add(proc.pid)
    rows = [json.loads(line) for line in proc.stdout().splitlines() if line.startswith("{")]
    assert rc == 0 and [r["code"] for r in rows] == [c for _, c, _ in CALLS], proc.stderr()

    spans = scn.collect(2 * len(CALLS))
    for method, _, code in CALLS:
        mine = [s for s in spans if s.attributes.get("rpc.method") == method]
        client = [s for s in mine if s.kind == KIND_CLIENT and s.pid == proc.pid]
        srv = [s for s in mine if s.kind == KIND_SERVER and s.pid == server.pid]
        assert len(client) == 1 and len(srv) == 1, f"{method}: one span per side\n{fmt_spans(mine)}"
        c, s = client[0], srv[0]
        for span in (c, s):
            assert span.name == f"shop.Inventory/{method}", fmt_spans([span])
            a = span.attributes
            assert a.get("rpc.service") == "shop.Inventory", fmt_spans([span])
            assert a.get("rpc.grpc.status_code") == code, fmt_spans([span])
            assert a.get("url.path") == f"/shop.Inventory/{method}", fmt_spans([span])
            assert a.get("http.response.status_code") == 200, fmt_spans([span])
        assert c.status_code == (STATUS_UNSET if code == 0 else STATUS_ERROR), fmt_spans([c])
        assert s.status_code == (STATUS_ERROR if code == 14 else STATUS_UNSET), fmt_spans([s])
        assert c.attributes.get("server.port") == port and s.attributes.get("server.port") == port
        assert_child_of(s, c)
        assert_within(s, c)
    assert len({s.trace_id for s in spans if s.kind == KIND_CLIENT}) == len(CALLS), (
        f"each call its own trace\n{fmt_spans(spans)}")


def test_http2_prior_knowledge_to_nginx(scn: Scenario) -> None:
    port = free_port()
    prefix = scn.workdir / f"nginx-h2-{port}"
    (prefix / "www").mkdir(parents=True)
    (prefix / "www" / "index.html").write_text("<html>h2</html>\n")
    conf = prefix / "nginx.conf"
    conf.write_text(string.Template(NGINX_H2C).substitute(prefix=str(prefix), port=port))
    nginx = scn.spawn("nginx_h2", [NGINX, "-e", "stderr", "-p", f"{prefix}/", "-c", str(conf)], port)
    calls = []
    for path, status in (("/index.html", 200), ("/missing", 404)):
        proc, rc = run("curl_h2", ["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null",
                                   "-w", "%{http_code} %{http_version} %{size_download}",
                                   f"http://127.0.0.1:{port}{path}"], scn.workdir, timeout=30,
                       env=app_env())
        scn.procs.append(proc)
        scn.pids.add(proc.pid)
        out = proc.stdout().split()
        assert rc == 0 and out[:2] == [str(status), "2"], proc.stdout() + proc.stderr()
        calls.append((proc, status, path, int(out[2])))
    assert calls[0][3] == len("<html>h2</html>\n"), calls

    spans = scn.collect(4)
    for proc, status, path, size in calls:
        c = [s for s in spans if s.kind == KIND_CLIENT and s.pid == proc.pid]
        s = [x for x in spans if x.kind == KIND_SERVER and x.pid == nginx.pid
             and x.attributes.get("url.path") == path]
        assert len(c) == 1 and len(s) == 1, fmt_spans(spans)
        for span in (c[0], s[0]):
            a = span.attributes
            assert a.get("network.protocol.version") == "2", fmt_spans([span])
            assert a.get("http.response.status_code") == status, fmt_spans([span])
            assert a.get("http.request.method") == "GET", fmt_spans([span])
            assert_body_size(span, "http.response.body.size", size)  # curl's size_download
            assert_body_size(span, "http.request.body.size", 0)
        assert c[0].status_code == (STATUS_ERROR if status >= 400 else STATUS_UNSET)
        assert s[0].status_code == STATUS_UNSET
        assert_child_of(s[0], c[0])


def test_h2load_grpc_unary_h2c(scn: Scenario) -> None:
    """h2load as a gRPC client over h2c straight to grpcio: 20 Reserve calls (-c 2 -m 4,
    OK) and 6 Broken calls (-c 1 -m 2, UNAVAILABLE: ERROR on both sides), each counted done
    by h2load: 26 CLIENT spans from the two h2load processes, 26 SERVER spans from grpcio,
    each SERVER span the child of its own CLIENT span."""
    case = tls_cases.h2load_grpc_h2c(scn)
    srv = case.grpc.server
    spans = scn.collect(2 * sum(run.done for _, run in case.runs))
    for method, run in case.runs:
        mine = [x for x in spans if x.attributes.get("rpc.method") == method]
        pairs = check_load_pairs(mine, run.pid, srv.pid, srv.port, {method: (run.done, 200)},
                                 lambda x: x.attributes.get("rpc.method"), "http")
        for c, s in pairs:
            assert_grpc(c, method, tls_cases.GRPC_CODES[method], srv.port)
            assert_grpc(s, method, tls_cases.GRPC_CODES[method], srv.port)


def test_grpc_through_nginx_h2c(scn: Scenario, tls_certs: Certs) -> None:
    """grpcio client -> nginx (h2c listener) -> grpc_pass -> grpcio server: Reserve (OK),
    Missing (NOT_FOUND: ERROR on the CLIENT spans only), Broken (UNAVAILABLE: ERROR on all
    four): per call client CLIENT -> nginx SERVER -> nginx CLIENT -> grpcio SERVER, one trace."""
    case = tls_cases.grpc_via_nginx_h2c(scn, tls_certs)
    spans = scn.collect(4 * len(case.calls))
    check_grpc_hops(spans, client_pid=case.client_pid, proxy=case.proxy,
                    upstream=case.grpc.server, calls=case.calls, scheme=case.scheme)
