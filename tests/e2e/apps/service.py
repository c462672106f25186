"""Uninstrumented HTTP/1.1 test service (stdlib only) traced by the agent in the e2e tests.

    python3 service.py --port N       (prints "READY <port>" on stdout once listening)

Routes (keep-alive on; every response has Content-Length unless chunked):
  GET  /users/<id>            200 JSON
  GET  /chunked               200, Transfer-Encoding: chunked, CHUNKS chunks
  GET  /large?size=N          200, N-byte body (default 1 MiB) that contains HTTP-looking text
  GET  /status/<code>         that status
  GET  /slow?ms=N             sleeps N ms, then 200
  GET  /slow/<id>?ms=N        sleeps N ms, then 200 JSON naming the id
  GET  /call?next=URL         while handling, GETs URL over one keep-alive http.client
                              connection shared by all requests; returns that status and
                              sets X-Next-Conn: new|reused
  POST /echo                  200, echoes the request body
  anything else               404
HTTP/1.0 requests are answered as HTTP/1.0 so the protocol version is unambiguous.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# Body pieces that look like HTTP messages: a parser that ignores framing would invent spans.
CHUNKS = [b"GET /not-a-request HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n",
          b"x" * 3000, b"chunk-four\r\n", b"0\r\n\r\n-not-the-end"]
CHUNKED_BODY_SIZE = sum(len(c) for c in CHUNKS)


def chunked_wire_body() -> bytes:
    """The /chunked body exactly as sent: chunk framing included."""
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in CHUNKS) + b"0\r\n\r\n"


LARGE_PATTERN = (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nGET /fake HTTP/1.1\r\n\r\n"
                 + b"." * 964)


def large_body(size: int) -> bytes:
    reps = size // len(LARGE_PATTERN) + 1
    return (LARGE_PATTERN * reps)[:size]


class Upstream:
    """One keep-alive connection per upstream host:port, shared by all handler threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conns: dict[tuple[str, int], http.client.HTTPConnection] = {}

    def get(self, url: str) -> tuple[int, bytes, bool]:
        u = urlsplit(url)
        key = (u.hostname or "127.0.0.1", u.port or 80)
        path = u.path + ("?" + u.query if u.query else "")
        with self._lock:
            conn = self._conns.get(key)
            reused = conn is not None and conn.sock is not None
            if conn is None:
                conn = self._conns[key] = http.client.HTTPConnection(*key, timeout=30)
            try:
                conn.request("GET", path or "/")
                resp = conn.getresponse()
                body = resp.read()
            except Exception:
                conn.close()
                del self._conns[key]
                raise
            return resp.status, body, reused


UPSTREAM = Upstream()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "e2e-service/1"

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok and self.request_version == "HTTP/1.0":
            self.protocol_version = "HTTP/1.0"  # instance attribute: this request only
        return ok

    def reply(self, status: int, body: bytes, ctype: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if status in (204, 304) or 100 <= status < 200:
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        u = urlsplit(self.path)
        q = parse_qs(u.query)
        parts = u.path.strip("/").split("/")
        if parts[0] == "users" and len(parts) == 2:
            self.reply(200, json.dumps({"id": parts[1], "name": "user"}).encode())
        elif u.path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            wire = chunked_wire_body()
            for c in CHUNKS:  # one write (and a short pause) per chunk
                piece = b"%x\r\n%s\r\n" % (len(c), c)
                self.wfile.write(piece)
                self.wfile.flush()
                time.sleep(0.01)
            self.wfile.write(wire[-5:])  # the terminating 0-size chunk
        elif u.path == "/large":
            size = int(q.get("size", ["1048576"])[0])
            self.reply(200, large_body(size), "application/octet-stream")
        elif parts[0] == "status" and len(parts) == 2 and parts[1].isdigit():
            code = int(parts[1])
            self.reply(code, json.dumps({"status": code}).encode())
        elif u.path == "/slow":
            time.sleep(int(q.get("ms", ["100"])[0]) / 1000)
            self.reply(200, b'{"slow":true}')
        elif parts[0] == "slow" and len(parts) == 2:
            time.sleep(int(q.get("ms", ["100"])[0]) / 1000)
            self.reply(200, json.dumps({"id": parts[1], "slow": True}).encode())
        elif u.path == "/call" and "next" in q:
            try:
                status, body, reused = UPSTREAM.get(q["next"][0])
            except Exception as e:
                self.reply(502, json.dumps({"error": repr(e)}).encode())
                return
            self.reply(status, body, headers={"X-Next-Conn": "reused" if reused else "new"})
        else:
            self.reply(404, b'{"error":"not found"}')

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if urlsplit(self.path).path == "/echo":
            self.reply(200, body, "application/octet-stream")
        else:
            self.reply(404, b'{"error":"not found"}')


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # listen backlog: tests open dozens of connections at once


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    srv = Server((args.host, args.port), Handler)
    print(f"READY {srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
