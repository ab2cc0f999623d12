//! Scenario: two crier nodes on a 3-master Redis Cluster built with `redis-cli --cluster
//! create` on loopback (`--redis-cluster`): topics spread over slots keep one order for every
//! subscriber on both nodes, and when one master is restarted mid-run (losing its data) the
//! topics it held come back with a new epoch, announced the same way to everyone.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::redis::{free_port, Redis};
use common::*;
use crier::server::ServerHandle;
use serde_json::{json, Value};
use tungstenite::Message;

fn cluster() -> Vec<Redis> {
    let masters: Vec<Redis> = (0..3)
        .map(|_| {
            Redis::start_on(
                free_port(),
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ],
            )
        })
        .collect();
    let addrs: Vec<String> = masters
        .iter()
        .map(|m| format!("127.0.0.1:{}", m.port))
        .collect();
    let status = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("redis-cli runs (apt-get install redis-tools; .ci/run does)");
    assert!(status.success(), "redis-cli --cluster create");
    for master in &masters {
        wait_cluster_ok(master);
    }
    masters
}

fn wait_cluster_ok(master: &Redis) {
    eventually(Duration::from_secs(20), "cluster_state:ok", || {
        master
            .command(&["CLUSTER", "INFO"])
            .is_ok_and(|info| info.contains("cluster_state:ok"))
    });
}

fn node(masters: &[Redis]) -> ServerHandle {
    let mut args = vec![
        "--engine".to_string(),
        "redis".into(),
        "--redis-cluster".into(),
        "--threads".into(),
        "2".into(),
        "--redis-timeout".into(),
        "500ms".into(),
    ];
    for m in masters {
        args.push("--redis-url".into());
        args.push(m.url());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = start(&args);
    let status = server.engine_status().unwrap();
    eventually(Duration::from_secs(15), "the engine connects", || {
        status.is_up()
    });
    server
}

/// Each subscriber's frames for `topic`, as (op, epoch-or-seq, data) rows.
fn rows(frames: &[Value], topic: &str) -> Vec<(String, Value, Value)> {
    frames
        .iter()
        .filter(|f| f["topic"] == topic)
        .map(|f| match f["op"].as_str() {
            Some("message") => ("message".into(), f["seq"].clone(), f["data"].clone()),
            Some(op) => (op.to_string(), f["epoch"].clone(), f["count"].clone()),
            None => panic!("{f}"),
        })
        .collect()
}

#[test]
fn a_three_master_cluster_keeps_one_order_per_topic_across_slots() {
    run(false);
}

#[test]
fn a_three_master_cluster_survives_a_master_restart_with_one_order_per_topic() {
    run(true);
}

fn run(restart_a_master: bool) {
    let mut masters = cluster();
    let a = node(&masters);
    let b = node(&masters);
    let topics: Vec<String> = (0..6).map(|i| format!("room.{i}")).collect();
    // Slots of the topics' hash tags spread over the masters (checked, not assumed).
    let owners: std::collections::HashSet<String> = topics
        .iter()
        .map(|t| {
            let slot = masters[0]
                .command(&["CLUSTER", "KEYSLOT", &format!("crier:{{{t}}}:m")])
                .unwrap();
            let slot: u32 = slot.trim_start_matches(':').trim().parse().unwrap();
            (slot * 3 / 16384).to_string()
        })
        .collect();
    assert!(owners.len() >= 2, "topics over several masters");

    let mut subscribers = Vec::new();
    for addr in [a.local_addr(), b.local_addr()] {
        let mut client = connect(addr, "/ws");
        for t in &topics {
            subscribe(&mut client, t);
        }
        client
            .get_mut()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        subscribers.push(client);
    }
    let mut publishers = [
        connect(a.local_addr(), "/ws"),
        connect(b.local_addr(), "/ws"),
    ];
    let started = Instant::now();
    let mut acked = 0;
    let mut refused = 0;
    let mut restarted = false;
    for round in 0..120u64 {
        for (p, publisher) in publishers.iter_mut().enumerate() {
            for t in &topics {
                send_json(
                    publisher,
                    json!({"op": "publish", "topic": t, "data": [round, p], "id": round}),
                );
                let answer = next_json(publisher);
                match answer["op"].as_str() {
                    Some("ack") => acked += 1,
                    _ => {
                        assert_eq!(answer["code"], "engine_unavailable", "{answer}");
                        refused += 1;
                    }
                }
            }
        }
        if restart_a_master && round == 40 && !restarted {
            masters[1].restart();
            wait_cluster_ok(&masters[1]);
            restarted = true;
        }
        if round > 40 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert!(
        acked > 600,
        "most publishes went through ({acked} acked, {refused} refused)"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    // Both subscribers read until quiet.
    let mut views = Vec::new();
    for client in &mut subscribers {
        let mut frames = Vec::new();
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < Duration::from_secs(2) {
            match client.read() {
                Ok(Message::Text(text)) => {
                    frames.push(serde_json::from_str::<Value>(&text).unwrap());
                    quiet_since = Instant::now();
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
        views.push(frames);
    }
    for t in &topics {
        let first = rows(&views[0], t);
        assert_eq!(
            first,
            rows(&views[1], t),
            "topic {t}: one order for everyone"
        );
        // Within an epoch, seqs go up by one, or the gap is announced.
        let mut last = 0u64;
        for (op, key, count) in &first {
            match op.as_str() {
                "message" => {
                    let seq = key.as_u64().unwrap();
                    assert_eq!(seq, last + 1, "topic {t}: {first:?}");
                    last = seq;
                }
                "dropped" => last += count.as_u64().unwrap(),
                "epoch" => last = 0,
                other => panic!("unexpected {other}"),
            }
        }
        assert!(last > 0, "topic {t} got messages");
    }
    stop(a, ANSWER_TIMEOUT);
    stop(b, ANSWER_TIMEOUT);
}
