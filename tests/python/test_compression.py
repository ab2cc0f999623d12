"""permessage-deflate with Python's `websockets` as an independent client: it negotiates the
extension, decodes compressed deliveries and echoes, sends compressed messages crier inflates,
and a zip bomb is closed with 1009. Prints 'N passed, N failed' like a test runner."""

import asyncio
import json
import os
import sys
import urllib.request
import zlib

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

ADDR = os.environ["CRIER_ADDR"]
ROWS = [{"symbol": f"SYM{i}", "bid": 100 + i, "ask": 101 + i, "venue": "XNAS"} for i in range(12)]


def metric(name):
    text = urllib.request.urlopen(f"http://{ADDR}/metrics", timeout=10).read().decode()
    # The unlabelled line is the sum over shards.
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def publish(topic, data):
    body = json.dumps(data).encode()
    req = urllib.request.Request(f"http://{ADDR}/publish/{topic}", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200, resp.status


async def subscribe(ws, topic):
    await ws.send(json.dumps({"op": "subscribe", "topic": topic, "id": 1}))
    assert json.loads(await ws.recv()) == {"op": "ack", "id": 1}


async def negotiates_and_decodes_deliveries():
    before = metric("crier_messages_deflated_total")
    async with connect(f"ws://{ADDR}/ws") as ws, connect(f"ws://{ADDR}/ws", compression=None) as plain:
        ext = ws.response.headers["Sec-WebSocket-Extensions"]
        assert ext.startswith("permessage-deflate; server_no_context_takeover"), ext
        assert "Sec-WebSocket-Extensions" not in plain.response.headers, plain.response.headers
        await subscribe(ws, "py")
        await subscribe(plain, "py")
        publish("py", {"rows": ROWS})
        got = json.loads(await ws.recv())
        assert got["data"] == {"rows": ROWS}, got
        assert json.loads(await plain.recv()) == got
    after = metric("crier_messages_deflated_total")
    assert after == before + 1, (before, after)


async def client_compressed_publish_reaches_subscribers():
    # websockets compresses what it sends (with context takeover unless told otherwise).
    async with connect(f"ws://{ADDR}/ws") as sub, connect(f"ws://{ADDR}/ws") as pub:
        await subscribe(sub, "py2")
        for n in range(3):
            await pub.send(json.dumps({"op": "publish", "topic": "py2", "data": {"n": n, "rows": ROWS}}))
            got = json.loads(await sub.recv())
            assert got["data"] == {"n": n, "rows": ROWS}, got


async def echo_with_a_client_window_offer():
    # An offer with client_max_window_bits=12: crier keeps the client's window and, by its
    # default policy, asks it not to take over context; websockets honours the answer.
    factory = ClientPerMessageDeflateFactory(client_max_window_bits=12)
    async with connect(f"ws://{ADDR}/echo", extensions=[factory], compression=None) as ws:
        ext = ws.response.headers["Sec-WebSocket-Extensions"]
        assert "permessage-deflate" in ext, ext
        for n in range(5):
            text = json.dumps({"n": n, "rows": ROWS})
            await ws.send(text)
            assert await ws.recv() == text
        blob = bytes(range(256)) * 64
        await ws.send(blob)
        assert await ws.recv() == blob


async def zip_bomb_closes_with_1009():
    async with connect(f"ws://{ADDR}/echo", max_size=None) as ws:
        try:
            await ws.send(b"\0" * (8 << 20))  # about 8 KiB compressed; 8 MiB inflated
            await ws.recv()
            raise AssertionError("the bomb was echoed")
        except ConnectionClosedError as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1009, closed


async def main():
    tests = [negotiates_and_decodes_deliveries, client_compressed_publish_reaches_subscribers,
             echo_with_a_client_window_offer, zip_bomb_closes_with_1009]
    passed = failed = 0
    for test in tests:
        try:
            await asyncio.wait_for(test(), 30)
            print(f"ok   {test.__name__}")
            passed += 1
        except Exception as error:  # noqa: BLE001 - report every failure, then fail
            print(f"FAIL {test.__name__}: {error!r}")
            failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
