"""Uninstrumented order service for the queue tests: HTTP in, PostgreSQL and RabbitMQ out.

    python3 shop.py --port N --amqp-port P --queue Q --pg-dsn DSN   (prints "READY <port>")

GET /order/<id>, handled on the service's only thread (a plain, single-threaded HTTPServer):
  1. INSERT INTO orders (id) VALUES ($1)            psycopg, autocommit, extended protocol
  2. basic.publish, default exchange, routing key Q, message_id "order-<id>", a JSON body;
     publisher confirms, mandatory (the message is in Q before the response goes out).
     When the request carries a traceparent header, the message carries the same value in its
     headers table (what naive propagation code does); otherwise the message has no headers.
  3. 200 {"order": <id>}
Anything else: 404. The PostgreSQL and RabbitMQ connections are opened once, at start-up.
"""

from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

import pika
import psycopg


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    pg: psycopg.Connection
    channel: "pika.adapters.blocking_connection.BlockingChannel"
    queue: str

    def reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        parts = self.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != "order" or not parts[1].isdigit():
            self.reply(404, b'{"error":"not found"}')
            return
        order = int(parts[1])
        self.pg.execute("INSERT INTO orders (id) VALUES (%s)", (order,))
        tp = self.headers.get("traceparent")
        props = pika.BasicProperties(message_id=f"order-{order}", delivery_mode=1,
                                     headers={"traceparent": tp} if tp else None)
        body = json.dumps({"order": order, "what": "ship it"}).encode()
        self.channel.basic_publish("", self.queue, body, props, mandatory=True)
        self.reply(200, json.dumps({"order": order, "message_bytes": len(body)}).encode())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--amqp-port", type=int, required=True)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--pg-dsn", required=True)
    args = ap.parse_args()
    Handler.pg = psycopg.connect(args.pg_dsn, autocommit=True)
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", args.amqp_port,
                                                             heartbeat=0))
    Handler.channel = conn.channel()
    Handler.channel.confirm_delivery()
    Handler.queue = args.queue
    srv = HTTPServer(("127.0.0.1", args.port), Handler)
    print(f"READY {srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
