"""Concurrent HTTP/1.1 client (stdlib http.client, uninstrumented) sending one request per
connection, each with its own W3C trace context, for the e2e trace-context tests.

    python3 tp_client.py --port N --requests FILE [--ms MS]

FILE has one request per line: `<request id> <traceparent> <tracestate>`. Every request gets
its own thread and connection; all connections are opened first, then (a barrier) every thread
sends `GET /slow/<request id>?ms=MS` with its `traceparent` and `tracestate` headers at once,
so all requests are in flight together. Prints one JSON line per response:
    {"rid", "status", "body_size", "local_port", "t_sent_ns", "t_done_ns"}
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--requests", required=True)
    ap.add_argument("--ms", type=int, default=300)
    args = ap.parse_args()
    reqs = [line.split() for line in open(args.requests) if line.strip()]
    barrier = threading.Barrier(len(reqs))
    lock = threading.Lock()
    rows, errors = [], []

    def one(rid: str, traceparent: str, tracestate: str) -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
            conn.connect()
            barrier.wait(timeout=30)
            t0 = time.time_ns()
            conn.request("GET", f"/slow/{rid}?ms={args.ms}",
                         headers={"User-Agent": "e2e-tpclient/1.0", "traceparent": traceparent,
                                  "tracestate": tracestate})
            resp = conn.getresponse()
            body = resp.read()
            row = {"rid": rid, "status": resp.status, "body_size": len(body),
                   "local_port": conn.sock.getsockname()[1], "t_sent_ns": t0,
                   "t_done_ns": time.time_ns()}
            conn.close()
            with lock:
                rows.append(row)
        except Exception as e:  # reported, and the exit code says so
            with lock:
                errors.append(f"{rid}: {e!r}")

    threads = [threading.Thread(target=one, args=r) for r in reqs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for row in rows:
        print(json.dumps(row), flush=True)
    for e in errors:
        print(e, file=sys.stderr, flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
