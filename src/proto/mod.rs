//! The sans-IO protocol core: bytes (and a timestamp, where time matters) in, bytes and events
//! out. Nothing in here touches a socket, a thread or a clock, so every rule is unit-tested
//! over byte strings and fuzzed.
//!
//! | file | owns |
//! |---|---|
//! | `error.rs` | `ProtocolError` (→ close code) and `HttpError` (→ status), named after the broken rule |
//! | `http.rs` | bounded HTTP/1.1 request-head parser and `RequestHead` lookups |
//! | `http_body.rs` | body framing (Content-Length / chunked) and a strict sans-IO `BodyReader` |
//! | `http_refusal.rs` | `Refusal`: why a request or connection was refused → status, metric label, response |
//! | `response.rs` | HTTP/1.1 response bytes |
//! | `handshake.rs` | RFC 6455 opening handshake, server and client side |
//! | `frame.rs` | frame header wire format and opcodes |
//! | `mask.rs` | payload masking, word at a time, resumable at any offset |
//! | `utf8.rs` | incremental, fail-fast UTF-8 validation |
//! | `close.rs` | close codes: valid received codes and the ones crier sends |
//! | `prepared.rs` | complete server frames in one `Bytes`, control frames, client frames |
//! | `extension.rs` | the `Sec-WebSocket-Extensions` grammar (RFC 6455 §9.1) |
//! | `permessage_deflate.rs` | permessage-deflate negotiation (RFC 7692 §7.1) |
//! | `deflate.rs` | one message deflated once into a ready RSV1 frame (RFC 7692 §7.2.1) |
//! | `inflate.rs` | inflating received messages under a limit on the inflated size (RFC 7692 §7.2.2) |
//! | `session.rs` | the per-connection decoder state machine |
//! | `command.rs` | pub/sub JSON commands and their error codes |
//! | `envelope.rs` | deliveries, acks, errors and notices as prepared frames |
//! | `query.rs` | percent-decoding and query parameters |
//! | `epoch.rs` | a topic incarnation's epoch and the generator that makes them |
//! | `since.rs` | a client's resume point and its URL form `topic:seq[:epoch]` |
#![forbid(unsafe_code)]

pub mod close;
pub mod command;
pub mod deflate;
pub mod envelope;
pub mod epoch;
pub mod error;
pub mod extension;
pub mod frame;
pub mod handshake;
pub mod http;
pub mod http_body;
pub mod http_refusal;
pub mod inflate;
pub mod mask;
pub mod permessage_deflate;
pub mod prepared;
pub mod query;
pub mod response;
pub mod session;
pub mod since;
pub mod utf8;

#[cfg(test)]
mod tests_prop;

pub use error::{HttpError, ProtocolError};
pub use frame::OpCode;
pub use handshake::{
    accept_key, check_server_response, check_upgrade, client_request, switching_protocols,
    Accepted, ClientHandshakeError, HandshakeError, UpgradePolicy,
};
pub use http::{parse_request_head, HeadLimits, RequestHead};
pub use http_body::{body_framing, BodyFraming, BodyReader};
pub use prepared::{
    build_frame, close_frame, encode_client_frame, ping_frame, pong_frame, prepared_frame,
};
pub use response::{plain_error, response};
pub use session::{Decoded, Event, Role, Session, SessionLimits};
pub use utf8::Utf8Validator;
