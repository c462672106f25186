#!/usr/bin/env python3
"""Record real HTTP/1.1 -> HTTP/2 upgrades ("Upgrade: h2c", RFC 7540 section 3.2) for the h2c
hand-over tests (agent/src/protocol/h2c/tests).

A real server (tests/e2e/apps/h2cserver: Go net/http + golang.org/x/net/http2/h2c, built offline
from the Debian packages by tests/e2e/harness/goclient.py) and real clients (curl --http2, which
asks for the upgrade on http:// URLs; raw sockets where curl cannot make the case) on 127.0.0.1,
with a one-connection recording TCP proxy in between. For each scenario it writes:

  NAME.c2s     bytes client -> server, exactly as relayed
  NAME.s2c     bytes server -> client
  NAME.segs    the order of the proxy's reads: one line per read, "c LEN" or "s LEN"
  NAME.golden  expected parser events, one JSON object per line, computed by the small
               whole-stream walker at the bottom of this file (independent of the Rust code;
               header blocks decoded with the Python `hpack` package)

Golden events ("proto" says which protocol's request / outcome the event carries):
  {"ev": "start", "proto": "h1", "seq", "at": offset in c2s of the request's first byte,
   "head_end": offset of the head's last byte, "method", "target", "v", "host", "ua",
   "traceparent", "tracestate"}
  {"ev": "start", "proto": "h2", "seq", "at": offset in c2s of the HEADERS frame's first byte,
   "head_end": offset of the block's last byte, "method", "path", "authority", "scheme", "ua",
   "content_type", "traceparent", "tracestate"}
  {"ev": "end", "proto": "h1", "seq", "at": offset in s2c of the response's last byte,
   "status", "v", "resp_body", "req_body"}
  {"ev": "end", "proto": "h2", "seq", "at": offset in s2c of the ending frame's last byte,
   "status", "grpc_status", "resp_body", "req_body"}

The upgrade request is an "h1" start whose end is "h2" (stream 1's response, with the seq of
the request). Later streams have seq = stream id, or stream id + 2**32 when HTTP/1 requests used
seqs from 3 up (they could collide with stream ids; see http2::stream::Streams).

Usage: record.py [OUTDIR]  (default: this script's directory). Needs curl, go and the packages
in tests/e2e/APT_PACKAGES, python3 hpack.
"""

import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import hpack

HERE = Path(__file__).resolve().parent
OUT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else HERE)
sys.path.insert(0, str(HERE.parents[4] / "tests" / "e2e"))
from harness.goclient import build_h2cserver  # noqa: E402

SECRET_HEADERS = ["-H", "Authorization: Bearer SECRET-token", "-H", "Cookie: session=SECRET-cookie"]
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    """One-connection recording proxy: listen, accept, relay both ways, log every read."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.c2s, self.s2c, self.segs = bytearray(), bytearray(), []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        client, _ = self.sock.accept()
        self.sock.close()
        server = socket.create_connection(("127.0.0.1", self.upstream))
        ends = {client: server, server: client}
        open_ = {client, server}
        while open_:
            ready, _, _ = select.select(list(open_), [], [], 5)
            if not ready:
                break
            for s in ready:
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    open_.discard(s)
                    try:
                        ends[s].shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    continue
                if s is client:
                    self.c2s += data
                    self.segs.append(("c", len(data)))
                else:
                    self.s2c += data
                    self.segs.append(("s", len(data)))
                ends[s].sendall(data)
        client.close()
        server.close()

    def save(self, name):
        self.thread.join(30)
        base = os.path.join(OUT, name)
        open(base + ".c2s", "wb").write(self.c2s)
        open(base + ".s2c", "wb").write(self.s2c)
        open(base + ".segs", "w").write("".join(f"{d} {n}\n" for d, n in self.segs))
        events = golden(bytes(self.c2s), bytes(self.s2c))
        open(base + ".golden", "w").write("".join(json.dumps(e) + "\n" for e in events))
        print(f"{name}: c2s={len(self.c2s)} s2c={len(self.s2c)} reads={len(self.segs)} events={len(events)}")


def start_server(binary, *args):
    port = free_port()
    proc = subprocess.Popen([str(binary), *args, f"127.0.0.1:{port}"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdout.readline().strip() == b"READY"
    return proc, port


def curl(port, *args, urls):
    subprocess.run(["curl", "-sS", "--http2", *args,
                    *[a for u in urls for a in ("-o", "/dev/null", f"http://127.0.0.1:{port}{u}")]],
                   check=True)


def read_until(sock, buf, done, timeout=5):
    """Read into `buf` until done(buf); a test client, so a few seconds is plenty."""
    deadline = time.time() + timeout
    while not done(buf):
        sock.settimeout(max(0.01, deadline - time.time()))
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("connection closed early")
        buf += data
    return buf


def frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def ended_streams(s2c, start):
    """Stream ids whose server side ended (END_STREAM) in the HTTP/2 bytes from `start`."""
    ids = set()
    for _, _, kind, flags, sid, _ in frames(s2c, start):
        if kind in (0, 1) and flags & 1:
            ids.add(sid)
    return ids


def raw_upgrade_after_requests(port):
    """Three HTTP/1.1 keep-alive requests, then an upgrade (seq 3) and stream 3 over HTTP/2:
    what curl never does, but any client may (RFC 7540 section 3.2 allows any request)."""
    c = socket.create_connection(("127.0.0.1", port))
    got = bytearray()
    for i in range(3):
        c.sendall(f"GET /keep{i} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        read_until(c, got, lambda b, n=i + 1: b.count(b"hello from /keep") >= n)
    c.sendall(f"GET /up?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: raw/1.0\r\n"
              "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
              "HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n".encode())
    read_until(c, got, lambda b: b"\r\n\r\n" in b[b.find(b"HTTP/1.1 101"):])
    h2_start = got.find(b"\r\n\r\n", got.find(b"HTTP/1.1 101")) + 4
    enc = hpack.Encoder()
    block = enc.encode([(":method", "GET"), (":scheme", "http"), (":path", "/s3?n=2"),
                        (":authority", f"127.0.0.1:{port}"), ("user-agent", "raw/1.0"),
                        ("traceparent", TRACEPARENT)])
    c.sendall(PREFACE + frame(4, 0, 0) + frame(1, 0x5, 3, block))
    read_until(c, got, lambda b: {1, 3} <= ended_streams(bytes(b), h2_start))
    c.sendall(frame(4, 1, 0) + frame(7, 0, 0, (0).to_bytes(4, "big") + (0).to_bytes(4, "big")))
    c.shutdown(socket.SHUT_WR)
    try:
        while c.recv(65536):
            pass
    except OSError:
        pass
    c.close()


def raw_websocket(port):
    """A WebSocket-style 101, then bytes that look like HTTP/1 and like the HTTP/2 preface: none
    of it is HTTP any more."""
    c = socket.create_connection(("127.0.0.1", port))
    got = bytearray()
    c.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    read_until(c, got, lambda b: b"\r\n\r\n" in b)
    sent = len(got)
    for chunk in [b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", b"GET /not-http HTTP/1.1\r\n\r\n",
                  PREFACE + frame(4, 0, 0), b"\x88\x80\x00\x00\x00\x00"]:
        c.sendall(chunk)
        sent += len(chunk)
        read_until(c, got, lambda b: len(b) >= sent)
    c.close()


def record(tmp):
    binary = build_h2cserver(Path(tmp))
    h2c, port = start_server(binary)
    plain, plain_port = start_server(binary, "-http1")
    try:
        r = Recorder(port)
        curl(r.port, "-H", f"traceparent: {TRACEPARENT}", "-H", "tracestate: a=1", "-H", "tracestate: b=2",
             *SECRET_HEADERS, urls=["/index.html"])
        r.save("upgrade_get")

        r = Recorder(port)
        curl(r.port, *SECRET_HEADERS, urls=["/index.html", "/missing", "/big?n=2000"])
        r.save("upgrade_then_streams")

        r = Recorder(port)
        body = os.path.join(tmp, "body.bin")
        open(body, "wb").write(b"x" * 3000)
        curl(r.port, "--data-binary", f"@{body}", urls=["/echo"])
        r.save("upgrade_post")

        r = Recorder(port)
        raw_upgrade_after_requests(r.port)
        r.save("upgrade_after_requests")

        r = Recorder(plain_port)
        curl(r.port, *SECRET_HEADERS, urls=["/index.html", "/missing"])
        r.save("refused")

        r = Recorder(port)
        raw_websocket(r.port)
        r.save("websocket")
    finally:
        for p in (h2c, plain):
            p.terminate()
            p.wait()


# ---------------------------------------------------------------- independent golden walker

def http1_messages(buf, at, is_request, requests=None):
    """(first byte, head end, last byte, head dict, status/method line parts, body size) of
    each HTTP/1 message from `at`; stops at a 101 (yielded) or where bytes are not HTTP/1."""
    i = 0
    while at < len(buf):
        end = buf.find(b"\r\n\r\n", at)
        if end < 0:
            return
        lines = buf[at:end].decode("latin-1").split("\r\n")
        first = lines[0].split(" ", 2)
        if is_request and not first[-1].startswith("HTTP/1."):
            return
        if not is_request and not first[0].startswith("HTTP/1."):
            return
        fields = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
        h = {}
        for n, v in fields:
            h.setdefault(n.lower(), []).append(v)
        body_at = end + 4
        size, last = 0, body_at - 1
        status = None if is_request else int(first[1])
        no_body = status is not None and (status == 101 or status < 200 or status in (204, 304)
                                          or (requests and requests[i]["method"] == "HEAD"))
        if "transfer-encoding" in h and not no_body:
            pos = body_at
            while True:
                line_end = buf.index(b"\r\n", pos)
                n = int(buf[pos:line_end].split(b";")[0], 16)
                pos = line_end + 2
                if n == 0:
                    last = buf.index(b"\r\n\r\n", pos - 2) + 3
                    break
                size += n
                pos += n + 2
        elif "content-length" in h and not no_body:
            size = int(h["content-length"][0])
            last = body_at + size - 1
        yield at, end + 3, last, h, first, size
        if status == 101:
            return
        at = last + 1
        i += 1


def frames(buf, start):
    at = start
    while at + 9 <= len(buf):
        length = int.from_bytes(buf[at:at + 3], "big")
        kind, flags = buf[at + 3], buf[at + 4]
        sid = int.from_bytes(buf[at + 5:at + 9], "big") & 0x7FFFFFFF
        end = at + 9 + length
        if end > len(buf):
            return
        yield at, end - 1, kind, flags, sid, buf[at + 9:end]
        at = end


def strip(kind, flags, payload):
    pad = 0
    if flags & 0x8:
        pad, payload = payload[0], payload[1:]
    if kind == 1 and flags & 0x20:
        payload = payload[5:]
    if kind == 5:
        payload = payload[4:]
    return payload[:len(payload) - pad]


def walk(buf, start):
    """(frame first byte, frame last byte, kind, flags, sid, payload or decoded headers)."""
    dec = hpack.Decoder()
    dec.max_allowed_table_size = 1 << 20
    block = None
    for first, last, kind, flags, sid, payload in frames(buf, start):
        if kind in (1, 5):
            block = [first, kind, flags, sid, strip(kind, flags, payload)]
        elif kind == 9:
            block[4] += payload
        else:
            yield first, last, kind, flags, sid, payload
            continue
        if flags & 0x4:
            hdrs = dec.decode(bytes(block[4]), raw=True)
            hdrs = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in hdrs]
            yield block[0], last, block[1], block[2], block[3], hdrs
            block = None


def golden(c2s, s2c):
    requests, ends = [], []
    for at, head_end, last, h, first, size in http1_messages(c2s, 0, True):
        one = lambda k: h.get(k, [None])[0]  # noqa: E731
        ts = h.get("tracestate")
        requests.append({"end": last, "body": size, "method": first[0], "start": {
            "ev": "start", "proto": "h1", "seq": len(requests), "at": at, "head_end": head_end,
            "method": first[0], "target": first[1], "v": int(first[2][-1]), "host": one("host"),
            "ua": one("user-agent"), "traceparent": one("traceparent"),
            "tracestate": ",".join(ts) if ts else None}})
    upgrade = None
    for seq, (at, head_end, last, h, first, size) in enumerate(http1_messages(s2c, 0, False, requests)):
        status = int(first[1])
        offered = [t.strip().lower() for v in h.get("upgrade", []) for t in v.split(",")]
        if status == 101:
            # Whatever the client sent after this request was not HTTP/1 requests.
            del requests[seq + 1:]
        if status == 101 and "h2c" in offered:
            upgrade = (seq, head_end + 1)
            break
        ends.append({"ev": "end", "proto": "h1", "seq": seq, "at": last, "status": status,
                     "v": int(first[0][-1]), "resp_body": size, "req_body": requests[seq]["body"]})
        if status == 101:
            break
    events = [r["start"] for r in requests] + ends
    if upgrade is None:
        return events
    # HTTP/2 from here: stream 1 answers the upgrade request.
    up_seq, s2c_start = upgrade
    offset = 1 << 32 if len(requests) > 3 else 0
    c2s_start = c2s.index(PREFACE, requests[up_seq]["end"] + 1) + len(PREFACE)
    streams = {1: {"seq": up_seq, "req_body": requests[up_seq]["body"], "resp_body": 0,
                   "status": None, "done": False}}
    for first, last, kind, flags, sid, p in walk(c2s, c2s_start):
        if kind == 1 and sid % 2 == 1 and sid not in streams:
            h = dict()
            for n, v in p:
                h.setdefault(n, v)
            ts = [v for n, v in p if n == "tracestate"]
            events.append({"ev": "start", "proto": "h2", "seq": sid + offset, "at": first,
                           "head_end": last, "method": h.get(":method"), "path": h.get(":path"),
                           "authority": h.get(":authority"), "scheme": h.get(":scheme"),
                           "ua": h.get("user-agent"), "content_type": h.get("content-type"),
                           "traceparent": h.get("traceparent"),
                           "tracestate": ",".join(ts) if ts else None})
            streams[sid] = {"seq": sid + offset, "req_body": 0, "resp_body": 0, "status": None,
                            "done": False}
        elif kind == 0 and sid in streams:
            pad = p[0] + 1 if flags & 0x8 else 0
            streams[sid]["req_body"] += len(p) - pad
    for first, last, kind, flags, sid, p in walk(s2c, s2c_start):
        s = streams.get(sid)
        if s is None or s["done"]:
            continue
        if kind == 1:
            h = dict(p)
            st = int(h[":status"]) if ":status" in h else None
            if s["status"] is None and st is not None and 100 <= st < 200:
                continue
            if s["status"] is None:
                s["status"] = st
        elif kind == 0:
            pad = p[0] + 1 if flags & 0x8 else 0
            s["resp_body"] += len(p) - pad
        if kind in (0, 1) and flags & 0x1:
            s["done"] = True
            events.append({"ev": "end", "proto": "h2", "seq": s["seq"], "at": last,
                           "status": s["status"], "grpc_status": None,
                           "resp_body": s["resp_body"], "req_body": s["req_body"]})
    assert all(s["done"] for s in streams.values()), streams
    return events


def main():
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        record(tmp)


if __name__ == "__main__":
    main()
