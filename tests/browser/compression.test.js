// permessage-deflate in real Chromium: the browser's own offer is accepted (checked through the
// WebSocket's `extensions` property and the handshake response CDP reports), a publish large
// enough to be deflated arrives intact, and the broker counts exactly one deflate for it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { browserAndBroker, newPage, httpPublish, until } from "./lib.js";

const env = browserAndBroker();

async function metric(base, name) {
  const text = await (await fetch(base + "/metrics")).text();
  const line = text.split("\n").find((l) => l.startsWith(name + " "));
  return Number(line.split(" ").pop());
}

test("Chromium negotiates permessage-deflate and decodes a deflated delivery", async () => {
  const page = await newPage(env.browser);
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Network.enable");
  const handshakes = [];
  cdp.on("Network.webSocketHandshakeResponseReceived", (e) => handshakes.push(e.response));
  await page.goto(env.crier.base + "/");
  const topic = "deflate.browser";
  const extensions = await page.evaluate(async ({ ws, topic }) => {
    window.got = [];
    const sock = new WebSocket(ws);
    window.sock = sock;
    await new Promise((resolve, reject) => {
      sock.onopen = resolve;
      sock.onerror = reject;
    });
    const acked = new Promise((resolve) => {
      sock.onmessage = (e) => {
        const msg = JSON.parse(e.data);
        if (msg.op === "ack") resolve();
        else window.got.push(msg);
      };
    });
    sock.send(JSON.stringify({ op: "subscribe", topic, id: 1 }));
    await acked;
    return sock.extensions;
  }, { ws: env.crier.ws, topic });
  assert.match(extensions, /^permessage-deflate; server_no_context_takeover/);
  await until(() => handshakes.length > 0, "CDP saw the handshake response");
  const headers = Object.fromEntries(
    Object.entries(handshakes.at(-1).headers).map(([k, v]) => [k.toLowerCase(), v]));
  assert.match(headers["sec-websocket-extensions"], /permessage-deflate/);

  const before = await metric(env.crier.base, "crier_messages_deflated_total");
  const rows = Array.from({ length: 20 }, (_, i) => ({ symbol: `SYM${i}`, bid: 100 + i, ask: 101 + i }));
  await httpPublish(env.crier.base, topic, { rows });
  await until(() => page.evaluate(() => window.got.length === 1), "the delivery arrived");
  const got = await page.evaluate(() => window.got[0]);
  assert.deepEqual(got.data, { rows });
  assert.equal(await metric(env.crier.base, "crier_messages_deflated_total"), before + 1);
  await page.evaluate(() => window.sock.close());
  await page.close();
});
