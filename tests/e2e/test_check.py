"""`$AGENT_BIN check`: reports what the kernel supports and exits 0 when tracing can work."""

from __future__ import annotations

from pathlib import Path

from harness.procs import run


def test_check_exits_0_and_mentions_tracepoints(agent_bin: Path, workroot: Path) -> None:
    proc, rc = run("agent-check", [str(agent_bin), "check"], workroot, timeout=30)
    out = proc.stdout() + proc.stderr()
    assert rc == 0, f"`agent check` exited {rc}:\n{out}"
    assert "tracepoint" in out.lower(), f"`agent check` output does not mention tracepoints:\n{out}"


def test_check_reports_tls_library_per_process(agent_bin: Path, scn, tls_certs, gotls,
                                               workroot: Path) -> None:
    """Per running process: which TLS library `check` found and whether it is traced. Real
    processes: a Go server (crypto/tls, symbols), the same server stripped (pclntab), nginx
    (libssl.so.3), node (OpenSSL linked into the executable), and a grpcio server (BoringSSL
    inside grpcio's extension: found, not traced, with the reason)."""
    from harness.tls import go_server, grpc_server, nginx_tls, node_server

    grpcio = grpc_server(scn, tls_certs).server
    servers = {
        "go": go_server(scn, gotls.server, tls_certs),
        "go-stripped": go_server(scn, gotls.stripped, tls_certs),
        "nginx": nginx_tls(scn, tls_certs, grpcio.port).server,
        "node": node_server(scn, tls_certs),
        "grpcio": grpcio,
    }
    proc, rc = run("agent-check", [str(agent_bin), "check"], workroot, timeout=60)
    out = proc.stdout()
    assert rc == 0, f"`agent check` exited {rc}:\n{out}\n{proc.stderr()}"
    lines = {}
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("tls pid") and len(parts) > 2:
            lines.setdefault(int(parts[2]), []).append(line)
    expect = {
        "go": ("Go crypto/tls (go1.", ": traced"),
        "go-stripped": ("stripped: functions from pclntab", ": traced"),
        "nginx": ("OpenSSL 3", "libssl.so.3: traced"),
        "node": ("OpenSSL 3", "/node: traced"),
        "grpcio": ("BoringSSL", "NOT traced: BoringSSL is linked without exported symbols"),
    }
    for name, (library, state) in expect.items():
        got = lines.get(servers[name].pid, [])
        assert any(library in l and state in l for l in got), (
            f"{name} (pid {servers[name].pid}): want {library!r} and {state!r} in:\n"
            + "\n".join(got) + f"\n--- full output:\n{out}")
