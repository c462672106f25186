"""The agent's metrics and health endpoint (`telemetry.listen`), scraped over real HTTP.

/metrics is parsed with the Prometheus project's own Python parsers (the text format, and the
strict OpenMetrics one when asked for by Accept); the expected counter names and help texts are
read from agent/src/telemetry.rs and agent/src/telemetry/health.rs, not from the output. Also:
a counter moves after traffic, /healthz and /readyz answer 200 once the agent is ready, /readyz
turns 503 while the collector is down and back to 200 when it returns, other paths get 404,
the socket is bound to loopback only (checked with `ss`) and released when the agent exits, a
non-loopback address is logged with a warning, "" opens no socket, and bad addresses stop
start-up naming the field.

Its agents exclude the pytest process, whose scrapes would otherwise be traced and exported
as spans of the receiver's own process.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import \
    text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

from harness.agent import Agent
from harness.procs import free_port, wait_until
from harness.scenario import Scenario
from otlp_receiver import OtlpReceiver

ROOT = Path(__file__).resolve().parents[2]
PROM_ACCEPT = ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
               "encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;q=0.5,"
               "text/plain;version=0.0.4;q=0.3,*/*;q=0.2")
_DECL = re.compile(r'^\s*[A-Z]\w* => "(agent_\w+)", "((?:[^"\\]|\\.)*)";\s*$', re.M)


def declared(path: str, table: str | None = None) -> dict[str, str]:
    """name -> help of the metrics a counters!/gauges! table in the Rust source declares (only
    the invocation `table! { ... }` when given)."""
    text = (ROOT / path).read_text()
    if table is not None:
        m = re.search(r"^" + re.escape(table) + r"! \{\n(.*?)^\}", text, re.M | re.S)
        assert m, f"no {table}! table in {path}"
        text = m.group(1)
    found = dict(_DECL.findall(text))
    assert found, f"no metric declarations found in {path}"
    return found


COUNTERS = declared("agent/src/telemetry.rs", "counters")
# Counted per protocol: one series per protocol, label `protocol` (the registry's names).
PROTOCOL_COUNTERS = declared("agent/src/telemetry.rs", "protocol_counters")
PROTOCOLS = sorted(set(re.findall(r'const NAME: &\'static str = "(\w+)";', "".join(
    p.read_text() for p in (ROOT / "agent/src/protocol").glob("*/mod.rs")))))
assert {"http1", "http2", "postgres", "amqp"} <= set(PROTOCOLS), PROTOCOLS
GAUGES = declared("agent/src/telemetry/health.rs")
# The RED histograms (agent/src/telemetry/red.rs), by OTel name -> Prometheus family name
# (OTLP->Prometheus conversion: dots to underscores, unit `s` appended as `_seconds`).
RED = {n: n.replace(".", "_") + "_seconds" for n in re.findall(
    r'=> "([a-z.]+\.duration)",', (ROOT / "agent/src/telemetry/red.rs").read_text())}
assert "http.server.request.duration" in RED and "db.client.operation.duration" in RED, RED
# The HTTP semantic conventions' explicit bucket boundaries for request durations.
SEMCONV_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]


def request(port: int, path: str, method: str = "GET",
            headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """(status, content type, body) of one request to the agent's endpoint."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, r.getheader("Content-Type") or "", r.read().decode()
    finally:
        c.close()


def scrape(port: int) -> dict[str, float]:
    """Every sample of /metrics (Prometheus text format), by sample name, and for a labelled
    sample by name and labels as the text format writes them (`name{k="v"}`)."""
    status, _, body = request(port, "/metrics")
    assert status == 200, body
    return {s.name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items())) + "}"
                      if s.labels else ""): s.value
            for f in parse_prometheus(body) for s in f.samples}


def config(d: Path, listen: str, extra: str = "") -> Path:
    p = d / "agent.yaml"
    p.write_text(f"processes:\n  exclude_pids: [{os.getpid()}]\n"
                 f"telemetry:\n  log_interval_secs: 0\n  listen: {listen!r}\n{extra}")
    return p


def listeners(pid: int) -> set[str]:
    """Local addresses of the TCP sockets `pid` listens on, from `ss -ltnp`."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    return {line.split()[3] for line in out.splitlines() if f"pid={pid}," in line}


def start_agent(agent_bin: Path, d: Path, endpoint: str | None, listen: str,
                extra: str = "") -> Agent:
    d.mkdir(parents=True, exist_ok=True)
    return Agent(agent_bin, d, endpoint, name="agent-metrics",
                 args=["--config", str(config(d, listen, extra))])


def stop(agent: Agent) -> None:
    code = agent.stop()
    assert code == 0, f"agent exited with {code} on SIGTERM\n{agent.stderr_tail()}"


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def agent(agent_bin: Path, receiver: OtlpReceiver, workroot: Path, port: int):
    a = start_agent(agent_bin, workroot / "agent-metrics", receiver.endpoint, f"127.0.0.1:{port}")
    try:
        yield a
    finally:
        stop(a)


def test_metrics_in_prometheus_text_format(agent: Agent, port: int) -> None:
    status, ctype, body = request(port, "/metrics")
    assert status == 200
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in parse_prometheus(body)}
    for name, help_text in COUNTERS.items():
        assert f"# HELP {name} {help_text}\n# TYPE {name} counter\n" in body, name
        f = families.get(name.removesuffix("_total"))
        assert f is not None and f.type == "counter" and f.documentation == help_text, name
        assert [s.name for s in f.samples] == [name], f.samples
    for name, help_text in PROTOCOL_COUNTERS.items():
        assert f"# HELP {name} {help_text}\n# TYPE {name} counter\n" in body, name
        f = families.get(name.removesuffix("_total"))
        assert f is not None and f.type == "counter" and f.documentation == help_text, name
        assert sorted(s.labels.get("protocol") for s in f.samples) == PROTOCOLS, f.samples
        assert all(s.name == name for s in f.samples), f.samples
    for name, help_text in GAUGES.items():
        assert f"# HELP {name} {help_text}\n# TYPE {name} gauge\n" in body, name
        assert families[name].type == "gauge" and families[name].documentation == help_text
    assert families["agent_probes_attached"].samples[0].value > 0
    # A RED family appears once it has a series (prometheus-client omits empty families).
    for name in set(RED.values()) & set(families):
        assert families[name].type == "histogram", name
    extra = (set(families) - {n.removesuffix("_total") for n in COUNTERS}
             - {n.removesuffix("_total") for n in PROTOCOL_COUNTERS} - set(GAUGES)
             - set(RED.values()))
    assert not extra, f"families nobody declared: {extra}"
    assert "# EOF" not in body


def test_metrics_in_openmetrics_when_asked(agent: Agent, port: int) -> None:
    status, ctype, body = request(port, "/metrics", headers={"Accept": PROM_ACCEPT})
    assert status == 200
    assert ctype == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    # The OpenMetrics parser is strict: HELP/TYPE before samples, `# EOF` last, and so on.
    families = {f.name: f for f in parse_openmetrics(body)}
    for name, help_text in COUNTERS.items():
        f = families[name.removesuffix("_total")]
        assert f.type == "counter" and f.documentation == help_text, name
    for name in GAUGES:
        assert families[name].type == "gauge"


def test_a_counter_moves_after_traffic(agent: Agent, port: int, receiver: OtlpReceiver,
                                       workroot: Path) -> None:
    before = scrape(port)
    d = workroot / "metrics-traffic"
    d.mkdir()
    scn = Scenario(receiver, agent, d)
    try:
        svc = scn.service()
        scn.curl(f"http://127.0.0.1:{svc.port}/users/1")
        # A server and a client span, and none from this process's scrapes (check_global).
        scn.collect(2)
    finally:
        scn.close()
        shutil.rmtree(d, ignore_errors=True)
    grown = {"agent_spans_created_total": 2, "agent_spans_exported_total": 2,
             "agent_connections_opened_total": 2, "agent_events_read_total": 2,
             # curl's request and the service's, each counted under its protocol.
             'agent_requests_parsed_total{protocol="http1"}': 2}
    now: dict[str, float] = {}

    def moved() -> bool:
        now.update(scrape(port))
        return all(now[n] >= before[n] + k for n, k in grown.items())

    # Read live: the exporter counts a batch once the collector has answered.
    try:
        wait_until(moved, 10, "the counters to grow")
    except TimeoutError:
        pytest.fail(f"counters did not grow by {grown}: before "
                    f"{ {n: before[n] for n in grown} }, now { {n: now[n] for n in grown} }")


def scrape_openmetrics(port: int) -> dict:
    """The OpenMetrics families of /metrics, by name (parsed strictly)."""
    status, ctype, body = request(port, "/metrics", headers={
        "Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200 and ctype.startswith("application/openmetrics-text"), (status, ctype)
    return {f.name: f for f in parse_openmetrics(body)}


def series_counts(families: dict, family: str, where) -> dict[tuple, float]:
    """`_count` of each series of `family` whose labels satisfy `where`, by label set."""
    return {tuple(sorted(s.labels.items())): s.value for s in families[family].samples
            if s.name == family + "_count" and where(s.labels)}


def test_red_metrics_count_every_request_with_exemplars(agent: Agent, port: int,
                                                        receiver: OtlpReceiver,
                                                        workroot: Path) -> None:
    """N curl requests to a Python server: the http.server and http.client duration
    histograms grow by N, with the conventions' buckets and labels, and their exemplars name
    spans the receiver got."""
    n = 5
    server_family = RED["http.server.request.duration"]
    client_family = RED["http.client.request.duration"]
    d = workroot / "metrics-red"
    d.mkdir()
    scn = Scenario(receiver, agent, d)
    try:
        svc = scn.service(env={"OTEL_SERVICE_NAME": "red-e2e"})
        before = scrape_openmetrics(port)
        scn.curl(*[f"http://127.0.0.1:{svc.port}/users/{i}" for i in range(n)])
        spans = scn.collect(2 * n)
    finally:
        scn.close()
        shutil.rmtree(d, ignore_errors=True)
    ours_server = lambda labels: labels.get("service_name") == "red-e2e"
    ours_client = lambda labels: labels.get("server_port") == str(svc.port)
    fams: dict = {}

    def grown() -> bool:
        fams.update(scrape_openmetrics(port))
        return (sum(series_counts(fams, server_family, ours_server).values()) >= n
                and sum(series_counts(fams, client_family, ours_client).values()) >= n)

    wait_until(grown, 10, "the RED histograms to count the requests")
    assert not series_counts(before, server_family, ours_server)
    server = series_counts(fams, server_family, ours_server)
    client = series_counts(fams, client_family, ours_client)
    assert sum(server.values()) == n and sum(client.values()) == n, (server, client)
    # One series each: route templates, not raw paths, and the conventions' attributes.
    assert len(server) == 1 and len(client) == 1, (server, client)
    labels = dict(next(iter(server)))
    assert labels["http_request_method"] == "GET" and labels["http_response_status_code"] == "200"
    assert labels["url_scheme"] == "http" and labels["network_protocol_version"] == "1.1"
    assert "http_route" in labels and "/users/1" != labels["http_route"], labels
    assert dict(next(iter(client)))["server_address"] == "127.0.0.1"
    got = {(s.trace_id, s.span_id) for s in spans}
    for family, ours in ((server_family, ours_server), (client_family, ours_client)):
        buckets = [s for s in fams[family].samples
                   if s.name == family + "_bucket" and ours(s.labels)]
        les = [s.labels["le"] for s in buckets]
        assert [float(x) for x in les[:-1]] == SEMCONV_BUCKETS and les[-1] == "+Inf", les
        assert buckets[-1].value == n
        exemplars = [s.exemplar for s in buckets if s.exemplar is not None]
        assert exemplars, f"no exemplar in {family}"
        for e in exemplars:
            assert (e.labels["trace_id"], e.labels["span_id"]) in got, (e, got)


def test_health_ready_and_other_paths(agent: Agent, port: int) -> None:
    assert request(port, "/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
    assert request(port, "/readyz")[::2] == (200, "ready\n")
    assert request(port, "/healthz", method="HEAD")[::2] == (200, "")
    assert request(port, "/nope")[0] == 404
    assert request(port, "/metrics/")[0] == 404
    assert request(port, "/metrics", method="POST")[0] == 405
    # A client that sends garbage gets an error, is counted, and the agent carries on.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x02\x00 not http\r\n\r\n")
        s.recv(1024)
    assert request(port, "/healthz")[0] == 200
    assert scrape(port)["agent_telemetry_http_errors_total"] >= 1


def test_listens_on_loopback_only(agent: Agent, port: int) -> None:
    assert listeners(agent.pid) == {f"127.0.0.1:{port}"}


def test_readyz_follows_the_collector(agent_bin: Path, workroot: Path) -> None:
    """Collector down: /readyz turns 503 with the reason while /healthz stays 200; collector
    back: /readyz is 200 again once a retry gets through."""
    port, dead = free_port(), free_port()
    d = workroot / "agent-metrics-collector-down"
    a = start_agent(agent_bin, d, f"http://127.0.0.1:{dead}", f"127.0.0.1:{port}",
                    "  unready_after_export_failing_secs: 1\n"
                    "export:\n  batch_timeout_ms: 100\n  max_retry_elapsed_ms: 60000\n")
    scn = Scenario(None, a, d / "scn")
    (d / "scn").mkdir()
    late = None
    try:
        assert request(port, "/readyz")[0] == 200, "no export attempted yet: ready"
        svc = scn.service()
        scn.curl(f"http://127.0.0.1:{svc.port}/users/2")
        wait_until(lambda: request(port, "/readyz")[0] == 503, 15, "/readyz to answer 503")
        _, _, why = request(port, "/readyz")
        assert why.startswith("export failing for ") and "limit 1s" in why, why
        assert request(port, "/healthz")[0] == 200
        late = OtlpReceiver(port=dead).start()
        wait_until(lambda: request(port, "/readyz")[0] == 200, 30,
                   "/readyz to answer 200 once the collector is back")
        assert late.spans(), "the retried batch arrived"
    finally:
        scn.close()
        stop(a)
        if late is not None:
            late.stop()


def test_non_loopback_is_warned_and_empty_opens_no_socket(agent_bin: Path,
                                                          workroot: Path) -> None:
    port = free_port()
    a = start_agent(agent_bin, workroot / "agent-metrics-any", None, f"0.0.0.0:{port}")
    try:
        assert re.search(r"WARN.*non-loopback address, 0\.0\.0\.0:" + str(port), a.stderr_tail())
        assert listeners(a.pid) == {f"0.0.0.0:{port}"}
    finally:
        stop(a)
    # Free as soon as the agent has exited: the child it forks to detach probes at exit must
    # not inherit the socket (the next agent could not start).
    with socket.socket() as s:
        s.bind(("0.0.0.0", port))
    a = start_agent(agent_bin, workroot / "agent-metrics-off", None, "")
    try:
        assert listeners(a.pid) == set()
        assert "telemetry.listen is empty" in a.stderr_tail()
    finally:
        stop(a)


@pytest.mark.parametrize("listen,message", [
    ("localhost:9464", 'telemetry.listen: expected IP:port (e.g. 127.0.0.1:9464) or "" for no '
                       'endpoint, got "localhost:9464"'),
    ("taken", "telemetry.listen: cannot listen on 127.0.0.1:"),
])
def test_bad_listen_stops_start_up_naming_the_field(agent_bin: Path, workroot: Path,
                                                    listen: str, message: str) -> None:
    d = workroot / f"agent-metrics-bad-{listen}"
    d.mkdir()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        if listen == "taken":
            listen = f"127.0.0.1:{holder.getsockname()[1]}"
        r = subprocess.run([str(agent_bin), "run", "--config", str(config(d, listen))],
                           capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
