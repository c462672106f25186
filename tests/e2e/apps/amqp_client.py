"""Uninstrumented RabbitMQ client (pika BlockingConnection) for the e2e tests.

    amqp_client.py --port N ping
    amqp_client.py --port N publish --exchange X --routing-key K (--body TEXT | --body-size N)
                   [--count N] [--message-id ID] [--correlation-id ID] [--traceparent TP]
    amqp_client.py --port N consume --queue Q [--bind EXCHANGE:TYPE] --count N [--nack-first]
                   [--http-get URL] [--pg-dsn DSN --pg-sql SQL]
    amqp_client.py --port N get --queue Q --count N [--no-ack]
    amqp_client.py --port N declare --queue Q [--bind EXCHANGE:TYPE]

publish: publisher confirms on, mandatory: every message is routed to a queue and confirmed by
  the broker before the next one is sent, or the client exits non-zero. --count N sends the same
  message (same body, same properties) N times. --body-size N: a body of N bytes (more than one
  131072-byte frame for large N).
consume: declares Q (and EXCHANGE of TYPE, Q bound to it), prints "READY Q" once the consumer
  is registered, then handles N deliveries one at a time (prefetch 1, manual ack): the optional
  work (an HTTP GET, a PostgreSQL statement with the message id as $1), then basic.ack. With
  --nack-first the first delivery is nacked with requeue instead, so it comes back
  (redelivered) and N counts that extra delivery.
get: basic.get until N messages arrived (acked unless --no-ack).
Queues expire 120 s after last use and exchanges are auto-delete: nothing outlives a test.

Every message handled prints one JSON line (op, delivery_tag, redelivered, exchange,
routing_key, body_size, message_id, correlation_id, traceparent, acked, work).
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from urllib.parse import urlsplit

import pika

QUEUE_ARGS = {"x-expires": 120_000}


def connect(port: int) -> pika.BlockingConnection:
    params = pika.ConnectionParameters("127.0.0.1", port, heartbeat=0,
                                       blocked_connection_timeout=30, connection_attempts=1)
    return pika.BlockingConnection(params)


def declare(ch, queue: str, bind: str | None) -> None:
    ch.queue_declare(queue, durable=False, arguments=QUEUE_ARGS)
    if bind:
        exchange, etype = bind.split(":")
        ch.exchange_declare(exchange, etype, durable=False, auto_delete=True)
        ch.queue_bind(queue, exchange, routing_key=queue if etype == "direct" else "")


def emit(op: str, method, props, body: bytes, **extra) -> None:
    headers = props.headers or {}
    tp = headers.get("traceparent")
    print(json.dumps({"op": op, "delivery_tag": method.delivery_tag,
                      "redelivered": method.redelivered, "exchange": method.exchange,
                      "routing_key": method.routing_key, "body_size": len(body),
                      "message_id": props.message_id, "correlation_id": props.correlation_id,
                      "traceparent": tp.decode() if isinstance(tp, bytes) else tp, **extra}),
          flush=True)


def cmd_publish(args, ch) -> None:
    ch.confirm_delivery()
    body = args.body.encode() if args.body is not None else bytes(
        (i * 7 + 11) % 251 for i in range(args.body_size))
    headers = {"traceparent": args.traceparent} if args.traceparent else None
    props = pika.BasicProperties(message_id=args.message_id, correlation_id=args.correlation_id,
                                 headers=headers, delivery_mode=1)
    for n in range(args.count):
        ch.basic_publish(args.exchange, args.routing_key, body, props, mandatory=True)
        print(json.dumps({"op": "publish", "n": n, "exchange": args.exchange,
                          "routing_key": args.routing_key, "body_size": len(body),
                          "message_id": args.message_id, "confirmed": True}), flush=True)


class Work:
    """What the consumer does with a delivery before it acks it."""

    def __init__(self, args) -> None:
        self.http = urlsplit(args.http_get) if args.http_get else None
        self.pg = None
        if args.pg_dsn:
            import psycopg
            self.pg = psycopg.connect(args.pg_dsn, autocommit=True)
            self.sql = args.pg_sql

    def __call__(self, props) -> dict:
        done = {}
        if self.http is not None:
            conn = http.client.HTTPConnection(self.http.hostname, self.http.port, timeout=20)
            conn.request("GET", self.http.path)
            resp = conn.getresponse()
            resp.read()
            conn.close()
            done["http_status"] = resp.status
        if self.pg is not None:
            cur = self.pg.execute(self.sql, (props.message_id,))
            done["pg_rowcount"] = cur.rowcount
        return done


def cmd_consume(args, ch) -> None:
    declare(ch, args.queue, args.bind)
    work = Work(args)
    ch.basic_qos(prefetch_count=1)
    state = {"seen": 0, "nacked": False}

    def on_message(ch, method, props, body) -> None:
        state["seen"] += 1
        if args.nack_first and not state["nacked"]:
            state["nacked"] = True
            ch.basic_nack(method.delivery_tag, requeue=True)
            emit("deliver", method, props, body, acked=False, work={})
        else:
            done = work(props)
            ch.basic_ack(method.delivery_tag)
            emit("deliver", method, props, body, acked=True, work=done)
        if state["seen"] >= args.count:
            ch.stop_consuming()

    ch.basic_consume(args.queue, on_message, auto_ack=False)
    print(f"READY {args.queue}", flush=True)
    ch.start_consuming()


def cmd_get(args, ch) -> None:
    got, deadline = 0, time.monotonic() + 20
    while got < args.count:
        method, props, body = ch.basic_get(args.queue, auto_ack=args.no_ack)
        if method is None:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {got} of {args.count} messages in {args.queue}")
            time.sleep(0.05)
            continue
        if not args.no_ack:
            ch.basic_ack(method.delivery_tag)
        emit("get", method, props, body, acked=not args.no_ack, work={})
        got += 1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("ping")
    p = sub.add_parser("publish")
    p.add_argument("--exchange", default="")
    p.add_argument("--routing-key", required=True)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--body")
    g.add_argument("--body-size", type=int)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--message-id")
    p.add_argument("--correlation-id")
    p.add_argument("--traceparent")
    for name in ("consume", "get", "declare"):
        c = sub.add_parser(name)
        c.add_argument("--queue", required=True)
        c.add_argument("--bind", help="EXCHANGE:TYPE (fanout, direct)")
        c.add_argument("--count", type=int, default=1)
    c = sub.choices["consume"]
    c.add_argument("--nack-first", action="store_true")
    c.add_argument("--http-get")
    c.add_argument("--pg-dsn")
    c.add_argument("--pg-sql")
    sub.choices["get"].add_argument("--no-ack", action="store_true")
    args = ap.parse_args()

    conn = connect(args.port)
    ch = conn.channel()
    if args.cmd == "publish":
        cmd_publish(args, ch)
    elif args.cmd == "consume":
        cmd_consume(args, ch)
    elif args.cmd == "get":
        cmd_get(args, ch)
    elif args.cmd == "declare":
        declare(ch, args.queue, args.bind)
        print(f"DECLARED {args.queue}", flush=True)
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
