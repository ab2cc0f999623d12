//! History: what a topic's owner keeps so that a client can resume after a reconnect without
//! losing a message, and a page can show recent messages on first load. Sans-IO like
//! `proto`: no sockets, threads or clocks (`now_ms` is passed in); it returns decisions and
//! frames, the caller sends them.
//!
//! - `Epoch` (the random name of a topic incarnation, and its generator) and `Since` (a client's
//!   resume point, and its URL form) live in `proto` (`proto/epoch.rs`, `proto/since.rs`),
//!   since commands carry them; they are re-exported here;
//! - [`ring`]: one topic's kept prepared frames (the very `Bytes` that were delivered);
//! - [`resume`]: the pure resume decision (recovered or not, which seqs to replay);
//! - [`policy`]: `--history-size`, `--history-ttl` and the `[[topics]]` overrides;
//! - [`log`]: one shard's topic incarnations (epoch, seq, interest, ring) and its share of the
//!   `--max-history-bytes` budget, oldest message evicted first.
//!
//! The budget is split evenly between shards (each owns `max_history_bytes / shards`): topics
//! are spread over shards by a hash, so shares fill evenly in practice, and a per-shard share
//! keeps "oldest first" exact within a shard with no atomic on the publish path. The price: one
//! shard's topics can use at most their share (docs/decisions.md).
#![forbid(unsafe_code)]

pub mod log;
pub mod policy;
pub mod resume;
pub mod ring;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

pub use crate::proto::epoch::{Epoch, EpochError, EpochGen};
pub use crate::proto::since::{parse_url_since, Since, SinceError};
pub use log::{History, HistoryStats, Page, Published, Resumed};
pub use policy::{HistoryPolicy, TopicPolicy};
pub use resume::{decide, Decision, TailView, DEFAULT_MAX_REPLAY_MESSAGES};
pub use ring::{Entry, Ring, StoredFrame};

/// This shard's share of a `max_history_bytes` budget split over `shards` shards.
pub fn shard_budget_bytes(max_history_bytes: usize, shards: usize) -> usize {
    max_history_bytes / shards.max(1)
}
