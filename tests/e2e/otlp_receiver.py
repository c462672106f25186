"""A minimal, independent OTLP/gRPC trace and metrics receiver for the end-to-end tests.

It implements opentelemetry.proto.collector.trace.v1.TraceService (and metrics.v1.
MetricsService: histogram data points flattened into `ReceivedPoint`) with the classes generated
in the `opentelemetry-proto` pip package (so it shares no code with the agent), keeps every
received span flattened into a `ReceivedSpan` (with its resource and scope), and keeps the raw
request bytes exactly as they came off the wire (after gRPC decompression) so tests can grep
them for data that must never be exported.

In-process use (pytest):
    rx = OtlpReceiver(); rx.start(); ... rx.wait_for_spans(pred, timeout=10); rx.stop()
Standalone:
    python3 otlp_receiver.py --port 4317 --out spans.jsonl
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from concurrent import futures
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2

SERVICE_NAME = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name
METRICS_SERVICE_NAME = \
    metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"].full_name
TEMPORALITY_CUMULATIVE = 2  # metrics.proto AggregationTemporality

KIND_SERVER = 2
KIND_CLIENT = 3
STATUS_UNSET = 0
STATUS_OK = 1
STATUS_ERROR = 2


@dataclass
class ReceivedSpan:
    """One span as received, with ids as lower-case hex and attributes as plain Python values."""

    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope_name: str = ""
    scope_version: str = ""
    scope_attributes: dict[str, Any] = field(default_factory=dict)
    trace_state: str = ""
    flags: int = 0
    # Keys that occurred more than once in one attribute list (a defect in the sender).
    duplicate_keys: list[str] = field(default_factory=list)
    received_at_ns: int = 0

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def pid(self) -> Any:
        return self.resource.get("process.pid")

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attributes.get(key, default)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=repr)


@dataclass
class ReceivedPoint:
    """One histogram data point as received (other metric types are recorded as errors: the
    agent exports only histograms), with its metric's name/unit/temporality and resource."""

    metric: str
    unit: str
    temporality: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope_name: str
    start_ns: int
    time_ns: int
    count: int
    sum: float | None
    bucket_counts: list[int]
    explicit_bounds: list[float]
    # (trace id hex, span id hex, value, time ns) per exemplar
    exemplars: list[tuple[str, str, float, int]]
    received_at_ns: int = 0
    request_index: int = 0  # which Export call of this receiver carried it (0-based)


def any_value(v: common_pb2.AnyValue) -> Any:
    """Converts an OTLP AnyValue to a Python value, keeping int/float/bool/str distinct."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which)  # string/bool/int/double/bytes


def key_values(kvs: Iterable[common_pb2.KeyValue], dups: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        if kv.key in out:
            dups.append(kv.key)
        out[kv.key] = any_value(kv.value)
    return out


def flatten(req: trace_service_pb2.ExportTraceServiceRequest, now_ns: int) -> list[ReceivedSpan]:
    spans: list[ReceivedSpan] = []
    for rs in req.resource_spans:
        res_dups: list[str] = []
        resource = key_values(rs.resource.attributes, res_dups)
        for ss in rs.scope_spans:
            scope_dups: list[str] = []
            scope_attrs = key_values(ss.scope.attributes, scope_dups)
            for s in ss.spans:
                dups = list(res_dups) + list(scope_dups)
                spans.append(
                    ReceivedSpan(
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        name=s.name,
                        kind=int(s.kind),
                        start_ns=int(s.start_time_unix_nano),
                        end_ns=int(s.end_time_unix_nano),
                        status_code=int(s.status.code),
                        status_message=s.status.message,
                        attributes=key_values(s.attributes, dups),
                        resource=resource,
                        scope_name=ss.scope.name,
                        scope_version=ss.scope.version,
                        scope_attributes=scope_attrs,
                        trace_state=s.trace_state,
                        flags=int(s.flags),
                        duplicate_keys=dups,
                        received_at_ns=now_ns,
                    )
                )
    return spans


def flatten_metrics(req: metrics_service_pb2.ExportMetricsServiceRequest, now_ns: int,
                    index: int) -> tuple[list[ReceivedPoint], list[str]]:
    points: list[ReceivedPoint] = []
    errors: list[str] = []
    for rm in req.resource_metrics:
        resource = key_values(rm.resource.attributes, [])
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.WhichOneof("data") != "histogram":
                    errors.append(f"metric {m.name}: {m.WhichOneof('data')}, not a histogram")
                    continue
                for dp in m.histogram.data_points:
                    points.append(ReceivedPoint(
                        metric=m.name, unit=m.unit,
                        temporality=int(m.histogram.aggregation_temporality),
                        attributes=key_values(dp.attributes, []), resource=resource,
                        scope_name=sm.scope.name, start_ns=int(dp.start_time_unix_nano),
                        time_ns=int(dp.time_unix_nano), count=int(dp.count),
                        sum=dp.sum if dp.HasField("sum") else None,
                        bucket_counts=[int(c) for c in dp.bucket_counts],
                        explicit_bounds=list(dp.explicit_bounds),
                        exemplars=[(e.trace_id.hex(), e.span_id.hex(),
                                    e.as_double if e.WhichOneof("value") == "as_double"
                                    else float(e.as_int), int(e.time_unix_nano))
                                   for e in dp.exemplars],
                        received_at_ns=now_ns, request_index=index))
    return points, errors


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    """TraceService.Export; registered with an identity deserializer so it sees raw bytes."""

    def __init__(self, receiver: "OtlpReceiver") -> None:
        self._rx = receiver

    def Export(self, request: bytes, context: grpc.ServicerContext):  # noqa: N802 (proto name)
        self._rx._maybe_fail("traces", context)
        try:
            parsed = trace_service_pb2.ExportTraceServiceRequest.FromString(request)
        except Exception as e:  # a malformed request is a sender defect: record and reject it
            self._rx._record_error(f"unparseable ExportTraceServiceRequest: {e!r}", request)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unparseable request")
        self._rx._record(request, flatten(parsed, time.time_ns()))
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService:
    """MetricsService.Export, raw bytes in like the trace service."""

    def __init__(self, receiver: "OtlpReceiver") -> None:
        self._rx = receiver

    def Export(self, request: bytes, context: grpc.ServicerContext):  # noqa: N802 (proto name)
        self._rx._maybe_fail("metrics", context)
        try:
            parsed = metrics_service_pb2.ExportMetricsServiceRequest.FromString(request)
        except Exception as e:
            self._rx._record_error(f"unparseable ExportMetricsServiceRequest: {e!r}", request)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unparseable request")
        self._rx._record_metrics(request, parsed)
        return metrics_service_pb2.ExportMetricsServiceResponse()


def _retry_info_status(code: grpc.StatusCode, delay_s: float) -> bytes:
    """A google.rpc.Status carrying a google.rpc.RetryInfo, encoded by hand (the protobuf
    runtime is here, the googleapis common protos may not be): Status{code=1, details=3:Any},
    Any{type_url=1, value=2}, RetryInfo{retry_delay=1:Duration{seconds=1, nanos=2}}."""
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def field(num: int, payload: bytes) -> bytes:
        return varint(num << 3 | 2) + varint(len(payload)) + payload

    secs, nanos = int(delay_s), int(round((delay_s - int(delay_s)) * 1e9))
    duration = varint(1 << 3) + varint(secs) + (varint(2 << 3) + varint(nanos) if nanos else b"")
    retry_info = field(1, duration)
    any_msg = field(1, b"type.googleapis.com/google.rpc.RetryInfo") + field(2, retry_info)
    return varint(1 << 3) + varint(code.value[0]) + field(3, any_msg)


class OtlpReceiver:
    """Thread-safe store of everything received; the gRPC server runs on its own threads."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 on_spans: Callable[[list[ReceivedSpan]], None] | None = None) -> None:
        self.host = host
        self.port = port
        self._on_spans = on_spans
        self._cond = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self._raw: list[bytes] = []
        self._errors: list[str] = []
        self._points: list[ReceivedPoint] = []
        self._metric_requests = 0
        self._failures: dict[str, list[tuple[grpc.StatusCode, float | None]]] = {
            "traces": [], "metrics": []}
        self._calls = {"traces": 0, "metrics": 0}
        self._delays: dict[str, list[float]] = {"traces": [], "metrics": []}
        self._server: grpc.Server | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "OtlpReceiver":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                             options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
        handler = grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "Export": grpc.unary_unary_rpc_method_handler(
                _TraceService(self).Export,
                request_deserializer=None,  # keep the raw bytes
                response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString,
            )
        })
        metrics = grpc.method_handlers_generic_handler(METRICS_SERVICE_NAME, {
            "Export": grpc.unary_unary_rpc_method_handler(
                _MetricsService(self).Export,
                request_deserializer=None,
                response_serializer=(
                    metrics_service_pb2.ExportMetricsServiceResponse.SerializeToString),
            )
        })
        server.add_generic_rpc_handlers((handler, metrics))
        bound = server.add_insecure_port(f"{self.host}:{self.port}")
        if bound == 0:
            raise RuntimeError(f"OTLP receiver could not bind {self.host}:{self.port}")
        self.port = bound
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=1).wait(5)
            self._server = None

    # -- recording (called from gRPC threads) --
    def _record(self, raw: bytes, spans: list[ReceivedSpan]) -> None:
        with self._cond:
            self._raw.append(raw)
            self._spans.extend(spans)
            self._cond.notify_all()
        if self._on_spans is not None:
            self._on_spans(spans)

    def _record_metrics(self, raw: bytes,
                        req: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        with self._cond:
            points, errors = flatten_metrics(req, time.time_ns(), self._metric_requests)
            self._metric_requests += 1
            self._raw.append(raw)
            self._points.extend(points)
            self._errors.extend(errors)
            self._cond.notify_all()

    def _maybe_fail(self, signal_name: str, context: grpc.ServicerContext) -> None:
        """Counts the call; aborts it if a failure is scripted for it."""
        with self._cond:
            self._calls[signal_name] += 1
            queue = self._failures[signal_name]
            failure = queue.pop(0) if queue else None
            delays = self._delays[signal_name]
            delay = delays.pop(0) if delays else 0.0
            self._cond.notify_all()
        if delay:
            time.sleep(delay)
        if failure is None:
            return
        code, retry_delay = failure
        if retry_delay is not None:
            context.set_trailing_metadata((("grpc-status-details-bin",
                                            _retry_info_status(code, retry_delay)),))
        context.abort(code, "scripted failure")

    def fail(self, signal_name: str, code: grpc.StatusCode, times: int = 1,
             retry_delay: float | None = None) -> None:
        """The next `times` calls of `signal_name` ("traces" or "metrics") fail with `code`,
        with a google.rpc.RetryInfo of `retry_delay` seconds when given."""
        with self._cond:
            self._failures[signal_name].extend([(code, retry_delay)] * times)

    def delay(self, signal_name: str, seconds: float, times: int = 1) -> None:
        """The next `times` calls of `signal_name` are answered only after `seconds` (a slow
        collector; the server has 4 worker threads)."""
        with self._cond:
            self._delays[signal_name].extend([seconds] * times)

    def calls(self, signal_name: str) -> int:
        """Export calls of `signal_name` received, failed ones included."""
        with self._cond:
            return self._calls[signal_name]

    def _record_error(self, msg: str, raw: bytes) -> None:
        with self._cond:
            self._errors.append(msg)
            self._raw.append(raw)
            self._cond.notify_all()

    # -- queries (any thread) --
    def spans(self, predicate: Callable[[ReceivedSpan], bool] | None = None) -> list[ReceivedSpan]:
        with self._cond:
            snapshot = list(self._spans)
        return [s for s in snapshot if predicate is None or predicate(s)]

    def points(self, predicate: Callable[[ReceivedPoint], bool] | None = None
               ) -> list[ReceivedPoint]:
        with self._cond:
            snapshot = list(self._points)
        return [p for p in snapshot if predicate is None or predicate(p)]

    def metric_requests(self) -> int:
        with self._cond:
            return self._metric_requests

    def raw_requests(self) -> list[bytes]:
        with self._cond:
            return list(self._raw)

    def raw_contains(self, needle: bytes) -> bool:
        return any(needle in r for r in self.raw_requests())

    def errors(self) -> list[str]:
        with self._cond:
            return list(self._errors)

    def wait_for_spans(self, predicate: Callable[[ReceivedSpan], bool], timeout: float,
                       min_count: int = 1) -> list[ReceivedSpan]:
        """Blocks until at least `min_count` received spans satisfy `predicate`; returns them all.

        Raises TimeoutError (with what did match) if that does not happen within `timeout` s.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                matching = [s for s in self._spans if predicate(s)]
                if len(matching) >= min_count:
                    return matching
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(matching)} of {min_count} expected spans arrived within {timeout}s")
                self._cond.wait(min(left, 0.2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=4317, help="0 picks a free port")
    ap.add_argument("--out", help="append one JSON object per span to this file (JSON lines)")
    args = ap.parse_args(argv)

    out = open(args.out, "a", encoding="utf-8") if args.out else sys.stdout
    lock = threading.Lock()

    def write(spans: list[ReceivedSpan]) -> None:
        with lock:
            for s in spans:
                out.write(s.to_json() + "\n")
            out.flush()

    rx = OtlpReceiver(args.host, args.port, on_spans=write).start()
    print(f"otlp receiver listening on {args.host}:{rx.port}", file=sys.stderr, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    rx.stop()
    if out is not sys.stdout:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
