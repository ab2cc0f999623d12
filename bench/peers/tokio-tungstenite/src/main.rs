//! Benchmark peer: the crier v1 pub/sub protocol written the way a competent
//! tokio user would write it, with tokio-tungstenite.
//!
//! Shape: one task per connection reads commands; one writer task per
//! connection drains a bounded mpsc channel into the WebSocket sink. Topics
//! live in one `Mutex<HashMap<String, Topic>>`; a publish takes the lock,
//! assigns the topic's next `seq`, builds the outgoing frame once and
//! `try_send`s a cheap clone of it (`Utf8Bytes`/`Bytes` are refcounted) to
//! every subscriber's channel. Fanning out under the lock is what keeps the
//! per-topic order identical for all subscribers.
//!
//! Slow consumers: a full channel (QUEUE messages waiting) means the message
//! is dropped for that subscriber only, and counted.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, StatusCode};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_stream::wrappers::ReceiverStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{self, header, HeaderValue};
use tokio_tungstenite::tungstenite::Message;

/// Per-connection outgoing queue, in messages. Full => drop for that client.
const QUEUE: usize = 1024;
const SUBPROTOCOL: &str = "crier.v1";
const MAX_HTTP_BODY: usize = 64 << 20; // same as tungstenite's default max message size
const DEFAULT_LISTEN: &str = "127.0.0.1:8091";

type ConnId = u64;
type Tx = mpsc::Sender<Message>;

struct Topic {
    seq: u64,
    subs: HashMap<ConnId, Tx>,
}

#[derive(Default)]
struct Broker {
    topics: Mutex<HashMap<String, Topic>>,
    next_conn: AtomicU64,
    dropped: AtomicU64,
}

impl Broker {
    fn subscribe(&self, topic: &str, conn: ConnId, tx: &Tx) {
        let mut topics = self.topics.lock().unwrap();
        topics
            .entry(topic.to_owned())
            .or_insert_with(|| Topic { seq: 0, subs: HashMap::new() })
            .subs
            .insert(conn, tx.clone());
    }

    fn unsubscribe(&self, topic: &str, conn: ConnId) {
        if let Some(t) = self.topics.lock().unwrap().get_mut(topic) {
            t.subs.remove(&conn);
        }
    }

    /// Assigns the topic's next seq, builds the frame once with `build(seq)`
    /// and hands a clone to every subscriber. Topics (and their seq) live for
    /// the life of the process; publishing to a topic nobody follows still
    /// advances its seq.
    fn publish(&self, topic: &str, build: impl FnOnce(u64) -> Message) -> u64 {
        let mut topics = self.topics.lock().unwrap();
        if !topics.contains_key(topic) {
            topics.insert(topic.to_owned(), Topic { seq: 0, subs: HashMap::new() });
        }
        let t = topics.get_mut(topic).unwrap();
        t.seq += 1;
        let msg = build(t.seq);
        let mut dropped = 0;
        t.subs.retain(|_, tx| match tx.try_send(msg.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                dropped += 1;
                true
            }
            Err(TrySendError::Closed(_)) => false, // connection is gone
        });
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        t.seq
    }
}

fn valid_topic(t: &str) -> bool {
    (1..=256).contains(&t.len())
        && !t.chars().any(|c| c.is_control() || c.is_whitespace() || c == '*' || c == '>')
}

/// `{"op":"message","topic":..,"seq":..,"data":<publisher's bytes>}`
fn text_delivery(topic: &str, seq: u64, data: &RawValue) -> Message {
    let topic_json = serde_json::to_string(topic).unwrap();
    let mut s = String::with_capacity(48 + topic_json.len() + data.get().len());
    write!(s, r#"{{"op":"message","topic":{topic_json},"seq":{seq},"data":{}}}"#, data.get()).unwrap();
    Message::text(s)
}

/// `[N][topic][seq u64 BE][payload]`
fn binary_delivery(topic: &[u8], seq: u64, payload: &[u8]) -> Message {
    let mut b = BytesMut::with_capacity(1 + topic.len() + 8 + payload.len());
    b.put_u8(topic.len() as u8);
    b.put_slice(topic);
    b.put_u64(seq);
    b.put_slice(payload);
    Message::Binary(b.freeze())
}

fn ack(id: &RawValue, seq: Option<u64>) -> String {
    match seq {
        Some(seq) => format!(r#"{{"op":"ack","id":{},"seq":{seq}}}"#, id.get()),
        None => format!(r#"{{"op":"ack","id":{}}}"#, id.get()),
    }
}

fn error_reply(id: Option<&RawValue>, code: &str, message: &str) -> String {
    let mut s = String::from(r#"{"op":"error""#);
    if let Some(id) = id {
        write!(s, r#","id":{}"#, id.get()).unwrap();
    }
    let message = serde_json::to_string(message).unwrap();
    write!(s, r#","code":"{code}","message":{message}}}"#).unwrap();
    s
}

/// A command with every field kept raw, so that `data` is forwarded byte for
/// byte and type errors can be reported as `invalid_command`. (`some_raw`
/// keeps an explicit `null` as `Some("null")`: null is valid data.)
#[derive(Deserialize)]
struct Cmd<'a> {
    #[serde(borrow, default, deserialize_with = "some_raw")]
    op: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "some_raw")]
    topic: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "some_raw")]
    data: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "some_raw")]
    id: Option<&'a RawValue>,
}

fn some_raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// A JSON string's value, borrowed unless it contains escapes.
fn json_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    if let Ok(s) = serde_json::from_str::<&str>(raw.get()) {
        return Some(Cow::Borrowed(s));
    }
    serde_json::from_str::<String>(raw.get()).ok().map(Cow::Owned)
}

struct Conn {
    id: ConnId,
    tx: Tx,
    broker: Arc<Broker>,
    subscribed: HashSet<String>,
}

impl Conn {
    fn subscribe(&mut self, topic: &str) {
        if !self.subscribed.contains(topic) {
            self.broker.subscribe(topic, self.id, &self.tx);
            self.subscribed.insert(topic.to_owned());
        }
    }

    /// Handles one text command; returns the reply, if any.
    fn handle_text(&mut self, text: &str) -> Option<String> {
        let cmd: Cmd = match serde_json::from_str(text) {
            // serde's derive also accepts a JSON array for a struct: refuse it.
            Ok(_) if !text.trim_start().starts_with('{') => {
                return Some(error_reply(None, "invalid_command", "command must be a JSON object"))
            }
            Ok(cmd) => cmd,
            Err(e) if e.is_data() => {
                return Some(error_reply(None, "invalid_command", "command must be a JSON object"))
            }
            Err(e) => return Some(error_reply(None, "invalid_json", &e.to_string())),
        };
        let id = cmd.id;
        if let Some(id) = id {
            if !matches!(id.get().as_bytes()[0], b'"' | b'-' | b'0'..=b'9') {
                return Some(error_reply(None, "invalid_command", "id must be a string or a number"));
            }
        }
        let Some(op) = cmd.op.and_then(json_str) else {
            return Some(error_reply(id, "invalid_command", "missing or non-string \"op\""));
        };
        if !matches!(&*op, "subscribe" | "unsubscribe" | "publish") {
            return Some(error_reply(id, "unknown_op", &format!("unknown op {op:?}")));
        }
        let Some(topic) = cmd.topic.and_then(json_str) else {
            return Some(error_reply(id, "invalid_command", "missing or non-string \"topic\""));
        };
        if !valid_topic(&topic) {
            return Some(error_reply(id, "invalid_topic", "invalid topic name"));
        }
        let seq = match &*op {
            "subscribe" => {
                self.subscribe(&topic);
                None
            }
            "unsubscribe" => {
                if self.subscribed.remove(&*topic) {
                    self.broker.unsubscribe(&topic, self.id);
                }
                None
            }
            _ => {
                let Some(data) = cmd.data else {
                    return Some(error_reply(id, "invalid_command", "publish needs \"data\""));
                };
                Some(self.broker.publish(&topic, |seq| text_delivery(&topic, seq, data)))
            }
        };
        id.map(|id| ack(id, seq))
    }

    /// Binary publish: `[N][N bytes topic][payload]`.
    fn handle_binary(&mut self, b: &[u8]) -> Option<String> {
        let n = *b.first()? as usize;
        if b.len() < 1 + n {
            return Some(error_reply(None, "invalid_command", "binary frame shorter than its topic"));
        }
        let topic = &b[1..1 + n];
        match std::str::from_utf8(topic) {
            Ok(t) if valid_topic(t) => {
                self.broker.publish(t, |seq| binary_delivery(topic, seq, &b[1 + n..]));
                None
            }
            _ => Some(error_reply(None, "invalid_topic", "invalid topic name")),
        }
    }
}

fn http_error(status: http::StatusCode, body: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(body.to_owned()));
    *r.status_mut() = status;
    r
}

async fn serve_ws(broker: Arc<Broker>, stream: TcpStream) {
    let mut initial: Vec<String> = Vec::new();
    let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() != "/ws" {
            return Err(http_error(http::StatusCode::NOT_FOUND, "not found"));
        }
        let query = req.uri().query().unwrap_or("");
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            if k == "topic" {
                if !valid_topic(&v) {
                    return Err(http_error(http::StatusCode::BAD_REQUEST, "invalid topic"));
                }
                initial.push(v.into_owned());
            }
        }
        let offered = req
            .headers()
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == SUBPROTOCOL);
        if offered {
            resp.headers_mut()
                .insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
        }
        Ok(resp)
    };
    let ws = match tokio_tungstenite::accept_hdr_async(stream, callback).await {
        Ok(ws) => ws,
        Err(_) => return,
    };
    let (sink, mut source) = ws.split();
    let (tx, rx) = mpsc::channel(QUEUE);
    // `forward` feeds the sink while messages are ready and flushes when the
    // channel is momentarily empty, so bursts go out in few writes.
    let writer = tokio::spawn(ReceiverStream::new(rx).map(Ok).forward(sink));

    let mut conn = Conn {
        id: broker.next_conn.fetch_add(1, Ordering::Relaxed),
        tx,
        broker,
        subscribed: HashSet::new(),
    };
    for t in initial {
        conn.subscribe(&t);
    }
    while let Some(msg) = source.next().await {
        let reply = match msg {
            Ok(Message::Text(t)) => conn.handle_text(t.as_str()),
            Ok(Message::Binary(b)) => conn.handle_binary(&b),
            Ok(_) => None, // ping/pong/close are answered by tungstenite itself
            Err(_) => break,
        };
        if let Some(reply) = reply {
            // Replies to the client's own commands wait for queue space
            // (backpressure on that client) instead of being dropped.
            if conn.tx.send(Message::text(reply)).await.is_err() {
                break;
            }
        }
    }
    for t in &conn.subscribed {
        conn.broker.unsubscribe(t, conn.id);
    }
    drop(conn); // last Sender: the writer drains what is queued, closes, ends
    let _ = writer.await;
}

type HttpResponse = hyper::Response<Full<Bytes>>;

fn json_response(status: StatusCode, body: String) -> HttpResponse {
    hyper::Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// `POST /publish/<topic>` with a JSON body -> `200 {"seq":N}`.
async fn http_publish(broker: Arc<Broker>, req: hyper::Request<Incoming>) -> Result<HttpResponse, Infallible> {
    let Some(raw_topic) = req.uri().path().strip_prefix("/publish/") else {
        return Ok(json_response(StatusCode::NOT_FOUND, error_reply(None, "not_found", "not found")));
    };
    if req.method() != Method::POST {
        return Ok(json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            error_reply(None, "method_not_allowed", "use POST"),
        ));
    }
    let topic = match percent_encoding::percent_decode_str(raw_topic).decode_utf8() {
        Ok(t) if valid_topic(&t) => t.into_owned(),
        _ => {
            return Ok(json_response(
                StatusCode::BAD_REQUEST,
                error_reply(None, "invalid_topic", "invalid topic name"),
            ))
        }
    };
    let body = match Limited::new(req.into_body(), MAX_HTTP_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                error_reply(None, "invalid_command", "body unreadable or too large"),
            ))
        }
    };
    let data: &RawValue = match serde_json::from_slice(&body) {
        Ok(d) => d,
        Err(e) => {
            return Ok(json_response(
                StatusCode::BAD_REQUEST,
                error_reply(None, "invalid_json", &e.to_string()),
            ))
        }
    };
    let seq = broker.publish(&topic, |seq| text_delivery(&topic, seq, data));
    Ok(json_response(StatusCode::OK, format!(r#"{{"seq":{seq}}}"#)))
}

/// One port serves both: a connection whose first bytes are `POST ` goes to
/// hyper (HTTP publish); anything else goes to the WebSocket handshake.
async fn serve_tcp(broker: Arc<Broker>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut head = [0u8; 5];
    let is_post = matches!(stream.peek(&mut head).await, Ok(5) if &head == b"POST ");
    if is_post {
        let service = hyper::service::service_fn(move |req| http_publish(broker.clone(), req));
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .await;
    } else {
        serve_ws(broker, stream).await;
    }
}

fn listen_arg() -> String {
    let mut args = std::env::args().skip(1);
    let mut listen = DEFAULT_LISTEN.to_owned();
    while let Some(a) = args.next() {
        if a == "--listen" {
            listen = args.next().unwrap_or_else(|| usage());
        } else if let Some(v) = a.strip_prefix("--listen=") {
            listen = v.to_owned();
        } else {
            usage();
        }
    }
    listen
}

fn usage() -> ! {
    eprintln!("usage: crier-peer-tokio-tungstenite [--listen HOST:PORT]   (default {DEFAULT_LISTEN})");
    std::process::exit(2)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = listen_arg();
    let listener = TcpListener::bind(&listen).await?;
    println!("listening on {}", listener.local_addr()?);

    let broker = Arc::new(Broker::default());
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = sigterm.recv() => {}
        }
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    tokio::spawn(serve_tcp(broker.clone(), stream));
                }
                Err(e) => {
                    // e.g. EMFILE: back off briefly instead of spinning
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = &mut shutdown => break,
        }
    }
    eprintln!(
        "shutting down; {} messages dropped for slow consumers",
        broker.dropped.load(Ordering::Relaxed)
    );
    Ok(())
}
