#!/usr/bin/env python3
"""Record real HTTP/1.x connections for the http1 parser's tests.

Runs real servers (nginx, python3 -m http.server, a small http.server-based app) and real
clients (curl, python http.client, raw sockets for pipelining and upgrades) on 127.0.0.1, with
a recording TCP proxy in between. For each scenario it writes:

  NAME.c2s     bytes client -> server, exactly as relayed
  NAME.s2c     bytes server -> client
  NAME.segs    the order in which the proxy relayed them: one line per read, "c LEN" or "s LEN"
  NAME.golden  expected parser events, one JSON object per line, computed by the small
               whole-stream parser at the bottom of this file (independent of the Rust code)

Golden events:
  {"ev": "start", "seq", "at": offset of the request's first byte in c2s,
   "head_end": offset of the head's last byte, "method", "target", "v", "host", "ua",
   "traceparent", "tracestate"}
  {"ev": "end", "seq", "at": offset of the response's last byte in s2c (null: completed by
   the close), "status", "v", "resp_body", "req_body"}   or   {"ev": "end", "seq", "aborted": true}

Usage: record.py [OUTDIR]   (default: the directory of this script). Needs nginx and curl.
"""

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OUT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))


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
        self.connections = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        client, _ = self.sock.accept()
        self.connections += 1
        server = socket.create_connection(("127.0.0.1", self.upstream))
        ends = {client: server, server: client}
        open_ = {client, server}
        while open_:
            ready, _, _ = select.select(list(open_), [], [], 10)
            if not ready:
                break
            for s in ready:
                data = s.recv(65536)
                peer = ends[s]
                if not data:
                    open_.discard(s)
                    try:
                        peer.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    continue
                if s is client:
                    self.c2s += data
                    self.segs.append(("c", len(data)))
                else:
                    self.s2c += data
                    self.segs.append(("s", len(data)))
                peer.sendall(data)
        client.close()
        server.close()
        # A second connection would mean the client did not reuse the first: refuse it.
        self.sock.settimeout(0.3)
        try:
            extra, _ = self.sock.accept()
            self.connections += 1
            extra.close()
        except OSError:
            pass
        self.sock.close()

    def save(self, name):
        self.thread.join(20)
        assert self.connections == 1, f"{name}: {self.connections} connections"
        base = os.path.join(OUT, name)
        open(base + ".c2s", "wb").write(self.c2s)
        open(base + ".s2c", "wb").write(self.s2c)
        open(base + ".segs", "w").write("".join(f"{d} {n}\n" for d, n in self.segs))
        events = golden(bytes(self.c2s), bytes(self.s2c))
        open(base + ".golden", "w").write("".join(json.dumps(e) + "\n" for e in events))
        print(f"{name}: c2s={len(self.c2s)} s2c={len(self.s2c)} reads={len(self.segs)} events={len(events)}")


# ---------------------------------------------------------------- servers


class App(BaseHTTPRequestHandler):
    """HTTP/1.1 app for what nginx does not do out of the box (100-continue is answered by
    BaseHTTPRequestHandler.handle_expect_100)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            n = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return n
                n += len(self.rfile.read(size))
                self.rfile.readline()
        return len(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

    def do_POST(self):
        n = self.read_body()
        body = f"got {n} bytes\n".encode()
        self.send_response(201)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/chunked":
            # Chunk extensions and a trailer section (RFC 9112 §7.1.1, §7.1.2).
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "X-Checksum")
            self.end_headers()
            for i, part in enumerate([b"hello ", b"chunked " * 300, b"world\n"]):
                self.wfile.write(b"%x;part=%d;name=\"q\"\r\n%s\r\n" % (len(part), i, part))
                self.wfile.flush()
            self.wfile.write(b"0;final\r\nX-Checksum: abc123\r\nX-Other: 1\r\n\r\n")
        elif self.path == "/until-close":
            # No Content-Length, no chunked: the body ends with the connection (RFC 9112 §6.3 item 8).
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Connection", "close")
            self.end_headers()
            for i in range(50):
                self.wfile.write(b"line %d of a body delimited by the close\n" % i)
            self.close_connection = True
        elif self.path == "/ws":
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            # Echo the client's binary frames until it closes.
            while True:
                data = self.connection.recv(4096)
                if not data:
                    break
                self.connection.sendall(b"\x82" + bytes([min(len(data), 125)]) + data[:125])
            self.close_connection = True
        else:
            body = b"app says hi\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
error_log stderr;
pid {tmp}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    large_client_header_buffers 4 64k;
    keepalive_requests 1000;
    gzip on;
    gzip_min_length 1;
    gzip_types text/plain application/octet-stream;
    chunked_transfer_encoding on;
    types {{ text/plain txt; application/octet-stream bin; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location = /empty {{ return 204; }}
        location = /fail {{ return 500 "boom\\n"; }}
        location = /cookie {{
            add_header Set-Cookie "session=SECRET-SET-COOKIE; HttpOnly";
            return 200 "cookie set\\n";
        }}
    }}
}}
"""


def start_servers(tmp):
    root = os.path.join(tmp, "root")
    os.makedirs(root)
    rnd = __import__("random").Random(1)
    open(os.path.join(root, "a.txt"), "w").write("alpha\n" * 20)
    open(os.path.join(root, "b.txt"), "w").write("bravo\n" * 40)
    open(os.path.join(root, "small.txt"), "w").write("small\n")
    open(os.path.join(root, "large.bin"), "wb").write(bytes(rnd.getrandbits(8) for _ in range(200 * 1024)))
    # Text that compresses only somewhat, so gzip emits many chunks.
    words = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do"]
    open(os.path.join(root, "big.txt"), "w").write(" ".join(rnd.choice(words) + str(rnd.randint(0, 99999)) for _ in range(40000)))
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(tmp, d))
    nginx_port = free_port()
    conf = os.path.join(tmp, "nginx.conf")
    open(conf, "w").write(NGINX_CONF.format(tmp=tmp, port=nginx_port, root=root))
    nginx = subprocess.Popen(["/usr/sbin/nginx", "-c", conf, "-p", tmp], stderr=subprocess.DEVNULL)
    app = ThreadingHTTPServer(("127.0.0.1", 0), App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    simple_port = free_port()
    simple = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", root, str(simple_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for port in (nginx_port, simple_port):
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
    return root, nginx, nginx_port, app, app.server_address[1], simple, simple_port


# ---------------------------------------------------------------- clients


def curl(port, *args):
    subprocess.run(["curl", "-s", "-S", *args], check=True, env={"PATH": os.environ["PATH"]})


def urls(port, *paths):
    out = []
    for p in paths:
        out += [f"http://127.0.0.1:{port}{p}", "-o", "/dev/null"]
    return out


def http_client(port, calls):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port)
    results = []
    for method, path, headers in calls:
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        results.append(resp)
    conn.close()
    return results


def raw(port, data, after_first=None):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(data)
    if after_first is not None:
        time.sleep(0.2)
        s.recv(65536)
        for chunk in after_first:
            s.sendall(chunk)
            time.sleep(0.1)
        s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    s.close()


def scenario(name, upstream, run):
    rec = Recorder(upstream)
    run(rec.port)
    rec.save(name)


def main():
    os.makedirs(OUT, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="http1-record-")
    root, nginx, ngx, app, app_port, simple, simple_port = start_servers(tmp)
    try:
        scenario("keepalive_gets", ngx, lambda p: curl(p, *urls(p, "/a.txt", "/b.txt", "/small.txt")))
        scenario("chunked_gzip", ngx, lambda p: curl(p, "--compressed", *urls(p, "/big.txt", "/a.txt")))
        scenario("large_body", ngx, lambda p: curl(p, *urls(p, "/large.bin", "/small.txt")))

        def head_then_get(p):
            http_client(p, [("HEAD", "/a.txt", {}), ("GET", "/a.txt", {}), ("HEAD", "/large.bin", {}), ("GET", "/small.txt", {})])

        scenario("head_then_get", ngx, head_then_get)

        def not_modified(p):
            etag = http_client(ngx, [("GET", "/a.txt", {})])[0].getheader("ETag")
            http_client(p, [("GET", "/a.txt", {}), ("GET", "/a.txt", {"If-None-Match": etag}), ("GET", "/empty", {}), ("GET", "/small.txt", {})])

        scenario("status_204_304", ngx, not_modified)
        scenario("errors_404_500", ngx, lambda p: curl(p, *urls(p, "/missing", "/fail", "/small.txt")))
        body = os.path.join(tmp, "upload.bin")
        open(body, "wb").write(b"x" * 3000)
        scenario(
            "expect_100",
            app_port,
            lambda p: curl(p, "-H", "Expect: 100-continue", "--data-binary", "@" + body, *urls(p, "/upload", "/upload")),
        )
        scenario(
            "post_chunked",
            app_port,
            lambda p: curl(p, "-H", "Transfer-Encoding: chunked", "-H", "Expect:", "--data-binary", "@" + body, *urls(p, "/upload")),
        )
        scenario("connection_close", ngx, lambda p: curl(p, "-H", "Connection: close", *urls(p, "/a.txt")))
        scenario("python_http_server", simple_port, lambda p: curl(p, *urls(p, "/")))
        scenario("until_close", app_port, lambda p: curl(p, *urls(p, "/until-close")))
        scenario("chunked_ext_trailers", app_port, lambda p: http_client(p, [("GET", "/chunked", {}), ("GET", "/other", {})]))

        def pipelined(p):
            reqs = b"".join(
                b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: pipeliner/1%s\r\n\r\n" % (path, extra)
                for path, extra in [(b"/a.txt", b""), (b"/missing", b""), (b"/b.txt", b""), (b"/small.txt", b"\r\nConnection: close")]
            )
            raw(p, reqs)

        scenario("pipelining", ngx, pipelined)
        scenario("big_header", ngx, lambda p: curl(p, "-H", "X-Big: " + "b" * 20000, *urls(p, "/small.txt", "/a.txt")))
        scenario(
            "tracecontext_secrets",
            ngx,
            lambda p: curl(
                p,
                "-H", "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "-H", "traceparent: 00-11111111111111111111111111111111-2222222222222222-01",
                "-H", "tracestate: congo=t61rcWkgMzE",
                "-H", "tracestate: rojo=00f067aa0ba902b7,vendor=x",
                "-H", "Authorization: Bearer SECRET-AUTHORIZATION",
                "-H", "Cookie: sid=SECRET-COOKIE",
                "-A", "tracer test/1.0 (spaces)",
                *urls(p, "/cookie", "/small.txt"),
            ),
        )

        def upgrade(p):
            raw(
                p,
                b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                after_first=[b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", b"GET /not-http HTTP/1.1\r\n\r\n", b"\x88\x80\x00\x00\x00\x00"],
            )

        scenario("upgrade_101", app_port, upgrade)
    finally:
        nginx.send_signal(signal.SIGQUIT)
        simple.terminate()
        app.shutdown()
        nginx.wait(5)
        simple.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- golden oracle
# A deliberately simple whole-buffer parser (it sees complete streams, so it needs no state
# machine): an independent statement of what the Rust parser must report.


def parse_head(data, pos):
    end = data.find(b"\r\n\r\n", pos)
    if end < 0:
        return None
    lines = data[pos:end].split(b"\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower().decode(), value.strip(b" \t")))
    return lines[0], headers, end + 4


def field(headers, name):
    values = [v for n, v in headers if n == name]
    return values


def dechunk(data, pos):
    """Returns (payload size, offset after the body)."""
    size = 0
    while True:
        eol = data.index(b"\r\n", pos)
        n = int(data[pos:eol].split(b";")[0].strip(), 16)
        pos = eol + 2
        if n == 0:
            # Trailer field lines, then the empty line.
            while True:
                eol = data.index(b"\r\n", pos)
                empty = eol == pos
                pos = eol + 2
                if empty:
                    return size, pos
        size += n
        pos += n + 2


def body_framing(headers):
    te = b",".join(field(headers, "transfer-encoding"))
    if te:
        return "chunked" if te.split(b",")[-1].strip().lower() == b"chunked" else "close"
    cl = field(headers, "content-length")
    return int(cl[0]) if cl else None


def golden(c2s, s2c):
    events, requests = [], []
    pos = 0
    while pos < len(c2s):
        h = parse_head(c2s, pos)
        if h is None:
            break
        line, headers, head_end = h
        method, target, version = line.split(b" ")
        framing = body_framing(headers)
        if framing == "chunked":
            req_body, after = dechunk(c2s, head_end)
        else:
            req_body, after = framing or 0, head_end + (framing or 0)

        def first(name):
            v = field(headers, name)
            return v[0].decode() if v else None

        ts = field(headers, "tracestate")
        seq = len(requests)
        requests.append(dict(method=method.decode(), body=req_body))
        events.append(
            dict(ev="start", seq=seq, at=pos, head_end=head_end - 1, method=method.decode(), target=target.decode(),
                 v=int(version[-1:]), host=first("host"), ua=first("user-agent"), traceparent=first("traceparent"),
                 tracestate=",".join(v.decode() for v in ts) if ts else None)
        )
        if method == b"CONNECT":
            break
        pos = after
        if s2c_upgraded(s2c):
            break
    pos, seq = 0, 0
    ended = set()
    while pos < len(s2c) and seq < len(requests):
        line, headers, head_end = parse_head(s2c, pos)
        version, status = line.split(b" ")[0], int(line.split(b" ")[1])
        end = dict(ev="end", seq=seq, status=status, v=int(version[-1:]), req_body=requests[seq]["body"])
        if 100 <= status < 200 and status != 101:
            pos = head_end
            continue
        framing = body_framing(headers)
        if status == 101 or requests[seq]["method"] == "HEAD" or status in (204, 304):
            size, after = 0, head_end
        elif framing == "chunked":
            size, after = dechunk(s2c, head_end)
        elif framing in (None, "close"):
            size, after = len(s2c) - head_end, None
        else:
            size, after = framing, head_end + framing
        end.update(at=after - 1 if after is not None else None, resp_body=size)
        events.append(end)
        ended.add(seq)
        seq += 1
        if status == 101 or after is None:
            break
        pos = after
    for s in range(len(requests)):
        if s not in ended:
            events.append(dict(ev="end", seq=s, aborted=True))
    return events


def s2c_upgraded(s2c):
    return s2c.startswith(b"HTTP/1.1 101")


if __name__ == "__main__":
    main()
