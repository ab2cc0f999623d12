//! Scenario: with `--engine redis`, a client leaves node A and comes back on node B with
//! `since` while publishing goes on: it gets every message after `since` exactly once (the
//! replay from the topic's Redis stream, then live ones); a publish to a topic no node
//! listens to and that keeps nothing is unheard; and after Redis lost everything (killed
//! without persistence) the same `since` is answered `recovered: false`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::redis::Redis;
use common::*;
use crier::server::ServerHandle;
use serde_json::{json, Value};

fn node(redis: &Redis, extra: &[&str]) -> ServerHandle {
    common::redis::start_node(redis, "300ms", extra)
}

/// Publishes one message with an id; returns (seq, epoch) from its ack.
fn publish(client: &mut Client, topic: &str, data: Value) -> (u64, Option<String>) {
    send_json(
        client,
        json!({"op": "publish", "topic": topic, "data": data, "id": 1}),
    );
    let ack = next_json(client);
    assert_eq!(ack["op"], "ack", "{ack}");
    (
        ack["seq"].as_u64().unwrap(),
        ack["epoch"].as_str().map(str::to_string),
    )
}

/// Reads message seqs until `last` is seen or `within` passes.
fn read_seqs_until(client: &mut Client, last: u64, within: Duration) -> Vec<u64> {
    let frames = read_until(client, within, |f| {
        f.last().and_then(|v| v["seq"].as_u64()) == Some(last)
    });
    frames
        .iter()
        .map(|v| {
            assert_eq!(v["op"], "message", "only messages expected: {v}");
            v["seq"].as_u64().unwrap()
        })
        .collect()
}

#[test]
fn a_client_resumes_on_another_node_exactly_once_while_publishing_goes_on() {
    let redis = Redis::start(&[]);
    let a = node(&redis, &[]);
    let b = node(&redis, &[]);
    let mut publisher = connect(a.local_addr(), "/ws");

    // Nobody listens and nothing is kept: unheard, like the local engine.
    assert_eq!(publish(&mut publisher, "news", json!(0)), (0, None));

    let mut reader = connect(a.local_addr(), "/ws");
    subscribe(&mut reader, "news");
    let mut epoch = String::new();
    for i in 1..=5 {
        let (seq, e) = publish(&mut publisher, "news", json!(i));
        assert_eq!(seq, i);
        epoch = e.expect("an epoch with every seq");
    }
    assert_eq!(
        epoch.len(),
        8,
        "8 characters, starting with a letter: {epoch}"
    );
    assert!(epoch.as_bytes()[0].is_ascii_alphabetic(), "{epoch}");
    assert_eq!(
        read_seqs_until(&mut reader, 5, ANSWER_TIMEOUT),
        [1, 2, 3, 4, 5]
    );
    drop(reader);
    // Nobody listens now, but the topic keeps history: still sequenced and kept.
    for i in 6..=8 {
        assert_eq!(
            publish(&mut publisher, "news", json!(i)),
            (i, Some(epoch.clone()))
        );
    }

    // Publishing goes on from A while the client comes back on B.
    let publisher_addr = a.local_addr();
    let publishing = std::thread::spawn(move || {
        let mut publisher = connect(publisher_addr, "/ws");
        for i in 9..=200 {
            assert_eq!(publish(&mut publisher, "news", json!(i)).0, i);
        }
    });
    let mut back = connect(b.local_addr(), "/ws");
    let ack = resume(&mut back, "news", json!({"seq": 5, "epoch": epoch}));
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(ack["epoch"], epoch.as_str(), "{ack}");
    let top = ack["seq"].as_u64().unwrap();
    assert!((8..=200).contains(&top), "{ack}");
    let seqs = read_seqs_until(&mut back, 200, Duration::from_secs(20));
    publishing.join().unwrap();
    assert_eq!(
        seqs,
        (6..=200).collect::<Vec<_>>(),
        "every message after since, once, in order"
    );

    // Redis loses everything: the same since is not recovered, and says the new epoch.
    drop(back);
    let mut redis = redis;
    redis.kill();
    redis.restart();
    let status = b.engine_status().unwrap();
    eventually(Duration::from_secs(15), "B reconnects", || status.is_up());
    let mut again = connect(b.local_addr(), "/ws");
    let ack = resume(&mut again, "news", json!({"seq": 200, "epoch": epoch}));
    assert_eq!(ack["recovered"], false, "{ack}");
    assert_ne!(ack["epoch"], epoch.as_str(), "{ack}");
    assert_eq!(ack["seq"], 0, "{ack}");

    stop(a, ANSWER_TIMEOUT);
    stop(b, ANSWER_TIMEOUT);
}

#[test]
fn many_clients_resuming_on_both_nodes_each_end_with_every_message_once() {
    let redis = Redis::start(&[]);
    let a = node(&redis, &[]);
    let b = node(&redis, &[]);
    let mut publisher = connect(a.local_addr(), "/ws");
    let keeper = {
        let mut keeper = connect(b.local_addr(), "/ws");
        subscribe(&mut keeper, "t");
        keeper
    };
    let (_, epoch) = publish(&mut publisher, "t", json!(1));
    let epoch = epoch.unwrap();
    let publisher_addr = a.local_addr();
    let publishing = std::thread::spawn(move || {
        let mut publisher = connect(publisher_addr, "/ws");
        for i in 2..=300 {
            assert_eq!(publish(&mut publisher, "t", json!(i)).0, i);
        }
    });
    let mut clients = Vec::new();
    for k in 0..8 {
        let addr = if k % 2 == 0 {
            a.local_addr()
        } else {
            b.local_addr()
        };
        let mut client = connect(addr, "/ws");
        let ack = resume(&mut client, "t", json!({"seq": 1, "epoch": epoch}));
        assert_eq!(ack["recovered"], true, "{ack}");
        clients.push(client);
    }
    publishing.join().unwrap();
    for client in &mut clients {
        let seqs = read_seqs_until(client, 300, Duration::from_secs(20));
        let unique: BTreeSet<u64> = seqs.iter().copied().collect();
        assert_eq!(unique.len(), seqs.len(), "no duplicate");
        assert_eq!(seqs, (2..=300).collect::<Vec<_>>());
    }
    drop(keeper);
    stop(a, ANSWER_TIMEOUT);
    stop(b, ANSWER_TIMEOUT);
}
