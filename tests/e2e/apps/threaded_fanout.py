"""Uninstrumented thread-per-request Python services for the concurrent trace-context test
(test_concurrent_context.py): stdlib http.server.ThreadingHTTPServer and http.client.

    python3 threaded_fanout.py --port N --down-delay-ms D
        the downstream: GET /down/<rid> waits D ms, then 200 "down <rid>"
    python3 threaded_fanout.py --port N --down M [--delay-ms D]
        the control fan-out service: GET /req/<rid> waits D ms, then GETs
        http://127.0.0.1:M/down/<rid> on a new http.client connection from the handling
        thread, then 200 JSON {rid, down_status, inflight} (inflight: /req requests being
        handled when this one called downstream)

Keep-alive on; anything else 404. Prints "READY <port>" once listening.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARGS = argparse.Namespace()
_lock = threading.Lock()
_inflight = 0


def _add_inflight(d: int) -> int:
    global _inflight
    with _lock:
        _inflight += d
        return _inflight


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "e2e-fanout/1"

    def log_message(self, *args) -> None:  # quiet: 80 requests per test
        pass

    def reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        path = self.path.split("?", 1)[0]
        if ARGS.down is None and path.startswith("/down/"):
            time.sleep(ARGS.down_delay_ms / 1000)
            self.reply(200, f"down {path[len('/down/'):]}\n".encode(), "text/plain")
        elif ARGS.down is not None and path.startswith("/req/"):
            self.fan_out(path[len("/req/"):])
        else:
            self.reply(404, b'{"error":"not found"}')

    def fan_out(self, rid: str) -> None:
        seen = _add_inflight(1)
        try:
            time.sleep(ARGS.delay_ms / 1000)
            seen = max(seen, _add_inflight(0))
            conn = http.client.HTTPConnection("127.0.0.1", ARGS.down, timeout=30)
            try:
                conn.request("GET", f"/down/{rid}")
                resp = conn.getresponse()
                resp.read()
            except Exception as e:  # noqa: BLE001 (reported to the caller)
                self.reply(502, json.dumps({"error": repr(e)}).encode())
                return
            finally:
                conn.close()
            self.reply(200, json.dumps({"rid": rid, "down_status": resp.status,
                                        "inflight": seen}).encode())
        finally:
            _add_inflight(-1)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # 40 connections arrive at once


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--down", type=int, default=None)
    ap.add_argument("--delay-ms", type=int, default=30)
    ap.add_argument("--down-delay-ms", type=int, default=10)
    ap.parse_args(namespace=ARGS)
    srv = Server(("127.0.0.1", ARGS.port), Handler)
    print(f"READY {ARGS.port}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
