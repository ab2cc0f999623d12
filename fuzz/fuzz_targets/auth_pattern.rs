//! Fuzzes the grant pattern compiler and matcher: arbitrary patterns, `sub` and topics never
//! panic, the matcher agrees with a naive reference, and a `{sub}` grant never reaches outside
//! `prefix.<sub>.` whatever the `sub` holds. Input: pattern, sub and topics separated by `\n`.
#![no_main]

use crier::auth::pattern::{validate_pattern, Matcher, SUB_PLACEHOLDER};
use libfuzzer_sys::fuzz_target;

/// Obviously right and slow: split into vectors and recurse.
fn reference(pattern: &str, sub: &str, topic: &str) -> bool {
    if validate_pattern(pattern).is_err() {
        return false;
    }
    let text = if pattern.contains(SUB_PLACEHOLDER) {
        let safe = !sub.is_empty()
            && !sub.contains(['.', '*', '>'])
            && crier::topic::validate_topic_str(sub).is_ok();
        if !safe {
            return false;
        }
        pattern.replace(SUB_PLACEHOLDER, sub)
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

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let (Some(pattern), Some(sub)) = (lines.next(), lines.next()) else {
        return;
    };
    let compiled = Matcher::compile(&[pattern], Some(sub));
    assert_eq!(compiled.is_ok(), validate_pattern(pattern).is_ok());
    let scoped = Matcher::compile(&["user.{sub}.>"], Some(sub)).unwrap();
    for topic in lines {
        if let Ok(matcher) = &compiled {
            assert_eq!(matcher.matches(topic), reference(pattern, sub, topic), "{pattern:?} {sub:?} {topic:?}");
        }
        if scoped.matches(topic) {
            assert!(topic.starts_with(&format!("user.{sub}.")));
            assert!(!sub.contains(['.', '*', '>']));
        }
    }
});
