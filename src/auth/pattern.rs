//! Topic patterns in grants (`news.*`, `user.{sub}.>`, `chat.room1`): validation, and their
//! compilation, once per token, into a [`Matcher`] that answers "is this topic granted?"
//! without allocating. Pure: no I/O, no clock; nothing here runs per delivery.
//!
//! The rules:
//! - a pattern is dot-separated segments; no segment is empty;
//! - `*` is a whole segment and matches exactly one topic segment (any text, even empty);
//! - `>` is a whole segment, only the last one, and matches one or more trailing segments;
//! - every other segment is literal and follows the topic-name character rules
//!   ([`crate::topic::validate_topic_str`]);
//! - `{sub}` inside a literal segment is replaced by the token's `sub` when compiled. The
//!   substituted text is a literal part of ONE segment, never parsed: a `sub` that is empty or
//!   holds a character a segment cannot hold (`.`, `*`, `>`, whitespace, controls) would widen
//!   or shift the grant (`user.{sub}.>` with `sub = "*"` would mean every user), so such a
//!   token's `{sub}` patterns grant nothing, while its other patterns still apply.

use std::fmt;

use crate::topic::{validate_topic_str, TopicError, MAX_TOPIC_BYTES};

/// The placeholder replaced by the token's `sub`.
pub const SUB_PLACEHOLDER: &str = "{sub}";

/// The longest pattern, in bytes, before substitution (a longer one could not match a topic).
pub const MAX_PATTERN_BYTES: usize = MAX_TOPIC_BYTES;

/// Most patterns in one list (a token's `subscribe` or `publish`, or an anonymous rule set):
/// a check walks the wildcard patterns, so their number bounds its cost.
pub const MAX_PATTERNS: usize = 256;

/// Why a pattern was refused, named after the broken rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternError {
    /// The pattern has no bytes.
    Empty,
    /// Longer than [`MAX_PATTERN_BYTES`].
    TooLong,
    /// Two dots in a row, or a dot at either end.
    EmptySegment,
    /// `*` or `>` inside a segment (`news*`): wildcards are whole segments.
    WildcardInSegment,
    /// `>` somewhere other than the last segment.
    TailNotLast,
    /// A literal segment breaks the topic-name rules (whitespace, control character...).
    BadSegment(TopicError),
    /// More than [`MAX_PATTERNS`] patterns in one list.
    TooMany,
    /// `{sub}` where there is no token to take it from (the anonymous rules).
    SubWithoutToken,
}

impl PatternError {
    /// A short reason, fit for an HTTP body or a configuration error.
    pub fn reason(self) -> &'static str {
        match self {
            PatternError::Empty => "empty topic pattern",
            PatternError::TooLong => "topic pattern too long",
            PatternError::EmptySegment => "topic pattern has an empty segment",
            PatternError::WildcardInSegment => "'*' and '>' must be whole segments",
            PatternError::TailNotLast => "'>' must be the last segment",
            PatternError::BadSegment(_) => "topic pattern has an invalid character",
            PatternError::TooMany => "too many topic patterns",
            PatternError::SubWithoutToken => "{sub} needs a token",
        }
    }
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatternError::BadSegment(e) => write!(f, "{}: {e}", self.reason()),
            _ => f.write_str(self.reason()),
        }
    }
}

impl std::error::Error for PatternError {}

/// Checks a pattern's syntax; `{sub}` is allowed. Returns whether it uses `{sub}`.
pub fn validate_pattern(pattern: &str) -> Result<bool, PatternError> {
    if pattern.is_empty() {
        return Err(PatternError::Empty);
    }
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(PatternError::TooLong);
    }
    let mut segments = pattern.split('.').peekable();
    while let Some(segment) = segments.next() {
        match segment {
            "" => return Err(PatternError::EmptySegment),
            "*" => {}
            ">" if segments.peek().is_none() => {}
            ">" => return Err(PatternError::TailNotLast),
            literal => {
                // The placeholder's braces are fine in topic names, and a segment that is only
                // the placeholder must still count as non-empty: check it with `x` in place.
                let probe = literal.replace(SUB_PLACEHOLDER, "x");
                match validate_topic_str(&probe) {
                    Ok(_) => {}
                    Err(TopicError::ReservedCharacter(_)) => {
                        return Err(PatternError::WildcardInSegment)
                    }
                    Err(e) => return Err(PatternError::BadSegment(e)),
                }
            }
        }
    }
    Ok(pattern.contains(SUB_PLACEHOLDER))
}

/// Whether `sub` may be put inside a segment without changing the pattern's shape.
fn sub_is_safe(sub: &str) -> bool {
    !sub.contains('.') && validate_topic_str(sub).is_ok()
}

/// One compiled segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    /// `*`
    One,
    /// `>` (always last)
    Tail,
}

/// A set of compiled patterns. Exact names (no wildcard) are looked up by binary search; the
/// wildcard patterns are walked segment by segment against the topic, without allocating.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matcher {
    /// Sorted, deduplicated.
    exact: Box<[Box<str>]>,
    wildcard: Box<[Box<[Segment]>]>,
}

impl Matcher {
    /// A matcher that grants nothing.
    pub fn none() -> Matcher {
        Matcher::default()
    }

    /// Compiles `patterns`, replacing `{sub}` with `sub`. Patterns that use `{sub}` are left out
    /// when `sub` is `None` or unsafe (see the module notes); a syntax error in any pattern
    /// refuses the whole list, so a backend's mistake shows instead of silently granting less.
    pub fn compile<S: AsRef<str>>(
        patterns: &[S],
        sub: Option<&str>,
    ) -> Result<Matcher, PatternError> {
        if patterns.len() > MAX_PATTERNS {
            return Err(PatternError::TooMany);
        }
        let safe_sub = sub.filter(|s| sub_is_safe(s));
        let mut exact = Vec::new();
        let mut wildcard = Vec::new();
        for pattern in patterns {
            let pattern = pattern.as_ref();
            let text = if validate_pattern(pattern)? {
                match safe_sub {
                    Some(sub) => pattern.replace(SUB_PLACEHOLDER, sub),
                    None => continue,
                }
            } else {
                pattern.to_owned()
            };
            let segments: Vec<Segment> = text
                .split('.')
                .map(|s| match s {
                    "*" => Segment::One,
                    ">" => Segment::Tail,
                    literal => Segment::Literal(literal.into()),
                })
                .collect();
            if segments.iter().all(|s| matches!(s, Segment::Literal(_))) {
                exact.push(text.into_boxed_str());
            } else {
                wildcard.push(segments.into_boxed_slice());
            }
        }
        exact.sort_unstable();
        exact.dedup();
        wildcard.dedup();
        Ok(Matcher {
            exact: exact.into_boxed_slice(),
            wildcard: wildcard.into_boxed_slice(),
        })
    }

    /// Compiles patterns that have no token to take `{sub}` from (the anonymous rules).
    pub fn compile_anonymous<S: AsRef<str>>(patterns: &[S]) -> Result<Matcher, PatternError> {
        for pattern in patterns {
            if validate_pattern(pattern.as_ref())? {
                return Err(PatternError::SubWithoutToken);
            }
        }
        Matcher::compile(patterns, None)
    }

    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }

    /// Whether `topic` is granted: one binary search, then one walk per wildcard pattern.
    pub fn matches(&self, topic: &str) -> bool {
        self.exact
            .binary_search_by(|name| name.as_ref().cmp(topic))
            .is_ok()
            || self.wildcard.iter().any(|p| segments_match(p, topic))
    }
}

fn segments_match(pattern: &[Segment], topic: &str) -> bool {
    let mut parts = topic.split('.');
    for segment in pattern {
        match segment {
            Segment::Tail => return parts.next().is_some(),
            Segment::One => {
                if parts.next().is_none() {
                    return false;
                }
            }
            Segment::Literal(text) => {
                if parts.next() != Some(text.as_ref()) {
                    return false;
                }
            }
        }
    }
    parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(patterns: &[&str], sub: Option<&str>) -> Matcher {
        Matcher::compile(patterns, sub).unwrap()
    }

    #[test]
    fn literal_star_and_tail() {
        let g = m(&["chat.room1", "news.*", "user.42.>"], None);
        assert!(g.matches("chat.room1"));
        assert!(!g.matches("chat.room2"));
        assert!(!g.matches("chat"));
        assert!(g.matches("news.sport"));
        assert!(!g.matches("news"));
        assert!(!g.matches("news.sport.football"));
        assert!(g.matches("user.42.inbox"));
        assert!(g.matches("user.42.inbox.deep.down"));
        assert!(!g.matches("user.42"), "'>' needs at least one segment");
        assert!(!g.matches("user.43.inbox"));
        assert!(!g.matches("user.420.inbox"));
        assert!(!g.matches("newsx.sport"));
    }

    #[test]
    fn star_matches_one_segment_anywhere() {
        let g = m(&["a.*.c", "*"], None);
        assert!(g.matches("a.b.c"));
        assert!(g.matches("a..c"), "a topic segment may be empty");
        assert!(!g.matches("a.b.b.c"));
        assert!(g.matches("anything"));
        assert!(!g.matches("two.segments"));
        assert!(m(&[">"], None).matches("every.topic.there.is"));
    }

    #[test]
    fn nothing_granted_means_nothing_matches() {
        assert!(!Matcher::none().matches("news"));
        assert!(Matcher::none().is_empty());
        assert!(m(&[], None).is_empty());
    }

    #[test]
    fn syntax_errors_are_named() {
        assert_eq!(validate_pattern(""), Err(PatternError::Empty));
        assert_eq!(validate_pattern("a..b"), Err(PatternError::EmptySegment));
        assert_eq!(validate_pattern(".a"), Err(PatternError::EmptySegment));
        assert_eq!(validate_pattern("a."), Err(PatternError::EmptySegment));
        assert_eq!(
            validate_pattern("news*"),
            Err(PatternError::WildcardInSegment)
        );
        assert_eq!(
            validate_pattern("a.b>"),
            Err(PatternError::WildcardInSegment)
        );
        assert_eq!(validate_pattern(">.a"), Err(PatternError::TailNotLast));
        assert!(matches!(
            validate_pattern("a b"),
            Err(PatternError::BadSegment(TopicError::Whitespace))
        ));
        assert_eq!(
            validate_pattern(&"x".repeat(MAX_PATTERN_BYTES + 1)),
            Err(PatternError::TooLong)
        );
        assert_eq!(validate_pattern("user.{sub}.>"), Ok(true));
        assert_eq!(validate_pattern("{sub}"), Ok(true));
        assert_eq!(validate_pattern("user.*"), Ok(false));
        let many = vec!["a"; MAX_PATTERNS + 1];
        assert_eq!(Matcher::compile(&many, None), Err(PatternError::TooMany));
        assert_eq!(
            Matcher::compile(&["ok", "bad*"], None),
            Err(PatternError::WildcardInSegment)
        );
    }

    #[test]
    fn sub_is_substituted_inside_one_segment() {
        let g = m(&["user.{sub}.>", "dm-{sub}"], Some("42"));
        assert!(g.matches("user.42.inbox"));
        assert!(!g.matches("user.43.inbox"));
        assert!(g.matches("dm-42"));
        assert!(!g.matches("dm-43"));
    }

    #[test]
    fn a_sub_with_dots_or_wildcards_does_not_widen_the_grant() {
        for sub in ["*", ">", "a.b", "a.*", "", " ", "a\nb", "a.>"] {
            let g = m(&["user.{sub}.>", "public"], Some(sub));
            assert!(!g.matches("user.bob.inbox"), "sub {sub:?}");
            assert!(!g.matches("user.a.b.inbox"), "sub {sub:?}");
            assert!(!g.matches("user.a.x.inbox"), "sub {sub:?}");
            assert!(
                g.matches("public"),
                "other patterns still apply (sub {sub:?})"
            );
        }
        // Without a sub at all, the {sub} patterns grant nothing either.
        let g = m(&["user.{sub}.>", "public"], None);
        assert!(!g.matches("user..inbox"));
        assert!(!g.matches("user.{sub}.inbox"));
        assert!(g.matches("public"));
    }

    #[test]
    fn anonymous_rules_refuse_sub() {
        assert_eq!(
            Matcher::compile_anonymous(&["user.{sub}"]),
            Err(PatternError::SubWithoutToken)
        );
        assert!(Matcher::compile_anonymous(&["news.*"])
            .unwrap()
            .matches("news.a"));
    }

    /// The reference: split both into vectors and recurse. Obviously right, and slow.
    fn reference(pattern: &str, sub: Option<&str>, topic: &str) -> bool {
        if validate_pattern(pattern).is_err() {
            return false;
        }
        let text = if pattern.contains(SUB_PLACEHOLDER) {
            match sub {
                Some(s)
                    if !s.is_empty()
                        && !s.contains(['.', '*', '>'])
                        && validate_topic_str(s).is_ok() =>
                {
                    pattern.replace(SUB_PLACEHOLDER, s)
                }
                _ => return false,
            }
        } else {
            pattern.to_string()
        };
        fn go(p: &[&str], t: &[&str]) -> bool {
            match (p.first(), t.first()) {
                (None, None) => true,
                (Some(&">"), _) => p.len() == 1 && !t.is_empty(),
                (Some(&"*"), Some(_)) => go(&p[1..], &t[1..]),
                (Some(a), Some(b)) => a == b && go(&p[1..], &t[1..]),
                _ => false,
            }
        }
        let p: Vec<&str> = text.split('.').collect();
        let t: Vec<&str> = topic.split('.').collect();
        go(&p, &t)
    }

    fn joined(parts: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(parts), 1..max).prop_map(|v| v.join("."))
    }

    fn pattern() -> impl Strategy<Value = String> {
        prop_oneof![
            joined(&["a", "b", "c", "*", ">", "{sub}", "x{sub}", "", "b*"], 5),
            "[ab.*>{}sub ]{0,12}",
        ]
    }

    fn topic() -> impl Strategy<Value = String> {
        joined(&["a", "b", "c", "", "42", "x42", "{sub}", "*"], 6)
    }

    fn sub() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(
            proptest::sample::select(&["42", "a", "a.b", "*", ">", "", "b c", "{sub}"][..])
                .prop_map(String::from),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn matcher_agrees_with_the_reference(
            patterns in proptest::collection::vec(pattern(), 0..4),
            sub in sub(),
            topics in proptest::collection::vec(topic(), 1..8),
        ) {
            let compiled = Matcher::compile(&patterns, sub.as_deref());
            let valid = patterns.iter().all(|p| validate_pattern(p).is_ok());
            prop_assert_eq!(compiled.is_ok(), valid);
            if let Ok(matcher) = compiled {
                for topic in &topics {
                    let expected = patterns.iter().any(|p| reference(p, sub.as_deref(), topic));
                    prop_assert_eq!(matcher.matches(topic), expected, "topic {:?} patterns {:?} sub {:?}", topic, patterns, sub);
                }
            }
        }

        #[test]
        fn a_sub_grant_stays_inside_its_own_prefix(sub in ".{0,6}", topic in ".{0,12}") {
            let matcher = Matcher::compile(&["user.{sub}.>"], Some(&sub)).unwrap();
            if matcher.matches(&topic) {
                let prefix = format!("user.{sub}.");
                prop_assert!(topic.starts_with(&prefix));
                prop_assert!(!sub.contains(['.', '*', '>']) && !sub.is_empty());
            }
        }

        #[test]
        fn arbitrary_text_never_panics(pattern in ".{0,40}", topic in ".{0,40}", sub in ".{0,8}") {
            let _ = validate_pattern(&pattern);
            if let Ok(m) = Matcher::compile(&[pattern.as_str()], Some(&sub)) {
                let _ = m.matches(&topic);
            }
        }
    }
}
