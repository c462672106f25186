"""Self-test of the TLS tests' traffic (tls_cases.py). Needs neither the agent nor root for
eBPF (root only because initdb runs as the postgres user).

Every case runs here exactly as in test_tls.py and checks its own traffic (status codes, ALPN
protocol, one kept-alive connection, h2load's own counts, TLS on every PostgreSQL connection
per the server's log), so a test_tls.py failure is never a traffic bug in disguise.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import pg_cases
import tls_cases
from harness.pg import PgServer
from harness.scenario import Scenario
from harness.tls import Certs, GoTls


@pytest.fixture
def bare(workroot: Path, request):
    """A Scenario with no agent and no receiver: just processes, always cleaned up."""
    d = workroot / request.node.name.replace("/", "_")
    d.mkdir()
    s = Scenario(None, None, d)
    try:
        yield s
    finally:
        s.close()
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
def test_curl_nginx_tls_traffic(bare: Scenario, tls_certs: Certs, http2: bool) -> None:
    tls_cases.curl_to_nginx(bare, tls_certs, http2)


def test_pyclient_nginx_tls_traffic(bare: Scenario, tls_certs: Certs) -> None:
    tls_cases.pyclient_to_nginx(bare, tls_certs)


def test_h2load_nginx_tls_traffic(bare: Scenario, tls_certs: Certs) -> None:
    tls_cases.h2load_to_nginx(bare, tls_certs)


def test_h2load_grpc_h2c_traffic(bare: Scenario) -> None:
    c = tls_cases.h2load_grpc_h2c(bare)
    assert [m for m, _ in c.runs] == ["Reserve", "Broken"]


def test_grpc_via_nginx_h2c_traffic(bare: Scenario, tls_certs: Certs) -> None:
    tls_cases.grpc_via_nginx_h2c(bare, tls_certs)


def test_h2load_grpc_via_nginx_tls_traffic(bare: Scenario, tls_certs: Certs) -> None:
    tls_cases.h2load_grpc_via_nginx_tls(bare, tls_certs)


def test_grpcio_tls_traffic(bare: Scenario, tls_certs: Certs) -> None:
    tls_cases.grpcio_over_tls(bare, tls_certs)


@pytest.mark.parametrize("build", ["default", "stripped"])
@pytest.mark.parametrize("http", ["1.1", "2"])
def test_go_tls_traffic(bare: Scenario, tls_certs: Certs, gotls: GoTls, http: str,
                        build: str) -> None:
    server = gotls.server if build == "default" else gotls.stripped
    tls_cases.go_to_go(bare, tls_certs, server, gotls.client, http)


def test_go_stripped_build_has_no_symbols(gotls: GoTls) -> None:
    """The stripped server has no symbol table (section names in .shstrtab), only the
    pclntab; the default build has both."""
    default, stripped = gotls.server.read_bytes(), gotls.stripped.read_bytes()
    assert b".symtab\0" in default and b".gopclntab\0" in default
    assert b".symtab\0" not in stripped and b".gopclntab\0" in stripped


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
def test_curl_node_tls_traffic(bare: Scenario, tls_certs: Certs, http2: bool) -> None:
    tls_cases.curl_to_node(bare, tls_certs, http2)


@pytest.mark.parametrize("case", [pg_cases.simple_multi_statement,
                                  pg_cases.extended_and_prepared],
                         ids=lambda f: f.__name__)
def test_pg_tls_traffic(bare: Scenario, postgres_tls: PgServer, case) -> None:
    c = tls_cases.pg_over_tls(case, bare, postgres_tls)
    assert c.expected


def test_pgbench_tls_traffic(bare: Scenario, postgres_tls: PgServer) -> None:
    c = tls_cases.pg_over_tls(pg_cases.pgbench_run, bare, postgres_tls, "extended")
    assert c.expected_spans == 7 * 100 + 2


def test_go_cleartext_traffic(bare: Scenario, tls_certs: Certs, gotls: GoTls) -> None:
    tls_cases.go_to_go(bare, tls_certs, gotls.server, gotls.client, "1.1", plain=True)


def test_node_cleartext_traffic(bare: Scenario, tls_certs: Certs) -> None:
    tls_cases.curl_to_node(bare, tls_certs, False, plain=True)
