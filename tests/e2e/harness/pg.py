"""PostgreSQL for the e2e suite: one server per session, a database per test, the statements the
server says it executed, and the expected CLIENT span of one statement.

The server listens on 127.0.0.1:<port> (the traced traffic) and on a Unix socket in `sockdir`.
The harness's own set-up and checks (CREATE DATABASE, schemas, pgbench -i, row counts) go over
the Unix socket: the agent follows TCP connections only, so harness work never becomes a span.

`log_statement=all` with `log_line_prefix='%m [%p] %a@%d '` makes the server log one line per
statement it executed from a simple Query message ("statement: ...") or per Execute message
("execute <name>: ..."): an independent count of what the clients really ran (a multi-statement
simple query is one line), and the pid of every backend (for "no span from postgres").
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from otlp_receiver import KIND_CLIENT, STATUS_ERROR, STATUS_UNSET, ReceivedSpan

from .procs import Proc, free_port, listening_ports, run, tail_file, wait_until
from .scenario import APPS, PYTHON, Scenario, app_env
from .spans import assert_attrs, fmt_span, fmt_spans

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"
LOCALHOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
# Statements pgbench 15 runs on its own first connection before the benchmark (both SELECTs,
# simple protocol): "select count(*) from pgbench_branches" (the scale) and a catalog query on
# pgbench_accounts' partitioning. test_apps_pg_amqp.py checks this against the server log.
PGBENCH_SETUP_STATEMENTS = 2
# The built-in TPC-B-like script: BEGIN, 3 UPDATEs, SELECT, INSERT, END.
PGBENCH_TX = [("BEGIN", None), ("UPDATE", "pgbench_accounts"), ("SELECT", "pgbench_accounts"),
              ("UPDATE", "pgbench_tellers"), ("UPDATE", "pgbench_branches"),
              ("INSERT", "pgbench_history"), ("END", None)]

_LOG_STMT = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] (\S*)@(\S*) LOG:  (statement|execute ([^:]+)): "
                       r"(.*)$")
_LOG_PID = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] ")


class UserProc(Proc):
    """A Proc run as another user (postgres refuses to run as root)."""

    def __init__(self, name: str, argv: list[str], logdir: Path, user: str,
                 env: dict[str, str] | None = None) -> None:
        self.name, self.argv = name, argv
        self.stdout_path = logdir / f"{name}.stdout"
        self.stderr_path = logdir / f"{name}.stderr"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                          env=env, cwd="/", user=user, group=user,
                                          extra_groups=[], start_new_session=True)
        self.pid = self.popen.pid


@dataclass
class LoggedStatement:
    pid: int  # the backend's pid
    app: str
    db: str
    kind: str  # "statement" (simple Query) or "execute" (extended protocol Execute)
    prepared: str | None  # "execute <unnamed>" -> "<unnamed>", "execute _pg3_0" -> "_pg3_0"
    text: str


class PgServer:
    """PostgreSQL 15 with its data in a temp dir owned by the postgres user.

    certs (harness.tls.Certs): ssl=on with that server certificate (copied into the server's
    dir, key mode 0600, owned by postgres), log_connections=on (the log says which connections
    were TLS), and the clients' DSN/environment ask for sslmode=require."""

    def __init__(self, certs=None) -> None:
        # Its own temp dir: the postgres user must be able to reach it (the session's workroot
        # is mode 700). Removed by stop().
        self.root = Path(tempfile.mkdtemp(prefix="e2e-pg-"))
        self.data = self.root / "data"
        self.sockdir = self.root / "sock"
        self.sockdir.mkdir()
        pw = pwd.getpwnam(PG_USER)
        os.chmod(self.root, 0o755)
        for d in (self.root, self.sockdir):
            os.chown(d, pw.pw_uid, pw.pw_gid)
        self.port = free_port()
        self.ssl = certs is not None
        self.env = {"PATH": f"{PG_BIN}:/usr/bin:/bin", "LANG": "C", "LC_ALL": "C"}
        init = subprocess.run([str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U",
                               PG_USER, "-E", "UTF8", "--locale=C", "--no-sync"],
                              user=PG_USER, group=PG_USER, extra_groups=[], env=self.env,
                              cwd="/", capture_output=True, text=True, timeout=60)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
        argv = [str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-k", str(self.sockdir), "-c", f"listen_addresses={LOCALHOST}",
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "max_connections=50", "-c", "log_statement=all",
                "-c", "log_line_prefix=%m [%p] %a@%d ", "-c", "logging_collector=off",
                "-c", "log_min_messages=warning", "-c", "autovacuum=off"]
        if certs is not None:
            for src, name, mode in ((certs.cert, "server.crt", 0o644),
                                    (certs.key, "server.key", 0o600)):
                shutil.copy(src, self.root / name)
                os.chown(self.root / name, pw.pw_uid, pw.pw_gid)
                os.chmod(self.root / name, mode)
            argv += ["-c", "ssl=on", "-c", f"ssl_cert_file={self.root / 'server.crt'}",
                     "-c", f"ssl_key_file={self.root / 'server.key'}",
                     "-c", "log_connections=on"]
        self.proc = UserProc("postgres", argv, self.root, PG_USER, env=self.env)
        self.pid = self.proc.pid
        self.log_path = self.proc.stderr_path
        try:
            wait_until(lambda: self.port in listening_ports() and self._ready(), START_TIMEOUT,
                       "postgres to accept connections", interval=0.1, alive=self.proc)
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        r = subprocess.run([str(PG_BIN / "pg_isready"), "-q", "-h", str(self.sockdir), "-p",
                            str(self.port), "-U", PG_USER, "-d", "postgres"], env=self.env,
                           timeout=10)
        return r.returncode == 0

    # -- administration over the Unix socket (never traced) --
    def psql(self, sql: str, db: str = "postgres", timeout: float = 60) -> str:
        r = subprocess.run([str(PG_BIN / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                            "-h", str(self.sockdir), "-p", str(self.port), "-U", PG_USER,
                            "-d", db, "-c", sql], env={**self.env, "PGAPPNAME": "e2e-admin"},
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"psql over the Unix socket failed on {sql!r}:\n{r.stderr}")
        return r.stdout.strip()

    def create_database(self, schema: str = "") -> str:
        name = f"e2e_{uuid.uuid4().hex[:10]}"
        self.psql(f"CREATE DATABASE {name}")
        if schema:
            self.psql(schema, db=name)
        return name

    def pgbench_init(self, db: str, scale: int = 1) -> None:
        r = subprocess.run([str(PG_BIN / "pgbench"), "-i", "-q", "-s", str(scale), "-h",
                            str(self.sockdir), "-p", str(self.port), "-U", PG_USER, db],
                           env={**self.env, "PGAPPNAME": "e2e-admin"}, capture_output=True,
                           text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"pgbench -i failed:\n{r.stderr}")

    # -- what a traced client uses --
    def dsn(self, db: str, app: str) -> str:
        return (f"host={LOCALHOST} port={self.port} user={PG_USER} dbname={db} "
                f"application_name={app}" + (" sslmode=require" if self.ssl else ""))

    def client_env(self, db: str, app: str) -> dict[str, str]:
        """libpq variables for psql/pgbench over TCP (the traced path)."""
        return {"PGHOST": LOCALHOST, "PGPORT": str(self.port), "PGUSER": PG_USER,
                "PGDATABASE": db, "PGAPPNAME": app, **({"PGSSLMODE": "require"} if self.ssl
                                                       else {})}

    def connections(self, app: str, since: int = 0) -> list[str]:
        """With certs: the server's "connection authorized" lines for `app`'s connections
        (each says "SSL enabled (protocol=..., cipher=...)" when the connection is TLS)."""
        return [line for line in self.log_lines(since)
                if f"application_name={app}" in line and "connection authorized:" in line]

    # -- the server's log --
    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_lines(self, since: int = 0) -> list[str]:
        with open(self.log_path, "rb") as f:
            f.seek(since)
            return f.read().decode("utf-8", "replace").splitlines()

    def statements(self, app: str, since: int = 0) -> list[LoggedStatement]:
        """Statements the server executed for connections with application_name `app`."""
        out = []
        for line in self.log_lines(since):
            m = _LOG_STMT.match(line)
            if m and m.group(2) == app:
                out.append(LoggedStatement(int(m.group(1)), m.group(2), m.group(3),
                                           m.group(4).split()[0], m.group(5), m.group(6)))
        return out

    def wait_statements(self, app: str, since: int, n: int, timeout: float = 5.0
                        ) -> list[LoggedStatement]:
        """The log is written asynchronously to the client's view: wait for `n` lines."""
        try:
            wait_until(lambda: len(self.statements(app, since)) >= n, timeout,
                       f"{n} logged statements from {app}")
        except TimeoutError:
            pass
        return self.statements(app, since)

    def log_tail(self, since: int = 0, lines: int = 30) -> str:
        return "\n".join(self.log_lines(since)[-lines:])

    # -- "no span from postgres" --
    name = "postgres"
    exes = frozenset({"postgres", "postmaster"})

    def mark(self) -> int:
        return self.log_size()

    def pids(self, since: int | None = None) -> set[int]:
        """The postmaster, its live children, and every backend pid the log has named since
        the mark `since` (backends that have exited since)."""
        pids = {self.pid} | _children(self.pid)
        for line in self.log_lines(since or 0):
            m = _LOG_PID.match(line)
            if m:
                pids.add(int(m.group(1)))
        return pids

    def stop(self) -> None:
        """Fast shutdown (SIGINT: disconnect clients, no waiting for them), then SIGKILL.
        `leftovers`: processes of the server still running afterwards (should be none)."""
        tree = {self.pid} | _children(self.pid)
        if self.proc.poll() is None:
            self.proc.signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        self.proc.kill_group(grace=1)
        self.leftovers = finish_off(tree)
        shutil.rmtree(self.root, ignore_errors=True)

    def tail(self) -> str:
        return f"--- postgres (pid {self.pid}, port {self.port}) log\n{tail_file(self.log_path)}"


def alive(pids: set[int]) -> set[int]:
    """The pids that are running processes (zombies count as gone)."""
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            out.add(pid)
    return out


def finish_off(pids: set[int], timeout: float = 5.0) -> set[int]:
    """Waits up to `timeout` for `pids` to exit, SIGKILLs the rest; returns those that
    survived even that (there should be none)."""
    deadline = time.monotonic() + timeout
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in alive(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.2)
    return alive(pids)


def _children(pid: int) -> set[int]:
    """Live descendants of `pid`, from /proc."""
    parent: dict[int, int] = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        parent[int(p.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, pp in parent.items() if pp in frontier} - out
        out |= frontier
    return out


# ---------------------------------------------------------------------------------------------
# The span contract for one statement.

@dataclass
class Stmt:
    """One statement the server executed, as its CLIENT span must describe it.

    text: the sanitised db.query.text (literals -> ?, $n kept); None = the agent never saw the
          text (prepared before it started): name EXECUTE, no db.query.text,
          db.postgresql.statement_text_unknown=true.
    rows: db.response.returned_rows (SELECTs).
    sqlstate: the error's SQLSTATE: span status ERROR, error.type and db.response.status_code.
    pattern: for texts with more than one correct form (pgbench -M simple's negative numbers).
    """
    op: str
    table: str | None = None
    text: str | None = ""
    rows: int | None = None
    sqlstate: str | None = None
    pattern: str | None = None  # instead of `text`: a regex the normalised text must match

    @property
    def name(self) -> str:
        if self.text is None:
            return "EXECUTE"
        return f"{self.op} {self.table}" if self.table else self.op

    def describe(self) -> str:
        err = f" -> {self.sqlstate}" if self.sqlstate else ""
        text = f"/{self.pattern}/" if self.pattern else repr(self.text)
        return f"{self.name!r} {text}{err}"


def norm_sql(text: str) -> str:
    """Whitespace and a trailing ';' are not part of a statement's identity."""
    return " ".join(text.split()).rstrip(";").rstrip()


def collapse_in(text: str) -> str:
    """`IN (?, ?, ?)` -> `IN (?)`: the contract lets the agent collapse IN lists."""
    return re.sub(r"\bIN \(\?(?:, \?)*\)", "IN (?)", text, flags=re.IGNORECASE)


def text_matches(got: object, expected: str, pattern: str | None = None) -> bool:
    if not isinstance(got, str):
        return False
    if pattern is not None:
        return re.fullmatch(pattern, norm_sql(got)) is not None
    g, e = norm_sql(got), norm_sql(expected)
    return g == e or g == collapse_in(e)


def statement_matches(s: ReceivedSpan, st: Stmt) -> bool:
    """Identity of a span for matching: name, text, error. The full check is assert_statement."""
    a = s.attributes
    if s.name != st.name or a.get("db.response.status_code") != st.sqlstate:
        return False
    if st.text is None:
        return "db.query.text" not in a
    return text_matches(a.get("db.query.text"), st.text, st.pattern)


def assert_statement(s: ReceivedSpan, st: Stmt, *, db: str | None, port: int, pid: int) -> None:
    """Every attribute of one statement's CLIENT span. db=None: the agent cannot know the
    database (the connection's start-up was before it ran): db.namespace is then optional."""
    __tracebackhide__ = True
    a, ctx = s.attributes, f"\n{fmt_span(s)}"
    assert s.kind == KIND_CLIENT, f"a statement's span must be CLIENT{ctx}"
    assert s.pid == pid, f"span from pid {s.pid}, expected the client's pid {pid}{ctx}"
    assert s.name == st.name, f"expected name {st.name!r}{ctx}"
    expected = {"db.system.name": "postgresql", "server.address": LOCALHOST, "server.port": port,
                "network.peer.address": LOCALHOST, "network.peer.port": port}
    if db is not None:
        expected["db.namespace"] = db
    elif "db.namespace" in a:
        assert type(a["db.namespace"]) is str and a["db.namespace"], f"db.namespace{ctx}"
    if st.text is None:
        expected["db.postgresql.statement_text_unknown"] = True
        assert "db.query.text" not in a, f"db.query.text for a statement never seen{ctx}"
        assert a.get("db.operation.name", "EXECUTE") == "EXECUTE", f"db.operation.name{ctx}"
    else:
        expected["db.operation.name"] = st.op
        assert text_matches(a.get("db.query.text"), st.text, st.pattern), (
            f"db.query.text: expected {st.pattern or st.text!r}"
            f"{' (or IN (?))' if ' IN (' in st.text else ''}{ctx}")
        assert a.get("db.postgresql.statement_text_unknown") in (None, False), (
            f"statement_text_unknown although the text is known{ctx}")
    if st.table is not None:
        expected["db.collection.name"] = st.table
    else:
        assert "db.collection.name" not in a, f"db.collection.name for {st.describe()}{ctx}"
    if st.sqlstate is not None:
        expected.update({"db.response.status_code": st.sqlstate, "error.type": st.sqlstate})
        assert s.status_code == STATUS_ERROR, f"a failed statement's span must be ERROR{ctx}"
    else:
        assert s.status_code == STATUS_UNSET, f"status must be UNSET{ctx}"
        assert "db.response.status_code" not in a and "error.type" not in a, f"error attrs{ctx}"
    if st.rows is not None:
        expected["db.response.returned_rows"] = st.rows
    assert_attrs(s, expected)


def match_statements(spans: list[ReceivedSpan], expected: list[Stmt], *, db: str | None,
                     port: int, pid: int, sequential: bool = True) -> list[ReceivedSpan]:
    """The spans of `expected` (in that order), exactly: one span each, none left over.

    sequential: each statement waited for the previous one's result, so each span starts after
    the previous one ended. Otherwise (pipelines) starts and ends must merely not go backwards.
    """
    __tracebackhide__ = True
    pool = sorted(spans, key=lambda x: (x.start_ns, x.end_ns))
    picked: list[ReceivedSpan] = []
    for i, st in enumerate(expected):
        found = next((x for x in pool if statement_matches(x, st)), None)
        assert found is not None, (
            f"no span for statement #{i} {st.describe()}\nexpected, in order:\n  "
            + "\n  ".join(e.describe() for e in expected)
            + f"\nspans (unmatched so far):\n{fmt_spans(pool)}")
        pool.remove(found)
        picked.append(found)
    assert not pool, f"spans for statements nobody executed:\n{fmt_spans(pool)}"
    for x, st in zip(picked, expected):
        assert_statement(x, st, db=db, port=port, pid=pid)
    for a, b in zip(picked, picked[1:]):
        if sequential:
            assert a.end_ns <= b.start_ns, (
                f"statements out of order or overlapping:\n{fmt_span(a)}\n{fmt_span(b)}")
        else:
            assert a.start_ns <= b.start_ns and a.end_ns <= b.end_ns, (
                f"pipelined statements out of order:\n{fmt_span(a)}\n{fmt_span(b)}")
    return picked


def wait_for_log(pg: PgServer, app: str, since: int, n: int) -> list[LoggedStatement]:
    """The server's record of what `app` executed: exactly `n` statements (simple-protocol
    multi-statement queries count once)."""
    __tracebackhide__ = True
    got = pg.wait_statements(app, since, n)
    time.sleep(0.05)
    got = pg.statements(app, since)
    assert len(got) == n, (f"the server logged {len(got)} statements from {app}, expected {n}:\n"
                           + "\n".join(f"  {g.kind} {g.prepared or ''}: {g.text}" for g in got))
    return got


# ---------------------------------------------------------------------------------------------
# Traffic: the test's clients, each a process the test owns (its spans are the test's).

PSQL = str(PG_BIN / "psql")
PGBENCH = str(PG_BIN / "pgbench")


@dataclass
class PgRun:
    """A finished client: its pid, application_name, exit code, and (pg_client.py) one row per
    statement execution it reported."""
    pid: int
    app: str
    rc: int
    rows: list[dict]
    stdout: str
    stderr: str = ""
    backend_pid: int | None = None


def use_database(scn: Scenario, pg: PgServer, schema: str = "") -> str:
    """A fresh database for this test (created over the Unix socket: no spans)."""
    scn.use_server(pg, pg.port)
    return pg.create_database(schema)


def _app_name() -> str:
    return f"e2e-{uuid.uuid4().hex[:12]}"


def pg_client(scn: Scenario, pg: PgServer, db: str, plan: list[dict], timeout: float = 60) -> PgRun:
    """apps/pg_client.py running `plan` on one connection; fails unless it exits 0."""
    app = _app_name()
    proc, rc = run(scn._name("pg_client"), [PYTHON, str(APPS / "pg_client.py"), "--dsn",
                                            pg.dsn(db, app), json.dumps(plan)],
                   scn.workdir, timeout=timeout, env=app_env())
    scn._own(proc)
    out = proc.stdout()
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert rc == 0 and lines and "backend_pid" in lines[0], (
        f"pg_client failed (rc={rc})\n{proc.tail()}")
    return PgRun(proc.pid, app, rc, lines[1:], out, proc.stderr(), lines[0]["backend_pid"])


def psql(scn: Scenario, pg: PgServer, db: str, sql: str, expect_rc: int = 0) -> PgRun:
    """psql -c SQL over TCP: the whole string goes to the server as ONE simple Query."""
    app = _app_name()
    proc, rc = run(scn._name("psql"), [PSQL, "-X", "-A", "-t", "-c", sql], scn.workdir,
                   timeout=30, env=app_env(pg.client_env(db, app)))
    scn._own(proc)
    assert rc == expect_rc, f"psql exited {rc}, expected {expect_rc}\n{proc.tail()}"
    return PgRun(proc.pid, app, rc, [], proc.stdout(), proc.stderr())


def pgbench(scn: Scenario, pg: PgServer, db: str, *args: str, timeout: float = 120) -> PgRun:
    """pgbench over TCP (one process, -j 1); fails unless it exits 0."""
    app = _app_name()
    proc, rc = run(scn._name("pgbench"), [PGBENCH, *args], scn.workdir, timeout=timeout,
                   env=app_env(pg.client_env(db, app)))
    scn._own(proc)
    assert rc == 0, f"pgbench failed (rc={rc})\n{proc.tail()}"
    return PgRun(proc.pid, app, rc, [], proc.stdout(), proc.stderr())


def pgbench_processed(r: PgRun) -> int:
    m = re.search(r"number of transactions actually processed: (\d+)/(\d+)", r.stdout)
    assert m and m.group(1) == m.group(2), f"pgbench did not process every transaction:\n{r.stdout}"
    return int(m.group(1))
