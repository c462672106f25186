"""An HTTP/1.1 server that never completes a response (stdlib sockets only), for the e2e tests
of exchanges cut off before their response.

    python3 cutoff_server.py --port N --mode close|partial|die

Accepts one connection at a time and reads one request head (up to the blank line), then:
  close    closes the connection without sending a byte;
  partial  sends a head announcing a 100-byte body (Content-Length: 100), 10 bytes of it, and
           closes;
  die      kills itself with SIGKILL (the kernel closes the socket as the process exits).
Prints "READY <port>" once listening and "REQUEST <path>" for each request head read.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys

PARTIAL_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
PARTIAL_BODY = b"0123456789"


def read_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mode", choices=["close", "partial", "die"], required=True)
    args = ap.parse_args()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(8)
    print(f"READY {args.port}", flush=True)
    while True:
        conn, _ = srv.accept()
        head = read_head(conn)
        path = head.split(b" ", 2)[1].decode() if head.count(b" ") >= 2 else "?"
        print(f"REQUEST {path}", flush=True)
        if args.mode == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        if args.mode == "partial":
            conn.sendall(PARTIAL_HEAD + PARTIAL_BODY)
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
