//! Where a client asks to resume from: `since` = the last seq it saw and, if it knows it, the
//! epoch that seq belongs to; and the URL form `TOPIC:SEQ[:EPOCH]` used by `?since=` at connect.
//! Parsing only (it lives in `proto`, beside the commands that carry it); what is replayed is
//! decided in `broker/history/resume.rs`.

use std::fmt;

use super::epoch::{Epoch, EpochError};

/// A resume point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Since {
    /// The last seq the client saw (0: none).
    pub seq: u64,
    /// The epoch of `seq`. `None` asks for "whatever is kept after `seq`" (a page's first load
    /// asks `{"seq":0}` for the recent messages).
    pub epoch: Option<Epoch>,
}

/// Why a URL-form `since` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinceError {
    /// No `:` separating the topic from the seq.
    MissingSeq,
    /// The seq is not a decimal `u64`.
    BadSeq,
    /// The topic part is empty.
    EmptyTopic,
    /// The epoch part is not a valid epoch.
    BadEpoch(EpochError),
}

impl fmt::Display for SinceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinceError::MissingSeq => f.write_str("since must be TOPIC:SEQ or TOPIC:SEQ:EPOCH"),
            SinceError::BadSeq => f.write_str("since: the seq is not a whole number"),
            SinceError::EmptyTopic => f.write_str("since: the topic is empty"),
            SinceError::BadEpoch(e) => write!(f, "since: {e}"),
        }
    }
}

impl std::error::Error for SinceError {}

fn parse_seq(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses the URL form `TOPIC:SEQ` or `TOPIC:SEQ:EPOCH` (already percent-decoded). Read from
/// the right, so a topic may itself hold `:`: if the last part is all digits it is the seq
/// (epochs crier makes start with a letter), else it is the epoch and the part before is the
/// seq. The topic name itself is checked by the caller, like any topic.
pub fn parse_url_since(text: &str) -> Result<(&str, Since), SinceError> {
    let (rest, last) = text.rsplit_once(':').ok_or(SinceError::MissingSeq)?;
    let all_digits = !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit());
    let (topic, since) = if all_digits {
        let seq = parse_seq(last).ok_or(SinceError::BadSeq)?;
        (rest, Since { seq, epoch: None })
    } else {
        let (topic, seq) = rest.rsplit_once(':').ok_or(SinceError::MissingSeq)?;
        let seq = parse_seq(seq).ok_or(SinceError::BadSeq)?;
        let epoch = Epoch::parse(last).map_err(SinceError::BadEpoch)?;
        (
            topic,
            Since {
                seq,
                epoch: Some(epoch),
            },
        )
    };
    if topic.is_empty() {
        return Err(SinceError::EmptyTopic);
    }
    Ok((topic, since))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(text: &str) -> Option<Epoch> {
        Some(Epoch::parse(text).unwrap())
    }

    #[test]
    fn url_form_with_and_without_epoch() {
        assert_eq!(
            parse_url_since("news:41:e4Xq"),
            Ok((
                "news",
                Since {
                    seq: 41,
                    epoch: epoch("e4Xq")
                }
            ))
        );
        assert_eq!(
            parse_url_since("news:0"),
            Ok((
                "news",
                Since {
                    seq: 0,
                    epoch: None
                }
            ))
        );
    }

    #[test]
    fn topics_holding_colons_are_read_from_the_right() {
        assert_eq!(
            parse_url_since("a:b:7:Ex"),
            Ok((
                "a:b",
                Since {
                    seq: 7,
                    epoch: epoch("Ex")
                }
            ))
        );
        assert_eq!(
            parse_url_since("a:b:7"),
            Ok((
                "a:b",
                Since {
                    seq: 7,
                    epoch: None
                }
            ))
        );
    }

    #[test]
    fn malformed_forms_are_refused_with_the_broken_rule() {
        assert_eq!(parse_url_since("news"), Err(SinceError::MissingSeq));
        assert_eq!(parse_url_since("news:Ex"), Err(SinceError::MissingSeq));
        assert_eq!(parse_url_since("news:x:Ex"), Err(SinceError::BadSeq));
        assert_eq!(parse_url_since("news:-1:Ex"), Err(SinceError::BadSeq));
        assert_eq!(
            parse_url_since("news:99999999999999999999"),
            Err(SinceError::BadSeq)
        );
        assert_eq!(parse_url_since(":5"), Err(SinceError::EmptyTopic));
        assert_eq!(
            parse_url_since("news:5:e/x"),
            Err(SinceError::BadEpoch(EpochError::BadCharacter))
        );
        assert_eq!(
            parse_url_since("news:5:"),
            Err(SinceError::BadEpoch(EpochError::Empty))
        );
    }
}
