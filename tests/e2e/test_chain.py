"""Trace context across processes: curl -> A -> B, where A (apps/service.py run as
service_a.py) calls B over a kept-alive http.client connection while handling the request.

Expected per request, in ONE trace:
    curl CLIENT (root, or child of an incoming traceparent's parent-id)
      -> A SERVER -> A CLIENT -> B SERVER
each span's interval inside its parent's.
"""

from __future__ import annotations

import json
import os
import uuid
from urllib.parse import quote

from harness.expect import http_pair
from harness.scenario import CURL_UA, Scenario, Server
from harness.spans import KIND_SERVER, assert_child_of, assert_within, fmt_span, fmt_spans, only

USERS = "/users/{id}"


def start_chain(scn: Scenario) -> tuple[Server, Server]:
    b = scn.service("service_b", env={"OTEL_SERVICE_NAME": f"e2e-b-{uuid.uuid4().hex[:8]}"})
    a = scn.service("service_a")  # no OTEL_SERVICE_NAME: the name comes from the command line
    return a, b


def call_url(a: Server, b: Server, user: int) -> str:
    target = quote(f"http://127.0.0.1:{b.port}/users/{user}", safe="")
    return f"http://127.0.0.1:{a.port}/call?next={target}"


def check_chain(spans, call, a: Server, b: Server, user: int, row: dict):
    """The four spans of one curl -> A -> B request; returns them root first.

    Several requests share the path /call and, once redacted, the same url.query, so each
    chain is anchored on B's span (its path names the user) and matched within B's trace.
    A broken trace leaves spans outside it, and the matching below then fails loudly."""
    next_url = f"http://127.0.0.1:{b.port}/users/{user}"
    b_anchor = only(spans, f"B's server span for user {user}", kind=KIND_SERVER, pid=b.pid,
                    path=f"/users/{user}")
    spans = [x for x in spans if x.trace_id == b_anchor.trace_id]
    # B's body, which A passes on to curl as its own.
    body = len(json.dumps({"id": str(user), "name": "user"}))
    assert row["size_download"] == body, row
    curl_c, a_s = http_pair(spans, client=call, server=a, method="GET", path="/call",
                            query=f"next={next_url}", ua=CURL_UA, client_port=row["local_port"],
                            response_size=body)
    # http.client sends no User-Agent, so none may be reported for A -> B.
    a_c, b_s = http_pair(spans, client=a, server=b, method="GET", path=f"/users/{user}",
                         template=USERS, response_size=body)
    assert_child_of(a_c, a_s)  # sent by the thread handling A's request
    assert_within(a_c, a_s)
    chain = [curl_c, a_s, a_c, b_s]
    assert len({x.trace_id for x in chain}) == 1, f"not one trace:\n{fmt_spans(chain)}"
    return curl_c, a_s, a_c, b_s


def test_two_hop_chain_is_one_trace(scn: Scenario) -> None:
    a, b = start_chain(scn)
    call = scn.curl(call_url(a, b, 5), call_url(a, b, 6))
    assert [r["http_code"] for r in call.rows] == [200, 200]
    assert [r["headers"]["x-next-conn"] for r in call.rows] == [["new"], ["reused"]], (
        "A did not reuse its connection to B")

    spans = scn.collect(8)
    chains = [check_chain(spans, call, a, b, user, row) for user, row in zip((5, 6), call.rows)]
    for chain in chains:
        assert chain[0].parent_span_id == "", f"curl's span must be the root\n{fmt_span(chain[0])}"
    assert chains[0][0].trace_id != chains[1][0].trace_id, "two requests, two traces"


def test_traceparent_from_curl_is_joined(scn: Scenario) -> None:
    a, b = start_chain(scn)
    trace_id, parent_id = os.urandom(16).hex(), os.urandom(8).hex()
    call = scn.curl(call_url(a, b, 8), headers=(f"traceparent: 00-{trace_id}-{parent_id}-01",))
    assert call.rows[0]["http_code"] == 200

    spans = scn.collect(4)
    curl_c, a_s, a_c, b_s = check_chain(spans, call, a, b, 8, call.rows[0])
    assert curl_c.trace_id == trace_id, fmt_spans(spans)
    assert curl_c.parent_span_id == parent_id, (
        f"curl's CLIENT span must be the child of the traceparent's parent-id\n{fmt_span(curl_c)}")
    assert parent_id not in {x.span_id for x in spans}, "the agent reused the caller's span id"
