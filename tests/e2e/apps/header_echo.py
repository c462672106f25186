"""HTTP/1.1 server (keep-alive) that answers every request with what it received: its path, its
headers in order and its body, as JSON. `GET /chunked/...` answers with a chunked body.

Used by test_inject.py and test_two_nodes.py to see exactly which `traceparent` the kernel
wrote into a request. Listens on ECHO_HOST (default 127.0.0.1) and prints its port on stdout
once it listens.
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def received(self) -> dict:
        """What the request brought: path, headers in order, body."""
        got = self.body()
        return {"path": self.path, "headers": list(self.headers.items()),
                "body": got.decode("latin-1")}

    def answer(self) -> None:
        self.send_doc(self.received())

    def send_doc(self, d: dict) -> None:
        doc = json.dumps(d).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.path.startswith("/chunked"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = len(doc) // 2
            for part in (doc[:half], doc[half:]):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(doc)))
            self.end_headers()
            self.wfile.write(doc)

    do_GET = answer
    do_POST = answer

    def log_message(self, *args) -> None:
        pass


def serve(handler: type) -> None:
    """Serves on ECHO_HOST (default 127.0.0.1), an ephemeral port printed first."""
    srv = ThreadingHTTPServer((os.environ.get("ECHO_HOST", "127.0.0.1"), 0), handler)
    srv.daemon_threads = True
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    serve(H)
