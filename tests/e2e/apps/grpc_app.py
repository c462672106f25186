"""Uninstrumented gRPC (grpcio, plaintext HTTP/2) server and client for the e2e tests.

    python3 grpc_app.py server --port N [--tls-port M --cert FILE --key FILE]
    python3 grpc_app.py client --port N [--ca FILE] Reserve Missing Broken ...

Methods of the service `shop.Inventory` (bytes in, bytes out; no generated code needed):
Reserve answers OK, Missing aborts with NOT_FOUND, Broken aborts with UNAVAILABLE. The client
makes every call on ONE channel (one HTTP/2 connection) and prints one JSON line per call with
the status code name it got.

TLS (grpcio's own BoringSSL): the server also listens on --tls-port with that certificate;
the client with --ca uses a secure channel trusting that CA.

The request message is REQUEST (raw bytes, no protobuf schema); `request_frame()` is it as one
length-prefixed gRPC message (the body other clients, e.g. h2load -d, send).
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent import futures

import grpc

SERVICE = "shop.Inventory"
REQUEST = b"item-7"


def request_frame(message: bytes = REQUEST) -> bytes:
    """One gRPC message on the wire: compressed flag 0, 4-byte big-endian length, bytes."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def _reserve(request: bytes, context) -> bytes:
    return b"reserved:" + request


def _missing(request: bytes, context) -> bytes:
    context.abort(grpc.StatusCode.NOT_FOUND, "no such item")


def _broken(request: bytes, context) -> bytes:
    context.abort(grpc.StatusCode.UNAVAILABLE, "backend down")


def serve(port: int, tls_port: int | None, cert: str | None, key: str | None) -> None:
    handlers = {name: grpc.unary_unary_rpc_method_handler(fn)
                for name, fn in (("Reserve", _reserve), ("Missing", _missing),
                                 ("Broken", _broken))}
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    if tls_port:
        with open(cert, "rb") as c, open(key, "rb") as k:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        server.add_secure_port(f"127.0.0.1:{tls_port}", creds)
    server.start()
    print(f"READY {port}", flush=True)
    server.wait_for_termination()


def call(port: int, methods: list[str], ca: str | None = None) -> None:
    target = f"127.0.0.1:{port}"
    if ca:
        with open(ca, "rb") as f:
            channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(f.read()))
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        for m in methods:
            stub = channel.unary_unary(f"/{SERVICE}/{m}")
            try:
                stub(REQUEST, timeout=10)
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name
            print(json.dumps({"method": m, "code": code}), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["server", "client"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls-port", type=int)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--ca")
    ap.add_argument("methods", nargs="*")
    args = ap.parse_intermixed_args()
    if args.mode == "server":
        serve(args.port, args.tls_port, args.cert, args.key)
    else:
        call(args.port, args.methods, args.ca)
    return 0


if __name__ == "__main__":
    sys.exit(main())
