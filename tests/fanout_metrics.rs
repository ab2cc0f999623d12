//! Scenario: on a two-shard server started with `--metrics-topic news.>`, subscribers on both
//! shards read P publishes to `news.eu` and one subscriber reads one publish to `sport`; a
//! scrape of `GET /metrics` then counts exactly one fan-out per (publish, shard with a
//! subscriber), a per-topic series for `news.eu` only, both topics in the largest-fan-out
//! gauge with their subscriber counts, and well-formed latency and loop-phase histograms.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use crier::metrics::Metric;

const PUBLISHES: u64 = 5;

/// Every sample of a scrape: series (as written) to value.
fn samples(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (status, _, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').expect("a sample line");
            (name.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

/// The buckets of one histogram series (`labels` as rendered before `le`, with its comma),
/// checked for shape: cumulative, ending in +Inf = `_count`.
fn buckets(all: &BTreeMap<String, f64>, name: &str, labels: &str) -> Vec<(String, f64)> {
    let prefix = format!("{name}_bucket{{{labels}le=\"");
    let buckets: Vec<(String, f64)> = all
        .iter()
        .filter_map(|(series, value)| {
            let le = series.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            Some((le.to_string(), *value))
        })
        .collect();
    assert!(!buckets.is_empty(), "no buckets for {prefix}");
    let mut sorted = buckets.clone();
    let bound = |le: &str| {
        if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().expect("a numeric le")
        }
    };
    sorted.sort_by(|a, b| bound(&a.0).total_cmp(&bound(&b.0)));
    for pair in sorted.windows(2) {
        assert!(pair[0].1 <= pair[1].1, "{name}{{{labels}}} is cumulative");
    }
    let (last_le, last) = sorted.last().expect("some bucket");
    assert_eq!(last_le, "+Inf");
    let labels = labels.trim_end_matches(',');
    let braced = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    assert_eq!(all[&format!("{name}_count{braced}")], *last);
    sorted
}

#[test]
fn fan_outs_are_counted_per_publish_and_shard_with_topic_series_and_top_list() {
    let server = start(&["--threads", "2", "--metrics-topic", "news.>"]);
    let addr = server.local_addr();
    // Subscribers of news.eu on both shards (the kernel spreads connections).
    let mut news: Vec<Client> = Vec::new();
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    while (0..2).any(|shard| server.shard_metric(shard, Metric::Subscriptions) == 0) {
        assert!(Instant::now() < deadline && news.len() < 500);
        let mut client = connect(addr, "/ws");
        subscribe(&mut client, "news.eu");
        news.push(client);
    }
    let mut sport = connect(addr, "/ws");
    subscribe(&mut sport, "sport");

    for n in 0..PUBLISHES {
        let (status, _) = http_publish(
            addr,
            "news.eu",
            "application/json",
            n.to_string().as_bytes(),
        );
        assert_eq!(status, 200);
    }
    assert_eq!(http_publish(addr, "sport", "application/json", b"1").0, 200);
    for client in &mut news {
        for n in 0..PUBLISHES {
            assert_eq!(next_json(client)["data"], n);
        }
    }
    assert_eq!(next_json(&mut sport)["data"], 1);

    // Both shards have news.eu subscribers: 2 fan-outs per publish; sport: one shard.
    let fanouts = 2 * PUBLISHES + 1;
    let mut all = samples(addr);
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let wanted = |all: &BTreeMap<String, f64>| {
        all.get("crier_fanout_seconds_count") == Some(&(fanouts as f64))
            && all.contains_key("crier_fanout_top_deliveries{topic=\"sport\"}")
            && all.get("crier_loop_phase_seconds_count{phase=\"sweep\"}") > Some(&0.0)
    };
    while !wanted(&all) {
        assert!(
            Instant::now() < deadline,
            "expected {fanouts} fan-outs, both topics listed and a sweep: {:?}",
            all.iter()
                .filter(|(k, _)| k.starts_with("crier_fanout"))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
        all = samples(addr);
    }

    // Shape and sanity: every fan-out took less than the test's answer timeout, and its
    // latency is counted once.
    let merged = buckets(&all, "crier_fanout_seconds", "");
    assert_eq!(merged.last().expect("+Inf").1, fanouts as f64);
    let sum = all["crier_fanout_seconds_sum"];
    assert!(sum > 0.0 && sum < fanouts as f64 * ANSWER_TIMEOUT.as_secs_f64());
    for shard in 0..2 {
        let per_shard = buckets(&all, "crier_fanout_seconds", &format!("shard=\"{shard}\","));
        let count = per_shard.last().expect("+Inf").1;
        assert!(
            count == PUBLISHES as f64 || count == PUBLISHES as f64 + 1.0,
            "shard {shard}: {count} fan-outs"
        );
    }

    // Only news.eu matches news.>: its series counts its fan-outs, sport has none.
    let topic = buckets(&all, "crier_fanout_topic_seconds", "topic=\"news.eu\",");
    assert_eq!(topic.last().expect("+Inf").1, 2.0 * PUBLISHES as f64);
    assert!(!all
        .keys()
        .any(|k| k.starts_with("crier_fanout_topic_seconds") && k.contains("sport")));

    // The largest fan-outs: a publish reaches every subscriber of the topic.
    assert_eq!(
        all["crier_fanout_top_deliveries{topic=\"news.eu\"}"],
        news.len() as f64
    );
    assert_eq!(all["crier_fanout_top_deliveries{topic=\"sport\"}"], 1.0);

    // Loop phases: reads, inbox batches (a publish to the other shard's topic crosses the
    // mesh), sweeps and flushes all happened.
    for phase in ["read", "inbox", "sweep", "flush"] {
        let phase_buckets = buckets(
            &all,
            "crier_loop_phase_seconds",
            &format!("phase=\"{phase}\","),
        );
        assert!(
            phase_buckets.last().expect("+Inf").1 > 0.0,
            "{phase} was timed"
        );
    }
    assert_eq!(all["crier_writes_blocked_total"], 0.0);
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn without_metrics_topic_patterns_there_are_no_per_topic_series() {
    let server = start(&["--threads", "1"]);
    let addr = server.local_addr();
    let mut client = connect(addr, "/ws");
    subscribe(&mut client, "news.eu");
    assert_eq!(
        http_publish(addr, "news.eu", "application/json", b"1").0,
        200
    );
    assert_eq!(next_json(&mut client)["data"], 1);
    eventually(ANSWER_TIMEOUT, "one fan-out counted", || {
        samples(addr).get("crier_fanout_seconds_count") == Some(&1.0)
    });
    assert!(!samples(addr)
        .keys()
        .any(|k| k.starts_with("crier_fanout_topic_seconds")));
    stop(server, ANSWER_TIMEOUT);
}
