"""Self-test of the traffic the agent tests generate. Needs neither root nor the agent.

The span tests assume facts about their traffic (keep-alive really reused one connection, the
chunked route really sends chunks, nginx really answers 404/500, ...). Those facts are checked
here, so an agent test failure is never a traffic generator bug in disguise.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.scenario import SERVICE, Scenario


@pytest.fixture
def bare(workroot: Path, request):
    """A Scenario with no agent and no receiver: just processes, always cleaned up."""
    d = workroot / request.node.name
    d.mkdir()
    s = Scenario(None, None, d)
    try:
        yield s
    finally:
        s.close()
        shutil.rmtree(d, ignore_errors=True)


def test_service_routes_on_one_keepalive_connection(bare: Scenario) -> None:
    svc = bare.service()
    base = f"http://127.0.0.1:{svc.port}"
    call = bare.curl(f"{base}/users/1", f"{base}/chunked", f"{base}/large?size=1048576",
                     f"{base}/status/404", f"{base}/status/503", f"{base}/slow?ms=200",
                     f"{base}/nope")
    assert [r["http_code"] for r in call.rows] == [200, 200, 200, 404, 503, 200, 404]
    assert [r["num_connects"] for r in call.rows] == [1, 0, 0, 0, 0, 0, 0]
    assert len({r["local_port"] for r in call.rows}) == 1
    sizes = [r["size_download"] for r in call.rows]
    assert sizes[1] == SERVICE.CHUNKED_BODY_SIZE and sizes[2] == 1048576
    assert call.rows[1]["headers"]["transfer-encoding"] == ["chunked"]
    assert "content-length" not in call.rows[1]["headers"]
    assert call.rows[2]["headers"]["content-length"] == ["1048576"]
    assert call.rows[5]["time_total"] >= 0.2


def test_chunked_route_sends_several_chunks(bare: Scenario) -> None:
    svc = bare.service()
    raw = subprocess.run(["curl", "-sS", "--raw", f"http://127.0.0.1:{svc.port}/chunked"],
                         capture_output=True, timeout=20, check=True).stdout
    assert raw == SERVICE.chunked_wire_body()
    assert len(SERVICE.CHUNKS) >= 3


def test_http10_request_gets_http10_response(bare: Scenario) -> None:
    svc = bare.service()
    call = bare.curl(f"http://127.0.0.1:{svc.port}/users/9", http10=True)
    assert call.rows[0]["http_version"] in ("1", "1.0") and call.rows[0]["http_code"] == 200


def test_call_route_reuses_its_upstream_connection(bare: Scenario) -> None:
    b = bare.service("service_b", env={"OTEL_SERVICE_NAME": "e2e-b"})
    a = bare.service("service_a")
    urls = [f"http://127.0.0.1:{a.port}/call?next=http%3A%2F%2F127.0.0.1%3A{b.port}%2Fusers%2F{n}"
            for n in (5, 6)]
    call = bare.curl(*urls)
    assert [r["http_code"] for r in call.rows] == [200, 200]
    assert [r["headers"]["x-next-conn"] for r in call.rows] == [["new"], ["reused"]]
    assert "/users/6" in b.proc.stderr()  # B's access log: the request really got there


def test_python_client_keeps_one_connection(bare: Scenario) -> None:
    svc = bare.service()
    call = bare.client(svc.port, "GET /users/11", "POST /echo 1000", "GET /status/404")
    assert [(r["status"], r["body_size"], r["connects"]) for r in call.rows] == [
        (200, 28, 1), (200, 1000, 1), (404, 15, 1)]
    assert len({r["local_port"] for r in call.rows}) == 1


def test_nginx_static_404_500(bare: Scenario) -> None:
    ngx = bare.nginx()
    base = f"http://127.0.0.1:{ngx.port}"
    call = bare.curl(f"{base}/index.html", f"{base}/missing", f"{base}/boom")
    assert [r["http_code"] for r in call.rows] == [200, 404, 500]
    assert call.rows[0]["size_download"] == (ngx.root / "index.html").stat().st_size
    assert [r["num_connects"] for r in call.rows[:2]] == [1, 0]


def test_processes_are_cleaned_up(bare: Scenario) -> None:
    svc = bare.service()
    ngx = bare.nginx()
    bare.close()
    for p in (svc.proc, ngx.proc):
        assert p.poll() is not None
