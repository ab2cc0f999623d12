// crier.js with authentication on, in headless Chromium against a real crier with an HS256
// secret and no leeway: a token function called on connect, again before `exp` (refreshing
// in-band, which also widens the grants) and again on every reconnect; the `unauthorized` and
// `forbidden` events; and a fixed token that expires: token_expired, then close 4001. Tokens
// are minted here with node's crypto (HS256), not by crier.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { launch, newPage, startCrier, repoRoot, until, sleep } from "./lib.js";

const secretFile = path.join(repoRoot, "tests/fixtures/auth/hs.secret");
// crier ignores trailing whitespace in a secret file; so must we.
const secret = fs.readFileSync(secretFile, "utf8").replace(/\s+$/, "");

const b64url = (buf) => Buffer.from(buf).toString("base64url");
function mint(claims) {
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify(claims));
  const sig = crypto.createHmac("sha256", secret).update(`${head}.${body}`).digest();
  return `${head}.${body}.${b64url(sig)}`;
}
const now = () => Math.floor(Date.now() / 1000);

let browser, crier;
before(async () => {
  crier = await startCrier(["--jwt-secret-file", secretFile, "--jwt-leeway", "0s"]);
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await crier?.stop();
});

async function brokerPage() {
  const page = await newPage(browser);
  await page.goto(crier.base + "/");
  assert.equal(await page.evaluate(() => typeof window.Crier), "function");
  return page;
}

test("a token function: sent on connect, refreshed in-band before exp, fetched again on reconnect", async () => {
  const page = await brokerPage();
  const calls = [];
  // The page asks node for each token: the first lives 4 s and grants a.*; the later ones
  // live a minute and grant b.* too.
  await page.exposeFunction("mintToken", () => {
    calls.push(Date.now());
    const first = calls.length === 1;
    return mint({
      sub: "u1",
      exp: now() + (first ? 4 : 60),
      subscribe: first ? ["a.*"] : ["a.*", "b.*"],
    });
  });
  await page.evaluate(async (ws) => {
    window.events = [];
    window.c = new Crier(ws, { token: () => window.mintToken() });
    for (const type of ["unauthorized", "forbidden", "token", "close", "ready"]) {
      window.c.on(type, (d) => window.events.push({ type, ...d }));
    }
    await window.c.subscribe("a.1", () => {}).ready;
    window.forbidden = await window.c.subscribe("b.1", () => {}).ready.then(() => "acked", (e) => e.code);
  }, crier.ws);
  assert.equal(await page.evaluate(() => window.forbidden), "forbidden");
  let events = await page.evaluate(() => window.events);
  assert.deepEqual(
    events.filter((e) => e.type === "forbidden").map((e) => [e.op, e.topic]),
    [["subscribe", "b.1"]],
  );
  // Refreshed before exp (4 s, no leeway): the new token grants b.*.
  await until(() => page.evaluate(() => window.events.some((e) => e.type === "token")), "an in-band refresh", 6000);
  assert.equal(calls.length, 2);
  assert.ok(calls[1] - calls[0] < 4000, `refreshed ${calls[1] - calls[0]} ms after the first token`);
  assert.equal(await page.evaluate(() => window.c.subscribe("b.2", () => {}).ready.then(() => "acked", (e) => e.code)), "acked");
  // Past the first token's exp the connection is still open: the refresh replaced it.
  await sleep(Math.max(0, calls[0] + 4500 - Date.now()));
  events = await page.evaluate(() => window.events);
  assert.deepEqual(events.filter((e) => e.type === "close" || e.type === "unauthorized"), []);
  assert.equal(await page.evaluate(() => window.c.state), "open");

  // A reconnect calls the function again, and the resubscriptions pass with the new token.
  await page.evaluate(() => window.c._ws.close());
  await until(() => page.evaluate(() => window.events.filter((e) => e.type === "ready" && e.reconnected).length === 1), "ready after the reconnect");
  assert.equal(calls.length, 3);
  assert.deepEqual((await page.evaluate(() => window.c.topics)).sort(), ["a.1", "b.2"]);
  events = await page.evaluate(() => window.events);
  assert.deepEqual(events.filter((e) => e.type === "unauthorized" || e.type === "forbidden").length, 1, "only b.1's forbidden");
  await page.evaluate(() => window.c.close());
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test("no token: unauthorized; a fixed token that expires: token_expired and close 4001", async () => {
  const page = await brokerPage();
  const token = mint({ sub: "u2", exp: now() + 2, subscribe: ["a.*"] });
  const result = await page.evaluate(async ({ ws, token }) => {
    const anon = new Crier(ws);
    const events = [];
    anon.on("unauthorized", (d) => events.push(d));
    const code = await anon.subscribe("a.1", () => {}).ready.then(() => "acked", (e) => e.code);
    anon.close();
    window.expiring = [];
    window.fixed = new Crier(ws, { token, reconnect: false });
    window.fixed.on("unauthorized", (d) => window.expiring.push({ type: "unauthorized", code: d.code }));
    window.fixed.on("close", (d) => window.expiring.push({ type: "close", code: d.code }));
    const fixedCode = await window.fixed.subscribe("a.1", () => {}).ready.then(() => "acked", (e) => e.code);
    return { code, events, fixedCode };
  }, { ws: crier.ws, token });
  assert.equal(result.code, "unauthorized");
  assert.deepEqual(result.events.map((e) => [e.op, e.topic, e.code]), [["subscribe", "a.1", "unauthorized"]]);
  assert.equal(result.fixedCode, "acked");
  await until(() => page.evaluate(() => window.expiring.length === 2), "token_expired then close", 6000);
  assert.deepEqual(await page.evaluate(() => window.expiring), [
    { type: "unauthorized", code: "token_expired" },
    { type: "close", code: 4001 },
  ]);
  assert.deepEqual(page.problems, []);
  await page.context().close();
});
