"""The RED metrics exported as OTLP metrics (`metrics.export_interval_ms`), received by the
receiver's MetricsService, and printed as a summary in console mode.

N curl requests to a Python server: the receiver gets `http.server.request.duration` and
`http.client.request.duration` histograms whose counts are exactly N, cumulative, in seconds,
with the semantic conventions' bucket boundaries (the same as /metrics, whose count for the
same series is compared), typed attributes, the agent's own resource, and exemplars whose
trace/span ids are spans the receiver got. SIGTERM sends a final export even with an hour's
interval. Console mode prints `# <metric> ... count=N errors=E p50=.. p99=..` lines.

The agents exclude the pytest process (which hosts the receiver) and name the traced server
with a service.name of its own, so other modules' series do not mix in.
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.request
from pathlib import Path

from harness.agent import Agent
from harness.console import red_summary
from harness.procs import free_port, wait_until
from harness.scenario import Scenario
from otlp_receiver import TEMPORALITY_CUMULATIVE, OtlpReceiver, ReceivedPoint

SEMCONV_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
INTERVAL_MS = 500


def start_agent(agent_bin: Path, d: Path, endpoint: str | None, interval_ms: int,
                listen: str = "") -> Agent:
    d.mkdir(parents=True, exist_ok=True)
    cfg = d / "agent.yaml"
    cfg.write_text(f"processes:\n  exclude_pids: [{os.getpid()}]\n"
                   f"telemetry:\n  log_interval_secs: 0\n  listen: {listen!r}\n"
                   f"metrics:\n  export_interval_ms: {interval_ms}\n")
    return Agent(agent_bin, d, endpoint, name="agent-otlp-metrics", args=["--config", str(cfg)])


def stop(agent: Agent) -> None:
    code = agent.stop()
    assert code == 0, f"agent exited with {code} on SIGTERM\n{agent.stderr_tail()}"


def latest(points: list[ReceivedPoint]) -> ReceivedPoint | None:
    """The most recent point (cumulative: it holds the totals)."""
    return max(points, key=lambda p: (p.request_index, p.time_ns), default=None)


def prometheus_count(port: int, family: str, label: str, value: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in body.splitlines():
        if line.startswith(family + "_count{") and f'{label}="{value}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_histograms_count_every_request_with_exemplars(agent_bin: Path, receiver: OtlpReceiver,
                                                       workroot: Path) -> None:
    n = 6
    svc_name = "otlp-metrics-e2e"
    metrics_port = free_port()
    d = workroot / "otlp-metrics"
    agent = start_agent(agent_bin, d / "agent", receiver.endpoint, INTERVAL_MS,
                        f"127.0.0.1:{metrics_port}")
    scn = Scenario(receiver, agent, d / "scn")
    (d / "scn").mkdir()
    try:
        svc = scn.service(env={"OTEL_SERVICE_NAME": svc_name})
        scn.curl(*[f"http://127.0.0.1:{svc.port}/users/{i}" for i in range(n)])
        spans = scn.collect(2 * n)
        server = lambda p: (p.metric == "http.server.request.duration"  # noqa: E731
                            and p.attributes.get("service.name") == svc_name)
        client = lambda p: (p.metric == "http.client.request.duration"  # noqa: E731
                            and p.attributes.get("server.port") == svc.port)
        wait_until(lambda: sum(p.count for p in [latest(receiver.points(server)),
                                                 latest(receiver.points(client))] if p) >= 2 * n,
                   15, f"OTLP histograms counting {n} server and {n} client requests")
        # One more export: the totals are cumulative and stay N.
        seen = receiver.metric_requests()
        wait_until(lambda: receiver.metric_requests() > seen + 1, 10, "two more exports")
        prom = prometheus_count(metrics_port, "http_server_request_duration_seconds",
                                "service_name", svc_name)
    finally:
        scn.close()
        stop(agent)
        shutil.rmtree(d, ignore_errors=True)
    assert not receiver.errors(), receiver.errors()
    got = {(s.trace_id, s.span_id) for s in spans}
    for kind, pred in (("server", server), ("client", client)):
        points = receiver.points(pred)
        p = latest(points)
        assert p is not None, f"no {kind} point"
        # One series: route templates, not raw paths.
        assert len({tuple(sorted(x.attributes.items())) for x in points}) == 1, points
        assert p.count == n, (kind, p)
        assert p.unit == "s" and p.temporality == TEMPORALITY_CUMULATIVE, p
        assert p.explicit_bounds == SEMCONV_BUCKETS, p.explicit_bounds
        assert len(p.bucket_counts) == len(SEMCONV_BUCKETS) + 1
        assert sum(p.bucket_counts) == p.count
        assert p.sum is not None and 0 < p.sum < n * 10, p.sum
        assert p.start_ns <= p.time_ns
        # Every point of the series since it started has the same start time (cumulative).
        assert {x.start_ns for x in points} == {p.start_ns}
        assert p.attributes["http.request.method"] == "GET"
        assert p.attributes["http.response.status_code"] == 200  # an int, as in the spans
        assert p.exemplars, f"no exemplar on the {kind} point"
        for trace_id, span_id, value, _ in p.exemplars:
            assert (trace_id, span_id) in got, (trace_id, span_id, got)
            assert 0 < value < 10
        assert p.resource["service.name"] == "ebpf-agent", p.resource
        assert p.resource["host.name"] and p.resource["telemetry.distro.name"] == "ebpf-agent"
        assert p.scope_name == "ebpf-agent"
    s = latest(receiver.points(server))
    assert "/users/1" != s.attributes["http.route"] and s.attributes["http.route"].startswith(
        "/users/"), s.attributes
    assert s.attributes["service.name"] == svc_name
    assert prom == n, f"/metrics counts {prom} for the series OTLP counts {n}"


def test_sigterm_sends_a_final_export(agent_bin: Path, receiver: OtlpReceiver,
                                      workroot: Path) -> None:
    """With an interval of an hour, the only export is the one at shutdown: it has them all."""
    n = 3
    svc_name = "otlp-metrics-final"
    d = workroot / "otlp-metrics-final"
    agent = start_agent(agent_bin, d / "agent", receiver.endpoint, 3_600_000)
    scn = Scenario(receiver, agent, d / "scn")
    (d / "scn").mkdir()
    try:
        svc = scn.service(env={"OTEL_SERVICE_NAME": svc_name})
        scn.curl(*[f"http://127.0.0.1:{svc.port}/x{i}" for i in range(n)])
        scn.collect(2 * n)
        mine = lambda p: p.attributes.get("service.name") == svc_name  # noqa: E731
        assert not receiver.points(mine), "nothing is exported before the interval"
    finally:
        scn.close()
        stop(agent)
        shutil.rmtree(d, ignore_errors=True)
    points = receiver.points(mine)
    assert points, "no final export on SIGTERM"
    # One export call, one series per path (/x0, /x1, /x2 are not a route template).
    assert len({p.request_index for p in points}) == 1, points
    assert sorted((p.metric, p.attributes["http.route"], p.count) for p in points) == [
        ("http.server.request.duration", f"/x{i}", 1) for i in range(n)], points


def test_console_prints_a_red_summary(agent_bin: Path, workroot: Path) -> None:
    n, svc_name = 4, "otlp-metrics-console"
    d = workroot / "otlp-metrics-console"
    agent = start_agent(agent_bin, d / "agent", None, INTERVAL_MS)
    scn = Scenario(None, agent, d / "scn")
    (d / "scn").mkdir()
    last: dict[str, dict[str, str]] = {}

    def users() -> list[dict[str, str]]:
        return [r for route, r in last.items() if route.startswith("/users/")]

    try:
        svc = scn.service(env={"OTEL_SERVICE_NAME": svc_name})
        scn.curl(*[f"http://127.0.0.1:{svc.port}/users/{i}" for i in range(n)],
                 f"http://127.0.0.1:{svc.port}/status/500")

        def summary() -> bool:
            # Later lines of the same route replace earlier ones: the last summary wins.
            last.clear()
            last.update({r.get("http.route", ""): r for r in red_summary(agent.proc.stdout())
                         if r["metric"] == "http.server.request.duration"
                         and r.get("service.name") == svc_name})
            return (sum(int(r["count"]) for r in users()) >= n
                    and any(route.startswith("/status") for route in last))
        wait_until(summary, 15, "a RED summary counting the requests")
    finally:
        scn.close()
        stop(agent)
        shutil.rmtree(d, ignore_errors=True)
    # One line per route, the outcome attributes folded in.
    u = users()
    assert len(u) == 1 and int(u[0]["count"]) == n and u[0]["errors"] == "0", last
    assert "http.response.status_code" not in u[0] and "error.type" not in u[0], u
    assert re.fullmatch(r"\d+\.\dms", u[0]["p50"]) and re.fullmatch(r"\d+\.\dms", u[0]["p99"]), u
    failed = [r for route, r in last.items() if route.startswith("/status")]
    assert len(failed) == 1 and failed[0]["count"] == "1" and failed[0]["errors"] == "1", last
