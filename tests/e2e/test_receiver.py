"""Self-test of otlp_receiver.py against the official OpenTelemetry Python SDK exporter.

Needs neither root nor the agent: it proves that what the receiver reports (ids, kinds,
timestamps, typed attributes, resource, scope, status, raw bytes) is what an independent,
known-good OTLP/gRPC sender actually sent, so agent test failures can be trusted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from otlp_receiver import KIND_CLIENT, KIND_SERVER, STATUS_ERROR, STATUS_UNSET, OtlpReceiver

HERE = Path(__file__).resolve().parent


def export_two_spans(endpoint: str, compression: grpc.Compression | None = None):
    """Exports a SERVER span with a CLIENT child through the SDK; returns both SDK spans."""
    provider = TracerProvider(resource=Resource.create(
        {"service.name": "receiver-selftest", "process.pid": 4242, "e2e.flag": True}))
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, compression=compression,
                                timeout=10)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("e2e.selftest", "9.9.9")
    with tracer.start_as_current_span("GET /users/{id}", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("http.request.method", "GET")
        parent.set_attribute("http.response.status_code", 200)
        parent.set_attribute("e2e.ratio", 0.5)
        parent.set_attribute("e2e.ok", True)
        parent.set_attribute("e2e.list", ["a", "b"])
        with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT) as child:
            child.set_attribute("url.full", "http://127.0.0.1:1/x?q=REDACTED")
            child.set_status(Status(StatusCode.ERROR, "boom"))
    provider.shutdown()
    return parent, child


@pytest.fixture
def receiver():
    rx = OtlpReceiver().start()
    yield rx
    rx.stop()


@pytest.mark.parametrize("compression", [None, grpc.Compression.Gzip], ids=["plain", "gzip"])
def test_sdk_export_is_received_faithfully(receiver: OtlpReceiver, compression) -> None:
    sdk_parent, sdk_child = export_two_spans(receiver.endpoint, compression)
    spans = receiver.wait_for_spans(lambda s: s.resource.get("service.name") == "receiver-selftest",
                                    timeout=10, min_count=2)
    assert len(spans) == 2
    by_kind = {s.kind: s for s in spans}
    server, client = by_kind[KIND_SERVER], by_kind[KIND_CLIENT]

    pctx, cctx = sdk_parent.get_span_context(), sdk_child.get_span_context()
    assert server.trace_id == f"{pctx.trace_id:032x}" == client.trace_id
    assert server.span_id == f"{pctx.span_id:016x}"
    assert client.span_id == f"{cctx.span_id:016x}"
    assert server.parent_span_id == ""
    assert client.parent_span_id == server.span_id
    assert (server.start_ns, server.end_ns) == (sdk_parent.start_time, sdk_parent.end_time)
    assert server.start_ns <= client.start_ns <= client.end_ns <= server.end_ns

    assert server.name == "GET /users/{id}" and client.name == "GET"
    assert server.status_code == STATUS_UNSET
    assert (client.status_code, client.status_message) == (STATUS_ERROR, "boom")
    # Types survive: an int stays an int (not "200", not 200.0), bool stays bool.
    assert type(server.attr("http.response.status_code")) is int
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["e2e.ratio"] == 0.5 and type(server.attributes["e2e.ratio"]) is float
    assert server.attributes["e2e.ok"] is True
    assert server.attributes["e2e.list"] == ["a", "b"]
    assert client.attributes == {"url.full": "http://127.0.0.1:1/x?q=REDACTED"}
    assert server.duplicate_keys == [] and client.duplicate_keys == []

    assert server.resource["service.name"] == "receiver-selftest"
    assert server.pid == 4242 and type(server.pid) is int
    assert server.resource["e2e.flag"] is True
    assert (server.scope_name, server.scope_version) == ("e2e.selftest", "9.9.9")

    # Raw bytes are the decompressed protobuf: strings appear verbatim.
    assert receiver.raw_contains(b"http://127.0.0.1:1/x?q=REDACTED")
    assert not receiver.raw_contains(b"never-sent-string")
    assert receiver.errors() == []


def test_wait_for_spans_fails_when_nothing_matches(receiver: OtlpReceiver) -> None:
    export_two_spans(receiver.endpoint)
    receiver.wait_for_spans(lambda s: True, timeout=10, min_count=2)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="2 of 3 expected spans"):
        receiver.wait_for_spans(lambda s: True, timeout=0.3, min_count=3)
    assert 0.3 <= time.monotonic() - t0 < 5


def test_malformed_request_is_rejected_and_recorded(receiver: OtlpReceiver) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{receiver.port}") as ch:
        call = ch.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                              request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as err:
            call(b"\xff\xff\xff\xff garbage", timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(receiver.errors()) == 1 and receiver.spans() == []


def test_standalone_mode_writes_json_lines(tmp_path: Path) -> None:
    out = tmp_path / "spans.jsonl"
    proc = subprocess.Popen([sys.executable, str(HERE / "otlp_receiver.py"), "--port", "0",
                             "--out", str(out)], stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        line = proc.stderr.readline()  # first line announces the port
        assert "listening on 127.0.0.1:" in line, line
        port = int(line.rsplit(":", 1)[1])
        export_two_spans(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 10
        rows: list[dict] = []
        while time.monotonic() < deadline:
            rows = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
            if len(rows) >= 2:
                break
            time.sleep(0.05)
        assert sorted(r["kind"] for r in rows) == [KIND_SERVER, KIND_CLIENT]
        assert {r["resource"]["service.name"] for r in rows} == {"receiver-selftest"}
    finally:
        os.killpg(proc.pid, 15)
        assert proc.wait(10) == 0
