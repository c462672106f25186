"""relay.py on an asyncio event loop, for test_two_nodes.py: one thread serves every
connection; each request waits a little (so that several are in flight on the thread at
once) and then calls http://argv[1]:argv[2]/adown<path> on a new connection. Answers what it
received plus `downstream`, as relay.py does. Sends no trace headers of its own.

Listens on ECHO_HOST (default 127.0.0.1); prints its port on stdout once it listens.
"""

import asyncio
import json
import os
import sys

DOWN_HOST, DOWN_PORT = sys.argv[1], int(sys.argv[2])


async def read_message(r: asyncio.StreamReader) -> tuple[str, list, bytes] | None:
    """(start line, headers, body) of one Content-Length message; None at EOF."""
    line = await r.readline()
    if not line:
        return None
    headers = []
    while (h := await r.readline()) not in (b"\r\n", b""):
        k, _, v = h.decode("latin-1").rstrip("\r\n").partition(":")
        headers.append([k, v.strip()])
    n = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
    return line.decode("latin-1").strip(), headers, await r.readexactly(n)


async def call_down(method: str, path: str, body: bytes) -> dict:
    r, w = await asyncio.open_connection(DOWN_HOST, DOWN_PORT)
    w.write(f"{method} /adown{path} HTTP/1.1\r\nHost: down\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode() + body)
    await w.drain()
    _, _, got = await read_message(r)
    w.close()
    return json.loads(got)


async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    while (m := await read_message(r)) is not None:
        start, headers, body = m
        method, path, _ = start.split(" ", 2)
        await asyncio.sleep(0.05)
        doc = {"path": path, "headers": headers, "body": body.decode("latin-1"),
               "downstream": await call_down(method, path, body)}
        out = json.dumps(doc).encode()
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(out), out))
        await w.drain()
    w.close()


async def main() -> None:
    srv = await asyncio.start_server(serve, os.environ.get("ECHO_HOST", "127.0.0.1"), 0)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await srv.serve_forever()


asyncio.run(main())
