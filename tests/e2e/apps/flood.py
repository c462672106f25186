"""Connection flood for test_reliability.py (stdlib asyncio, uninstrumented).

    flood.py server PORT
        HTTP/1.1 keep-alive server: answers every request `200 ok` and keeps the connection.
    flood.py client PORT SHORT HELD HOLD_SECS
        opens and closes SHORT connections (100 at a time, no data; closed with RST via
        SO_LINGER 0, so no TIME_WAIT eats the ephemeral ports), then opens HELD connections,
        sends one GET on each, reads the answer and keeps them all open and idle for
        HOLD_SECS. Prints `short done N`, `held N` and `released` on stdout as it goes.

Both raise RLIMIT_NOFILE towards what they need (within the hard limit if it cannot be raised).
"""

from __future__ import annotations

import asyncio
import resource
import socket
import struct
import sys

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


def raise_nofile(n: int) -> None:
    """Raises the soft limit towards `n`; the hard limit may not be raisable (containers)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, n), max(hard, n)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(n, hard)), hard))


async def serve(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


async def short(port: int, n: int) -> None:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(100)
    linger = struct.pack("ii", 1, 0)

    async def one() -> None:
        async with gate:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                await loop.sock_connect(s, ("127.0.0.1", port))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            finally:
                s.close()

    await asyncio.gather(*(one() for _ in range(n)))
    print(f"short done {n}", flush=True)


async def held(port: int, n: int, hold_secs: float) -> None:
    conns = []
    gate = asyncio.Semaphore(200)

    async def one(i: int) -> None:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /held/{i} HTTP/1.1\r\nHost: flood\r\n\r\n".encode())
            await writer.drain()
            await reader.readexactly(len(RESPONSE))
            conns.append(writer)

    await asyncio.gather(*(one(i) for i in range(n)))
    print(f"held {len(conns)}", flush=True)
    await asyncio.sleep(hold_secs)
    for w in conns:
        w.close()
    print("released", flush=True)


def main() -> int:
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "server":
        raise_nofile(65536)
        asyncio.run(serve(port))
        return 0
    n_short, n_held, hold = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    raise_nofile(n_held + 1024)

    async def run() -> None:
        await short(port, n_short)
        await held(port, n_held, hold)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
