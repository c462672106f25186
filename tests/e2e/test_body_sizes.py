"""http.request.body.size / http.response.body.size, exactly, against what the client itself
counted (curl's size_upload and size_download), over HTTP/1.1 and HTTP/2.

The server is the Go h2c server (apps/h2cserver: POST -> 201 "got N bytes\\n"; other paths ->
"hello from PATH\\n" n times): with `-http1` it is plain net/http, which de-chunks a chunked
request body and sends a response it did not size in advance (over 2 KiB) chunked; without,
curl talks HTTP/2 to it with prior knowledge. A body's size is its payload: a chunked body's
chunk data without the chunk framing, HTTP/2 DATA without padding. A request without a body
reports no (or a 0) request size.
"""

from __future__ import annotations

from pathlib import Path

from harness.expect import http_pair
from harness.procs import free_port
from harness.scenario import CURL_UA, Call, Scenario, Server

BODY = 5000
BIG_N = 600  # /big?n=600: 9600 bytes (below the 16 KiB captured per syscall, see test_h2c_upgrade)
BIG = BIG_N * len("hello from /big\n")
GOT = len(f"got {BODY} bytes\n")


def go_server(scn: Scenario, binary: Path, *flags: str) -> Server:
    port = free_port()
    proc = scn.spawn("h2cserver", [str(binary), *flags, f"127.0.0.1:{port}"], port)
    return Server(port, proc.pid, proc, "h2cserver", "h2cserver")


def body_file(scn: Scenario) -> Path:
    p = scn.workdir / "body.bin"
    p.write_bytes(b"b" * BODY)
    return p


def check(spans, call: Call, srv: Server, method: str, path: str, proto: str,
          status: int, request_size: int, query: str | None = None,
          framed: bool = False) -> None:
    """The request's CLIENT + SERVER pair, its sizes as curl counted them: what curl uploaded
    must be what the test sent, and both spans must report exactly that and curl's download.
    framed: the request body went chunked; curl's size_upload then counts the chunk framing
    too (its size_download of a chunked response does not), the spans only the payload."""
    __tracebackhide__ = True
    (row,) = [r for r in call.rows]
    assert row["http_code"] == status, row
    if framed:
        assert row["size_upload"] > request_size, row
    else:
        assert row["size_upload"] == request_size, row
    http_pair(spans, client=call, server=srv, method=method, path=path, query=query,
              status=status, ua=CURL_UA, client_port=row["local_port"], proto=proto,
              request_size=request_size, response_size=row["size_download"])


def test_http1_post_bodies_and_a_chunked_response(scn: Scenario, h2cserver: Path) -> None:
    """HTTP/1.1: a POST with Content-Length, a POST sent chunked (request size = the 5000
    payload bytes, not the framing), and a GET whose response Go sends chunked (response size
    = curl's size_download, 9600)."""
    srv = go_server(scn, h2cserver, "-http1")
    base, body = f"http://127.0.0.1:{srv.port}", body_file(scn)
    post = scn.curl(f"{base}/echo", data=body)
    chunked = scn.curl(f"{base}/upload", data=body, headers=("Transfer-Encoding: chunked",))
    big = scn.curl(f"{base}/big?n={BIG_N}")
    assert post.rows[0]["size_download"] == chunked.rows[0]["size_download"] == GOT
    assert big.rows[0]["size_download"] == BIG
    assert big.rows[0]["headers"].get("transfer-encoding") == ["chunked"], big.rows[0]
    assert "content-length" not in big.rows[0]["headers"], big.rows[0]

    spans = scn.collect(6)
    check(spans, post, srv, "POST", "/echo", "1.1", 201, BODY)
    check(spans, chunked, srv, "POST", "/upload", "1.1", 201, BODY, framed=True)
    check(spans, big, srv, "GET", "/big", "1.1", 200, 0, query=f"n={BIG_N}")


def test_http2_prior_knowledge_bodies(scn: Scenario, h2cserver: Path) -> None:
    """HTTP/2 (prior knowledge): a POST of 5000 bytes (DATA frames), a 9600-byte response and a
    404's 8-byte body, each size exactly as curl counted it."""
    srv = go_server(scn, h2cserver)
    base = f"http://127.0.0.1:{srv.port}"
    post = scn.curl(f"{base}/echo", data=body_file(scn), http2=True)
    big = scn.curl(f"{base}/big?n={BIG_N}", http2=True)
    missing = scn.curl(f"{base}/missing", http2=True)
    assert {c.rows[0]["http_version"] for c in (post, big, missing)} == {"2"}
    assert [c.rows[0]["size_download"] for c in (post, big, missing)] == [GOT, BIG,
                                                                         len("missing\n")]

    spans = scn.collect(6)
    check(spans, post, srv, "POST", "/echo", "2", 201, BODY)
    check(spans, big, srv, "GET", "/big", "2", 200, 0, query=f"n={BIG_N}")
    check(spans, missing, srv, "GET", "/missing", "2", 404, 0)
