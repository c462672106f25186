"""A pure HTTP/1.1 client (it never accepts a connection) for test_inject.py, driving
apps/header_echo.py (or apps/relay.py) at INJECT_HOST (default 127.0.0.1):argv[1]; prints one JSON line per request: the request id,
the status, what the server says it received (its headers) and whether the echoed body is
the one sent.

Cases, by argv[2]:
- keepalive: on one http.client connection, GET, POST with Content-Length, POST with a
  chunked body, GET of a chunked response: heads whole in one write each.
- concurrent: argv[3] threads, each its own connection, argv[4] requests each.
- pipelined: two requests in ONE write on a raw socket (the kernel injects only the first).
- split: a request whose head is written in two sends (never injected).

With INJECT_WAIT set it reads a line from stdin before it starts (so that it can be started
before the agent that traces it learns its pid).
"""

import http.client
import json
import os
import socket
import sys
import threading
import time

HOST = os.environ.get("INJECT_HOST", "127.0.0.1")
port = int(sys.argv[1])
case = sys.argv[2]
lock = threading.Lock()
if os.environ.get("INJECT_WAIT"):
    sys.stdin.readline()  # started before the agents that trace it: wait for them


def out(rid: str, status: int, doc: dict, body_ok: bool) -> None:
    with lock:
        print(json.dumps({"rid": rid, "status": status, "headers": doc["headers"],
                          "path": doc["path"], "body_ok": body_ok,
                          "downstream": doc.get("downstream")}), flush=True)


def read_responses(sock: socket.socket, n: int) -> list:
    """n Content-Length responses, in order (header_echo answers /pipe and /split so)."""
    f = sock.makefile("rb")
    docs = []
    for _ in range(n):
        status = int(f.readline().split()[1])
        length = 0
        while (line := f.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode("latin-1").partition(":")
            if k.strip().lower() == "content-length":
                length = int(v)
        docs.append((status, json.loads(f.read(length))))
    return docs


if case == "keepalive":
    c = http.client.HTTPConnection(HOST, port)
    c.request("GET", "/ka/get")
    r = c.getresponse(); d = json.loads(r.read()); out("get", r.status, d, d["body"] == "")
    body = "x=" + "y" * 3000
    c.request("POST", "/ka/cl", body=body, headers={"Content-Type": "text/plain"})
    r = c.getresponse(); d = json.loads(r.read()); out("cl", r.status, d, d["body"] == body)
    parts = [b"alpha-", b"beta-", b"gamma"]
    c.request("POST", "/ka/chunked-req", body=iter(parts), encode_chunked=True)
    r = c.getresponse(); d = json.loads(r.read())
    out("chunked-req", r.status, d, d["body"] == "alpha-beta-gamma")
    c.request("GET", "/chunked/ka")
    r = c.getresponse(); d = json.loads(r.read()); out("chunked-resp", r.status, d, True)
    c.close()
elif case == "concurrent":
    threads, each = int(sys.argv[3]), int(sys.argv[4])
    barrier = threading.Barrier(threads)

    def worker(t: int) -> None:
        c = http.client.HTTPConnection(HOST, port)
        barrier.wait()
        for i in range(each):
            body = f"t{t}-{i}"
            c.request("POST", f"/cc/{t}/{i}", body=body)
            r = c.getresponse(); d = json.loads(r.read())
            out(f"{t}-{i}", r.status, d, d["body"] == body)
        c.close()

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
elif case == "pipelined":
    s = socket.create_connection((HOST, port))
    s.sendall(b"GET /pipe/1 HTTP/1.1\r\nHost: e2e\r\n\r\n"
              b"GET /pipe/2 HTTP/1.1\r\nHost: e2e\r\n\r\n")
    for rid, (st, d) in zip(("pipe-1", "pipe-2"), read_responses(s, 2)):
        out(rid, st, d, True)
    s.close()
elif case == "split":
    s = socket.create_connection((HOST, port))
    s.send(b"GET /split HTTP/1.1\r\nHost: e2e\r\nAcc")
    time.sleep(0.05)
    s.send(b"ept: */*\r\n\r\n")
    (st, d), = read_responses(s, 1)
    out("split", st, d, True)
    s.close()
else:
    sys.exit(f"unknown case {case}")
