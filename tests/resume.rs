//! Scenario: clients lose their connection and come back with `since` (by command or in the
//! URL), and get every message they missed exactly once, in order, followed by live ones, when
//! the topic's history still covers the gap (also across shards while a publisher runs flat
//! out); otherwise `recovered:false` and nothing replayed: wrong epoch, too old, over the
//! replay cap, past the TTL, evicted by the byte budget, or after a broker restart.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tungstenite::Message;

/// Publishes `data` on `topic` with an id and returns the ack's (seq, epoch).
fn publish(client: &mut Client, topic: &str, data: Value) -> (u64, String) {
    send_json(
        client,
        json!({"op": "publish", "topic": topic, "data": data, "id": "p"}),
    );
    let ack = next_json(client);
    assert_eq!(ack["op"], "ack", "{ack}");
    (
        ack["seq"].as_u64().expect("seq"),
        ack["epoch"].as_str().expect("epoch").to_string(),
    )
}

/// A subscriber of `topic`, acknowledged: a topic starts (gets an epoch and keeps history)
/// only once somebody listens; a publish to a topic nobody ever listened to is unheard.
fn first_listener(addr: std::net::SocketAddr, topic: &str) -> Client {
    let mut client = connect(addr, "/ws");
    subscribe(&mut client, topic);
    client
}

fn seq_of(message: &Value) -> u64 {
    assert_eq!(message["op"], "message", "{message}");
    message["seq"].as_u64().unwrap()
}

#[test]
fn a_resume_within_the_window_gets_exactly_the_missed_messages_then_live_ones() {
    let server = start(&[]);
    let addr = server.local_addr();
    let mut publisher = connect(addr, "/ws");
    let mut reader = connect(addr, "/ws?topic=news");
    subscribe(&mut connect(addr, "/ws"), "sync");
    let mut epoch = String::new();
    for i in 1..=5 {
        epoch = publish(&mut publisher, "news", json!(i)).1;
        assert_eq!(seq_of(&next_json(&mut reader)), i);
    }
    drop(reader);
    for i in 6..=8 {
        assert_eq!(
            publish(&mut publisher, "news", json!(i)),
            (i, epoch.clone())
        );
    }
    let mut back = connect(addr, "/ws");
    let ack = resume(&mut back, "news", json!({"seq": 5, "epoch": epoch}));
    assert_eq!(
        ack,
        json!({"op":"ack","id":3,"topic":"news","seq":8,"epoch":epoch,"recovered":true})
    );
    for i in 6..=8 {
        let message = next_json(&mut back);
        assert_eq!((seq_of(&message), &message["data"]), (i, &json!(i)));
    }
    publish(&mut publisher, "news", json!(9));
    assert_eq!(seq_of(&next_json(&mut back)), 9);
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn a_topic_with_history_is_sequenced_and_kept_while_nobody_listens() {
    let server = start(&[]);
    let addr = server.local_addr();
    let mut publisher = connect(addr, "/ws");
    let listener = first_listener(addr, "quiet");
    let (seq, epoch) = publish(&mut publisher, "quiet", json!("a"));
    drop(listener);
    assert_eq!(seq, 1);
    assert_eq!(
        publish(&mut publisher, "quiet", json!("b")),
        (2, epoch.clone())
    );
    // A page's first load asks for what is kept.
    let mut page = connect(addr, "/ws");
    let ack = resume(&mut page, "quiet", json!({"seq": 0}));
    assert_eq!((&ack["seq"], &ack["recovered"]), (&json!(2), &json!(true)));
    assert_eq!(next_json(&mut page)["data"], "a");
    assert_eq!(next_json(&mut page)["data"], "b");
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn wrong_epoch_too_old_and_over_the_cap_are_not_recovered_and_replay_nothing() {
    let server = start(&["--history-size", "5", "--max-replay-messages", "3"]);
    let addr = server.local_addr();
    let mut publisher = connect(addr, "/ws");
    let listener = first_listener(addr, "news");
    let mut epoch = publish(&mut publisher, "news", json!(1)).1;
    drop(listener);
    for i in 2..=10 {
        epoch = publish(&mut publisher, "news", json!(i)).1;
    }
    let cases = [
        (json!({"seq": 9, "epoch": "Wrong1"}), false),
        (json!({"seq": 4, "epoch": epoch}), false), // 5 is gone: only 6..=10 are kept
        (json!({"seq": 6, "epoch": epoch}), false), // 4 missing, cap 3
        (json!({"seq": 7, "epoch": epoch}), true),  // 3 missing
    ];
    for (since, recovered) in cases {
        let mut client = connect(addr, "/ws");
        let ack = resume(&mut client, "news", since.clone());
        assert_eq!(ack["recovered"], json!(recovered), "{since}: {ack}");
        assert_eq!((&ack["seq"], &ack["epoch"]), (&json!(10), &json!(epoch)));
        // Replayed frames come right after the ack, before the answer to a later command.
        if recovered {
            for seq in 8..=10 {
                assert_eq!(seq_of(&next_json(&mut client)), seq);
            }
        }
        send_json(
            &mut client,
            json!({"op": "unsubscribe", "topic": "news", "id": 9}),
        );
        assert_eq!(
            next_json(&mut client),
            json!({"op": "ack", "id": 9}),
            "{since}"
        );
    }
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn past_the_ttl_the_topic_is_gone_and_comes_back_with_a_new_epoch() {
    let server = start(&["--history-ttl", "200ms"]);
    let addr = server.local_addr();
    let mut publisher = connect(addr, "/ws");
    let listener = first_listener(addr, "news");
    let (_, epoch) = publish(&mut publisher, "news", json!(1));
    drop(listener);
    std::thread::sleep(Duration::from_millis(600));
    let mut client = connect(addr, "/ws");
    let ack = resume(&mut client, "news", json!({"seq": 0, "epoch": epoch}));
    assert_eq!(ack["recovered"], false, "{ack}");
    assert_eq!(ack["seq"], 0);
    assert_ne!(ack["epoch"], json!(epoch), "a new incarnation");
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn the_byte_budget_evicts_the_oldest_messages_first() {
    // One shard, 40 KiB: about 35 messages of 1 KiB.
    let server = start(&["--threads", "1", "--max-history-bytes", "40960"]);
    let addr = server.local_addr();
    let mut publisher = connect(addr, "/ws");
    let big = "x".repeat(1000);
    let listener = first_listener(addr, "a");
    let (_, epoch) = publish(&mut publisher, "a", json!(big));
    drop(listener);
    let listener = first_listener(addr, "b");
    publish(&mut publisher, "b", json!(big));
    drop(listener);
    for _ in 1..60 {
        publish(&mut publisher, "b", json!(big));
    }
    let mut client = connect(addr, "/ws");
    // a's only message was the oldest: evicted, and a forgotten with it.
    let ack = resume(&mut client, "a", json!({"seq": 0, "epoch": epoch}));
    assert_eq!(ack["recovered"], false, "{ack}");
    assert_ne!(ack["epoch"], json!(epoch));
    // b keeps its newest messages only.
    let ack = resume(&mut client, "b", json!({"seq": 0}));
    assert_eq!(
        (&ack["seq"], &ack["recovered"]),
        (&json!(60), &json!(false))
    );
    let first = seq_of(&next_json(&mut client));
    assert!((20..60).contains(&first), "kept from {first}");
    for seq in first + 1..=60 {
        assert_eq!(seq_of(&next_json(&mut client)), seq);
    }
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn a_restarted_broker_answers_with_a_new_epoch() {
    let server = start(&[]);
    let mut publisher = connect(server.local_addr(), "/ws");
    let listener = first_listener(server.local_addr(), "news");
    let (_, epoch) = publish(&mut publisher, "news", json!(1));
    drop((listener, publisher));
    stop(server, ANSWER_TIMEOUT);
    let server = start(&[]);
    let mut client = connect(server.local_addr(), "/ws");
    let ack = resume(&mut client, "news", json!({"seq": 1, "epoch": epoch}));
    assert_eq!(ack["recovered"], false, "{ack}");
    assert_ne!(ack["epoch"], json!(epoch));
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn binary_messages_are_replayed_as_the_same_binary_frames() {
    let server = start(&[]);
    let addr = server.local_addr();
    let mut publisher = connect(addr, "/ws");
    let listener = first_listener(addr, "bin");
    let (_, epoch) = publish(&mut publisher, "bin", json!("first"));
    drop(listener);
    let mut expected = Vec::new();
    for (i, payload) in [&b"\x00\x01\xff"[..], b"", &[7u8; 70_000]]
        .iter()
        .enumerate()
    {
        let mut frame = vec![3u8];
        frame.extend_from_slice(b"bin");
        frame.extend_from_slice(payload);
        publisher.send(Message::binary(frame)).unwrap();
        let mut delivered = vec![3u8];
        delivered.extend_from_slice(b"bin");
        delivered.extend_from_slice(&(i as u64 + 2).to_be_bytes());
        delivered.extend_from_slice(payload);
        expected.push(Message::binary(delivered));
    }
    // The binary publishes carry no ack: a later acked publish says they are sequenced.
    assert_eq!(publish(&mut publisher, "bin", json!("last")).0, 5);
    let mut client = connect(addr, "/ws");
    let ack = resume(&mut client, "bin", json!({"seq": 1, "epoch": epoch}));
    assert_eq!(ack["recovered"], true, "{ack}");
    for message in expected {
        assert_eq!(next_data(&mut client), message);
    }
    assert_eq!(next_json(&mut client)["data"], "last");
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn the_url_form_resumes_at_connect() {
    let server = start(&[]);
    let addr = server.local_addr();
    let mut publisher = connect(addr, "/ws");
    let listener = first_listener(addr, "news");
    let mut epoch = publish(&mut publisher, "news", json!(1)).1;
    drop(listener);
    for i in 2..=4 {
        epoch = publish(&mut publisher, "news", json!(i)).1;
    }
    let mut client = connect(addr, &format!("/ws?topic=news&since=news:2:{epoch}"));
    let ack = next_json(&mut client);
    assert_eq!(
        ack,
        json!({"op":"ack","topic":"news","seq":4,"epoch":epoch,"recovered":true})
    );
    assert_eq!(seq_of(&next_json(&mut client)), 3);
    assert_eq!(seq_of(&next_json(&mut client)), 4);
    // A broken since is refused at the handshake.
    let refused = try_connect(addr, "/ws?since=news:x:Ab");
    assert!(refused.is_err());
    stop(server, ANSWER_TIMEOUT);
}

/// Four shards; the publisher publishes 3,000 messages as fast as it can while six readers
/// keep dropping their connection after a random number of messages and resuming with
/// `since` on a new one (landing on any shard). Every reader ends with exactly 1..=3000.
#[test]
fn readers_dropping_and_resuming_across_shards_under_a_flat_out_publisher_see_every_message_once() {
    const TOTAL: u64 = 3000;
    const READERS: usize = 6;
    let server = start(&[
        "--threads",
        "4",
        "--history-size",
        "5000",
        "--max-replay-messages",
        "5000",
    ]);
    let addr = server.local_addr();
    let mut publisher = connect(addr, "/ws");
    let listener = first_listener(addr, "storm");
    let (_, epoch) = publish(&mut publisher, "storm", json!(0));
    drop(listener);
    let started = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let epoch = epoch.clone();
            let started = Arc::clone(&started);
            std::thread::spawn(move || {
                let mut seen: Vec<u64> = vec![1];
                let mut reconnects = 0u32;
                let mut rng = 0x9e37_79b9_u64.wrapping_mul(r as u64 + 1);
                let deadline = Instant::now() + Duration::from_secs(60);
                while *seen.last().unwrap() < TOTAL + 1 {
                    assert!(Instant::now() < deadline, "reader {r} stuck at {seen:?}");
                    let mut client = connect(addr, "/ws");
                    let last = *seen.last().unwrap();
                    let ack = resume(&mut client, "storm", json!({"seq": last, "epoch": epoch}));
                    assert_eq!(ack["recovered"], true, "reader {r}: {ack}");
                    started.store(true, Ordering::Release);
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let take = 1 + rng % 400;
                    for _ in 0..take {
                        let message = next_json(&mut client);
                        seen.push(seq_of(&message));
                        if *seen.last().unwrap() == TOTAL + 1 {
                            break;
                        }
                    }
                    reconnects += 1;
                }
                (seen, reconnects)
            })
        })
        .collect();
    while !started.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(1));
    }
    for i in 1..=TOTAL {
        send_json(
            &mut publisher,
            json!({"op": "publish", "topic": "storm", "data": i}),
        );
    }
    for reader in readers {
        let (seen, reconnects) = reader.join().expect("reader");
        let expected: Vec<u64> = (1..=TOTAL + 1).collect();
        assert!(
            seen == expected,
            "exactly once, in order ({reconnects} reconnects)"
        );
        assert!(reconnects > 3, "the readers did reconnect: {reconnects}");
    }
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn a_slow_consumer_is_told_exactly_where_it_stopped_and_a_resume_from_there_never_duplicates() {
    let server = start(&["--max-backlog-bytes", "65536", "--history-size", "5000"]);
    let addr = server.local_addr();
    let mut stalled = connect(addr, "/ws?topic=firehose");
    subscribe(&mut connect(addr, "/ws"), "sync"); // the URL subscription is in place
                                                  // Publish 8 KiB messages until the stalled reader is disconnected, then a few more.
    let mut publisher = tcp(addr);
    let body = format!("\"{}\"", "z".repeat(8 * 1024));
    let head = format!(
        "POST /publish/firehose HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut top = 0;
    let mut publish_one = |top: &mut u64| {
        use std::io::Write;
        publisher.write_all(head.as_bytes()).unwrap();
        publisher.write_all(body.as_bytes()).unwrap();
        let (status, answer) = read_response(&mut publisher);
        assert_eq!(status, 200, "{answer}");
        *top = serde_json::from_str::<Value>(&answer).unwrap()["seq"]
            .as_u64()
            .unwrap();
    };
    while server.metric(crier::metrics::Metric::SlowConsumerDisconnects) == 0 {
        assert!(top < 4_000, "{top} publishes and still not disconnected");
        publish_one(&mut top);
    }
    for _ in 0..3 {
        publish_one(&mut top);
    }
    // Everything the stalled reader gets before the close, then where to resume.
    let mut seen = Vec::new();
    let reason = loop {
        match stalled.read().expect("frames, then a close") {
            Message::Text(text) => seen.push(seq_of(&serde_json::from_str(text.as_str()).unwrap())),
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 1008);
                break frame.reason.as_str().to_string();
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(reason.len() <= 123);
    let since = reason
        .strip_prefix("slow consumer; resume ")
        .unwrap_or_else(|| panic!("a resume point in {reason:?}"));
    let (rest, epoch) = since.rsplit_once(':').unwrap();
    let (topic, seq) = rest.rsplit_once(':').unwrap();
    assert_eq!(topic, "firehose");
    let seq: u64 = seq.parse().unwrap();
    assert_eq!(
        seen,
        (1..=seq).collect::<Vec<_>>(),
        "it got exactly 1..={seq}"
    );
    // What it missed (a backlog's worth and more) is over the replay byte cap, half of
    // --max-backlog-bytes: the resume says so and replays nothing, and live messages follow.
    let mut back = connect(addr, &format!("/ws?since={since}"));
    assert_eq!(
        next_json(&mut back),
        json!({"op":"ack","topic":"firehose","seq":top,"epoch":epoch,"recovered":false})
    );
    publish_one(&mut top);
    assert_eq!(seq_of(&next_json(&mut back)), top);
    // A resume from the hint within the cap is recovered exactly: the last 3 messages
    // (24 KiB) fit the 32 KiB cap.
    let mut late = connect(addr, &format!("/ws?since=firehose:{}:{epoch}", top - 3));
    let ack = next_json(&mut late);
    assert_eq!(ack["recovered"], true, "{ack}");
    for expected in top - 2..=top {
        assert_eq!(seq_of(&next_json(&mut late)), expected);
    }
    stop(server, ANSWER_TIMEOUT);
}

/// A topic nobody ever listened to has no state: a publish to it is unheard (seq 0, no
/// epoch) and starts nothing. Once a listener came and went, the kept history holds the topic
/// alive: publishes from every shard (eight publishers over four shards) are sequenced and
/// kept, and a page's first load gets all of them.
#[test]
fn only_a_topic_with_state_keeps_publishes_from_any_shard() {
    let server = start(&["--threads", "4"]);
    let addr = server.local_addr();
    let mut publishers: Vec<Client> = (0..8).map(|_| connect(addr, "/ws")).collect();
    send_json(
        &mut publishers[0],
        json!({"op": "publish", "topic": "fresh", "data": 0, "id": "p"}),
    );
    let ack = next_json(&mut publishers[0]);
    assert_eq!((&ack["seq"], ack.get("epoch")), (&json!(0), None), "{ack}");
    let mut page = connect(addr, "/ws");
    let ack = resume(&mut page, "fresh", json!({"seq": 0}));
    assert_eq!((&ack["seq"], &ack["recovered"]), (&json!(0), &json!(true)));
    drop(page);

    let listener = first_listener(addr, "kept");
    let (first, epoch) = publish(&mut publishers[0], "kept", json!(0));
    assert_eq!(first, 1);
    drop(listener);
    for (i, publisher) in publishers.iter_mut().enumerate() {
        let (seq, e) = publish(publisher, "kept", json!(i + 1));
        assert_eq!((seq, &e), (i as u64 + 2, &epoch));
    }
    let mut page = connect(addr, "/ws");
    let ack = resume(&mut page, "kept", json!({"seq": 0}));
    assert_eq!((&ack["seq"], &ack["recovered"]), (&json!(9), &json!(true)));
    for seq in 1..=9 {
        assert_eq!(seq_of(&next_json(&mut page)), seq);
    }
    stop(server, ANSWER_TIMEOUT);
}
