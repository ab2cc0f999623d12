//! JSON commands from clients (protocol v1 text frames) and the error codes the broker answers
//! with. Parsing borrows from the frame's bytes: no allocation for ordinary commands, and the
//! published `data` stays the publisher's exact bytes. This file decides nothing about
//! subscriptions or limits; it only says what the client asked for.
//!
//! Field rules, decided here:
//! - unknown fields are ignored (friendlier to newer clients), but their values must be valid
//!   JSON;
//! - a known field (`op`, `topic`, `data`, `id`) given twice is refused as `invalid_command`:
//!   parsers disagree on which copy wins, and a proxy and the broker must never disagree;
//! - fields a command does not use (`data` on `subscribe`) are ignored;
//! - `id`, when present, must be a JSON string or number, and is echoed verbatim in the
//!   answer, also in error answers, as soon as the frame is a JSON object with a valid `id`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::broker::history::{Epoch, Since};
use crate::topic::name::validate_topic_str;

/// A client command, borrowing from the frame's payload.
///
/// `topic` is a `Cow` because a JSON string with escapes (`"a\"b"`, `"caf\u00e9"`) must be
/// decoded into a new string; names without a backslash (nearly all) are borrowed.
#[derive(Debug, Clone)]
pub enum Command<'a> {
    /// `{"op":"subscribe","topic":T}`, optionally resuming: `"since":{"seq":N,"epoch":E}`.
    Subscribe {
        topic: Cow<'a, str>,
        id: Option<&'a RawValue>,
        since: Option<Since>,
    },
    /// `{"op":"unsubscribe","topic":T}`.
    Unsubscribe {
        topic: Cow<'a, str>,
        id: Option<&'a RawValue>,
    },
    /// `{"op":"publish","topic":T,"data":D}`; `data` is the publisher's exact bytes.
    Publish {
        topic: Cow<'a, str>,
        data: &'a RawValue,
        id: Option<&'a RawValue>,
    },
    /// `{"op":"auth","token":T}`: a connection token, first or refreshed. Never logged.
    Auth {
        token: Cow<'a, str>,
        id: Option<&'a RawValue>,
    },
}

impl<'a> Command<'a> {
    /// The (validated) topic name; `auth` has none.
    pub fn topic(&self) -> Option<&str> {
        match self {
            Command::Subscribe { topic, .. }
            | Command::Unsubscribe { topic, .. }
            | Command::Publish { topic, .. } => Some(topic),
            Command::Auth { .. } => None,
        }
    }

    /// The client's `id`, if it sent one (a JSON string or number, verbatim).
    pub fn id(&self) -> Option<&'a RawValue> {
        match self {
            Command::Subscribe { id, .. }
            | Command::Unsubscribe { id, .. }
            | Command::Publish { id, .. }
            | Command::Auth { id, .. } => *id,
        }
    }
}

/// The machine-readable `code` of an error answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The frame is not JSON.
    InvalidJson,
    /// Valid JSON, wrong shape: not an object, missing field, wrong type, duplicate field.
    InvalidCommand,
    /// `op` is a string naming no command.
    UnknownOp,
    /// The topic name breaks a naming rule.
    InvalidTopic,
    /// The connection reached its subscription limit.
    TooManySubscriptions,
    /// The message exceeds the configured size limit.
    MessageTooLarge,
    /// Unsubscribe from a topic the connection is not subscribed to.
    NotSubscribed,
    /// The topic's shard is over its inbox budget; the command was not carried out.
    Overloaded,
    /// The engine's backend (Redis) is unreachable; the publish was not carried out.
    EngineUnavailable,
    /// A process-wide cap (`--max-subscriptions`, `--max-topics`) is reached.
    LimitReached,
    /// Authentication is on and the connection has no valid token for this (or the token in
    /// an `auth` command was refused).
    Unauthorized,
    /// The connection's token does not grant this topic.
    Forbidden,
    /// Over `--max-publish-rate`.
    RateLimited,
    /// The connection's token expired without a refresh; the connection closes (4001).
    TokenExpired,
}

impl ErrorCode {
    /// Every code, for tests and documentation.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::InvalidJson,
        ErrorCode::InvalidCommand,
        ErrorCode::UnknownOp,
        ErrorCode::InvalidTopic,
        ErrorCode::TooManySubscriptions,
        ErrorCode::MessageTooLarge,
        ErrorCode::NotSubscribed,
        ErrorCode::Overloaded,
        ErrorCode::EngineUnavailable,
        ErrorCode::LimitReached,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::TokenExpired,
    ];

    /// The code as sent on the wire (`snake_case`, plain ASCII: never needs escaping).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidCommand => "invalid_command",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::InvalidTopic => "invalid_topic",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::EngineUnavailable => "engine_unavailable",
            ErrorCode::LimitReached => "limit_reached",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TokenExpired => "token_expired",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused command: what to answer with `{"op":"error",...}`.
#[derive(Debug, Clone)]
pub struct CommandError {
    /// The machine-readable code.
    pub code: ErrorCode,
    /// The client's `id`, echoed when the frame was parseable enough to find a valid one.
    pub id: Option<Box<RawValue>>,
    /// Human-readable detail.
    pub message: String,
}

impl CommandError {
    /// An error answer for `code`, echoing `id` if given.
    pub fn new(code: ErrorCode, id: Option<&RawValue>, message: impl Into<String>) -> Self {
        CommandError {
            code,
            id: id.map(RawValue::to_owned),
            message: message.into(),
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for CommandError {}

/// Parses one text frame's payload into a [`Command`], validating the topic name.
pub fn parse_command(text: &[u8]) -> Result<Command<'_>, CommandError> {
    let fields: Fields<'_> = serde_json::from_slice(text).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            // Well-formed JSON that is not an object (`[1]`, `"x"`, `3`).
            Category::Data => CommandError::new(
                ErrorCode::InvalidCommand,
                None,
                "a command must be a JSON object",
            ),
            Category::Syntax | Category::Eof | Category::Io => {
                CommandError::new(ErrorCode::InvalidJson, None, format!("invalid JSON: {e}"))
            }
        }
    })?;

    // The id first, so that every later error can echo it.
    let id = match fields.id {
        Field::Missing => None,
        Field::Duplicate => return Err(invalid(None, "duplicate field \"id\"")),
        Field::Once(raw) => match raw.get().as_bytes().first() {
            Some(b'"' | b'-' | b'0'..=b'9') => Some(raw),
            _ => return Err(invalid(None, "\"id\" must be a string or a number")),
        },
    };

    let op = match fields.op {
        Field::Missing => return Err(invalid(id, "missing field \"op\"")),
        Field::Duplicate => return Err(invalid(id, "duplicate field \"op\"")),
        Field::Once(raw) => json_str(raw, id, "op")?,
    };
    enum Op {
        Subscribe,
        Unsubscribe,
        Publish,
    }
    let op = match &*op {
        "subscribe" => Op::Subscribe,
        "unsubscribe" => Op::Unsubscribe,
        "publish" => Op::Publish,
        "auth" => {
            let token = match fields.token {
                Field::Missing => return Err(invalid(id, "missing field \"token\"")),
                Field::Duplicate => return Err(invalid(id, "duplicate field \"token\"")),
                Field::Once(raw) => json_str(raw, id, "token")?,
            };
            return Ok(Command::Auth { token, id });
        }
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(CommandError::new(
                ErrorCode::UnknownOp,
                id,
                format!("unknown op {shown:?}"),
            ));
        }
    };

    let topic = match fields.topic {
        Field::Missing => return Err(invalid(id, "missing field \"topic\"")),
        Field::Duplicate => return Err(invalid(id, "duplicate field \"topic\"")),
        Field::Once(raw) => json_str(raw, id, "topic")?,
    };
    if let Err(e) = validate_topic_str(&topic) {
        return Err(CommandError::new(
            ErrorCode::InvalidTopic,
            id,
            e.to_string(),
        ));
    }

    Ok(match op {
        Op::Subscribe => {
            let since = match fields.since {
                Field::Missing => None,
                Field::Duplicate => return Err(invalid(id, "duplicate field \"since\"")),
                Field::Once(raw) => Some(parse_since(raw, id)?),
            };
            Command::Subscribe { topic, id, since }
        }
        Op::Unsubscribe => Command::Unsubscribe { topic, id },
        Op::Publish => {
            let data = match fields.data {
                Field::Missing => return Err(invalid(id, "missing field \"data\"")),
                Field::Duplicate => return Err(invalid(id, "duplicate field \"data\"")),
                Field::Once(raw) => raw,
            };
            Command::Publish { topic, data, id }
        }
    })
}

/// `{"seq":N}` or `{"seq":N,"epoch":"E"}` (other fields ignored, like everywhere).
fn parse_since(raw: &RawValue, id: Option<&RawValue>) -> Result<Since, CommandError> {
    #[derive(serde::Deserialize)]
    struct SinceJson<'a> {
        seq: u64,
        #[serde(borrow)]
        epoch: Option<Cow<'a, str>>,
    }
    const SHAPE: &str = "\"since\" must be {\"seq\":N} or {\"seq\":N,\"epoch\":\"...\"}";
    let parsed: SinceJson<'_> = serde_json::from_str(raw.get()).map_err(|_| invalid(id, SHAPE))?;
    let epoch = match parsed.epoch {
        None => None,
        Some(text) => Some(Epoch::parse(&text).map_err(|e| invalid(id, &format!("since: {e}")))?),
    };
    Ok(Since {
        seq: parsed.seq,
        epoch,
    })
}

fn invalid(id: Option<&RawValue>, message: &str) -> CommandError {
    CommandError::new(ErrorCode::InvalidCommand, id, message)
}

/// Decodes a raw JSON value that must be a string, borrowing when it has no escapes.
fn json_str<'a>(
    raw: &'a RawValue,
    id: Option<&RawValue>,
    field: &str,
) -> Result<Cow<'a, str>, CommandError> {
    let text = raw.get();
    let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) else {
        return Err(invalid(id, &format!("\"{field}\" must be a string")));
    };
    if !inner.contains('\\') {
        // A valid JSON string without escapes is its content verbatim (control characters
        // are already refused by the JSON grammar).
        return Ok(Cow::Borrowed(inner));
    }
    match serde_json::from_str::<String>(text) {
        Ok(decoded) => Ok(Cow::Owned(decoded)),
        // E.g. a lone surrogate escape (`"\ud800"`): not representable as UTF-8.
        Err(e) => Err(CommandError::new(
            ErrorCode::InvalidJson,
            id,
            format!("invalid string in \"{field}\": {e}"),
        )),
    }
}

/// One known field of the command object.
#[derive(Debug, Clone, Copy, Default)]
enum Field<'a> {
    #[default]
    Missing,
    Once(&'a RawValue),
    Duplicate,
}

impl<'a> Field<'a> {
    fn set(&mut self, raw: &'a RawValue) {
        *self = match self {
            Field::Missing => Field::Once(raw),
            Field::Once(_) | Field::Duplicate => Field::Duplicate,
        };
    }
}

/// The command object's known fields, as raw JSON borrowed from the frame. Deserialized by
/// hand so that only a JSON object is accepted (a derived struct would also take an array)
/// and duplicates are recorded instead of failing before the `id` is known.
#[derive(Debug, Default)]
struct Fields<'a> {
    op: Field<'a>,
    topic: Field<'a>,
    data: Field<'a>,
    id: Field<'a>,
    since: Field<'a>,
    token: Field<'a>,
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a command object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key::<Key>()? {
            // Unknown fields are parsed as raw values too: that checks their syntax and UTF-8.
            let value: &'de RawValue = map.next_value()?;
            match key {
                Key::Op => fields.op.set(value),
                Key::Topic => fields.topic.set(value),
                Key::Data => fields.data.set(value),
                Key::Id => fields.id.set(value),
                Key::Since => fields.since.set(value),
                Key::Token => fields.token.set(value),
                Key::Other => {}
            }
        }
        Ok(fields)
    }
}

/// An object key, matched without allocating (escaped keys are decoded by serde_json first).
enum Key {
    Op,
    Topic,
    Data,
    Id,
    Since,
    Token,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "op" => Key::Op,
                    "topic" => Key::Topic,
                    "data" => Key::Data,
                    "id" => Key::Id,
                    "since" => Key::Since,
                    "token" => Key::Token,
                    _ => Key::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn err(text: &str) -> CommandError {
        match parse_command(text.as_bytes()) {
            Ok(cmd) => panic!("{text} parsed as {cmd:?}"),
            Err(e) => e,
        }
    }

    fn id_of(e: &CommandError) -> Option<&str> {
        e.id.as_deref().map(RawValue::get)
    }

    #[test]
    fn parses_the_three_commands() {
        let cmd = parse_command(br#"{"op":"subscribe","topic":"news"}"#).unwrap();
        assert!(matches!(cmd, Command::Subscribe { id: None, .. }));
        assert!(cmd.topic() == Some("news"));
        assert!(matches!(
            cmd,
            Command::Subscribe {
                topic: Cow::Borrowed("news"),
                ..
            }
        ));

        let cmd = parse_command(br#"{"topic":"news","op":"unsubscribe","id":7}"#).unwrap();
        assert!(matches!(cmd, Command::Unsubscribe { .. }));
        assert_eq!(cmd.id().map(RawValue::get), Some("7"));

        let text = br#"{"op":"publish","topic":"news","data": { "b":1,  "a":[1, 2] } ,"id":"x-1"}"#;
        let Command::Publish { topic, data, id } = parse_command(text).unwrap() else {
            panic!("not a publish");
        };
        assert_eq!(topic, "news");
        assert_eq!(data.get(), r#"{ "b":1,  "a":[1, 2] }"#);
        assert_eq!(id.map(RawValue::get), Some(r#""x-1""#));
    }

    #[test]
    fn data_may_be_any_json_value_and_stays_verbatim() {
        for data in [
            "null",
            "true",
            "-1.5e+10",
            r#""str\"ing\u00e9""#,
            "[ ]",
            r#"{"k":{"nested":[null]}}"#,
        ] {
            let text = format!(r#"{{"op":"publish","topic":"t","data":{data}}}"#);
            let cmd = parse_command(text.as_bytes()).unwrap();
            let Command::Publish { data: got, .. } = cmd else {
                panic!("not a publish");
            };
            assert_eq!(got.get(), data);
        }
    }

    #[test]
    fn escaped_topics_are_decoded() {
        let cmd = parse_command(br#"{"op":"subscribe","topic":"a\"b\\c\u00e9"}"#).unwrap();
        assert_eq!(cmd.topic(), Some("a\"b\\cé"));
        assert!(matches!(
            cmd,
            Command::Subscribe {
                topic: Cow::Owned(_),
                ..
            }
        ));
        // Escaped op and keys work too.
        let cmd = parse_command(br#"{"\u006fp":"s\u0075bscribe","topic":"x"}"#).unwrap();
        assert!(matches!(cmd, Command::Subscribe { .. }));
    }

    #[test]
    fn invalid_json() {
        for text in [
            "",
            "{",
            "nope",
            r#"{"op":"subscribe","topic":"a"} trailing"#,
            r#"{"op":"subscribe","topic":"a",}"#,
            r#"{"op":"subscribe","topic":"a"#,
        ] {
            let e = err(text);
            assert_eq!(e.code, ErrorCode::InvalidJson, "{text}");
            assert!(e.id.is_none());
            assert!(!e.message.is_empty());
        }
        let e = err(r#"{"op":"subscribe","topic":"\ud800","id":1}"#);
        assert_eq!(e.code, ErrorCode::InvalidJson);
        assert_eq!(id_of(&e), Some("1"));
        assert_eq!(
            parse_command(b"{\"op\":\"subscribe\",\"topic\":\"\xff\"}")
                .unwrap_err()
                .code,
            ErrorCode::InvalidJson
        );
    }

    #[test]
    fn invalid_command_shapes() {
        for (text, id) in [
            ("[1,2]", None),
            (r#""subscribe""#, None),
            ("42", None),
            ("null", None),
            (r#"{"topic":"a","id":1}"#, Some("1")),
            (r#"{"op":"subscribe","id":"q"}"#, Some(r#""q""#)),
            (r#"{"op":"publish","topic":"a","id":2}"#, Some("2")),
            (r#"{"op":5,"topic":"a","id":3}"#, Some("3")),
            (r#"{"op":"subscribe","topic":["a"],"id":4}"#, Some("4")),
            (r#"{"op":"subscribe","topic":null}"#, None),
            (r#"{"op":"subscribe","topic":"a","id":{"x":1}}"#, None),
            (r#"{"op":"subscribe","topic":"a","id":[1]}"#, None),
            (r#"{"op":"subscribe","topic":"a","id":true}"#, None),
            (r#"{"op":"subscribe","topic":"a","id":null}"#, None),
            (
                r#"{"op":"subscribe","topic":"a","topic":"b","id":5}"#,
                Some("5"),
            ),
            (r#"{"op":"subscribe","op":"subscribe","topic":"a"}"#, None),
            (r#"{"op":"publish","topic":"a","data":1,"data":2}"#, None),
            (r#"{"op":"subscribe","topic":"a","id":1,"id":2}"#, None),
        ] {
            let e = err(text);
            assert_eq!(e.code, ErrorCode::InvalidCommand, "{text}");
            assert_eq!(id_of(&e), id, "{text}");
        }
    }

    #[test]
    fn unknown_op_and_invalid_topic_echo_the_id() {
        let e = err(r#"{"op":"subscrib","topic":"a","id":"abc"}"#);
        assert_eq!(e.code, ErrorCode::UnknownOp);
        assert_eq!(id_of(&e), Some(r#""abc""#));
        assert!(e.message.contains("subscrib"));

        let e = err(r#"{"id":-1.5,"op":"subscribe","topic":"a b"}"#);
        assert_eq!(e.code, ErrorCode::InvalidTopic);
        assert_eq!(id_of(&e), Some("-1.5"));
        assert_eq!(e.message, "topic name contains whitespace");

        for topic in ["", "news.*", "a>b", "\\u0000", "\\t"] {
            let text = format!(r#"{{"op":"publish","topic":"{topic}","data":1}}"#);
            assert_eq!(err(&text).code, ErrorCode::InvalidTopic, "{text}");
        }
        let long = "x".repeat(257);
        let text = format!(r#"{{"op":"subscribe","topic":"{long}"}}"#);
        assert_eq!(err(&text).code, ErrorCode::InvalidTopic);
    }

    #[test]
    fn unknown_and_unused_fields_are_ignored() {
        let cmd =
            parse_command(br#"{"op":"subscribe","topic":"a","data":{"x":1},"v":2,"extra":[1,{}]}"#)
                .unwrap();
        assert!(matches!(cmd, Command::Subscribe { .. }));
        // But they must still be valid JSON.
        assert_eq!(
            err(r#"{"op":"subscribe","topic":"a","v":nul}"#).code,
            ErrorCode::InvalidJson
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes never panic, and an accepted command's topic is always valid.
        #[test]
        fn arbitrary_bytes_never_panic(text in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            if let Ok(cmd) = parse_command(&text) {
                proptest::prop_assert!(cmd.topic().is_none_or(|t| validate_topic_str(t).is_ok()));
            }
        }

        /// Any topic string and id, encoded by serde_json, parse back to the same values; the
        /// topic is accepted exactly when `validate_topic_str` accepts it.
        #[test]
        fn encoded_commands_round_trip(
            topic in ".{0,12}|[ -~]{250,260}",
            id in proptest::option::of(proptest::prop_oneof![
                proptest::num::i64::ANY.prop_map(serde_json::Value::from),
                ".{0,8}".prop_map(serde_json::Value::from),
            ]),
            which in 0u8..3,
        ) {
            let op = ["subscribe", "unsubscribe", "publish"][usize::from(which)];
            let mut obj = serde_json::json!({"op": op, "topic": topic, "data": {"k": [1, "v"]}});
            if let Some(id) = &id {
                obj["id"] = id.clone();
            }
            let text = serde_json::to_vec(&obj).unwrap();
            match parse_command(&text) {
                Ok(cmd) => {
                    prop_assert!(validate_topic_str(&topic).is_ok());
                    prop_assert_eq!(cmd.topic(), Some(topic.as_str()));
                    let got: Option<serde_json::Value> =
                        cmd.id().map(|raw| serde_json::from_str(raw.get()).unwrap());
                    prop_assert_eq!(got, id);
                    if let Command::Publish { data, .. } = cmd {
                        prop_assert_eq!(data.get(), r#"{"k":[1,"v"]}"#);
                    }
                }
                Err(e) => {
                    let topic_error = validate_topic_str(&topic).unwrap_err();
                    prop_assert_eq!(e.code, ErrorCode::InvalidTopic);
                    prop_assert_eq!(e.message, topic_error.to_string());
                    let got: Option<serde_json::Value> =
                        e.id.as_deref().map(|raw| serde_json::from_str(raw.get()).unwrap());
                    prop_assert_eq!(got, id);
                }
            }
        }
    }

    #[test]
    fn error_codes_are_distinct_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
            assert!(seen.insert(s));
            assert_eq!(code.to_string(), s);
        }
    }
}
