//! Scenario: Redis under the nodes misbehaves (paused with SIGSTOP, killed and restarted with
//! and without its AOF) and a node dies with SIGKILL: connections stay open, publishes are
//! refused with `engine_unavailable` while Redis is away, `/readyz` says so, nothing acked is
//! lost, and a Redis that lost its data gives a new epoch announced as `recovered:false`.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::redis::{wait_engine_up, Redis};
use common::*;
use crier::server::ServerHandle;
use serde_json::{json, Value};

fn node(redis: &Redis) -> ServerHandle {
    common::redis::start_node(redis, "300ms", &["--engine-unready-after", "500ms"])
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f["op"] == "message")
        .map(|f| f["seq"].as_u64().unwrap())
        .collect()
}

/// Publishes one message and returns the answer (ack or error).
fn publish(client: &mut Client, topic: &str, data: Value, id: u64) -> Value {
    send_json(
        client,
        json!({"op": "publish", "topic": topic, "data": data, "id": id}),
    );
    next_json(client)
}

#[test]
fn redis_paused_during_publishing_loses_nothing_acked_and_readyz_tells() {
    let redis = Redis::start(&[]);
    let a = node(&redis);
    let b = node(&redis);
    let mut subscriber = connect(b.local_addr(), "/ws");
    subscribe(&mut subscriber, "p");
    let mut publisher = connect(a.local_addr(), "/ws");

    let mut acked = Vec::new();
    let mut unavailable = 0;
    let mut paused_at = None;
    let mut saw_unready = false;
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed() < Duration::from_secs(4) {
        let answer = publish(&mut publisher, "p", json!(i), i);
        match answer["op"].as_str() {
            Some("ack") => acked.push((answer["seq"].as_u64().unwrap(), i)),
            Some("error") => {
                assert_eq!(answer["code"], "engine_unavailable", "{answer}");
                unavailable += 1;
            }
            _ => panic!("unexpected answer {answer}"),
        }
        i += 1;
        if i == 50 {
            redis.pause();
            paused_at = Some(Instant::now());
        }
        if let Some(at) = paused_at {
            if at.elapsed() > Duration::from_millis(1_200) && !saw_unready {
                let (status, _, body) = http_get(a.local_addr(), "/readyz");
                assert_eq!(status, 503, "{body}");
                saw_unready = true;
                redis.resume();
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(saw_unready, "the pause lasted long enough to be noticed");
    assert!(
        unavailable > 0,
        "publishes were refused while Redis was paused"
    );
    wait_engine_up(&a);
    eventually(Duration::from_secs(5), "/readyz is 200 again", || {
        http_get(a.local_addr(), "/readyz").0 == 200
    });
    let last = acked.last().expect("acks after the pause").0;
    let frames = read_until(&mut subscriber, Duration::from_secs(15), |f| {
        seqs(f).last() == Some(&last)
    });
    let got = seqs(&frames);
    let first = got[0];
    assert_eq!(got, (first..=last).collect::<Vec<_>>(), "gap-free");
    for (seq, data) in &acked {
        let message = frames
            .iter()
            .find(|f| f["op"] == "message" && f["seq"] == *seq)
            .unwrap_or_else(|| panic!("acked seq {seq} delivered"));
        assert_eq!(message["data"], *data);
    }
    assert!(frames
        .iter()
        .all(|f| f["op"] != "dropped" && f["op"] != "epoch"));
    let metrics = a.metrics_text();
    assert!(
        metrics.contains("crier_engine_disconnected_total 1")
            || metrics.contains("crier_engine_disconnected_total 2"),
        "the state change is counted once per loss"
    );
    stop(a, ANSWER_TIMEOUT);
    stop(b, ANSWER_TIMEOUT);
}

#[test]
fn redis_restarted_without_persistence_gives_a_new_epoch_announced_as_not_recovered() {
    let mut redis = Redis::start(&[]);
    let a = node(&redis);
    let b = node(&redis);
    let mut subscriber = connect(b.local_addr(), "/ws");
    subscribe(&mut subscriber, "r");
    let mut publisher = connect(a.local_addr(), "/ws");
    let mut first_epoch = String::new();
    for i in 1..=10u64 {
        let ack = publish(&mut publisher, "r", json!(i), i);
        assert_eq!(ack["seq"], i);
        first_epoch = ack["epoch"].as_str().unwrap().to_string();
    }
    let frames = read_until(&mut subscriber, ANSWER_TIMEOUT, |f| seqs(f).len() == 10);
    assert_eq!(seqs(&frames), (1..=10).collect::<Vec<_>>());

    redis.kill();
    eventually(Duration::from_secs(5), "the engine notices", || {
        !a.engine_status().unwrap().is_up()
    });
    let (status, body) = http_publish(a.local_addr(), "r", "application/json", b"0");
    assert_eq!(status, 503);
    assert!(body.contains("engine_unavailable"), "{body}");
    let refused = publish(&mut publisher, "r", json!("x"), 99);
    assert_eq!(refused["code"], "engine_unavailable");

    redis.restart();
    wait_engine_up(&a);
    wait_engine_up(&b);
    let frames = read_until(&mut subscriber, ANSWER_TIMEOUT, |f| {
        f.iter().any(|f| f["op"] == "epoch")
    });
    let notice = frames
        .iter()
        .find(|f| f["op"] == "epoch")
        .expect("an epoch notice");
    assert_eq!(notice["recovered"], false);
    assert_eq!(notice["topic"], "r");
    let new_epoch = notice["epoch"].as_str().unwrap().to_string();
    assert_ne!(
        new_epoch, first_epoch,
        "never the old epoch with reused seqs"
    );
    for i in 1..=5u64 {
        let ack = publish(&mut publisher, "r", json!(i), i);
        assert_eq!(ack["seq"], i);
        assert_eq!(ack["epoch"], new_epoch.as_str());
    }
    let frames = read_until(&mut subscriber, ANSWER_TIMEOUT, |f| seqs(f).len() == 5);
    assert_eq!(seqs(&frames), [1, 2, 3, 4, 5]);
    stop(a, ANSWER_TIMEOUT);
    stop(b, ANSWER_TIMEOUT);
}

#[test]
fn redis_restarted_with_its_aof_recovers_fully() {
    let mut redis = Redis::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let a = node(&redis);
    let b = node(&redis);
    let mut subscriber = connect(b.local_addr(), "/ws");
    subscribe(&mut subscriber, "aof");
    let mut publisher = connect(a.local_addr(), "/ws");
    let mut epoch = Value::Null;
    for i in 1..=10u64 {
        let ack = publish(&mut publisher, "aof", json!(i), i);
        epoch = ack["epoch"].clone();
    }
    redis.restart();
    wait_engine_up(&a);
    wait_engine_up(&b);
    for i in 11..=15u64 {
        let ack = publish(&mut publisher, "aof", json!(i), i);
        assert_eq!(ack["seq"], i, "seq goes on after the restart");
        assert_eq!(ack["epoch"], epoch, "same epoch");
    }
    let frames = read_until(&mut subscriber, ANSWER_TIMEOUT, |f| seqs(f).len() == 15);
    assert_eq!(seqs(&frames), (1..=15).collect::<Vec<_>>());
    assert!(
        frames.iter().all(|f| f["op"] == "message"),
        "no notice: {frames:?}"
    );
    stop(a, ANSWER_TIMEOUT);
    stop(b, ANSWER_TIMEOUT);
}

/// The crier binary as a separate process (so it can be SIGKILLed); returns it and its address.
fn spawn_node(redis: &Redis) -> (std::process::Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crier"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--engine",
            "redis",
            "--redis-url",
            &redis.url(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the crier binary starts");
    let stderr = child.stderr.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    for stream in [
        Box::new(stderr) as Box<dyn std::io::Read + Send>,
        Box::new(stdout),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Some(rest) = line.split(" listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
            }
        });
    }
    let addr = rx
        .recv_timeout(ANSWER_TIMEOUT)
        .expect("the node says where it listens");
    (child, addr.parse().expect("an address"))
}

#[test]
fn a_node_killed_with_sigkill_leaves_the_others_going() {
    let redis = Redis::start(&[]);
    let a = node(&redis);
    let (mut doomed, doomed_addr) = spawn_node(&redis);
    let mut on_doomed = connect(doomed_addr, "/ws");
    subscribe(&mut on_doomed, "k");
    let mut on_a = connect(a.local_addr(), "/ws");
    subscribe(&mut on_a, "k");
    let mut publisher_doomed = connect(doomed_addr, "/ws");
    let mut publisher_a = connect(a.local_addr(), "/ws");
    for i in 1..=20u64 {
        let publisher = if i % 2 == 0 {
            &mut publisher_a
        } else {
            &mut publisher_doomed
        };
        assert_eq!(publish(publisher, "k", json!(i), i)["seq"], i);
    }
    doomed.kill().expect("SIGKILL");
    let _ = doomed.wait();
    for i in 21..=40u64 {
        assert_eq!(publish(&mut publisher_a, "k", json!(i), i)["seq"], i);
    }
    let frames = read_until(&mut on_a, ANSWER_TIMEOUT, |f| seqs(f).len() == 40);
    assert_eq!(seqs(&frames), (1..=40).collect::<Vec<_>>());
    stop(a, ANSWER_TIMEOUT);
}
