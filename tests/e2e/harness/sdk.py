"""A service instrumented by the OpenTelemetry SDK beside the agent: how it is started, how its
spans are told from the agent's, and collecting both.

The SDK exports to the suite's receiver (the same one the agent exports to), so one trace can be
checked across both. Spans are told apart by their resource: the SDK's say
telemetry.sdk.name=opentelemetry and have no telemetry.distro.name; the agent's say
telemetry.distro.name=ebpf-agent and have no telemetry.sdk.* (see agent/src/enrich).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Callable

from otlp_receiver import ReceivedSpan

from .scenario import PYTHON, WINDOW_SLACK_NS, Scenario
from .spans import check_common, fmt_span, fmt_spans

# The zero-code launcher, installed beside the interpreter by opentelemetry-instrumentation.
OTEL_INSTRUMENT = Path(PYTHON).parent / "opentelemetry-instrument"
# The OTLP service the SDK's exporter calls: the agent sees those calls like any other gRPC.
OTLP_TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")


def sdk_env(service_name: str, endpoint: str) -> dict[str, str]:
    """The environment of a zero-code-instrumented Python service: the SDK exports every span
    (always_on) over OTLP/gRPC to `endpoint`, in batches 200 ms apart; these variables are also
    what the agent detects an SDK by (OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_ENDPOINT)."""
    return {
        "OTEL_SERVICE_NAME": service_name,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",  # the receiver implements TraceService only
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        # process.pid on the SDK's resource, so its spans are attributed like the agent's.
        "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "process",
        # The stable HTTP and database attribute names (url.path, server.port, db.*), as the
        # agent's.
        "OTEL_SEMCONV_STABILITY_OPT_IN": "http,database",
    }


def is_sdk_span(s: ReceivedSpan) -> bool:
    return (s.resource.get("telemetry.sdk.name") == "opentelemetry"
            and "telemetry.distro.name" not in s.resource)


def is_otlp_export(s: ReceivedSpan) -> bool:
    """A span (the agent's) of an SDK's own export call to an OTLP collector."""
    return s.attributes.get("rpc.service") == OTLP_TRACE_SERVICE


def check_sdk_common(s: ReceivedSpan, pids: set[int], t_min_ns: int, t_max_ns: int) -> None:
    """What every span of the SDK must be: well-formed ids, inside the test's window, from one
    of the test's processes, made by the Python SDK."""
    __tracebackhide__ = True
    ctx = f"\n{fmt_span(s)}\nresource={s.resource}"
    assert _HEX32.match(s.trace_id) and _HEX16.match(s.span_id), f"bad ids{ctx}"
    assert s.parent_span_id == "" or _HEX16.match(s.parent_span_id), f"bad parent id{ctx}"
    assert s.end_ns >= s.start_ns and t_min_ns <= s.start_ns and s.end_ns <= t_max_ns, (
        f"SDK span outside the test's window{ctx}")
    assert s.resource.get("process.pid") in pids, f"SDK span from a foreign process{ctx}"
    assert s.resource.get("telemetry.sdk.language") == "python", f"not the Python SDK{ctx}"


def collect(scn: Scenario, agent: int, sdk: int,
            ignore: Callable[[ReceivedSpan], bool] = lambda s: False
            ) -> tuple[list[ReceivedSpan], list[ReceivedSpan]]:
    """Exactly `agent` spans of the agent and `sdk` spans of SDKs for this test's traffic
    (spans for which `ignore` is true are left out of both), after waiting for them and then a
    quiet period for extras, as Scenario.collect does; each passes its side's common checks and
    the session-wide rules hold. Returns (agent's, SDK's)."""
    __tracebackhide__ = True
    assert scn.receiver is not None

    def wanted(s: ReceivedSpan) -> bool:
        return scn.mine(s) and not ignore(s)

    try:
        scn.receiver.wait_for_spans(wanted, scn.span_timeout, agent + sdk)
    except TimeoutError:
        pass  # reported below, with what did arrive
    else:
        try:
            scn.receiver.wait_for_spans(wanted, scn.quiet, agent + sdk + 1)
        except TimeoutError:
            pass
    spans = scn.last_spans = scn.receiver.spans(wanted)
    if scn.agent is not None:
        assert scn.agent.proc.poll() is None, "the agent exited during the test"
    ours = [s for s in spans if not is_sdk_span(s)]
    theirs = [s for s in spans if is_sdk_span(s)]
    assert (len(ours), len(theirs)) == (agent, sdk), (
        f"expected exactly {agent} spans of the agent and {sdk} of the SDK, got {len(ours)} "
        f"and {len(theirs)}:\n{fmt_spans(spans)}")
    t_min, t_max = scn.t0_ns - WINDOW_SLACK_NS, time.time_ns() + WINDOW_SLACK_NS
    for s in ours:
        check_common(s, scn.pids, t_min, t_max)
    for s in theirs:
        check_sdk_common(s, scn.pids, t_min, t_max)
    scn.check_global()
    return ours, theirs
