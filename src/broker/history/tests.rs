//! Unit tests of one shard's topic logs (`log.rs`): lifetimes and epochs, size, TTL and budget
//! eviction, and that replays hand out the stored buffers.

use std::time::Duration;

use bytes::Bytes;

use super::log::{entry_overhead_bytes, topic_overhead_bytes};
use super::*;
use crate::config::TopicOverride;

const MIN_MS: u64 = 60_000;

fn policy(size: usize, ttl_s: u64) -> HistoryPolicy {
    HistoryPolicy::new(size, Duration::from_secs(ttl_s), &[], 1000)
}

fn history(size: usize) -> History<Bytes> {
    History::new(policy(size, 300), usize::MAX, 1)
}

fn frame(topic: &str, seq: u64) -> Bytes {
    Bytes::from(format!("{topic}#{seq}"))
}

/// Publishes to `topic`. A topic with no state yet is started the way a real one is, when it
/// keeps history: a listener comes, the message is kept, the listener leaves; the history then
/// keeps the topic alive with nobody listening. (A publish alone never starts a topic: see
/// `a_publish_to_a_topic_with_no_state_is_unheard_and_starts_nothing`.)
fn publish(h: &mut History<Bytes>, topic: &str, now_ms: u64) -> Option<(u64, Epoch)> {
    publish_with(h, topic, now_ms, |seq| frame(topic, seq)).map(|p| (p.seq, p.epoch))
}

/// [`publish`] with the frame built by `build`.
fn publish_with(
    h: &mut History<Bytes>,
    topic: &str,
    now_ms: u64,
    build: impl FnOnce(u64) -> Bytes,
) -> Option<Published<Bytes>> {
    let start = h.incarnation(topic).is_none() && h.policy().for_topic(topic).size > 0;
    if start {
        let _ = h.set_interest(topic, true, now_ms);
    }
    let published = h.publish(topic, now_ms, build);
    if start {
        let _ = h.set_interest(topic, false, now_ms);
    }
    published
}

#[test]
fn a_publish_to_a_topic_with_no_state_is_unheard_and_starts_nothing() {
    let mut h = history(10);
    assert!(h.publish("news", 0, |seq| frame("news", seq)).is_none());
    assert_eq!((h.topic_count(), h.kept_count()), (0, 0));
    assert!(h
        .resume("news", since(0, Epoch::parse("aaaaaaaa").unwrap()), 0)
        .is_none());
    let lifecycle: Vec<_> = h.drain_lifecycle().collect();
    assert!(lifecycle.is_empty(), "nothing started: {lifecycle:?}");
}

fn since(seq: u64, epoch: Epoch) -> Since {
    Since {
        seq,
        epoch: Some(epoch),
    }
}

fn replayed(r: &Resumed<Bytes>) -> Vec<String> {
    r.replay
        .iter()
        .map(|f| String::from_utf8(f.to_vec()).unwrap())
        .collect()
}

#[test]
fn a_publish_with_nobody_listening_to_a_topic_with_state_is_sequenced_and_kept() {
    let mut h = history(10);
    let (seq1, epoch) = publish(&mut h, "news", 0).unwrap();
    let (seq2, epoch2) = publish(&mut h, "news", 1).unwrap();
    assert_eq!((seq1, seq2), (1, 2));
    assert_eq!(epoch, epoch2);
    assert_eq!(h.kept_count(), 2);
    let r = h.resume("news", since(0, epoch), 2).unwrap();
    assert!(r.recovered);
    assert_eq!(r.top, 2);
    assert_eq!(replayed(&r), ["news#1", "news#2"]);
}

#[test]
fn without_history_a_topic_lives_only_while_listened_to_and_comes_back_with_a_new_epoch() {
    let mut h = history(0);
    assert_eq!(publish(&mut h, "news", 0), None);
    assert_eq!(h.topic_count(), 0);
    let (epoch, top) = h.set_interest("news", true, 0).unwrap();
    assert_eq!(top, 0);
    assert_eq!(publish(&mut h, "news", 0), Some((1, epoch)));
    assert_eq!(publish(&mut h, "news", 0), Some((2, epoch)));
    assert_eq!(h.kept_count(), 0);
    // Nothing kept: a resume is recovered only if nothing was missed.
    assert!(h.resume("news", since(2, epoch), 0).unwrap().recovered);
    assert!(!h.resume("news", since(1, epoch), 0).unwrap().recovered);
    assert_eq!(h.set_interest("news", false, 0), None);
    assert_eq!(h.topic_count(), 0);
    let (epoch2, top) = h.set_interest("news", true, 0).unwrap();
    assert_ne!(epoch, epoch2);
    assert_eq!(top, 0);
}

#[test]
fn history_keeps_the_topic_alive_after_the_last_listener_until_its_last_message_goes() {
    let mut h = History::new(policy(10, 60), usize::MAX, 1);
    let (epoch, _) = h.set_interest("news", true, 0).unwrap();
    publish(&mut h, "news", 0);
    assert_eq!(h.set_interest("news", false, 0), None);
    assert_eq!(h.topic_count(), 1, "kept by its message");
    assert_eq!(
        publish(&mut h, "news", 10),
        Some((2, epoch)),
        "seq keeps counting"
    );
    assert_eq!(h.expire(MIN_MS - 1, 100), 0);
    assert_eq!(h.expire(MIN_MS, 100), 1);
    assert_eq!(h.topic_count(), 1);
    assert_eq!(h.expire(MIN_MS + 10, 100), 1);
    assert_eq!(h.topic_count(), 0, "TTL passed, nobody listens: forgotten");
    assert_eq!(h.stats().expired, 2);
    let (epoch2, top) = h.set_interest("news", true, MIN_MS + 10).unwrap();
    assert_ne!(epoch, epoch2);
    assert_eq!(top, 0);
}

#[test]
fn a_resume_expires_lazily_before_deciding() {
    let mut h = History::new(policy(10, 60), usize::MAX, 1);
    let (epoch, _) = h.set_interest("news", true, 0).unwrap();
    publish(&mut h, "news", 0);
    publish(&mut h, "news", 30_000);
    // No sweep ran, but message 1 is past its TTL at 60 s: resuming from 0 is not recovered.
    let r = h.resume("news", since(0, epoch), MIN_MS).unwrap();
    assert!(!r.recovered);
    assert!(r.replay.is_empty());
    let r = h.resume("news", since(1, epoch), MIN_MS).unwrap();
    assert!(r.recovered);
    assert_eq!(replayed(&r), ["news#2"]);
}

#[test]
fn size_keeps_the_newest_and_older_resumes_are_not_recovered() {
    let mut h = history(3);
    let (_, epoch) = publish(&mut h, "news", 0).unwrap();
    for _ in 0..4 {
        publish(&mut h, "news", 0);
    }
    assert_eq!(h.kept_count(), 3);
    assert_eq!(h.stats().evicted_size, 2);
    assert!(!h.resume("news", since(1, epoch), 0).unwrap().recovered);
    let r = h.resume("news", since(2, epoch), 0).unwrap();
    assert!(r.recovered);
    assert_eq!(replayed(&r), ["news#3", "news#4", "news#5"]);
    let wrong = Epoch::parse("Other").unwrap();
    let r = h.resume("news", since(2, wrong), 0).unwrap();
    assert!(!r.recovered && r.replay.is_empty());
    assert_eq!((r.epoch, r.top), (epoch, 5));
}

#[test]
fn replays_hand_out_the_stored_buffers() {
    let mut h = history(3);
    let p = publish_with(&mut h, "bin", 0, |_| Bytes::from(vec![0x82, 1, 0xff])).unwrap();
    let r = h.resume("bin", since(0, p.epoch), 0).unwrap();
    assert_eq!(r.replay[0].as_ptr(), p.frame.as_ptr());
    let page = h.read("bin", 0, 10, 0).unwrap();
    assert_eq!(page.messages[0].1.as_ptr(), p.frame.as_ptr());
}

#[test]
fn over_the_replay_cap_nothing_is_replayed() {
    let mut h: History<Bytes> = History::new(
        HistoryPolicy::new(100, Duration::from_secs(60), &[], 5),
        usize::MAX,
        1,
    );
    let (_, epoch) = publish(&mut h, "news", 0).unwrap();
    for _ in 0..9 {
        publish(&mut h, "news", 0);
    }
    let r = h.resume("news", since(4, epoch), 0).unwrap();
    assert!(!r.recovered && r.replay.is_empty());
    let r = h.resume("news", since(5, epoch), 0).unwrap();
    assert!(r.recovered);
    assert_eq!(r.replay.len(), 5);
    // Without an epoch: the newest 5, not recovered.
    let r = h
        .resume(
            "news",
            Since {
                seq: 0,
                epoch: None,
            },
            0,
        )
        .unwrap();
    assert!(!r.recovered);
    assert_eq!(
        replayed(&r),
        ["news#6", "news#7", "news#8", "news#9", "news#10"]
    );
}

#[test]
fn the_budget_evicts_the_oldest_message_of_the_shard_first_and_counts_it() {
    let one = 6 + entry_overhead_bytes::<Bytes>();
    let meta = topic_overhead_bytes::<Bytes>("a");
    // Room for two topics' metadata and four messages.
    let budget = 2 * meta + 4 * one;
    let mut h: History<Bytes> = History::new(policy(100, 300), budget, 1);
    let pad = |topic: &str, seq: u64| Bytes::from(format!("{topic}#{seq:04}")); // 6 bytes
    let _ = publish_with(&mut h, "a", 0, |s| pad("a", s));
    let _ = publish_with(&mut h, "b", 1, |s| pad("b", s));
    let _ = publish_with(&mut h, "a", 2, |s| pad("a", s));
    let _ = publish_with(&mut h, "b", 3, |s| pad("b", s));
    assert_eq!(h.stats().evicted_budget, 0);
    assert_eq!(h.used_bytes(), budget);
    let _ = publish_with(&mut h, "b", 4, |s| pad("b", s));
    assert_eq!(h.stats().evicted_budget, 1);
    assert!(h.used_bytes() <= budget);
    let page = h.read("a", 0, 10, 4).unwrap();
    assert_eq!(
        page.messages.iter().map(|m| m.0).collect::<Vec<_>>(),
        [2],
        "a#1 went first"
    );
    let _ = publish_with(&mut h, "b", 5, |s| pad("b", s)); // b#1 (time 1) goes
    assert_eq!(h.stats().evicted_budget, 2);
    let _ = publish_with(&mut h, "b", 6, |s| pad("b", s)); // a#2 (time 2) goes
                                                           // a's last message went, and nobody listens to a: its incarnation is forgotten, and its
                                                           // metadata no longer charged.
    assert!(h.read("a", 0, 10, 6).is_none());
    assert_eq!(h.topic_count(), 1);
    let page = h.read("b", 0, 10, 6).unwrap();
    assert_eq!(
        page.messages.iter().map(|m| m.0).collect::<Vec<_>>(),
        [2, 3, 4, 5]
    );
    assert_eq!(h.used_bytes(), meta + 4 * one);
    let _ = publish_with(&mut h, "b", 7, |s| pad("b", s)); // fits in what a's metadata gave back
    assert_eq!(h.stats().evicted_budget, 3);
    assert_eq!(h.kept_count(), 5);
}

#[test]
fn the_budget_evicts_by_age_across_ttl_classes() {
    let overrides = [TopicOverride {
        pattern: "long.>".into(),
        history_size: None,
        history_ttl: Some(Duration::from_secs(3600)),
    }];
    let meta = topic_overhead_bytes::<Bytes>("long.x");
    let one = 8 + entry_overhead_bytes::<Bytes>();
    let budget = 2 * meta + 3 * one;
    let mut h: History<Bytes> = History::new(
        HistoryPolicy::new(100, Duration::from_secs(60), &overrides, 1000),
        budget,
        1,
    );
    let pad = |seq: u64| Bytes::from(format!("msg#{seq:04}")); // 8 bytes
    let _ = publish_with(&mut h, "long.x", 0, pad);
    let _ = publish_with(&mut h, "shrt.x", 1, pad);
    let _ = publish_with(&mut h, "long.x", 2, pad);
    let _ = publish_with(&mut h, "shrt.x", 3, pad); // over: the oldest (long.x #1, time 0) goes
    assert_eq!(h.stats().evicted_budget, 1);
    assert_eq!(h.read("long.x", 0, 10, 3).unwrap().messages[0].0, 2);
    assert_eq!(h.read("shrt.x", 0, 10, 3).unwrap().messages.len(), 2);
}

#[test]
fn a_message_too_large_for_the_budget_empties_its_ring_so_no_replay_skips_it() {
    let budget = topic_overhead_bytes::<Bytes>("news") + 2 * (10 + entry_overhead_bytes::<Bytes>());
    let mut h: History<Bytes> = History::new(policy(100, 300), budget, 1);
    let (epoch, _) = h.set_interest("news", true, 0).unwrap();
    h.publish("news", 0, |_| Bytes::from(vec![b'x'; 10]));
    h.publish("news", 0, |_| Bytes::from(vec![b'x'; 10_000]));
    assert_eq!(h.stats().too_large, 1);
    assert_eq!(h.kept_count(), 0);
    assert_eq!(h.used_bytes(), 0);
    h.publish("news", 0, |_| Bytes::from(vec![b'x'; 10]));
    // Message 2 is not kept, so a client at 1 cannot be recovered, one at 2 can.
    assert!(!h.resume("news", since(1, epoch), 0).unwrap().recovered);
    assert!(h.resume("news", since(2, epoch), 0).unwrap().recovered);
}

#[test]
fn stale_expiry_records_stay_bounded_behind_an_old_message() {
    let overrides = [TopicOverride {
        pattern: "one".into(),
        history_size: Some(1),
        history_ttl: None,
    }];
    let mut h: History<Bytes> = History::new(
        HistoryPolicy::new(100, Duration::from_secs(300), &overrides, 1000),
        usize::MAX,
        1,
    );
    publish(&mut h, "old", 0);
    for _ in 0..100_000 {
        publish(&mut h, "one", 1);
    }
    assert_eq!(h.kept_count(), 2);
    assert_eq!(h.stats().evicted_size, 99_999);
    // The records of the 99,999 gone messages were compacted away.
    assert!(h.record_count() <= 2 * 2 + 1024 + 1, "{}", h.record_count());
}

#[test]
fn the_sweep_does_at_most_its_budget_of_work_per_call() {
    let mut h = History::new(policy(1000, 60), usize::MAX, 1);
    for _ in 0..250 {
        publish(&mut h, "news", 0);
    }
    assert_eq!(h.expire(MIN_MS, 100), 100);
    assert_eq!(h.expire(MIN_MS, 100), 100);
    assert_eq!(h.expire(MIN_MS, 100), 50);
    assert_eq!(h.topic_count(), 0);
    assert_eq!(h.used_bytes(), 0);
}

#[test]
fn read_pages_forward_from_a_seq() {
    let mut h = history(10);
    for _ in 0..7 {
        publish(&mut h, "news", 0);
    }
    let seqs = |p: Page<Bytes>| p.messages.iter().map(|m| m.0).collect::<Vec<_>>();
    assert_eq!(seqs(h.read("news", 0, 3, 0).unwrap()), [1, 2, 3]);
    assert_eq!(seqs(h.read("news", 3, 3, 0).unwrap()), [4, 5, 6]);
    assert_eq!(seqs(h.read("news", 6, 3, 0).unwrap()), [7]);
    assert_eq!(h.read("news", 7, 3, 0).unwrap().top, 7);
    assert!(h.read("nothing", 0, 3, 0).is_none());
}

#[test]
fn a_replay_over_the_byte_cap_is_all_or_nothing_with_an_epoch_and_the_newest_without() {
    // Frames "news#N" are 6 bytes for N < 10: 70 bytes each with the queue's overhead.
    let mut policy = policy(100, 300);
    policy.max_replay_bytes = 3 * 70;
    let mut h: History<Bytes> = History::new(policy, usize::MAX, 1);
    let mut epoch = None;
    for t in 0..5 {
        epoch = publish(&mut h, "news", t).map(|(_, e)| e);
    }
    let epoch = epoch.unwrap();
    let r = h.resume("news", since(2, epoch), 5).unwrap();
    assert!(r.recovered, "3 missing fit");
    assert_eq!(replayed(&r), ["news#3", "news#4", "news#5"]);
    let r = h.resume("news", since(1, epoch), 5).unwrap();
    assert!(!r.recovered, "4 missing do not");
    assert!(r.replay.is_empty(), "never a partial replay");
    let r = h
        .resume(
            "news",
            Since {
                seq: 0,
                epoch: None,
            },
            5,
        )
        .unwrap();
    assert!(!r.recovered);
    assert_eq!(
        replayed(&r),
        ["news#3", "news#4", "news#5"],
        "the newest that fit"
    );
}
