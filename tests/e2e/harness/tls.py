"""TLS for the e2e suite: certificates, and the TLS apps' servers and clients.

Certificates: a throw-away CA and a server certificate for 127.0.0.1 / localhost, made once
per session with the `openssl` CLI (fixture `tls_certs`).

Clients trust the CA explicitly (curl --cacert, the Go client's -ca flag, node's `ca` option,
Python's ssl.create_default_context(cafile=...), libpq's sslrootcert); nothing is installed in
the system trust store. EC P-256 keys: generated in milliseconds, understood by every client
here (OpenSSL 3, Go 1.19 crypto/tls, node, grpcio's BoringSSL, PostgreSQL).

Apps: apps/gotls (Go stdlib server and client, built by `build_gotls`), apps/node_tls.js,
nginx from apps/nginx_tls.conf.template (HTTPS + gRPC proxy), apps/grpc_app.py with a TLS
port, h2load (its own summary parsed).
"""

from __future__ import annotations

import importlib.util
import json
import re
import string
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .gobuild import STRIP, go_build
from .procs import free_port, listening_ports, run, wait_until
from .scenario import NGINX, PYTHON, Call, Scenario, Server, app_env

OPENSSL = "openssl"
DAYS = "2"


@dataclass(frozen=True)
class Certs:
    dir: Path
    ca: Path  # the CA certificate (PEM): what clients trust
    cert: Path  # the server certificate (PEM), SAN IP:127.0.0.1, DNS:localhost
    key: Path  # the server's private key (PEM, unencrypted)


def _openssl(args: list[str], cwd: Path) -> None:
    r = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")


def make_certs(d: Path) -> Certs:
    """A self-signed CA and a server certificate it signed, in `d`."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl(["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", DAYS,
              "-subj", "/CN=e2e test CA", "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"], d)
    _openssl(["req", *ec, "-keyout", "server.key", "-out", "server.csr",
              "-subj", "/CN=localhost"], d)
    (d / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
              "-CAcreateserial", "-out", "server.pem", "-days", DAYS, "-extfile", "server.ext"], d)
    _openssl(["verify", "-CAfile", "ca.pem", "server.pem"], d)
    (d / "server.key").chmod(0o600)
    return Certs(d, d / "ca.pem", d / "server.pem", d / "server.key")


# ---------------------------------------------------------------------------------------------
# The TLS apps: servers started in a Scenario (always cleaned up), clients that report their own
# counts. Each returns what the span assertions need (pids, ports, the client's own numbers).

APPS = Path(__file__).resolve().parent.parent / "apps"
GOTLS_SRC = APPS / "gotls"
GRPC_APP = APPS / "grpc_app.py"
H2LOAD = "h2load"
NODE = "node"


@dataclass(frozen=True)
class GoTls:
    """apps/gotls built three times: the executable's name is the service.name."""
    server: Path  # gotls-server, a default (unstripped) build
    client: Path  # gotls-client, the same program
    stripped: Path  # gotls-stripped: the server built with -ldflags='-s -w'


def build_gotls(workdir: Path) -> GoTls:
    return GoTls(go_build(GOTLS_SRC, workdir, workdir / "gotls-server"),
                 go_build(GOTLS_SRC, workdir, workdir / "gotls-client"),
                 go_build(GOTLS_SRC, workdir, workdir / "gotls-stripped", ldflags=STRIP))


def go_server(scn: Scenario, binary: Path, certs: Certs, plain: bool = False) -> Server:
    """apps/gotls server (HTTP/1.1 + HTTP/2 on one TLS port; plain: cleartext HTTP/1.1);
    service.name = its file name."""
    port = free_port()
    tls = ["-plain"] if plain else ["-cert", str(certs.cert), "-key", str(certs.key)]
    proc = scn.spawn(binary.name, [str(binary), "server", "-port", str(port), *tls], port)
    wait_until(lambda: f"READY {port}" in proc.stdout(), 10, f"{binary.name} READY", alive=proc)
    return Server(port, proc.pid, proc, binary.name, binary.name)


@dataclass
class GoRun:
    """A finished apps/gotls client: one row per request, and its own summary."""
    call: Call
    summary: dict


CLIENT_WAIT = "300ms"


def go_client(scn: Scenario, binary: Path, certs: Certs, port: int, http: str, n: int,
              *paths: str, plain: bool = False) -> GoRun:
    """apps/gotls client: n requests cycling over `paths`, one at a time, one connection.

    It waits CLIENT_WAIT before its first request. The agent attaches to a Go binary it has
    never seen within milliseconds of its exec (the exec is reported by the kernel, the binary
    inspected, the probes attached); TLS traffic in those first milliseconds is not seen. A
    short-lived client that connects immediately would race that, which is not what these
    tests are about (the limit is stated in the README)."""
    tls = ["-url", f"http://127.0.0.1:{port}"] if plain else [
        "-url", f"https://127.0.0.1:{port}", "-ca", str(certs.ca)]
    argv = [str(binary), "client", *tls, "-http", http, "-n", str(n), "-wait", CLIENT_WAIT,
            *paths]
    t0 = time.time_ns()
    proc, rc = run(scn._name(binary.name), argv, scn.workdir, timeout=60, env=app_env())
    t1 = time.time_ns()
    scn._own(proc)
    lines = [json.loads(x) for x in proc.stdout().splitlines() if x.startswith("{")]
    assert rc == 0 and lines and "done" in lines[-1], (
        f"{binary.name} failed (rc={rc})\n{proc.tail()}")
    return GoRun(Call(proc.pid, lines[:-1], t0, t1, binary.name, binary.name), lines[-1])


def node_server(scn: Scenario, certs: Certs, plain: bool = False) -> Server:
    """apps/node_tls.js (node:http2 createSecureServer, allowHTTP1; plain: node:http);
    service.name node_tls."""
    port = free_port()
    tls = ["--plain"] if plain else ["--cert", str(certs.cert), "--key", str(certs.key)]
    proc = scn.spawn("node_tls", [NODE, str(APPS / "node_tls.js"), "--port", str(port), *tls],
                     port)
    wait_until(lambda: f"READY {port}" in proc.stdout(), 10, "node_tls READY", alive=proc)
    return Server(port, proc.pid, proc, "node_tls", "node")


@dataclass
class GrpcServer:
    server: Server  # port: the plaintext (h2c) port
    tls_port: int | None


def grpc_server(scn: Scenario, certs: Certs | None = None) -> GrpcServer:
    """apps/grpc_app.py server: plaintext port, plus a TLS port (BoringSSL) with `certs`."""
    port = free_port()
    argv = [PYTHON, str(GRPC_APP), "server", "--port", str(port)]
    tls_port = None
    if certs is not None:
        tls_port = free_port()
        argv += ["--tls-port", str(tls_port), "--cert", str(certs.cert), "--key", str(certs.key)]
    proc = scn.spawn("grpc_app", argv, port)
    if tls_port is not None:
        scn.ports.add(tls_port)
        wait_until(lambda: tls_port in listening_ports(), 10, "grpc TLS port", alive=proc)
    wait_until(lambda: f"READY {port}" in proc.stdout(), 10, "grpc_app READY", alive=proc)
    return GrpcServer(Server(port, proc.pid, proc, "grpc_app", "python3"), tls_port)


def grpc_client(scn: Scenario, port: int, *methods: str, ca: Path | None = None) -> Call:
    """apps/grpc_app.py client: every call on one channel; rows {method, code}."""
    argv = [PYTHON, str(GRPC_APP), "client", "--port", str(port), *methods]
    if ca is not None:
        argv += ["--ca", str(ca)]
    t0 = time.time_ns()
    proc, rc = run(scn._name("grpc_client"), argv, scn.workdir, timeout=60, env=app_env())
    t1 = time.time_ns()
    scn._own(proc)
    rows = [json.loads(x) for x in proc.stdout().splitlines() if x.startswith("{")]
    assert rc == 0 and [r["method"] for r in rows] == list(methods), (
        f"grpc client failed (rc={rc})\n{proc.tail()}")
    return Call(proc.pid, rows, t0, t1, "grpc_app", "python3")


@dataclass
class NginxTls:
    server: Server  # port: the TLS port; root: the document root
    h2c_port: int


def nginx_tls(scn: Scenario, certs: Certs, grpc_port: int) -> NginxTls:
    """nginx from apps/nginx_tls.conf.template: HTTPS (h1 + h2) on one port, h2c (gRPC only)
    on another, both grpc_pass-ing shop.Inventory to the grpcio server on `grpc_port`."""
    tls_port, h2c_port = free_port(), free_port()
    prefix = scn.workdir / f"nginx-tls-{tls_port}"
    (prefix / "www").mkdir(parents=True)
    (prefix / "www" / "index.html").write_text("<html><body>e2e static file over TLS</body>"
                                               "</html>\n")
    template = string.Template((APPS / "nginx_tls.conf.template").read_text())
    conf = prefix / "nginx.conf"
    conf.write_text(template.substitute(PREFIX=str(prefix), TLS_PORT=tls_port, H2C_PORT=h2c_port,
                                        GRPC_PORT=grpc_port, CERT=certs.cert, KEY=certs.key))
    proc = scn.spawn("nginx_tls", [NGINX, "-e", "stderr", "-p", f"{prefix}/", "-c", str(conf)],
                     tls_port)
    scn.ports.add(h2c_port)
    wait_until(lambda: h2c_port in listening_ports(), 10, "nginx h2c port", alive=proc)
    return NginxTls(Server(tls_port, proc.pid, proc, "nginx", "nginx", root=prefix / "www"),
                    h2c_port)


def grpc_frame_file(scn: Scenario) -> Path:
    """The h2load -d body: apps/grpc_app.py's REQUEST as one length-prefixed gRPC message."""
    spec = importlib.util.spec_from_file_location("e2e_grpc_app", GRPC_APP)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    path = scn.workdir / "grpc-request.bin"
    path.write_bytes(mod.request_frame())
    return path


GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")


@dataclass
class H2load:
    """A finished h2load run, with its own summary."""
    pid: int
    protocol: str  # "h2" (TLS, ALPN) or "h2c"
    total: int
    started: int
    done: int
    succeeded: int
    failed: int
    errored: int
    timeout: int
    status: dict  # {"2xx": n, "3xx": n, "4xx": n, "5xx": n}
    stdout: str


def h2load(scn: Scenario, urls: list[str], *, n: int, c: int = 1, m: int = 1,
           headers: tuple[str, ...] = (), data: Path | None = None) -> H2load:
    """h2load -n N -c C -m M [-H ...] [-d FILE] URL...: each client cycles through `urls`.
    Fails unless h2load exits 0 and prints its summary."""
    argv = [H2LOAD, "-n", str(n), "-c", str(c), "-m", str(m)]
    for h in headers:
        argv += ["-H", h]
    if data is not None:
        argv += ["-d", str(data)]
    proc, rc = run(scn._name("h2load"), argv + urls, scn.workdir, timeout=60, env=app_env())
    scn._own(proc)
    out = proc.stdout()
    req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                    r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    proto = re.search(r"Application protocol: (\S+)", out)
    assert rc == 0 and req and codes and proto, f"h2load failed (rc={rc})\n{proc.tail()}"
    counts = [int(x) for x in req.groups()]
    return H2load(proc.pid, proto.group(1), *counts,
                  status=dict(zip(("2xx", "3xx", "4xx", "5xx"), map(int, codes.groups()))),
                  stdout=out)
