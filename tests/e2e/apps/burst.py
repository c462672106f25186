"""Bursts of large HTTP/1.1 exchanges for test_reliability.py's ring-buffer overflow test
(stdlib only, uninstrumented).

    burst.py server PORT
        Threaded HTTP/1.1 keep-alive server. `POST|GET /r/ID/STATUS/SIZE` reads the request
        body (Content-Length) and answers STATUS with SIZE body bytes. Prints `READY PORT`.
    burst.py client PORT FIRST COUNT THREADS BODY SIZE PAUSE_MS [TAIL GATE]
        THREADS threads, each on its own keep-alive connection, which first sends one small
        GET (id WARM_BASE+FIRST+thread), then, all threads released together, request
        ids FIRST..FIRST+COUNT-1 dealt round-robin. Each sends `POST /r/ID/STATUS/SIZE` with
        BODY body bytes (GET when BODY is 0), STATUS = STATUSES[ID % 6], reads the answer, then
        sleeps PAUSE_MS. With TAIL: once all threads are done, prints `burst done`, waits for
        the file GATE to exist, then each thread sends TAIL more GETs (200 body bytes, ids from
        FIRST+COUNT on) on the same connection, 20 ms apart. One JSON line per request on
        stdout: id, method, status received, body bytes received, the connection's local
        port, wall-clock start/end (ns).
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATUSES = [200, 201, 202, 404, 409, 500]
# Ids of each connection's first (warm-up) request: WARM_BASE + FIRST + thread.
WARM_BASE = 200_000


def status_of(i: int) -> int:
    return STATUSES[i % len(STATUSES)]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        parts = self.path.split("/")
        _, _, _, status, size = parts  # "", "r", ID, STATUS, SIZE
        n = int(self.headers.get("Content-Length") or 0)
        while n > 0:
            got = self.rfile.read(min(n, 1 << 16))
            if not got:
                return
            n -= len(got)
        body = b"x" * int(size)
        self.send_response(int(status))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, *args) -> None:  # quiet
        pass


def serve(port: int) -> None:
    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    srv.daemon_threads = True
    srv.request_queue_size = 256
    print(f"READY {port}", flush=True)
    srv.serve_forever()


def client(port: int, first: int, count: int, threads: int, body: int, size: int,
           pause_ms: int, tail: int = 0, gate_file: str = "") -> None:
    start = threading.Barrier(threads)
    done = threading.Barrier(threads, action=lambda: print("burst done", flush=True))
    out_lock = threading.Lock()
    payload = b"b" * body

    def one(conn: http.client.HTTPConnection, i: int, body: bytes, size: int) -> None:
        path = f"/r/{i}/{status_of(i)}/{size}"
        t0 = time.time_ns()
        if body:
            conn.request("POST", path, body=body)
        else:
            conn.request("GET", path)
        r = conn.getresponse()
        got = r.read()
        t1 = time.time_ns()
        row = {"id": i, "method": "POST" if body else "GET", "status": r.status,
               "len": len(got), "port": conn.sock.getsockname()[1], "t0": t0, "t1": t1}
        with out_lock:
            print(json.dumps(row), flush=True)

    def run(t: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.connect()
        # A small request first: the server has accepted the connection (and the agent seen
        # it open) before the burst begins.
        one(conn, WARM_BASE + first + t, b"", 200)
        start.wait()
        for i in range(first + t, first + count, threads):
            one(conn, i, payload, size)
            if pause_ms:
                time.sleep(pause_ms / 1000)
        if tail:
            done.wait()
            while not os.path.exists(gate_file):
                time.sleep(0.05)
            for k in range(tail):
                one(conn, first + count + t * tail + k, b"", 200)
                time.sleep(0.02)
        conn.close()

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    else:
        nums = [int(a) for a in sys.argv[2:9]]
        if len(sys.argv) > 9:
            client(*nums, int(sys.argv[9]), sys.argv[10])
        else:
            client(*nums)
