//! The resume decision: given where a client left off (`since`) and what a topic keeps (its
//! epoch, its top seq, its oldest kept seq), whether the client can be brought back without a
//! gap, and which seqs to replay. A pure function of those numbers, so any engine that keeps a
//! contiguous tail of a topic (the local rings here, a Redis stream later) decides the same way.
//!
//! The rules (docs/protocol.md, "Resume"):
//! - with an epoch, all or nothing: `recovered: true` and every message after `since.seq`, or
//!   `recovered: false` and nothing, when the epoch differs, `since.seq` is above the top, the
//!   oldest kept message is newer than `since.seq + 1`, or more than `cap` messages are missing.
//!   Partial replays are never sent.
//! - without an epoch, "whatever is kept after `since.seq`": the kept messages after it, the
//!   newest `cap` of them at most (so they join the live stream without a hole), and
//!   `recovered` says whether that was everything. A `since.seq` past the top asks for
//!   nothing (recovered, nothing replayed): a live-only subscription that learns the top and
//!   the epoch from its ack.

use std::ops::RangeInclusive;

use crate::proto::epoch::Epoch;
use crate::proto::since::Since;

/// The default most messages one resume replays: over it the client is told
/// `recovered: false` and should reload its state instead (a replay of thousands of messages
/// to thousands of reconnecting clients at once is the thundering herd the cap exists for).
pub const DEFAULT_MAX_REPLAY_MESSAGES: usize = 1_000;

/// What a topic keeps, as the decision needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailView {
    /// The topic's current epoch.
    pub epoch: Epoch,
    /// The seq of its newest message (0: none yet in this epoch).
    pub top: u64,
    /// The seq of its oldest kept message; kept messages run contiguously from it to `top`.
    /// `None` when nothing is kept.
    pub oldest_kept: Option<u64>,
}

/// The answer to one resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the client misses nothing: the replay plus the live stream after `top` are
    /// everything after `since.seq`.
    pub recovered: bool,
    /// The seqs to send now, in order, before any live message; `None`: send nothing.
    pub replay: Option<RangeInclusive<u64>>,
}

impl Decision {
    const LOST: Decision = Decision {
        recovered: false,
        replay: None,
    };
    const NOTHING_MISSED: Decision = Decision {
        recovered: true,
        replay: None,
    };

    /// How many messages the replay holds.
    pub fn replay_len(&self) -> u64 {
        self.replay
            .as_ref()
            .map_or(0, |range| range.end() - range.start() + 1)
    }
}

/// Decides a resume from `since` against `view`, replaying at most `cap` messages.
pub fn decide(since: Since, view: TailView, cap: usize) -> Decision {
    if since.epoch.is_some_and(|epoch| epoch != view.epoch) {
        return Decision::LOST;
    }
    if since.seq > view.top {
        // With an epoch: a seq this incarnation never reached. Without one, "whatever is kept
        // after seq" is nothing, and nothing after it was missed: how a client starts a live
        // subscription and learns the top and epoch (crier.js sends 2^53 - 1).
        return if since.epoch.is_some() {
            Decision::LOST
        } else {
            Decision::NOTHING_MISSED
        };
    }
    if since.seq == view.top {
        return Decision::NOTHING_MISSED;
    }
    let Some(oldest) = view.oldest_kept else {
        return Decision::LOST;
    };
    debug_assert!(oldest <= view.top, "kept messages end at the top");
    let cap = u64::try_from(cap).unwrap_or(u64::MAX);
    let wanted_first = since.seq + 1;
    if since.epoch.is_some() {
        if oldest > wanted_first || view.top - since.seq > cap {
            return Decision::LOST;
        }
        return Decision {
            recovered: true,
            replay: Some(wanted_first..=view.top),
        };
    }
    if cap == 0 {
        return Decision::LOST;
    }
    let mut first = wanted_first.max(oldest);
    if view.top - first + 1 > cap {
        first = view.top - cap + 1;
    }
    Decision {
        recovered: first == wanted_first,
        replay: Some(first..=view.top),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(text: &str) -> Epoch {
        Epoch::parse(text).unwrap()
    }

    fn view(top: u64, oldest: Option<u64>) -> TailView {
        TailView {
            epoch: epoch("Ecur"),
            top,
            oldest_kept: oldest,
        }
    }

    fn with_epoch(seq: u64, e: &str) -> Since {
        Since {
            seq,
            epoch: Some(epoch(e)),
        }
    }

    fn bare(seq: u64) -> Since {
        Since { seq, epoch: None }
    }

    fn yes(range: RangeInclusive<u64>) -> Decision {
        Decision {
            recovered: true,
            replay: Some(range),
        }
    }

    #[test]
    fn within_the_window_replays_everything_after_since() {
        assert_eq!(
            decide(with_epoch(41, "Ecur"), view(50, Some(10)), 1000),
            yes(42..=50)
        );
        assert_eq!(
            decide(with_epoch(41, "Ecur"), view(50, Some(42)), 1000),
            yes(42..=50)
        );
        assert_eq!(
            decide(with_epoch(41, "Ecur"), view(50, Some(42)), 9),
            yes(42..=50)
        );
        assert_eq!(yes(42..=50).replay_len(), 9);
    }

    #[test]
    fn nothing_missed_is_recovered_even_with_nothing_kept() {
        assert_eq!(
            decide(with_epoch(50, "Ecur"), view(50, None), 1000),
            Decision::NOTHING_MISSED
        );
        assert_eq!(
            decide(bare(0), view(0, None), 1000),
            Decision::NOTHING_MISSED
        );
        assert_eq!(Decision::NOTHING_MISSED.replay_len(), 0);
    }

    #[test]
    fn wrong_epoch_too_old_over_cap_and_future_seq_are_lost_with_no_replay() {
        assert_eq!(
            decide(with_epoch(41, "Eold"), view(50, Some(1)), 1000),
            Decision::LOST
        );
        assert_eq!(
            decide(with_epoch(41, "Ecur"), view(50, Some(43)), 1000),
            Decision::LOST
        );
        assert_eq!(
            decide(with_epoch(41, "Ecur"), view(50, None), 1000),
            Decision::LOST
        );
        assert_eq!(
            decide(with_epoch(41, "Ecur"), view(50, Some(1)), 8),
            Decision::LOST
        );
        assert_eq!(
            decide(with_epoch(51, "Ecur"), view(50, Some(1)), 1000),
            Decision::LOST
        );
        // Without an epoch, past the top is "from now on": nothing to replay, nothing missed.
        assert_eq!(
            decide(bare(51), view(50, Some(1)), 1000),
            Decision::NOTHING_MISSED
        );
    }

    #[test]
    fn without_epoch_whatever_is_kept_newest_first_within_the_cap() {
        // First load: everything kept, and it covered everything only if seq 1 is kept.
        assert_eq!(decide(bare(0), view(50, Some(1)), 1000), yes(1..=50));
        assert_eq!(
            decide(bare(0), view(50, Some(31)), 1000),
            Decision {
                recovered: false,
                replay: Some(31..=50)
            }
        );
        // Over the cap: the newest `cap`, so live messages follow without a hole.
        assert_eq!(
            decide(bare(0), view(50, Some(1)), 10),
            Decision {
                recovered: false,
                replay: Some(41..=50)
            }
        );
        assert_eq!(decide(bare(40), view(50, Some(1)), 10), yes(41..=50));
        assert_eq!(decide(bare(40), view(50, None), 10), Decision::LOST);
        assert_eq!(decide(bare(40), view(50, Some(1)), 0), Decision::LOST);
    }
}
