#!/usr/bin/env python3
"""RSS a hostile client can make crier hold: starts a crier binary on a free 127.0.0.1 port,
runs one bounded attack against it, samples the broker's RSS every 50 ms while the attack runs
and for a moment after, and prints the RSS before, the peak, and the difference.

    python3 bench/abuse_rss.py --crier target/release/crier pipeline
    python3 bench/abuse_rss.py --crier /tmp/old/crier all --json

Attacks (the hardening issue's items 2, 3, 5 and 8):
  pipeline       20 connections each write 1,900 pipelined `GET /crier.js` requests, never read
  pingflood      one WebSocket writes 400,000 masked pings, never reads
  subscriptions  400 WebSockets subscribe to 1,000 distinct 256-byte topic names each
                 (`--name-bytes N` for another name length; prints the RSS per subscription)
  unheard        8 WebSockets publish 256 KiB messages to 200 topics nobody hears, for 5 s

Every attack is bounded in count and time, goes to 127.0.0.1 only, and stops by itself.
Extra broker flags follow `--`: `... subscriptions -- --max-subscriptions 100000`.
Only the standard library.
"""
import argparse
import base64
import functools
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return 0
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_crier(binary, extra):
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--listen", f"127.0.0.1:{port}", "--threads", "2", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("crier did not start listening")


def mask_frame(opcode, payload):
    """A masked client frame (FIN set)."""
    header = bytearray([0x80 | opcode])
    n = len(payload)
    if n < 126:
        header.append(0x80 | n)
    elif n < 65536:
        header.append(0x80 | 126)
        header += n.to_bytes(2, "big")
    else:
        header.append(0x80 | 127)
        header += n.to_bytes(8, "big")
    key = os.urandom(4)
    header += key
    if n == 0:
        return bytes(header)
    # XOR with the repeated key through one big integer: fast enough for 256 KiB payloads.
    repeated = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")
    return bytes(header) + masked


def upgrade(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n")[0].decode(errors="replace"))
    return s


def send_all_until(sock, data, deadline):
    """Writes as much of `data` as the peer takes before `deadline` (non-blocking pieces)."""
    sock.settimeout(0.2)
    view = memoryview(data)
    sent = 0
    while sent < len(view) and time.time() < deadline:
        try:
            sent += sock.send(view[sent : sent + 65536])
        except socket.timeout:
            continue
        except OSError:
            break
    return sent


def attack_pipeline(port, stop_at):
    request = f"GET /crier.js HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    threads = [
        threading.Thread(target=send_all_until, args=(s, request * 1900, stop_at)) for s in socks
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return socks


def attack_pingflood(port, stop_at):
    s = upgrade(port)
    ping = mask_frame(0x9, b"")
    # 400,000 pings in 40 slices of 10,000, so no single buffer is huge.
    for _ in range(40):
        if send_all_until(s, ping * 10_000, stop_at) < len(ping) * 10_000:
            break
    return [s]


def attack_subscriptions(port, stop_at, name_bytes=256):
    """Returns the sockets; `subscriptions_sent` says how many subscribes went out."""
    socks = []
    for c in range(400):
        if time.time() >= stop_at:
            break
        try:
            s = upgrade(port)
        except (OSError, ConnectionError):
            break
        frames = b"".join(
            mask_frame(
                0x1,
                json.dumps({"op": "subscribe", "topic": f"c{c:04d}t{t:04d}".ljust(name_bytes, "x")}).encode(),
            )
            for t in range(1000)
        )
        if send_all_until(s, frames, stop_at) == len(frames):
            attack_subscriptions.sent += 1000
        socks.append(s)
    return socks


attack_subscriptions.sent = 0


def attack_unheard(port, stop_at):
    payload = b"[" + b"1," * (128 * 1024 - 1) + b"1]"

    def flood(index, out):
        try:
            s = upgrade(port)
        except (OSError, ConnectionError):
            return
        out.append(s)
        frames = [
            mask_frame(
                0x1,
                b'{"op":"publish","topic":"unheard.%d","data":' % ((index * 25 + t) % 200)
                + payload
                + b"}",
            )
            for t in range(25)
        ]
        i = 0
        while time.time() < stop_at:
            if send_all_until(s, frames[i % 25], stop_at) == 0:
                break
            i += 1

    socks, threads = [], []
    for index in range(8):
        t = threading.Thread(target=flood, args=(index, socks))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    return socks


ATTACKS = {
    "pipeline": (attack_pipeline, 20),
    "pingflood": (attack_pingflood, 20),
    "subscriptions": (attack_subscriptions, 40),
    "unheard": (attack_unheard, 5),
}


def run(binary, name, extra, name_bytes):
    fn, seconds = ATTACKS[name]
    if name == "subscriptions":
        fn = functools.partial(attack_subscriptions, name_bytes=name_bytes)
        attack_subscriptions.sent = 0
    proc, port = start_crier(binary, extra)
    try:
        time.sleep(0.3)
        before = rss_kib(proc.pid)
        peak = [before]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss_kib(proc.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.time()
        socks = fn(port, started + seconds)
        attack_s = time.time() - started
        time.sleep(1.0)  # let the broker process what it was sent
        done.set()
        sampler.join()
        alive = proc.poll() is None
        for s in socks:
            s.close()
        result = {
            "attack": name,
            "rss_before_kib": before,
            "rss_peak_kib": peak[0],
            "rss_added_mib": round((peak[0] - before) / 1024, 1),
            "attack_seconds": round(attack_s, 1),
            "broker_alive": alive,
        }
        if name == "subscriptions" and attack_subscriptions.sent:
            result["name_bytes"] = name_bytes
            result["subscriptions"] = attack_subscriptions.sent
            result["bytes_per_subscription"] = round(
                (peak[0] - before) * 1024 / attack_subscriptions.sent
            )
        return result
    finally:
        proc.kill()
        proc.wait()


def main():
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crier", default="target/release/crier", help="the broker binary")
    parser.add_argument("--json", action="store_true", help="one JSON object per attack")
    parser.add_argument(
        "--name-bytes",
        type=int,
        default=256,
        help="topic name length for the subscriptions attack (at least 10)",
    )
    parser.add_argument("attack", choices=[*ATTACKS, "all"])
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    names = list(ATTACKS) if args.attack == "all" else [args.attack]
    for name in names:
        result = run(args.crier, name, extra, max(10, args.name_bytes))
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            print(
                f"{name:14} RSS {result['rss_before_kib'] / 1024:7.1f} MiB -> peak "
                f"{result['rss_peak_kib'] / 1024:7.1f} MiB  (+{result['rss_added_mib']} MiB, "
                f"attack {result['attack_seconds']} s, broker alive: {result['broker_alive']})",
                flush=True,
            )
            if "bytes_per_subscription" in result:
                print(
                    f"{'':14} {result['subscriptions']} subscriptions to {result['name_bytes']}-byte "
                    f"names: {result['bytes_per_subscription']} B each",
                    flush=True,
                )


if __name__ == "__main__":
    main()
