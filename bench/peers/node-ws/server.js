'use strict';
// Benchmark peer: the crier v1 pub/sub protocol on Node.js + `ws`, written
// the way `ws` is normally used: one process (Node runs JS on one thread; a
// pub/sub broker cannot simply be clustered without an external bus), an
// `http` server with `ws` in `noServer` mode, `perMessageDeflate: false`.
//
// Topics: Map<name, { seq, subs: Set<WebSocket> }>. A publish serializes
// the delivery once and sends that same buffer to every subscriber.
//
// Slow consumers: a subscriber whose `bufferedAmount` is above 1 MiB is
// skipped for that message (counted in `dropped`), so memory stays bounded.

const http = require('node:http');
const { isUtf8 } = require('node:buffer');
const { WebSocketServer } = require('ws');

const SUBPROTOCOL = 'crier.v1';
const MAX_BUFFERED = 1 << 20; // bytes queued on a socket before we skip it
const MAX_HTTP_BODY = 64 << 20;
const DEFAULT_LISTEN = '127.0.0.1:8090';

// ---------------------------------------------------------------- topics

const topics = new Map();
let dropped = 0;

function topicOf(name) {
  let t = topics.get(name);
  if (t === undefined) {
    t = { seq: 0, subs: new Set() };
    topics.set(name, t);
  }
  return t;
}

const BAD_TOPIC_CHAR = /[\s\p{Cc}*>]/u;
function validTopic(name) {
  return (
    typeof name === 'string' &&
    name.length > 0 &&
    Buffer.byteLength(name) <= 256 &&
    !BAD_TOPIC_CHAR.test(name)
  );
}

function fanout(t, buf, binary) {
  for (const ws of t.subs) {
    if (ws.bufferedAmount > MAX_BUFFERED) {
      dropped++;
      continue;
    }
    ws.send(buf, { binary });
  }
}

// Publishes parsed JSON `data`; returns the seq. Topics and their seq live
// for the life of the process; publishing to a topic nobody follows still
// advances its seq.
function publishJson(name, data) {
  const t = topicOf(name);
  const seq = ++t.seq;
  // `data` is re-serialized with JSON.stringify instead of being sliced out
  // of the publisher's frame. That reproduces the publisher's bytes exactly
  // only when they were compact JSON (no insignificant whitespace, numbers
  // in JS canonical form); the load generator sends compact JSON.
  const msg =
    '{"op":"message","topic":' + JSON.stringify(name) +
    ',"seq":' + seq + ',"data":' + JSON.stringify(data) + '}';
  // Encode to UTF-8 once, not once per subscriber.
  if (t.subs.size > 0) fanout(t, Buffer.from(msg), false);
  return seq;
}

// Binary publish [N][topic][payload] -> [N][topic][seq u64 BE][payload].
function publishBinary(topicBytes, name, payload) {
  const t = topicOf(name);
  const seq = ++t.seq;
  if (t.subs.size === 0) return seq;
  const n = topicBytes.length;
  const out = Buffer.allocUnsafe(1 + n + 8 + payload.length);
  out[0] = n;
  topicBytes.copy(out, 1);
  out.writeBigUInt64BE(BigInt(seq), 1 + n);
  payload.copy(out, 1 + n + 8);
  fanout(t, out, true);
  return seq;
}

// ------------------------------------------------------------- replies

function ack(id, seq) {
  return seq === undefined ? JSON.stringify({ op: 'ack', id }) : JSON.stringify({ op: 'ack', id, seq });
}

function errorReply(id, code, message) {
  // JSON.stringify leaves out `id` when it is undefined.
  return JSON.stringify({ op: 'error', id, code, message });
}

// ---------------------------------------------------------- connections

function onConnection(ws, initialTopics) {
  const mine = new Set();
  const subscribe = (name) => {
    if (!mine.has(name)) {
      mine.add(name);
      topicOf(name).subs.add(ws);
    }
  };
  for (const name of initialTopics) subscribe(name);

  ws.on('message', (data, isBinary) => {
    const reply = isBinary ? handleBinary(data) : handleText(data.toString());
    if (reply !== undefined) ws.send(reply);
  });
  ws.on('close', () => {
    for (const name of mine) topics.get(name).subs.delete(ws);
    mine.clear();
  });
  ws.on('error', () => {}); // protocol errors: `ws` closes the socket itself

  function handleText(text) {
    let cmd;
    try {
      cmd = JSON.parse(text);
    } catch (e) {
      return errorReply(undefined, 'invalid_json', e.message);
    }
    if (cmd === null || typeof cmd !== 'object' || Array.isArray(cmd)) {
      return errorReply(undefined, 'invalid_command', 'command must be a JSON object');
    }
    const id = cmd.id;
    if (id !== undefined && typeof id !== 'string' && typeof id !== 'number') {
      return errorReply(undefined, 'invalid_command', 'id must be a string or a number');
    }
    const op = cmd.op;
    if (typeof op !== 'string') return errorReply(id, 'invalid_command', 'missing or non-string "op"');
    if (op !== 'subscribe' && op !== 'unsubscribe' && op !== 'publish') {
      return errorReply(id, 'unknown_op', `unknown op ${JSON.stringify(op)}`);
    }
    const name = cmd.topic;
    if (typeof name !== 'string') return errorReply(id, 'invalid_command', 'missing or non-string "topic"');
    if (!validTopic(name)) return errorReply(id, 'invalid_topic', 'invalid topic name');

    let seq;
    if (op === 'subscribe') {
      subscribe(name);
    } else if (op === 'unsubscribe') {
      if (mine.delete(name)) topics.get(name).subs.delete(ws);
    } else {
      if (!('data' in cmd)) return errorReply(id, 'invalid_command', 'publish needs "data"');
      seq = publishJson(name, cmd.data);
    }
    return id === undefined ? undefined : ack(id, seq);
  }

  function handleBinary(buf) {
    if (buf.length === 0) return undefined;
    const n = buf[0];
    if (buf.length < 1 + n) return errorReply(undefined, 'invalid_command', 'binary frame shorter than its topic');
    const topicBytes = buf.subarray(1, 1 + n);
    const name = isUtf8(topicBytes) ? topicBytes.toString() : null;
    if (!validTopic(name)) return errorReply(undefined, 'invalid_topic', 'invalid topic name');
    publishBinary(topicBytes, name, buf.subarray(1 + n));
    return undefined;
  }
}

// --------------------------------------------------------------- server

const wss = new WebSocketServer({
  noServer: true,
  perMessageDeflate: false,
  handleProtocols: (protocols) => (protocols.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
});

function rejectUpgrade(socket, status) {
  socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
}

function sendJson(res, status, body) {
  const s = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(s) });
  res.end(s);
}

// POST /publish/<topic> with a JSON body -> 200 {"seq":N}
function onRequest(req, res) {
  const path = req.url.split('?', 1)[0];
  if (!path.startsWith('/publish/')) return sendJson(res, 404, { op: 'error', code: 'not_found', message: 'not found' });
  if (req.method !== 'POST') return sendJson(res, 405, { op: 'error', code: 'method_not_allowed', message: 'use POST' });
  let name;
  try {
    name = decodeURIComponent(path.slice('/publish/'.length));
  } catch {
    name = null;
  }
  if (!validTopic(name)) return sendJson(res, 400, { op: 'error', code: 'invalid_topic', message: 'invalid topic name' });

  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size > MAX_HTTP_BODY) {
      sendJson(res, 413, { op: 'error', code: 'invalid_command', message: 'body too large' });
      req.destroy();
      return;
    }
    chunks.push(chunk);
  });
  req.on('end', () => {
    let data;
    try {
      data = JSON.parse(Buffer.concat(chunks, size).toString());
    } catch (e) {
      return sendJson(res, 400, { op: 'error', code: 'invalid_json', message: e.message });
    }
    sendJson(res, 200, { seq: publishJson(name, data) });
  });
}

const server = http.createServer(onRequest); // Node 20: noDelay is on by default

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname !== '/ws') return rejectUpgrade(socket, '404 Not Found');
  const initialTopics = url.searchParams.getAll('topic'); // percent-decoded
  if (!initialTopics.every(validTopic)) return rejectUpgrade(socket, '400 Bad Request');
  wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, initialTopics));
});

function parseListen(argv) {
  let listen = DEFAULT_LISTEN;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--listen' && i + 1 < argv.length) listen = argv[++i];
    else if (argv[i].startsWith('--listen=')) listen = argv[i].slice('--listen='.length);
    else {
      console.error(`usage: node server.js [--listen HOST:PORT]   (default ${DEFAULT_LISTEN})`);
      process.exit(2);
    }
  }
  const colon = listen.lastIndexOf(':');
  const host = listen.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
  const port = Number(listen.slice(colon + 1));
  if (colon < 0 || !Number.isInteger(port)) {
    console.error(`bad --listen ${listen}: expected HOST:PORT`);
    process.exit(2);
  }
  return { host, port };
}

const { host, port } = parseListen(process.argv.slice(2));
server.listen(port, host, () => {
  const a = server.address();
  const shown = a.family === 'IPv6' ? `[${a.address}]` : a.address;
  console.log(`listening on ${shown}:${a.port}`);
});

function shutdown() {
  console.error(`shutting down; ${dropped} messages dropped for slow consumers`);
  server.close();
  for (const ws of wss.clients) ws.terminate();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
