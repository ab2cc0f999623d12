//! Topics: names, which shard owns a topic, each shard's subscriber index and each owner's
//! interest set and sequence numbers. Pure data structures: they return decisions and send
//! nothing, so the event loop stays the only place that does I/O.
//!
//! How the broker core (`src/broker/`) and the local engine drive them:
//! - subscribe: [`validate_topic`] (done by the command parser), [`Subscriptions::insert`] on
//!   the connection (enforcing its limit), [`LocalIndex::subscribe`]; on
//!   `Added { first_on_shard: true }` tell the owner ([`owner_shard`]) to call
//!   [`OwnedTopics::set_interest`]`(topic, this_shard, true)`.
//! - unsubscribe / close: the reverse, `last_on_shard: true` sends `set_interest(.., false)`;
//!   on close the core drains the connection's [`Subscriptions`] and unsubscribes each.
//! - publish: the owner calls [`OwnedTopics::sequence`] and forwards the frame to each
//!   interested shard, which writes it to [`LocalIndex::subscribers`].
#![forbid(unsafe_code)]

pub mod local;
pub mod name;
pub mod owned;
pub mod owner;

pub use local::{ConnId, LocalIndex, SubscribeOutcome, Subscriptions, UnsubscribeOutcome};
pub use name::{validate_topic, validate_topic_str, TopicError, MAX_TOPIC_BYTES};
pub use owned::{InterestChange, OwnedTopics, MAX_SHARDS};
pub use owner::{owner_of_hash, owner_shard, topic_hash};

#[cfg(test)]
mod model_tests;
