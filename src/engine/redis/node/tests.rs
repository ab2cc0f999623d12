//! The node's merge without Redis: order, gap reads, lost ranges, new epochs, held acks.

use super::*;
use crate::mesh::ConnRef;

#[derive(Debug, Default)]
struct Rec {
    /// (shard, frame text) in order.
    delivered: Vec<(u16, String)>,
    confirmed: Vec<u16>,
    answered: Vec<(u64, String)>,
    subscribed: Vec<String>,
    unsubscribed: Vec<String>,
    fetches: Vec<(u64, u64)>,
    /// Deliveries, reads and replays in order.
    log: Vec<String>,
}

impl NodeOut for Rec {
    fn deliver(&mut self, shard: u16, _topic: &str, frame: Bytes) {
        // Server frames are unmasked with a short header: the JSON starts at its first '{'.
        let start = frame.iter().position(|&b| b == b'{').unwrap_or(0);
        let text = String::from_utf8_lossy(&frame[start..]).into_owned();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        self.log.push(format!(
            "{} {} to {shard}",
            v["op"].as_str().unwrap(),
            v["seq"]
        ));
        self.delivered.push((shard, text));
    }
    fn confirm(&mut self, shard: u16, _topic: &str) {
        self.confirmed.push(shard);
    }
    fn answer(&mut self, _reply: ReplyTo, seq: u64, epoch: Epoch) {
        self.answered.push((seq, epoch.as_str().to_string()));
    }
    fn subscribe(&mut self, topic: &str) {
        self.subscribed.push(topic.to_string());
    }
    fn unsubscribe(&mut self, topic: &str) {
        self.unsubscribed.push(topic.to_string());
    }
    fn fetch(&mut self, _topic: &str, from: u64, to: u64) {
        self.fetches.push((from, to));
    }
    fn read_for_resume(&mut self, _topic: &str, from: u64) {
        self.log.push(format!("read {from}"));
    }
    fn replay(&mut self, _topic: &str, waiter: Waiter, resumed: Resumed<Bytes>) {
        let seqs: Vec<String> = resumed
            .replay
            .iter()
            .map(|frame| {
                let start = frame.iter().position(|&b| b == b'{').unwrap_or(0);
                let v: serde_json::Value = serde_json::from_slice(&frame[start..]).unwrap();
                v["seq"].to_string()
            })
            .collect();
        self.log.push(format!(
            "replay to {} top {} recovered {} [{}]",
            waiter.conn.shard,
            resumed.top,
            resumed.recovered,
            seqs.join(",")
        ));
    }
    fn count(&mut self, _event: NodeEvent, _n: u64) {}
}

impl Rec {
    fn seqs(&self, shard: u16) -> Vec<u64> {
        self.delivered
            .iter()
            .filter(|(s, _)| *s == shard)
            .filter_map(|(_, text)| {
                let v: serde_json::Value = serde_json::from_str(text).ok()?;
                (v["op"] == "message").then(|| v["seq"].as_u64().unwrap())
            })
            .collect()
    }
    fn ops(&self) -> Vec<String> {
        self.delivered
            .iter()
            .map(|(_, text)| {
                let v: serde_json::Value = serde_json::from_str(text).unwrap();
                v["op"].as_str().unwrap().to_string()
            })
            .collect()
    }
}

fn msg(seq: u64, epoch: &str) -> ChannelMessage {
    ChannelMessage {
        seq,
        epoch: ep(epoch),
        payload: Payload::Json(Bytes::from(seq.to_string())),
    }
}

fn ep(text: &str) -> Epoch {
    Epoch::parse(text).unwrap()
}

fn json(seq: u64) -> (u64, Payload) {
    (seq, Payload::Json(Bytes::from(seq.to_string())))
}

fn reply() -> ReplyTo {
    ReplyTo::Http {
        conn: ConnRef {
            shard: 0,
            key: 1,
            generation: 1,
        },
    }
}

/// A node with shards 0 and 1 subscribed to "t", live at `top` in epoch "E".
fn live(top: u64) -> (Node, Rec) {
    let mut node = Node::default();
    let mut out = Rec::default();
    node.interest("t", 0, true, &mut out);
    node.interest("t", 1, true, &mut out);
    assert_eq!(out.subscribed, ["t"], "one SUBSCRIBE per topic per node");
    assert!(out.confirmed.is_empty(), "confirmed only once subscribed");
    node.subscribed("t", top, ep("E"), &mut out);
    assert_eq!(out.confirmed, [0, 1]);
    (node, out)
}

#[test]
fn in_order_messages_reach_every_interested_shard_once() {
    let (mut node, mut out) = live(5);
    for seq in 6..=8 {
        node.message("t", msg(seq, "E"), &mut out);
    }
    node.message("t", msg(7, "E"), &mut out);
    assert_eq!(out.seqs(0), [6, 7, 8]);
    assert_eq!(out.seqs(1), [6, 7, 8]);
    assert!(out.fetches.is_empty());
}

#[test]
fn messages_heard_while_subscribing_are_merged_with_the_top() {
    let mut node = Node::default();
    let mut out = Rec::default();
    node.interest("t", 0, true, &mut out);
    // Heard between SUBSCRIBE and the top read: 4 and 5 are in the top, 6 is not.
    for seq in 4..=6 {
        node.message("t", msg(seq, "E"), &mut out);
    }
    assert!(out.delivered.is_empty());
    node.subscribed("t", 5, ep("E"), &mut out);
    assert_eq!(out.seqs(0), [6]);
}

#[test]
fn a_seq_jump_reads_the_gap_and_delivers_in_order_before_anything_later() {
    let (mut node, mut out) = live(0);
    node.message("t", msg(1, "E"), &mut out);
    node.message("t", msg(4, "E"), &mut out);
    assert_eq!(out.fetches, [(2, 3)]);
    node.message("t", msg(5, "E"), &mut out);
    assert_eq!(out.seqs(0), [1], "nothing later while the gap is read");
    node.fetched("t", Some(ep("E")), vec![json(2), json(3)], 3, &mut out);
    assert_eq!(out.seqs(0), [1, 2, 3, 4, 5]);
    assert_eq!(out.seqs(1), [1, 2, 3, 4, 5]);
}

#[test]
fn a_gap_the_stream_no_longer_has_is_announced_as_dropped() {
    let (mut node, mut out) = live(0);
    node.message("t", msg(5, "E"), &mut out);
    assert_eq!(out.fetches, [(1, 4)]);
    node.fetched("t", Some(ep("E")), vec![json(3), json(4)], 4, &mut out);
    assert_eq!(out.seqs(0), [3, 4, 5]);
    assert_eq!(
        out.ops()[..2],
        ["dropped", "dropped"],
        "one notice per shard"
    );
    let first: serde_json::Value = serde_json::from_str(&out.delivered[0].1).unwrap();
    assert_eq!(first["count"], 2);
}

#[test]
fn a_new_epoch_is_announced_and_never_mixed_with_the_old_seqs() {
    let (mut node, mut out) = live(10);
    node.message("t", msg(11, "E"), &mut out);
    // Redis lost the topic: seq starts again at 1 in epoch F.
    node.message("t", msg(1, "F"), &mut out);
    node.message("t", msg(2, "F"), &mut out);
    assert_eq!(out.seqs(0), [11, 1, 2]);
    let ops: Vec<_> = out
        .delivered
        .iter()
        .filter(|(s, _)| *s == 0)
        .map(|(_, t)| serde_json::from_str::<serde_json::Value>(t).unwrap())
        .collect();
    assert_eq!(ops[1]["op"], "epoch");
    assert_eq!(ops[1]["epoch"], "F");
    assert_eq!(ops[1]["recovered"], false);
}

#[test]
fn a_resubscribe_catches_up_from_the_stream_before_live_messages() {
    let (mut node, mut out) = live(3);
    node.disconnected();
    node.message("t", msg(9, "E"), &mut out);
    node.subscribed("t", 8, ep("E"), &mut out);
    assert_eq!(out.fetches, [(4, 8)]);
    node.fetched("t", Some(ep("E")), (4..=8).map(json).collect(), 8, &mut out);
    assert_eq!(out.seqs(0), [4, 5, 6, 7, 8, 9]);
}

#[test]
fn a_resubscribe_that_finds_a_new_epoch_says_recovered_false() {
    let (mut node, mut out) = live(3);
    node.disconnected();
    node.subscribed("t", 0, ep("F"), &mut out);
    assert_eq!(out.ops(), ["epoch", "epoch"]);
    node.message("t", msg(1, "F"), &mut out);
    assert_eq!(out.seqs(0), [1]);
}

#[test]
fn a_new_epoch_found_late_is_delivered_from_its_first_seq_like_on_other_nodes() {
    let (mut node, mut out) = live(3);
    node.disconnected();
    // Other nodes already published 1..=2 in the new epoch.
    node.subscribed("t", 2, ep("F"), &mut out);
    assert_eq!(out.fetches, [(1, 2)]);
    node.fetched("t", Some(ep("F")), vec![json(1), json(2)], 2, &mut out);
    assert_eq!(out.seqs(0), [1, 2]);
    assert_eq!(out.ops()[..2], ["epoch", "epoch"]);
}

#[test]
fn an_ack_waits_for_its_message_and_a_lost_one_is_read_from_the_stream() {
    let (mut node, mut out) = live(0);
    node.published("t", 1, ep("E"), reply(), 0, &mut out);
    assert!(out.answered.is_empty(), "the ack waits for the delivery");
    node.message("t", msg(1, "E"), &mut out);
    assert_eq!(out.answered, [(1, "E".to_string())]);
    node.published("t", 2, ep("E"), reply(), 1_000, &mut out);
    node.tick(1_000 + HOLD_BEFORE_FETCH_MS, &mut out);
    assert_eq!(out.fetches, [(2, 2)]);
    node.fetched("t", Some(ep("E")), vec![json(2)], 2, &mut out);
    assert_eq!(out.seqs(0), [1, 2]);
    assert_eq!(out.answered.len(), 2);
}

#[test]
fn the_last_shard_leaving_unsubscribes_the_node() {
    let (mut node, mut out) = live(0);
    node.interest("t", 0, false, &mut out);
    assert!(out.unsubscribed.is_empty());
    node.interest("t", 1, false, &mut out);
    assert_eq!(out.unsubscribed, ["t"]);
    assert_eq!(node.topic_count(), 0);
    // Left while still subscribing: unsubscribed once the subscribe is answered.
    node.interest("u", 0, true, &mut out);
    node.interest("u", 0, false, &mut out);
    node.subscribed("u", 0, ep("E"), &mut out);
    assert_eq!(out.unsubscribed, ["t", "u"]);
    assert!(out.confirmed.iter().all(|&s| s != 2));
}

#[test]
fn a_read_that_finds_the_stream_trimmed_still_uses_the_messages_heard_meanwhile() {
    let (mut node, mut out) = live(0);
    node.message("t", msg(1, "E"), &mut out);
    node.published("t", 2, ep("E"), reply(), 0, &mut out);
    node.tick(HOLD_BEFORE_FETCH_MS, &mut out);
    assert_eq!(out.fetches, [(2, 2)]);
    // Pub/sub brings 2..=4 while the read is out; the stream kept only 4 by then.
    for seq in 2..=4 {
        node.message("t", msg(seq, "E"), &mut out);
    }
    node.fetched("t", Some(ep("E")), vec![], 2, &mut out);
    assert_eq!(out.seqs(0), [1, 2, 3, 4]);
    assert!(!out.ops().contains(&"dropped".to_string()));
}

fn waiter(shard: u16, since: u64, epoch: Option<&str>, confirms_interest: bool) -> Waiter {
    Waiter {
        conn: ConnRef {
            shard,
            key: 7,
            generation: 1,
        },
        id: None,
        since: Since {
            seq: since,
            epoch: epoch.map(ep),
        },
        confirms_interest,
    }
}

#[test]
fn a_resume_catches_the_node_up_replays_then_lets_live_messages_go_on() {
    let (mut node, mut out) = live(3);
    // Shard 2's first subscriber resumes from 1: one read from seq 2.
    node.resume("t", waiter(2, 1, Some("E"), true), &mut out);
    assert_eq!(out.log, ["read 2"]);
    // Heard while the read is in flight: held, not delivered before the replay.
    node.message("t", msg(6, "E"), &mut out);
    assert_eq!(out.log, ["read 2"]);
    // Redis is at 5: 4 and 5 reach the shards (shard 2 skips the resuming connection), then
    // the replay ends at 5, then 6 goes live to every shard.
    let entries = (2..=5).map(json).collect();
    node.resume_read("t", ep("E"), 5, Some(2), entries, &mut out);
    assert_eq!(
        out.log[1..],
        [
            "message 4 to 0",
            "message 4 to 1",
            "message 4 to 2",
            "message 5 to 0",
            "message 5 to 1",
            "message 5 to 2",
            "replay to 2 top 5 recovered true [2,3,4,5]",
            "message 6 to 0",
            "message 6 to 1",
            "message 6 to 2",
        ]
    );
}

#[test]
fn a_resume_the_stream_cannot_serve_or_from_another_epoch_is_not_recovered() {
    let (mut node, mut out) = live(10);
    node.resume("t", waiter(0, 2, Some("E"), false), &mut out);
    node.resume_read(
        "t",
        ep("E"),
        10,
        Some(6),
        (6..=10).map(json).collect(),
        &mut out,
    );
    assert_eq!(out.log[1], "replay to 0 top 10 recovered false []");
    node.resume("t", waiter(1, 9, Some("Old"), false), &mut out);
    node.resume_read("t", ep("E"), 10, Some(6), vec![json(10)], &mut out);
    assert_eq!(out.log[3], "replay to 1 top 10 recovered false []");
    // The last subscriber leaving while a resume waits: the answer still goes out first.
    let (mut node, mut out) = live(0);
    node.resume("t", waiter(2, 0, None, true), &mut out);
    node.interest("t", 0, false, &mut out);
    node.interest("t", 1, false, &mut out);
    node.interest("t", 2, false, &mut out);
    assert!(out.unsubscribed.is_empty());
    node.resume_read("t", ep("E"), 0, None, vec![], &mut out);
    assert_eq!(out.log[1], "replay to 2 top 0 recovered true []");
    assert_eq!(out.unsubscribed, ["t"]);
}
