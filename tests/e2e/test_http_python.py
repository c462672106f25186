"""Agent tests against the Python service (apps/service.py) with curl and http.client clients.

Each test checks the exact set of spans its own traffic must produce: one CLIENT span per
request sent (curl / client.py), one SERVER span per request received (the service), the
SERVER span stitched as the child of its CLIENT span, plus names, attributes and status.
"""

from __future__ import annotations

import uuid

from harness.expect import http_pair
from harness.scenario import CURL_UA, PYCLIENT_UA, SERVICE, WINDOW_SLACK_NS, Scenario
from harness.spans import fmt_span
from otlp_receiver import STATUS_ERROR, STATUS_UNSET


USERS = "/users/{id}"


def test_keepalive_three_requests_on_one_connection(scn: Scenario) -> None:
    svc = scn.service()
    paths = ["/users/1", "/users/2", "/users/3"]
    call = scn.curl(*(f"http://127.0.0.1:{svc.port}{p}" for p in paths))
    assert [r["num_connects"] for r in call.rows] == [1, 0, 0], "curl did not reuse the connection"

    spans = scn.collect(6)
    traces = set()
    for path, row in zip(paths, call.rows):
        c, s = http_pair(spans, client=call, server=svc, method="GET", path=path, template=USERS,
                         ua=CURL_UA, client_port=row["local_port"],
                         response_size=row["size_download"])
        assert c.parent_span_id == "", f"curl's CLIENT span must be a root\n{fmt_span(c)}"
        traces.add(c.trace_id)
    assert len(traces) == 3, "each curl request without traceparent starts its own trace"


def test_chunked_and_large_bodies(scn: Scenario) -> None:
    svc = scn.service()
    base = f"http://127.0.0.1:{svc.port}"
    call = scn.curl(f"{base}/chunked", f"{base}/large?size=1048576", f"{base}/users/4")
    assert [r["size_download"] for r in call.rows[:2]] == [SERVICE.CHUNKED_BODY_SIZE, 1048576]

    # Exactly 6: body bytes that look like HTTP messages must not become spans.
    spans = scn.collect(6)
    # The chunked body's size is its payload (what curl counts), not the framing on the wire.
    assert len(SERVICE.chunked_wire_body()) != SERVICE.CHUNKED_BODY_SIZE
    http_pair(spans, client=call, server=svc, method="GET", path="/chunked", ua=CURL_UA,
              client_port=call.rows[0]["local_port"], response_size=SERVICE.CHUNKED_BODY_SIZE)
    c, s = http_pair(spans, client=call, server=svc, method="GET", path="/large",
                     query="size=1048576", ua=CURL_UA, client_port=call.rows[1]["local_port"],
                     response_size=1048576)
    # The request after the big body is parsed as its own request on the same connection.
    http_pair(spans, client=call, server=svc, method="GET", path="/users/4", template=USERS,
              ua=CURL_UA, client_port=call.rows[2]["local_port"],
              response_size=call.rows[2]["size_download"])
    assert s.duration_ns > 0 and c.duration_ns >= s.duration_ns


def test_4xx_and_5xx_statuses(scn: Scenario) -> None:
    svc = scn.service()
    base = f"http://127.0.0.1:{svc.port}"
    call = scn.curl(f"{base}/status/404", f"{base}/status/503", f"{base}/status/201")
    assert [r["http_code"] for r in call.rows] == [404, 503, 201]

    spans = scn.collect(6)
    want = {404: (STATUS_ERROR, STATUS_UNSET), 503: (STATUS_ERROR, STATUS_ERROR),
            201: (STATUS_UNSET, STATUS_UNSET)}  # (client status, server status)
    for code, row in zip((404, 503, 201), call.rows):
        c, s = http_pair(spans, client=call, server=svc, method="GET", path=f"/status/{code}",
                         template="/status/{id}", status=code, ua=CURL_UA,
                         client_port=row["local_port"], response_size=row["size_download"])
        assert (c.status_code, s.status_code) == want[code], f"{fmt_span(c)}\n{fmt_span(s)}"


def test_query_redaction_and_secret_headers(scn: Scenario) -> None:
    token = f"QSECRET{uuid.uuid4().hex}"
    bearer, cookie = f"SECRETbearer{uuid.uuid4().hex}", f"SECRETcookie{uuid.uuid4().hex}"
    scn.secrets += [token, bearer, cookie]  # checked against the raw OTLP bytes by collect()
    svc = scn.service()
    call = scn.curl(f"http://127.0.0.1:{svc.port}/users/7?token={token}&b=2",
                    headers=(f"Authorization: Bearer {bearer}", f"Cookie: session={cookie}"))

    spans = scn.collect(2)
    http_pair(spans, client=call, server=svc, method="GET", path="/users/7",
              query=f"token={token}&b=2", template=USERS, ua=CURL_UA,
              client_port=call.rows[0]["local_port"], response_size=call.rows[0]["size_download"])
    for s in spans:
        assert s.attributes["url.query"] == "token=REDACTED&b=REDACTED"


def test_slow_handler_duration(scn: Scenario) -> None:
    svc = scn.service()
    call = scn.curl(f"http://127.0.0.1:{svc.port}/slow?ms=200")

    spans = scn.collect(2)
    c, s = http_pair(spans, client=call, server=svc, method="GET", path="/slow", query="ms=200",
                     ua=CURL_UA, client_port=call.rows[0]["local_port"],
                     response_size=call.rows[0]["size_download"])
    assert 200_000_000 <= s.duration_ns < 2_000_000_000, fmt_span(s)
    assert 200_000_000 <= c.duration_ns < 2_000_000_000, fmt_span(c)
    # The spans lie within the wall-clock interval in which curl ran.
    slack = WINDOW_SLACK_NS
    assert call.t_start_ns - slack <= c.start_ns and c.end_ns <= call.t_end_ns + slack, fmt_span(c)


def test_route_templates(scn: Scenario) -> None:
    svc = scn.service()
    cases = {"/users/42": USERS, "/users/550e8400-e29b-41d4-a716-446655440000": "/users/{uuid}",
             "/users/d41d8cd98f00b204e9800998ecf8427e": "/users/{hex}"}
    call = scn.curl(*(f"http://127.0.0.1:{svc.port}{p}" for p in cases))

    spans = scn.collect(6)
    for (path, template), row in zip(cases.items(), call.rows):
        http_pair(spans, client=call, server=svc, method="GET", path=path, template=template,
                  ua=CURL_UA, client_port=row["local_port"], response_size=row["size_download"])


def test_http_1_0(scn: Scenario) -> None:
    svc = scn.service()
    call = scn.curl(f"http://127.0.0.1:{svc.port}/users/9", http10=True)

    spans = scn.collect(2)
    http_pair(spans, client=call, server=svc, method="GET", path="/users/9", template=USERS,
              ua=CURL_UA, client_port=call.rows[0]["local_port"], proto="1.0",
              response_size=call.rows[0]["size_download"])


def test_python_client_keepalive_get_post(scn: Scenario) -> None:
    svc = scn.service()
    call = scn.client(svc.port, "GET /users/11", "POST /echo 1000", "GET /status/404")
    assert [r["connects"] for r in call.rows] == [1, 1, 1], "client.py did not keep-alive"

    spans = scn.collect(6)
    get_row, post_row, err_row = call.rows
    http_pair(spans, client=call, server=svc, method="GET", path="/users/11", template=USERS,
              ua=PYCLIENT_UA, client_port=get_row["local_port"],
              response_size=get_row["body_size"])
    assert post_row["body_size"] == 1000, "/echo did not echo the 1000-byte body"
    http_pair(spans, client=call, server=svc, method="POST", path="/echo", ua=PYCLIENT_UA,
              client_port=post_row["local_port"], request_size=1000, response_size=1000)
    c, s = http_pair(spans, client=call, server=svc, method="GET", path="/status/404",
                     template="/status/{id}", status=404, ua=PYCLIENT_UA,
                     client_port=err_row["local_port"], response_size=err_row["body_size"])
    assert (c.status_code, s.status_code) == (STATUS_ERROR, STATUS_UNSET)
