//! Topics: names, which shard owns a topic, each shard's subscriber index and each owner's
//! interest set and sequence numbers. Pure data structures: they return decisions and send
//! nothing, so the event loop stays the only place that does I/O.
#![forbid(unsafe_code)]
