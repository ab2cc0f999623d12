//! Scenario: an operator scrapes `GET /metrics` over real HTTP from a two-shard server while
//! known traffic runs: the exposition is well formed, every merged series is the sum of its
//! per-shard series, and after N connections, M publishes to K subscribers, one handshake
//! failure of each kind and one slow-consumer disconnect the counters say exactly that;
//! `/healthz` answers 200 and `/readyz` 503 once a drain has begun.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use crier::metrics::Metric;
use tungstenite::Message;

/// A parsed exposition: series (name and sorted labels, as written) to value.
#[derive(Debug)]
struct Scrape {
    text: String,
    series: BTreeMap<String, f64>,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let mut series = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (name, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("a sample line: {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("a numeric value: {line:?}"));
            assert!(
                series.insert(name.to_string(), value).is_none(),
                "series {name} appears once"
            );
        }
        Scrape { text, series }
    }

    /// The merged (unlabelled) value of a metric.
    fn total(&self, name: &str) -> u64 {
        match self.series.get(name) {
            Some(value) => *value as u64,
            None => panic!("no series {name} in:\n{}", self.text),
        }
    }
}

/// Scrapes `/metrics` over HTTP, checking status and content type.
fn scrape(addr: SocketAddr) -> Scrape {
    let (status, head, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "{head}");
    let content_type = header(&head, "content-type").expect("a Content-Type");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "Prometheus text format 0.0.4, got {content_type:?}"
    );
    Scrape::parse(body)
}

/// Splits `name{a="1",shard="0"}` into (`name{a="1"}` with the shard label removed, shard).
fn without_shard(series: &str) -> (String, Option<usize>) {
    let Some((name, labels)) = series.split_once('{') else {
        return (series.to_string(), None);
    };
    let labels = labels.trim_end_matches('}');
    let mut shard = None;
    let mut rest = Vec::new();
    for label in labels.split(',') {
        match label.strip_prefix("shard=") {
            Some(value) => shard = Some(value.trim_matches('"').parse().expect("a shard index")),
            None => rest.push(label),
        }
    }
    if rest.is_empty() {
        (name.to_string(), shard)
    } else {
        (format!("{name}{{{}}}", rest.join(",")), shard)
    }
}

#[test]
fn the_exposition_is_well_formed_and_merged_series_are_the_sum_of_shard_series() {
    let server = start(&["--threads", "2"]);
    let addr = server.local_addr();
    // Some traffic on both shards, so the sums are of non-zero values. The kernel hashes
    // connections to shards, so open WebSockets until both shards hold some.
    let mut clients: Vec<Client> = Vec::new();
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    while (0..2).any(|shard| server.shard_metric(shard, Metric::WebSocketsOpen) == 0) {
        assert!(
            Instant::now() < deadline && clients.len() < 500,
            "{} WebSockets and still a shard without any",
            clients.len()
        );
        clients.push(connect(addr, "/ws"));
        std::thread::sleep(Duration::from_millis(2));
    }
    for client in &mut clients {
        subscribe(client, "mix");
    }
    for _ in 0..3 {
        assert_eq!(http_publish(addr, "mix", "application/json", b"1").0, 200);
    }
    for client in &mut clients {
        for _ in 0..3 {
            assert_eq!(next_json(client)["op"], "message");
        }
    }

    let scrape = scrape(addr);
    let lines: Vec<&str> = scrape.text.lines().collect();
    let mut families = 0;
    for (index, line) in lines.iter().enumerate() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        families += 1;
        let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
        assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
        assert!(
            index > 0 && lines[index - 1].starts_with(&format!("# HELP {name} ")),
            "HELP before TYPE for {name}"
        );
        let next = lines.get(index + 1).copied().unwrap_or("");
        let sample_name = next.split(['{', ' ']).next().unwrap_or("");
        let expected = if kind == "histogram" {
            format!("{name}_bucket")
        } else {
            name.to_string()
        };
        assert_eq!(sample_name, expected, "{line} is followed by its samples");
        if kind == "counter" {
            assert!(name.ends_with("_total"), "counter {name} ends in _total");
        }
    }
    assert!(families >= 30, "{families} metric families");
    assert!(scrape.total("crier_connections_accepted_total") > 0);

    // Group per-shard series by the series they merge into.
    let mut shards: BTreeMap<String, BTreeMap<usize, f64>> = BTreeMap::new();
    for (series, value) in &scrape.series {
        if let (merged, Some(shard)) = without_shard(series) {
            shards.entry(merged).or_default().insert(shard, *value);
        }
    }
    assert!(!shards.is_empty());
    for (merged, per_shard) in &shards {
        assert_eq!(
            per_shard.keys().copied().collect::<Vec<_>>(),
            [0, 1],
            "{merged} has exactly shards 0 and 1"
        );
        let sum: f64 = per_shard.values().sum();
        let total = scrape
            .series
            .get(merged)
            .unwrap_or_else(|| panic!("merged series {merged}"));
        assert!(
            (sum - total).abs() <= 1e-9 * total.abs().max(1.0),
            "{merged}: shards sum to {sum}, merged says {total}"
        );
    }
    // Every unlabelled series has its per-shard parts.
    for series in scrape.series.keys() {
        let (merged, shard) = without_shard(series);
        if shard.is_none() {
            assert!(
                shards.contains_key(&merged),
                "{series} has per-shard series"
            );
        }
    }
    stop(server, ANSWER_TIMEOUT);
}

const SUBSCRIBERS: u64 = 3;
const PUBLISHES: u64 = 4;

/// One request of each kind that fails the handshake, each on its own connection.
fn one_handshake_failure_of_each_kind(addr: SocketAddr) -> u64 {
    let upgrade = |extra: &str| {
        format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        )
    };
    let cases = [
        ("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), "400"),
        (
            "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
            "404",
        ),
        (
            "DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
            "405",
        ),
        (
            upgrade("Sec-WebSocket-Version: 13\r\nOrigin: https://evil.example\r\n"),
            "403",
        ),
        (upgrade("Sec-WebSocket-Version: 8\r\n"), "426"),
        (
            format!(
                "GET /ws HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "b".repeat(4096)
            ),
            "431",
        ),
    ];
    for (request, status) in &cases {
        let response = raw_exchange(addr, request.as_bytes());
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status} ")),
            "{status} expected, got {response:?}"
        );
    }
    // A slowloris: half a request head, then silence until the server gives up on it.
    let mut slow = tcp(addr);
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(rest.is_empty(), "no answer is owed to half a request");
    cases.len() as u64 + 1
}

/// Publishes 64 KiB messages to `topic` on one keep-alive connection until the server has
/// disconnected a slow consumer; returns how many were published.
fn flood_until_slow_consumer_disconnect(server: &crier::server::ServerHandle) -> u64 {
    let mut stream = tcp(server.local_addr());
    let body = format!("\"{}\"", "z".repeat(64 * 1024));
    let head = format!(
        "POST /publish/firehose HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut published = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.metric(Metric::SlowConsumerDisconnects) == 0 {
        assert!(Instant::now() < deadline, "no slow-consumer disconnect");
        assert!(
            published < 5_000,
            "5000 publishes and still not disconnected"
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body.as_bytes()).unwrap();
        assert_eq!(read_response(&mut stream).0, 200);
        published += 1;
    }
    published
}

#[test]
fn counters_show_exactly_the_traffic_that_happened() {
    let server = start(&[
        "--threads",
        "2",
        "--allowed-origin",
        "https://good.example",
        "--max-head-bytes",
        "2048",
        "--handshake-timeout",
        "2s",
        "--max-backlog-bytes",
        "65536",
    ]);
    let addr = server.local_addr();
    let mut accepted = 0u64;
    let mut received = 0u64;

    // K subscribers, then M publishes over HTTP, each read by every subscriber.
    let mut subscribers: Vec<Client> = (0..SUBSCRIBERS).map(|_| connect(addr, "/ws")).collect();
    for client in &mut subscribers {
        subscribe(client, "news");
    }
    accepted += SUBSCRIBERS;
    received += SUBSCRIBERS;
    for n in 0..PUBLISHES {
        let body = format!("{{\"n\":{n}}}");
        let (status, _) = http_publish(addr, "news", "application/json", body.as_bytes());
        assert_eq!(status, 200);
    }
    accepted += PUBLISHES;
    received += PUBLISHES;
    for client in &mut subscribers {
        for n in 0..PUBLISHES {
            assert_eq!(next_json(client)["data"]["n"], n);
        }
    }
    let mut scrapes = 0u64;
    let checkpoint = [
        ("crier_messages_published_total", PUBLISHES),
        ("crier_deliveries_total", PUBLISHES * SUBSCRIBERS),
        ("crier_websockets_open", SUBSCRIBERS),
        ("crier_subscriptions", SUBSCRIBERS),
        ("crier_topics_owned", 1),
    ];
    expect_counters(addr, &mut scrapes, accepted, &checkpoint);

    accepted += one_handshake_failure_of_each_kind(addr);

    // One subscriber that stops reading, flooded until it is disconnected.
    let mut stalled = connect(addr, "/ws");
    subscribe(&mut stalled, "firehose");
    accepted += 1;
    received += 1;
    let flooded = flood_until_slow_consumer_disconnect(&server);
    accepted += 1;
    received += flooded;
    stalled
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let close = loop {
        match stalled.read() {
            Ok(Message::Close(frame)) => break frame,
            Ok(_) => {}
            Err(e) => panic!("expected close 1008, got {e}"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 1008);
    assert!(
        close
            .reason
            .as_str()
            .starts_with("slow consumer; resume firehose:"),
        "{}",
        close.reason
    );
    drop(stalled);

    let expected = [
        ("crier_handshake_failures_bad_request_total", 1),
        ("crier_handshake_failures_not_found_total", 1),
        ("crier_handshake_failures_method_total", 1),
        ("crier_handshake_failures_origin_total", 1),
        ("crier_handshake_failures_version_total", 1),
        ("crier_handshake_failures_too_large_total", 1),
        ("crier_handshake_failures_timeout_total", 1),
        ("crier_slow_consumer_disconnects_total", 1),
        ("crier_slow_consumer_drops_total", 0),
        ("crier_messages_received_total", received),
        ("crier_websockets_open", SUBSCRIBERS),
        ("crier_subscriptions", SUBSCRIBERS),
        ("crier_topics_owned", 1),
        ("crier_protocol_errors_total", 0),
        ("crier_command_errors_total", 0),
        ("crier_idle_timeouts_total", 0),
        ("crier_connections_refused_total", 0),
        ("crier_accept_errors_total", 0),
        ("crier_mesh_dropped_total", 0),
    ];
    let last = expect_counters(addr, &mut scrapes, accepted, &expected);
    // Every publish was sequenced by its owner: to subscribers, or unheard once the stalled
    // consumer (firehose's only subscriber) was gone.
    assert_eq!(
        last.total("crier_messages_published_total") + last.total("crier_messages_unheard_total"),
        PUBLISHES + flooded
    );
    assert!(last.total("crier_deliveries_total") > PUBLISHES * SUBSCRIBERS);
    // Only the K subscribers remain open once closing sockets are gone.
    eventually(ANSWER_TIMEOUT, "closed connections are released", || {
        server.open_connections() as u64 == SUBSCRIBERS
    });
    stop(server, ANSWER_TIMEOUT);
}

/// Scrapes until every `(metric, value)` holds and `crier_connections_accepted_total` equals
/// `accepted` plus the scrapes made so far (each scrape is a connection, counted by the shard
/// that serves it before it renders). Shards publish their counters once per loop turn, so a
/// scrape may briefly lag; the deadline turns a wrong count into a failure with a diff.
fn expect_counters(
    addr: SocketAddr,
    scrapes: &mut u64,
    accepted: u64,
    expected: &[(&str, u64)],
) -> Scrape {
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    loop {
        *scrapes += 1;
        let scrape = scrape(addr);
        let mut wrong = Vec::new();
        let accepted_now = scrape.total("crier_connections_accepted_total");
        if accepted_now != accepted + *scrapes {
            wrong.push(format!(
                "crier_connections_accepted_total = {accepted_now}, expected {}",
                accepted + *scrapes
            ));
        }
        for (name, value) in expected {
            let actual = scrape.total(name);
            if actual != *value {
                wrong.push(format!("{name} = {actual}, expected {value}"));
            }
        }
        if wrong.is_empty() {
            return scrape;
        }
        assert!(
            Instant::now() < deadline,
            "counters never matched:\n{}",
            wrong.join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn healthz_is_200_and_readyz_turns_503_once_draining() {
    let server = start(&["--threads", "2", "--drain-timeout", "5s"]);
    let addr = server.local_addr();
    // A keep-alive connection: healthy and ready now.
    let mut stream = tcp(addr);
    let healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let readyz = b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n";
    stream.write_all(healthz).unwrap();
    assert_eq!(read_response(&mut stream), (200, "ok\n".to_string()));
    stream.write_all(readyz).unwrap();
    assert_eq!(read_response(&mut stream), (200, "ready\n".to_string()));

    // Idle keep-alive connections are closed when a drain begins, so the probes are already on
    // their way: half a request head each, read by the server before the drain starts. Each
    // connection is owed exactly one answer, which it gets whether its shard starts draining
    // before or after the request completes (a response queued before the close goes out).
    let partial_readyz = &readyz[..readyz.len() - 2];
    let partial_healthz = &healthz[..healthz.len() - 2];
    stream.write_all(partial_readyz).unwrap();
    let mut second = tcp(addr);
    second.write_all(partial_healthz).unwrap();
    let sent = (healthz.len() + readyz.len() + partial_readyz.len() + partial_healthz.len()) as u64;
    eventually(ANSWER_TIMEOUT, "the server read both half requests", || {
        server.metric(Metric::BytesIn) == sent
    });
    server.shutdown();
    eventually(ANSWER_TIMEOUT, "the listeners are closed", || {
        std::net::TcpStream::connect(addr).is_err()
    });
    stream.write_all(b"\r\n").unwrap();
    assert_eq!(read_response(&mut stream), (503, "draining\n".to_string()));
    // Healthy all the same: draining is not a failure.
    second.write_all(b"\r\n").unwrap();
    assert_eq!(read_response(&mut second), (200, "ok\n".to_string()));
    drop(stream);
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn history_counters_say_exactly_what_was_kept_and_why_it_left() {
    // One shard, so every topic is owned by the shard that answers the scrape; a 20,000-byte
    // budget holds about six 3,000-byte messages.
    let server = start(&[
        "--threads",
        "1",
        "--history-size",
        "3",
        "--history-ttl",
        "1s",
        "--max-history-bytes",
        "20000",
    ]);
    let addr = server.local_addr();
    let publish = |topic: &str, body: &str| {
        let (status, answer) = http_publish(addr, topic, "application/json", body.as_bytes());
        assert_eq!(status, 200, "{answer}");
    };
    // Each topic has state (a subscriber) before its first publish: a publish to a topic with
    // no state is unheard and kept nowhere.
    let names: Vec<String> = ["a", "big"]
        .into_iter()
        .map(String::from)
        .chain((0..10).map(|t| format!("c{t}")))
        .collect();
    let _listeners: Vec<_> = names
        .iter()
        .map(|topic| {
            let mut client = connect(addr, "/ws");
            subscribe(&mut client, topic);
            client
        })
        .collect();
    for i in 0..5 {
        publish("a", &i.to_string());
    }
    let s = scrape(addr);
    assert_eq!(s.total("crier_history_stored_total"), 5);
    assert_eq!(s.total("crier_history_evicted_total{reason=\"size\"}"), 2);
    assert_eq!(s.total("crier_history_evicted_total{reason=\"ttl\"}"), 0);
    assert_eq!(s.total("crier_history_evicted_total{reason=\"budget\"}"), 0);
    assert_eq!(s.total("crier_history_messages"), 3);
    assert!(s.total("crier_history_bytes") > 3 * 3);
    // Each topic's incarnation started with its first subscriber.
    assert_eq!(s.total("crier_history_incarnations_total"), 12);
    // Larger than the whole budget: not kept.
    publish("big", &format!("\"{}\"", "x".repeat(25_000)));
    let s = scrape(addr);
    assert_eq!(s.total("crier_history_too_large_total"), 1);
    assert_eq!(s.total("crier_history_stored_total"), 5);
    // Ten 3,000-byte messages on ten topics: the oldest leave to stay within the budget.
    let payload = format!("\"{}\"", "y".repeat(3_000));
    for t in 0..10 {
        publish(&format!("c{t}"), &payload);
    }
    let s = scrape(addr);
    let stored = s.total("crier_history_stored_total");
    let by_size = s.total("crier_history_evicted_total{reason=\"size\"}");
    let by_budget = s.total("crier_history_evicted_total{reason=\"budget\"}");
    let kept = s.total("crier_history_messages");
    assert_eq!(stored, 15);
    assert_eq!(by_size, 2);
    assert!(by_budget >= 4, "{by_budget} evicted by the budget");
    assert_eq!(
        kept + by_size + by_budget,
        stored,
        "every stored message is counted once"
    );
    assert!(s.total("crier_history_bytes") <= 20_000);
    assert_eq!(s.total("crier_history_incarnations_total"), 12);
    // Past the TTL everything left goes, and the gauges come back to zero.
    std::thread::sleep(Duration::from_millis(2_500));
    let s = scrape(addr);
    assert_eq!(s.total("crier_history_evicted_total{reason=\"ttl\"}"), kept);
    assert_eq!(s.total("crier_history_messages"), 0);
    assert_eq!(s.total("crier_history_bytes"), 0);
    stop(server, ANSWER_TIMEOUT);
}
