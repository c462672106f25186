"""Sends one OTLP/gRPC trace export (one made-up span) to 127.0.0.1:PORT and exits: an
uninstrumented exporter that is NOT the agent, for the export-port self-exclusion test.

    python3 otlp_export_once.py --port N

The span carries no process.pid and no server.port, so no test takes it for a span of its
own traffic. Prints "EXPORTED" once the receiver answered OK.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    now = time.time_ns()
    span = trace_pb2.Span(trace_id=os.urandom(16), span_id=os.urandom(8), name="made-up",
                          kind=trace_pb2.Span.SPAN_KIND_INTERNAL, start_time_unix_nano=now,
                          end_time_unix_nano=now + 1000)
    res = resource_pb2.Resource(attributes=[common_pb2.KeyValue(
        key="service.name", value=common_pb2.AnyValue(string_value="otlp-export-once"))])
    req = trace_service_pb2.ExportTraceServiceRequest()
    req.resource_spans.add(resource=res).scope_spans.add().spans.append(span)
    with grpc.insecure_channel(f"127.0.0.1:{args.port}") as ch:
        trace_service_pb2_grpc.TraceServiceStub(ch).Export(req, timeout=10)
    print("EXPORTED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
