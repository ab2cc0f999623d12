//! Every option crier has, with its default and the reason for it, and how they are loaded:
//! command line over TOML file (`--config`) over defaults. Units are in the names (`_bytes`) or
//! the types (`Duration`). Nothing here opens a socket or starts a thread.

use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};

use crate::topic::TopicPattern;

/// What to do with a subscriber whose output queue is over `max_backlog_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowConsumerPolicy {
    /// Close the connection with 1008 "slow consumer": it is behind and will stay behind.
    Disconnect,
    /// Skip messages for it while it is over the cap, then tell it how many it missed.
    Drop,
}

impl SlowConsumerPolicy {
    /// The name used on the command line and in the file.
    pub fn name(self) -> &'static str {
        match self {
            SlowConsumerPolicy::Disconnect => "disconnect",
            SlowConsumerPolicy::Drop => "drop",
        }
    }
}

/// Whether WebSockets may negotiate permessage-deflate (RFC 7692).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionMode {
    /// Accept permessage-deflate offers; deflate each publish once for all who accepted.
    On,
    /// Decline every offer: no RSV1 frames either way.
    Off,
}

impl CompressionMode {
    /// The name used on the command line and in the file.
    pub fn name(self) -> &'static str {
        match self {
            CompressionMode::On => "on",
            CompressionMode::Off => "off",
        }
    }
}

/// Whether a shard's flush hands its sends to the kernel in io_uring batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoUringMode {
    /// io_uring where the kernel allows it, else one `write`/`writev` per connection (logged).
    Auto,
    /// io_uring or refuse to start.
    On,
    /// One `write`/`writev` syscall per connection.
    Off,
}

impl IoUringMode {
    /// The name used on the command line and in the file.
    pub fn name(self) -> &'static str {
        match self {
            IoUringMode::Auto => "auto",
            IoUringMode::On => "on",
            IoUringMode::Off => "off",
        }
    }
}

/// Where a publish gets its seq and how it reaches subscribers on other shards and nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// This process only: the in-process mesh (nothing else to run).
    Local,
    /// Nodes share topics through Redis: seq, epoch and history live there.
    Redis,
}

impl EngineKind {
    /// The name used on the command line and in the file.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Local => "local",
            EngineKind::Redis => "redis",
        }
    }
}

/// The broker's configuration. Each field is also a command-line flag (`--kebab-case`) and a
/// key of the configuration file (`snake_case`, the field's name).
#[derive(Debug, Clone, PartialEq, Parser)]
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
    #[arg(long, value_parser = parse_positive)]
    pub threads: Option<usize>,

    /// Open connections allowed across all shards; over it, a new connection is answered 503
    /// and closed as soon as it is accepted. Default: the open-file limit (raised to its hard
    /// limit at start-up) minus a reserve.
    #[arg(long, value_parser = parse_positive)]
    pub max_connections: Option<usize>,

    /// Open connections allowed from one client address (IPv6: one /64) across all shards;
    /// over it, 503 at accept time. 0 (default) is off: many users can share one address
    /// behind NAT or a proxy.
    #[arg(long, default_value_t = 0)]
    pub max_connections_per_ip: usize,

    /// A new connection must finish its HTTP request (head and body) within this time.
    /// Defends against slowloris-style clients that hold sockets open.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    pub handshake_timeout: Duration,

    /// Every fragment of one WebSocket message must arrive within this time of its first, or
    /// the connection is closed (1008): nobody holds an assembly buffer open for ever.
    /// Default: the handshake timeout.
    #[arg(long, value_parser = parse_positive_duration)]
    pub fragment_timeout: Option<Duration>,

    /// A WebSocket silent for this long is pinged; silent for another interval, it is closed.
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration)]
    pub ping_interval: Duration,

    /// On SIGINT/SIGTERM, first answer /readyz with 503 for this long while still serving
    /// and accepting, so load balancers stop sending new clients before the listeners close.
    /// A second signal cuts it short. 0 (default) starts the drain at once.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub drain_delay: Duration,

    /// On SIGINT/SIGTERM, how long to wait for clients to finish the close handshake.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Largest message (all fragments together) or HTTP body accepted; larger ones are
    /// refused from the declared length, before buffering (close 1009 / HTTP 413).
    #[arg(long, default_value_t = 1 << 20, value_parser = parse_positive)]
    pub max_message_bytes: usize,

    /// Largest HTTP request head; over it: 431.
    #[arg(long, default_value_t = 8 * 1024, value_parser = parse_positive)]
    pub max_head_bytes: usize,

    /// Most header lines in a request head; over it: 431.
    #[arg(long, default_value_t = 64, value_parser = parse_positive)]
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

    /// Messages kept per topic, so a client that reconnects gets what it missed and a page
    /// shows recent messages on load; 0 turns history off. 100 covers a reconnect of a few
    /// seconds on a busy topic, or the recent past of a chat room.
    #[arg(long, default_value_t = 100)]
    pub history_size: usize,

    /// How long a kept message stays. 5 minutes covers a train tunnel or a laptop lid; a
    /// client away longer is told `recovered: false` and reloads.
    #[arg(long, default_value = "5m", value_parser = parse_positive_duration)]
    pub history_ttl: Duration,

    /// Bytes all topics' history may take in total, split evenly between shards; over it the
    /// oldest messages go first. 64 MiB: enough for 100 messages of 1 KiB on ~600 busy topics,
    /// small enough for any server.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_history_bytes: usize,

    /// Most messages one resume replays; a client further behind gets `recovered: false`
    /// (a reconnect storm must not turn into a replay storm).
    #[arg(long, default_value_t = 1000)]
    pub max_replay_messages: usize,

    /// Per-topic history overrides: `[[topics]]` tables in the configuration file only.
    #[arg(skip)]
    pub topics: Vec<TopicOverride>,
    /// Subscriptions across all connections; a subscribe over it is answered `limit_reached`.
    /// Default: a quarter of physical memory divided by the measured cost of one subscription
    /// with a 256-byte name (docs/configuration.md).
    #[arg(long, value_parser = parse_positive)]
    pub max_subscriptions: Option<usize>,

    /// Distinct topics with subscribers across all shards; a subscribe that would add one
    /// over it is answered `limit_reached`. Default: an eighth of physical memory divided by
    /// the measured cost of one topic with a 256-byte name (docs/configuration.md).
    #[arg(long, value_parser = parse_positive)]
    pub max_topics: Option<usize>,

    /// permessage-deflate for clients that offer it (every browser does). On: each publish is
    /// deflated once, on its topic's owner, and the same bytes go to every compressing
    /// subscriber, so CPU grows per publish, not per subscriber (docs/decisions.md).
    #[arg(long, value_enum, default_value = "on")]
    pub compression: CompressionMode,

    /// Deliveries whose frame payload is shorter than this are sent plain: deflate from an
    /// empty window saves little on short messages (128 B of JSON: 12 % at level 6, nothing
    /// at level 1; 256 B: 37 %) for a fixed ~10 µs per publish (bench/deflate).
    #[arg(long, default_value_t = 256)]
    pub compression_min_bytes: usize,

    /// zlib level for the deflated twin of a publish (1 fastest .. 9 smallest). 6: 1 KiB of
    /// JSON to 31 % in ~20 µs, once per publish (level 1: 40 % in ~5 µs; 9: no smaller than 6).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub compression_level: u32,

    /// Batched sends: each flush hands up to 256 connections' writes to the kernel with one
    /// `io_uring_enter` instead of a syscall each: 22-25 % less of the sending thread's own CPU
    /// (bench/uring_send), 1-17 % less CPU on the broker's core once the softirq work the
    /// kernel then defers to `ksoftirqd` is counted (docs/benchmarks.md). `auto` falls back to
    /// syscalls where io_uring cannot be set up (an old kernel, a container's seccomp profile,
    /// `kernel.io_uring_disabled`) and says so at start-up.
    #[arg(long, value_enum, default_value = "auto")]
    pub io_uring: IoUringMode,

    /// Origins allowed to open WebSockets (repeat the flag or separate by commas).
    /// Empty: allow every origin.
    #[arg(long = "allowed-origin", value_delimiter = ',', value_parser = parse_origin)]
    pub allowed_origins: Vec<String>,

    /// Bytes of cross-shard data (publishes, deliveries: payload plus 64 B each) one shard's
    /// inbox may hold; past it, publishes to the shard are refused (`overloaded`) and skipped
    /// deliveries announced (`dropped`). Control messages may use twice as much.
    #[arg(long, default_value_t = 16 << 20, value_parser = parse_positive)]
    pub inbox_budget_bytes: usize,

    /// Pin shard k to the k-th CPU this process may run on.
    #[arg(long, default_value_t = false)]
    pub pin_threads: bool,

    /// HMAC secret for HS256/384/512 connection tokens, one file each (repeat for rotation;
    /// `KID=PATH` gives the key a `kid`). Setting any JWT key turns authentication on.
    #[arg(long = "jwt-secret-file", value_name = "[KID=]PATH", value_parser = parse_key_file)]
    pub jwt_secret_file: Vec<KeyFile>,

    /// PEM public key (RSA, EC P-256/P-384, Ed25519) for RS*/PS*/ES*/EdDSA connection tokens
    /// (repeat for rotation; `KID=PATH` gives the key a `kid`).
    #[arg(long = "jwt-public-key-file", value_name = "[KID=]PATH", value_parser = parse_key_file)]
    pub jwt_public_key_file: Vec<KeyFile>,

    /// When set, tokens must carry this `aud`. Unset: `aud` is not checked.
    #[arg(long, value_parser = parse_claim_value)]
    pub jwt_audience: Option<String>,

    /// When set, tokens must carry this `iss`. Unset: `iss` is not checked.
    #[arg(long, value_parser = parse_claim_value)]
    pub jwt_issuer: Option<String>,

    /// Clock skew tolerated on `exp`, `nbf` and `iat`: clocks of the backend and crier differ.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub jwt_leeway: Duration,

    /// With authentication on, a topic pattern (`*`, `>`) clients without a token may
    /// subscribe to (repeat). None: anonymous clients may not subscribe.
    #[arg(long = "anonymous-subscribe", value_name = "PATTERN", value_parser = parse_anonymous_pattern)]
    pub anonymous_subscribe: Vec<String>,

    /// With authentication on, a topic pattern clients without a token may publish to
    /// (repeat). None: anonymous clients may not publish.
    #[arg(long = "anonymous-publish", value_name = "PATTERN", value_parser = parse_anonymous_pattern)]
    pub anonymous_publish: Vec<String>,

    /// File of API keys, one per line: `POST /publish` then needs `Authorization: Bearer KEY`
    /// (or a JWT with a publish grant). Unset: the HTTP API follows the WebSocket rules.
    #[arg(long, value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,

    /// Serve /metrics on this separate address (e.g. 127.0.0.1:9090) and no longer on
    /// `--listen`, so metrics need not be public. Unset: /metrics on `--listen`, as before.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Publishes per second one connection may make (token bucket, bursts of one second's
    /// worth); over it: `rate_limited` / HTTP 429. Unset: unlimited.
    #[arg(long, value_name = "PER_SECOND", value_parser = parse_rate)]
    pub max_publish_rate: Option<u32>,

    /// WebSocket handshakes per second from one client address (IPv6: per /64), across all
    /// shards, with bursts of one second's worth; over it: 429. Unset: unlimited.
    #[arg(long, value_name = "PER_SECOND", value_parser = parse_rate)]
    pub max_handshake_rate_per_ip: Option<u32>,

    /// Where seq is assigned and how publishes travel: `local` (this process; the default, so
    /// a first start needs nothing else) or `redis` (several nodes share topics through Redis).
    #[arg(long, value_enum, default_value = "local")]
    pub engine: EngineKind,

    /// With `--engine redis`: `redis://host:port[/db]`. Repeat it for a Redis Cluster seed
    /// list (with `--redis-cluster`). Default: redis://127.0.0.1:6379.
    #[arg(long = "redis-url", value_parser = parse_redis_url)]
    pub redis_url: Vec<String>,

    /// Talk to a Redis Cluster (`--redis-url` values are seeds; SPUBLISH/SSUBSCRIBE).
    #[arg(long, default_value_t = false)]
    pub redis_cluster: bool,

    /// Prefix of every key and channel crier uses in Redis, so several deployments can share
    /// one Redis.
    #[arg(long, default_value = "crier", value_parser = parse_redis_prefix)]
    pub redis_prefix: String,

    /// A Redis command taking longer than this counts as a lost connection (publishes are
    /// refused with engine_unavailable until a reconnect caught up).
    #[arg(long, default_value = "2s", value_parser = parse_positive_duration)]
    pub redis_timeout: Duration,

    /// /readyz answers 503 once the engine's backend (Redis) has been unreachable this long:
    /// long enough to ride out a Redis restart, short enough for a load balancer to react.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub engine_unready_after: Duration,

    /// Topics that get their own fan-out latency histogram in /metrics (repeatable; `*` is one
    /// segment, a final `>` one or more). None by default, so the series count stays bounded.
    #[arg(long = "metrics-topic", value_name = "PATTERN", value_parser = parse_topic_pattern)]
    pub metrics_topics: Vec<TopicPattern>,
}

impl Config {
    /// The configuration with every option at its default (what `crier` with no flags runs).
    pub fn defaults() -> Config {
        Config::parse_from(["crier"])
    }

    /// How long one message's fragments may take: `--fragment-timeout`, else the handshake timeout.
    pub fn fragment_deadline(&self) -> Duration {
        self.fragment_timeout.unwrap_or(self.handshake_timeout)
    }

    /// The same configuration listening on `addr` (tests use `127.0.0.1:0`).
    pub fn with_listen(mut self, addr: SocketAddr) -> Config {
        self.listen = addr;
        self
    }

    /// The configuration as a TOML file that [`load`] reads back to the same `Config`. Options
    /// whose default is computed at start-up (`threads`, `max_connections`) appear commented
    /// out while unset.
    pub fn to_toml(&self) -> String {
        let mut out = String::from(
            "# crier configuration: the effective values (defaults, file and flags merged).\n\
             # Load it with `crier --config PATH`; flags given on the command line override it.\n",
        );
        let command = Config::command();
        for option in OPTIONS {
            let arg = command
                .get_arguments()
                .find(|arg| arg.get_id() == option.key);
            if let Some(arg) = arg {
                let flag = arg.get_long().unwrap_or(option.key);
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                let _ = writeln!(out, "\n# --{flag}: {}", help.replace('\n', "\n# "));
            }
            match (option.render)(self) {
                Some(value) => {
                    let _ = writeln!(out, "{} = {}", option.key, value);
                }
                None => {
                    let why = match option.key {
                        "threads" | "max_connections" => "unset: computed at start-up",
                        _ => "unset",
                    };
                    let _ = writeln!(out, "# {} = ({why})", option.key);
                }
            }
        }
        out.push_str(&topics_toml(&self.topics));
        out
    }
}

/// A `[[topics]]` table of the configuration file: what topics matching `pattern` keep,
/// instead of `--history-size` and `--history-ttl`. The first matching table wins.
///
/// ```toml
/// [[topics]]
/// pattern = "chat.>"
/// history_size = 200
/// history_ttl = "10m"
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicOverride {
    /// `*` matches one dot-separated segment, a final `>` one or more.
    pub pattern: String,
    /// Messages kept; `None`: `--history-size`.
    pub history_size: Option<usize>,
    /// How long they are kept; `None`: `--history-ttl`.
    pub history_ttl: Option<Duration>,
}

/// The file key of the `[[topics]]` tables.
const TOPICS_KEY: &str = "topics";

/// The command line: the options plus what only the command line can say.
#[derive(Debug, Parser)]
#[command(
    name = "crier",
    version,
    about = "A WebSocket pub/sub push broker: one event loop per core, one prepared frame per publish.",
    long_about = None
)]
struct CommandLine {
    /// Read options from this TOML file; flags given on the command line override it.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,

    #[command(flatten)]
    options: Config,
}

/// What [`load`] found: the configuration to run with, and what else the command line asked.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    /// The file the options were read from, if any.
    pub file: Option<PathBuf>,
    /// `--print-config`: print [`Config::to_toml`] and exit instead of serving.
    pub print_config: bool,
}

/// Why the configuration could not be loaded. Every variant but `CommandLine` names the file
/// and, where there is one, the key.
#[derive(Debug)]
pub enum ConfigError {
    /// The command line is wrong, or asked for `--help`/`--version` (clap renders both).
    CommandLine(clap::Error),
    /// The file could not be read.
    Unreadable { path: PathBuf, source: io::Error },
    /// The file is not TOML.
    NotToml { path: PathBuf, message: String },
    /// A key no option has.
    UnknownKey {
        path: PathBuf,
        key: String,
        suggestion: Option<&'static str>,
    },
    /// A known key with a value of the wrong type or out of range.
    BadValue {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

impl ConfigError {
    /// The process exit code: 2 for every configuration error (like a usage error), 0 for
    /// `--help` and `--version`.
    pub fn exit_code(&self) -> u8 {
        match self {
            ConfigError::CommandLine(error) => u8::try_from(error.exit_code()).unwrap_or(2),
            _ => 2,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::CommandLine(error) => write!(f, "{error}"),
            ConfigError::Unreadable { path, source } => {
                write!(f, "{}: cannot read: {source}", path.display())
            }
            ConfigError::NotToml { path, message } => {
                write!(
                    f,
                    "{}: not valid TOML: {}",
                    path.display(),
                    message.trim_end()
                )
            }
            ConfigError::UnknownKey {
                path,
                key,
                suggestion,
            } => {
                write!(f, "{}: key {key:?}: unknown key", path.display())?;
                match suggestion {
                    Some(known) => write!(f, " (did you mean {known:?}?)"),
                    None => write!(f, " (known keys: {})", known_keys()),
                }
            }
            ConfigError::BadValue { path, key, reason } => {
                write!(f, "{}: key {key:?}: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::CommandLine(error) => Some(error),
            ConfigError::Unreadable { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Parses the command line (`args` includes the program name), reads the `--config` file if
/// one is named, and merges: a flag given on the command line wins over the file, the file
/// wins over the default.
pub fn load<I, T>(args: I) -> Result<LoadedConfig, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = CommandLine::command()
        .try_get_matches_from(args)
        .map_err(ConfigError::CommandLine)?;
    let command_line = CommandLine::from_arg_matches(&matches).map_err(ConfigError::CommandLine)?;
    let mut config = command_line.options;
    if let Some(path) = &command_line.config {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
            path: path.clone(),
            source,
        })?;
        merge_file(&mut config, &text, path, &matches)?;
    }
    Ok(LoadedConfig {
        config,
        file: command_line.config,
        print_config: command_line.print_config,
    })
}

/// Applies every key of the file to `config`, except options given on the command line.
fn merge_file(
    config: &mut Config,
    text: &str,
    path: &Path,
    matches: &ArgMatches,
) -> Result<(), ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::NotToml {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    for (key, value) in &table {
        if key == TOPICS_KEY {
            config.topics = read_topics(value).map_err(|reason| ConfigError::BadValue {
                path: path.to_path_buf(),
                key: key.clone(),
                reason,
            })?;
            continue;
        }
        let Some(option) = OPTIONS.iter().find(|o| o.key == key) else {
            return Err(ConfigError::UnknownKey {
                path: path.to_path_buf(),
                key: key.clone(),
                suggestion: suggest(key),
            });
        };
        // Checked even when the command line overrides it: a broken file is broken.
        let mut from_file = config.clone();
        (option.apply)(&mut from_file, value).map_err(|reason| ConfigError::BadValue {
            path: path.to_path_buf(),
            key: key.clone(),
            reason,
        })?;
        if matches.value_source(option.key) != Some(ValueSource::CommandLine) {
            *config = from_file;
        }
    }
    Ok(())
}

/// One key of the configuration file: how to read it into a `Config` and how to write it out.
struct FileOption {
    /// The key, which is also the clap argument id (the field's name).
    key: &'static str,
    apply: fn(&mut Config, &toml::Value) -> Result<(), String>,
    /// `None` for an unset optional value.
    render: fn(&Config) -> Option<toml::Value>,
}

macro_rules! file_options {
    ($( $field:ident : $read:expr => $write:expr, )*) => {
        /// Every key the configuration file accepts, in `Config` order.
        const OPTIONS: &[FileOption] = &[
            $( FileOption {
                key: stringify!($field),
                apply: |config, value| {
                    config.$field = ($read)(value)?;
                    Ok(())
                },
                render: |config| ($write)(&config.$field),
            }, )*
        ];
    };
}

file_options! {
    listen: read_socket_addr => |v: &SocketAddr| Some(toml::Value::String(v.to_string())),
    threads: |v| read_count(v, 1).map(Some) => |v: &Option<usize>| v.map(count_value),
    max_connections: |v| read_count(v, 1).map(Some) => |v: &Option<usize>| v.map(count_value),
    max_connections_per_ip: |v| read_count(v, 0) => |v: &usize| Some(count_value(*v)),
    handshake_timeout: |v| read_duration(v, true) => |v: &Duration| Some(duration_value(*v)),
    fragment_timeout: |v| read_duration(v, true).map(Some) => |v: &Option<Duration>| v.map(duration_value),
    ping_interval: |v| read_duration(v, true) => |v: &Duration| Some(duration_value(*v)),
    drain_delay: |v| read_duration(v, false) => |v: &Duration| Some(duration_value(*v)),
    drain_timeout: |v| read_duration(v, false) => |v: &Duration| Some(duration_value(*v)),
    max_message_bytes: |v| read_count(v, 1) => |v: &usize| Some(count_value(*v)),
    max_head_bytes: |v| read_count(v, 1) => |v: &usize| Some(count_value(*v)),
    max_headers: |v| read_count(v, 1) => |v: &usize| Some(count_value(*v)),
    max_backlog_bytes: |v| read_count(v, 0) => |v: &usize| Some(count_value(*v)),
    slow_consumer: read_policy => |v: &SlowConsumerPolicy| Some(toml::Value::String(v.name().into())),
    max_subscriptions_per_connection: |v| read_count(v, 0) => |v: &usize| Some(count_value(*v)),
    history_size: |v| read_count(v, 0) => |v: &usize| Some(count_value(*v)),
    history_ttl: |v| read_duration(v, true) => |v: &Duration| Some(duration_value(*v)),
    max_history_bytes: |v| read_count(v, 0) => |v: &usize| Some(count_value(*v)),
    max_replay_messages: |v| read_count(v, 0) => |v: &usize| Some(count_value(*v)),
    max_subscriptions: |v| read_count(v, 1).map(Some) => |v: &Option<usize>| v.map(count_value),
    max_topics: |v| read_count(v, 1).map(Some) => |v: &Option<usize>| v.map(count_value),
    compression: read_compression => |v: &CompressionMode| Some(toml::Value::String(v.name().into())),
    compression_min_bytes: |v| read_count(v, 0) => |v: &usize| Some(count_value(*v)),
    compression_level: |v| read_count(v, 1).and_then(|n| {
        u32::try_from(n).ok().filter(|n| *n <= 9).ok_or_else(|| format!("{n} is not a zlib level 1..9"))
    }) => |v: &u32| Some(count_value(*v as usize)),
    io_uring: read_io_uring => |v: &IoUringMode| Some(toml::Value::String(v.name().into())),
    allowed_origins: read_origins => |v: &Vec<String>| Some(toml::Value::Array(
        v.iter().cloned().map(toml::Value::String).collect(),
    )),
    inbox_budget_bytes: |v| read_count(v, 1) => |v: &usize| Some(count_value(*v)),
    pin_threads: read_bool => |v: &bool| Some(toml::Value::Boolean(*v)),
    jwt_secret_file: read_key_files => key_files_value,
    jwt_public_key_file: read_key_files => key_files_value,
    jwt_audience: |v| read_claim_value(v).map(Some) => |v: &Option<String>| v.clone().map(toml::Value::String),
    jwt_issuer: |v| read_claim_value(v).map(Some) => |v: &Option<String>| v.clone().map(toml::Value::String),
    jwt_leeway: |v| read_duration(v, false) => |v: &Duration| Some(duration_value(*v)),
    anonymous_subscribe: read_patterns => patterns_value,
    anonymous_publish: read_patterns => patterns_value,
    api_key_file: |v| read_path(v).map(Some) => |v: &Option<PathBuf>| v.as_ref().map(|p| toml::Value::String(p.display().to_string())),
    metrics_listen: |v| read_socket_addr(v).map(Some) => |v: &Option<SocketAddr>| v.map(|a| toml::Value::String(a.to_string())),
    max_publish_rate: |v| read_rate(v).map(Some) => |v: &Option<u32>| v.map(|n| toml::Value::Integer(i64::from(n))),
    max_handshake_rate_per_ip: |v| read_rate(v).map(Some) => |v: &Option<u32>| v.map(|n| toml::Value::Integer(i64::from(n))),
    engine: read_engine => |v: &EngineKind| Some(toml::Value::String(v.name().into())),
    redis_url: read_redis_urls => |v: &Vec<String>| Some(toml::Value::Array(
        v.iter().cloned().map(toml::Value::String).collect(),
    )),
    redis_cluster: read_bool => |v: &bool| Some(toml::Value::Boolean(*v)),
    redis_prefix: read_redis_prefix => |v: &String| Some(toml::Value::String(v.clone())),
    redis_timeout: |v| read_duration(v, true) => |v: &Duration| Some(duration_value(*v)),
    engine_unready_after: |v| read_duration(v, false) => |v: &Duration| Some(duration_value(*v)),
    metrics_topics: read_topic_patterns => |v: &Vec<TopicPattern>| Some(toml::Value::Array(
        v.iter().map(|p| toml::Value::String(p.to_string())).collect(),
    )),
}

fn known_keys() -> String {
    let mut keys: Vec<&str> = OPTIONS.iter().map(|o| o.key).collect();
    keys.push(TOPICS_KEY);
    keys.join(", ")
}

/// Reads the `[[topics]]` array of tables.
fn read_topics(value: &toml::Value) -> Result<Vec<TopicOverride>, String> {
    let expected = "expected [[topics]] tables with a pattern and history_size and/or history_ttl";
    let toml::Value::Array(items) = value else {
        return Err(format!("{expected}, found {}", found(value)));
    };
    let mut overrides = Vec::with_capacity(items.len());
    for (n, item) in items.iter().enumerate() {
        let at = |reason: String| format!("[[topics]] number {}: {reason}", n + 1);
        let toml::Value::Table(table) = item else {
            return Err(at(format!("{expected}, found {}", found(item))));
        };
        let mut topic = TopicOverride {
            pattern: String::new(),
            history_size: None,
            history_ttl: None,
        };
        for (key, value) in table {
            match key.as_str() {
                "pattern" => {
                    let toml::Value::String(pattern) = value else {
                        return Err(at(format!(
                            "pattern: expected a string such as \"chat.>\", found {}",
                            found(value)
                        )));
                    };
                    TopicPattern::parse(pattern)
                        .map_err(|e| at(format!("pattern {pattern:?}: {e}")))?;
                    topic.pattern = pattern.clone();
                }
                "history_size" => {
                    topic.history_size =
                        Some(read_count(value, 0).map_err(|r| at(format!("history_size: {r}")))?);
                }
                "history_ttl" => {
                    topic.history_ttl = Some(
                        read_duration(value, true).map_err(|r| at(format!("history_ttl: {r}")))?,
                    );
                }
                other => {
                    return Err(at(format!(
                        "unknown key {other:?} (known: pattern, history_size, history_ttl)"
                    )))
                }
            }
        }
        if topic.pattern.is_empty() {
            return Err(at("a pattern is required".to_string()));
        }
        overrides.push(topic);
    }
    Ok(overrides)
}

/// Writes `[[topics]]` tables that [`read_topics`] reads back.
fn topics_toml(topics: &[TopicOverride]) -> String {
    let mut out = String::new();
    for topic in topics {
        let mut table = toml::Table::new();
        table.insert("pattern".into(), toml::Value::String(topic.pattern.clone()));
        if let Some(size) = topic.history_size {
            table.insert("history_size".into(), count_value(size));
        }
        if let Some(ttl) = topic.history_ttl {
            table.insert("history_ttl".into(), duration_value(ttl));
        }
        let _ = write!(out, "\n[[topics]]\n{table}");
    }
    out
}

/// The known key closest to a mistyped one, if it is close enough to be what was meant.
fn suggest(key: &str) -> Option<&'static str> {
    let normalized = key.trim().to_ascii_lowercase().replace('-', "_");
    OPTIONS
        .iter()
        .map(|o| o.key)
        .chain([TOPICS_KEY])
        .map(|known| (edit_distance(&normalized, known), known))
        .filter(|&(distance, known)| distance <= 2 + known.len() / 8)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, known)| known)
}

/// Levenshtein distance over bytes (keys are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

fn found(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("the string {s:?}"),
        toml::Value::Integer(i) => format!("the number {i}"),
        toml::Value::Float(x) => format!("the number {x}"),
        toml::Value::Boolean(b) => format!("{b}"),
        other => format!("a {}", other.type_str()),
    }
}

fn read_socket_addr(value: &toml::Value) -> Result<SocketAddr, String> {
    match value {
        toml::Value::String(text) => text.trim().parse().map_err(|_| {
            format!("{text:?} is not an address with a port (examples: \"0.0.0.0:8080\", \"[::]:8080\")")
        }),
        other => Err(format!(
            "expected an address string such as \"0.0.0.0:8080\", found {}",
            found(other)
        )),
    }
}

fn read_count(value: &toml::Value, min: usize) -> Result<usize, String> {
    match value {
        toml::Value::Integer(n) => match usize::try_from(*n) {
            Ok(n) if n >= min => Ok(n),
            Ok(n) => Err(format!("{n} is too small (at least {min})")),
            Err(_) if *n < 0 => Err(format!(
                "{n} is negative (expected a whole number >= {min})"
            )),
            Err(_) => Err(format!("{n} is too large for this machine")),
        },
        other => Err(format!(
            "expected a whole number >= {min} (no quotes; 1_048_576 is fine), found {}",
            found(other)
        )),
    }
}

fn count_value(n: usize) -> toml::Value {
    toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

fn read_duration(value: &toml::Value, positive: bool) -> Result<Duration, String> {
    let duration = match value {
        toml::Value::String(text) => duration_from_text(text).ok_or_else(|| {
            format!("{text:?} is not a duration (examples: 10s, 500ms, 2m)")
        })?,
        toml::Value::Integer(_) | toml::Value::Float(_) => {
            return Err(format!(
                "{value} has no unit; write a duration as a string such as \"{value}s\" or \"{value}ms\""
            ))
        }
        other => {
            return Err(format!(
                "expected a duration string such as \"10s\", found {}",
                found(other)
            ))
        }
    };
    check_duration(duration, positive)
}

fn check_duration(duration: Duration, positive: bool) -> Result<Duration, String> {
    if duration > MAX_DURATION {
        return Err(format!(
            "{duration:?} is too long (at most 24h: the shards' timers count milliseconds in 32 bits)"
        ));
    }
    if positive && duration.is_zero() {
        return Err("must be longer than 0".to_string());
    }
    Ok(duration)
}

/// Writes a duration the way [`parse_duration`] reads it back exactly.
fn duration_value(duration: Duration) -> toml::Value {
    let text = if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else if duration.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{}s", duration.as_secs_f64())
    };
    toml::Value::String(text)
}

/// One of a `ValueEnum`'s names, as on the command line (surrounding spaces ignored).
fn read_choice<T: ValueEnum>(value: &toml::Value) -> Result<T, String> {
    let names: Vec<String> = T::value_variants()
        .iter()
        .filter_map(|v| v.to_possible_value())
        .map(|v| format!("{:?}", v.get_name()))
        .collect();
    let choices = format!("one of {}", names.join(", "));
    match value {
        toml::Value::String(text) => {
            T::from_str(text.trim(), false).map_err(|_| format!("{text:?} is not {choices}"))
        }
        other => Err(format!("expected {choices}, found {}", found(other))),
    }
}

fn read_policy(value: &toml::Value) -> Result<SlowConsumerPolicy, String> {
    read_choice(value)
}

fn read_compression(value: &toml::Value) -> Result<CompressionMode, String> {
    read_choice(value)
}

fn read_io_uring(value: &toml::Value) -> Result<IoUringMode, String> {
    read_choice(value)
}

fn read_origins(value: &toml::Value) -> Result<Vec<String>, String> {
    let expected = "expected an array of origins such as [\"https://app.example.com\"]";
    let toml::Value::Array(items) = value else {
        return Err(format!("{expected}, found {}", found(value)));
    };
    items
        .iter()
        .map(|item| match item {
            toml::Value::String(text) => parse_origin(text),
            other => Err(format!("{expected}, found {} in it", found(other))),
        })
        .collect()
}

fn read_engine(value: &toml::Value) -> Result<EngineKind, String> {
    read_choice(value)
}

fn read_redis_urls(value: &toml::Value) -> Result<Vec<String>, String> {
    let expected = "expected a URL such as \"redis://127.0.0.1:6379\" or an array of them";
    match value {
        toml::Value::String(text) => Ok(vec![parse_redis_url(text)?]),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| match item {
                toml::Value::String(text) => parse_redis_url(text),
                other => Err(format!("{expected}, found {} in it", found(other))),
            })
            .collect(),
        other => Err(format!("{expected}, found {}", found(other))),
    }
}

fn read_redis_prefix(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(text) => parse_redis_prefix(text),
        other => Err(format!(
            "expected a string such as \"crier\", found {}",
            found(other)
        )),
    }
}

/// `redis://` or `rediss://` (or `valkey://`), checked by the Redis client's own parser.
fn parse_redis_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    text.parse::<redis::ConnectionInfo>()
        .map_err(|e| format!("{text:?} is not a Redis URL such as redis://127.0.0.1:6379: {e}"))?;
    Ok(text.to_string())
}

/// Non-empty, printable, and without braces: the topic's hash tag follows the prefix, and a
/// brace in the prefix would move every topic into one Cluster slot.
fn parse_redis_prefix(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 64 {
        return Err("the Redis prefix must be 1 to 64 characters".to_string());
    }
    if text
        .chars()
        .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{text:?}: the Redis prefix may not contain braces or spaces"
        ));
    }
    Ok(text.to_string())
}

fn read_topic_patterns(value: &toml::Value) -> Result<Vec<TopicPattern>, String> {
    let expected = "expected an array of topic patterns such as [\"news.>\"]";
    let toml::Value::Array(items) = value else {
        return Err(format!("{expected}, found {}", found(value)));
    };
    items
        .iter()
        .map(|item| match item {
            toml::Value::String(text) => parse_topic_pattern(text),
            other => Err(format!("{expected}, found {} in it", found(other))),
        })
        .collect()
}

fn parse_topic_pattern(text: &str) -> Result<TopicPattern, String> {
    TopicPattern::parse(text).map_err(|e| format!("{text:?} is not a topic pattern: {e}"))
}

fn read_bool(value: &toml::Value) -> Result<bool, String> {
    match value {
        toml::Value::Boolean(b) => Ok(*b),
        other => Err(format!(
            "expected true or false (no quotes), found {}",
            found(other)
        )),
    }
}

/// A key file named on the command line or in the file: `PATH`, or `KID=PATH` to give the
/// key the `kid` tokens name it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    pub kid: Option<String>,
    pub path: PathBuf,
}

impl fmt::Display for KeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kid {
            Some(kid) => write!(f, "{kid}={}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

/// `PATH` or `KID=PATH`. A kid never holds `/`, so `./a=b.pem` is a path with `=` in it.
pub fn parse_key_file(text: &str) -> Result<KeyFile, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty key file name".to_string());
    }
    let (kid, path) = match text.split_once('=') {
        Some((kid, path)) if !kid.contains('/') => (Some(kid), path),
        _ => (None, text),
    };
    if kid == Some("") {
        return Err(format!("{text:?}: empty kid before '='"));
    }
    if path.is_empty() {
        return Err(format!("{text:?}: no path after '='"));
    }
    Ok(KeyFile {
        kid: kid.map(str::to_string),
        path: PathBuf::from(path),
    })
}

fn read_key_files(value: &toml::Value) -> Result<Vec<KeyFile>, String> {
    let expected = "expected a path, \"KID=PATH\", or an array of them";
    match value {
        toml::Value::String(text) => Ok(vec![parse_key_file(text)?]),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| match item {
                toml::Value::String(text) => parse_key_file(text),
                other => Err(format!("{expected}, found {} in it", found(other))),
            })
            .collect(),
        other => Err(format!("{expected}, found {}", found(other))),
    }
}

fn key_files_value(files: &[KeyFile]) -> Option<toml::Value> {
    Some(toml::Value::Array(
        files
            .iter()
            .map(|f| toml::Value::String(f.to_string()))
            .collect(),
    ))
}

/// An `aud` or `iss` value: any non-empty text.
fn parse_claim_value(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        Err("must not be empty".to_string())
    } else {
        Ok(text.to_string())
    }
}

fn read_claim_value(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(text) => parse_claim_value(text),
        other => Err(format!("expected a string, found {}", found(other))),
    }
}

/// A topic pattern for the anonymous rules: valid syntax and no `{sub}` (there is no token).
fn parse_anonymous_pattern(text: &str) -> Result<String, String> {
    let pattern = text.trim();
    match crate::auth::pattern::validate_pattern(pattern) {
        Ok(false) => Ok(pattern.to_string()),
        Ok(true) => Err(format!(
            "{pattern:?}: {{sub}} needs a token; anonymous rules cannot use it"
        )),
        Err(e) => Err(format!("{pattern:?} is not a topic pattern: {e}")),
    }
}

fn read_patterns(value: &toml::Value) -> Result<Vec<String>, String> {
    let expected = "expected an array of topic patterns such as [\"news.*\", \"public.>\"]";
    let toml::Value::Array(items) = value else {
        return Err(format!("{expected}, found {}", found(value)));
    };
    items
        .iter()
        .map(|item| match item {
            toml::Value::String(text) => parse_anonymous_pattern(text),
            other => Err(format!("{expected}, found {} in it", found(other))),
        })
        .collect()
}

fn patterns_value(patterns: &[String]) -> Option<toml::Value> {
    Some(toml::Value::Array(
        patterns.iter().cloned().map(toml::Value::String).collect(),
    ))
}

fn read_path(value: &toml::Value) -> Result<PathBuf, String> {
    match value {
        toml::Value::String(text) if !text.trim().is_empty() => Ok(PathBuf::from(text.trim())),
        other => Err(format!("expected a file path, found {}", found(other))),
    }
}

/// A rate per second: 1 to [`crate::auth::rate::MAX_RATE_PER_SEC`].
fn parse_rate(text: &str) -> Result<u32, String> {
    let max = crate::auth::rate::MAX_RATE_PER_SEC;
    match text.trim().parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("`{text}` is not a rate per second from 1 to {max}")),
    }
}

fn read_rate(value: &toml::Value) -> Result<u32, String> {
    match value {
        toml::Value::Integer(n) => parse_rate(&n.to_string()),
        other => Err(format!(
            "expected a whole number of events per second, found {}",
            found(other)
        )),
    }
}

/// Longest duration any option takes: shards keep time as `u32` milliseconds and compare
/// with wrapping arithmetic, which is exact only within 24.8 days.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Parses `10s`, `500ms`, `2m`, `1.5s`, `1h` or a bare number of seconds; at most 24h.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = duration_from_text(text).ok_or_else(|| {
        format!(
            "`{}` is not a duration (examples: 10s, 500ms, 2m)",
            text.trim()
        )
    })?;
    check_duration(duration, false)
}

/// [`parse_duration`] for timeouts where zero would make every connection expire at once.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    check_duration(parse_duration(text)?, true)
}

fn duration_from_text(text: &str) -> Option<Duration> {
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
    let value: f64 = number.trim().parse().ok()?;
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    // `try_`: a huge number must be refused, not panic.
    Duration::try_from_secs_f64(value * scale_secs).ok()
}

/// A count where zero would refuse everything (threads, limits, capacities).
fn parse_positive(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{text}` is not a whole number")),
    }
}

/// An origin as browsers send it (`scheme://host[:port]`, RFC 6454 §6.1); compared
/// case-insensitively with the `Origin` header, so a path or trailing slash would never match.
fn parse_origin(text: &str) -> Result<String, String> {
    let origin = text.trim();
    let ok = match origin.split_once("://") {
        Some((scheme, rest)) => {
            !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                && !rest.is_empty()
                && !rest.contains(['/', '?', '#', ' '])
        }
        None => false,
    };
    if ok {
        Ok(origin.to_string())
    } else {
        Err(format!(
            "{origin:?} is not an origin: scheme://host[:port], without path or trailing slash \
             (example: https://app.example.com)"
        ))
    }
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
    fn absurd_durations_are_refused_without_panicking() {
        assert!(parse_duration("1e300").is_err());
        assert!(parse_duration("25h").is_err());
        assert_eq!(parse_duration("24h"), Ok(MAX_DURATION));
        assert!(parse_positive_duration("0s").is_err());
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_are_written_so_they_read_back_exactly() {
        for text in ["10s", "500ms", "1.5s", "0s", "2m", "0.25ms", "86400s"] {
            let duration = parse_duration(text).unwrap();
            let toml::Value::String(written) = duration_value(duration) else {
                panic!("a string")
            };
            assert_eq!(
                parse_duration(&written),
                Ok(duration),
                "{text} -> {written}"
            );
        }
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = Config::defaults();
        assert_eq!(config.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(config.max_message_bytes, 1 << 20);
        assert_eq!(config.max_backlog_bytes, 1 << 20);
        assert_eq!(config.handshake_timeout, Duration::from_secs(10));
        assert_eq!(config.ping_interval, Duration::from_secs(30));
        assert_eq!(config.drain_delay, Duration::ZERO);
        assert_eq!(config.drain_timeout, Duration::from_secs(5));
        assert_eq!(config.slow_consumer, SlowConsumerPolicy::Disconnect);
        assert_eq!(config.max_subscriptions_per_connection, 1000);
        assert!(config.allowed_origins.is_empty());
        assert_eq!(config.fragment_timeout, None);
        assert_eq!(config.fragment_deadline(), config.handshake_timeout);
    }

    #[test]
    fn the_fragment_timeout_follows_the_handshake_timeout_unless_set() {
        let follows = Config::parse_from(["crier", "--handshake-timeout", "3s"]);
        assert_eq!(follows.fragment_deadline(), Duration::from_secs(3));
        let set = Config::parse_from(["crier", "--fragment-timeout", "250ms"]);
        assert_eq!(set.fragment_deadline(), Duration::from_millis(250));
        assert!(Config::try_parse_from(["crier", "--fragment-timeout", "0s"]).is_err());
        let mut from_file = Config::defaults();
        (OPTIONS
            .iter()
            .find(|o| o.key == "fragment_timeout")
            .unwrap()
            .apply)(&mut from_file, &toml::Value::String("2s".into()))
        .unwrap();
        assert_eq!(from_file.fragment_deadline(), Duration::from_secs(2));
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

    #[test]
    fn origins_with_a_path_or_no_scheme_are_refused() {
        assert!(parse_origin("https://a.example:8443").is_ok());
        assert!(parse_origin("https://a.example/").is_err());
        assert!(parse_origin("a.example").is_err());
        assert!(parse_origin("").is_err());
    }

    #[test]
    fn every_flag_has_a_file_key_and_every_key_a_flag() {
        let command = Config::command();
        let ids: Vec<String> = command
            .get_arguments()
            .map(|arg| arg.get_id().to_string())
            .filter(|id| id != "help" && id != "version")
            .collect();
        let keys: Vec<&str> = OPTIONS.iter().map(|o| o.key).collect();
        assert_eq!(ids, keys, "OPTIONS lists every Config field, in order");
    }

    #[test]
    fn key_files_take_an_optional_kid() {
        let plain = parse_key_file("/etc/crier/jwt.pem").unwrap();
        assert_eq!(
            (plain.kid, plain.path),
            (None, PathBuf::from("/etc/crier/jwt.pem"))
        );
        let named = parse_key_file("2025-06=/etc/crier/jwt.pem").unwrap();
        assert_eq!(named.kid.as_deref(), Some("2025-06"));
        assert_eq!(named.to_string(), "2025-06=/etc/crier/jwt.pem");
        let odd = parse_key_file("./a=b.pem").unwrap();
        assert_eq!((odd.kid, odd.path), (None, PathBuf::from("./a=b.pem")));
        assert!(parse_key_file("=x.pem").is_err());
        assert!(parse_key_file("k=").is_err());
        assert!(parse_key_file(" ").is_err());
    }

    #[test]
    fn auth_options_default_to_off_and_read_from_the_file() {
        let config = Config::defaults();
        assert!(config.jwt_secret_file.is_empty() && config.jwt_public_key_file.is_empty());
        assert_eq!(config.jwt_leeway, Duration::from_secs(30));
        assert_eq!(
            (config.max_publish_rate, config.max_handshake_rate_per_ip),
            (None, None)
        );
        assert_eq!(config.metrics_listen, None);

        let table: toml::Table = toml::from_str(
            r#"
            jwt_secret_file = "/s"
            jwt_public_key_file = ["a=/a.pem", "/b.pem"]
            jwt_audience = "crier"
            jwt_leeway = "5s"
            anonymous_subscribe = ["public.>"]
            max_publish_rate = 50
            metrics_listen = "127.0.0.1:9090"
            "#,
        )
        .unwrap();
        let mut config = Config::defaults();
        for (key, value) in &table {
            let option = OPTIONS.iter().find(|o| o.key == key).unwrap();
            (option.apply)(&mut config, value).unwrap();
        }
        assert_eq!(config.jwt_secret_file, [parse_key_file("/s").unwrap()]);
        assert_eq!(config.jwt_public_key_file[0].kid.as_deref(), Some("a"));
        assert_eq!(config.jwt_audience.as_deref(), Some("crier"));
        assert_eq!(config.jwt_leeway, Duration::from_secs(5));
        assert_eq!(config.anonymous_subscribe, ["public.>"]);
        assert_eq!(config.max_publish_rate, Some(50));
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9090".parse().unwrap())
        );
    }

    #[test]
    fn anonymous_rules_and_rates_are_checked() {
        assert!(parse_anonymous_pattern("news.*").is_ok());
        assert!(parse_anonymous_pattern("user.{sub}.>")
            .unwrap_err()
            .contains("needs a token"));
        assert!(parse_anonymous_pattern("news*").is_err());
        assert!(read_patterns(&toml::Value::String("news.*".into())).is_err());
        assert_eq!(parse_rate("100"), Ok(100));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-1").is_err());
        assert!(read_rate(&toml::Value::Integer(2_000_000)).is_err());
        assert!(read_claim_value(&toml::Value::String(String::new())).is_err());
    }

    #[test]
    fn misspelt_keys_get_a_suggestion_and_strangers_none() {
        assert_eq!(suggest("max_mesage_bytes"), Some("max_message_bytes"));
        assert_eq!(suggest("max-message-bytes"), Some("max_message_bytes"));
        assert_eq!(suggest("allowed_origin"), Some("allowed_origins"));
        assert_eq!(
            suggest("max-subscriptions-per-connection"),
            Some("max_subscriptions_per_connection")
        );
        assert_eq!(suggest("colour"), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
