"""Uninstrumented keep-alive HTTP/1.1 client (stdlib http.client) for the e2e tests.

    python3 client.py --port N [--ca FILE] "GET /users/1" "POST /echo 1000" "GET /status/404"

Sends every request in order over ONE connection to 127.0.0.1:N (a POST carries a body of the
given size) and prints one JSON line per response:
    {"method", "path", "status", "body_size", "local_port", "connects"}
`connects` counts TCP connections opened so far, so the caller can check keep-alive held.
--ca: HTTPS (Python's ssl module over OpenSSL), trusting that CA.
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ca", help="HTTPS, trusting this CA certificate (PEM)")
    ap.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    ap.add_argument("requests", nargs="+")
    args = ap.parse_args()
    headers = dict(h.split(": ", 1) for h in args.header)
    headers.setdefault("User-Agent", "e2e-pyclient/1.0")

    if args.ca:
        ctx = ssl.create_default_context(cafile=args.ca)
        conn = http.client.HTTPSConnection("127.0.0.1", args.port, timeout=30, context=ctx)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
    connects = 0
    for spec in args.requests:
        method, path, *rest = spec.split()
        body = b"p" * int(rest[0]) if rest else None
        if conn.sock is None:
            conn.connect()
            connects += 1
        conn.request(method, path, body=body, headers=headers)
        local_port = conn.sock.getsockname()[1]
        resp = conn.getresponse()
        data = resp.read()
        print(json.dumps({"method": method, "path": path, "status": resp.status,
                          "body_size": len(data), "local_port": local_port,
                          "connects": connects}), flush=True)
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
