//! Scenario: clients subscribe by URL and by command, publish over WebSocket (text and binary)
//! and HTTP, and every subscriber on every shard receives each message once, byte for byte, in
//! the same `seq` order; errors are answered without closing; slow consumers are handled per
//! policy without slowing the others; closed connections leave no subscriptions behind.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use common::*;
use crier::metrics::Metric;
use serde_json::json;
use tungstenite::Message;

#[test]
fn subscribe_by_url_and_by_command_and_get_data_byte_for_byte() {
    let server = start(&[]);
    let addr = server.local_addr();
    let mut by_url = connect(addr, "/ws?topic=news");
    let mut by_command = connect(addr, "/ws");
    subscribe(&mut by_command, "news");
    // The URL subscription is in place once a later command on that connection is answered.
    send_json(
        &mut by_url,
        json!({"op": "subscribe", "topic": "other", "id": 1}),
    );
    assert_eq!(next_json(&mut by_url), json!({"op": "ack", "id": 1}));

    let mut publisher = connect(addr, "/ws");
    let data = r#"{ "b":1,  "a":[1, 2, "\u00e9"] }"#;
    let command = format!(r#"{{"op":"publish","topic":"news","data":{data},"id":"p1"}}"#);
    publisher.send(Message::text(command)).unwrap();
    let mut ack = next_json(&mut publisher);
    assert_eq!(ack["epoch"].as_str().map(str::len), Some(8), "{ack}");
    ack.as_object_mut().unwrap().remove("epoch");
    assert_eq!(ack, json!({"op": "ack", "id": "p1", "seq": 1}));
    let expected = format!(r#"{{"op":"message","topic":"news","seq":1,"data":{data}}}"#);
    for client in [&mut by_url, &mut by_command] {
        match next_data(client) {
            Message::Text(text) => assert_eq!(text.as_str(), expected),
            other => panic!("unexpected {other:?}"),
        }
    }
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn binary_publishes_arrive_as_binary_frames_with_topic_and_seq() {
    let server = start(&[]);
    let addr = server.local_addr();
    let mut subscriber = connect(addr, "/ws?topic=bin");
    let mut publisher = connect(addr, "/ws");
    let sync = |c: &mut Client| {
        send_json(c, json!({"op": "subscribe", "topic": "sync", "id": 0}));
        next_json(c);
    };
    sync(&mut subscriber);
    for (i, payload) in [&b"\x00\x01\xff"[..], b"", &[7u8; 70_000]]
        .iter()
        .enumerate()
    {
        let mut frame = vec![3u8];
        frame.extend_from_slice(b"bin");
        frame.extend_from_slice(payload);
        publisher.send(Message::binary(frame)).unwrap();
        let mut expected = vec![3u8];
        expected.extend_from_slice(b"bin");
        expected.extend_from_slice(&(i as u64 + 1).to_be_bytes());
        expected.extend_from_slice(payload);
        assert_eq!(next_data(&mut subscriber), Message::binary(expected));
    }
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn http_publish_delivers_json_verbatim_and_binary_raw() {
    let server = start(&[]);
    let addr = server.local_addr();
    let mut subscriber = connect(addr, "/ws?topic=caf%C3%A9");
    subscribe(&mut subscriber, "sync");
    let (status, body) = http_publish(
        addr,
        "caf%C3%A9",
        "application/json; charset=utf-8",
        b"[1, 2,3]",
    );
    assert_eq!((status, published_seq(&body)), (200, 1));
    match next_data(&mut subscriber) {
        Message::Text(text) => {
            assert_eq!(
                text.as_str(),
                r#"{"op":"message","topic":"café","seq":1,"data":[1, 2,3]}"#
            )
        }
        other => panic!("unexpected {other:?}"),
    }
    let (status, _) = http_publish(addr, "caf%C3%A9", "application/octet-stream", b"\x01\x02");
    assert_eq!(status, 200);
    let mut expected = vec![5u8];
    expected.extend_from_slice("café".as_bytes());
    expected.extend_from_slice(&2u64.to_be_bytes());
    expected.extend_from_slice(b"\x01\x02");
    assert_eq!(next_data(&mut subscriber), Message::binary(expected));
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn http_publish_refuses_bad_input_with_json_errors() {
    let server = start(&["--max-message-bytes", "100"]);
    let addr = server.local_addr();
    let (status, body) = http_publish(addr, "t", "application/json", b"{not json");
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["code"],
        "invalid_json"
    );
    let (status, body) = http_publish(addr, "t", "application/json", &[b'1'; 101]);
    assert_eq!(status, 413, "{body}");
    let (status, _) = http_publish(addr, "t", "text/plain", b"hi");
    assert_eq!(status, 415);
    let (status, body) = http_publish(addr, "a%20b", "application/json", b"1");
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["code"],
        "invalid_topic"
    );
    let smuggle = b"POST /publish/t HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                    Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert!(raw_exchange(addr, smuggle).starts_with("HTTP/1.1 400 "));
    let no_host =
        b"POST /publish/t HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 1\r\n\r\n1";
    assert!(raw_exchange(addr, no_host).starts_with("HTTP/1.1 400 "));
    let get = b"GET /publish/t HTTP/1.1\r\nHost: x\r\n\r\n";
    assert!(raw_exchange(addr, get).starts_with("HTTP/1.1 405 "));
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn http_publish_accepts_chunked_bodies_and_keeps_the_connection_alive() {
    let server = start(&[]);
    let addr = server.local_addr();
    let mut subscriber = connect(addr, "/ws?topic=t");
    subscribe(&mut subscriber, "sync");
    let mut stream = tcp(addr);
    stream
        .write_all(
            b"POST /publish/t HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n2\r\n\":\r\n1\r\n1\r\n1\r\n}\r\n0\r\n\r\n",
        )
        .unwrap();
    let (status, body) = read_response(&mut stream);
    assert_eq!((status, published_seq(&body)), (200, 1));
    stream
        .write_all(b"POST /publish/t HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1\r\n\r\n2")
        .unwrap();
    let (status, body) = read_response(&mut stream);
    assert_eq!((status, published_seq(&body)), (200, 2));
    assert_eq!(next_json(&mut subscriber)["data"], json!({"a": 1}));
    assert_eq!(next_json(&mut subscriber)["data"], json!(2));
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn unsubscribe_stops_delivery_and_the_publisher_hears_itself_only_when_subscribed() {
    // Without history, a publish nobody hears is not sequenced (seq 0, no epoch).
    let server = start(&["--history-size", "0"]);
    let addr = server.local_addr();
    let mut client = connect(addr, "/ws?topic=a&topic=b");
    send_json(
        &mut client,
        json!({"op": "publish", "topic": "c", "data": 0, "id": 1}),
    );
    assert_eq!(
        next_json(&mut client),
        json!({"op": "ack", "id": 1, "seq": 0}),
        "nobody listens to c"
    );
    send_json(
        &mut client,
        json!({"op": "unsubscribe", "topic": "a", "id": 2}),
    );
    assert_eq!(next_json(&mut client), json!({"op": "ack", "id": 2}));
    send_json(
        &mut client,
        json!({"op": "publish", "topic": "a", "data": "gone"}),
    );
    send_json(
        &mut client,
        json!({"op": "publish", "topic": "b", "data": "here"}),
    );
    let message = next_json(&mut client);
    assert_eq!(
        (message["topic"].as_str(), message["data"].as_str()),
        (Some("b"), Some("here"))
    );
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn every_bad_command_gets_its_error_code_and_the_connection_stays_open() {
    let server = start(&["--max-subscriptions-per-connection", "2"]);
    let mut client = connect(server.local_addr(), "/ws");
    let cases: [(&str, &str, Option<serde_json::Value>); 7] = [
        ("{nope", "invalid_json", None),
        (
            r#"{"op":"subscribe","id":5}"#,
            "invalid_command",
            Some(json!(5)),
        ),
        (r#"{"op":"dance","id":"x"}"#, "unknown_op", Some(json!("x"))),
        (
            r#"{"op":"subscribe","topic":"a b","id":6}"#,
            "invalid_topic",
            Some(json!(6)),
        ),
        (
            r#"{"op":"subscribe","topic":"wild*","id":7}"#,
            "invalid_topic",
            Some(json!(7)),
        ),
        (
            r#"{"op":"unsubscribe","topic":"never","id":8}"#,
            "not_subscribed",
            Some(json!(8)),
        ),
        (
            r#"{"op":"publish","topic":"","data":1}"#,
            "invalid_topic",
            None,
        ),
    ];
    for (command, code, id) in cases {
        client.send(Message::text(command)).unwrap();
        let answer = next_json(&mut client);
        assert_eq!(answer["op"], "error", "{command}");
        assert_eq!(answer["code"], code, "{command}: {answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
        match id {
            Some(id) => assert_eq!(answer["id"], id),
            None => assert!(answer.get("id").is_none_or(|v| v.is_null())),
        }
    }
    subscribe(&mut client, "one");
    subscribe(&mut client, "two");
    send_json(
        &mut client,
        json!({"op": "subscribe", "topic": "three", "id": 9}),
    );
    let answer = next_json(&mut client);
    assert_eq!(
        (answer["code"].as_str(), answer["id"].as_i64()),
        (Some("too_many_subscriptions"), Some(9))
    );
    let mut bad_binary = vec![10u8];
    bad_binary.extend_from_slice(b"short");
    client.send(Message::binary(bad_binary)).unwrap();
    assert_eq!(next_json(&mut client)["op"], "error");
    subscribe(&mut client, "one"); // still open, and subscribing twice is idempotent
    eventually(ANSWER_TIMEOUT, "errors are counted", || {
        server.metric(Metric::CommandErrors) == 9
    });
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn across_two_shards_every_subscriber_sees_the_same_gapless_order() {
    const SUBSCRIBERS: usize = 300;
    const PER_PUBLISHER: u64 = 100;
    let server = start(&["--threads", "2"]);
    let addr = server.local_addr();
    let mut subscribers: Vec<Client> = (0..SUBSCRIBERS)
        .map(|_| connect(addr, "/ws?topic=x"))
        .collect();
    for client in &mut subscribers {
        subscribe(client, "ready");
    }
    for shard in 0..2 {
        assert!(
            server.shard_metric(shard, Metric::WebSocketsOpen) > 0,
            "shard {shard} has subscribers"
        );
    }
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            std::thread::spawn(move || {
                let mut publisher = connect(addr, "/ws");
                for n in 0..PER_PUBLISHER {
                    send_json(
                        &mut publisher,
                        json!({"op": "publish", "topic": "x", "data": {"p": p, "n": n}}),
                    );
                }
                send_json(
                    &mut publisher,
                    json!({"op": "publish", "topic": "done", "data": 0, "id": "last"}),
                );
                assert_eq!(next_json(&mut publisher)["id"], "last");
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    let total = 4 * PER_PUBLISHER;
    let mut reference: Option<Vec<serde_json::Value>> = None;
    for client in &mut subscribers {
        let mut seen = Vec::new();
        for expected_seq in 1..=total {
            let message = next_json(client);
            assert_eq!(message["seq"], expected_seq, "no gaps, no duplicates");
            seen.push(message["data"].clone());
        }
        // Per publisher, its own order is kept too.
        let mut last: HashMap<i64, i64> = HashMap::new();
        for data in &seen {
            let (p, n) = (data["p"].as_i64().unwrap(), data["n"].as_i64().unwrap());
            assert_eq!(last.insert(p, n).map_or(0, |prev| prev + 1), n);
        }
        match &reference {
            None => reference = Some(seen),
            Some(reference) => assert_eq!(&seen, reference, "same order for everyone"),
        }
    }
    assert!(
        server.metric(Metric::MeshMessagesSent) > 0,
        "deliveries crossed shards"
    );
    eventually(ANSWER_TIMEOUT, "deliveries are counted", || {
        server.metric(Metric::Deliveries) == total * SUBSCRIBERS as u64
    });
    stop(server, ANSWER_TIMEOUT);
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// Publishes `count` messages of `size` bytes to `topic` over HTTP keep-alive.
fn flood(addr: std::net::SocketAddr, topic: &str, count: usize, size: usize) {
    let mut stream = tcp(addr);
    let body = format!("\"{}\"", "z".repeat(size));
    for _ in 0..count {
        let head = format!(
            "POST /publish/{topic} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body.as_bytes()).unwrap();
        assert_eq!(read_response(&mut stream).0, 200);
    }
}

/// A minimal subscriber that keeps up at full rate even in a debug build: it reads server
/// frames straight off the socket and checks only each frame's first bytes.
struct RawSubscriber {
    stream: std::net::TcpStream,
    payload: Vec<u8>,
}

impl RawSubscriber {
    fn connect(addr: std::net::SocketAddr, path: &str) -> RawSubscriber {
        use std::io::Read;
        let mut stream = tcp(addr);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"));
        RawSubscriber {
            stream,
            payload: Vec::new(),
        }
    }

    /// The next frame's opcode; its payload is in `self.payload`.
    fn next_frame(&mut self) -> u8 {
        use std::io::Read;
        let mut header = [0u8; 2];
        self.stream.read_exact(&mut header).unwrap();
        let len = match header[1] & 0x7f {
            126 => {
                let mut ext = [0u8; 2];
                self.stream.read_exact(&mut ext).unwrap();
                u16::from_be_bytes(ext) as usize
            }
            127 => {
                let mut ext = [0u8; 8];
                self.stream.read_exact(&mut ext).unwrap();
                u64::from_be_bytes(ext) as usize
            }
            short => short as usize,
        };
        self.payload.resize(len, 0);
        self.stream.read_exact(&mut self.payload).unwrap();
        header[0] & 0x0f
    }
}

/// Like `flood`, but never more than `ahead` messages ahead of what `progress` says a reader
/// has received.
fn flood_paced(
    addr: std::net::SocketAddr,
    topic: &str,
    count: usize,
    size: usize,
    progress: &std::sync::atomic::AtomicUsize,
    ahead: usize,
) {
    let mut stream = tcp(addr);
    let body = format!("\"{}\"", "z".repeat(size));
    for sent in 0..count {
        eventually(
            Duration::from_secs(60),
            "the healthy subscriber keeps reading",
            || progress.load(std::sync::atomic::Ordering::Acquire) + ahead >= sent,
        );
        let head = format!(
            "POST /publish/{topic} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body.as_bytes()).unwrap();
        assert_eq!(read_response(&mut stream).0, 200);
    }
}

#[test]
fn a_slow_consumer_is_disconnected_while_others_keep_receiving_and_memory_stays_bounded() {
    const COUNT: usize = 1500;
    const SIZE: usize = 64 * 1024;
    // History off: this measures what a stalled subscriber costs, not what history keeps.
    let server = start(&["--history-size", "0"]);
    let addr = server.local_addr();
    let mut stalled = connect(addr, "/ws?topic=firehose");
    subscribe(&mut stalled, "sync");
    stalled
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut healthy = RawSubscriber::connect(addr, "/ws?topic=firehose");
    eventually(ANSWER_TIMEOUT, "both subscribed", || {
        server.metric(Metric::Subscriptions) == 3
    });
    // The healthy subscriber's progress paces the publisher (at most 4 messages ahead, far
    // under the 1 MiB cap), so it keeps up however busy the machine is; the stalled one reads
    // nothing and passes its cap after a few dozen messages either way.
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let read_so_far = progress.clone();
    let reader = std::thread::spawn(move || {
        for seq in 1..=COUNT {
            assert_eq!(healthy.next_frame(), 1, "a text frame");
            read_so_far.store(seq, std::sync::atomic::Ordering::Release);
            let expected = format!(r#"{{"op":"message","topic":"firehose","seq":{seq},"#);
            assert!(
                healthy.payload.starts_with(expected.as_bytes()),
                "in order, without gaps"
            );
        }
        COUNT
    });
    // The stalled client starts reading as soon as /metrics counts its disconnect, as a
    // client would that comes back to life: the broker keeps a closing connection only for a
    // short linger, so a test that read it only after the whole flood could miss the close.
    let stalled_reader = std::thread::spawn(move || {
        eventually(ANSWER_TIMEOUT * 3, "the disconnect is counted", || {
            let (_, _, body) = http_get(addr, "/metrics");
            body.lines().any(|l| {
                l.starts_with("crier_slow_consumer_disconnects_total") && l.ends_with(" 1")
            })
        });
        // The close (1008, "slow consumer") comes after whatever was in flight.
        loop {
            match stalled.read() {
                Ok(Message::Close(Some(frame))) => {
                    assert_eq!(u16::from(frame.code), 1008);
                    // With history on (the default) it says where to resume.
                    let reason = frame.reason.as_str();
                    assert!(
                        reason.starts_with("slow consumer; resume firehose:"),
                        "{reason}"
                    );
                    break;
                }
                Ok(_) => {}
                Err(e) => panic!("expected close 1008, got {e}"),
            }
        }
    });
    let before = rss_bytes();
    flood_paced(addr, "firehose", COUNT, SIZE, &progress, 4);
    assert_eq!(
        reader.join().unwrap(),
        COUNT,
        "the healthy subscriber got everything"
    );
    let growth = rss_bytes().saturating_sub(before);
    assert!(
        growth < 48 << 20,
        "RSS grew {growth} bytes for {} MB published",
        (COUNT * SIZE) >> 20
    );
    stalled_reader.join().unwrap();
    assert_eq!(server.metric(Metric::SlowConsumerDisconnects), 1);
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn under_the_drop_policy_a_slow_consumer_is_told_how_many_it_missed() {
    const COUNT: usize = 400;
    const SIZE: usize = 64 * 1024;
    let server = start(&["--max-backlog-bytes", "262144", "--slow-consumer", "drop"]);
    let addr = server.local_addr();
    let mut stalled = connect(addr, "/ws?topic=firehose");
    subscribe(&mut stalled, "sync");
    flood(addr, "firehose", COUNT, SIZE);
    // One more message after the burst: the notice comes before it.
    let (status, _) = http_publish(addr, "firehose", "application/json", b"\"last\"");
    assert_eq!(status, 200);
    let (mut received, mut notified, mut last_seq) = (0u64, 0u64, 0u64);
    loop {
        let message = next_json(&mut stalled);
        match message["op"].as_str() {
            Some("dropped") => {
                assert_eq!(message["topic"], "firehose");
                notified += message["count"].as_u64().unwrap();
            }
            Some("message") => {
                let seq = message["seq"].as_u64().unwrap();
                assert!(seq > last_seq);
                last_seq = seq;
                received += 1;
                if message["data"] == "last" {
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        notified > 0,
        "the stalled subscriber fell behind and was told"
    );
    eventually(
        ANSWER_TIMEOUT,
        "every skipped message was announced",
        || server.metric(Metric::SlowConsumerDrops) == notified,
    );
    assert_eq!(
        received + notified,
        COUNT as u64 + 1,
        "nothing lost silently"
    );
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn ten_thousand_topics_with_one_subscriber_each_and_clean_up_on_close() {
    const CONNECTIONS: usize = 1000;
    const TOPICS_EACH: usize = 10;
    // History off: topics that keep messages outlive their subscribers by design.
    let server = start(&["--threads", "2", "--history-size", "0"]);
    let addr = server.local_addr();
    let mut clients: Vec<Client> = (0..CONNECTIONS)
        .map(|c| {
            let query: Vec<String> = (0..TOPICS_EACH)
                .map(|t| format!("topic=t{}", c * TOPICS_EACH + t))
                .collect();
            connect(addr, &format!("/ws?{}", query.join("&")))
        })
        .collect();
    for client in &mut clients {
        subscribe(client, "ready");
    }
    let total_topics = (CONNECTIONS * TOPICS_EACH) as u64;
    // Plus "ready", which both shards hold locally and one shard owns.
    eventually(ANSWER_TIMEOUT, "every topic registered", || {
        server.metric(Metric::TopicsLocal) == total_topics + 2
            && server.metric(Metric::TopicsOwned) == total_topics + 1
    });
    let mut publisher = connect(addr, "/ws");
    for topic in 0..CONNECTIONS * TOPICS_EACH {
        send_json(
            &mut publisher,
            json!({"op": "publish", "topic": format!("t{topic}"), "data": topic}),
        );
    }
    for (c, client) in clients.iter_mut().enumerate() {
        let mut got: Vec<u64> = (0..TOPICS_EACH)
            .map(|_| next_json(client)["data"].as_u64().unwrap())
            .collect();
        got.sort_unstable();
        let expected: Vec<u64> = (0..TOPICS_EACH)
            .map(|t| (c * TOPICS_EACH + t) as u64)
            .collect();
        assert_eq!(got, expected);
    }
    drop(clients);
    eventually(ANSWER_TIMEOUT, "subscriptions and topics are freed", || {
        server.metric(Metric::Subscriptions) == 0
            && server.metric(Metric::TopicsLocal) == 0
            && server.metric(Metric::TopicsOwned) == 0
    });
    stop(server, ANSWER_TIMEOUT);
}

/// The `seq` of an HTTP publish answer `{"seq":N,"epoch":E}`, checking the epoch is there.
fn published_seq(body: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(body).expect("JSON body");
    assert_eq!(v["epoch"].as_str().map(str::len), Some(8), "{body}");
    v["seq"].as_u64().expect("a seq")
}
