//! Topic patterns (`--metrics-topic`): `.`-separated segments where `*` matches exactly one
//! segment and a final `>` one or more trailing segments. Parsing and matching only; matching
//! allocates nothing. Used by `--metrics-topic` and the history's `[[topics]]` overrides; the
//! grant matcher (`src/auth/pattern.rs`) adds `{sub}` and compiled grants on top of the same rules.

use std::fmt;

use super::name::{validate_topic_str, TopicError};

/// Why a pattern was refused, named after the broken rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternError {
    /// The pattern is empty.
    Empty,
    /// A literal part breaks the topic name rules.
    Name(TopicError),
    /// A segment is empty (`a..b`, a leading or trailing `.`).
    EmptySegment,
    /// `*` or `>` is part of a segment instead of the whole segment (`a*`).
    WildcardInsideSegment,
    /// `>` is not the last segment.
    TailNotLast,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatternError::Empty => f.write_str("the pattern is empty"),
            PatternError::Name(e) => write!(f, "{e}"),
            PatternError::EmptySegment => f.write_str("a pattern segment is empty"),
            PatternError::WildcardInsideSegment => {
                f.write_str("'*' and '>' must be a whole segment")
            }
            PatternError::TailNotLast => f.write_str("'>' must be the last segment"),
        }
    }
}

impl std::error::Error for PatternError {}

/// A parsed topic pattern. `Display` gives back the text it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    text: Box<str>,
    /// Whether the last segment is `>`.
    tail: bool,
}

impl TopicPattern {
    /// Parses `text`: literal segments follow the topic name rules; `*` and `>` stand alone.
    pub fn parse(text: &str) -> Result<TopicPattern, PatternError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        let segments: Vec<&str> = text.split('.').collect();
        for (index, segment) in segments.iter().enumerate() {
            match *segment {
                "" => return Err(PatternError::EmptySegment),
                "*" => {}
                ">" if index + 1 == segments.len() => {}
                ">" => return Err(PatternError::TailNotLast),
                literal if literal.contains(['*', '>']) => {
                    return Err(PatternError::WildcardInsideSegment)
                }
                literal => {
                    validate_topic_str(literal).map_err(PatternError::Name)?;
                }
            }
        }
        if text.len() > super::MAX_TOPIC_BYTES {
            return Err(PatternError::Name(TopicError::TooLong));
        }
        Ok(TopicPattern {
            tail: segments.last() == Some(&">"),
            text: text.into(),
        })
    }

    /// Whether `topic` matches: segment by segment, `*` matching any one segment and a final
    /// `>` any one or more.
    pub fn matches(&self, topic: &str) -> bool {
        let mut names = topic.split('.');
        let mut parts = self.text.split('.');
        loop {
            match (parts.next(), names.next()) {
                (None, None) => return true,
                (Some(">"), Some(_)) if self.tail => return true,
                (Some("*"), Some(_)) => {}
                (Some(part), Some(name)) if part == name => {}
                _ => return false,
            }
        }
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, topic: &str) -> bool {
        TopicPattern::parse(pattern).unwrap().matches(topic)
    }

    #[test]
    fn literal_star_and_tail() {
        assert!(matches("news", "news"));
        assert!(!matches("news", "news.eu"));
        assert!(!matches("news", "new"));
        assert!(matches("news.*", "news.eu"));
        assert!(!matches("news.*", "news"));
        assert!(!matches("news.*", "news.eu.fr"));
        assert!(matches("*.eu", "news.eu"));
        assert!(!matches("*.eu", "eu"));
        assert!(matches("news.>", "news.eu"));
        assert!(matches("news.>", "news.eu.fr"));
        assert!(!matches("news.>", "news"));
        assert!(!matches("news.>", "sport.eu"));
        assert!(matches(">", "anything.at.all"));
        assert!(matches("*.*.>", "a.b.c"));
        assert!(!matches("*.*.>", "a.b"));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        assert_eq!(TopicPattern::parse("a..b"), Err(PatternError::EmptySegment));
        assert_eq!(TopicPattern::parse(".a"), Err(PatternError::EmptySegment));
        assert_eq!(
            TopicPattern::parse("a*"),
            Err(PatternError::WildcardInsideSegment)
        );
        assert_eq!(TopicPattern::parse(">.a"), Err(PatternError::TailNotLast));
        assert!(matches!(
            TopicPattern::parse("a b"),
            Err(PatternError::Name(TopicError::Whitespace))
        ));
        assert_eq!(
            TopicPattern::parse(" news.> ").unwrap().to_string(),
            "news.>"
        );
    }
}
