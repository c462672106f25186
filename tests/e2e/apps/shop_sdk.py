"""The order service of apps/shop.py, instrumented by the OpenTelemetry SDK: the ground truth of
test_sdk_coexistence.py.

    opentelemetry-instrument python3 shop_sdk.py --port N --amqp-port P --queue Q \
        --pg-dsn DSN --notify http://127.0.0.1:M        (prints "READY <port>")

Zero-code instrumentation, as users deploy it: the app has no tracing code. `opentelemetry-
instrument` configures the SDK from the OTEL_* environment (OTEL_SERVICE_NAME,
OTEL_TRACES_EXPORTER=otlp, OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_SAMPLER, OTEL_BSP_*, ...)
and loads the Flask, requests, psycopg and pika instrumentations before this module runs; that
environment is also how the agent tells the process carries an SDK. At start-up the service
refuses to run (exit 2) unless every one of those four instrumentations and an SDK tracer
provider are in place, so a test can never pass with its ground truth silently missing.

GET /order/<id> (Flask on Werkzeug, one request at a time; Werkzeug closes every connection
after its response):
  1. INSERT INTO orders (id) VALUES ($1)    psycopg, autocommit: the SDK's db CLIENT span
  2. basic.publish, default exchange, routing key Q, message_id "order-<id>", a JSON body;
     publisher confirms, mandatory: the SDK's PRODUCER span, whose traceparent the pika
     instrumentation writes into the message's headers (this app copies no header itself)
  3. GET <notify>/users/<id> with requests (one Session: one keep-alive connection): the SDK's
     CLIENT span, whose traceparent the requests instrumentation sends
  4. 200 {"order": <id>, "message_bytes": n, "notify_status": s}
The PostgreSQL and RabbitMQ connections are opened once, at start-up.
"""

from __future__ import annotations

import argparse
import json
import sys

import flask
import pika
import psycopg
import requests
from werkzeug.serving import make_server


def sdk_problems(app: flask.Flask) -> list[str]:
    """What is missing for the SDK to report this service's spans (empty: nothing)."""
    from opentelemetry import trace
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.instrumentation.pika import PikaInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.sdk.trace import TracerProvider

    problems = [f"{type(i).__name__} not instrumenting" for i in
                (FlaskInstrumentor(), RequestsInstrumentor(), PsycopgInstrumentor(),
                 PikaInstrumentor()) if not i.is_instrumented_by_opentelemetry]
    if not getattr(app, "_is_instrumented_by_opentelemetry", False):
        problems.append("the Flask app is not instrumented")
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        problems.append(f"tracer provider is {type(trace.get_tracer_provider()).__name__}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--amqp-port", type=int, required=True)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--pg-dsn", required=True)
    ap.add_argument("--notify", required=True, help="base URL of the downstream service")
    args = ap.parse_args()

    app = flask.Flask("shop_sdk")
    problems = sdk_problems(app)
    if problems:
        print(f"shop_sdk: not SDK-instrumented: {'; '.join(problems)}", file=sys.stderr,
              flush=True)
        return 2
    pg = psycopg.connect(args.pg_dsn, autocommit=True)
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", args.amqp_port,
                                                             heartbeat=0))
    channel = conn.channel()
    channel.confirm_delivery()
    http = requests.Session()

    @app.get("/order/<int:order>")
    def order(order: int):
        pg.execute("INSERT INTO orders (id) VALUES (%s)", (order,))
        props = pika.BasicProperties(message_id=f"order-{order}", delivery_mode=1)
        body = json.dumps({"order": order, "what": "ship it"}).encode()
        channel.basic_publish("", args.queue, body, props, mandatory=True)
        notified = http.get(f"{args.notify}/users/{order}", timeout=10)
        return flask.jsonify(order=order, message_bytes=len(body),
                             notify_status=notified.status_code)

    # One thread: requests are handled one at a time, the pika connection stays on one thread.
    srv = make_server("127.0.0.1", args.port, app, threaded=False)
    print(f"READY {srv.server_port}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
