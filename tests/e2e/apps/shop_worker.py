"""Uninstrumented worker for the queue tests: consumes orders, records shipments in PostgreSQL.

    python3 shop_worker.py --amqp-port P --queue Q --pg-dsn DSN    (prints "READY Q")

Declares Q, registers one consumer (prefetch 1, manual ack), then for each delivery, on the
consuming thread: INSERT INTO shipments (order_id) VALUES ($1) with the message id, basic.ack,
and one JSON line on stdout (message_id, delivery_tag, redelivered, traceparent). Runs until
killed.
"""

from __future__ import annotations

import argparse
import json
import sys

import pika
import psycopg


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--amqp-port", type=int, required=True)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--pg-dsn", required=True)
    args = ap.parse_args()
    pg = psycopg.connect(args.pg_dsn, autocommit=True)
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", args.amqp_port,
                                                             heartbeat=0))
    ch = conn.channel()
    ch.queue_declare(args.queue, durable=False, arguments={"x-expires": 120_000})
    ch.basic_qos(prefetch_count=1)

    def on_message(ch, method, props, body) -> None:
        pg.execute("INSERT INTO shipments (order_id) VALUES (%s)", (props.message_id,))
        ch.basic_ack(method.delivery_tag)
        tp = (props.headers or {}).get("traceparent")
        print(json.dumps({"message_id": props.message_id, "delivery_tag": method.delivery_tag,
                          "redelivered": method.redelivered, "body_size": len(body),
                          "traceparent": tp.decode() if isinstance(tp, bytes) else tp}),
              flush=True)

    ch.basic_consume(args.queue, on_message, auto_ack=False)
    print(f"READY {args.queue}", flush=True)
    try:
        ch.start_consuming()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
