//! Unit tests of the broker core, driven without sockets through the recording fake.

use bytes::Bytes;

use super::fake::Recorder;
use super::*;
use crate::engine::InterestFilter;
use crate::mesh::Payload;
use crate::proto::deflate::DeliveryFrames;
use crate::topic::{owner_shard, topic_hash};

const BUDGET: usize = 1 << 20;

thread_local! {
    /// The process-wide interest filter, one per test (each test runs on its own thread).
    static FILTER: Arc<InterestFilter> = Arc::new(InterestFilter::new(0));
}

fn filter() -> Arc<InterestFilter> {
    FILTER.with(Arc::clone)
}

/// What an owner that these tests do not simulate does when it starts holding `topic`.
fn owner_holds(topic: &str) {
    filter().gained(topic_hash(topic));
}

fn limits(policy: SlowConsumerPolicy) -> Limits {
    Limits::per_connection(2, policy)
}

fn broker(shard: usize, shards: usize, policy: SlowConsumerPolicy) -> Broker {
    Broker::new(
        shard,
        limits(policy),
        LocalEngine::new(shard, shards, filter()),
    )
}

/// A topic name that shard `owner` of `shards` owns.
fn topic_owned_by(owner: usize, shards: usize) -> String {
    (0..)
        .map(|i| format!("t{i}"))
        .find(|t| owner_shard(t, shards) == owner)
        .expect("some name lands on every shard")
}

fn cmd(out: &mut Recorder, b: &mut Broker, conn: ConnId, text: &str) {
    b.on_text(conn, text.as_bytes(), out);
}

#[test]
fn subscribe_publish_and_ack_on_the_owner_shard() {
    let mut out = Recorder::new(BUDGET);
    let mut b = broker(0, 1, SlowConsumerPolicy::Disconnect);
    b.open(1, 7, &[], &[], &mut out);
    cmd(
        &mut out,
        &mut b,
        1,
        r#"{"op":"subscribe","topic":"news","id":1}"#,
    );
    cmd(
        &mut out,
        &mut b,
        1,
        r#"{"op":"publish","topic":"news","data":"hi","id":2}"#,
    );
    cmd(
        &mut out,
        &mut b,
        1,
        r#"{"op":"publish","topic":"news","data":3}"#,
    );
    assert_eq!(
        out.texts(1),
        [
            r#"{"op":"ack","id":1}"#,
            r#"{"op":"message","topic":"news","seq":1,"data":"hi"}"#,
            r#"{"op":"ack","id":2,"seq":1,"epoch":"j578TsJ7"}"#,
            r#"{"op":"message","topic":"news","seq":2,"data":3}"#,
        ]
    );
    assert_eq!(out.count(Metric::Deliveries), 2);
    assert!(out.peers.is_empty(), "one shard sends nothing to peers");
}

#[test]
fn a_remote_subscribe_is_acked_only_after_the_owner_confirms() {
    let mut out = Recorder::new(BUDGET);
    let topic = topic_owned_by(1, 2);
    let mut b = broker(0, 2, SlowConsumerPolicy::Disconnect);
    b.open(3, 1, &[], &[], &mut out);
    let sub = format!(r#"{{"op":"subscribe","topic":"{topic}","id":"a"}}"#);
    cmd(&mut out, &mut b, 3, &sub);
    assert!(out.texts(3).is_empty(), "no ack before the owner confirms");
    assert!(matches!(
        &out.peers[..],
        [(
            1,
            MeshMsg::Interest {
                interested: true,
                confirms: 1,
                shard: 0,
                ..
            }
        )]
    ));
    b.on_peer(
        MeshMsg::InterestConfirmed {
            topic: topic.as_str().into(),
            count: 1,
        },
        &mut out,
    );
    assert_eq!(out.texts(3), [r#"{"op":"ack","id":"a"}"#]);

    // A publish from here goes to the owner, and its answer comes back as `Published`.
    owner_holds(&topic);
    out.peers.clear();
    let publish = format!(r#"{{"op":"publish","topic":"{topic}","data":1,"id":9}}"#);
    cmd(&mut out, &mut b, 3, &publish);
    let Some((1, MeshMsg::Publish { reply, .. })) = out.peers.pop() else {
        panic!("publish not sent to the owner: {:?}", out.peers);
    };
    b.on_peer(
        MeshMsg::Published {
            reply,
            seq: 5,
            epoch: None,
        },
        &mut out,
    );
    assert_eq!(out.texts(3)[1], r#"{"op":"ack","id":9,"seq":5}"#);

    // The last subscriber leaving tells the owner.
    b.on_closed(3, &mut out);
    assert!(matches!(
        &out.peers[..],
        [(
            1,
            MeshMsg::Interest {
                interested: false,
                confirms: 0,
                ..
            }
        )]
    ));
    assert_eq!(b.subscription_count(), 0);
    assert_eq!(b.topic_count(), 0);
}

#[test]
fn the_owner_sequences_for_remote_shards_and_confirms_interest() {
    let mut out = Recorder::new(BUDGET);
    let topic = topic_owned_by(0, 2);
    let mut b = broker(0, 2, SlowConsumerPolicy::Disconnect);
    b.on_peer(
        MeshMsg::Interest {
            topic: topic.as_str().into(),
            shard: 1,
            interested: true,
            confirms: 1,
        },
        &mut out,
    );
    assert!(matches!(
        &out.peers[..],
        [(1, MeshMsg::InterestConfirmed { .. })]
    ));
    assert_eq!(b.engine_topic_count(), 1);
    out.peers.clear();
    b.on_peer(
        MeshMsg::Publish {
            topic: topic.as_str().into(),
            payload: Payload::Json(Bytes::from_static(b"true")),
            reply: ReplyTo::Nobody,
        },
        &mut out,
    );
    let [(1, MeshMsg::Deliver { frames, .. })] = &out.peers[..] else {
        panic!("expected one Deliver to shard 1: {:?}", out.peers);
    };
    assert!(super::fake::frame_text(&frames.plain).contains(r#""seq":1"#));
}

#[test]
fn a_slow_subscriber_under_drop_is_told_how_many_it_missed() {
    // Room for two ~100-byte deliveries with the queue's per-frame overhead.
    let mut out = Recorder::new(400);
    let mut b = broker(0, 1, SlowConsumerPolicy::Drop);
    b.open(1, 1, &["news".to_string()], &[], &mut out);
    let data = format!("\"{}\"", "x".repeat(60));
    for _ in 0..5 {
        b.publish(
            "news",
            PayloadRef::Json(data.as_bytes()),
            ReplyTo::Nobody,
            &mut out,
        );
    }
    let got = out.texts(1).len();
    assert!(got < 5, "some were skipped ({got})");
    assert_eq!(out.count(Metric::SlowConsumerDrops), 5 - got as u64);
    out.drain(1);
    b.publish(
        "news",
        PayloadRef::Json(data.as_bytes()),
        ReplyTo::Nobody,
        &mut out,
    );
    let texts = out.texts(1);
    assert_eq!(
        texts[got],
        format!(r#"{{"op":"dropped","topic":"news","count":{}}}"#, 5 - got)
    );
    assert!(texts[got + 1].contains(r#""seq":6"#));
    assert!(
        b.conns.dropped(1, "news").is_none(),
        "the count was announced and reset"
    );
    assert!(!b.conns.any_dropped());
}

#[test]
fn a_slow_subscriber_under_disconnect_is_closed_and_forgotten() {
    let mut out = Recorder::new(200);
    let mut b = broker(0, 1, SlowConsumerPolicy::Disconnect);
    b.open(1, 1, &["news".to_string()], &[], &mut out);
    b.open(2, 1, &["news".to_string()], &[], &mut out);
    let data = format!("\"{}\"", "x".repeat(60));
    for i in 0..5 {
        b.publish(
            "news",
            PayloadRef::Json(data.as_bytes()),
            ReplyTo::Nobody,
            &mut out,
        );
        out.drain(2);
        if i == 0 {
            // The slow one reads message 1, and then no more.
            out.drain(1);
        }
    }
    assert!(matches!(
        out.conns[&1].closed,
        Some(CloseReason::SlowConsumer(Some(_)))
    ));
    // It is told where to resume: after message 1, the last it read; message 2 was queued
    // and is discarded with the close, message 3 did not fit.
    assert_eq!(out.texts(1).len(), 2);
    assert_eq!(out.conns[&1].queue.unstarted().count(), 0, "discarded");
    let epoch = b.engine().history().incarnation("news").unwrap().0;
    assert_eq!(
        out.conns[&1].close_text.as_deref(),
        Some(&*format!("slow consumer; resume news:1:{epoch}"))
    );
    assert!(out.conns[&2].closed.is_none());
    assert_eq!(out.count(Metric::SlowConsumerDisconnects), 1);
    assert_eq!(
        b.subscription_count(),
        1,
        "the slow one's subscription is gone"
    );
    assert_eq!(out.texts(2).len(), 5, "the healthy one got everything");
    b.on_closed(1, &mut out); // the driver's close path later: a no-op now
    b.on_closed(2, &mut out);
    assert_eq!(b.engine_topic_count(), 0);
    assert_eq!(b.conns.slot_count(), 0, "the table gave its slots back");
}

#[test]
fn command_errors_are_answered_and_counted() {
    let mut out = Recorder::new(BUDGET);
    let mut b = broker(0, 1, SlowConsumerPolicy::Disconnect);
    b.open(1, 1, &[], &[], &mut out);
    cmd(&mut out, &mut b, 1, r#"{"op":"subscribe","topic":"a"}"#);
    cmd(
        &mut out,
        &mut b,
        1,
        r#"{"op":"subscribe","topic":"a","id":1}"#,
    );
    cmd(&mut out, &mut b, 1, r#"{"op":"subscribe","topic":"b"}"#);
    cmd(
        &mut out,
        &mut b,
        1,
        r#"{"op":"subscribe","topic":"c","id":2}"#,
    );
    cmd(
        &mut out,
        &mut b,
        1,
        r#"{"op":"unsubscribe","topic":"z","id":3}"#,
    );
    cmd(&mut out, &mut b, 1, r#"{"op":"nope"}"#);
    b.on_binary(1, b"\xff", &mut out);
    let texts = out.texts(1);
    assert_eq!(
        texts[0], r#"{"op":"ack","id":1}"#,
        "a repeated subscribe is acked"
    );
    assert!(texts[1].contains("too_many_subscriptions") && texts[1].contains(r#""id":2"#));
    assert!(texts[1].contains("already has 2 subscriptions"));
    assert!(texts[2].contains("not_subscribed") && texts[2].contains(r#""id":3"#));
    assert!(texts[3].contains("unknown_op"));
    assert_eq!(texts.len(), 5);
    assert_eq!(out.count(Metric::CommandErrors), 4);
}

#[test]
fn refused_publishes_are_answered_overloaded() {
    let mut out = Recorder::new(BUDGET);
    let topic = topic_owned_by(1, 2);
    let mut b = broker(0, 2, SlowConsumerPolicy::Disconnect);
    owner_holds(&topic);
    b.open(4, 2, &[], &[], &mut out);
    let publish = format!(r#"{{"op":"publish","topic":"{topic}","data":1,"id":5}}"#);
    cmd(&mut out, &mut b, 4, &publish);
    let http = ConnRef {
        shard: 0,
        key: 9,
        generation: 1,
    };
    b.publish(
        &topic,
        PayloadRef::Binary(b"x"),
        ReplyTo::Http { conn: http },
        &mut out,
    );
    for (_to, msg) in std::mem::take(&mut out.peers) {
        b.on_refused(msg, &mut out);
    }
    let texts = out.texts(4);
    assert!(texts[0].contains("overloaded") && texts[0].contains(r#""id":5"#));
    assert_eq!(out.http, [(http, HttpPublished::Refused)]);
}

#[test]
fn answers_for_a_closed_or_reused_connection_are_dropped() {
    let mut out = Recorder::new(BUDGET);
    let topic = topic_owned_by(1, 2);
    let mut b = broker(0, 2, SlowConsumerPolicy::Disconnect);
    owner_holds(&topic);
    b.open(4, 1, &[], &[], &mut out);
    let publish = format!(r#"{{"op":"publish","topic":"{topic}","data":1,"id":5}}"#);
    cmd(&mut out, &mut b, 4, &publish);
    let Some((_, MeshMsg::Publish { reply, .. })) = out.peers.pop() else {
        panic!("no publish");
    };
    b.on_closed(4, &mut out);
    b.open(4, 2, &[], &[], &mut out); // the same slab slot, a new connection
    b.on_peer(
        MeshMsg::Published {
            reply,
            seq: 1,
            epoch: None,
        },
        &mut out,
    );
    assert!(
        out.texts(4).is_empty(),
        "the new connection gets no stranger's ack"
    );
}

#[test]
fn the_subscription_limit_is_one_check_for_urls_and_commands() {
    let b = broker(0, 1, SlowConsumerPolicy::Disconnect);
    assert!(b.check_subscription_limit(0, 2).is_ok());
    let url = b.check_subscription_limit(0, 3).unwrap_err();
    assert_eq!(
        url.to_string(),
        "3 topics asked for; at most 2 per connection"
    );
    let command = b.check_subscription_limit(2, 1).unwrap_err();
    assert_eq!(
        command.to_string(),
        "this connection already has 2 subscriptions, the most allowed"
    );
}

#[test]
fn a_history_read_goes_to_the_owner_and_its_page_or_refusal_comes_back() {
    let mut out = Recorder::new(BUDGET);
    let mut b0 = broker(0, 2, SlowConsumerPolicy::Disconnect);
    let mut b1 = broker(1, 2, SlowConsumerPolicy::Disconnect);
    let topic = topic_owned_by(1, 2);
    let http = ConnRef {
        shard: 0,
        key: 3,
        generation: 1,
    };
    // Asked on shard 0: a `HistoryRead` to the owner, which answers with a `HistoryPage`.
    b0.read_history(&topic, 0, 10, http, &mut out);
    assert!(out.history.is_empty());
    let (to, msg) = out.peers.pop().expect("a read for the owner");
    assert_eq!(to, 1);
    b1.on_peer(msg, &mut out);
    let (to, msg) = out.peers.pop().expect("the owner's answer");
    assert_eq!(to, 0);
    b0.on_peer(msg, &mut out);
    // Nothing was ever published: no state, no epoch.
    assert_eq!(out.history, [(http, HttpHistory::Page(None))]);
    // A read the owner's full inbox handed back is answered `overloaded`.
    out.history.clear();
    b0.read_history(&topic, 0, 10, http, &mut out);
    let (_, msg) = out.peers.pop().unwrap();
    b0.on_refused(msg, &mut out);
    assert_eq!(out.history, [(http, HttpHistory::Refused)]);
}

#[test]
fn a_slow_consumer_close_reason_fits_the_close_frame_whatever_the_topic() {
    let epoch = history::Epoch::parse("e4XqT0aB").unwrap();
    let hint = |topic: &str, seq: u64| ResumeHint {
        topic: topic.into(),
        first_lost_seq: seq,
        epoch,
    };
    let why = CloseReason::SlowConsumer(Some(hint("news", 42)));
    assert_eq!(
        why.reason_text(None),
        "slow consumer; resume news:41:e4XqT0aB"
    );
    assert_eq!(
        why.reason_text(Some(40)),
        "slow consumer; resume news:39:e4XqT0aB"
    );
    assert_eq!(
        why.reason_text(Some(50)),
        "slow consumer; resume news:41:e4XqT0aB"
    );
    // The longest topic that fits with any seq, and one byte more.
    let room = MAX_CLOSE_REASON_BYTES - "slow consumer; resume ::e4XqT0aB".len() - 20;
    let fits = hint(&"t".repeat(room), u64::MAX);
    assert_eq!(fits.longest_text_bytes(), MAX_CLOSE_REASON_BYTES);
    let text = CloseReason::SlowConsumer(Some(fits)).reason_text(None);
    assert!(text.len() <= MAX_CLOSE_REASON_BYTES, "{}", text.len());
    let long = hint(&"t".repeat(room + 1), 1);
    assert!(long.longest_text_bytes() > MAX_CLOSE_REASON_BYTES);
    // Even a hint over the limit never makes a longer reason.
    assert!(
        CloseReason::SlowConsumer(Some(hint(&"t".repeat(200), 1))).reason_text(None)
            == "slow consumer"
    );
    assert_eq!(
        CloseReason::SlowConsumer(None).reason_text(None),
        "slow consumer"
    );
}
#[test]
fn a_publish_to_a_topic_no_owner_holds_is_answered_here() {
    let mut out = Recorder::new(BUDGET);
    let topic = topic_owned_by(1, 2);
    let mut b = broker(0, 2, SlowConsumerPolicy::Disconnect);
    b.open(4, 1, &[], &[], &mut out);
    let publish = format!(r#"{{"op":"publish","topic":"{topic}","data":1,"id":5}}"#);
    cmd(&mut out, &mut b, 4, &publish);
    assert!(
        out.peers.is_empty(),
        "nothing crosses the mesh: {:?}",
        out.peers
    );
    assert_eq!(out.texts(4), [r#"{"op":"ack","id":5,"seq":0}"#]);
    assert_eq!(out.count(Metric::MessagesUnheard), 1);
}

/// Two shards with one filter: once a subscribe on one is acked, a publish on the other
/// (whoever owns the topic) crosses to the owner and is delivered.
#[test]
fn after_a_subscribe_ack_the_filter_lets_publishes_through_on_every_shard() {
    for owner in 0..2 {
        let topic = topic_owned_by(owner, 2);
        let (mut out0, mut out1) = (Recorder::new(BUDGET), Recorder::new(BUDGET));
        let mut b0 = broker(0, 2, SlowConsumerPolicy::Disconnect);
        let mut b1 = broker(1, 2, SlowConsumerPolicy::Disconnect);
        b0.open(1, 1, &[], &[], &mut out0);
        b1.open(1, 1, &[], &[], &mut out1);
        let sub = format!(r#"{{"op":"subscribe","topic":"{topic}","id":"s"}}"#);
        cmd(&mut out0, &mut b0, 1, &sub);
        // Route shard 0's interest to the owner and the confirmation back, until acked.
        for _ in 0..2 {
            for (to, msg) in std::mem::take(&mut out0.peers) {
                assert_eq!(to, 1);
                b1.on_peer(msg, &mut out1);
            }
            for (to, msg) in std::mem::take(&mut out1.peers) {
                assert_eq!(to, 0);
                b0.on_peer(msg, &mut out0);
            }
        }
        assert_eq!(out0.texts(1), [r#"{"op":"ack","id":"s"}"#]);
        assert!(filter().may_be_heard(topic_hash(&topic)));
        let publish = format!(r#"{{"op":"publish","topic":"{topic}","data":7}}"#);
        cmd(&mut out1, &mut b1, 1, &publish);
        for (_, msg) in std::mem::take(&mut out1.peers) {
            b0.on_peer(msg, &mut out0);
        }
        for (_, msg) in std::mem::take(&mut out0.peers) {
            b1.on_peer(msg, &mut out1);
        }
        for (_, msg) in std::mem::take(&mut out1.peers) {
            b0.on_peer(msg, &mut out0);
        }
        let texts = out0.texts(1);
        assert!(texts[1].contains(r#""seq":1"#), "owner {owner}: {texts:?}");
        // Everyone leaves: the owner forgets the topic, and the filter with it.
        b0.on_closed(1, &mut out0);
        for (_, msg) in std::mem::take(&mut out0.peers) {
            b1.on_peer(msg, &mut out1);
        }
        assert_eq!(filter().topic_count(), 0);
    }
}

#[test]
fn refused_deliveries_are_announced_before_the_next_message() {
    let mut out = Recorder::new(BUDGET);
    let topic = topic_owned_by(1, 2);
    let mut b = broker(0, 2, SlowConsumerPolicy::Disconnect);
    b.open(1, 1, std::slice::from_ref(&topic), &[], &mut out);
    b.on_peer(
        MeshMsg::InterestConfirmed {
            topic: topic.as_str().into(),
            count: 1,
        },
        &mut out,
    );
    let frame = |seq: u64| crate::proto::envelope::message_frame(&topic, seq, b"0");
    b.on_peer(
        MeshMsg::Deliver {
            topic: topic.as_str().into(),
            frames: DeliveryFrames::plain(frame(1)),
            sequenced_us: 0,
            epoch: None,
        },
        &mut out,
    );
    b.on_peer(
        MeshMsg::Dropped {
            topic: topic.as_str().into(),
            count: 2,
        },
        &mut out,
    );
    b.on_peer(
        MeshMsg::Deliver {
            topic: topic.as_str().into(),
            frames: DeliveryFrames::plain(frame(4)),
            sequenced_us: 0,
            epoch: None,
        },
        &mut out,
    );
    let texts = out.texts(1);
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert_eq!(
        texts[1],
        format!(r#"{{"op":"dropped","topic":"{topic}","count":2}}"#)
    );
}

#[test]
fn global_caps_answer_limit_reached() {
    let mut out = Recorder::new(BUDGET);
    let mut limits = limits(SlowConsumerPolicy::Disconnect);
    limits.max_subscriptions = 3;
    limits.max_topics = 2;
    let count = Arc::new(AtomicUsize::new(0));
    let mut b = Broker::new(0, limits, LocalEngine::new(0, 1, filter()))
        .share_subscription_count(count.clone());
    for conn in 0..3 {
        b.open(conn, 1, &[], &[], &mut out);
    }
    let sub = |t: &str| format!(r#"{{"op":"subscribe","topic":"{t}","id":1}}"#);
    cmd(&mut out, &mut b, 0, &sub("a"));
    cmd(&mut out, &mut b, 0, &sub("b"));
    // A third distinct topic: over --max-topics.
    cmd(&mut out, &mut b, 1, &sub("c"));
    assert!(out.texts(1)[0].contains(r#""code":"limit_reached""#));
    // An existing topic is fine, up to --max-subscriptions.
    cmd(&mut out, &mut b, 1, &sub("a"));
    assert_eq!(count.load(Ordering::Relaxed), 3);
    cmd(&mut out, &mut b, 2, &sub("b"));
    assert!(out.texts(2)[0].contains(r#""code":"limit_reached""#));
    assert_eq!(out.count(Metric::SubscribeLimitReached), 2);
    // Leaving gives the room back.
    b.on_closed(0, &mut out);
    assert_eq!(count.load(Ordering::Relaxed), 1);
    cmd(&mut out, &mut b, 2, &sub("c"));
    assert_eq!(out.texts(2)[1], r#"{"op":"ack","id":1}"#);
}

#[test]
fn each_fan_out_reports_its_sequencing_time_and_how_many_got_it() {
    let mut out = Recorder::new(BUDGET);
    let topic = topic_owned_by(0, 2);
    let mut owner = broker(0, 2, SlowConsumerPolicy::Disconnect);
    owner.open(1, 1, std::slice::from_ref(&topic), &[], &mut out);
    owner.open(2, 1, std::slice::from_ref(&topic), &[], &mut out);
    owner.on_peer(
        MeshMsg::Interest {
            topic: topic.as_str().into(),
            shard: 1,
            interested: true,
            confirms: 0,
        },
        &mut out,
    );
    out.now_us = 1_234;
    owner.publish(&topic, PayloadRef::Json(b"1"), ReplyTo::Nobody, &mut out);
    // The owner's two local subscribers: one fan-out, stamped with the owner's clock, which
    // the Deliver to shard 1 carries too.
    assert_eq!(out.fanouts, [(topic.clone(), 2, 1_234)]);
    let [(1, MeshMsg::Deliver { sequenced_us, .. })] = &out.peers[..] else {
        panic!("expected one Deliver to shard 1: {:?}", out.peers);
    };
    assert_eq!(*sequenced_us, 1_234);

    // On another shard the stamp comes from the Deliver, not the local clock; a subscriber
    // that is gone is not counted as reached.
    let mut out = Recorder::new(BUDGET);
    let mut other = broker(1, 2, SlowConsumerPolicy::Disconnect);
    for conn in 1..=3 {
        other.open(conn, 1, std::slice::from_ref(&topic), &[], &mut out);
    }
    other.on_peer(
        MeshMsg::InterestConfirmed {
            topic: topic.as_str().into(),
            count: 1,
        },
        &mut out,
    );
    out.conns.entry(3).or_default().closed = Some(CloseReason::SlowConsumer(None));
    out.now_us = 9_999;
    other.on_peer(
        MeshMsg::Deliver {
            topic: topic.as_str().into(),
            frames: DeliveryFrames::plain(Bytes::from_static(b"\x81\x01x")),
            epoch: None,
            sequenced_us: 1_234,
        },
        &mut out,
    );
    assert_eq!(out.fanouts, [(topic.clone(), 2, 1_234)]);
    assert_eq!(out.count(Metric::Deliveries), 2);
}
