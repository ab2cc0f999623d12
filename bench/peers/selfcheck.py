#!/usr/bin/env python3
"""Protocol v1 self-check for a running broker (a bench peer, or crier).

    python3 bench/peers/selfcheck.py [--strict-raw] ws://127.0.0.1:8090/ws

Starts nothing: it connects to the URL given. Python 3 standard library only
(raw sockets and a minimal WebSocket client). Topic names get a random
per-run prefix, so it can be run again against the same server. Prints
`N passed, M failed` and exits non-zero if anything failed.
"""

import base64
import hashlib
import json
import os
import socket
import struct
import sys
import time
import urllib.parse

TIMEOUT = 3.0
QUIET = 0.3  # how long "nothing arrives" is waited for


class Closed(Exception):
    pass


class WS:
    """A minimal blocking WebSocket client (RFC 6455), enough for the check."""

    def __init__(self, host, port, path, protocols=("crier.v1",)):
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if protocols:
            lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise Closed("connection closed during handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status.split()[1])
        self.headers = {}
        for h in header_lines:
            k, _, v = h.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        if self.status != 101:
            raise Closed(f"handshake refused: {status}")
        want = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        ).decode()
        if self.headers.get("sec-websocket-accept") != want:
            raise Closed("bad Sec-WebSocket-Accept")

    def send_frame(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send_text(self, s):
        self.send_frame(1, s.encode() if isinstance(s, str) else s)

    def send_json(self, obj):
        self.send_text(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))

    def send_binary(self, b):
        self.send_frame(2, b)

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed("connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self, timeout=TIMEOUT):
        """Returns (kind, payload): kind is "text" or "binary"; None on timeout."""
        self.sock.settimeout(timeout)
        parts, kind = [], None
        try:
            while True:
                b0, b1 = self._read(2)
                opcode, n = b0 & 0x0F, b1 & 0x7F
                if n == 126:
                    (n,) = struct.unpack("!H", self._read(2))
                elif n == 127:
                    (n,) = struct.unpack("!Q", self._read(8))
                mask = self._read(4) if b1 & 0x80 else None
                payload = self._read(n)
                if mask:
                    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                if opcode == 8:
                    raise Closed("close frame received")
                if opcode == 9:
                    self.send_frame(10, payload)
                    continue
                if opcode == 10:
                    continue
                if opcode in (1, 2):
                    kind = "text" if opcode == 1 else "binary"
                parts.append(payload)
                if b0 & 0x80:
                    return kind, b"".join(parts)
        except socket.timeout:
            return None
        finally:
            self.sock.settimeout(TIMEOUT)

    def close(self):
        try:
            self.send_frame(8, struct.pack("!H", 1000))
        except OSError:
            pass
        self.sock.close()


def http_post(host, port, path, body):
    with socket.create_connection((host, port), timeout=TIMEOUT) as s:
        req = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body
        s.sendall(req)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        rest = rest[: int(headers["content-length"])]
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body, r = b"", rest
        while True:
            size_line, _, r = r.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            body, r = body + r[:size], r[size + 2 :]
        rest = body
    return status, rest


class Check:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, name, cond, detail=""):
        if cond:
            self.passed += 1
            print(f"  ok    {name}")
        else:
            self.failed += 1
            print(f"  FAIL  {name}  {detail}")
        return cond


def main():
    args = sys.argv[1:]
    strict = "--strict-raw" in args
    args = [x for x in args if x != "--strict-raw"]
    if len(args) != 1 or not args[0].startswith("ws://"):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        sys.exit(2)
    url = urllib.parse.urlsplit(args[0])
    host, port, base = url.hostname, url.port or 80, url.path or "/ws"
    run = base64.b32encode(os.urandom(5)).decode().lower()
    a_topic, slash_topic, ord_topic = f"{run}.a", f"{run}/é?&=%+", f"{run}.order"
    q = urllib.parse.quote
    c = Check()

    def jrecv(ws, timeout=TIMEOUT):
        r = ws.recv(timeout)
        if r is None or r[0] != "text":
            return r, None
        return r, json.loads(r[1])

    # --- connect: A by query (two topics, one needing percent-decoding), B plain
    a = WS(host, port, f"{base}?topic={q(a_topic)}&topic={q(slash_topic, safe='')}")
    c.ok("subprotocol crier.v1 accepted", a.headers.get("sec-websocket-protocol") == "crier.v1", a.headers)
    b = WS(host, port, base, protocols=())
    p = WS(host, port, base)  # publisher, subscribed to nothing

    b.send_json({"op": "subscribe", "topic": a_topic, "id": "sub-1"})
    _, m = jrecv(b)
    c.ok("subscribe with string id -> ack", m == {"op": "ack", "id": "sub-1"}, m)

    # --- JSON publish with numeric id from B (subscribed: gets its own message too)
    # Compact JSON in canonical form (what the load generator sends): every
    # peer must forward it byte for byte. Non-canonical JSON is --strict-raw.
    raw = '{"x":[1,2.5,-3e-7,"é\\"q\\\\",true],"n":null,"s":"héllo 😀\\n"}'
    b.send_text('{"op":"publish","topic":"%s","data":%s,"id":7}' % (a_topic, raw))
    got_b = [jrecv(b) for _ in range(2)]
    acks = [m for _, m in got_b if m and m.get("op") == "ack"]
    msgs_b = [(r, m) for r, m in got_b if m and m.get("op") == "message"]
    c.ok("publish with numeric id -> ack with seq 1", acks == [{"op": "ack", "id": 7, "seq": 1}], got_b)
    c.ok("publisher that is subscribed gets its own message", len(msgs_b) == 1, got_b)
    r, m = jrecv(a)
    c.ok(
        "query subscriber gets message seq 1",
        m is not None and (m["op"], m["topic"], m["seq"]) == ("message", a_topic, 1),
        r,
    )
    c.ok("data delivered byte for byte", r is not None and ('"data":' + raw).encode() in r[1], r)
    c.ok("data parses to what was published", m is not None and m["data"] == json.loads(raw), m)

    if strict:
        # Non-canonical JSON (insignificant whitespace, escapes, 1.0, 1E2) must
        # also come back verbatim. The node-ws peer re-serializes with
        # JSON.stringify and is not expected to pass this.
        weird = '{ "x" : [1.0, 1E2, "\\u00e9\\/\\ud83d\\ude00"] ,"y":{}}'
        raw_topic = f"{run}.raw"
        s = WS(host, port, f"{base}?topic={raw_topic}")
        b.send_text('{"op":"publish", "topic":"%s", "data": %s }' % (raw_topic, weird))
        r, m = jrecv(s)
        c.ok("--strict-raw: non-canonical data verbatim", r is not None and ('"data":' + weird).encode() in r[1], r)
        s.close()
    # --- a few more JSON values, no id: no ack, seq 2,3,4
    for v in ["null", '"str"', "12345678901"]:
        p.send_text('{"op":"publish","topic":"%s","data":%s}' % (a_topic, v))
    seqs, datas = [], []
    for _ in range(3):
        r, m = jrecv(a)
        seqs.append(m and m["seq"])
        datas.append(r and r[1])
    c.ok("seq increments per message: 2,3,4", seqs == [2, 3, 4], seqs)
    c.ok(
        "scalar data (null, string, number) verbatim",
        all(d is not None and ('"data":' + v).encode() in d for d, v in zip(datas, ["null", '"str"', "12345678901"])),
        datas,
    )
    c.ok("publisher not subscribed gets nothing (no id: no ack)", p.recv(QUIET) is None)
    for _ in range(3):
        jrecv(b)  # B's copies of 2,3,4

    # --- binary publish
    payload = bytes(range(256)) * 3
    tb = a_topic.encode()
    p.send_binary(bytes([len(tb)]) + tb + payload)
    want = bytes([len(tb)]) + tb + struct.pack("!Q", 5) + payload
    ra, rb = a.recv(), b.recv()
    c.ok("binary delivery [N][topic][seq BE][payload] (A)", ra == ("binary", want), ra and ra[1][:40])
    c.ok("binary delivery identical to second subscriber (B)", rb == ("binary", want), rb and rb[1][:40])

    # --- HTTP publish
    try:
        status, body = http_post(host, port, "/publish/" + q(a_topic, safe=""), b'{"via":"http","k":[1,2]}')
        c.ok("POST /publish/<topic> -> 200 {\"seq\":6}", status == 200 and json.loads(body) == {"seq": 6}, (status, body))
        r, m = jrecv(a)
        c.ok("HTTP-published data delivered with seq 6",
             m is not None and m["seq"] == 6 and b'"data":{"via":"http","k":[1,2]}' in r[1], r)
        jrecv(b)
    except (OSError, ValueError, IndexError) as e:
        c.ok("POST /publish/<topic>", False, repr(e))

    # --- percent-decoded query topic
    p.send_json({"op": "publish", "topic": slash_topic, "data": {"k": 1}, "id": "p2"})
    _, m = jrecv(p)
    c.ok("publish to other topic -> its own seq starts at 1", m == {"op": "ack", "id": "p2", "seq": 1}, m)
    _, m = jrecv(a)
    c.ok("percent-decoded ?topic= subscription delivers", m is not None and m["topic"] == slash_topic and m["seq"] == 1, m)

    # --- errors; the connection stays open
    cases = [
        ("not json", None, "invalid_json"),
        ('{"op":"publish","topic":', None, "invalid_json"),
        ("[1,2]", None, "invalid_command"),
        ('{"topic":"x","id":"e0"}', "e0", "invalid_command"),
        ('{"op":"frobnicate","topic":"x","id":"e1"}', "e1", "unknown_op"),
        ('{"op":"subscribe","topic":"bad topic","id":2}', 2, "invalid_topic"),
        ('{"op":"subscribe","topic":"a*","id":3}', 3, "invalid_topic"),
        ('{"op":"subscribe","topic":"","id":4}', 4, "invalid_topic"),
        ('{"op":"subscribe","topic":"%s","id":5}' % ("x" * 257), 5, "invalid_topic"),
        ('{"op":"publish","topic":"x","id":6}', 6, "invalid_command"),
    ]
    for text, eid, code in cases:
        p.send_text(text)
        _, m = jrecv(p)
        good = m is not None and m.get("op") == "error" and m.get("code") == code and m.get("id") == eid
        good = good and isinstance(m.get("message"), str) and (eid is not None or "id" not in m)
        c.ok(f"error {code} for {text[:40]!r}", good, m)
    p.send_json({"op": "subscribe", "topic": a_topic, "id": "after-errors"})
    _, m = jrecv(p)
    c.ok("connection still usable after errors", m == {"op": "ack", "id": "after-errors"}, m)

    # --- unsubscribe
    b.send_json({"op": "unsubscribe", "topic": a_topic, "id": 99})
    _, m = jrecv(b)
    c.ok("unsubscribe -> ack", m == {"op": "ack", "id": 99}, m)
    p.send_json({"op": "publish", "topic": a_topic, "data": 1})
    _, m = jrecv(a)
    c.ok("subscriber still gets seq 7", m is not None and m["seq"] == 7, m)
    _, m = jrecv(p)
    c.ok("publisher now subscribed by command gets seq 7", m is not None and m["seq"] == 7, m)
    c.ok("unsubscribed client gets nothing", b.recv(QUIET) is None)

    # --- per-topic order identical for all subscribers
    for ws, i in ((a, "oa"), (b, "ob")):
        ws.send_json({"op": "subscribe", "topic": ord_topic, "id": i})
        jrecv(ws)
    n = 300
    for i in range(n):
        p.send_text('{"op":"publish","topic":"%s","data":[%d,"%s"]}' % (ord_topic, i, "z" * (i % 50)))
    for name, ws in (("A", a), ("B", b)):
        got = []
        for _ in range(n):
            _, m = jrecv(ws)
            if m is None:
                break
            got.append((m["seq"], m["data"][0]))
        c.ok(f"{n} messages in order, seq 1..{n} ({name})", got == [(i + 1, i) for i in range(n)], got[:5])

    # --- a connection that goes away must not break delivery to others
    b.sock.close()
    time.sleep(0.1)
    p.send_json({"op": "publish", "topic": ord_topic, "data": "after", "id": "last"})
    _, m = jrecv(a)
    c.ok("delivery continues after a subscriber disconnects", m is not None and m["seq"] == n + 1, m)

    for ws in (a, p):
        ws.close()
    print(f"{c.passed} passed, {c.failed} failed")
    sys.exit(1 if c.failed else 0)


if __name__ == "__main__":
    main()
