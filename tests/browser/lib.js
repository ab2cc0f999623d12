// Shared helpers for the browser tests: start/stop real crier processes, launch headless Chromium.
import { spawn } from "node:child_process";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { before, after } from "node:test";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, "..", "..");
export const CRIER_BIN = path.resolve(repoRoot, process.env.CRIER_BIN || "target/release/crier");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A port that was free a moment ago (the OS picks it). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function healthy(base) {
  try {
    const r = await fetch(base + "/healthz", { signal: AbortSignal.timeout(500) });
    return r.ok && (await r.text()).trim() === "ok";
  } catch {
    return false;
  }
}

/**
 * Start `crier --listen 127.0.0.1:PORT ...extra` and wait until GET /healthz says ok.
 * Retries the spawn for a while if the process exits early (e.g. the port is still being released
 * after a kill). Returns {port, base, ws, proc, stop(), kill(), restart()}.
 */
export async function startCrier(extra = [], { port, timeoutMs = 15000 } = {}) {
  port = port || (await freePort());
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + timeoutMs;
  let lastErr = "";
  while (Date.now() < deadline) {
    const proc = spawn(CRIER_BIN, ["--listen", `127.0.0.1:${port}`, ...extra], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let exited = false;
    proc.stderr.on("data", (d) => { lastErr = (lastErr + d).slice(-2000); });
    proc.on("exit", () => { exited = true; });
    proc.on("error", (e) => { exited = true; lastErr = String(e); });
    while (!exited && Date.now() < deadline) {
      if (await healthy(base)) {
        const h = {
          port, base, ws: `ws://127.0.0.1:${port}/ws`, proc,
          /** SIGKILL and wait for the exit: the broker dies without any goodbye. */
          kill: () => stopProc(h.proc, "SIGKILL"),
          stop: () => stopProc(h.proc, "SIGTERM"),
          /** A fresh crier (same arguments) on the same port; this handle now controls it. */
          restart: async () => { h.proc = (await startCrier(extra, { port, timeoutMs })).proc; },
        };
        return h;
      }
      await sleep(50);
    }
    if (!exited) { await stopProc(proc, "SIGKILL"); break; }
    await sleep(200);
  }
  throw new Error(`crier (${CRIER_BIN}) did not become healthy on port ${port}: ${lastErr}`);
}

function stopProc(proc, sig) {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
    const t = setTimeout(() => { try { proc.kill("SIGKILL"); } catch {} }, 3000);
    proc.once("exit", () => { clearTimeout(t); resolve(); });
    try { proc.kill(sig); } catch { resolve(); }
  });
}

/** The broker the run.sh script started (CRIER_URL), or a fresh one owned by the caller. */
export async function sharedOrOwnCrier() {
  if (process.env.CRIER_URL) {
    const base = process.env.CRIER_URL.replace(/\/$/, "");
    const u = new URL(base);
    return { base, port: +u.port, ws: `ws://${u.host}/ws`, stop: async () => {}, shared: true };
  }
  return startCrier();
}

/** POST /publish/<topic> with a JSON body; returns the broker's {seq}. */
export async function httpPublish(base, topic, data) {
  const r = await fetch(`${base}/publish/${encodeURIComponent(topic)}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof data === "string" ? data : JSON.stringify(data),
  });
  const text = await r.text();
  if (r.status !== 200) throw new Error(`POST /publish/${topic}: ${r.status} ${text}`);
  return JSON.parse(text);
}

/**
 * For a test file: before its tests, the shared broker (or a fresh one) and a headless
 * Chromium; after them, both stopped. Returns the object whose `browser` and `crier` the
 * tests use once `before` has run.
 */
export function browserAndBroker() {
  const env = { browser: null, crier: null };
  before(async () => {
    env.crier = await sharedOrOwnCrier();
    env.browser = await launch();
  });
  after(async () => {
    await env.browser?.close();
    await env.crier?.stop();
  });
  return env;
}

export function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/**
 * A new page that records console errors, page errors and failed requests into `page.problems`.
 */
export async function newPage(browser, opts = {}) {
  const ctx = await browser.newContext({ viewport: opts.viewport || { width: 900, height: 700 } });
  const page = await ctx.newPage();
  page.problems = [];
  page.on("console", (m) => { if (m.type() === "error") page.problems.push("console: " + m.text()); });
  page.on("pageerror", (e) => page.problems.push("pageerror: " + e.message));
  page.on("requestfailed", (r) => page.problems.push("requestfailed: " + r.url() + " " + (r.failure() || {}).errorText));
  page.on("response", (r) => { if (r.status() >= 400) page.problems.push(`http ${r.status()}: ${r.url()}`); });
  return page;
}

/** Poll fn() until it returns truthy (or throw after timeoutMs with `what`). */
export async function until(fn, what, timeoutMs = 10000, everyMs = 50) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}
