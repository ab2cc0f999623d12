//! Scenario: a backend reads topics' kept messages over HTTP with `GET /history/<topic>`, on a
//! keep-alive connection to a 4-shard broker, so most topics are owned by another shard than
//! the one answering: pages by `since` and `limit`, JSON data verbatim, binary data in base64,
//! a topic with no state, and the refusals.

mod common;

use std::io::Write;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

/// `GET path` on a keep-alive connection; returns (status, body as JSON).
fn get(stream: &mut std::net::TcpStream, path: &str) -> (u16, Value) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let (status, body) = read_response(stream);
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body:?}"));
    (status, json)
}

fn publish_json(addr: std::net::SocketAddr, topic: &str, body: &str) -> (u64, String) {
    let (status, answer) = http_publish(addr, topic, "application/json", body.as_bytes());
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    (
        answer["seq"].as_u64().unwrap(),
        answer["epoch"].as_str().unwrap().to_string(),
    )
}

/// A subscriber to `topic` (acked): a topic has state, and keeps publishes, only once some
/// subscriber wanted it (a publish to a topic with no state is unheard).
fn listener(addr: std::net::SocketAddr, topic: &str) -> Client {
    let mut client = connect(addr, "/ws");
    subscribe(&mut client, topic);
    client
}

#[test]
fn history_pages_kept_messages_from_whichever_shard_owns_the_topic() {
    let server = start(&["--threads", "4", "--max-replay-messages", "50"]);
    let addr = server.local_addr();
    let topics: Vec<String> = (0..8).map(|t| format!("room.{t}")).collect();
    let _listeners: Vec<Client> = topics.iter().map(|t| listener(addr, t)).collect();
    let mut epochs = Vec::new();
    for topic in &topics {
        let mut epoch = String::new();
        for i in 1..=5 {
            // Spacing kept as published: JSON data goes out verbatim.
            let (seq, e) = publish_json(addr, topic, &format!("{{\"i\": {i}}}"));
            assert_eq!(seq, i);
            epoch = e;
        }
        epochs.push(epoch);
    }
    let mut stream = tcp(addr);
    for (topic, epoch) in topics.iter().zip(&epochs) {
        let (status, page) = get(&mut stream, &format!("/history/{topic}"));
        assert_eq!(status, 200);
        let messages: Vec<Value> = (1..=5)
            .map(|i| json!({"seq": i, "data": {"i": i}}))
            .collect();
        assert_eq!(
            page,
            json!({"epoch": epoch, "top": 5, "messages": messages})
        );
        let (_, page) = get(&mut stream, &format!("/history/{topic}?since=2&limit=2"));
        assert_eq!(
            page,
            json!({"epoch": epoch, "top": 5, "messages": [
                {"seq": 3, "data": {"i": 3}}, {"seq": 4, "data": {"i": 4}}
            ]})
        );
        let (_, page) = get(&mut stream, &format!("/history/{topic}?since=5"));
        assert_eq!(page["messages"], json!([]));
    }
    // The raw body keeps the publisher's bytes.
    stream
        .write_all(b"GET /history/room.0?limit=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let (_, body) = read_response(&mut stream);
    assert!(body.contains(r#""data":{"i": 1}"#), "{body}");
    // `limit` is capped at --max-replay-messages.
    for i in 6..=60 {
        publish_json(addr, "room.0", &i.to_string());
    }
    let (_, page) = get(&mut stream, "/history/room.0?limit=1000");
    assert_eq!(page["messages"].as_array().unwrap().len(), 50);
    assert_eq!(page["top"], 60);
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn binary_messages_come_back_in_base64_and_unknown_topics_have_no_epoch() {
    let server = start(&["--threads", "4"]);
    let addr = server.local_addr();
    let payload = [0u8, 1, 2, 0xfe, 0xff];
    let _listener = listener(addr, "bin");
    let (status, answer) = http_publish(addr, "bin", "application/octet-stream", &payload);
    assert_eq!(status, 200, "{answer}");
    let mut stream = tcp(addr);
    let (status, page) = get(&mut stream, "/history/bin");
    assert_eq!(status, 200);
    let encoded = base64::engine::general_purpose::STANDARD.encode(payload);
    assert_eq!(
        page["messages"],
        json!([{"seq": 1, "data": encoded, "binary": true}])
    );
    for topic in ["never.used", "also%2Eunused", "x.y.z"] {
        let (status, page) = get(&mut stream, &format!("/history/{topic}"));
        assert_eq!(status, 200);
        assert_eq!(page, json!({"epoch": null, "top": 0, "messages": []}));
    }
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn bad_history_requests_are_refused_with_json_errors() {
    let server = start(&[]);
    let addr = server.local_addr();
    let cases = [
        ("/history/", 400, "invalid_topic"),
        ("/history/a%zz", 400, "invalid_topic"),
        ("/history/news?since=-1", 400, "invalid_command"),
        ("/history/news?limit=ten", 400, "invalid_command"),
        ("/history/news?since=1&since=2", 400, "invalid_command"),
    ];
    for (path, want, code) in cases {
        let (status, _head, body) = http_get(addr, path);
        assert_eq!(status, want, "{path}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["code"], code, "{path}");
    }
    let answer = raw_exchange(
        addr,
        b"POST /history/news HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    stop(server, ANSWER_TIMEOUT);
}
