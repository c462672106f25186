#!/usr/bin/env python3
"""Record real PostgreSQL connections for the postgres parser's tests.

Runs a real PostgreSQL 15 server (initdb in a temporary directory, scram-sha-256 password
authentication on TCP) and real clients (psql, psycopg 3, pgbench) with a recording TCP proxy
in between. For each scenario it writes:

  NAME.c2s     bytes client -> server (frontend messages), exactly as relayed
  NAME.s2c     bytes server -> client (backend messages)
  NAME.segs    the order in which the proxy relayed them: one line per read, "c LEN" or "s LEN"
  NAME.golden  expected parser events, one JSON object per line, computed by the small
               whole-stream simulator at the bottom of this file (independent of the Rust code)

Golden events:
  {"ev": "start", "seq", "at": c2s offset of the first byte of the message the statement's
   span starts at (the Query, or the first message of the Execute's group), "req_end": c2s
   offset of the last byte of the message that made the statement known (Query, Execute, or a
   failing Parse), "trigger": s2c offset of the last byte of the backend answer that starts
   the span (the header of a RowDescription/DataRow/Copy*Response, the whole of the others),
   "text", "prepared_name", "database", "user"}
  {"ev": "end", "seq", "at": s2c offset of the last byte of the ending answer,
   "outcome": "complete"|"empty"|"error", "tag", "rows", "sqlstate", "severity"}

Usage: record.py [OUTDIR]   (default: the directory of this script). Needs the PostgreSQL 15
binaries in /usr/lib/postgresql/15/bin, psql, pgbench and psycopg 3; runs the server as the
`postgres` user (initdb refuses root).
"""

import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque

OUT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))
PGBIN = "/usr/lib/postgresql/15/bin"
PASSWORD = "app-password"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    """Recording proxy: relays every connection to the server and logs every read."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []  # [c2s, s2c, segs] per connection, in accept order
        self.threads = []
        self.stopping = False
        self.acceptor = threading.Thread(target=self.accept, daemon=True)
        self.acceptor.start()

    def accept(self):
        self.sock.settimeout(0.2)
        while not self.stopping:
            try:
                client, _ = self.sock.accept()
            except OSError:
                continue
            rec = [bytearray(), bytearray(), []]
            self.conns.append(rec)
            t = threading.Thread(target=self.relay, args=(client, rec), daemon=True)
            t.start()
            self.threads.append(t)

    def relay(self, client, rec):
        server = socket.create_connection(("127.0.0.1", self.upstream))
        ends = {client: server, server: client}
        open_ = {client, server}
        while open_:
            ready, _, _ = select.select(list(open_), [], [], 30)
            if not ready:
                break
            for s in ready:
                data = s.recv(65536)
                if not data:
                    open_.discard(s)
                    try:
                        ends[s].shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    continue
                side = "c" if s is client else "s"
                rec[0 if side == "c" else 1].extend(data)
                rec[2].append((side, len(data)))
                ends[s].sendall(data)
        client.close()
        server.close()

    def finish(self):
        for t in self.threads:
            t.join(30)
        self.stopping = True
        self.acceptor.join(5)
        self.sock.close()
        return self.conns


def save(name, c2s, s2c, segs):
    base = os.path.join(OUT, name)
    open(base + ".c2s", "wb").write(c2s)
    open(base + ".s2c", "wb").write(s2c)
    open(base + ".segs", "w").write("".join(f"{d} {n}\n" for d, n in segs))
    events = golden(bytes(c2s), bytes(s2c))
    open(base + ".golden", "w").write("".join(json.dumps(e) + "\n" for e in events))
    starts = sum(1 for e in events if e["ev"] == "start")
    print(f"{name}: c2s={len(c2s)} s2c={len(s2c)} reads={len(segs)} statements={starts}")


def record(name, port, run, pick="largest"):
    """Run `run(proxy_port)` and save one of the connections it made."""
    rec = Recorder(port)
    run(rec.port)
    conns = rec.finish()
    assert conns, f"{name}: no connection"
    if pick == "largest":
        c = max(conns, key=lambda r: len(r[0]) + len(r[1]))
    else:
        assert len(conns) == 1, f"{name}: {len(conns)} connections"
        c = conns[0]
    save(name, c[0], c[1], c[2])
    return c


# ---------------------------------------------------------------- server


class Server:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="pgrec-")
        shutil.chown(self.dir, "postgres")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        run_as_postgres([f"{PGBIN}/initdb", "-D", self.data, "-U", "postgres",
                         "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8",
                         "--locale=C"], quiet=True)
        self.proc = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", f"{PGBIN}/postgres", "-D", self.data,
             "-c", "listen_addresses=127.0.0.1", "-p", str(self.port), "-k", self.dir,
             "-c", "fsync=off", "-c", "ssl=off"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "log"), "w"))
        for _ in range(100):
            if subprocess.run(["psql", "-h", self.dir, "-p", str(self.port), "-U", "postgres",
                               "-c", "select 1"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        self.admin(f"CREATE USER app PASSWORD '{PASSWORD}'")
        for db in ["appdb", "app", "bench"]:
            self.admin(f"CREATE DATABASE {db} OWNER app")

    def admin(self, sql):
        subprocess.run(["psql", "-h", self.dir, "-p", str(self.port), "-U", "postgres",
                        "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True, capture_output=True)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def run_as_postgres(cmd, quiet=False):
    subprocess.run(["runuser", "-u", "postgres", "--"] + cmd, check=True,
                   capture_output=quiet)


def env():
    e = dict(os.environ, PGPASSWORD=PASSWORD)
    for k in ["PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSSLMODE"]:
        e.pop(k, None)
    return e


# ---------------------------------------------------------------- scenarios


def psql(port, *args, sslmode="disable", stdin=None, db="appdb"):
    cmd = ["psql", f"host=127.0.0.1 port={port} user=app dbname={db} sslmode={sslmode}",
           "-X", "-q"] + list(args)
    subprocess.run(cmd, env=env(), input=stdin, capture_output=True, check=False)


def scenario_psql_simple(port):
    psql(port,
         "-c", "CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, name text, price numeric)",
         "-c", "INSERT INTO items VALUES (1, 'apple', 1.5), (2, 'pear', 2.25)",
         "-c", "SELECT id, name FROM items WHERE price > 1 ORDER BY id",
         # Several statements in one Query message; quotes and comments hide semicolons.
         "-c", "SELECT 1; SELECT 'a;b' AS s /* ; */; UPDATE items SET price = price + 1 WHERE id = 2",
         # The second statement fails: the third never runs.
         "-c", "SELECT 1; SELECT 1/0; SELECT 3",
         # A syntax error: the server parses the whole string first and runs nothing.
         "-c", "SELECT 1; SELEC 2; SELECT 3",
         "-c", "SELECT * FROM missing_table",
         "-c", "-- only a comment",
         "-c", "DROP TABLE items")


PSQL_COPY_SCRIPT = """\
CREATE TABLE IF NOT EXISTS rows (id int, label text);
COPY rows (id, label) FROM STDIN;
1\tone
2\ttwo
3\tthree
\\.
COPY rows TO STDOUT;
COPY rows (id, label) FROM STDIN;
4\tfour
not-a-number\tfive
\\.
SELECT count(*) FROM rows;
DROP TABLE rows;
"""


def scenario_psql_copy_ssl(port):
    # sslmode=prefer: psql asks for TLS first (SSLRequest), the server (ssl=off) answers N.
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as f:
        f.write(PSQL_COPY_SCRIPT)
        f.flush()
        psql(port, "-f", f.name, sslmode="prefer")


def psycopg_connect(port, **kw):
    import psycopg
    args = dict(host="127.0.0.1", port=port, user="app", password=PASSWORD,
                sslmode="disable", autocommit=True)
    args.update(kw)
    return psycopg.connect(**args)


def scenario_psycopg_simple(port):
    import psycopg
    # No dbname: the server (and the parser) default the database to the user name.
    with psycopg_connect(port) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS kv (k text PRIMARY KEY, v int)")
        conn.execute("INSERT INTO kv VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
                     ("a", 1))
        rows = conn.execute("SELECT k, v FROM kv WHERE v >= %s", (0,)).fetchall()
        assert rows == [("a", 1)], rows
        # Client-side binding: simple Query messages.
        cur = psycopg.ClientCursor(conn)
        cur.execute("SELECT %s::text, %s::int", ("it's", 42))
        cur.fetchall()
        try:
            conn.execute("SELECT v / %s FROM kv", (0,))
        except psycopg.errors.DivisionByZero:
            pass
        conn.execute("DROP TABLE kv")


def scenario_psycopg_prepared(port):
    with psycopg_connect(port, dbname="appdb") as conn:
        conn.execute("CREATE TEMP TABLE t (id int, name text)")
        for i in range(3):
            conn.execute("INSERT INTO t VALUES (%s, %s)", (i, f"n{i}"), prepare=True)
        for i in range(3):
            conn.execute("SELECT name FROM t WHERE id = %s", (i,), prepare=True).fetchall()
        try:
            conn.execute("SELECT * FROM no_such_table WHERE id = %s", (1,), prepare=True)
        except Exception:
            pass


def scenario_psycopg_pipeline(port):
    import psycopg
    with psycopg_connect(port, dbname="appdb") as conn:
        conn.execute("CREATE TEMP TABLE p (id int PRIMARY KEY, v text)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO p VALUES (%s, %s)", [(i, f"v{i}") for i in range(5)])
        with conn.pipeline():
            conn.execute("UPDATE p SET v = %s WHERE id = %s", ("x", 1))
            conn.execute("SELECT v FROM p WHERE id = %s", (1,))
            conn.execute("DELETE FROM p WHERE id = %s", (4,))
        # A failing statement inside a pipeline: what follows it in the batch never runs.
        try:
            with conn.pipeline():
                conn.execute("INSERT INTO p VALUES (%s, %s)", (10, "ok"))
                conn.execute("INSERT INTO p VALUES (%s, %s)", (1, "duplicate key"))
                conn.execute("INSERT INTO p VALUES (%s, %s)", (11, "never runs"))
        except psycopg.errors.UniqueViolation:
            pass
        with conn.cursor() as cur:
            with cur.copy("COPY p (id, v) FROM STDIN") as copy:
                for i in range(20, 23):
                    copy.write_row((i, f"c{i}"))
            with cur.copy("COPY p TO STDOUT") as copy:
                for _ in copy:
                    pass
        conn.execute("SELECT count(*) FROM p").fetchone()


def pgbench(port, *args):
    cmd = ["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "app"] + list(args) + ["bench"]
    r = subprocess.run(cmd, env=env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def scenario_pgbench_init(port):
    # Server-side data generation (G): client-side COPY of 100000 rows would make a 10 MB
    # fixture; COPY is covered by the psql and psycopg scenarios.
    pgbench(port, "-i", "-I", "dtGvp", "-s", "1")


def scenario_pgbench_extended(port):
    pgbench(port, "-n", "-c", "1", "-t", "20", "-M", "extended")


def scenario_pgbench_prepared(port):
    pgbench(port, "-n", "-c", "1", "-t", "20", "-M", "prepared")


# ---------------------------------------------------------------- messages


def frontend_messages(c2s):
    """(start, end, type, body) of each frontend message; type "startup" for startup-phase
    messages (body: code + parameters)."""
    out, pos, untyped = [], 0, c2s[:1] == b"\0"
    while pos + 5 <= len(c2s):
        if untyped:
            ln, code = struct.unpack(">II", c2s[pos:pos + 8])
            out.append((pos, pos + ln, "startup", c2s[pos + 4:pos + ln]))
            pos += ln
            if code not in (80877103, 80877104):
                untyped = False
            continue
        ln = struct.unpack(">I", c2s[pos + 1:pos + 5])[0]
        out.append((pos, pos + 1 + ln, c2s[pos:pos + 1].decode(), c2s[pos + 5:pos + 1 + ln]))
        pos += 1 + ln
    assert pos == len(c2s), f"frontend stream ends mid-message at {pos} of {len(c2s)}"
    return out


def backend_messages(s2c, encryption_replies):
    out, pos = [], 0
    for _ in range(encryption_replies):
        assert s2c[pos:pos + 1] == b"N", "only plaintext connections are recorded"
        out.append((pos, pos + 1, "reply", b""))
        pos += 1
    while pos + 5 <= len(s2c):
        ln = struct.unpack(">I", s2c[pos + 1:pos + 5])[0]
        out.append((pos, pos + 1 + ln, s2c[pos:pos + 1].decode(), s2c[pos + 5:pos + 1 + ln]))
        pos += 1 + ln
    assert pos == len(s2c), f"backend stream ends mid-message at {pos} of {len(s2c)}"
    return out


def cstrings(b):
    return [p.decode("utf-8", "replace") for p in b.split(b"\0")]


def split_sql(q):
    """Statements of a simple query (a plain re-implementation: quotes, dollar quotes,
    comments, parentheses)."""
    parts, cur, i, depth = [], "", 0, 0
    while i < len(q):
        c = q[i]
        if q.startswith("--", i):
            j = q.find("\n", i)
            j = len(q) if j < 0 else j
            cur += q[i:j]
            i = j
        elif q.startswith("/*", i):
            j = q.find("*/", i + 2)
            j = len(q) if j < 0 else j + 2
            cur += q[i:j]
            i = j
        elif c in "'\"":
            j = i + 1
            while j < len(q):
                if q[j] == c and q[j + 1:j + 2] == c:
                    j += 2
                elif q[j] == c:
                    break
                else:
                    j += 1
            cur += q[i:j + 1]
            i = j + 1
        elif c == "$" and q[i + 1:i + 2] == "$":
            j = q.find("$$", i + 2)
            j = len(q) if j < 0 else j + 2
            cur += q[i:j]
            i = j
        elif c == ";" and depth == 0:
            parts.append(cur)
            cur = ""
            i += 1
        else:
            depth += (c == "(") - (c == ")")
            cur += c
            i += 1
    parts.append(cur)

    def empty(p):
        p = p.strip()
        while p.startswith("--") or p.startswith("/*"):
            p = (p.split("\n", 1)[1] if p.startswith("--") and "\n" in p else
                 "" if p.startswith("--") else p[p.find("*/") + 2:] if "*/" in p else "").strip()
        return not p

    return [p.strip() for p in parts if not empty(p)]


# ---------------------------------------------------------------- golden simulator


def golden(c2s, s2c):
    """The events the parser must emit, from a whole-stream simulation of the server's
    answering order (PostgreSQL protocol chapter, "Message Flow")."""
    fe = frontend_messages(c2s)
    user = database = None
    ops = deque()
    statements, portals = {}, {}
    group, next_group = None, 0
    prev_type = None
    encryption = 0
    for (start, end, t, body) in fe:
        if t == "startup":
            code = struct.unpack(">I", body[:4])[0]
            if code in (80877103, 80877104):
                encryption += 1
                ops.append({"kind": "enc"})
            else:
                kv = cstrings(body[4:])
                params = dict(zip(kv[0::2], kv[1::2]))
                user = params.get("user")
                database = params.get("database", user)
                ops.append({"kind": "startup"})
            continue
        after_sync, prev_type = prev_type == "S", t
        if t == "Q":
            group = None
            ops.append({"kind": "Q", "at": start, "end": end - 1,
                        "stmts": deque(split_sql(cstrings(body)[0])),
                        "text": cstrings(body)[0], "started": 0, "failed": False})
        elif t in "PBDC":
            if group is None:
                group = (next_group, start)
                next_group += 1
            if t == "P":
                name, text = cstrings(body)[:2]
                statements[name] = text
                ops.append({"kind": "P", "group": group[0], "at": group[1], "end": end - 1,
                            "name": name, "text": text})
            elif t == "B":
                portal, stmt = cstrings(body)[:2]
                portals[portal] = (stmt, statements.get(stmt))
                ops.append({"kind": "B", "group": group[0]})
            else:
                if t == "C":
                    kind, name = body[:1], cstrings(body[1:])[0]
                    (statements if kind == b"S" else portals).pop(name, None)
                ops.append({"kind": t, "group": group[0]})
        elif t == "E":
            if group is None:
                group = (next_group, start)
                next_group += 1
            portal = cstrings(body)[0]
            bound = portals.get(portal)
            ops.append({"kind": "E", "group": group[0], "at": group[1], "end": end - 1,
                        "name": bound[0] if bound else None, "text": bound[1] if bound else None})
            group = None
        elif t == "S":
            group = None
            ops.append({"kind": "S"})
        elif t == "F":
            group = None
            ops.append({"kind": "F"})
        elif t in "dcf" and after_sync:
            assert ops[-1]["kind"] == "S"
            ops.pop()

    events, seq = [], 0
    cur = None  # the open statement: {"seq", "rows"}

    def emit_start(op, text, name, trigger):
        nonlocal seq, cur
        events.append({"ev": "start", "seq": seq, "at": op["at"], "req_end": op["end"],
                       "trigger": trigger, "text": text, "prepared_name": name,
                       "database": database, "user": user})
        cur = {"seq": seq, "rows": 0}
        seq += 1

    def begin(trigger, whole=False):
        if cur is not None:
            return True
        op = ops[0]
        if op["kind"] == "E":
            emit_start(op, op["text"], op["name"], trigger)
            return True
        assert op["kind"] == "Q", op
        if op["failed"]:
            return False
        several = len(op["stmts"]) >= 2
        if op["started"] == 0 and whole and several:
            text = op["text"].strip()
            op["stmts"].clear()
        elif op["stmts"]:
            text = op["stmts"].popleft()
        elif op["started"] == 0:
            text = op["text"].strip()
        else:
            return False
        op["started"] += 1
        emit_start(op, text, None, trigger)
        return True

    def end(at, **outcome):
        nonlocal cur
        events.append(dict({"ev": "end", "seq": cur["seq"], "at": at}, **outcome))
        cur = None

    def discard_until_sync():
        while ops and ops[0]["kind"] != "S":
            ops.popleft()

    for (start, mend, t, body) in backend_messages(s2c, encryption):
        header_end, last = start + 4, mend - 1
        if t == "reply":
            assert ops.popleft()["kind"] == "enc"
        elif t in "RSKvNAdc":
            continue
        elif t == "Z":
            assert ops.popleft()["kind"] in ("Q", "S", "F", "startup")
            assert cur is None, "statement without a final answer"
        elif t in "123":
            assert ops.popleft()["kind"] == {"1": "P", "2": "B", "3": "C"}[t]
        elif t == "t":
            assert ops[0]["kind"] == "D"
        elif t == "n":
            assert ops.popleft()["kind"] == "D"
        elif t == "T" and ops[0]["kind"] == "D":
            ops.popleft()
        elif t in "TDGHW":
            if begin(header_end) and t == "D":
                cur["rows"] += 1
        elif t in "CIs":
            if begin(last):
                if t == "I":
                    end(last, outcome="empty")
                else:
                    tag = cstrings(body)[0] if t == "C" else "SUSPENDED"
                    end(last, outcome="complete", tag=tag, rows=cur["rows"])
            if ops[0]["kind"] == "E":
                ops.popleft()
        elif t == "E":
            fields = {}
            for f in body.split(b"\0"):
                if f:
                    fields.setdefault(chr(f[0]), f[1:].decode())
            err = dict(outcome="error", sqlstate=fields["C"], severity=fields.get("V", fields["S"]))
            head = ops[0]["kind"]
            if head == "E":
                begin(last)
                end(last, **err)
                ops.popleft()
                discard_until_sync()
            elif head == "Q":
                if begin(last, whole=fields["C"] == "42601"):
                    end(last, **err)
                ops[0]["failed"] = True
            elif head in "PBDC":
                failed = ops.popleft()
                blamed = None
                for op in ops:
                    if op["kind"] == "S":
                        break
                    if op["kind"] == "E" and op["group"] == failed["group"]:
                        blamed = op
                        break
                if blamed is None and head == "P":
                    blamed = failed
                if blamed is not None:
                    emit_start(blamed, blamed["text"], blamed["name"], last)
                    end(last, **err)
                discard_until_sync()
        elif t == "V":
            pass
        else:
            raise AssertionError(f"unexpected backend message {t!r}")
    assert cur is None
    return events


# ---------------------------------------------------------------- cutting


def cut_midstream(name, src, after_ready):
    """A copy of fixture `src` that starts after its `after_ready`-th ReadyForQuery, as if the
    agent had started then: no startup, no Parse of the statements executed afterwards."""
    c2s = open(os.path.join(OUT, src + ".c2s"), "rb").read()
    s2c = open(os.path.join(OUT, src + ".s2c"), "rb").read()
    segs = [(l.split()[0], int(l.split()[1])) for l in open(os.path.join(OUT, src + ".segs"))]
    fe = frontend_messages(c2s)
    encryption = sum(1 for m in fe if m[2] == "startup" and m[3][:4] in (
        struct.pack(">I", 80877103), struct.pack(">I", 80877104)))
    readies = [m for m in backend_messages(s2c, encryption) if m[2] == "Z"]
    s_cut = readies[after_ready - 1][1]
    # Replay the reads to find how much the client had sent when that byte was relayed.
    done = {"c": 0, "s": 0}
    for side, n in segs:
        if side == "s" and done["s"] + n >= s_cut:
            assert done["s"] + n == s_cut, "cut point must end a read"
            done["s"] += n
            break
        done[side] += n
    c_cut = done["c"]
    # Keep the reads after the cut point.
    rest, seen = [], {"c": 0, "s": 0}
    for side, n in segs:
        lo, hi = seen[side], seen[side] + n
        seen[side] = hi
        cut = c_cut if side == "c" else s_cut
        if hi > cut:
            rest.append((side, hi - max(lo, cut)))
    save(name, c2s[c_cut:], s2c[s_cut:], rest)


def main():
    os.makedirs(OUT, exist_ok=True)
    server = Server()
    try:
        p = server.port
        record("psql_simple", p, scenario_psql_simple, pick="only")
        record("psql_copy_ssl", p, scenario_psql_copy_ssl, pick="only")
        record("psycopg_simple", p, scenario_psycopg_simple, pick="only")
        record("psycopg_prepared", p, scenario_psycopg_prepared, pick="only")
        record("psycopg_pipeline", p, scenario_psycopg_pipeline, pick="only")
        record("pgbench_init", p, scenario_pgbench_init)
        record("pgbench_extended", p, scenario_pgbench_extended)
        record("pgbench_prepared", p, scenario_pgbench_prepared)
        # pgbench -M prepared Parses each of its 7 statements (Parse, Sync) when it first runs
        # it (Bind, Describe, Execute, Sync): the first transaction ends with the 15th
        # ReadyForQuery, the startup's included. Cut after the second transaction.
        cut_midstream("pgbench_prepared_midstream", "pgbench_prepared", 22)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
