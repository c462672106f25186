"""HTTP/2 reached by an HTTP/1.1 `Upgrade: h2c` (RFC 7540 section 3.2), from real clients and a
real server.

curl --http2 on http:// URLs sends its first request as HTTP/1.1 with `Upgrade: h2c` and
`HTTP2-Settings`; the Go server (apps/h2cserver: net/http + x/net/http2/h2c, uninstrumented)
answers `101 Switching Protocols`, then the response to that request on HTTP/2 stream 1, and curl
sends the other URLs on streams 3, 5, ... of the same connection. Expected: one CLIENT span
(curl) and one SERVER span (the Go server) per request, the upgraded one included (not a 101),
all with network.protocol.version=2 (the upgraded request was answered over HTTP/2) and the
status the server sent; each SERVER span is the child of its CLIENT span (same-node stitching).

The same server without h2c (`-http1`) refuses the upgrade by answering in HTTP/1.1: the
requests stay HTTP/1.1 spans.
"""

from __future__ import annotations

from pathlib import Path

from harness.procs import free_port, run
from harness.scenario import Scenario, app_env
from harness.spans import (KIND_CLIENT, KIND_SERVER, assert_body_size, assert_child_of,
                           assert_within, fmt_spans)
from otlp_receiver import STATUS_ERROR, STATUS_UNSET

# What the Go server answers (see apps/h2cserver/main.go). The largest body stays below the
# 16 KiB the kernel side captures per syscall: a bigger HTTP/2 response can reach curl in one
# larger read, whose uncaptured tail hides frame headers, and the HTTP/2 parser then gives the
# connection up (true of prior-knowledge h2c alike; not what this module tests).
BIG_N = 600
ROUTES = {"/index.html": (200, len("hello from /index.html\n")),
          "/missing": (404, len("missing\n")),
          f"/big?n={BIG_N}": (200, BIG_N * len("hello from /big\n"))}


def start_server(scn: Scenario, binary: Path, *flags: str):
    port = free_port()
    proc = scn.spawn("h2cserver", [str(binary), *flags, f"127.0.0.1:{port}"], port)
    return proc, port


def curl_http2(scn: Scenario, port: int, paths: list[str], *args: str):
    """One curl process with --http2 for all `paths`: per URL its status, HTTP version and
    whether it opened a connection."""
    argv = ["curl", "-sS", "--http2", "--max-time", "20", *args]
    for p in paths:
        argv += ["-o", "/dev/null", "-w", "%{http_code} %{http_version} %{num_connects}\\n",
                 f"http://127.0.0.1:{port}{p}"]
    proc, rc = run("curl_h2c", argv, scn.workdir, timeout=30, env=app_env())
    scn.procs.append(proc)
    scn.pids.add(proc.pid)
    rows = [line.split() for line in proc.stdout().splitlines() if line.strip()]
    assert rc == 0 and len(rows) == len(paths), proc.stdout() + proc.stderr()
    return proc, rows


def pairs(spans, client_pid: int, server_pid: int, path: str):
    """The CLIENT and SERVER span of the request for `path` (exactly one each)."""
    url_path = path.split("?")[0]
    c = [s for s in spans if s.kind == KIND_CLIENT and s.pid == client_pid
         and s.attributes.get("url.path") == url_path]
    s = [x for x in spans if x.kind == KIND_SERVER and x.pid == server_pid
         and x.attributes.get("url.path") == url_path]
    assert len(c) == 1 and len(s) == 1, f"{path}: one span per side\n{fmt_spans(spans)}"
    return c[0], s[0]


def test_upgrade_then_more_requests_on_one_connection(scn: Scenario, h2cserver: Path) -> None:
    server, port = start_server(scn, h2cserver)
    paths = list(ROUTES)
    curl, rows = curl_http2(scn, port, paths)
    # Every request answered over HTTP/2, on the one connection curl opened.
    assert [r[:2] for r in rows] == [[str(ROUTES[p][0]), "2"] for p in paths], rows
    assert sum(int(r[2]) for r in rows) == 1, rows

    spans = scn.collect(2 * len(paths))
    for path in paths:
        status, size = ROUTES[path]
        c, s = pairs(spans, curl.pid, server.pid, path)
        for span in (c, s):
            a = span.attributes
            assert a.get("network.protocol.version") == "2", fmt_spans([span])
            assert a.get("http.response.status_code") == status, fmt_spans([span])
            assert a.get("http.request.method") == "GET", fmt_spans([span])
            assert a.get("server.port") == port, fmt_spans([span])
            assert_body_size(span, "http.response.body.size", size)
            assert_body_size(span, "http.request.body.size", 0)
        assert c.status_code == (STATUS_ERROR if status >= 400 else STATUS_UNSET), fmt_spans([c])
        assert s.status_code == STATUS_UNSET, fmt_spans([s])
        assert_child_of(s, c)
        assert_within(s, c)
    # No span says 101: the upgrade is not an exchange of its own.
    assert all(x.attributes.get("http.response.status_code") != 101 for x in spans)


def test_upgraded_post_with_a_body(scn: Scenario, h2cserver: Path) -> None:
    server, port = start_server(scn, h2cserver)
    body = scn.workdir / "body.bin"
    body.write_bytes(b"x" * 5000)
    curl, rows = curl_http2(scn, port, ["/echo"], "--data-binary", f"@{body}")
    assert rows == [["201", "2", "1"]], rows

    spans = scn.collect(2)
    c, s = pairs(spans, curl.pid, server.pid, "/echo")
    for span in (c, s):
        a = span.attributes
        assert a.get("network.protocol.version") == "2", fmt_spans([span])
        assert a.get("http.response.status_code") == 201, fmt_spans([span])
        assert a.get("http.request.method") == "POST", fmt_spans([span])
        assert_body_size(span, "http.request.body.size", 5000)
        assert_body_size(span, "http.response.body.size", len("got 5000 bytes\n"))
    assert_child_of(s, c)


def test_refused_upgrade_stays_http1(scn: Scenario, h2cserver: Path) -> None:
    server, port = start_server(scn, h2cserver, "-http1")
    paths = ["/index.html", "/missing"]
    curl, rows = curl_http2(scn, port, paths)
    assert [r[:2] for r in rows] == [["200", "1.1"], ["404", "1.1"]], rows
    assert sum(int(r[2]) for r in rows) == 1, rows

    spans = scn.collect(2 * len(paths))
    for path in paths:
        status, size = ROUTES[path]
        c, s = pairs(spans, curl.pid, server.pid, path)
        for span in (c, s):
            assert span.attributes.get("network.protocol.version") == "1.1", fmt_spans([span])
            assert span.attributes.get("http.response.status_code") == status, fmt_spans([span])
            assert_body_size(span, "http.response.body.size", size)
            assert_body_size(span, "http.request.body.size", 0)
        assert_child_of(s, c)
