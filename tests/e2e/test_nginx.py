"""Agent tests against nginx (a C server, single process): static file, `return 404`,
`return 500`, over a keep-alive connection from curl."""

from __future__ import annotations

from harness.expect import http_pair
from harness.scenario import CURL_UA, Scenario
from harness.spans import assert_body_size, fmt_span, fmt_spans
from otlp_receiver import STATUS_ERROR, STATUS_UNSET


def test_nginx_static_file_404_and_500(scn: Scenario) -> None:
    ngx = scn.nginx()
    base = f"http://127.0.0.1:{ngx.port}"
    call = scn.curl(f"{base}/index.html", f"{base}/missing", f"{base}/boom")
    assert [r["http_code"] for r in call.rows] == [200, 404, 500]
    assert [r["num_connects"] for r in call.rows[:2]] == [1, 0], "no keep-alive to nginx"
    size = (ngx.root / "index.html").stat().st_size

    spans = scn.collect(6)
    c, s = http_pair(spans, client=call, server=ngx, method="GET", path="/index.html",
                     ua=CURL_UA, client_port=call.rows[0]["local_port"], response_size=size)
    assert (c.status_code, s.status_code) == (STATUS_UNSET, STATUS_UNSET)
    c, s = http_pair(spans, client=call, server=ngx, method="GET", path="/missing", status=404,
                     ua=CURL_UA, client_port=call.rows[1]["local_port"],
                     response_size=call.rows[1]["size_download"])
    assert (c.status_code, s.status_code) == (STATUS_ERROR, STATUS_UNSET), fmt_spans([c, s])
    c, s = http_pair(spans, client=call, server=ngx, method="GET", path="/boom", status=500,
                     ua=CURL_UA, client_port=call.rows[2]["local_port"],
                     response_size=call.rows[2]["size_download"])
    assert (c.status_code, s.status_code) == (STATUS_ERROR, STATUS_ERROR), fmt_spans([c, s])


def test_nginx_python_client_keepalive(scn: Scenario) -> None:
    ngx = scn.nginx()
    call = scn.client(ngx.port, "GET /index.html", "GET /missing", "GET /index.html?v=1")
    assert [r["connects"] for r in call.rows] == [1, 1, 1]

    spans = scn.collect(6)
    assert len([s for s in spans if s.attributes.get("url.path") == "/index.html"]) == 4
    http_pair(spans, client=call, server=ngx, method="GET", path="/missing", status=404,
              client_port=call.rows[1]["local_port"], ua="e2e-pyclient/1.0",
              response_size=call.rows[1]["body_size"])
    size = (ngx.root / "index.html").stat().st_size
    assert [r["body_size"] for r in call.rows[::2]] == [size, size], call.rows
    for s in spans:
        if s.attributes.get("url.path") == "/index.html":
            assert_body_size(s, "http.response.body.size", size)
            assert_body_size(s, "http.request.body.size", 0)
    with_query = [s for s in spans if s.attributes.get("url.query") == "v=REDACTED"]
    assert sorted(s.kind for s in with_query) == [2, 3], "\n".join(map(fmt_span, with_query))
