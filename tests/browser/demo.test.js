// The demo page (GET /) in headless Chromium against a real crier process.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { browserAndBroker, newPage, startCrier, httpPublish, until, sleep, repoRoot } from "./lib.js";

const env = browserAndBroker();

const status = (page) => page.getAttribute("#status", "data-state");
const logTexts = (page) => page.$$eval("#log li", (lis) => lis.map((li) => li.textContent));

async function join(page, base, name, room) {
  await page.goto(base + "/");
  await page.fill("#name", name);
  await page.fill("#room", room);
  await page.click("#join-btn");
  await until(async () => (await status(page)) === "open", `${name}: status open`);
  // our own "joined" notice round-trips through the broker once the subscription is acked
  await until(async () => (await logTexts(page)).includes(`${name} joined`), `${name}: own join notice`);
}

test("(a) GET / loads with no console errors and shows connected", async () => {
  const page = await newPage(env.browser);
  await page.goto(env.crier.base + "/");
  await until(async () => (await status(page)) === "open", "status open");
  assert.equal(await page.textContent("#status"), "open");
  assert.equal(await page.textContent("#url"), env.crier.ws, "the page shows the protocol URL it uses");
  assert.equal(await page.evaluate(() => typeof window.Crier), "function");
  await sleep(300); // let any late error surface
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test("(b) the page shows a message published over HTTP POST /publish/room.x", async () => {
  const page = await newPage(env.browser);
  await join(page, env.crier.base, "alice", "x");
  const { seq } = await httpPublish(env.crier.base, "room.x", { type: "chat", name: "curl", text: "hello <b>from</b> http", ts: Date.now() });
  assert.ok(Number.isInteger(seq) && seq >= 1, `seq from POST: ${seq}`);
  const li = await page.waitForSelector("#log li:has-text('hello <b>from</b> http')", { timeout: 5000 });
  assert.equal(await li.$eval(".name", (e) => e.textContent), "curl");
  // user text is text, not markup: no <b> element was created
  assert.equal(await page.$$eval("#log b", (bs) => bs.length), 0);
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test("(c) two pages chat with each other (+ screenshot)", async () => {
  const room = "chat" + Date.now();
  const alice = await newPage(env.browser, { viewport: { width: 390, height: 640 } }); // phone-size
  const bob = await newPage(env.browser, { viewport: { width: 390, height: 640 } });
  await join(alice, env.crier.base, "alice", room);
  await join(bob, env.crier.base, "bob", room);
  await until(async () => (await logTexts(alice)).includes("bob joined"), "alice sees 'bob joined'");

  await alice.fill("#text", "hi bob, it's alice");
  await alice.press("#text", "Enter");
  const got = await bob.waitForSelector("#log li:has-text(\"hi bob, it's alice\")", { timeout: 5000 });
  assert.equal(await got.$eval(".name", (e) => e.textContent), "alice");

  await bob.fill("#text", "hey alice 👋");
  await bob.click("#send-btn");
  const back = await alice.waitForSelector("#log li:has-text('hey alice 👋')", { timeout: 5000 });
  assert.equal(await back.$eval(".name", (e) => e.textContent), "bob");
  // both saw both lines, in the same order
  const a = (await logTexts(alice)).filter((t) => /hi bob|hey alice/.test(t));
  const b = (await logTexts(bob)).filter((t) => /hi bob|hey alice/.test(t));
  assert.equal(a.length, 2);
  assert.deepEqual(a.map((t) => t.replace(/\d\d:\d\d.*$/, "")), b.map((t) => t.replace(/\d\d:\d\d.*$/, "")));
  await until(async () => Number(await alice.textContent("#rate")) > 0, "msg/s counter moves");

  await alice.screenshot({ path: path.join(repoRoot, "tests/browser/screenshot.png") });

  // bob leaves (page unload announces it)
  await bob.close({ runBeforeUnload: true });
  await until(async () => (await logTexts(alice)).includes("bob left"), "alice sees 'bob left'");
  assert.deepEqual(alice.problems, []);
  await alice.context().close();
  await bob.context().close();
});

test("(d) after the broker is killed and restarted on the same port, the page reconnects, resubscribes and receives again", async () => {
  const own = await startCrier();
  try {
    const page = await newPage(env.browser);
    await join(page, own.base, "carol", "restart");
    await page.evaluate(() => {
      window.gaps = [];
      window.opens = [];
      window.crierClient.on("gap", (g) => window.gaps.push(g));
      window.crierClient.on("open", (e) => window.opens.push(e));
    });
    for (let i = 1; i <= 3; i++) await httpPublish(own.base, "room.restart", { type: "chat", name: "srv", text: "before " + i });
    await page.waitForSelector("#log li:has-text('before 3')");

    await own.kill(); // SIGKILL: no close frame, the TCP connection just dies
    await until(async () => (await status(page)) !== "open", "page notices the broker is gone");
    const shown = await page.textContent("#status");
    assert.match(shown, /^(reconnecting in \d+\.\d s|connecting)$/);

    await own.restart();
    await until(async () => (await status(page)) === "open", "page back to open after the restart", 20000);
    const opens = await page.evaluate(() => window.opens);
    assert.equal(opens.length, 1);
    assert.equal(opens[0].reconnected, true);

    // resubscribed: the new broker's topic is a new incarnation (another epoch, seq from 1):
    // the resume says so (a gap whose size is unknown), and a message published now reaches it
    await until(() => page.evaluate(() => window.gaps.length === 1), "the restart reported");
    assert.deepEqual(await page.evaluate(() => window.gaps), [
      { topic: "room.restart", expected: 5, got: 1, reconnect: true, epochChanged: true },
    ]);
    const { seq } = await httpPublish(own.base, "room.restart", { type: "chat", name: "srv", text: "after restart" });
    assert.equal(seq, 1);
    await page.waitForSelector("#log li:has-text('after restart')", { timeout: 5000 });
    assert.equal((await page.evaluate(() => window.gaps)).length, 1);
    // and it can still publish through the new connection
    await page.fill("#text", "still here");
    await page.press("#text", "Enter");
    await page.waitForSelector("#log li.me:has-text('still here')", { timeout: 5000 });
    await page.context().close();
  } finally {
    await own.stop();
  }
});

test("(e) joining a room shows its recent messages, then live ones", async () => {
  // someone is in the room first: a topic nobody ever listened to keeps nothing (its
  // publishes are unheard); once it has state, its history keeps it after they leave
  const first = await newPage(env.browser);
  await join(first, env.crier.base, "carol", "history");
  await first.context().close();
  for (let i = 1; i <= 3; i++) {
    await httpPublish(env.crier.base, "room.history", { type: "chat", name: "earlier", text: "said before " + i });
  }
  const page = await newPage(env.browser);
  await join(page, env.crier.base, "dave", "history");
  const texts = await logTexts(page);
  const before = texts.filter((t) => t.includes("said before"));
  assert.deepEqual(before.map((t) => t.replace(/^earlier/, "").replace(/\d\d:\d\d.*$/, "")),
    ["said before 1", "said before 2", "said before 3"]);
  // the backlog comes before the page's own join notice
  assert.ok(texts.findIndex((t) => t.includes("said before 3")) < texts.indexOf("dave joined"));
  await httpPublish(env.crier.base, "room.history", { type: "chat", name: "srv", text: "live now" });
  await page.waitForSelector("#log li:has-text('live now')", { timeout: 5000 });
  assert.deepEqual(page.problems, []);
  await page.context().close();
});
