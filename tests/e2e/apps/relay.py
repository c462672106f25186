"""An uninstrumented HTTP/1.1 service in the middle of a call chain, for test_two_nodes.py: it
answers each request (keep-alive, thread per connection, as header_echo.py) after calling
http://argv[1]:argv[2]/down<path> with the same method and body, on a keep-alive connection of
its handling thread. Its answer is what it received (path, headers, body) plus `downstream`:
what the downstream service says it received. It sends no trace headers of its own: any
traceparent downstream gets was written by an agent's kernel program.

Listens on ECHO_HOST (default 127.0.0.1); prints its port on stdout once it listens.
"""

import http.client
import json
import sys
import threading

from header_echo import H, serve

DOWN_HOST, DOWN_PORT = sys.argv[1], int(sys.argv[2])
local = threading.local()


class Relay(H):
    def call_down(self, body: bytes) -> dict:
        c = getattr(local, "conn", None)
        if c is None:
            c = local.conn = http.client.HTTPConnection(DOWN_HOST, DOWN_PORT, timeout=10)
        c.request(self.command, "/down" + self.path, body=body or None)
        r = c.getresponse()
        return json.loads(r.read())

    def answer(self) -> None:
        got = self.received()
        got["downstream"] = self.call_down(got["body"].encode("latin-1"))
        self.send_doc(got)

    do_GET = answer
    do_POST = answer


if __name__ == "__main__":
    serve(Relay)
