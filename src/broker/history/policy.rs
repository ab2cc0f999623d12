//! How much history each topic keeps: the defaults (`--history-size`, `--history-ttl`) and the
//! `[[topics]]` overrides of the configuration file, resolved once per topic incarnation (not
//! per publish). Overrides are tried in file order and the first whose pattern matches wins,
//! like firewall rules: put the specific ones first.
//!
//! Each distinct TTL is a "class": the table keeps one expiry queue per class, so the queue's
//! front is always the next message of that class to expire. There are as many classes as
//! distinct TTLs in the configuration (a handful), not one per topic.

use std::time::Duration;

use crate::config::{Config, TopicOverride};
use crate::topic::TopicPattern;

/// What one topic keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicPolicy {
    /// Messages kept; 0: no history for this topic.
    pub size: usize,
    /// How long a message is kept, in milliseconds.
    pub ttl_ms: u64,
    /// Index of this policy's TTL among the distinct TTLs ([`HistoryPolicy::ttl_classes_ms`]).
    pub class: usize,
}

/// A `[[topics]]` override, checked and ready to match.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Override {
    pattern: TopicPattern,
    policy: TopicPolicy,
}

/// The history settings of one shard's topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPolicy {
    default: TopicPolicy,
    overrides: Vec<Override>,
    ttl_classes_ms: Vec<u64>,
    /// The most one resume replays ([`super::resume::decide`]'s cap).
    pub max_replay_messages: usize,
    /// The most bytes one resume replays, frames plus [`REPLAY_FRAME_OVERHEAD_BYTES`] each:
    /// half of `--max-backlog-bytes`. A replay is queued in one turn, so one larger than the
    /// connection's byte budget would always close it as a slow consumer (and again on every
    /// retry); the other half leaves room for the ack and what was queued before.
    pub max_replay_bytes: usize,
}

/// What the shard's write queue charges per queued frame besides its bytes
/// (`shard::write_queue::FRAME_OVERHEAD_BYTES`, checked equal there).
pub const REPLAY_FRAME_OVERHEAD_BYTES: usize = 64;

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl HistoryPolicy {
    /// Every topic keeps `size` messages for `ttl`, with these overrides. Overrides leave out
    /// what they do not change (`size` or `ttl`): the default applies.
    pub fn new(
        size: usize,
        ttl: Duration,
        overrides: &[TopicOverride],
        max_replay_messages: usize,
    ) -> HistoryPolicy {
        let mut ttl_classes_ms = vec![millis(ttl)];
        let mut class_of = |ttl_ms: u64| match ttl_classes_ms.iter().position(|&t| t == ttl_ms) {
            Some(class) => class,
            None => {
                ttl_classes_ms.push(ttl_ms);
                ttl_classes_ms.len() - 1
            }
        };
        let default = TopicPolicy {
            size,
            ttl_ms: millis(ttl),
            class: 0,
        };
        let overrides = overrides
            .iter()
            .filter_map(|o| {
                // The configuration checked every pattern (`read_topics`); one that does not
                // parse could match nothing anyway.
                let pattern = TopicPattern::parse(&o.pattern).ok()?;
                let ttl_ms = o.history_ttl.map_or(default.ttl_ms, millis);
                Some(Override {
                    pattern,
                    policy: TopicPolicy {
                        size: o.history_size.unwrap_or(size),
                        ttl_ms,
                        class: class_of(ttl_ms),
                    },
                })
            })
            .collect();
        HistoryPolicy {
            default,
            overrides,
            ttl_classes_ms,
            max_replay_messages,
            max_replay_bytes: usize::MAX,
        }
    }

    /// The policy the configuration describes.
    pub fn from_config(config: &Config) -> HistoryPolicy {
        let mut policy = HistoryPolicy::new(
            config.history_size,
            config.history_ttl,
            &config.topics,
            config.max_replay_messages,
        );
        policy.max_replay_bytes = config.max_backlog_bytes / 2;
        policy
    }

    /// What `topic` keeps: the first matching override, else the default.
    pub fn for_topic(&self, topic: &str) -> TopicPolicy {
        self.overrides
            .iter()
            .find(|o| o.pattern.matches(topic))
            .map_or(self.default, |o| o.policy)
    }

    /// The distinct TTLs, in milliseconds; a [`TopicPolicy::class`] indexes this.
    pub fn ttl_classes_ms(&self) -> &[u64] {
        &self.ttl_classes_ms
    }

    /// Whether no topic can keep anything.
    pub fn is_off(&self) -> bool {
        self.default.size == 0 && self.overrides.iter().all(|o| o.policy.size == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::PatternError;

    fn over(pattern: &str, size: Option<usize>, ttl_s: Option<u64>) -> TopicOverride {
        TopicOverride {
            pattern: pattern.into(),
            history_size: size,
            history_ttl: ttl_s.map(Duration::from_secs),
        }
    }

    fn pattern_matches(pattern: &str, topic: &str) -> bool {
        TopicPattern::parse(pattern).unwrap().matches(topic)
    }

    fn check_pattern(pattern: &str) -> Result<(), PatternError> {
        TopicPattern::parse(pattern).map(|_| ())
    }

    #[test]
    fn patterns_match_like_topic_permissions() {
        assert!(pattern_matches("chat.>", "chat.room1"));
        assert!(pattern_matches("chat.>", "chat.room1.typing"));
        assert!(!pattern_matches("chat.>", "chat"));
        assert!(!pattern_matches("chat.>", "chatter.x"));
        assert!(pattern_matches("chat.*", "chat.room1"));
        assert!(!pattern_matches("chat.*", "chat.room1.typing"));
        assert!(pattern_matches("*.ticks", "eurusd.ticks"));
        assert!(pattern_matches("news", "news"));
        assert!(!pattern_matches("news", "news.x"));
        assert!(pattern_matches(">", "anything.at.all"));
    }

    #[test]
    fn bad_patterns_name_the_broken_rule() {
        assert_eq!(check_pattern(""), Err(PatternError::Empty));
        assert_eq!(check_pattern("a..b"), Err(PatternError::EmptySegment));
        assert_eq!(
            check_pattern("a.b*"),
            Err(PatternError::WildcardInsideSegment)
        );
        assert_eq!(check_pattern(">.a"), Err(PatternError::TailNotLast));
        assert_eq!(check_pattern("a.*.>"), Ok(()));
    }

    #[test]
    fn first_matching_override_wins_and_fills_in_from_the_default() {
        let policy = HistoryPolicy::new(
            100,
            Duration::from_secs(300),
            &[
                over("chat.lobby", Some(0), None),
                over("chat.>", Some(200), Some(600)),
                over("ticks.*", None, Some(10)),
                over("logs.>", Some(5), Some(600)),
            ],
            1000,
        );
        assert_eq!(policy.ttl_classes_ms(), [300_000, 600_000, 10_000]);
        let p = |t| {
            let p = policy.for_topic(t);
            (p.size, p.ttl_ms, p.class)
        };
        assert_eq!(p("news"), (100, 300_000, 0));
        assert_eq!(p("chat.lobby"), (0, 300_000, 0));
        assert_eq!(p("chat.room1"), (200, 600_000, 1));
        assert_eq!(p("ticks.eurusd"), (100, 10_000, 2));
        assert_eq!(p("logs.a.b"), (5, 600_000, 1));
        assert!(!policy.is_off());
        assert!(
            HistoryPolicy::new(0, Duration::from_secs(1), &[over("a", Some(0), None)], 1).is_off()
        );
    }
}
