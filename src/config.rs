//! Every option crier has, with its default and the reason for it. Units are in the names
//! (`_bytes`) or the types (`Duration`). Parsing the command line lives here too; nothing
//! here opens a socket.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// What to do with a subscriber whose output queue is over `max_backlog_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowConsumerPolicy {
    /// Close the connection with 1008 "slow consumer": it is behind and will stay behind.
    Disconnect,
    /// Skip messages for it while it is over the cap, then tell it how many it missed.
    Drop,
}

/// The broker's configuration. Each field is also a command-line flag (`--kebab-case`).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "crier",
    version,
    about = "A WebSocket pub/sub push broker: one event loop per core, one prepared frame per publish.",
    long_about = None
)]
pub struct Config {
    /// Address to listen on; every shard binds it with SO_REUSEPORT.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Shard threads (event loops). Default: the number of cores this process may run on.
    #[arg(long)]
    pub threads: Option<usize>,

    /// Open connections allowed across all shards; over it, new requests get 503.
    /// Default: the open-file limit (raised to its hard limit at start-up) minus a reserve.
    #[arg(long)]
    pub max_connections: Option<usize>,

    /// A new connection must finish its HTTP request (head and body) within this time.
    /// Defends against slowloris-style clients that hold sockets open.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// A WebSocket silent for this long is pinged; silent for another interval, it is closed.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// On SIGINT/SIGTERM, how long to wait for clients to finish the close handshake.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Largest message (all fragments together) or HTTP body accepted; larger ones are
    /// refused from the declared length, before buffering (close 1009 / HTTP 413).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_message_bytes: usize,

    /// Largest HTTP request head; over it: 431.
    #[arg(long, default_value_t = 8 * 1024)]
    pub max_head_bytes: usize,

    /// Most header lines in a request head; over it: 431.
    #[arg(long, default_value_t = 64)]
    pub max_headers: usize,

    /// Bytes queued for one connection before the slow-consumer policy applies.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_backlog_bytes: usize,

    /// What to do with a subscriber over `--max-backlog-bytes`.
    #[arg(long, value_enum, default_value = "disconnect")]
    pub slow_consumer: SlowConsumerPolicy,

    /// Topics one connection may subscribe to.
    #[arg(long, default_value_t = 1000)]
    pub max_subscriptions_per_connection: usize,

    /// Origins allowed to open WebSockets (repeat the flag or separate by commas).
    /// Empty: allow every origin.
    #[arg(long = "allowed-origin", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Batches of cross-shard messages one shard's inbox holds before senders count it full.
    #[arg(long, default_value_t = 4096)]
    pub inbox_capacity: usize,

    /// Pin shard k to the k-th CPU this process may run on.
    #[arg(long, default_value_t = false)]
    pub pin_threads: bool,
}

impl Config {
    /// The configuration with every option at its default (what `crier` with no flags runs).
    pub fn defaults() -> Config {
        Config::parse_from(["crier"])
    }

    /// The same configuration listening on `addr` (tests use `127.0.0.1:0`).
    pub fn with_listen(mut self, addr: SocketAddr) -> Config {
        self.listen = addr;
        self
    }
}

/// Parses `10s`, `500ms`, `2m`, `1.5s` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale_secs) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (examples: 10s, 500ms, 2m)"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!(
            "`{text}` is not a duration (examples: 10s, 500ms, 2m)"
        ));
    }
    Ok(Duration::from_secs_f64(value * scale_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = Config::defaults();
        assert_eq!(config.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(config.max_message_bytes, 1 << 20);
        assert_eq!(config.max_backlog_bytes, 1 << 20);
        assert_eq!(config.handshake_timeout, Duration::from_secs(10));
        assert_eq!(config.ping_interval, Duration::from_secs(30));
        assert_eq!(config.drain_timeout, Duration::from_secs(5));
        assert_eq!(config.slow_consumer, SlowConsumerPolicy::Disconnect);
        assert_eq!(config.max_subscriptions_per_connection, 1000);
        assert!(config.allowed_origins.is_empty());
    }

    #[test]
    fn origins_split_on_commas_and_repeat() {
        let config = Config::parse_from([
            "crier",
            "--allowed-origin",
            "https://a.example,https://b.example",
            "--allowed-origin",
            "https://c.example",
        ]);
        assert_eq!(config.allowed_origins.len(), 3);
    }
}
