#!/usr/bin/env python3
"""Memory per idle WebSocket connection: open N upgraded connections to a running crier and
print how much its RSS, the kernel's slab and the TCP socket-buffer pages grew.

    target/release/crier --listen 127.0.0.1:47311 --threads 2 & PID=$!
    python3 bench/idle_rss.py 127.0.0.1 47311 10000 $PID          # no subscriptions
    python3 bench/idle_rss.py 127.0.0.1 47311 10000 $PID 100      # each on one of 100 topics

The client runs in this separate process so its sockets are not counted in crier's RSS. It
needs N + a few open files (the soft limit is raised to the hard one). Only the standard
library: it speaks just enough HTTP to upgrade and checks the 101.
"""
import base64
import os
import resource
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit(f"no VmRSS for pid {pid}")


def slab_kib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Slab:"):
                return int(line.split()[1])
    return 0


def tcp_mem_pages():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1])
    return 0


def upgrade(host, port, path):
    s = socket.create_connection((host, port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    s.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("the server closed a connection during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"no 101: {head.splitlines()[0]!r}")
    return s


def main():
    if len(sys.argv) not in (5, 6):
        raise SystemExit(__doc__)
    host, port, count, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    topics = int(sys.argv[5]) if len(sys.argv) == 6 else 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if count + 16 > hard:
        raise SystemExit(f"{count} connections need {count + 16} open files; the hard limit is {hard}")

    time.sleep(0.5)
    before = (rss_kib(pid), slab_kib(), tcp_mem_pages())
    sockets = []
    for i in range(count):
        path = f"/ws?topic=idle.{i % topics}" if topics else "/ws"
        sockets.append(upgrade(host, port, path))
    time.sleep(2)
    after = (rss_kib(pid), slab_kib(), tcp_mem_pages())

    rss = (after[0] - before[0]) * 1024 / count
    print(f"{count} idle connections" + (f", each subscribed to one of {topics} topics" if topics else ", no subscriptions"))
    print(f"  crier VmRSS   {before[0]} KiB -> {after[0]} KiB: {rss:.0f} B per connection")
    print(f"  kernel Slab   {before[1]} KiB -> {after[1]} KiB: {(after[1] - before[1]) * 1024 / count:.0f} B per connection pair (both ends on loopback)")
    print(f"  TCP mem pages {before[2]} -> {after[2]}")
    for s in sockets:
        s.close()


if __name__ == "__main__":
    main()
