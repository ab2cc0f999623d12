/*! crier.js: a dependency-free browser client for the crier pub/sub broker (protocol v1).
 *
 * One file, loadable three ways (no build step; the file never uses `export`):
 *   1. classic script:      <script src="/crier.js"></script>   then   new window.Crier(url)
 *   2. ES module (static):  import "/crier.js"; const { Crier } = globalThis;
 *   3. ES module (dynamic): await import("/crier.js"); const { Crier } = globalThis;
 *   (and CommonJS `require()` if a bundler or Node hands it `module.exports`.)
 * A named import (`import { Crier } from "/crier.js"`) cannot work from a file that must also
 * run as a classic script; use form 2.
 *
 * API summary (full reference in the repository: docs/browser.md):
 *   const c = new Crier("ws://host:8080/ws", opts)
 *   const off = c.subscribe(topic, (data, meta) => ..., {recent})  // meta = {topic, seq, binary}
 *                      // recent: true also delivers the messages the broker keeps (first load)
 *   off.ready          // Promise: resolves when the broker acked the subscribe, rejects on error frame
 *   off()              // remove this handler (unsubscribes the topic when its last handler goes)
 *   c.unsubscribe(topic, handler?)
 *   await c.publish(topic, data, {timeout})  // -> {seq, epoch}; rejects with Error(.code)
 *   c.on("open"|"ready"|"close"|"reconnecting"|"error"|"gap"|"recovered"|"unauthorized"|
 *        "forbidden"|"token", fn) -> off function; c.off(type, fn)
 *   opts.token: a JWT string, or a function returning one (or a Promise of one): called before
 *     every (re)connect and again shortly before the token's `exp`, sent in-band ({"op":"auth"}).
 * Every (re)subscription resumes from the last seq and epoch seen: messages missed while
 * disconnected are replayed from the broker's history (a "recovered" event), or a "gap" event
 * says how many were lost. Handlers see every message once, in order.
 *   c.state, c.readyState, c.bufferedAmount, c.url, c.close()
 */
(function (root, factory) {
  "use strict";
  var Crier = factory();
  if (typeof module === "object" && module && typeof module.exports === "object") module.exports = Crier;
  if (root) root.Crier = Crier;
})(typeof globalThis !== "undefined" ? globalThis : typeof self !== "undefined" ? self : this, function () {
  "use strict";

  var CONNECTING = 0, OPEN = 1, CLOSING = 2, CLOSED = 3;
  // A resume point past any topic's top, without epoch: nothing is replayed and the ack tells
  // the topic's top seq and epoch (a live-only subscription that can resume later).
  var LIVE = 9007199254740991;
  var DEFAULTS = {
    protocols: ["crier.v1"],   // subprotocol(s) offered; [] to offer none
    reconnect: true,           // reconnect automatically after an unexpected close
    backoffBase: 250,          // ms: delay = random(0, min(backoffCap, backoffBase * 2^attempt))
    backoffCap: 30000,         // ms
    stableAfter: 5000,         // ms a connection must stay open before the attempt counter resets
    connectTimeout: 10000,     // ms to wait for the socket to open before giving up on that attempt
    ackTimeout: 10000,         // ms from publish() call to ack, including time spent buffered
    maxBufferedPublishes: 1000, // publishes held while not connected; over it the NEW one is rejected
    WebSocket: null,           // WebSocket implementation (defaults to the global one)
    token: null,               // JWT string, or () => string | Promise<string>, sent in-band
    tokenRefreshMargin: 30000, // ms before `exp` to fetch and send a fresh token (at most half its life)
    tokenRetry: 5000,          // ms between refresh attempts after the token function failed
    random: Math.random        // injectable for tests of the backoff
  };

  function CrierError(code, message) {
    var e = new Error(message || code);
    e.name = "CrierError";
    e.code = code;
    return e;
  }

  function report(err) {
    // A throwing user callback must not break dispatch; surface it like an uncaught error.
    if (typeof reportError === "function") reportError(err);
    else setTimeout(function () { throw err; }, 0);
  }

  var utf8 = typeof TextDecoder !== "undefined" ? new TextDecoder("utf-8") : null;

  /** The `exp` claim (seconds) of a compact JWT, or null. Not verified: only to time refreshes. */
  function tokenExp(token) {
    try {
      var part = String(token).split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      while (part.length % 4) part += "=";
      var bin = atob(part), bytes = new Uint8Array(bin.length);
      for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      var exp = JSON.parse(utf8 ? utf8.decode(bytes) : bin).exp;
      return typeof exp === "number" && isFinite(exp) ? exp : null;
    } catch (e) {
      return null;
    }
  }

  function Crier(url, opts) {
    if (!(this instanceof Crier)) throw new TypeError("use new Crier(url, opts)");
    var o = {};
    var k;
    for (k in DEFAULTS) o[k] = DEFAULTS[k];
    if (opts) for (k in opts) if (opts[k] !== undefined) o[k] = opts[k];
    this.opts = o;
    this.url = String(url);
    this._WS = o.WebSocket || (typeof WebSocket !== "undefined" ? WebSocket : null);
    if (!this._WS) throw new Error("crier.js: no WebSocket implementation available");
    this._ws = null;
    this._state = "connecting"; // connecting | open | reconnecting | closed
    this._closed = false;
    this._attempt = 0;
    this._timer = null;        // reconnect timer
    this._stableTimer = null;
    this._connectTimer = null;
    this._nextId = 1;
    this._listeners = {};
    this._topics = new Map();  // topic -> {handlers:Set, ready:Promise, settle:{res,rej}|null, last:seq|null, epoch:string|null, recent:bool}
    this._pending = new Map(); // id -> {kind, topic, resolve, reject, timer, frame, sent}
    this._outbox = [];         // publishes not yet sent (while not open), oldest first
    this._awaitingReady = 0;   // subscribe acks outstanding after the current (re)connect
    this._everOpened = false;
    this._token = null;        // the token sent on the current connection
    this._tokenGen = 0;        // bumps on every fetch, so a stale answer is ignored
    this._refreshTimer = null;
    this._connect();
  }

  Crier.CONNECTING = CONNECTING; Crier.OPEN = OPEN; Crier.CLOSING = CLOSING; Crier.CLOSED = CLOSED;
  Crier.VERSION = "1";
  Crier.Error = CrierError;

  var P = Crier.prototype;

  // ---- events -------------------------------------------------------------------------------
  P.on = function (type, fn) {
    var set = this._listeners[type] || (this._listeners[type] = new Set());
    set.add(fn);
    var self = this;
    return function () { self.off(type, fn); };
  };
  P.off = function (type, fn) {
    var set = this._listeners[type];
    if (set) set.delete(fn);
  };
  P._emit = function (type, detail) {
    var set = this._listeners[type];
    if (!set) return;
    Array.from(set).forEach(function (fn) {
      try { fn(detail); } catch (e) { report(e); }
    });
  };

  // ---- state --------------------------------------------------------------------------------
  Object.defineProperty(P, "state", { get: function () { return this._state; } });
  Object.defineProperty(P, "readyState", {
    get: function () {
      if (this._closed) return this._ws && this._ws.readyState !== CLOSED ? CLOSING : CLOSED;
      return this._state === "open" ? OPEN : CONNECTING;
    }
  });
  Object.defineProperty(P, "bufferedAmount", {
    get: function () {
      var n = this._ws ? this._ws.bufferedAmount : 0;
      for (var i = 0; i < this._outbox.length; i++) n += this._outbox[i].frame.length;
      return n;
    }
  });
  Object.defineProperty(P, "topics", { get: function () { return Array.from(this._topics.keys()); } });

  // ---- connection ---------------------------------------------------------------------------
  /** Fetch the token (when `opts.token` is a function), then open the socket. */
  P._connect = function () {
    var self = this;
    this._timer = null;
    this._state = "connecting";
    var source = this.opts.token;
    if (typeof source !== "function") {
      this._token = source == null ? null : String(source);
      return this._open();
    }
    this._fetchToken(function (token) {
      self._token = token;
      self._open();
    }, function (err) {
      self._emit("error", err);
      self._scheduleReconnect();
    });
  };

  /** Calls the token function; `ok(token)` or `fail(err)` unless closed or superseded meanwhile. */
  P._fetchToken = function (ok, fail) {
    var self = this, gen = ++this._tokenGen, answer;
    try { answer = Promise.resolve(this.opts.token()); } catch (e) { answer = Promise.reject(e); }
    answer.then(function (token) {
      if (self._closed || gen !== self._tokenGen) return;
      if (token == null || token === "") return fail(CrierError("token_error", "crier: the token function returned no token"));
      ok(String(token));
    }, function (e) {
      if (self._closed || gen !== self._tokenGen) return;
      fail(CrierError("token_error", "crier: the token function failed: " + (e && e.message ? e.message : e)));
    });
  };

  P._open = function () {
    var self = this;
    var ws;
    try {
      ws = this.opts.protocols && this.opts.protocols.length
        ? new this._WS(this.url, this.opts.protocols) : new this._WS(this.url);
    } catch (e) {
      this._emit("error", e);
      this._closed = true;
      this._state = "closed";
      this._failAll(CrierError("closed", "crier: cannot connect: " + e.message));
      return;
    }
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    this._connectTimer = setTimeout(function () {
      if (self._ws === ws && ws.readyState === CONNECTING) ws.close();
    }, this.opts.connectTimeout);
    ws.onopen = function () { if (self._ws === ws) self._onOpen(); };
    ws.onmessage = function (ev) { if (self._ws === ws) self._onMessage(ev.data); };
    ws.onerror = function () {
      if (self._ws === ws) self._emit("error", CrierError("socket_error", "crier: WebSocket error"));
    };
    ws.onclose = function (ev) { if (self._ws === ws) self._onClose(ev); };
  };

  P._onOpen = function () {
    var self = this, ws = this._ws;
    clearTimeout(this._connectTimer);
    this._state = "open";
    var reconnected = this._everOpened;
    this._everOpened = true;
    this._stableTimer = setTimeout(function () { self._attempt = 0; }, this.opts.stableAfter);
    this._emit("open", { reconnected: reconnected, protocol: ws.protocol });
    // The token first: the broker handles a connection's commands in order, so the
    // subscriptions below are checked against it.
    if (this._token) {
      this._sendAuth(this._token);
      this._scheduleRefresh();
    }
    // Resubscribe every topic in one burst (one synchronous loop, before any buffered publish).
    this._awaitingReady = 0;
    this._topics.forEach(function (t, topic) { self._sendSubscribe(topic, t); });
    if (this._awaitingReady === 0) this._emit("ready", { reconnected: reconnected });
    this._readyReconnected = reconnected;
    // Then flush publishes buffered while disconnected, oldest first.
    var out = this._outbox;
    this._outbox = [];
    for (var i = 0; i < out.length; i++) { out[i].sent = true; ws.send(out[i].frame); }
  };

  P._sendAuth = function (token) {
    var self = this, id = this._nextId++;
    this._pending.set(id, {
      kind: "auth", topic: null,
      resolve: function () {},
      reject: function (err) { self._emit("unauthorized", { op: "auth", code: err.code, message: err.message }); }
    });
    this._ws.send(JSON.stringify({ op: "auth", token: token, id: id }));
  };

  /** When a token function is given: fetch a fresh token before this one's `exp`, send it in-band. */
  P._scheduleRefresh = function () {
    clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    if (typeof this.opts.token !== "function") return;
    var exp = tokenExp(this._token);
    if (exp === null) return;
    var left = exp * 1000 - Date.now();
    var delay = Math.max(0, left - Math.min(this.opts.tokenRefreshMargin, left / 2));
    var self = this;
    this._refreshTimer = setTimeout(function () { self._refresh(); }, delay);
  };

  P._refresh = function () {
    var self = this, ws = this._ws;
    this._refreshTimer = null;
    if (!ws || this._state !== "open") return; // the next connect fetches a token anyway
    this._fetchToken(function (token) {
      if (self._ws !== ws || self._state !== "open") return;
      self._token = token;
      self._sendAuth(token);
      self._emit("token", { refreshed: true });
      self._scheduleRefresh();
    }, function (err) {
      self._emit("error", err);
      if (self._ws === ws) self._refreshTimer = setTimeout(function () { self._refresh(); }, self.opts.tokenRetry);
    });
  };

  P._sendSubscribe = function (topic, t) {
    var id = this._nextId++;
    var self = this;
    // Resume from what was seen; the first time, from now on (or what is kept, with `recent`).
    var since = t.epoch !== null ? { seq: t.last, epoch: t.epoch }
      : { seq: t.recent ? 0 : LIVE };
    this._awaitingReady++;
    this._pending.set(id, {
      kind: "subscribe", topic: topic,
      resolve: function (m) {
        if (self._topics.get(topic) === t) self._resumed(topic, t, since, m);
        if (t.settle) { t.settle.res(); t.settle = null; }
        self._readyAck();
      },
      reject: function (err) {
        if (t.settle) { t.settle.rej(err); t.settle = null; }
        else self._emit("error", err);
        // The broker refused the topic: forget it so it is not retried on every reconnect.
        if (self._topics.get(topic) === t) self._topics.delete(topic);
        self._readyAck();
      }
    });
    this._ws.send(JSON.stringify({ op: "subscribe", topic: topic, since: since, id: id }));
  };

  // The broker answered a subscribe sent with `since`: {seq: top, epoch, recovered}.
  P._resumed = function (topic, t, since, m) {
    if (typeof m.epoch !== "string" || typeof m.seq !== "number") return; // a broker without history
    var top = m.seq;
    if (since.epoch === undefined) {
      // First subscription: live from the top, or (recent) the kept messages then live ones.
      t.epoch = m.epoch;
      if (since.seq === LIVE) t.last = top;
      else if (!m.recovered) t.last = null; // the oldest are gone: start at the first replayed
      return;
    }
    if (m.recovered) {
      t.epoch = m.epoch;
      // The replay (since.seq + 1 .. top) follows, then live messages.
      this._emit("recovered", { topic: topic, from: since.seq, top: top, replayed: top - since.seq, epoch: m.epoch });
      return;
    }
    // Not recoverable: nothing is replayed; live messages go on from top + 1.
    var gap = { topic: topic, expected: since.seq + 1, got: top + 1, reconnect: true };
    if (m.epoch === since.epoch) gap.missed = top - since.seq;
    else gap.epochChanged = true; // the topic started again (freed, or the broker restarted)
    t.epoch = m.epoch;
    t.last = top;
    this._emit("gap", gap);
  };

  P._readyAck = function () {
    if (this._awaitingReady > 0 && --this._awaitingReady === 0) {
      this._emit("ready", { reconnected: !!this._readyReconnected });
    }
  };

  P._onClose = function (ev) {
    clearTimeout(this._connectTimer);
    clearTimeout(this._stableTimer);
    clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    this._ws = null;
    this._awaitingReady = 0;
    // Commands sent on the dead socket: subscribes are redone on reconnect; publishes may or
    // may not have been applied, so they are rejected (never silently resent: no duplicates).
    var self = this;
    this._pending.forEach(function (p, id) {
      if (p.kind === "publish") {
        if (!p.sent) return; // still buffered: it goes out after the reconnect
        self._pending.delete(id);
        clearTimeout(p.timer);
        p.reject(CrierError("disconnected", "crier: connection lost before the publish was acked (it may or may not have been applied)"));
      } else {
        self._pending.delete(id);
      }
    });
    var wasOpen = this._state === "open";
    this._emit("close", { code: ev.code, reason: ev.reason, wasClean: ev.wasClean, wasOpen: wasOpen });
    this._scheduleReconnect();
  };

  /** After a close, or a token function that failed: the next attempt after the backoff. */
  P._scheduleReconnect = function () {
    if (this._closed || !this.opts.reconnect) {
      this._state = "closed";
      this._closed = true;
      this._failAll(CrierError("closed", "crier: client closed"));
      return;
    }
    this._state = "reconnecting";
    var cap = Math.min(this.opts.backoffCap, this.opts.backoffBase * Math.pow(2, this._attempt));
    var delay = Math.floor(this.opts.random() * cap); // full jitter
    this._attempt++;
    this._reconnectAt = Date.now() + delay;
    this._emit("reconnecting", { attempt: this._attempt, delay: delay, at: this._reconnectAt });
    var selfc = this;
    this._timer = setTimeout(function () { selfc._connect(); }, delay);
  };

  P._failAll = function (err) {
    var out = this._outbox;
    this._outbox = [];
    out.forEach(function (p) { clearTimeout(p.timer); p.reject(err); });
    this._pending.forEach(function (p) { clearTimeout(p.timer); p.reject(err); });
    this._pending.clear();
    this._topics.forEach(function (t) { if (t.settle) { t.settle.rej(err); t.settle = null; } });
  };

  /** Stop for good: close the socket, cancel reconnects, reject everything outstanding. */
  P.close = function (code, reason) {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._timer);
    clearTimeout(this._stableTimer);
    clearTimeout(this._connectTimer);
    clearTimeout(this._refreshTimer);
    var ws = this._ws;
    if (ws && ws.readyState <= OPEN) {
      ws.close(code || 1000, reason || "");
      // _onClose runs on the close event and rejects what is outstanding.
    } else {
      this._ws = null;
      this._state = "closed";
      this._failAll(CrierError("closed", "crier: client closed"));
      this._emit("close", { code: code || 1000, reason: reason || "", wasClean: true, wasOpen: false });
    }
  };

  // ---- inbound ------------------------------------------------------------------------------
  P._onMessage = function (raw) {
    if (typeof raw === "string") {
      var m;
      try { m = JSON.parse(raw); } catch (e) {
        this._emit("error", CrierError("bad_frame", "crier: unparsable frame from broker"));
        return;
      }
      switch (m && m.op) {
        case "message": this._deliver(m.topic, m.seq, m.data, false); return;
        case "ack": return this._onAck(m);
        case "error": return this._onError(m);
        case "dropped":
          this._emit("gap", { topic: m.topic, dropped: m.count });
          return;
        default: return; // unknown ops are ignored (forward compatibility)
      }
    }
    // Binary delivery: [1 byte N][N bytes topic][8 byte seq, big-endian][payload]
    var buf = raw instanceof ArrayBuffer ? new Uint8Array(raw) : new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength);
    if (buf.length < 9) return this._emit("error", CrierError("bad_frame", "crier: short binary frame"));
    var n = buf[0];
    if (buf.length < 1 + n + 8) return this._emit("error", CrierError("bad_frame", "crier: short binary frame"));
    var topic = utf8 ? utf8.decode(buf.subarray(1, 1 + n)) : String.fromCharCode.apply(null, buf.subarray(1, 1 + n));
    var dv = new DataView(buf.buffer, buf.byteOffset + 1 + n, 8);
    var seq = dv.getUint32(0) * 4294967296 + dv.getUint32(4);
    this._deliver(topic, seq, buf.subarray(1 + n + 8), true);
  };

  P._deliver = function (topic, seq, data, binary) {
    var t = this._topics.get(topic);
    if (!t) return; // late delivery after unsubscribe
    if (typeof seq === "number") {
      // Within one incarnation (the epoch; a new one is announced by a resume ack) seq grows
      // by 1 per message: a seq already seen is a duplicate and is not handed to the page.
      if (t.last !== null && seq <= t.last) return;
      if (t.last !== null && seq > t.last + 1) {
        this._emit("gap", { topic: topic, expected: t.last + 1, got: seq, missed: seq - t.last - 1, reconnect: false });
      }
      t.last = seq;
    }
    var meta = { topic: topic, seq: seq, binary: binary };
    Array.from(t.handlers).forEach(function (fn) {
      try { fn(data, meta); } catch (e) { report(e); }
    });
  };

  P._onAck = function (m) {
    var p = this._pending.get(m.id);
    if (!p) return;
    this._pending.delete(m.id);
    clearTimeout(p.timer);
    p.resolve(p.kind === "publish" ? { seq: m.seq, epoch: m.epoch } : m);
  };

  P._onError = function (m) {
    var err = CrierError(m.code || "error", m.message || m.code || "broker error");
    if (m.id !== undefined && m.id !== null && this._pending.has(m.id)) {
      var p = this._pending.get(m.id);
      this._pending.delete(m.id);
      clearTimeout(p.timer);
      err.topic = p.topic;
      p.reject(err);
      if (p.kind !== "auth" && (err.code === "unauthorized" || err.code === "forbidden")) {
        this._emit(err.code, { op: p.kind, topic: p.topic, code: err.code, message: err.message });
      }
      return;
    }
    if (err.code === "token_expired") {
      // The broker closes with 4001 next; the reconnect fetches a new token.
      this._emit("unauthorized", { op: null, topic: null, code: err.code, message: err.message });
      return;
    }
    if (err.code === "unauthorized" || err.code === "forbidden") {
      this._emit(err.code, { op: null, topic: null, code: err.code, message: err.message });
      return;
    }
    this._emit("error", err);
  };

  // ---- subscribe ----------------------------------------------------------------------------
  /**
   * subscribe(topic, handler) -> unsubscribe function `off`, with `off.ready`: a Promise resolved
   * once the broker acked the subscription (rejected with Error(.code) if it refused it, e.g.
   * invalid_topic / too_many_subscriptions). Several handlers may share a topic; they share one
   * wire subscription and one `ready`. With `{recent: true}` (on the first subscribe of the
   * topic) the messages the broker keeps are delivered first, oldest first (a chat's backlog).
   */
  P.subscribe = function (topic, handler, sopts) {
    if (typeof handler !== "function") throw new TypeError("crier: subscribe(topic, handler) needs a function");
    topic = String(topic);
    if (this._closed) {
      var dead = function () {};
      dead.ready = Promise.reject(CrierError("closed", "crier: client closed"));
      dead.ready.catch(function () {});
      return dead;
    }
    var t = this._topics.get(topic);
    if (!t) {
      t = { handlers: new Set(), settle: null, last: null, epoch: null, ready: null,
            recent: !!(sopts && sopts.recent) };
      t.ready = new Promise(function (res, rej) { t.settle = { res: res, rej: rej }; });
      t.ready.catch(function () {}); // avoid unhandled rejections if the caller ignores ready
      this._topics.set(topic, t);
      if (this._state === "open") this._sendSubscribe(topic, t);
    }
    t.handlers.add(handler);
    var self = this;
    var off = function () { self.unsubscribe(topic, handler); };
    off.ready = t.ready;
    return off;
  };

  /** unsubscribe(topic, handler?): without handler, drop every handler of the topic. */
  P.unsubscribe = function (topic, handler) {
    topic = String(topic);
    var t = this._topics.get(topic);
    if (!t) return;
    if (handler) t.handlers.delete(handler); else t.handlers.clear();
    if (t.handlers.size > 0) return;
    this._topics.delete(topic);
    if (t.settle) { t.settle.rej(CrierError("unsubscribed", "crier: unsubscribed before the ack")); t.settle = null; }
    if (this._state === "open") {
      var id = this._nextId++;
      this._pending.set(id, { kind: "unsubscribe", topic: topic, resolve: function () {}, reject: function () {} });
      this._ws.send(JSON.stringify({ op: "unsubscribe", topic: topic, id: id }));
    }
  };

  // ---- publish ------------------------------------------------------------------------------
  /**
   * publish(topic, data, {timeout}) -> Promise<{seq}>. `data` is any JSON value.
   * While not connected the publish is buffered (at most opts.maxBufferedPublishes; beyond
   * that the NEW publish is rejected with code "buffer_full"). The timeout covers buffering
   * plus the round trip; a publish that timed out while still buffered is never sent.
   */
  P.publish = function (topic, data, popts) {
    var self = this;
    topic = String(topic);
    var timeout = popts && popts.timeout !== undefined ? popts.timeout : this.opts.ackTimeout;
    return new Promise(function (resolve, reject) {
      if (self._closed) return reject(CrierError("closed", "crier: client closed"));
      var id = self._nextId++;
      var frame = JSON.stringify({ op: "publish", topic: topic, data: data === undefined ? null : data, id: id });
      var p = { kind: "publish", topic: topic, id: id, frame: frame, resolve: resolve, reject: reject, timer: null, sent: false };
      if (self._state !== "open" && self._outbox.length >= self.opts.maxBufferedPublishes) {
        return reject(CrierError("buffer_full", "crier: " + self._outbox.length + " publishes already buffered while disconnected (maxBufferedPublishes)"));
      }
      if (timeout > 0 && timeout !== Infinity) {
        p.timer = setTimeout(function () {
          var i = self._outbox.indexOf(p);
          if (i >= 0) self._outbox.splice(i, 1);
          self._pending.delete(id);
          reject(CrierError("timeout", "crier: no ack for publish to " + JSON.stringify(topic) + " within " + timeout + " ms"));
        }, timeout);
      }
      self._pending.set(id, p);
      if (self._state === "open") { p.sent = true; self._ws.send(frame); }
      else self._outbox.push(p);
    });
  };

  return Crier;
});
