#!/usr/bin/env python3
"""Record real cleartext HTTP/2 (h2c prior knowledge) and gRPC connections for the http2
parser's tests.

Real servers (nginx with `listen ... http2`, a Python grpcio server) and real clients (curl
--http2-prior-knowledge, h2load, a grpcio client) on 127.0.0.1, with a one-connection recording
TCP proxy in between. For each scenario it writes:

  NAME.c2s     bytes client -> server, exactly as relayed
  NAME.s2c     bytes server -> client
  NAME.segs    the order of the proxy's reads: one line per read, "c LEN" or "s LEN"
  NAME.golden  expected parser events, one JSON object per line, computed by the small
               whole-stream frame walker at the bottom of this file, which decodes header
               blocks with the Python `hpack` package (independent of the Rust code)

Golden events:
  {"ev": "start", "seq": stream id, "at": offset in c2s of the HEADERS frame's first byte,
   "head_end": offset of the last byte of the block's last frame, "method", "path",
   "authority", "scheme", "ua", "content_type", "traceparent", "tracestate"}
  {"ev": "end", "seq", "side": "s" or "c" (who sent the ending frame), "at": offset of that
   frame's last byte, "kind": "response" | "reset", "status", "grpc_status", "resp_body",
   "req_body", "error_code"}   or   {"ev": "end", "seq", "aborted": true}

Usage: record.py [OUTDIR]  (default: this script's directory). Needs nginx, curl, h2load
(nghttp2-client), python3 grpcio grpcio-tools hpack.
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

import hpack

OUT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))
SECRET_HEADERS = ["-H", "Authorization: Bearer SECRET-token", "-H", "Cookie: session=SECRET-cookie"]
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


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


# ---------------------------------------------------------------- nginx + curl / h2load

def nginx(tmp):
    port = free_port()
    root = os.path.join(tmp, "www")
    os.makedirs(root, exist_ok=True)
    open(os.path.join(root, "a.txt"), "w").write("alpha\n" * 20)
    open(os.path.join(root, "b.txt"), "w").write("bravo\n" * 40)
    open(os.path.join(root, "index.html"), "w").write("<html>hello</html>\n")
    open(os.path.join(root, "large.bin"), "wb").write(bytes(range(256)) * 800)
    conf = os.path.join(tmp, "nginx.conf")
    open(conf, "w").write(f"""
daemon off; master_process off; worker_processes 1;
error_log {tmp}/error.log; pid {tmp}/nginx.pid;
events {{ worker_connections 64; }}
http {{
  access_log off; client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  server {{ listen 127.0.0.1:{port} http2; root {root};
    location = /echo {{ return 201 "created\\n"; }} }}
}}
""")
    proc = subprocess.Popen(["nginx", "-c", conf, "-p", tmp], stderr=subprocess.DEVNULL)
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, port


def record_nginx(tmp):
    proc, port = nginx(tmp)
    try:
        # curl 7.88 fails (exit 16) reusing an h2c prior-knowledge connection for a second
        # URL, so curl makes one request per connection and nghttp the multi-request one.
        r = Recorder(port)
        subprocess.run(["curl", "-s", "-o", "/dev/null", "--http2-prior-knowledge",
                        "-H", f"traceparent: {TRACEPARENT}", "-H", "tracestate: a=1", "-H", "tracestate: b=2",
                        *SECRET_HEADERS, f"http://127.0.0.1:{r.port}/a.txt"], check=True)
        r.save("curl_get")

        r = Recorder(port)
        base = f"http://127.0.0.1:{r.port}"
        subprocess.run(["nghttp", "-n", "-H", f"traceparent: {TRACEPARENT}", *SECRET_HEADERS,
                        f"{base}/a.txt", f"{base}/b.txt", f"{base}/missing", f"{base}/large.bin"],
                       check=True)
        r.save("nghttp_nginx")

        r = Recorder(port)
        body = os.path.join(tmp, "body.bin")
        open(body, "wb").write(b"x" * 40000)
        subprocess.run(["curl", "-s", "-o", "/dev/null", "--http2-prior-knowledge",
                        "--data-binary", f"@{body}", f"http://127.0.0.1:{r.port}/echo"], check=True)
        r.save("curl_post")

        r = Recorder(port)
        subprocess.run(["h2load", "-n", "20", "-c", "1", "-m", "4", f"http://127.0.0.1:{r.port}/index.html"],
                       check=True, stdout=subprocess.DEVNULL)
        r.save("h2load_concurrent")
    finally:
        proc.terminate()
        proc.wait()


# ---------------------------------------------------------------- gRPC

PROTO = """
syntax = "proto3";
package demo;
message Req { string name = 1; int32 count = 2; }
message Resp { string text = 1; }
service Greeter {
  rpc Hello (Req) returns (Resp);
  rpc Stream (Req) returns (stream Resp);
}
"""


def record_grpc(tmp):
    import grpc
    from concurrent import futures
    from grpc_tools import protoc

    open(os.path.join(tmp, "demo.proto"), "w").write(PROTO)
    assert protoc.main(["protoc", f"-I{tmp}", f"--python_out={tmp}", f"--grpc_python_out={tmp}",
                        os.path.join(tmp, "demo.proto")]) == 0
    sys.path.insert(0, tmp)
    import demo_pb2
    import demo_pb2_grpc

    class Greeter(demo_pb2_grpc.GreeterServicer):
        def Hello(self, req, context):
            if req.name == "missing":
                context.abort(grpc.StatusCode.NOT_FOUND, "no such name")
            return demo_pb2.Resp(text="hello " + req.name)

        def Stream(self, req, context):
            for i in range(req.count):
                yield demo_pb2.Resp(text=f"{req.name} #{i} " + "z" * 100)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    demo_pb2_grpc.add_GreeterServicer_to_server(Greeter(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        r = Recorder(port)
        # No retries, no BDP pings / keepalives: keep the connection to the calls themselves.
        opts = [("grpc.enable_retries", 0), ("grpc.http2.bdp_probe", 0)]
        with grpc.insecure_channel(f"127.0.0.1:{r.port}", options=opts) as ch:
            stub = demo_pb2_grpc.GreeterStub(ch)
            md = [("traceparent", TRACEPARENT), ("authorization", "Bearer SECRET-grpc")]
            stub.Hello(demo_pb2.Req(name="world"), metadata=md)
            try:
                stub.Hello(demo_pb2.Req(name="missing"))
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.NOT_FOUND
            list(stub.Stream(demo_pb2.Req(name="s", count=5)))
            stub.Hello(demo_pb2.Req(name="again " * 50))
        r.save("grpc_calls")
    finally:
        server.stop(0)


# ---------------------------------------------------------------- independent golden walker

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
        if (flags if kind != 9 else flags) & 0x4:
            hdrs = dec.decode(bytes(block[4]), raw=True)
            hdrs = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in hdrs]
            yield block[0], last, block[1], block[2], block[3], hdrs
            block = None


def golden(c2s, s2c):
    events, streams = [], {}
    # Client side: requests and request bodies.
    for first, last, kind, flags, sid, p in walk(c2s, 24):
        if kind == 1 and sid % 2 == 1 and sid not in streams:
            h = dict()
            for n, v in p:
                h.setdefault(n, v)
            ts = [v for n, v in p if n == "tracestate"]
            events.append({"ev": "start", "seq": sid, "at": first, "head_end": last,
                           "method": h.get(":method"), "path": h.get(":path"), "authority": h.get(":authority"),
                           "scheme": h.get(":scheme"), "ua": h.get("user-agent"),
                           "content_type": h.get("content-type"), "traceparent": h.get("traceparent"),
                           "tracestate": ",".join(ts) if ts else None})
            streams[sid] = {"req_body": 0, "resp_body": 0, "status": None, "grpc_status": None, "done": False}
        elif kind == 0 and sid in streams:
            pad = p[0] + 1 if flags & 0x8 else 0
            streams[sid]["req_body"] += len(p) - pad
        elif kind == 3 and sid in streams:
            streams[sid]["reset"] = ("c", last, int.from_bytes(p[:4], "big"))
    ends = []
    for first, last, kind, flags, sid, p in walk(s2c, 0):
        s = streams.get(sid)
        if s is None or s["done"]:
            continue
        if kind == 1:
            h = dict(p)
            st = int(h[":status"]) if ":status" in h else None
            if s["status"] is None and st is not None and 100 <= st < 200:
                continue
            if s["status"] is None and st is not None:
                s["status"] = st
            if "grpc-status" in h:
                s["grpc_status"] = int(h["grpc-status"])
        elif kind == 0:
            pad = p[0] + 1 if flags & 0x8 else 0
            s["resp_body"] += len(p) - pad
        elif kind == 3:
            s["done"] = True
            ends.append({"ev": "end", "seq": sid, "side": "s", "at": last, "kind": "reset",
                         "error_code": int.from_bytes(p[:4], "big"), "req_body": s["req_body"]})
            continue
        if kind in (0, 1) and flags & 0x1:
            s["done"] = True
            ends.append({"ev": "end", "seq": sid, "side": "s", "at": last, "kind": "response",
                         "status": s["status"], "grpc_status": s["grpc_status"], "resp_body": s["resp_body"],
                         "req_body": s["req_body"]})
    for sid, s in streams.items():
        if not s["done"]:
            ends.append({"ev": "end", "seq": sid, "aborted": True})
    return events + ends


def main():
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        record_nginx(tmp)
        record_grpc(tmp)


if __name__ == "__main__":
    main()
