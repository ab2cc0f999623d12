//! Command-line flags and the plan derived from them: who subscribes to which topic, which
//! publisher sends to which topics, and where to connect. Pure data: no sockets, no clocks.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::Parser;

/// Open-loop, coordinated-omission-corrected load generator for crier protocol v1.
#[derive(Parser, Debug, Clone)]
#[command(name = "crier-load", version, about, long_about = None)]
pub(crate) struct Args {
    /// WebSocket endpoint of the broker (`ws://host:port/path`).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Subscriber connections, spread evenly over the topics (subscriber i takes topic i % T).
    #[arg(long, default_value_t = 1000)]
    pub subscribers: u32,
    /// Number of topics (`load-0` .. `load-{T-1}`).
    #[arg(long, default_value_t = 1)]
    pub topics: u32,
    /// Every subscriber also subscribes to one shared topic `load-all`, and every publisher
    /// sends one message in each rotation over its topics to `load-all` (see README).
    #[arg(long)]
    pub all_topic: bool,
    /// Publisher connections (WebSocket, or HTTP keep-alive with --http-publish).
    #[arg(long, default_value_t = 1)]
    pub publishers: u32,
    /// Total publish rate in messages per second, shared evenly by the publishers (open loop).
    #[arg(long, default_value_t = 100.0, conflicts_with = "max")]
    pub rate: f64,
    /// Publish as fast as the broker accepts: each publisher keeps at most --window
    /// publishes awaiting their ack (closed loop: measures throughput, see README).
    #[arg(long)]
    pub max: bool,
    /// In-flight publishes per publisher in --max mode.
    #[arg(long, default_value_t = 64)]
    pub window: u32,
    /// Payload bytes per message (the `data` JSON, or the binary payload after the topic).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Measured publishing time, after warmup (e.g. `10s`, `500ms`, `2m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Publishing time before the measured window; latencies of messages intended in it are
    /// not recorded (losses still are).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// New connections per second over all threads (0 = as fast as possible, at most
    /// MAX_HANDSHAKES_IN_FLIGHT per thread at once).
    #[arg(long, default_value_t = 0.0)]
    pub connect_rate: f64,
    /// Publish and expect binary frames instead of JSON text.
    #[arg(long)]
    pub binary: bool,
    /// Offer permessage-deflate (RFC 7692) on every WebSocket and inflate compressed frames,
    /// as browsers do: measures what compression costs the broker and saves on the wire.
    #[arg(long)]
    pub compression: bool,
    /// Publish with `POST <URL>/publish/<topic>` over HTTP/1.1 keep-alive instead of over
    /// WebSocket (e.g. `http://127.0.0.1:8080`).
    #[arg(long)]
    pub http_publish: Option<String>,
    /// Print one machine-readable JSON line as the final report.
    #[arg(long)]
    pub json: bool,
    /// Write the latency distribution (HdrHistogram percentile format, milliseconds) here.
    #[arg(long)]
    pub hdr: Option<String>,
    /// Write a latency-by-percentile SVG plot here.
    #[arg(long)]
    pub plot: Option<String>,
    /// Sample this broker process's CPU and RSS from /proc (Linux).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Worker threads, each with its own mio Poll (default: available cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Time to keep receiving after publishing stops before unreceived messages count as lost.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Fail (exit 2) when more than this percentage of subscriber connections fail.
    #[arg(long, default_value_t = 1.0)]
    pub max_failed_pct: f64,
    /// Run the scenario N times, each on fresh connections, and report every run's p50, p99
    /// and max and their spread (min, median, max across runs).
    ///
    /// The top-level numbers then describe all runs together: latency percentiles come from
    /// every run's samples merged (so do --hdr and --plot); counts, seconds and CPU are
    /// summed, so rates are totals over the total measured time; maxima are the largest of
    /// any run; a flag or warning (saturated, timed_out) is raised if any run raised it;
    /// broker RSS is the peak over runs. The JSON adds `repeat` ({count, p50_ms, p99_ms,
    /// max_ms}, each {min, median, max} over the runs with samples) and `runs` (per run:
    /// run, latency_ms {count, p50, p99, max}, deliveries_per_second, lost, timed_out), also
    /// with N = 1. A run that hits the hard timeout ends the series.
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// Reconnect scenario: every subscriber drops its connection every DURATION (staggered
    /// over the subscribers) during publishing and reconnects at once resuming with `since`
    /// from the last seq and epoch it saw. The report adds `resume` (recovered, lost,
    /// duplicated across reconnects; time from reconnect to caught up).
    #[arg(long, value_parser = parse_duration, conflicts_with_all = ["drop_all_at", "all_topic"])]
    pub reconnect_every: Option<Duration>,
    /// Reconnect storm: every subscriber drops at once DURATION after publishing starts, and
    /// all resume with `since` after `--resume-after`.
    #[arg(long, value_parser = parse_duration, conflicts_with = "all_topic")]
    pub drop_all_at: Option<Duration>,
    /// With `--drop-all-at`: how long the subscribers stay away (at `--rate R` on one topic,
    /// R x this many messages are missed).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub resume_after: Duration,
}

impl Args {
    /// A reconnect scenario is on (`--reconnect-every` or `--drop-all-at`).
    pub(crate) fn reconnect_scenario(&self) -> bool {
        self.reconnect_every.is_some() || self.drop_all_at.is_some()
    }
}

/// A `--duration`-like flag that is not a duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DurationError {
    /// Not a number with an optional `ms`, `s` or `m` suffix.
    NotADuration(String),
    /// Negative, infinite or NaN.
    OutOfRange(String),
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationError::NotADuration(text) => {
                write!(f, "`{text}` is not a duration like 10s, 500ms or 2m")
            }
            DurationError::OutOfRange(text) => {
                write!(f, "`{text}` must be a non-negative duration")
            }
        }
    }
}

impl std::error::Error for DurationError {}

/// Parses `10s`, `250ms`, `2m`, `1.5s` or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| DurationError::NotADuration(text.to_string()))?;
    if !(value >= 0.0 && value.is_finite()) {
        return Err(DurationError::OutOfRange(text.to_string()));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// A parsed `ws://` or `http://` URL: where to connect and what to put in the request line.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub addr: SocketAddr,
    /// The `Host` header value (`host:port` as given).
    pub host_header: String,
    /// Path and query, starting with `/`.
    pub path_and_query: String,
}

/// A `--url` or `--http-publish` that cannot be connected to.
#[derive(Debug)]
pub(crate) enum UrlError {
    /// Another scheme than the one expected (`wss`/`https` are not supported).
    WrongScheme {
        url: String,
        scheme: &'static str,
    },
    NoHost {
        url: String,
    },
    CannotResolve {
        url: String,
        host_port: String,
        error: io::Error,
    },
    NoAddress {
        url: String,
        host_port: String,
    },
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::WrongScheme { url, scheme } => write!(
                f,
                "`{url}`: expected a {scheme}:// URL (wss/https are not supported)"
            ),
            UrlError::NoHost { url } => write!(f, "`{url}`: no host"),
            UrlError::CannotResolve {
                url,
                host_port,
                error,
            } => write!(f, "`{url}`: cannot resolve {host_port}: {error}"),
            UrlError::NoAddress { url, host_port } => {
                write!(f, "`{url}`: {host_port} resolves to no address")
            }
        }
    }
}

impl std::error::Error for UrlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UrlError::CannotResolve { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Parses `scheme://host[:port][/path[?query]]` for the one scheme expected.
pub(crate) fn parse_url(
    url: &str,
    scheme: &'static str,
    default_port: u16,
) -> Result<Target, UrlError> {
    let rest = url
        .strip_prefix(scheme)
        .and_then(|r| r.strip_prefix("://"))
        .ok_or_else(|| UrlError::WrongScheme {
            url: url.to_string(),
            scheme,
        })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(UrlError::NoHost {
            url: url.to_string(),
        });
    }
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    let addr = match with_port.to_socket_addrs() {
        Ok(mut addrs) => addrs.next(),
        Err(error) => {
            return Err(UrlError::CannotResolve {
                url: url.to_string(),
                host_port: with_port,
                error,
            })
        }
    };
    let addr = addr.ok_or_else(|| UrlError::NoAddress {
        url: url.to_string(),
        host_port: with_port.clone(),
    })?;
    Ok(Target {
        addr,
        host_header: authority.to_string(),
        path_and_query: path.to_string(),
    })
}

/// Appends `name=value` to a path that may already carry a query.
pub(crate) fn with_query(path_and_query: &str, name: &str, value: &str) -> String {
    let sep = if path_and_query.contains('?') {
        '&'
    } else {
        '?'
    };
    format!("{path_and_query}{sep}{name}={value}")
}

/// The path for `POST .../publish/<topic>` under an HTTP base URL's path.
pub(crate) fn http_publish_path(base_path: &str, topic: &str) -> String {
    let base = base_path
        .split('?')
        .next()
        .unwrap_or("")
        .trim_end_matches('/');
    if base.is_empty() {
        format!("/publish/{topic}")
    } else if base.ends_with("/publish") {
        format!("{base}/{topic}")
    } else {
        format!("{base}/publish/{topic}")
    }
}

/// Who talks about what. Topic indexes `0..topics` are `load-{k}`; with `all_topic`, index
/// `topics` is `load-all`.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub topics: u32,
    pub publishers: u32,
    pub all_topic: bool,
}

impl Plan {
    /// The index of `load-all` (only meaningful with `all_topic`).
    pub(crate) fn all_index(&self) -> u32 {
        self.topics
    }

    /// Number of topic indexes in use.
    pub(crate) fn topic_count(&self) -> u32 {
        self.topics + u32::from(self.all_topic)
    }

    pub(crate) fn topic_name(&self, k: u32) -> String {
        if self.all_topic && k == self.all_index() {
            "load-all".to_string()
        } else {
            format!("load-{k}")
        }
    }

    /// Inverse of [`Plan::topic_name`], without allocating.
    pub(crate) fn topic_index(&self, name: &[u8]) -> Option<u32> {
        let rest = name.strip_prefix(b"load-")?;
        if rest == b"all" {
            return self.all_topic.then_some(self.all_index());
        }
        let k = parse_u64(rest)?;
        (k < u64::from(self.topics)).then_some(k as u32)
    }

    /// The topic of subscriber `i` (besides `load-all`).
    pub(crate) fn subscriber_topic(&self, i: u32) -> u32 {
        i % self.topics
    }

    /// Topics of subscriber `i`, own topic first.
    pub(crate) fn subscriber_topics(&self, i: u32) -> Vec<u32> {
        let mut v = vec![self.subscriber_topic(i)];
        if self.all_topic {
            v.push(self.all_index());
        }
        v
    }

    /// The topics publisher `p` rotates over: with T >= P the topics `k % P == p`, otherwise
    /// topic `p % T`; plus `load-all` once per rotation with `all_topic`.
    pub(crate) fn publisher_topics(&self, p: u32) -> Vec<u32> {
        let mut v: Vec<u32> = if self.topics >= self.publishers {
            (p..self.topics).step_by(self.publishers as usize).collect()
        } else {
            vec![p % self.topics]
        };
        if self.all_topic {
            v.push(self.all_index());
        }
        v
    }

    /// Number of publishers sending to topic `k`.
    pub(crate) fn publishers_of(&self, k: u32) -> u32 {
        let (p, t) = (self.publishers, self.topics);
        if self.all_topic && k == self.all_index() {
            p
        } else if t >= p {
            1
        } else {
            p / t + u32::from(k < p % t)
        }
    }

    /// The dense slot of publisher `p` among the publishers of topic `k`, or `None` if `p`
    /// does not publish to `k` (a message that must not exist).
    pub(crate) fn publisher_slot(&self, k: u32, p: u32) -> Option<u32> {
        if p >= self.publishers {
            return None;
        }
        if self.all_topic && k == self.all_index() {
            return Some(p);
        }
        if k >= self.topics {
            return None;
        }
        if self.topics >= self.publishers {
            (k % self.publishers == p).then_some(0)
        } else {
            (p % self.topics == k).then_some(p / self.topics)
        }
    }
}

/// Parses ASCII decimal digits (the whole slice) into a u64.
pub(crate) fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(b - b'0');
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(t: u32, p: u32, all: bool) -> Plan {
        Plan {
            topics: t,
            publishers: p,
            all_topic: all,
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(
            parse_duration(" soon ").unwrap_err().to_string(),
            "`soon` is not a duration like 10s, 500ms or 2m"
        );
        assert_eq!(
            parse_duration("-1s"),
            Err(DurationError::OutOfRange("-1s".into()))
        );
    }

    #[test]
    fn urls() {
        let t = parse_url("ws://127.0.0.1:18080/ws?x=1", "ws", 80).unwrap();
        assert_eq!(t.addr, "127.0.0.1:18080".parse().unwrap());
        assert_eq!(t.path_and_query, "/ws?x=1");
        assert_eq!(t.host_header, "127.0.0.1:18080");
        let t = parse_url("ws://127.0.0.1", "ws", 80).unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.path_and_query, "/");
        assert_eq!(
            parse_url("wss://127.0.0.1/ws", "ws", 80)
                .unwrap_err()
                .to_string(),
            "`wss://127.0.0.1/ws`: expected a ws:// URL (wss/https are not supported)"
        );
        assert!(matches!(
            parse_url("ws:///ws", "ws", 80),
            Err(UrlError::NoHost { .. })
        ));
        assert_eq!(with_query("/ws", "topic", "a"), "/ws?topic=a");
        assert_eq!(with_query("/ws?x=1", "topic", "a"), "/ws?x=1&topic=a");
        assert_eq!(http_publish_path("/", "t"), "/publish/t");
        assert_eq!(http_publish_path("/publish", "t"), "/publish/t");
        assert_eq!(http_publish_path("/api/", "t"), "/api/publish/t");
    }

    /// Every (topic, publisher) pair a publisher sends to has a slot, slots are dense per
    /// topic, and the subscriber counts add up.
    #[test]
    fn plan_is_consistent() {
        for (s, t, p, all) in [
            (10, 1, 1, false),
            (10, 3, 7, false),
            (10, 7, 3, true),
            (5, 10, 1, true),
            (4, 4, 4, true),
        ] {
            let pl = plan(t, p, all);
            let mut seen = vec![Vec::new(); pl.topic_count() as usize];
            for pb in 0..p {
                for k in pl.publisher_topics(pb) {
                    let slot = pl
                        .publisher_slot(k, pb)
                        .expect("publisher sends to its topic");
                    seen[k as usize].push(slot);
                }
            }
            for k in 0..pl.topic_count() {
                let mut slots = seen[k as usize].clone();
                slots.sort_unstable();
                let expected: Vec<u32> = (0..pl.publishers_of(k)).collect();
                assert_eq!(slots, expected, "topic {k} in {pl:?}");
                assert_eq!(pl.topic_index(pl.topic_name(k).as_bytes()), Some(k));
            }
            let mut per_topic = vec![0u32; t as usize];
            for i in 0..s {
                per_topic[pl.subscriber_topic(i) as usize] += 1;
            }
            assert!(
                per_topic.iter().max().unwrap() - per_topic.iter().min().unwrap() <= 1,
                "even spread"
            );
            assert_eq!(pl.publisher_slot(0, p), None);
        }
        assert_eq!(plan(2, 1, false).topic_index(b"load-2"), None);
        assert_eq!(plan(2, 1, false).topic_index(b"load-all"), None);
    }
}
