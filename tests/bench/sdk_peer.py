"""The agent beside its peer, the OpenTelemetry SDK, on the same small Flask service, measured
in one run and printed as ratios. Asserts nothing about speed (figures vary with the machine);
it fails only when a variant's spans do not arrive (a comparison of nothing).

    sudo python3 tests/bench/sdk_peer.py --agent target/release/agent [--seconds 10] [--rate 200]

The service: Flask 3 on Werkzeug's threaded server (HTTP/1.1 keep-alive), `GET /users/<id>`
answering ~1 KiB of JSON. Three variants, one after the other, each a fresh process:

  (a) plain: no tracing at all, the baseline;
  (b) SDK: the same app run by `opentelemetry-instrument` (Flask instrumentation, the SDK's
      BatchSpanProcessor, the OTLP/gRPC exporter to the receiver): one SERVER span per request,
      made inside the app's own process, on its request path;
  (c) agent: the plain app, the agent tracing its pid (`--pid`), exporting OTLP/gRPC to the
      same receiver: one SERVER span per request, made outside the app.

Each variant is measured twice: saturated (wrk, closed loop: the throughput it can serve) and at
a fixed moderate rate (an open-loop generator in this script: requests are due at fixed times
whatever the previous ones did, and each latency is counted from when it was due, so a stall
shows up as latency instead of silently lowering the rate). Printed: throughput and its ratio to
(a), p50/p99 at the fixed rate and what (b) and (c) add to (a)'s, the spans each exported, the
agent's CPU, and whether (c) costs less than (b).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))
from otlp_receiver import OtlpReceiver  # noqa: E402

PYTHON = sys.executable
OTEL_INSTRUMENT = Path(PYTHON).parent / "opentelemetry-instrument"

APP = r'''
import sys
import flask
from werkzeug.serving import WSGIRequestHandler, make_server

app = flask.Flask("peer")
NAME = "x" * 1000

@app.get("/users/<int:uid>")
def user(uid):
    return flask.jsonify(id=uid, name=NAME)

WSGIRequestHandler.protocol_version = "HTTP/1.1"  # keep-alive, as a production server does
srv = make_server("127.0.0.1", int(sys.argv[1]), app, threaded=True)
print("READY", flush=True)
srv.serve_forever()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if "READY" in line:
            return
        if not line and proc.poll() is not None:
            break
    raise RuntimeError(f"{what} did not start (exit {proc.poll()})")


def wrk(port: int, seconds: int, connections: int) -> tuple[float, str]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
         f"http://127.0.0.1:{port}/users/42"],
        capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+(\S+)", out)
    return rps, p99.group(1) if p99 else "?"


def open_loop(port: int, seconds: int, rate: int, workers: int = 8, path: str | None = None,
              tls: bool = False) -> tuple[float, float, int]:
    """p50 and p99 latency (ms) at `rate` requests/s, each counted from when it was due; and the
    number of failed requests. `path`: the one path to GET (default /users/<i>); `tls`: HTTPS
    without certificate checks (a self-signed test server)."""
    interval = 1.0 / rate
    total = seconds * rate
    start = time.perf_counter() + 0.2
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    next_slot = [0]

    def connect() -> http.client.HTTPConnection:
        if tls:
            return http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                               context=ssl._create_unverified_context())
        return http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def worker() -> None:
        conn = connect()
        mine: list[float] = []
        while True:
            with lock:
                i = next_slot[0]
                next_slot[0] += 1
            if i >= total:
                break
            due = start + i * interval
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                conn.request("GET", path or f"/users/{i}")
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    failures[0] += 1
            except (OSError, http.client.HTTPException):
                failures[0] += 1
                conn.close()
                conn = connect()
            mine.append(time.perf_counter() - due)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3  # noqa: E731
    return pick(0.50), pick(0.99), failures[0]


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", required=True)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rate", type=int, default=200, help="requests/s of the fixed-rate run")
    ap.add_argument("--connections", type=int, default=4, help="wrk connections (saturated)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("sdk_peer.py: needs root (the agent loads eBPF programs)", file=sys.stderr)
        return 2
    if not OTEL_INSTRUMENT.exists():
        print(f"sdk_peer.py: {OTEL_INSTRUMENT} missing: run with the e2e venv's python "
              "(cargo xtask setup)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="agent-sdk-peer-"))
    (work / "app.py").write_text(APP)
    receiver = OtlpReceiver().start()
    results: dict[str, dict] = {}
    try:
        for variant in ("plain", "sdk", "agent"):
            port = free_port()
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            cmd = [PYTHON, str(work / "app.py"), str(port)]
            if variant == "sdk":
                env.update({
                    "OTEL_SERVICE_NAME": "peer-sdk",
                    "OTEL_TRACES_EXPORTER": "otlp",
                    "OTEL_METRICS_EXPORTER": "none",
                    "OTEL_LOGS_EXPORTER": "none",
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                    "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                    "OTEL_EXPORTER_OTLP_INSECURE": "true",
                    "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "requests,urllib3,urllib",
                })
                cmd = [str(OTEL_INSTRUMENT)] + cmd
            app = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   text=True)
            agent = None
            try:
                wait_ready(app, f"the {variant} app")
                if variant == "agent":
                    agent = subprocess.Popen(
                        [args.agent, "run", "--otlp-endpoint", receiver.endpoint, "--pid",
                         str(app.pid), "--log-level", "info"],
                        stderr=subprocess.PIPE, text=True)
                    log, deadline = "", time.time() + 60
                    while "agent ready" not in log:
                        line = agent.stderr.readline()
                        if (not line and agent.poll() is not None) or time.time() > deadline:
                            print("agent did not start:\n" + log, file=sys.stderr)
                            return 1
                        log += line
                # Warm up (imports, the SDK's first export, the agent's first resource).
                open_loop(port, 1, 50)
                before = len(receiver.spans())
                agent_cpu0 = cpu_seconds(agent.pid) if agent else 0.0
                rps, wrk_p99 = wrk(port, args.seconds, args.connections)
                p50, p99, failed = open_loop(port, args.seconds, args.rate)
                requests_made = int(rps * args.seconds) + args.seconds * args.rate
                agent_cpu = cpu_seconds(agent.pid) - agent_cpu0 if agent else 0.0
                time.sleep(3)  # the last batches
                spans = [s for s in receiver.spans()[before:] if s.kind == 2
                         and any(k in s.attributes for k in ("url.path", "http.target"))]
                results[variant] = dict(rps=rps, wrk_p99=wrk_p99, p50=p50, p99=p99,
                                        failed=failed, spans=len(spans),
                                        requests=requests_made, agent_cpu=agent_cpu)
            finally:
                if agent is not None:
                    agent.send_signal(signal.SIGTERM)
                    try:
                        agent.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        agent.kill()
                app.kill()
                app.wait()
    finally:
        receiver.stop()
        shutil.rmtree(work, ignore_errors=True)

    a = results["plain"]
    print(f"peer comparison: Flask (Werkzeug, threaded, keep-alive), GET /users/<id> ~1 KiB; "
          f"saturated: wrk -t1 -c{args.connections} -d{args.seconds}s; fixed rate: {args.rate} "
          f"req/s open loop for {args.seconds} s; {os.cpu_count()} CPUs shared by all")
    print(f"  {'variant':<10} {'req/s':>8} {'ratio':>7} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'+p50 ms':>8} {'+p99 ms':>8} {'spans':>8} {'failed':>7}")
    for name, label in (("plain", "(a) plain"), ("sdk", "(b) SDK"), ("agent", "(c) agent")):
        r = results[name]
        print(f"  {label:<10} {r['rps']:8.0f} {r['rps'] / a['rps']:7.1%} {r['p50']:8.2f} "
              f"{r['p99']:8.2f} {r['p50'] - a['p50']:+8.2f} {r['p99'] - a['p99']:+8.2f} "
              f"{r['spans']:8d} {r['failed']:7d}")
    b, c = results["sdk"], results["agent"]
    loss_b, loss_c = 1 - b["rps"] / a["rps"], 1 - c["rps"] / a["rps"]
    print(f"  throughput lost: SDK {loss_b:.1%}, agent {loss_c:.1%}; added p99 at "
          f"{args.rate} req/s: SDK {b['p99'] - a['p99']:+.2f} ms, agent {c['p99'] - a['p99']:+.2f} ms")
    print(f"  agent CPU: {c['agent_cpu']:.1f} s over the two runs "
          f"({1000 * c['agent_cpu'] / max(c['requests'], 1):.2f} ms per request, "
          f"{1e5 * c['agent_cpu'] / max(c['requests'], 1):.2f}% of a core per 1k req/s; "
          f"target <= 1%)")
    cheaper = loss_c < loss_b and c["p99"] <= b["p99"]
    print(f"  (c) costs less than (b): {'yes' if cheaper else 'NO'} (target: yes)")
    missing = [n for n in ("sdk", "agent") if results[n]["spans"] == 0]
    if missing:
        print(f"sdk_peer.py: no spans from {missing}: nothing was compared", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
