"""Uninstrumented load client for the concurrent trace-context test
(test_concurrent_context.py): N requests all in flight at once.

    python3 concurrent_load.py --port N --prefix P --n 40

N threads each open their own http.client connection, wait at a barrier until all N are
connected, then send `GET /req/<P>-<i>` (i = 00..N-1) and read the answer. One JSON line per
request {rid, status, body, local_port, sent_ns, done_ns}, then {"done": N}. Exit 1 on any
error.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--n", type=int, default=40)
    args = ap.parse_args()
    barrier = threading.Barrier(args.n, timeout=20)

    def one(i: int) -> dict:
        rid = f"{args.prefix}-{i:02d}"
        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
        conn.connect()
        try:
            barrier.wait()
            sent = time.time_ns()
            conn.request("GET", f"/req/{rid}")
            resp = conn.getresponse()
            body = resp.read().decode("utf-8", "replace")
            return {"rid": rid, "status": resp.status, "body": body,
                    "local_port": conn.sock.getsockname()[1], "sent_ns": sent,
                    "done_ns": time.time_ns()}
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=args.n) as pool:
        rows = list(pool.map(one, range(args.n)))
    for row in rows:
        print(json.dumps(row))
    print(json.dumps({"done": len(rows)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
