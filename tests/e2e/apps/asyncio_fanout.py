"""Uninstrumented Python asyncio fan-out service for the concurrent trace-context test
(test_concurrent_context.py): stdlib only (asyncio streams), one event-loop thread.

    python3 asyncio_fanout.py --port N --down M [--delay-ms D]

GET /req/<rid>: waits D ms (so concurrent requests overlap), then GETs
http://127.0.0.1:M/down/<rid> with a minimal HTTP/1.1 client over a keep-alive connection
pool (an idle connection if there is one, else a new one; back to the pool after a complete
Content-Length response, as aiohttp's default connector does), then answers 200 with JSON
{rid, down_status, inflight}: inflight is how many /req requests were being handled when this
one called downstream. Anything else: 404. Keep-alive on the server side; requests must have
no body (this service only serves GETs). Prints "READY <port>" once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys


class Pool:
    """Idle keep-alive connections to one host:port."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.idle:
            reader, writer = self.idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                         "Accept: */*\r\n\r\n".encode())
            await writer.drain()
            status, headers = await read_head(reader, response=True)
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        except BaseException:
            writer.close()
            raise
        if headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            self.idle.append((reader, writer))
        return status, body


async def read_head(reader: asyncio.StreamReader, response: bool) -> tuple:
    """(status or (method, target), headers with lower-case names) of one message head."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    first = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if response:
        return int(first[1]), headers
    return (first[0], first[1]), headers


class Service:
    def __init__(self, down: int, delay_s: float) -> None:
        self.pool = Pool("127.0.0.1", down)
        self.delay_s = delay_s
        self.inflight = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    (method, target), _ = await read_head(reader, response=False)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                status, obj = await self.route(method, target.split("?", 1)[0])
                body = (json.dumps(obj) + "\n").encode()
                writer.write(f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
                             "Content-Type: application/json\r\n"
                             f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                await writer.drain()
        finally:
            writer.close()

    async def route(self, method: str, path: str) -> tuple[int, dict]:
        if method != "GET" or not path.startswith("/req/"):
            return 404, {"error": "not found"}
        rid = path[len("/req/"):]
        self.inflight += 1
        try:
            seen = self.inflight
            await asyncio.sleep(self.delay_s)
            seen = max(seen, self.inflight)
            try:
                down_status, _ = await self.pool.get(f"/down/{rid}")
            except Exception as e:  # noqa: BLE001 (reported to the caller)
                return 502, {"error": repr(e)}
            return 200, {"rid": rid, "down_status": down_status, "inflight": seen}
        finally:
            self.inflight -= 1


async def main_async(args: argparse.Namespace) -> None:
    svc = Service(args.down, args.delay_ms / 1000)
    server = await asyncio.start_server(svc.handle, "127.0.0.1", args.port, backlog=128)
    print(f"READY {args.port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--down", type=int, required=True)
    ap.add_argument("--delay-ms", type=int, default=30)
    try:
        asyncio.run(main_async(ap.parse_args()))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
