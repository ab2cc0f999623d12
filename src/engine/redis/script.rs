//! What crier keeps in Redis and the Lua it runs there: key and channel names (one hash tag per
//! topic, so a topic lives in one Cluster slot), the publish, ensure and fetch scripts, and the
//! encoding of a published message on the topic's channel. Pure: no connection here.

use bytes::Bytes;

use crate::broker::history::Epoch;
use crate::mesh::Payload;

/// One publish, atomically per topic (issue 13). A topic has state in Redis while some node
/// listens to its channel or its stream keeps messages (the local engine's rule, seen
/// across nodes: `PUBSUB NUMSUB`/`SHARDNUMSUB` counts the nodes subscribed). A publish to a
/// topic without state is unheard: nothing is stored or published, the meta of a finished
/// incarnation is dropped, and the answer is `{0, ""}`. Otherwise: the epoch (created if
/// missing, which also drops a stream left by an older incarnation), the next seq, the
/// history append (the seq is the stream ID, trimmed to the history size, with its TTL), the
/// meta TTL, and the (S)PUBLISH of `kind seq ":" epoch ":" payload` to the topic's channel.
/// Returns `{seq, epoch}`.
///
/// KEYS: meta, stream, channel. ARGV: kind (`j`/`b`), payload, history size, history TTL (ms),
/// meta TTL (ms), epoch candidate, `1` for SPUBLISH (Cluster).
pub(super) const PUBLISH: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'e')
local listeners
if ARGV[7] == '1' then
  listeners = redis.call('PUBSUB', 'SHARDNUMSUB', KEYS[3])[2]
else
  listeners = redis.call('PUBSUB', 'NUMSUB', KEYS[3])[2]
end
if listeners == 0 and not (epoch and redis.call('EXISTS', KEYS[2]) == 1) then
  if epoch then
    redis.call('DEL', KEYS[1], KEYS[2])
  end
  return {0, ''}
end
if not epoch then
  epoch = ARGV[6]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
end
local seq = redis.call('HINCRBY', KEYS[1], 's', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local size = tonumber(ARGV[3])
if size > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', size, seq .. '-0', 'k', ARGV[1], 'd', ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
local msg = ARGV[1] .. seq .. ':' .. epoch .. ':' .. ARGV[2]
if ARGV[7] == '1' then
  redis.call('SPUBLISH', KEYS[3], msg)
else
  redis.call('PUBLISH', KEYS[3], msg)
end
return {seq, epoch}
"#;

/// A topic's top, creating its incarnation if there is none (a topic lives while someone
/// listens): returns `{seq, epoch}` and refreshes the meta TTL. Run after SUBSCRIBE, so
/// nothing published in between is lost (subscribe, then read the top, then merge).
///
/// KEYS: meta, stream. ARGV: epoch candidate, meta TTL (ms).
pub(super) const ENSURE: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {tonumber(redis.call('HGET', KEYS[1], 's')), epoch}
"#;

/// History from `from` to `to` (seqs, inclusive, at most `count` entries) with the epoch it
/// belongs to, read atomically: `{epoch or nil, {{id, {field, value, ...}}, ...}}`.
///
/// KEYS: meta, stream. ARGV: from, to, count.
pub(super) const FETCH: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'e')
local entries = redis.call('XRANGE', KEYS[2], ARGV[1] .. '-0', ARGV[2] .. '-0', 'COUNT', ARGV[3])
return {epoch or false, entries}
"#;

/// A resume's read, atomically: the topic's top and epoch (creating its incarnation if there
/// is none, like `ENSURE`: run after SUBSCRIBE), its oldest kept seq, and its kept entries
/// from `from` on: `{seq, epoch, oldest or "", {{id, {field, value, ...}}, ...}}`. The stream
/// is trimmed to the history size, so the read is bounded by it.
///
/// KEYS: meta, stream. ARGV: epoch candidate, meta TTL (ms), from.
pub(super) const RESUME: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local top = tonumber(redis.call('HGET', KEYS[1], 's'))
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local oldest = ''
if first[1] then
  oldest = first[1][1]
end
local entries = redis.call('XRANGE', KEYS[2], ARGV[3] .. '-0', '+')
return {top, epoch, oldest, entries}
"#;

/// The names of one topic's keys and channel. All share one hash tag: the topic itself when
/// it has no braces, else a hash of it (a brace inside a topic would cut the tag short).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TopicKeys {
    /// The hash with the topic's seq (`s`) and epoch (`e`).
    pub meta: String,
    /// The history stream (IDs `seq-0`).
    pub stream: String,
    /// The (shard) pub/sub channel.
    pub channel: String,
}

impl TopicKeys {
    pub(super) fn new(prefix: &str, topic: &str) -> TopicKeys {
        let tag = if topic.contains(['{', '}']) {
            format!("#{:016x}", fnv1a(topic.as_bytes()))
        } else {
            topic.to_string()
        };
        TopicKeys {
            meta: format!("{prefix}:{{{tag}}}:m"),
            stream: format!("{prefix}:{{{tag}}}:h"),
            channel: format!("{prefix}:{{{tag}}}:c"),
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The kind byte of a payload in a channel message and a stream entry.
pub(super) fn kind_of(payload: &Payload) -> &'static str {
    match payload {
        Payload::Json(_) => "j",
        Payload::Binary(_) => "b",
    }
}

/// A payload from its kind byte and bytes (`None`: an unknown kind).
pub(super) fn payload_of(kind: &[u8], data: Bytes) -> Option<Payload> {
    match kind {
        b"j" => Some(Payload::Json(data)),
        b"b" => Some(Payload::Binary(data)),
        _ => None,
    }
}

/// A message as it arrives on a topic's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ChannelMessage {
    pub seq: u64,
    pub epoch: Epoch,
    pub payload: Payload,
}

/// Why a channel message could not be read (someone else published on crier's channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DecodeError {
    UnknownKind,
    BadSeq,
    MissingEpoch,
}

/// Reads `kind seq ":" epoch ":" payload`; the payload is a slice of `bytes`, not a copy.
pub(super) fn decode(bytes: Bytes) -> Result<ChannelMessage, DecodeError> {
    let Some(&kind) = bytes.first() else {
        return Err(DecodeError::UnknownKind);
    };
    let colon = bytes
        .iter()
        .position(|&b| b == b':')
        .ok_or(DecodeError::BadSeq)?;
    let seq = std::str::from_utf8(&bytes[1..colon])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(DecodeError::BadSeq)?;
    let rest = colon + 1;
    let epoch_end = bytes[rest..]
        .iter()
        .position(|&b| b == b':')
        .ok_or(DecodeError::MissingEpoch)?
        + rest;
    let epoch = std::str::from_utf8(&bytes[rest..epoch_end])
        .ok()
        .and_then(|text| Epoch::parse(text).ok())
        .ok_or(DecodeError::MissingEpoch)?;
    let payload =
        payload_of(&[kind], bytes.slice(epoch_end + 1..)).ok_or(DecodeError::UnknownKind)?;
    Ok(ChannelMessage {
        seq,
        epoch,
        payload,
    })
}

/// A stream entry ID `seq-0` read back as its seq.
pub(super) fn seq_of_id(id: &[u8]) -> Option<u64> {
    let dash = id.iter().position(|&b| b == b'-')?;
    std::str::from_utf8(&id[..dash]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topics_keys_share_one_hash_tag() {
        let keys = TopicKeys::new("crier", "chat.room");
        assert_eq!(keys.meta, "crier:{chat.room}:m");
        assert_eq!(keys.stream, "crier:{chat.room}:h");
        assert_eq!(keys.channel, "crier:{chat.room}:c");
        let braces = TopicKeys::new("crier", "a}b{c");
        let tag = |k: &str| k[k.find('{').unwrap()..=k.find('}').unwrap()].to_string();
        assert_eq!(tag(&braces.meta), tag(&braces.stream));
        assert_eq!(tag(&braces.meta), tag(&braces.channel));
        assert!(tag(&braces.meta).len() > 3, "a non-empty tag");
    }

    #[test]
    fn channel_messages_round_trip_and_bad_ones_are_refused() {
        let m = decode(Bytes::from_static(b"j42:Ab3dE9xQ:{\"a\":\"x:y\"}")).unwrap();
        assert_eq!(m.seq, 42);
        assert_eq!(m.epoch.as_str(), "Ab3dE9xQ");
        assert_eq!(
            m.payload,
            Payload::Json(Bytes::from_static(b"{\"a\":\"x:y\"}"))
        );
        let b = decode(Bytes::from_static(b"b7:E:\x00:\xff")).unwrap();
        assert_eq!(b.payload, Payload::Binary(Bytes::from_static(b"\x00:\xff")));
        assert_eq!(decode(Bytes::new()), Err(DecodeError::UnknownKind));
        assert_eq!(
            decode(Bytes::from_static(b"x1:E:d")),
            Err(DecodeError::UnknownKind)
        );
        assert_eq!(
            decode(Bytes::from_static(b"jx:E:d")),
            Err(DecodeError::BadSeq)
        );
        assert_eq!(
            decode(Bytes::from_static(b"j1:E")),
            Err(DecodeError::MissingEpoch)
        );
        assert_eq!(seq_of_id(b"17-0"), Some(17));
        assert_eq!(seq_of_id(b"17"), None);
    }
}
