//! What a load message carries and how it is found again: the publish bodies we send (JSON
//! text or binary) and a fast parser for what the broker delivers. Pure functions over bytes.
//!
//! Every message carries its publisher `p`, topic index `k`, the per-(publisher, topic)
//! sequence number `n`, and the INTENDED send time `t` in nanoseconds since the process epoch
//! (open loop: see `schedule.rs`).

use crate::config::parse_u64;

/// The fields every load message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub publisher: u32,
    pub topic: u32,
    pub seq: u64,
    pub intended_ns: u64,
}

/// Bytes of the binary stamp: p u32, k u32, n u64, t u64, all little-endian.
pub(crate) const BINARY_STAMP_BYTES: usize = 24;

/// Appends the JSON `data` value for `stamp`, padded to exactly `size` bytes when `size` is
/// large enough (otherwise the unpadded minimum, about 60 bytes). The padding reads like
/// market data (symbols and prices that vary per message), not one repeated byte, so
/// permessage-deflate measurements (`--compression`) see a realistic ratio for JSON.
pub(crate) fn encode_json_data(stamp: &Stamp, size: usize, out: &mut Vec<u8>) {
    use std::io::Write;
    let start = out.len();
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "{{\"p\":{},\"k\":{},\"n\":{},\"t\":{}",
        stamp.publisher, stamp.topic, stamp.seq, stamp.intended_ns
    );
    const PAD_OVERHEAD: usize = ",\"pad\":\"\"}".len();
    let used = out.len() - start;
    if size >= used + PAD_OVERHEAD {
        out.extend_from_slice(b",\"pad\":\"");
        let pad_end = out.len() + (size - used - PAD_OVERHEAD);
        let mut x = stamp.seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        while out.len() < pad_end {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let _ = write!(
                out,
                "SYM{} bid {}.{:02} ask {}.{:02} qty {} venue XNAS; ",
                x % 40,
                100 + (x >> 8) % 50,
                (x >> 16) % 100,
                100 + (x >> 24) % 50,
                (x >> 32) % 100,
                (x >> 40) % 1000
            );
        }
        out.truncate(pad_end);
        out.extend_from_slice(b"\"}");
    } else {
        out.push(b'}');
    }
}

/// Appends the binary payload for `stamp`, zero-padded to `size` bytes (at least the stamp).
pub(crate) fn encode_binary_payload(stamp: &Stamp, size: usize, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&stamp.publisher.to_le_bytes());
    out.extend_from_slice(&stamp.topic.to_le_bytes());
    out.extend_from_slice(&stamp.seq.to_le_bytes());
    out.extend_from_slice(&stamp.intended_ns.to_le_bytes());
    let used = out.len() - start;
    if size > used {
        out.resize(start + size, 0);
    }
}

/// Appends a protocol v1 text publish command carrying `data`, with an ack `id` if given.
pub(crate) fn encode_text_publish(topic: &str, data: &[u8], id: Option<u64>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"op\":\"publish\",\"topic\":\"");
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(b"\",\"data\":");
    out.extend_from_slice(data);
    if let Some(id) = id {
        use std::io::Write;
        let _ = write!(out, ",\"id\":{id}");
    }
    out.push(b'}');
}

/// Appends a protocol v1 binary publish: `[1 byte N][topic][payload]`.
pub(crate) fn encode_binary_publish(topic: &str, payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(topic.len() <= 255);
    out.push(topic.len() as u8);
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(payload);
}

/// One message from the broker, as far as the load generator cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incoming<'a> {
    /// A delivery: the topic name it came on, our stamp from its data, and the broker's seq
    /// (`None` from a broker that sends none).
    Message {
        topic: &'a [u8],
        stamp: Stamp,
        broker_seq: Option<u64>,
    },
    /// The ack of a subscribe with `since`: the topic's top seq and epoch, and whether the
    /// gap was recovered.
    Resumed {
        topic: String,
        top: u64,
        epoch: String,
        recovered: bool,
    },
    /// A delivery whose data is not one of ours (someone else publishing on our topics).
    Foreign,
    Ack {
        id: Option<u64>,
    },
    Dropped {
        count: u64,
    },
    Error(String),
    /// Anything else (future ops); counted, not fatal.
    Other,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads an unsigned integer after `key` (e.g. `"n":`) at the start of `s`; returns it and the
/// rest of the input.
fn field<'a>(s: &'a [u8], key: &[u8]) -> Option<(u64, &'a [u8])> {
    let rest = s.strip_prefix(key)?;
    let end = rest
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    Some((parse_u64(&rest[..end])?, &rest[end..]))
}

/// Parses our stamp from the start of a JSON data value written by [`encode_json_data`].
pub(crate) fn parse_json_stamp(data: &[u8]) -> Option<Stamp> {
    let (p, r) = field(data, b"{\"p\":")?;
    let (k, r) = field(r, b",\"k\":")?;
    let (n, r) = field(r, b",\"n\":")?;
    let (t, _) = field(r, b",\"t\":")?;
    Some(Stamp {
        publisher: u32::try_from(p).ok()?,
        topic: u32::try_from(k).ok()?,
        seq: n,
        intended_ns: t,
    })
}

/// Parses a text message from the broker. The fast path locates the fields in the compact
/// form the broker writes (`{"op":"message","topic":"t","seq":42,"data":...}`); anything else
/// goes through serde_json, so a broker that reorders keys or adds spaces still works.
pub(crate) fn parse_text(msg: &[u8]) -> Incoming<'_> {
    if let Some(rest) = msg.strip_prefix(b"{\"op\":\"message\",\"topic\":\"") {
        if let Some(end) = rest.iter().position(|&b| b == b'"') {
            let topic = &rest[..end];
            if let Some(at) = find(&rest[end..], b"\"data\":") {
                let broker_seq = field(&rest[end + 1..], b",\"seq\":").map(|(seq, _)| seq);
                let data = &rest[end + at + 7..];
                return match parse_json_stamp(data) {
                    Some(stamp) => Incoming::Message {
                        topic,
                        stamp,
                        broker_seq,
                    },
                    None => Incoming::Foreign,
                };
            }
        }
    }
    parse_text_slow(msg)
}

fn parse_text_slow(msg: &[u8]) -> Incoming<'_> {
    let value: serde_json::Value = match serde_json::from_slice(msg) {
        Ok(v) => v,
        Err(e) => return Incoming::Error(format!("unparseable text message ({e})")),
    };
    let u = |v: &serde_json::Value, key: &str| v.get(key).and_then(serde_json::Value::as_u64);
    match value.get("op").and_then(serde_json::Value::as_str) {
        Some("message") => {
            let Some(topic) = value.get("topic").and_then(serde_json::Value::as_str) else {
                return Incoming::Error("message without topic".into());
            };
            let Some(data) = value.get("data") else {
                return Incoming::Foreign;
            };
            let stamp = (|| {
                Some(Stamp {
                    publisher: u32::try_from(u(data, "p")?).ok()?,
                    topic: u32::try_from(u(data, "k")?).ok()?,
                    seq: u(data, "n")?,
                    intended_ns: u(data, "t")?,
                })
            })();
            match stamp {
                // The topic must borrow from `msg`; find it there (JSON-escaped names are
                // never ours, so the plain bytes suffice).
                Some(stamp) => match find(msg, topic.as_bytes()) {
                    Some(i) => Incoming::Message {
                        topic: &msg[i..i + topic.len()],
                        stamp,
                        broker_seq: u(&value, "seq"),
                    },
                    None => Incoming::Foreign,
                },
                None => Incoming::Foreign,
            }
        }
        Some("ack") => match (
            value.get("recovered").and_then(serde_json::Value::as_bool),
            value.get("topic").and_then(serde_json::Value::as_str),
            u(&value, "seq"),
            value.get("epoch").and_then(serde_json::Value::as_str),
        ) {
            (Some(recovered), Some(topic), Some(top), Some(epoch)) => Incoming::Resumed {
                topic: topic.to_string(),
                top,
                epoch: epoch.to_string(),
                recovered,
            },
            _ => Incoming::Ack {
                id: u(&value, "id"),
            },
        },
        Some("dropped") => Incoming::Dropped {
            count: u(&value, "count").unwrap_or(0),
        },
        Some("error") => Incoming::Error(value.to_string()),
        _ => Incoming::Other,
    }
}

/// Parses a binary delivery: `[1 byte N][topic][8 byte seq BE][payload]`.
pub(crate) fn parse_binary(msg: &[u8]) -> Incoming<'_> {
    let Some((&n, rest)) = msg.split_first() else {
        return Incoming::Error("empty binary message".into());
    };
    let n = usize::from(n);
    if rest.len() < n + 8 {
        return Incoming::Error("binary message shorter than its topic and seq".into());
    }
    let topic = &rest[..n];
    let broker_seq = u64::from_be_bytes(rest[n..n + 8].try_into().expect("8 bytes"));
    let payload = &rest[n + 8..];
    if payload.len() < BINARY_STAMP_BYTES {
        return Incoming::Foreign;
    }
    let u32_at = |i: usize| u32::from_le_bytes(payload[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(payload[i..i + 8].try_into().expect("8 bytes"));
    Incoming::Message {
        topic,
        stamp: Stamp {
            publisher: u32_at(0),
            topic: u32_at(4),
            seq: u64_at(8),
            intended_ns: u64_at(16),
        },
        broker_seq: Some(broker_seq),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: Stamp = Stamp {
        publisher: 3,
        topic: 7,
        seq: 12345,
        intended_ns: 987_654_321_012,
    };

    #[test]
    fn json_data_is_padded_to_size_and_parses_back() {
        for size in [0usize, 10, 60, 64, 65, 200, 4096] {
            let mut data = Vec::new();
            encode_json_data(&STAMP, size, &mut data);
            let value: serde_json::Value = serde_json::from_slice(&data).expect("valid JSON");
            assert_eq!(value["n"], 12345);
            if size >= 70 {
                assert_eq!(data.len(), size, "size {size}");
            }
            assert_eq!(parse_json_stamp(&data), Some(STAMP));
        }
    }

    #[test]
    fn text_delivery_fast_path() {
        let mut data = Vec::new();
        encode_json_data(&STAMP, 64, &mut data);
        let mut msg = b"{\"op\":\"message\",\"topic\":\"load-7\",\"seq\":42,\"data\":".to_vec();
        msg.extend_from_slice(&data);
        msg.push(b'}');
        assert_eq!(
            parse_text(&msg),
            Incoming::Message {
                topic: b"load-7",
                stamp: STAMP,
                broker_seq: Some(42),
            }
        );
    }

    #[test]
    fn text_delivery_slow_path_tolerates_reordering_and_spaces() {
        let msg = br#"{ "seq": 1, "data": {"t": 987654321012, "n": 12345, "k": 7, "p": 3}, "topic": "load-7", "op": "message" }"#;
        assert_eq!(
            parse_text(msg),
            Incoming::Message {
                topic: b"load-7",
                stamp: STAMP,
                broker_seq: Some(1),
            }
        );
        assert_eq!(
            parse_text(
                br#"{"op":"ack","topic":"load-7","seq":41,"epoch":"e4Xq","recovered":false}"#
            ),
            Incoming::Resumed {
                topic: "load-7".into(),
                top: 41,
                epoch: "e4Xq".into(),
                recovered: false
            }
        );
        assert_eq!(
            parse_text(br#"{"op":"ack","id":5,"seq":9}"#),
            Incoming::Ack { id: Some(5) }
        );
        assert_eq!(
            parse_text(br#"{"op":"ack","id":1}"#),
            Incoming::Ack { id: Some(1) }
        );
        assert_eq!(
            parse_text(br#"{"op":"dropped","topic":"t","count":17}"#),
            Incoming::Dropped { count: 17 }
        );
        assert!(matches!(
            parse_text(br#"{"op":"error","reason":"x"}"#),
            Incoming::Error(_)
        ));
        assert!(matches!(parse_text(b"not json"), Incoming::Error(_)));
        assert_eq!(
            parse_text(br#"{"op":"message","topic":"load-0","seq":1,"data":"hi"}"#),
            Incoming::Foreign
        );
    }

    #[test]
    fn publish_commands_are_valid_json() {
        let mut data = Vec::new();
        encode_json_data(&STAMP, 64, &mut data);
        let mut cmd = Vec::new();
        encode_text_publish("load-7", &data, Some(99), &mut cmd);
        let v: serde_json::Value = serde_json::from_slice(&cmd).unwrap();
        assert_eq!(v["op"], "publish");
        assert_eq!(v["topic"], "load-7");
        assert_eq!(v["id"], 99);
        assert_eq!(v["data"]["p"], 3);
    }

    #[test]
    fn binary_round_trip() {
        let mut payload = Vec::new();
        encode_binary_payload(&STAMP, 64, &mut payload);
        assert_eq!(payload.len(), 64);
        let mut publish = Vec::new();
        encode_binary_publish("load-7", &payload, &mut publish);
        assert_eq!(publish[0], 6);
        // What the broker delivers: the topic, then the 8-byte sequence, then the payload.
        let mut delivery = publish[..7].to_vec();
        delivery.extend_from_slice(&42u64.to_be_bytes());
        delivery.extend_from_slice(&payload);
        assert_eq!(
            parse_binary(&delivery),
            Incoming::Message {
                topic: b"load-7",
                stamp: STAMP,
                broker_seq: Some(42),
            }
        );
        assert!(matches!(parse_binary(&delivery[..5]), Incoming::Error(_)));
        assert_eq!(parse_binary(&delivery[..20]), Incoming::Foreign);
    }
}
