"""Overhead and coverage under load: nginx on 127.0.0.1 driven by wrk, first without the agent,
then with the agent exporting OTLP to a real receiver (the e2e suite's, built on the
OpenTelemetry project's protobuf definitions). Prints figures; asserts nothing about speed.

    python3 tests/bench/overhead.py --agent target/release/agent [--seconds 10] [--connections 8]
                                    [--tls] [--rate 1000]

Two phases each, without and with the agent: wrk saturating nginx (throughput ratio, target
>= 90 % plain / >= 70 % HTTPS), then a fixed rate (open loop, default 1000 req/s; added p99
target <= 50 us). The agent's CPU is counted over its wrk phase only (start-up excluded), per
request and per 1k req/s (target <= 1 % of a core), with its RSS (target <= 64 MiB).

--tls: nginx serves HTTPS (TLS 1.3, a self-signed certificate) and wrk speaks TLS; both use
OpenSSL's libssl.so.3, so every request's plaintext comes from the agent's uprobes on
SSL_read/SSL_write (four uprobe hits and two uretprobe hits per request per side).

Both nginx (the server) and wrk (the client) are traced, so every request should yield two
spans: nginx's SERVER span and wrk's CLIENT span. The agent's own loss counters (ring buffer
full, queue drops, export failures) are printed from its exit log line.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))
from otlp_receiver import OtlpReceiver  # noqa: E402

NGINX_CONF = """daemon off;
master_process off;
worker_processes 1;
error_log stderr;
pid {prefix}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port}{tls};
        root {prefix}/www;
        location / {{ try_files $uri =404; }}
    }}
}}
"""


def open_loop_child(port: int, seconds: int, rate: int, tls: bool) -> tuple[float, float, int]:
    """`open_loop` in a process of its own: the receiver decoding spans in this process would
    otherwise hold the GIL the client threads need, and its pauses would be measured."""
    argv = [sys.executable, __file__, "--open-loop-child", str(port), str(seconds), str(rate)]
    out = subprocess.run(argv + (["--tls"] if tls else []), capture_output=True, text=True,
                         check=True, timeout=seconds + 60).stdout
    p50, p99, failed = out.split()
    return float(p50), float(p99), int(failed)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wrk(port: int, seconds: int, connections: int, scheme: str) -> tuple[int, float, str]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
         f"{scheme}://127.0.0.1:{port}/users/42?token=abc"],
        capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+(\S+)", out)
    return requests, rps, p99.group(1) if p99 else "?"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", required=True)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--tls", action="store_true", help="HTTPS: plaintext from the TLS uprobes")
    ap.add_argument("--rate", type=int, default=1000,
                    help="requests/s of the fixed-rate (open loop) latency phase")
    args = ap.parse_args()
    scheme = "https" if args.tls else "http"
    if os.geteuid() != 0:
        print("overhead.py: needs root (the agent loads eBPF programs)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="agent-bench-"))
    port = free_port()
    (work / "www" / "users").mkdir(parents=True)
    (work / "www" / "users" / "42").write_bytes(b"x" * 1024)
    tls = ""
    if args.tls:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-keyout", str(work / "key.pem"), "-out", str(work / "cert.pem"),
                        "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
        tls = (f" ssl;\n        ssl_certificate {work}/cert.pem;\n"
               f"        ssl_certificate_key {work}/key.pem")
    (work / "nginx.conf").write_text(NGINX_CONF.format(prefix=work, port=port, tls=tls))
    nginx = subprocess.Popen(["/usr/sbin/nginx", "-e", "stderr", "-p", f"{work}/", "-c",
                              str(work / "nginx.conf")], stderr=subprocess.DEVNULL)
    receiver = OtlpReceiver().start()
    agent = None
    try:
        time.sleep(0.5)
        base_n, base_rps, base_p99 = wrk(port, args.seconds, args.connections, scheme)
        base_lat = open_loop_child(port, args.seconds, args.rate, args.tls)

        agent = subprocess.Popen([args.agent, "run", "--otlp-endpoint", receiver.endpoint,
                                  "--log-level", "info"], stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        log = ""
        while "agent ready" not in log:
            line = agent.stderr.readline()
            if not line and agent.poll() is not None or time.time() > deadline:
                print("agent did not start:\n" + log, file=sys.stderr)
                return 1
            log += line
        before = len(receiver.spans())
        cpu_ready = cpu_seconds(agent.pid)
        n, rps, p99 = wrk(port, args.seconds, args.connections, scheme)
        rss_mib = rss_kib(agent.pid) / 1024
        time.sleep(2)  # a batch timeout and then some
        cpu_s = cpu_seconds(agent.pid) - cpu_ready
        spans = receiver.spans()[before:]
        # Let the receiver finish the wrk phase's backlog first (it shares the CPUs).
        settle_deadline, last = time.time() + 60, -1
        while time.time() < settle_deadline and len(receiver.spans()) != last:
            last = len(receiver.spans())
            time.sleep(1.0)
        lat = open_loop_child(port, args.seconds, args.rate, args.tls)
        agent.send_signal(signal.SIGTERM)
        rest = agent.communicate(timeout=30)[1]
        log += rest
        server = sum(1 for s in spans if s.kind == 2)
        client = sum(1 for s in spans if s.kind == 3)
        counters = re.findall(r"counters at exit: (.*)", log)
        print(f"load: wrk -t1 -c{args.connections} -d{args.seconds}s against nginx over {scheme} "
              f"(1 KiB file), "
              f"{os.cpu_count()} CPUs shared by wrk, nginx, the agent and the receiver")
        print(f"  without agent: {base_rps:10.0f} req/s   p99 {base_p99:>8}   ({base_n} requests)")
        print(f"  with agent:    {rps:10.0f} req/s   p99 {p99:>8}   ({n} requests)")
        target = 70 if args.tls else 90
        print(f"  throughput with/without: {100.0 * rps / base_rps:.1f}% "
              f"(target >= {target}%), change {100.0 * (rps - base_rps) / base_rps:+.1f}%")
        added_p99_us = 1e3 * (lat[1] - base_lat[1])
        print(f"  open loop at {args.rate} req/s for {args.seconds} s (8 keep-alive connections, "
              f"latency from when each request was due): p50 {base_lat[0]:.3f} -> {lat[0]:.3f} ms, "
              f"p99 {base_lat[1]:.3f} -> {lat[1]:.3f} ms: added p99 {added_p99_us:+.0f} µs "
              f"(target <= 50 µs); failed {base_lat[2]} / {lat[2]}")
        print(f"  spans received: {len(spans)} (SERVER {server} / CLIENT {client}) for {n} requests "
              f"= {100.0 * server / max(n, 1):.1f}% / {100.0 * client / max(n, 1):.1f}% coverage")
        print(f"  spans/s exported: {len(spans) / args.seconds:.0f}")
        per_k = 100.0 * cpu_s / max(n, 1) * 1000  # % of a core per 1k req/s
        print(f"  agent CPU: {cpu_s:.1f} s over the {args.seconds} s run and the 2 s after it "
              f"(start-up excluded): {1e6 * cpu_s / max(n, 1):.1f} µs per request = "
              f"{per_k:.2f}% of a core per 1k req/s (target <= 1%); RSS at the end of the load "
              f"{rss_mib:.1f} MiB (target <= 64 MiB)")
        print(f"  agent counters: {counters[-1] if counters else '(none logged)'}")
        return 0
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(timeout=5)
        except subprocess.TimeoutExpired:
            nginx.kill()
        receiver.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--open-loop-child":
        from sdk_peer import open_loop  # the peer benchmark's fixed-rate client, one path
        r = open_loop(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), path="/users/42",
                      tls="--tls" in sys.argv)
        print(*r)
        sys.exit(0)
    sys.exit(main())
