"""The agent's console output (no --otlp-endpoint: one line per span on stdout), parsed and
checked like exported spans.

The line format is agent/src/export/console.rs `format_span`:
    HH:MM:SS.mmmZ KIND name  duration STATUS[(message)] trace=<32 hex> span=<16 hex>
        parent=<16 hex>|- svc=<service.name> pid=<process.pid> key=value ...
(one line), where a string value that is empty or holds whitespace, quotes, `=`, `\\` or
control characters is written as a quoted Rust literal and everything else as it is (so an
int 200 and a string "200" print alike: values are compared as text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_QUOTED = r'"(?:[^"\\]|\\.)*"'
_LINE = re.compile(
    r"^(?P<time>\d\d:\d\d:\d\d\.\d{3}Z) (?P<kind>SERVER|CLIENT|PRODUCER|CONSUMER|INTERNAL) "
    r"(?P<name>.*?)  (?P<duration>\d+(?:\.\d+)?(?:ns|µs|ms|s)) (?P<status>UNSET|OK|ERROR)"
    rf"(?:\((?P<message>{_QUOTED}|[^)\s]*)\))? "
    r"trace=(?P<trace>[0-9a-f]{32}) span=(?P<span>[0-9a-f]{16}) parent=(?P<parent>[0-9a-f]{16}|-)"
    rf" svc=(?P<svc>{_QUOTED}|\S+) pid=(?P<pid>\d+|-)(?P<attrs>.*)$")
_ATTR = re.compile(rf" (?P<key>[A-Za-z0-9_.\-]+)=(?P<value>{_QUOTED}|[^\s\"]+)")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "\\": "\\", '"': '"', "'": "'"}


def unquote(v: str) -> str:
    """A value as printed -> its text (Rust `{:?}` escapes undone)."""
    if not v.startswith('"'):
        return v
    out, i, body = [], 0, v[1:-1]
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
        elif body[i + 1] == "u":  # \u{hex}
            end = body.index("}", i)
            out.append(chr(int(body[i + 3:end], 16)))
            i = end + 1
        else:
            out.append(_ESCAPES[body[i + 1]])
            i += 2
    return "".join(out)


@dataclass
class ConsoleSpan:
    line: str
    kind: str
    name: str
    status: str
    message: str | None
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root, as in ReceivedSpan
    service_name: str
    pid: int | None
    attributes: dict[str, str] = field(default_factory=dict)


def parse_line(line: str) -> ConsoleSpan:
    """One console line; AssertionError if it is not a well-formed span line."""
    __tracebackhide__ = True
    m = _LINE.match(line)
    assert m, f"not a console span line: {line!r}"
    attrs, pos, rest = {}, 0, m["attrs"]
    for a in _ATTR.finditer(rest):
        assert a.start() == pos, f"unparseable attributes at {rest[pos:]!r} in {line!r}"
        assert a["key"] not in attrs, f"attribute {a['key']} twice in {line!r}"
        attrs[a["key"]] = unquote(a["value"])
        pos = a.end()
    assert pos == len(rest), f"unparseable attributes at {rest[pos:]!r} in {line!r}"
    return ConsoleSpan(line=line, kind=m["kind"], name=m["name"], status=m["status"],
                       message=unquote(m["message"]) if m["message"] else None,
                       trace_id=m["trace"], span_id=m["span"],
                       parent_span_id="" if m["parent"] == "-" else m["parent"],
                       service_name=unquote(m["svc"]),
                       pid=None if m["pid"] == "-" else int(m["pid"]), attributes=attrs)


def parse_output(text: str) -> list[ConsoleSpan]:
    """Every line of the agent's stdout but the RED metrics summary (lines starting with `# `,
    see agent/src/export/metrics_console.rs): each one must be a span line (the agent logs to
    stderr; anything else on stdout is a defect)."""
    __tracebackhide__ = True
    return [parse_line(line) for line in text.splitlines() if not line.startswith("# ")]


def red_summary(text: str) -> list[dict[str, str]]:
    """The RED summary lines of the agent's stdout (`# <metric> key=value ... count=N errors=N
    p50=.. p99=..`), each as a dict with `metric` and every key."""
    out = []
    for line in text.splitlines():
        if not line.startswith("# ") or "=" not in line:
            continue
        metric, _, rest = line[2:].partition(" ")
        row = {"metric": metric}
        for a in _ATTR.finditer(" " + rest):
            row[a["key"]] = unquote(a["value"])
        out.append(row)
    return out


@dataclass
class Request:
    """One HTTP request a test made and what its client reported about it."""
    path: str
    local_port: int  # the client's ephemeral port
    body_size: int  # response body bytes the client received
    version: str  # HTTP version of the response, as curl reports it ("1.0", "1.1")


def check_console_http(spans: list[ConsoleSpan], *, client_pid: int, client_svc: str,
                       server_pid: int, server_svc: str, port: int, ua: str,
                       requests: list[Request]) -> None:
    """Exactly one CLIENT line (from the client) and one SERVER line (from the server) per
    request and nothing else; each with the attributes of a GET 200 of its path; the SERVER
    line the CLIENT line's child (same-node stitching: same trace, parent = the CLIENT line's
    span id); the client's lines roots, one trace per request."""
    __tracebackhide__ = True
    dump = "\n".join(s.line for s in spans) or "(no lines)"
    want = sorted([("CLIENT", client_pid)] * len(requests) + [("SERVER", server_pid)] * len(requests))
    got = sorted((s.kind, s.pid) for s in spans)
    assert got == want, (f"expected {len(requests)} CLIENT lines from pid {client_pid} and "
                         f"{len(requests)} SERVER lines from pid {server_pid}, got {got}:\n{dump}")
    traces = set()
    for r in requests:
        mine = [s for s in spans if s.attributes.get("url.path") == r.path]
        assert sorted(s.kind for s in mine) == ["CLIENT", "SERVER"], (
            f"one CLIENT and one SERVER line for {r.path}:\n{dump}")
        c, s = sorted(mine, key=lambda x: x.kind)
        common = {"http.request.method": "GET", "url.path": r.path, "url.scheme": "http",
                  "http.response.status_code": "200", "server.address": "127.0.0.1",
                  "server.port": str(port), "network.peer.address": "127.0.0.1",
                  "network.protocol.version": r.version, "user_agent.original": ua,
                  "http.response.body.size": str(r.body_size)}
        expect = [(c, {**common, "network.peer.port": str(port),
                       "url.full": f"http://127.0.0.1:{port}{r.path}"}),
                  (s, {**common, "client.address": "127.0.0.1",
                       "network.peer.port": str(r.local_port)})]
        for span, attrs in expect:
            bad = {k: (v, span.attributes.get(k, "<missing>")) for k, v in attrs.items()
                   if span.attributes.get(k) != v}
            assert not bad, f"attribute mismatches {{key: (expected, got)}}: {bad}\n{span.line}"
            for key in ("url.query", "http.request.body.size", "error.type"):
                assert key not in span.attributes, f"{key} on a plain GET\n{span.line}"
            assert span.name in ("GET", f"GET {r.path}"), f"span name\n{span.line}"
            assert span.status == "UNSET" and span.message is None, (
                f"span status must be UNSET on a 200\n{span.line}")
        assert (c.service_name, s.service_name) == (client_svc, server_svc), f"svc\n{c.line}\n{s.line}"
        assert c.parent_span_id == "", f"the client's line must be a root\n{c.line}"
        assert s.trace_id == c.trace_id and s.parent_span_id == c.span_id, (
            f"the SERVER line must be the CLIENT line's child:\n{c.line}\n{s.line}")
        assert s.span_id != c.span_id, f"one span id for two spans\n{c.line}\n{s.line}"
        traces.add(c.trace_id)
    assert len(traces) == len(requests), f"each request its own trace:\n{dump}"
