// crier.js itself, in headless Chromium against real crier processes: resume (a page whose
// socket is cut mid-stream gets every message once), gap reporting (more missed across a
// reconnect than history keeps, and the broker's `dropped` notice for a paused page), both
// loading forms, publish acks and error codes, binary deliveries, buffering while
// reconnecting, and the reconnect backoff.
import { test } from "node:test";
import assert from "node:assert/strict";
import { browserAndBroker, newPage, startCrier, freePort, httpPublish, until, sleep } from "./lib.js";

const env = browserAndBroker();

/**
 * A page on the broker's origin that has loaded the real /crier.js as a classic script: the
 * demo page, whose own client is left alone. (A page the test served itself, by request
 * interception, would not do: Chromium's local-network-access checks then refuse its
 * WebSocket to 127.0.0.1.)
 */
async function brokerPage(base) {
  const page = await newPage(env.browser);
  await page.goto(base + "/");
  assert.equal(await page.evaluate(() => typeof window.Crier), "function");
  return page;
}

test("(e) messages missed across a reconnect beyond the kept history are reported as a gap", async () => {
  // History keeps 2 messages per topic: the 3 missed below cannot be replayed.
  const own = await startCrier(["--history-size", "2"]);
  try {
  const page = await brokerPage(own.base);
  await page.evaluate(async (ws) => {
    window.got = [];
    window.gaps = [];
    // keeper holds the topic on the broker (its seq lives while it has subscribers)
    window.keeper = new Crier(ws);
    await window.keeper.subscribe("gap.reconnect", () => {}).ready;
    // victim reconnects after exactly ~1.5 s (random pinned), leaving a window to publish into
    window.victim = new Crier(ws, { backoffBase: 1500, random: () => 0.999 });
    window.victim.on("gap", (g) => window.gaps.push(g));
    window.readies = [];
    window.victim.on("ready", (e) => window.readies.push(e));
    await window.victim.subscribe("gap.reconnect", (data, meta) => window.got.push(meta.seq)).ready;
  }, own.ws);
  for (let i = 0; i < 2; i++) await httpPublish(own.base, "gap.reconnect", { i });
  await until(() => page.evaluate(() => window.got.length === 2), "victim got seq 1, 2");

  // Drop the victim's socket from the client side (the broker just sees the TCP close).
  await page.evaluate(() => window.victim._ws.close());
  await until(() => page.evaluate(() => window.victim.state === "reconnecting"), "victim reconnecting");
  for (let i = 0; i < 3; i++) await httpPublish(own.base, "gap.reconnect", { missed: i }); // seq 3, 4, 5
  // "ready" with reconnected: the broker acked the resubscription
  await until(() => page.evaluate(() => window.readies.some((e) => e.reconnected)), "victim resubscribed", 10000);
  const { seq } = await httpPublish(own.base, "gap.reconnect", { after: true });
  assert.equal(seq, 6);
  await until(() => page.evaluate(() => window.got.includes(6)), "victim got seq 6");
  const { got, gaps } = await page.evaluate(() => ({ got: window.got, gaps: window.gaps }));
  assert.deepEqual(got, [1, 2, 6]);
  assert.deepEqual(gaps, [{ topic: "gap.reconnect", expected: 3, got: 6, missed: 3, reconnect: true }]);
  assert.deepEqual(page.problems, []);
  await page.context().close();
  } finally {
    await own.stop();
  }
});

test("(j) a page whose socket is cut again and again mid-stream gets every message exactly once, in order", async () => {
  // History that covers what a page misses while it reconnects (up to ~1 s of backoff here).
  const own = await startCrier(["--history-size", "2000"]);
  try {
  const page = await brokerPage(own.base);
  await page.evaluate(async (ws) => {
    window.got = [];
    window.gaps = [];
    window.recovered = [];
    // reconnect fast (random pinned) so cuts land while messages keep coming
    window.victim = new Crier(ws, { backoffBase: 100, random: () => 0.5 });
    window.victim.on("gap", (g) => window.gaps.push(g));
    window.victim.on("recovered", (r) => window.recovered.push(r));
    window.resubscribed = 0;
    window.victim.on("ready", (e) => { if (e.reconnected) window.resubscribed++; });
    await window.victim.subscribe("cut.stream", (data, meta) => window.got.push([meta.seq, data.n])).ready;
  }, own.ws);
  const N = 600;
  // The publisher runs while the test cuts the page's socket five times from the page side
  // (the broker only sees the TCP connection end, as with a dropped network).
  const publishing = (async () => {
    for (let n = 1; n <= N; n++) {
      await httpPublish(own.base, "cut.stream", { n });
      if (n % 20 === 0) await sleep(5);
    }
  })();
  for (let cut = 1; cut <= 5; cut++) {
    await until(() => page.evaluate((k) => window.got.length >= k * 90, cut), `cut ${cut}: messages flowing`, 20000, 5).catch(async (e) => {
      const s = await page.evaluate(() => ({ n: window.got.length, tail: window.got.slice(-3), gaps: window.gaps, recovered: window.recovered, state: window.victim.state }));
      throw new Error(e.message + " " + JSON.stringify(s));
    });
    await page.evaluate(() => window.victim._ws && window.victim._ws.close());
  }
  await publishing;
  await until(() => page.evaluate((n) => window.got.length >= n, N), "every message", 20000).catch(async (e) => {
    const s = await page.evaluate(() => ({ n: window.got.length, tail: window.got.slice(-3), gaps: window.gaps, recovered: window.recovered, state: window.victim.state }));
    throw new Error(e.message + " " + JSON.stringify(s));
  });
  await sleep(200); // anything extra (a duplicate) would arrive now
  const { got, gaps, recovered, resubscribed } = await page.evaluate(() => ({
    got: window.got, gaps: window.gaps, recovered: window.recovered, resubscribed: window.resubscribed,
  }));
  assert.deepEqual(gaps, []);
  assert.equal(got.length, N, "no duplicate");
  for (let i = 0; i < N; i++) assert.deepEqual(got[i], [i + 1, i + 1], `message ${i + 1} in order`);
  // A cut may land while the previous reconnect is still under way; every resubscription
  // that completed resumed without loss.
  assert.ok(resubscribed >= 3, `${resubscribed} reconnects`);
  assert.equal(recovered.length, resubscribed, JSON.stringify(recovered));
  assert.ok(recovered.some((r) => r.replayed > 0), "some messages came from history");
  assert.deepEqual(page.problems, []);
  await page.context().close();
  } finally {
    await own.stop();
  }
});

test("(f) a page that stops reading gets the broker's dropped notice and a gap (--slow-consumer drop)", async () => {
  // Compression off: Chromium would negotiate it, and 32 KiB of "x" deflate to a few dozen
  // bytes, so the backlog would take far too long to pass its cap.
  const own = await startCrier(["--slow-consumer", "drop", "--max-backlog-bytes", "65536", "--compression", "off"]);
  try {
    const page = await brokerPage(own.base);
    await page.evaluate(async (ws) => {
      window.got = [];
      window.gaps = [];
      window.c = new Crier(ws);
      window.c.on("gap", (g) => window.gaps.push(g));
      await window.c.subscribe("flood", (data, meta) => window.got.push(meta.seq)).ready;
    }, own.ws);
    // Pause the page's JavaScript: the next delivery's handler stops at the first statement,
    // so the renderer stops taking messages, the browser stops reading the socket, the kernel
    // buffers fill and the broker's per-connection backlog passes the 64 KiB cap.
    const cdp = await page.context().newCDPSession(page);
    await cdp.send("Debugger.enable");
    const paused = new Promise((resolve) => cdp.once("Debugger.paused", resolve));
    await cdp.send("Debugger.pause");
    await httpPublish(own.base, "flood", JSON.stringify("wake")); // its handler is where JS stops
    let timer;
    const tooLong = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error("the page never paused")), 10000); });
    await Promise.race([paused, tooLong]).finally(() => clearTimeout(timer));
    const blob = "x".repeat(32 * 1024);
    let published = 0;
    const deadline = Date.now() + 30000;
    let drops = 0;
    while (Date.now() < deadline) {
      await Promise.all(Array.from({ length: 20 }, () => httpPublish(own.base, "flood", JSON.stringify(blob))));
      published += 20;
      const m = await (await fetch(own.base + "/metrics")).text();
      drops = Number((m.match(/^crier_slow_consumer_drops_total (\d+)/m) || [])[1] || 0);
      if (drops > 0) break;
    }
    assert.ok(drops > 0, `the broker never dropped for the paused page after ${published} messages of 32 KiB`);
    await cdp.send("Debugger.resume");
    await cdp.send("Debugger.disable");
    // Once its queue has drained, the next message is preceded by {"op":"dropped"}.
    await until(async () => (await page.evaluate(() => window.got.length)) > 0, "page reads again", 20000);
    await sleep(500);
    const last = await httpPublish(own.base, "flood", JSON.stringify("final"));
    await until(() => page.evaluate((s) => window.got.includes(s), last.seq), `page got the final seq ${last.seq}`, 20000);
    const { got, gaps } = await page.evaluate(() => ({ got: window.got, gaps: window.gaps }));
    const notice = gaps.find((g) => g.dropped !== undefined);
    assert.ok(notice && notice.topic === "flood" && notice.dropped > 0, JSON.stringify(gaps));
    const jumps = gaps.filter((g) => g.got !== undefined);
    assert.ok(jumps.length > 0, "the seq jump is reported too: " + JSON.stringify(gaps));
    // what was dropped plus what arrived accounts for every seq
    const missed = jumps.reduce((n, g) => n + g.missed, 0);
    assert.equal(got.length + missed, last.seq);
    for (let i = 1; i < got.length; i++) assert.ok(got[i] > got[i - 1], "in order");
    await page.context().close();
  } finally {
    await own.stop();
  }
});

test("(g) ES-module loading, publish acks with seq, broker error codes, binary deliveries", async () => {
  const page = await brokerPage(env.crier.base);
  // The same file as an ES module: forget the classic script's global, import it (a distinct
  // URL, so the module is fetched and evaluated afresh) and the global is back.
  const viaModule = await page.evaluate(async () => {
    delete globalThis.Crier;
    const before = typeof globalThis.Crier;
    await import("/crier.js?as=module");
    return [before, typeof globalThis.Crier];
  });
  assert.deepEqual(viaModule, ["undefined", "function"]);

  const r = await page.evaluate(async (ws) => {
    const c = new Crier(ws);
    const got = [];
    await c.subscribe("mod.t", (data, meta) => got.push({ data, meta: { ...meta } })).ready;
    const ack1 = await c.publish("mod.t", { hello: "world" });
    const ack2 = await c.publish("mod.t", [1, 2, 3]);
    const codeOf = async (p) => { try { await p; return "resolved"; } catch (e) { return e.code; } };
    const badTopic = await codeOf(c.publish("bad topic with spaces", 1));
    const badSub = await codeOf(c.subscribe("also bad!", () => {}).ready);
    while (got.length < 2) await new Promise((r) => setTimeout(r, 20));
    return { ack1, ack2, badTopic, badSub, got, readyState: c.readyState, protocol: c._ws.protocol, topics: c.topics };
  }, env.crier.ws);
  assert.equal(r.ack1.seq, 1);
  assert.equal(typeof r.ack1.epoch, "string");
  assert.deepEqual(r.ack2, { seq: 2, epoch: r.ack1.epoch });
  assert.equal(r.badTopic, "invalid_topic");
  assert.equal(r.badSub, "invalid_topic");
  assert.deepEqual(r.topics, ["mod.t"]); // the refused topic is forgotten, not retried
  assert.deepEqual(r.got, [
    { data: { hello: "world" }, meta: { topic: "mod.t", seq: 1, binary: false } },
    { data: [1, 2, 3], meta: { topic: "mod.t", seq: 2, binary: false } },
  ]);
  assert.equal(r.readyState, 1);
  assert.equal(r.protocol, "crier.v1");

  // binary: published over HTTP as octet-stream, delivered as Uint8Array with the seq decoded
  const bin = page.evaluate(async (ws) => {
    const c = new Crier(ws);
    let hit;
    const done = new Promise((res) => { hit = res; });
    await c.subscribe("bin.t", (data, meta) => hit({ bytes: Array.from(data), meta: { ...meta } })).ready;
    window.binReady = true;
    return done;
  }, env.crier.ws);
  await until(() => page.evaluate(() => window.binReady), "binary subscriber ready");
  const res = await fetch(env.crier.base + "/publish/bin.t", {
    method: "POST", headers: { "content-type": "application/octet-stream" }, body: new Uint8Array([0, 1, 254, 255]),
  });
  assert.equal(res.status, 200);
  const b = await bin;
  assert.deepEqual(b, { bytes: [0, 1, 254, 255], meta: { topic: "bin.t", seq: 1, binary: true } });
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test("(h) publishes made while reconnecting are buffered (bounded) and sent after the reconnect", async () => {
  const own = await startCrier();
  try {
    const page = await brokerPage(own.base);
    await page.evaluate(async (ws) => {
      window.got = [];
      window.c = new Crier(ws, { maxBufferedPublishes: 3, backoffBase: 200, backoffCap: 400, random: () => 0.999 });
      await window.c.subscribe("buf.t", (data) => window.got.push(data)).ready;
    }, own.ws);
    await own.kill();
    await until(() => page.evaluate(() => window.c.state === "reconnecting" || window.c.state === "connecting"), "client notices");
    const during = await page.evaluate(() => {
      const c = window.c;
      window.acks = [];
      for (let i = 1; i <= 3; i++) c.publish("buf.t", { n: i }, { timeout: 20000 }).then((a) => window.acks.push(a.seq), (e) => window.acks.push(e.code));
      let fourth;
      c.publish("buf.t", { n: 4 }).catch((e) => { fourth = e.code; });
      return new Promise((r) => setTimeout(() => r({ fourth, readyState: c.readyState, buffered: c.bufferedAmount }), 0));
    });
    assert.equal(during.fourth, "buffer_full");
    assert.equal(during.readyState, 0); // CONNECTING while down
    // three frames like {"op":"publish","topic":"buf.t","data":{"n":1},"id":2} wait in the outbox
    assert.ok(during.buffered >= 150 && during.buffered < 200, JSON.stringify(during));

    await own.restart();
    await until(() => page.evaluate(() => window.acks.length === 3), "three buffered publishes acked", 20000);
    const { acks, buffered } = await page.evaluate(() => ({ acks: window.acks, buffered: window.c.bufferedAmount }));
    // resubscribe goes out before the buffered publishes, so the page receives its own messages
    assert.deepEqual(acks, [1, 2, 3]);
    await until(() => page.evaluate(() => window.got.length === 3), "own buffered messages delivered");
    assert.deepEqual(await page.evaluate(() => window.got), [{ n: 1 }, { n: 2 }, { n: 3 }]);
    assert.equal(buffered, 0);
    await page.context().close();
  } finally {
    await own.stop();
  }
});

test("(i) reconnect backoff: exponential, full jitter, capped; close() stops it for good", async () => {
  const deadPort = await freePort(); // nothing listens there: every attempt fails fast
  const page = await brokerPage(env.crier.base);
  const r = await page.evaluate(async (url) => {
    const rolls = [0.999, 0.5, 0.999, 0.999, 0.999, 0.25];
    let i = 0;
    const c = new Crier(url, { backoffBase: 50, backoffCap: 300, random: () => rolls[i++ % rolls.length] });
    const delays = [];
    c.on("reconnecting", (e) => delays.push(e.delay));
    c.on("error", () => {});
    while (delays.length < 6) await new Promise((res) => setTimeout(res, 20));
    c.close();
    const n = delays.length;
    await new Promise((res) => setTimeout(res, 700));
    return { delays, after: delays.length - n, state: c.state, readyState: c.readyState };
  }, `ws://127.0.0.1:${deadPort}/ws`);
  // caps 50, 100, 200, 300, 300, 300 (base * 2^attempt, capped) times the rolls, floored
  assert.deepEqual(r.delays.slice(0, 6), [49, 50, 199, 299, 299, 75]);
  assert.equal(r.after, 0);
  assert.equal(r.state, "closed");
  assert.equal(r.readyState, 3);
  await page.context().close();
});
