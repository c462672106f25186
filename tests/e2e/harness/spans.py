"""Span assertions shared by the agent tests: the span contract, written down once.

Every helper raises AssertionError with a compact rendering of the span(s) involved.
"""

from __future__ import annotations

import re
import socket
from collections import Counter
from typing import Any, Iterable

from otlp_receiver import KIND_CLIENT, KIND_SERVER, STATUS_ERROR, STATUS_UNSET, ReceivedSpan

KIND_PRODUCER = 4
KIND_CONSUMER = 5
KIND_NAMES = {0: "UNSPECIFIED", 1: "INTERNAL", KIND_SERVER: "SERVER", KIND_CLIENT: "CLIENT",
              KIND_PRODUCER: "PRODUCER", KIND_CONSUMER: "CONSUMER"}
CLOCK_TOLERANCE_NS = 2_000_000  # parent/child interval rounding allowance
HOSTNAME = socket.gethostname()
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")


def fmt_span(s: ReceivedSpan) -> str:
    attrs = " ".join(f"{k}={v!r}" for k, v in sorted(s.attributes.items()))
    return (f"{KIND_NAMES.get(s.kind, s.kind):6} {s.name!r} trace={s.trace_id} span={s.span_id} "
            f"parent={s.parent_span_id or '-'} pid={s.pid} svc={s.resource.get('service.name')!r} "
            f"dur={s.duration_ns / 1e6:.3f}ms status={s.status_code} start={s.start_ns}\n"
            f"       {attrs}")


FMT_MAX = 40  # more spans than this: a count per (pid, kind, name), then the first and last


def fmt_spans(spans: Iterable[ReceivedSpan]) -> str:
    spans = sorted(spans, key=lambda s: (s.start_ns, s.kind))
    if len(spans) > FMT_MAX:
        counts = Counter((s.pid, KIND_NAMES.get(s.kind, s.kind), s.name) for s in spans)
        summary = "\n".join(f"  {n:5d} x pid={pid} {kind} {name!r}"
                             for (pid, kind, name), n in sorted(counts.items(), key=str))
        half = FMT_MAX // 2
        return (f"{len(spans)} spans:\n{summary}\nfirst {half}:\n{fmt_spans(spans[:half])}\n"
                f"last {half}:\n{fmt_spans(spans[-half:])}")
    return "\n".join(fmt_span(s) for s in spans) or "(no spans)"


def expected_status(kind: int, http_status: int) -> int:
    """Server spans: ERROR on 5xx. Client spans: ERROR on 4xx and 5xx. Otherwise UNSET."""
    limit = 500 if kind == KIND_SERVER else 400
    return STATUS_ERROR if http_status >= limit else STATUS_UNSET


def redacted(query: str) -> str:
    """The exported form of a query string: every value replaced by REDACTED."""
    return "&".join(p.split("=", 1)[0] + "=REDACTED" for p in query.split("&"))


def check_common(s: ReceivedSpan, pids: set[int], t_min_ns: int, t_max_ns: int) -> None:
    """Checks every span must pass, whatever the traffic: ids, timing, resource, status rule."""
    __tracebackhide__ = True
    ctx = f"\n{fmt_span(s)}\nresource={s.resource}"
    assert _HEX32.match(s.trace_id) and s.trace_id != "0" * 32, f"bad trace id{ctx}"
    assert _HEX16.match(s.span_id) and s.span_id != "0" * 16, f"bad span id{ctx}"
    assert s.parent_span_id == "" or _HEX16.match(s.parent_span_id), f"bad parent id{ctx}"
    assert not s.duplicate_keys, f"duplicate attribute keys {s.duplicate_keys}{ctx}"
    assert s.end_ns > s.start_ns, f"duration must be > 0{ctx}"
    assert t_min_ns <= s.start_ns and s.end_ns <= t_max_ns, (
        f"span not inside the test's wall-clock window [{t_min_ns}, {t_max_ns}]{ctx}")

    r = s.resource
    assert type(r.get("process.pid")) is int and r["process.pid"] in pids, (
        f"span from a process this test did not start (test pids {sorted(pids)}){ctx}")
    assert isinstance(r.get("service.name"), str) and r["service.name"], f"no service.name{ctx}"
    assert isinstance(r.get("process.executable.name"), str) and r["process.executable.name"], (
        f"no process.executable.name{ctx}")
    assert r.get("host.name") == HOSTNAME, f"host.name != {HOSTNAME!r}{ctx}"
    assert r.get("telemetry.distro.name") == "ebpf-agent", f"telemetry.distro.name{ctx}"

    a = s.attributes
    if "db.system.name" in a:
        check_db(s, ctx)
    elif "messaging.system" in a:
        check_messaging(s, ctx)
    elif "rpc.system" in a:
        check_rpc(s, ctx)
    else:
        check_http(s, ctx)


# gRPC codes that are errors on the server side (OTel RPC conventions): UNKNOWN,
# DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS. Clients: any non-OK.
GRPC_SERVER_ERRORS = {2, 4, 12, 13, 14, 15}


def expected_rpc_status(kind: int, code: int) -> int:
    if kind == KIND_SERVER:
        return STATUS_ERROR if code in GRPC_SERVER_ERRORS else STATUS_UNSET
    return STATUS_UNSET if code == 0 else STATUS_ERROR


def check_rpc(s: ReceivedSpan, ctx: str) -> None:
    """A gRPC SERVER/CLIENT span: the rules that hold whatever the call."""
    __tracebackhide__ = True
    a = s.attributes
    assert s.kind in (KIND_SERVER, KIND_CLIENT), f"unexpected kind{ctx}"
    assert a.get("rpc.system") == "grpc", f"rpc.system{ctx}"
    service, method, code = a.get("rpc.service"), a.get("rpc.method"), a.get("rpc.grpc.status_code")
    assert isinstance(service, str) and isinstance(method, str), f"rpc.service/rpc.method{ctx}"
    assert s.name == f"{service}/{method}", f"span name{ctx}"
    assert type(code) is int, f"rpc.grpc.status_code must be an int{ctx}"
    assert s.status_code == expected_rpc_status(s.kind, code), f"span status for gRPC {code}{ctx}"
    assert a.get("network.protocol.version") == "2", f"network.protocol.version{ctx}"


# error.type of an HTTP exchange whose response never (fully) arrived (the agent's own value:
# the connection closed, or the process holding it died, before the response completed).
RESPONSE_INCOMPLETE = "response_incomplete"


def check_http(s: ReceivedSpan, ctx: str) -> None:
    __tracebackhide__ = True
    a = s.attributes
    assert s.kind in (KIND_SERVER, KIND_CLIENT), f"unexpected kind{ctx}"
    method, status = a.get("http.request.method"), a.get("http.response.status_code")
    assert isinstance(method, str) and method, f"no http.request.method{ctx}"
    assert s.name.startswith(method) and "?" not in s.name, f"span name{ctx}"
    for key in ("http.request.body.size", "http.response.body.size"):
        size = a.get(key)
        assert size is None or (type(size) is int and size >= 0), f"{key} must be an int{ctx}"
    if a.get("error.type") == RESPONSE_INCOMPLETE:
        # No (complete) response: no status code or response size to report, and an error
        # on either side (OTel HTTP conventions: error.type set => span status ERROR).
        assert status is None and "http.response.body.size" not in a, (
            f"an incomplete exchange with response attributes{ctx}")
        assert s.status_code == STATUS_ERROR, f"incomplete exchange without ERROR status{ctx}"
        return
    assert type(status) is int, f"http.response.status_code must be an int{ctx}"
    assert s.status_code == expected_status(s.kind, status), f"span status for HTTP {status}{ctx}"
    q = a.get("url.query")
    if q is not None:
        assert q == redacted(q), f"url.query not fully redacted{ctx}"


_SQLSTATE = re.compile(r"^[0-9A-Z]{5}$")
# A digit left in a sanitised query outside `$n` placeholders and identifiers is a literal.
_PLACEHOLDER_OR_IDENT = re.compile(r"\$\d+|[A-Za-z_][A-Za-z0-9_$]*|\"[^\"]*\"")


def check_db(s: ReceivedSpan, ctx: str) -> None:
    """A database CLIENT span (PostgreSQL): the rules that hold whatever the statement."""
    __tracebackhide__ = True
    a = s.attributes
    assert s.kind == KIND_CLIENT, f"a database span must be CLIENT{ctx}"
    assert a.get("db.system.name") == "postgresql", f"db.system.name{ctx}"
    op, coll = a.get("db.operation.name"), a.get("db.collection.name")
    if a.get("db.postgresql.statement_text_unknown") is True:
        assert s.name == "EXECUTE" and "db.query.text" not in a, f"unknown-text statement{ctx}"
    else:
        assert isinstance(op, str) and op and op == op.upper(), f"db.operation.name{ctx}"
        assert s.name == (f"{op} {coll}" if coll else op), f"span name vs. db.*.name{ctx}"
    text = a.get("db.query.text")
    if text is not None:
        assert isinstance(text, str) and text, f"db.query.text{ctx}"
        assert "'" not in text, f"a string literal left in db.query.text{ctx}"
        assert not re.search(r"\d", _PLACEHOLDER_OR_IDENT.sub(" ", text)), (
            f"a number left in db.query.text{ctx}")
    code = a.get("db.response.status_code")
    if code is None:
        assert s.status_code == STATUS_UNSET and "error.type" not in a, f"status without error{ctx}"
    else:
        assert isinstance(code, str) and _SQLSTATE.match(code), f"SQLSTATE{ctx}"
        assert s.status_code == STATUS_ERROR and a.get("error.type") == code, f"error status{ctx}"
    rows = a.get("db.response.returned_rows")
    assert rows is None or (type(rows) is int and rows >= 0), f"db.response.returned_rows{ctx}"
    assert type(a.get("server.port")) is int, f"server.port must be an int{ctx}"


_MESSAGING_OPS = {KIND_PRODUCER: {("send", "publish")},
                  KIND_CONSUMER: {("process", "deliver"), ("receive", "get")}}


def check_messaging(s: ReceivedSpan, ctx: str) -> None:
    """A RabbitMQ PRODUCER/CONSUMER span: the rules that hold whatever the message."""
    __tracebackhide__ = True
    a = s.attributes
    assert s.kind in _MESSAGING_OPS, f"a messaging span must be PRODUCER or CONSUMER{ctx}"
    assert a.get("messaging.system") == "rabbitmq", f"messaging.system{ctx}"
    op_type, op_name = a.get("messaging.operation.type"), a.get("messaging.operation.name")
    assert (op_type, op_name) in _MESSAGING_OPS[s.kind], f"messaging.operation.*{ctx}"
    dest = a.get("messaging.destination.name")
    # Conventions: `{messaging.operation.name} {destination}` (publish / deliver / get).
    assert isinstance(dest, str) and dest and s.name == f"{op_name} {dest}", f"span name{ctx}"
    size = a.get("messaging.message.body.size")
    assert type(size) is int and size >= 0, f"messaging.message.body.size must be an int{ctx}"
    if s.kind == KIND_PRODUCER or "server.port" in a:
        assert type(a.get("server.port")) is int, f"server.port must be an int{ctx}"


def assert_attrs(s: ReceivedSpan, expected: dict[str, Any]) -> None:
    """Each expected key is present with exactly that value AND type (200 is not "200")."""
    __tracebackhide__ = True
    bad = {k: (v, s.attributes.get(k, "<missing>")) for k, v in expected.items()
           if k not in s.attributes or s.attributes[k] != v
           or type(s.attributes[k]) is not type(v)}
    assert not bad, ("attribute mismatches {key: (expected, got)}: "
                     f"{bad}\n{fmt_span(s)}")


def assert_name(s: ReceivedSpan, method: str, path: str, template: str | None) -> None:
    """Templated routes must match exactly; otherwise `{method} {path}` or just `{method}`."""
    __tracebackhide__ = True
    if template is not None:
        assert s.name == f"{method} {template}", (
            f"expected name {method} {template!r}\n{fmt_span(s)}")
    else:
        assert s.name in (method, f"{method} {path}"), f"unexpected span name\n{fmt_span(s)}"
    route = s.attributes.get("http.route")
    if route is not None and template is not None and s.kind == KIND_SERVER:
        assert route == template, f"http.route\n{fmt_span(s)}"


def assert_child_of(child: ReceivedSpan, parent: ReceivedSpan) -> None:
    __tracebackhide__ = True
    assert child.trace_id == parent.trace_id and child.parent_span_id == parent.span_id, (
        f"expected parent/child:\nparent {fmt_span(parent)}\nchild  {fmt_span(child)}")


def assert_within(inner: ReceivedSpan, outer: ReceivedSpan,
                  tol: int = CLOCK_TOLERANCE_NS) -> None:
    __tracebackhide__ = True
    assert outer.start_ns - tol <= inner.start_ns and inner.end_ns <= outer.end_ns + tol, (
        f"interval of\n  {fmt_span(inner)}\nnot inside\n  {fmt_span(outer)}")


def assert_body_size(s: ReceivedSpan, key: str, expected: int) -> None:
    """`key` (http.request.body.size / http.response.body.size) is exactly `expected`: the
    body bytes the peer really sent, as the client or server itself reports them (curl's
    size_download/size_upload, a known response body, the POST body a test sent), payload
    only (a chunked body counts its chunk data, not the framing; HTTP/2 counts DATA payload,
    not padding). A body of 0 bytes may be reported as 0 or left out (the agent omits the
    request size of a request without a body); any other size must be there."""
    __tracebackhide__ = True
    v = s.attributes.get(key)
    if v is None and expected == 0:
        return
    assert type(v) is int and v == expected, (
        f"{key}={v!r}, expected {expected} (an int)\n{fmt_span(s)}")


def only(spans: Iterable[ReceivedSpan], what: str, kind: int | None = None,
         pid: int | None = None, path: str | None = None) -> ReceivedSpan:
    """The single span with this kind / process.pid / url.path, or an AssertionError."""
    __tracebackhide__ = True
    spans = list(spans)
    found = [s for s in spans if (kind is None or s.kind == kind) and (pid is None or s.pid == pid)
             and (path is None or s.attributes.get("url.path") == path)]
    assert len(found) == 1, (f"expected exactly one span for {what} (kind={kind} pid={pid} "
                             f"path={path}), found {len(found)}:\n{fmt_spans(found or spans)}")
    return found[0]
