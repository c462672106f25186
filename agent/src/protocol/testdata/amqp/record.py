#!/usr/bin/env python3
"""Record real AMQP 0-9-1 connections (pika <-> RabbitMQ 3.10) for the amqp parser's tests.

Starts a private RabbitMQ node on 127.0.0.1 (its own epmd port, Mnesia and log directories in a
temporary directory), then runs pika clients through a recording TCP proxy. For each recorded
connection it writes:

  NAME.c2s     bytes client -> broker, exactly as relayed
  NAME.s2c     bytes broker -> client
  NAME.segs    the order in which the proxy relayed them: one line per read, "c LEN" or "s LEN"
  NAME.golden  expected parser events, one JSON object per line, computed by the small
               whole-stream parser at the bottom of this file (independent of the Rust code)

Golden events (offsets are into the side's stream; "at" of a start is the first byte of the
method frame, "done_at" the frame-end octet of the frame that completed the message; "at" of an
end is the frame-end octet of the frame that ended it, null when only the TCP close did):
  {"ev": "start", "seq", "side": "c"|"s", "at", "done_at", "op": "publish"|"deliver"|"get",
   "channel", "exchange", "routing_key", "delivery_tag", "redelivered", "message_id",
   "correlation_id", "traceparent", "tracestate", "body_size", "fingerprint", "label"}
  {"ev": "end", "seq", "side", "at", "outcome": "sent"|"acked"|"rejected"|"received"|"aborted",
   "requeue"}
"label" names the message (a hash of its body) so tests can check that the fingerprints of the
published and the delivered copies of one message are equal, and differ between messages.

Usage: record.py [OUTDIR]   (default: the directory of this script). Needs rabbitmq-server
(Debian's 3.10) and pika.
"""

import datetime
import decimal
import hashlib
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

import pika
import pika.data

OUT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))
RABBIT = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- broker


class Broker:
    """A throw-away RabbitMQ node: started directly (not through the /usr/sbin wrapper, which
    switches user and logs to /var/log), stopped by PID together with the epmd it spawned."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="amqp-record-")
        self.port = free_port()
        self.epmd_port = free_port()
        cookie = os.path.join(self.tmp, ".erlang.cookie")
        with open(cookie, "w") as f:
            f.write("AMQPRECORDERCOOKIE")
        os.chmod(cookie, 0o400)
        plugins = os.path.join(self.tmp, "enabled_plugins")
        with open(plugins, "w") as f:
            f.write("[].")
        env = dict(os.environ)
        env.update(
            HOME=self.tmp,
            RABBITMQ_NODENAME=f"rabbit_rec{self.port}@localhost",
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(free_port()),
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_EPMD_PORT=str(self.epmd_port),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            RABBITMQ_MNESIA_BASE=os.path.join(self.tmp, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(self.tmp, "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=plugins,
        )
        self.log = open(os.path.join(self.tmp, "server.out"), "w")
        self.proc = subprocess.Popen([RABBIT], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while True:
            try:
                pika.BlockingConnection(self.params()).close()
                break
            except Exception:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise SystemExit("RabbitMQ did not start; see " + self.log.name)
                time.sleep(0.5)

    def params(self, port=None, **kw):
        return pika.ConnectionParameters(host="127.0.0.1", port=port or self.port, **kw)

    def epmd_pid(self):
        out = subprocess.run(["ss", "-ltnpH", f"sport = :{self.epmd_port}"], capture_output=True, text=True).stdout
        for part in out.split("pid=")[1:]:
            return int(part.split(",")[0])
        return None

    def stop(self):
        epmd = self.epmd_pid()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if epmd:
            os.kill(epmd, 15)
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------- recording proxy


class Recorder:
    """Recording proxy for exactly one connection: relay both ways, log every read."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.c2s, self.s2c, self.segs = bytearray(), bytearray(), []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        client, _ = self.sock.accept()
        self.sock.close()
        server = socket.create_connection(("127.0.0.1", self.upstream))
        ends = {client: server, server: client}
        open_ = {client, server}
        while open_:
            ready, _, _ = select.select(list(open_), [], [], 30)
            if not ready:
                break
            for s in ready:
                try:
                    data = s.recv(65536)
                except ConnectionResetError:
                    # pika may reset its socket once close-ok is in; all bytes were relayed.
                    data = b""
                peer = ends[s]
                if not data:
                    open_.discard(s)
                    try:
                        peer.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    continue
                if s is client:
                    self.c2s += data
                    self.segs.append(("c", len(data)))
                else:
                    self.s2c += data
                    self.segs.append(("s", len(data)))
                peer.sendall(data)
        client.close()
        server.close()

    def save(self, name):
        self.thread.join(30)
        base = os.path.join(OUT, name)
        open(base + ".c2s", "wb").write(self.c2s)
        open(base + ".s2c", "wb").write(self.s2c)
        open(base + ".segs", "w").write("".join(f"{d} {n}\n" for d, n in self.segs))
        events = golden(bytes(self.c2s), bytes(self.s2c), self.segs)
        open(base + ".golden", "w").write("".join(json.dumps(e) + "\n" for e in events))
        starts = [e for e in events if e["ev"] == "start"]
        print(f"{name}: c2s={len(self.c2s)} s2c={len(self.s2c)} reads={len(self.segs)} messages={len(starts)}")
        return events


def connect(broker, **kw):
    rec = Recorder(broker.port)
    conn = pika.BlockingConnection(broker.params(port=rec.port, **kw))
    return rec, conn


# ---------------------------------------------------------------- field types

_encode_value = pika.data.encode_value


class Raw:
    """A field value pika cannot produce itself (it encodes only t, I, l, S, x, D, T, F, A, V):
    the type letter and the packed value, sent as-is. RabbitMQ accepts all of these."""

    def __init__(self, letter, packed):
        self.letter, self.packed = letter, packed


def encode_value(pieces, value):
    if isinstance(value, Raw):
        pieces.append(value.letter + value.packed)
        return 1 + len(value.packed)
    if isinstance(value, float):
        pieces.append(b"d" + struct.pack(">d", value))
        return 9
    return _encode_value(pieces, value)


pika.data.encode_value = encode_value

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"

ALL_TYPES = {
    "bool": True,
    "i8": Raw(b"b", struct.pack(">b", -5)),
    "u8": Raw(b"B", struct.pack(">B", 250)),
    "i16": Raw(b"s", struct.pack(">h", -300)),
    "u16": Raw(b"u", struct.pack(">H", 65000)),
    "i32": -70000,
    "u32": Raw(b"i", struct.pack(">I", 4000000000)),
    "i64": 2**40,
    "i64L": Raw(b"L", struct.pack(">q", -(2**50))),
    "f32": Raw(b"f", struct.pack(">f", 1.25)),
    "f64": 2.5,
    "dec": decimal.Decimal("3.14"),
    "str": "long string",
    "bytes": b"\x00\x01\xfe\xff",
    "array": [1, "two", 3.0, None, [True, b"x"], {"k": "v"}],
    "ts": datetime.datetime(2024, 1, 2, 3, 4, 5),
    "table": {"a": {"b": {"c": [1, 2, {"d": None}]}}},
    "void": None,
    # The trace context as a byte array ('x') holding UTF-8: accepted like a string.
    "traceparent": TRACEPARENT.encode(),
    "tracestate": TRACESTATE.encode(),
}


# ---------------------------------------------------------------- scenarios


def setup(broker):
    conn = pika.BlockingConnection(broker.params())
    ch = conn.channel()
    for q in ("q.manual", "q.auto", "q.get", "q.large", "q.ch.a", "q.ch.b"):
        ch.queue_declare(q)
        ch.queue_purge(q)
    ch.exchange_declare("ex.direct", "direct")
    ch.queue_bind("q.manual", "ex.direct", "rk.manual")
    ch.queue_bind("q.auto", "ex.direct", "rk.auto")
    conn.close()


def publisher(broker):
    rec, conn = connect(broker)
    ch = conn.channel()
    ch.queue_declare("q.manual")
    ch.exchange_declare("ex.direct", "direct")
    P = pika.BasicProperties
    ch.basic_publish("", "q.manual", b"msg-1 plain, no properties")
    ch.basic_publish(
        "ex.direct",
        "rk.manual",
        b"msg-2 with trace context",
        P(content_type="text/plain", message_id="m-2", correlation_id="c-2",
          headers={"traceparent": TRACEPARENT, "tracestate": TRACESTATE}),
    )
    ch.basic_publish(
        "",
        "q.manual",
        b'{"msg": 3, "about": "every field type and every property"}',
        P(content_type="application/json", content_encoding="identity", headers=ALL_TYPES, delivery_mode=2,
          priority=5, correlation_id="c-3", reply_to="replies", expiration="600000", message_id="m-3",
          timestamp=1700000000, type="test.event", user_id="guest", app_id="recorder", cluster_id="cl"),
    )
    ch.basic_publish("", "q.manual", b"", P(message_id="m-4-empty"))
    ch.basic_publish("", "q.manual", bytes(range(256)) * 20, P(message_id="m-5", headers={"n": 5}))
    ch.basic_publish("", "q.manual", b"msg-6", P(message_id="m-6"))
    ch.basic_publish("", "q.manual", b"msg-7 left unacked", P(message_id="m-7"))
    conn.close()
    return rec.save("publisher")


def consumer_manual(broker):
    rec, conn = connect(broker)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=20)
    got = []
    for method, props, body in ch.consume("q.manual", inactivity_timeout=1.0):
        if method is None:
            break
        got.append(method)
        if len(got) == 7:
            break
    assert len(got) == 7, got
    tags = [m.delivery_tag for m in got]
    ch.basic_ack(tags[0])
    ch.basic_ack(tags[2], multiple=True)  # acks 2 and 3
    ch.basic_nack(tags[3], requeue=True)  # comes back redelivered
    ch.basic_reject(tags[4], requeue=False)
    ch.basic_nack(tags[5], multiple=False, requeue=False)
    for method, props, body in ch.consume("q.manual", inactivity_timeout=1.0):
        if method is None:
            break
        assert method.redelivered
        ch.basic_ack(method.delivery_tag)
        break
    # Message 7 stays unacknowledged: closing the channel returns it to the queue.
    ch.cancel()
    ch.close()
    conn.close()
    return rec.save("consumer_manual")


def publisher_confirms(broker):
    rec, conn = connect(broker)
    ch = conn.channel()
    ch.confirm_delivery()
    P = pika.BasicProperties
    for i in range(4):
        ch.basic_publish("ex.direct", "rk.auto", f"auto-{i}".encode(), P(message_id=f"a-{i}", correlation_id=f"corr-{i}"))
    try:
        ch.basic_publish("ex.direct", "no.such.key", b"unroutable", P(message_id="unroutable"), mandatory=True)
    except pika.exceptions.UnroutableError:
        pass
    for i in range(4):
        ch.basic_publish("", "q.get", f"get-{i}".encode(), P(message_id=f"g-{i}", headers={"traceparent": TRACEPARENT}))
    conn.close()
    return rec.save("publisher_confirms")


def consumer_autoack(broker):
    rec, conn = connect(broker)
    ch = conn.channel()
    n = 0
    for method, props, body in ch.consume("q.auto", auto_ack=True, inactivity_timeout=1.0):
        if method is None:
            break
        n += 1
        if n == 4:
            break
    assert n == 4
    ch.cancel()
    conn.close()
    return rec.save("consumer_autoack")


def getter(broker):
    rec, conn = connect(broker)
    ch = conn.channel()
    m, _, _ = ch.basic_get("q.get", auto_ack=False)
    ch.basic_ack(m.delivery_tag)
    m, _, _ = ch.basic_get("q.get", auto_ack=True)
    assert m is not None
    m, _, _ = ch.basic_get("q.get", auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=True)
    m, _, _ = ch.basic_get("q.get", auto_ack=False)
    assert m.redelivered
    ch.basic_nack(m.delivery_tag, requeue=False)
    m, _, _ = ch.basic_get("q.get", auto_ack=True)
    assert m is not None
    m, _, _ = ch.basic_get("q.get", auto_ack=False)
    assert m is None  # basic.get-empty
    conn.close()
    return rec.save("getter")


LARGE = bytes((i * 7 + i // 251) & 0xFF for i in range(200_000))


def large_publish(broker):
    # A small frame-max: the 200 kB body goes out in 25 body frames of at most 8 kB each.
    rec, conn = connect(broker, frame_max=8192)
    ch = conn.channel()
    ch.basic_publish("", "q.large", LARGE, pika.BasicProperties(message_id="big"))
    ch.basic_publish("", "q.large", b"small after big", pika.BasicProperties(message_id="small"))
    conn.close()
    return rec.save("large_publish")


def large_consume(broker):
    # Default frame-max (131072): the same body arrives in 2 body frames.
    rec, conn = connect(broker)
    ch = conn.channel()
    n = 0
    for method, props, body in ch.consume("q.large", inactivity_timeout=1.0):
        if method is None:
            break
        ch.basic_ack(method.delivery_tag)
        n += 1
        if n == 2:
            break
    assert n == 2
    conn.close()
    return rec.save("large_consume")


def channels(broker):
    # Several channels on one connection: publishing on 1 and 2 (2 in a transaction), consuming
    # with manual acks on 3 and with no-ack on 4; heartbeats every second while idle.
    rec, conn = connect(broker, heartbeat=1)
    pub_a, pub_b, con_a, con_b = (conn.channel() for _ in range(4))
    got_a, got_b = [], []
    con_a.basic_qos(prefetch_count=10)
    con_a.basic_consume("q.ch.a", lambda c, m, p, b: got_a.append(m), auto_ack=False)
    con_b.basic_consume("q.ch.b", lambda c, m, p, b: got_b.append(m), auto_ack=True)
    pub_b.tx_select()
    for i in range(3):
        pub_a.basic_publish("", "q.ch.a", f"chan-a-{i}".encode(), pika.BasicProperties(message_id=f"ca-{i}"))
        pub_b.basic_publish("", "q.ch.b", f"chan-b-{i}".encode(), pika.BasicProperties(correlation_id=f"cb-{i}"))
        conn.process_data_events(0.2)
    pub_b.tx_commit()
    deadline = time.time() + 5
    while (len(got_a) < 3 or len(got_b) < 3) and time.time() < deadline:
        conn.process_data_events(0.2)
    assert len(got_a) == 3 and len(got_b) == 3, (got_a, got_b)
    con_a.basic_ack(got_a[0].delivery_tag)
    conn.sleep(2.5)  # heartbeats both ways
    con_a.basic_ack(got_a[2].delivery_tag, multiple=True)
    for c in (pub_a, pub_b, con_a, con_b):
        c.close()
    conn.close()
    return rec.save("channels")


def main():
    os.makedirs(OUT, exist_ok=True)
    broker = Broker()
    try:
        setup(broker)
        results = {}
        for scenario in (publisher, consumer_manual, publisher_confirms, consumer_autoack, getter, large_publish,
                         large_consume, channels):
            results[scenario.__name__] = scenario(broker)
        check_fingerprints(results)
    finally:
        broker.stop()


def check_fingerprints(results):
    """Published and delivered copies of one message have one fingerprint; different messages
    have different ones (the golden oracle's fingerprints; the Rust tests check theirs too)."""
    by_label = {}
    for name, events in results.items():
        for e in events:
            if e["ev"] == "start":
                by_label.setdefault(e["label"], set()).add(e["fingerprint"])
    for label, fps in by_label.items():
        assert len(fps) == 1, f"message {label}: fingerprints {fps}"
    all_fps = [next(iter(f)) for f in by_label.values()]
    assert len(set(all_fps)) == len(all_fps), "two messages share a fingerprint"
    print(f"fingerprints: {len(by_label)} distinct messages, copies agree")


# ---------------------------------------------------------------- golden oracle
# A deliberately simple whole-stream parser: it sees both complete streams and the order in
# which the proxy relayed their reads, so it needs no incremental state machine. It is an
# independent statement of what the Rust parser must report.

FRAME_END = 0xCE


def frames(data):
    """(start, type, channel, payload, end offset = the frame-end octet) of every frame."""
    pos = 8 if data.startswith(b"AMQP") else 0
    while pos + 7 <= len(data):
        ftype, chan, size = struct.unpack_from(">BHI", data, pos)
        end = pos + 7 + size
        assert data[end] == FRAME_END, f"frame end at {end}"
        yield pos, ftype, chan, data[pos + 7:end], end
        pos = end + 1
    assert pos == len(data), "trailing bytes"


class Reader:
    def __init__(self, b):
        self.b, self.p = b, 0

    def take(self, n):
        v = self.b[self.p:self.p + n]
        assert len(v) == n
        self.p += n
        return v

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack(">H", self.take(2))[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def u64(self):
        return struct.unpack(">Q", self.take(8))[0]

    def shortstr(self):
        return self.take(self.u8())

    def longstr(self):
        return self.take(self.u32())


SIZES = {b"t": 1, b"b": 1, b"B": 1, b"s": 2, b"u": 2, b"I": 4, b"i": 4, b"l": 8, b"L": 8, b"f": 4, b"d": 8,
         b"D": 5, b"T": 8, b"V": 0}


def table(raw):
    """Top-level entries of a field table: {key: (type letter, raw value)}; nested tables and
    arrays are walked to validate them."""
    r, out = Reader(raw), {}
    while r.p < len(raw):
        key = r.shortstr().decode()
        letter, value = field_value(r)
        out.setdefault(key, (letter, value))
    return out


def field_value(r):
    letter = r.take(1)
    if letter in SIZES:
        return letter, r.take(SIZES[letter])
    assert letter in (b"S", b"x", b"F", b"A"), f"field type {letter}"
    value = r.longstr()
    if letter == b"F":
        table(value)
    elif letter == b"A":
        a = Reader(value)
        while a.p < len(value):
            field_value(a)
    return letter, value


def fnv1a(h, data):
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def fingerprint(exchange, routing_key, props, body_size, body):
    h = 0xCBF29CE484222325
    for part in (exchange, routing_key, props):
        h = fnv1a(h, struct.pack("<I", len(part)) + part)
    h = fnv1a(h, struct.pack("<Q", body_size))
    return fnv1a(h, body[:1024])


def properties(raw):
    r = Reader(raw)
    flags = r.u16()
    assert flags & 1 == 0, "no continuation in the basic class"
    names = ["content_type", "content_encoding", "headers", "delivery_mode", "priority", "correlation_id",
             "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id"]
    props = {}
    for i, name in enumerate(names):
        if not flags & (1 << (15 - i)):
            continue
        if name == "headers":
            props[name] = table(r.longstr())
        elif name in ("delivery_mode", "priority"):
            props[name] = r.u8()
        elif name == "timestamp":
            props[name] = r.u64()
        else:
            props[name] = r.shortstr().decode()
    assert r.p == len(raw)
    return props


def trace_value(headers, key):
    letter, value = headers.get(key, (None, None))
    return value.decode() if letter in (b"S", b"x") else None


def golden(c2s, s2c, segs):
    # When each byte was relayed: read index per side offset.
    bounds = {"c": [], "s": []}
    done = {"c": 0, "s": 0}
    for i, (side, n) in enumerate(segs):
        done[side] += n
        bounds[side].append((done[side], i))

    def read_of(side, offset):
        return next(i for end, i in bounds[side] if end > offset)

    order = []
    for side, data in (("c", c2s), ("s", s2c)):
        for f in frames(data):
            order.append((read_of(side, f[4]), f[4], side, f))
    order.sort(key=lambda x: (x[0], x[1]))

    events, seq = [], 0
    content = {}  # (side, channel) -> message being assembled
    consumers = {}  # (channel, tag) -> no_ack
    awaiting_ok = {}  # channel -> [no_ack] of consumes with a server-named tag
    gets = {}  # channel -> [no_ack] of outstanding basic.get
    pending = {}  # channel -> {delivery_tag: seq}

    def end(s, side, at, outcome, requeue=False):
        events.append(dict(ev="end", seq=s, side=side, at=at, outcome=outcome, requeue=requeue))

    def abort(chan, side, at):
        for tag, s in sorted(pending.pop(chan, {}).items()):
            end(s, side, at, "aborted")

    def complete(m, side, at):
        nonlocal seq
        props, body = m["props"], bytes(m["body"])
        headers = props.get("headers", {})
        events.append(dict(
            ev="start", seq=seq, side=side, at=m["at"], done_at=at, op=m["op"], channel=m["channel"],
            exchange=m["exchange"].decode(), routing_key=m["routing_key"].decode(), delivery_tag=m["tag"],
            redelivered=m["redelivered"], message_id=props.get("message_id"),
            correlation_id=props.get("correlation_id"), traceparent=trace_value(headers, "traceparent"),
            tracestate=trace_value(headers, "tracestate"), body_size=m["size"],
            fingerprint=fingerprint(m["exchange"], m["routing_key"], m["raw_props"], m["size"], body),
            label=hashlib.sha256(body).hexdigest()[:16],
        ))
        if m["op"] == "publish":
            end(seq, side, at, "sent")
        elif m["no_ack"]:
            end(seq, side, at, "received")
        else:
            pending.setdefault(m["channel"], {})[m["tag"]] = seq
        seq += 1

    def settle(chan, tag, multiple, outcome, requeue, at):
        p = pending.get(chan, {})
        hit = [t for t in p if (t <= tag or tag == 0) and multiple or t == tag]
        for t in sorted(hit):
            end(p.pop(t), "c", at, outcome, requeue)

    for _, at, side, (start, ftype, chan, payload, _) in order:
        key = (side, chan)
        if ftype == 8:
            continue
        if ftype == 2:
            m = content.get(key)
            if m is None:
                continue
            r = Reader(payload)
            assert r.u16() == 60
            r.u16()
            m["size"] = r.u64()
            m["raw_props"] = payload[12:]
            m["props"] = properties(payload[12:])
            if m["size"] == 0:
                complete(content.pop(key), side, at)
            continue
        if ftype == 3:
            m = content.get(key)
            if m is None:
                continue
            m["body"] += payload
            if len(m["body"]) == m["size"]:
                complete(content.pop(key), side, at)
            continue
        r = Reader(payload)
        cm = (r.u16(), r.u16())
        msg = dict(at=start, channel=chan, tag=None, redelivered=False, body=bytearray(), no_ack=False)
        if cm == (60, 40) and side == "c":  # publish
            r.u16()
            content[key] = dict(msg, op="publish", exchange=r.shortstr(), routing_key=r.shortstr())
        elif cm == (60, 60) and side == "s":  # deliver
            ctag, tag, redelivered = r.shortstr(), r.u64(), bool(r.u8() & 1)
            content[key] = dict(msg, op="deliver", tag=tag, redelivered=redelivered, exchange=r.shortstr(),
                                routing_key=r.shortstr(), no_ack=consumers.get((chan, ctag), False))
        elif cm == (60, 71) and side == "s":  # get-ok
            tag, redelivered = r.u64(), bool(r.u8() & 1)
            q = gets.get(chan, [])
            content[key] = dict(msg, op="get", tag=tag, redelivered=redelivered, exchange=r.shortstr(),
                                routing_key=r.shortstr(), no_ack=q.pop(0) if q else False)
        elif cm == (60, 50):  # return: its content is not a message we report
            content.pop(key, None)
        elif cm == (60, 72):  # get-empty
            q = gets.get(chan, [])
            if q:
                q.pop(0)
        elif cm == (60, 70) and side == "c":  # get
            r.u16()
            r.shortstr()
            gets.setdefault(chan, []).append(bool(r.u8() & 1))
        elif cm == (60, 20) and side == "c":  # consume
            r.u16()
            r.shortstr()
            ctag, bits = r.shortstr(), r.u8()
            no_ack, no_wait = bool(bits & 2), bool(bits & 8)
            if ctag:
                consumers[(chan, ctag)] = no_ack
            elif not no_wait:
                awaiting_ok.setdefault(chan, []).append(no_ack)
        elif cm == (60, 21) and side == "s":  # consume-ok
            ctag = r.shortstr()
            q = awaiting_ok.get(chan, [])
            if (chan, ctag) not in consumers and q:
                consumers[(chan, ctag)] = q.pop(0)
        elif cm in ((60, 30), (60, 31)) and side == "s":  # cancel from the broker, cancel-ok
            consumers.pop((chan, r.shortstr()), None)
        elif cm == (60, 80) and side == "c":  # ack (the broker's are publisher confirms)
            tag, bits = r.u64(), r.u8()
            settle(chan, tag, bits & 1, "acked", False, at)
        elif cm == (60, 120) and side == "c":  # nack
            tag, bits = r.u64(), r.u8()
            settle(chan, tag, bits & 1, "rejected", bool(bits & 2), at)
        elif cm == (60, 90) and side == "c":  # reject
            tag, bits = r.u64(), r.u8()
            settle(chan, tag, False, "rejected", bool(bits & 1), at)
        elif cm in ((20, 40), (20, 41), (20, 10)):  # channel.close, close-ok, open
            abort(chan, side, at)
            for k in [k for k in consumers if k[0] == chan]:
                del consumers[k]
            awaiting_ok.pop(chan, None)
            gets.pop(chan, None)
        elif cm in ((10, 50), (10, 51)):  # connection.close, close-ok
            for c in sorted(pending):
                abort(c, side, at)
            consumers.clear()
            awaiting_ok.clear()
            gets.clear()
    for c in sorted(pending):
        for tag, s in sorted(pending[c].items()):
            events.append(dict(ev="end", seq=s, side=None, at=None, outcome="aborted", requeue=False))
    return events


if __name__ == "__main__":
    main()
