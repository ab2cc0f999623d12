//! Why crier refused an HTTP request or a connection, as one value: each [`Refusal`] knows its
//! status, its metric label ([`RefusalReason`], exported as `crier_refusals_total{reason}`)
//! and its response bytes. Status numbers are decided here and nowhere else; the event loop
//! only says which refusal it is. No I/O.

use super::command::ErrorCode;
use super::envelope;
use super::error::HttpError;
use super::handshake::HandshakeError;
use super::response::response;

/// What an `engine_unavailable` answer says, on WebSocket and HTTP alike.
pub const ENGINE_UNAVAILABLE_MESSAGE: &str =
    "the engine's backend (Redis) is unavailable; the message was not published; retry later";

/// What `GET /history` answers under an engine that cannot read history over HTTP.
pub const HISTORY_UNSUPPORTED_MESSAGE: &str =
    "history reads are not available with --engine redis yet";

/// The label of a refusal in `crier_refusals_total{reason="..."}`: a small fixed set, so the
/// metric has bounded cardinality whatever a client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum RefusalReason {
    /// Request syntax the parser refuses, or a missing/duplicate Host (400).
    Malformed,
    /// Request head over `--max-head-bytes`/`--max-headers` (431).
    HeadTooLarge,
    /// Ambiguous or broken body framing: bad Content-Length, Transfer-Encoding with
    /// Content-Length, a bad chunk (400/431/501). The smuggling signals.
    Framing,
    /// A body on a route that takes none (400).
    BodyNotAllowed,
    /// A body over `--max-message-bytes` (413).
    BodyTooLarge,
    /// A WebSocket upgrade missing or breaking a required header (400).
    BadHandshake,
    /// The `Origin` is not in `--allowed-origin` (403).
    Origin,
    /// `Sec-WebSocket-Version` other than 13 (426).
    WebSocketVersion,
    /// A method the route does not allow (405).
    MethodNotAllowed,
    /// No route at this path (404).
    NotFound,
    /// A topic in the URL that breaks the naming rules (400).
    InvalidTopic,
    /// More `?topic=` than `--max-subscriptions-per-connection` (400).
    TooManyTopics,
    /// An HTTP publish whose Content-Type is not JSON or octet-stream (415).
    UnsupportedMediaType,
    /// An HTTP publish whose JSON body does not parse (400).
    InvalidJson,
    /// The topic's owner could not take an HTTP publish (503).
    Overloaded,
    /// The engine's backend (Redis) was unavailable for an HTTP publish (503).
    EngineUnavailable,
    /// A connection accepted over `--max-connections` (503 at accept).
    MaxConnections,
    /// A connection accepted over `--max-connections-per-ip` (503 at accept).
    MaxConnectionsPerIp,
    /// A `/ws?topic=` upgrade over `--max-subscriptions` or `--max-topics` (503).
    LimitReached,
    /// Authentication is on and the request has no valid token or API key (401).
    Unauthorized,
    /// A valid token that does not grant a topic of the request (403).
    Forbidden,
    /// Over `--max-handshake-rate-per-ip` or `--max-publish-rate` (429).
    RateLimited,
}

impl RefusalReason {
    /// Every reason, in declaration order (the index is `reason as usize`).
    pub const ALL: [RefusalReason; 22] = [
        RefusalReason::Malformed,
        RefusalReason::HeadTooLarge,
        RefusalReason::Framing,
        RefusalReason::BodyNotAllowed,
        RefusalReason::BodyTooLarge,
        RefusalReason::BadHandshake,
        RefusalReason::Origin,
        RefusalReason::WebSocketVersion,
        RefusalReason::MethodNotAllowed,
        RefusalReason::NotFound,
        RefusalReason::InvalidTopic,
        RefusalReason::TooManyTopics,
        RefusalReason::UnsupportedMediaType,
        RefusalReason::InvalidJson,
        RefusalReason::Overloaded,
        RefusalReason::EngineUnavailable,
        RefusalReason::MaxConnections,
        RefusalReason::MaxConnectionsPerIp,
        RefusalReason::LimitReached,
        RefusalReason::Unauthorized,
        RefusalReason::Forbidden,
        RefusalReason::RateLimited,
    ];

    /// How many reasons there are.
    pub const COUNT: usize = RefusalReason::ALL.len();

    /// The metric label value (`snake_case`).
    pub fn label(self) -> &'static str {
        match self {
            RefusalReason::Malformed => "malformed",
            RefusalReason::HeadTooLarge => "head_too_large",
            RefusalReason::Framing => "framing",
            RefusalReason::BodyNotAllowed => "body_not_allowed",
            RefusalReason::BodyTooLarge => "body_too_large",
            RefusalReason::BadHandshake => "bad_handshake",
            RefusalReason::Origin => "origin",
            RefusalReason::WebSocketVersion => "websocket_version",
            RefusalReason::MethodNotAllowed => "method_not_allowed",
            RefusalReason::NotFound => "not_found",
            RefusalReason::InvalidTopic => "invalid_topic",
            RefusalReason::TooManyTopics => "too_many_topics",
            RefusalReason::UnsupportedMediaType => "unsupported_media_type",
            RefusalReason::InvalidJson => "invalid_json",
            RefusalReason::Overloaded => "overloaded",
            RefusalReason::EngineUnavailable => "engine_unavailable",
            RefusalReason::MaxConnections => "max_connections",
            RefusalReason::MaxConnectionsPerIp => "max_connections_per_ip",
            RefusalReason::LimitReached => "limit_reached",
            RefusalReason::Unauthorized => "unauthorized",
            RefusalReason::Forbidden => "forbidden",
            RefusalReason::RateLimited => "rate_limited",
        }
    }
}

/// Why a request or connection was refused. Every refusal closes the connection after its
/// response (`Connection: close`): what follows a refused request cannot be trusted to start
/// a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request head or its framing broke RFC 9112, or one of our head/body limits.
    Http(HttpError),
    /// The WebSocket upgrade broke RFC 6455 §4.2.1, or the origin policy.
    Handshake(HandshakeError),
    /// A `?topic=` of a `/ws` upgrade that is not a valid topic; the text says why (400).
    InvalidTopicQuery(String),
    /// More distinct `?topic=` than one connection may subscribe to (400).
    TooManyTopics { asked: usize, max: usize },
    /// No route at this path (404).
    NotFound,
    /// A method other than GET on a GET-only route (405, `Allow: GET`).
    GetOnly,
    /// `/publish/<topic>` with a method other than POST (405, `Allow: POST`).
    PublishMethod,
    /// The topic of `/publish/<topic>` is not valid; the text says why (400, JSON).
    PublishTopic(String),
    /// An HTTP publish with a Content-Type other than JSON or octet-stream (415, JSON).
    PublishMediaType,
    /// An HTTP publish body whose framing or size is refused (400/413/431/501, JSON).
    PublishBody(HttpError),
    /// An `application/json` publish body that does not parse; the text says why (400, JSON).
    PublishJson(String),
    /// The topic's owner refused the publish (its inbox was full); the text says why (503,
    /// JSON `overloaded`).
    PublishOverloaded(String),
    /// The topic of `/history/<topic>` is not valid; the text says why (400, JSON).
    HistoryTopic(String),
    /// A `/history` query parameter (`since`, `limit`) that is not a whole number, or given
    /// twice; the text says why (400, JSON `invalid_command`).
    HistoryQuery(String),
    /// The topic's owner could not take a history read (its inbox was full) (503, JSON
    /// `overloaded`).
    HistoryOverloaded(String),
    /// `GET /history` without the subscribe permission: no valid token or API key, and the
    /// anonymous rules do not cover the topic; the text says why (401, JSON `unauthorized`).
    HistoryUnauthorized(&'static str),
    /// `GET /history` with a token that does not grant subscribing to the topic (403, JSON
    /// `forbidden`).
    HistoryForbidden,
    /// The engine cannot read history over HTTP (`--engine redis`, today) (501, JSON
    /// `engine_unavailable`).
    HistoryUnsupported,
    /// The engine's backend (Redis) is unavailable (503, JSON `engine_unavailable`).
    PublishEngineUnavailable,
    /// Accepted over `--max-connections`: answered at accept time, before any request (503).
    TooManyConnections,
    /// Accepted over `--max-connections-per-ip` (503).
    TooManyConnectionsFromAddress,
    /// A `/ws?topic=` upgrade whose subscriptions would pass `--max-subscriptions` or
    /// `--max-topics`; the text says which (503).
    LimitReached(String),
    /// A `/ws` upgrade without a valid token for its `?topic=` list; the short reason
    /// (`token expired`, `bad signature`...) is the body (401, `WWW-Authenticate: Bearer`).
    Unauthorized(&'static str),
    /// A `/ws` upgrade whose valid token does not grant one of its `?topic=` (403).
    Forbidden(String),
    /// `POST /publish` without an accepted API key or token (401, `WWW-Authenticate: Bearer`, JSON).
    PublishUnauthorized(&'static str),
    /// `POST /publish` with a valid token that does not grant the topic (403, JSON).
    PublishForbidden,
    /// A `/ws` upgrade over `--max-handshake-rate-per-ip` for its address (429, `Retry-After`).
    HandshakeRateLimited,
    /// `POST /publish` over `--max-publish-rate` on its connection (429, JSON `rate_limited`).
    /// The body has been read, so this one may keep the connection open
    /// ([`Refusal::response_keeping`]).
    PublishRateLimited,
}

impl Refusal {
    /// The response status (RFC 9110 §15).
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Http(error) | Refusal::PublishBody(error) => error.status(),
            Refusal::Handshake(error) => error.status(),
            Refusal::InvalidTopicQuery(_)
            | Refusal::TooManyTopics { .. }
            | Refusal::PublishTopic(_)
            | Refusal::PublishJson(_)
            | Refusal::HistoryTopic(_)
            | Refusal::HistoryQuery(_) => 400,
            Refusal::NotFound => 404,
            Refusal::GetOnly | Refusal::PublishMethod => 405,
            Refusal::PublishMediaType => 415,
            Refusal::PublishOverloaded(_)
            | Refusal::HistoryOverloaded(_)
            | Refusal::PublishEngineUnavailable
            | Refusal::TooManyConnections
            | Refusal::TooManyConnectionsFromAddress
            | Refusal::LimitReached(_) => 503,
            Refusal::Unauthorized(_)
            | Refusal::PublishUnauthorized(_)
            | Refusal::HistoryUnauthorized(_) => 401,
            Refusal::Forbidden(_) | Refusal::PublishForbidden | Refusal::HistoryForbidden => 403,
            Refusal::HistoryUnsupported => 501,
            Refusal::HandshakeRateLimited | Refusal::PublishRateLimited => 429,
        }
    }

    /// The `crier_refusals_total` label this refusal is counted under.
    pub fn reason(&self) -> RefusalReason {
        match self {
            Refusal::Http(error) | Refusal::PublishBody(error) => http_error_reason(error),
            Refusal::Handshake(error) => match error {
                HandshakeError::MethodNotAllowed => RefusalReason::MethodNotAllowed,
                HandshakeError::UnsupportedVersion => RefusalReason::WebSocketVersion,
                HandshakeError::OriginNotAllowed => RefusalReason::Origin,
                HandshakeError::HttpVersionTooOld
                | HandshakeError::MissingUpgrade
                | HandshakeError::MissingConnectionUpgrade
                | HandshakeError::MissingKey
                | HandshakeError::BadKey => RefusalReason::BadHandshake,
            },
            Refusal::InvalidTopicQuery(_) | Refusal::PublishTopic(_) | Refusal::HistoryTopic(_) => {
                RefusalReason::InvalidTopic
            }
            // A query parameter that is not what the route takes: a malformed request.
            Refusal::HistoryQuery(_) => RefusalReason::Malformed,
            Refusal::TooManyTopics { .. } => RefusalReason::TooManyTopics,
            Refusal::NotFound => RefusalReason::NotFound,
            Refusal::GetOnly | Refusal::PublishMethod => RefusalReason::MethodNotAllowed,
            Refusal::PublishMediaType => RefusalReason::UnsupportedMediaType,
            Refusal::PublishJson(_) => RefusalReason::InvalidJson,
            Refusal::PublishOverloaded(_) | Refusal::HistoryOverloaded(_) => {
                RefusalReason::Overloaded
            }
            Refusal::PublishEngineUnavailable => RefusalReason::EngineUnavailable,
            Refusal::TooManyConnections => RefusalReason::MaxConnections,
            Refusal::TooManyConnectionsFromAddress => RefusalReason::MaxConnectionsPerIp,
            Refusal::LimitReached(_) => RefusalReason::LimitReached,
            Refusal::Unauthorized(_)
            | Refusal::PublishUnauthorized(_)
            | Refusal::HistoryUnauthorized(_) => RefusalReason::Unauthorized,
            Refusal::Forbidden(_) | Refusal::PublishForbidden | Refusal::HistoryForbidden => {
                RefusalReason::Forbidden
            }
            Refusal::HistoryUnsupported => RefusalReason::EngineUnavailable,
            Refusal::HandshakeRateLimited | Refusal::PublishRateLimited => {
                RefusalReason::RateLimited
            }
        }
    }

    /// Whether this refused an HTTP publish (`/publish/<topic>`): those are not handshake
    /// failures, and they answer in JSON.
    pub fn is_publish(&self) -> bool {
        matches!(
            self,
            Refusal::PublishMethod
                | Refusal::PublishTopic(_)
                | Refusal::PublishMediaType
                | Refusal::PublishBody(_)
                | Refusal::PublishJson(_)
                | Refusal::PublishOverloaded(_)
                | Refusal::PublishUnauthorized(_)
                | Refusal::PublishForbidden
                | Refusal::PublishRateLimited
                | Refusal::PublishEngineUnavailable
        )
    }

    /// Whether this refused a `GET /history/<topic>`: not a handshake failure, and answered
    /// in JSON like a publish refusal.
    pub fn is_history(&self) -> bool {
        matches!(
            self,
            Refusal::HistoryTopic(_)
                | Refusal::HistoryQuery(_)
                | Refusal::HistoryOverloaded(_)
                | Refusal::HistoryUnauthorized(_)
                | Refusal::HistoryForbidden
                | Refusal::HistoryUnsupported
        )
    }

    /// The complete response, closing the connection: publish refusals carry the JSON error
    /// body of docs/protocol.md (`{"code":...,"message":...}`), the rest a line of text.
    pub fn response(&self) -> Vec<u8> {
        self.response_keeping(false)
    }

    /// The response, saying `Connection: close` unless `keep_alive`: only for a refusal that
    /// comes after the whole request was read (so nothing of it is left to misparse).
    pub fn response_keeping(&self, keep_alive: bool) -> Vec<u8> {
        let status = self.status();
        let extra: &[(&str, &str)] = match self {
            Refusal::Handshake(error) => return error.response(),
            Refusal::GetOnly => &[("Allow", "GET")],
            Refusal::PublishMethod => &[("Allow", "POST")],
            // RFC 9110 §10.2.3: when to try again; a second is short enough not to matter and
            // long enough that a retry loop does not hammer a full broker.
            Refusal::TooManyConnections
            | Refusal::TooManyConnectionsFromAddress
            | Refusal::HandshakeRateLimited
            | Refusal::PublishRateLimited => &[("Retry-After", "1")],
            // RFC 6750 §3: a 401 names the scheme the client should use.
            Refusal::Unauthorized(_)
            | Refusal::PublishUnauthorized(_)
            | Refusal::HistoryUnauthorized(_) => &[("WWW-Authenticate", "Bearer")],
            _ => &[],
        };
        let message = self.message();
        match self.error_code() {
            Some(code) => {
                let body = envelope::http_error_body(code, &message);
                response(status, extra, "application/json", &body, keep_alive)
            }
            None => {
                let body = format!("{message}\n");
                response(
                    status,
                    extra,
                    "text/plain; charset=utf-8",
                    body.as_bytes(),
                    keep_alive,
                )
            }
        }
    }

    /// The JSON error code of a publish or history refusal; `None` for the plain-text ones.
    fn error_code(&self) -> Option<ErrorCode> {
        Some(match self {
            Refusal::PublishTopic(_) => ErrorCode::InvalidTopic,
            Refusal::PublishBody(HttpError::PayloadTooLarge) => ErrorCode::MessageTooLarge,
            Refusal::PublishBody(_) | Refusal::PublishMediaType => ErrorCode::InvalidCommand,
            Refusal::PublishJson(_) => ErrorCode::InvalidJson,
            Refusal::PublishOverloaded(_) | Refusal::HistoryOverloaded(_) => ErrorCode::Overloaded,
            Refusal::HistoryTopic(_) => ErrorCode::InvalidTopic,
            Refusal::HistoryQuery(_) => ErrorCode::InvalidCommand,
            Refusal::PublishUnauthorized(_) => ErrorCode::Unauthorized,
            Refusal::PublishForbidden => ErrorCode::Forbidden,
            Refusal::PublishEngineUnavailable | Refusal::HistoryUnsupported => {
                ErrorCode::EngineUnavailable
            }
            Refusal::HistoryUnauthorized(_) => ErrorCode::Unauthorized,
            Refusal::HistoryForbidden => ErrorCode::Forbidden,
            Refusal::PublishRateLimited => ErrorCode::RateLimited,
            _ => return None,
        })
    }

    /// The human-readable text of the response.
    fn message(&self) -> String {
        match self {
            Refusal::Http(error) | Refusal::PublishBody(error) => error.to_string(),
            Refusal::Handshake(error) => error.to_string(),
            Refusal::InvalidTopicQuery(why)
            | Refusal::PublishOverloaded(why)
            | Refusal::HistoryQuery(why)
            | Refusal::HistoryOverloaded(why)
            | Refusal::LimitReached(why) => why.clone(),
            Refusal::TooManyTopics { asked, max } => {
                format!("{asked} topics asked for; at most {max} per connection")
            }
            Refusal::NotFound => "no such path".to_string(),
            Refusal::GetOnly | Refusal::PublishMethod => "method not allowed".to_string(),
            Refusal::PublishTopic(why) | Refusal::HistoryTopic(why) => {
                format!("invalid topic: {why}")
            }
            Refusal::PublishMediaType => {
                "Content-Type must be application/json or application/octet-stream".to_string()
            }
            Refusal::PublishJson(why) => format!("body is not valid JSON: {why}"),
            Refusal::TooManyConnections => "too many connections; try again later".to_string(),
            Refusal::PublishEngineUnavailable => ENGINE_UNAVAILABLE_MESSAGE.to_string(),
            Refusal::TooManyConnectionsFromAddress => {
                "too many connections from your address; try again later".to_string()
            }
            Refusal::Unauthorized(why)
            | Refusal::PublishUnauthorized(why)
            | Refusal::HistoryUnauthorized(why) => why.to_string(),
            Refusal::HistoryForbidden => {
                "the token does not grant subscribing to this topic".to_string()
            }
            Refusal::HistoryUnsupported => HISTORY_UNSUPPORTED_MESSAGE.to_string(),
            Refusal::Forbidden(topic) => format!("the token does not grant topic {topic:?}"),
            Refusal::PublishForbidden => {
                "the token does not grant publishing to this topic".to_string()
            }
            Refusal::HandshakeRateLimited => {
                "too many WebSocket handshakes from your address; try again later".to_string()
            }
            Refusal::PublishRateLimited => {
                "over --max-publish-rate on this connection; slow down".to_string()
            }
        }
    }
}

fn http_error_reason(error: &HttpError) -> RefusalReason {
    match error {
        HttpError::Malformed(_) | HttpError::MissingHost | HttpError::DuplicateHost => {
            RefusalReason::Malformed
        }
        HttpError::HeadTooLarge | HttpError::TooManyHeaders => RefusalReason::HeadTooLarge,
        HttpError::InvalidContentLength
        | HttpError::ConflictingFraming
        | HttpError::InvalidTransferEncoding
        | HttpError::UnsupportedTransferCoding
        | HttpError::InvalidChunk(_)
        | HttpError::TrailerTooLarge => RefusalReason::Framing,
        HttpError::BodyNotAllowed => RefusalReason::BodyNotAllowed,
        HttpError::PayloadTooLarge => RefusalReason::BodyTooLarge,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(bytes: &[u8]) -> (u16, String, String) {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        let len = match response.parse(bytes).unwrap() {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => panic!("incomplete response"),
        };
        let fields = response
            .headers
            .iter()
            .map(|h| format!("{}: {}\n", h.name, String::from_utf8_lossy(h.value)))
            .collect();
        let body = String::from_utf8(bytes[len..].to_vec()).unwrap();
        (response.code.unwrap(), fields, body)
    }

    #[test]
    fn labels_are_distinct_and_in_order() {
        for (index, reason) in RefusalReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index);
        }
        let mut labels: Vec<_> = RefusalReason::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), RefusalReason::COUNT);
    }

    #[test]
    fn every_response_closes_and_states_its_status() {
        let all = [
            Refusal::Http(HttpError::HeadTooLarge),
            Refusal::Http(HttpError::BodyNotAllowed),
            Refusal::Handshake(HandshakeError::UnsupportedVersion),
            Refusal::InvalidTopicQuery("bad".into()),
            Refusal::TooManyTopics { asked: 3, max: 2 },
            Refusal::NotFound,
            Refusal::GetOnly,
            Refusal::PublishMethod,
            Refusal::PublishTopic("empty".into()),
            Refusal::PublishMediaType,
            Refusal::PublishBody(HttpError::PayloadTooLarge),
            Refusal::PublishJson("eof".into()),
            Refusal::PublishOverloaded("inbox full".into()),
            Refusal::HistoryTopic("empty".into()),
            Refusal::HistoryQuery("limit".into()),
            Refusal::HistoryOverloaded("inbox full".into()),
            Refusal::HistoryUnauthorized("token required"),
            Refusal::HistoryForbidden,
            Refusal::HistoryUnsupported,
            Refusal::TooManyConnections,
            Refusal::TooManyConnectionsFromAddress,
            Refusal::LimitReached("the server holds its maximum of 5 topics".into()),
            Refusal::HandshakeRateLimited,
            Refusal::PublishRateLimited,
        ];
        for refusal in &all {
            let (status, fields, body) = parsed(&refusal.response());
            assert_eq!(status, refusal.status(), "{refusal:?}");
            assert!(fields.contains("Connection: close\n"), "{refusal:?}");
            assert!(!body.is_empty(), "{refusal:?}");
            if (refusal.is_publish() || refusal.is_history()) && refusal.status() != 405 {
                let json: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert!(json["code"].is_string(), "{refusal:?}: {body}");
            }
        }
    }

    #[test]
    fn statuses_reasons_and_codes() {
        let cases: [(Refusal, u16, &str); 8] = [
            (Refusal::Http(HttpError::ConflictingFraming), 400, "framing"),
            (
                Refusal::Http(HttpError::BodyNotAllowed),
                400,
                "body_not_allowed",
            ),
            (
                Refusal::Handshake(HandshakeError::OriginNotAllowed),
                403,
                "origin",
            ),
            (Refusal::PublishMethod, 405, "method_not_allowed"),
            (
                Refusal::PublishBody(HttpError::PayloadTooLarge),
                413,
                "body_too_large",
            ),
            (Refusal::PublishMediaType, 415, "unsupported_media_type"),
            (Refusal::TooManyConnections, 503, "max_connections"),
            (
                Refusal::TooManyConnectionsFromAddress,
                503,
                "max_connections_per_ip",
            ),
        ];
        for (refusal, status, label) in cases {
            assert_eq!(refusal.status(), status, "{refusal:?}");
            assert_eq!(refusal.reason().label(), label, "{refusal:?}");
        }
        let (_, fields, body) =
            parsed(&Refusal::PublishBody(HttpError::PayloadTooLarge).response());
        assert!(fields.contains("Content-Type: application/json"));
        assert!(body.contains(r#""code":"message_too_large""#), "{body}");
        let (_, fields, _) = parsed(&Refusal::TooManyConnections.response());
        assert!(fields.contains("Retry-After: 1\n"), "{fields}");
        assert!(!Refusal::NotFound.is_publish());
        assert!(Refusal::PublishOverloaded(String::new()).is_publish());
    }

    #[test]
    fn a_rate_limited_publish_may_keep_the_connection() {
        let (status, fields, body) = parsed(&Refusal::PublishRateLimited.response_keeping(true));
        assert_eq!(status, 429);
        assert!(!fields.contains("Connection: close"), "{fields}");
        assert!(fields.contains("Retry-After: 1\n"), "{fields}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["code"], "rate_limited");
    }
}
