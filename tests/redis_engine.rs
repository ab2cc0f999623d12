//! Scenario: several crier nodes share topics through one real Redis (`--engine redis`), with
//! subscribers and publishers on every node: every subscriber of a topic sees the same seq
//! order with no gap, loss or duplicate; acks carry the seq and epoch Redis assigned; Redis
//! paused, restarted with and without persistence, or a node killed, never loses an acked
//! message silently.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use common::redis::Redis;
use common::*;
use crier::server::ServerHandle;
use serde_json::{json, Value};

/// A crier node using `redis`, two shards, with `extra` flags.
fn node(redis: &Redis, extra: &[&str]) -> ServerHandle {
    let mut args = vec!["--engine-unready-after", "1s"];
    args.extend_from_slice(extra);
    common::redis::start_node(redis, "500ms", &args)
}

/// A subscriber to `topics` on `addr` (acks awaited: subscribed for real), reading on its own
/// thread until every topic's `until(frames)` says done or `within` passes. Returns every
/// frame it got, in order.
fn subscriber(
    addr: SocketAddr,
    topics: &[&str],
    until: impl Fn(&[Value]) -> bool + Send + 'static,
    within: Duration,
) -> JoinHandle<Vec<Value>> {
    let mut client = connect(addr, "/ws");
    for topic in topics {
        subscribe(&mut client, topic);
    }
    std::thread::spawn(move || read_until(&mut client, within, until))
}

/// Messages (`op: message`) of `topic` among `frames`.
fn messages<'a>(frames: &'a [Value], topic: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    frames
        .iter()
        .filter(move |f| f["op"] == "message" && f["topic"] == topic)
}

fn count_of(topics: Vec<String>, n: usize) -> impl Fn(&[Value]) -> bool + Send + 'static {
    move |frames: &[Value]| topics.iter().all(|t| messages(frames, t).count() >= n)
}

/// Publishes `data` for each of `items` on one connection, all sent before any ack is read
/// (pipelined); returns the acks, in order.
fn publish_all(addr: SocketAddr, topic: &str, items: Vec<Value>) -> Vec<Value> {
    let mut client = connect(addr, "/ws");
    for (i, data) in items.iter().enumerate() {
        send_json(
            &mut client,
            json!({"op": "publish", "topic": topic, "data": data, "id": i}),
        );
    }
    (0..items.len()).map(|_| next_json(&mut client)).collect()
}

/// Checks one subscriber's view of `topic`: seqs 1..=n in order, nothing missing or twice.
/// Returns seq -> data.
fn check_complete(frames: &[Value], topic: &str, n: u64) -> BTreeMap<u64, Value> {
    let seqs: Vec<u64> = messages(frames, topic)
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=n).collect::<Vec<_>>(),
        "topic {topic}: gap-free order"
    );
    messages(frames, topic)
        .map(|m| (m["seq"].as_u64().unwrap(), m["data"].clone()))
        .collect()
}

#[test]
fn three_nodes_share_topics_in_one_order_without_gap_loss_or_duplicate() {
    let redis = Redis::start(&[]);
    let nodes: Vec<ServerHandle> = (0..3).map(|_| node(&redis, &[])).collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.local_addr()).collect();
    let topics = ["alpha", "beta.x", "gamma"];
    const PER_PUBLISHER: usize = 150;
    let total = (PER_PUBLISHER * addrs.len()) as u64;

    // Two subscribers per node, each on every topic.
    let mut subscribers = Vec::new();
    for &addr in &addrs {
        for _ in 0..2 {
            let names = topics.iter().map(|t| t.to_string()).collect();
            subscribers.push(subscriber(
                addr,
                &topics,
                count_of(names, total as usize),
                Duration::from_secs(30),
            ));
        }
    }
    // One publisher per node and topic, all at once.
    let mut publishers = Vec::new();
    for (n, &addr) in addrs.iter().enumerate() {
        for topic in topics {
            publishers.push(std::thread::spawn(move || {
                let items = (0..PER_PUBLISHER)
                    .map(|i| json!({"node": n, "i": i}))
                    .collect();
                (topic, publish_all(addr, topic, items))
            }));
        }
    }
    let mut acked: HashMap<&str, Vec<(u64, String)>> = HashMap::new();
    for p in publishers {
        let (topic, acks) = p.join().unwrap();
        for ack in acks {
            assert_eq!(ack["op"], "ack", "{ack}");
            let epoch = ack["epoch"].as_str().expect("the ack carries the epoch");
            acked
                .entry(topic)
                .or_default()
                .push((ack["seq"].as_u64().unwrap(), epoch.to_string()));
        }
    }
    let views: Vec<Vec<Value>> = subscribers.into_iter().map(|s| s.join().unwrap()).collect();
    for topic in topics {
        let reference = check_complete(&views[0], topic, total);
        for view in &views[1..] {
            assert_eq!(
                check_complete(view, topic, total),
                reference,
                "same order everywhere"
            );
        }
        // Every publisher's messages in its own order; every ack names a distinct seq.
        for n in 0..addrs.len() {
            let mine: Vec<i64> = reference
                .values()
                .filter(|d| d["node"] == n)
                .map(|d| d["i"].as_i64().unwrap())
                .collect();
            assert_eq!(mine, (0..PER_PUBLISHER as i64).collect::<Vec<_>>());
        }
        let acks = &acked[topic];
        let mut seqs: Vec<u64> = acks.iter().map(|(s, _)| *s).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
        assert!(acks.iter().all(|(_, e)| *e == acks[0].1), "one epoch");
    }
    for node in nodes {
        stop(node, ANSWER_TIMEOUT);
    }
}

#[test]
fn a_subscribed_publisher_sees_its_message_before_the_ack_and_http_gets_the_epoch() {
    let redis = Redis::start(&[]);
    let a = node(&redis, &[]);
    let b = node(&redis, &[]);
    let mut client = connect(a.local_addr(), "/ws");
    subscribe(&mut client, "echo");
    for i in 0..20 {
        send_json(
            &mut client,
            json!({"op": "publish", "topic": "echo", "data": i, "id": i}),
        );
        let message = next_json(&mut client);
        assert_eq!(message["op"], "message", "the message comes first");
        assert_eq!(message["seq"], i + 1);
        let ack = next_json(&mut client);
        assert_eq!(ack["seq"], i + 1);
        assert!(ack["epoch"].is_string());
    }
    let (status, body) = http_publish(b.local_addr(), "echo", "application/json", b"\"h\"");
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["seq"], 21);
    let message = next_json(&mut client);
    assert_eq!(
        (message["seq"].clone(), message["data"].clone()),
        (json!(21), json!("h"))
    );
    stop(a, ANSWER_TIMEOUT);
    stop(b, ANSWER_TIMEOUT);
}

/// `GET /history` is not built for the Redis engine yet: a typed 501 refusal in JSON, not a
/// page that would wrongly say the topic has no messages.
#[test]
fn http_history_reads_are_refused_with_501_under_the_redis_engine() {
    use std::io::Write;
    let redis = Redis::start(&[]);
    let a = node(&redis, &[]);
    let mut client = connect(a.local_addr(), "/ws");
    subscribe(&mut client, "kept");
    let (status, _) = http_publish(a.local_addr(), "kept", "application/json", b"1");
    assert_eq!(status, 200);
    let mut stream = tcp(a.local_addr());
    stream
        .write_all(b"GET /history/kept HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let (status, body) = read_response(&mut stream);
    assert_eq!(status, 501, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        json!({
            "code": "engine_unavailable",
            "message": "history reads are not available with --engine redis yet"
        })
    );
}
