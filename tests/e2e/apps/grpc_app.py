"""Uninstrumented gRPC (grpcio, plaintext HTTP/2) server and client for the e2e tests.

    python3 grpc_app.py server --port N
    python3 grpc_app.py client --port N Reserve Missing Broken ...

Methods of the service `shop.Inventory` (bytes in, bytes out; no generated code needed):
Reserve answers OK, Missing aborts with NOT_FOUND, Broken aborts with UNAVAILABLE. The client
makes every call on ONE channel (one HTTP/2 connection) and prints one JSON line per call with
the status code name it got.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent import futures

import grpc

SERVICE = "shop.Inventory"


def _reserve(request: bytes, context) -> bytes:
    return b"reserved:" + request


def _missing(request: bytes, context) -> bytes:
    context.abort(grpc.StatusCode.NOT_FOUND, "no such item")


def _broken(request: bytes, context) -> bytes:
    context.abort(grpc.StatusCode.UNAVAILABLE, "backend down")


def serve(port: int) -> None:
    handlers = {name: grpc.unary_unary_rpc_method_handler(fn)
                for name, fn in (("Reserve", _reserve), ("Missing", _missing),
                                 ("Broken", _broken))}
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"READY {port}", flush=True)
    server.wait_for_termination()


def call(port: int, methods: list[str]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        for m in methods:
            stub = channel.unary_unary(f"/{SERVICE}/{m}")
            try:
                stub(b"item-7", timeout=10)
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name
            print(json.dumps({"method": m, "code": code}), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["server", "client"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("methods", nargs="*")
    args = ap.parse_intermixed_args()
    if args.mode == "server":
        serve(args.port)
    else:
        call(args.port, args.methods)
    return 0


if __name__ == "__main__":
    sys.exit(main())
