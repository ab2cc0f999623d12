//! The broker's authorization policy: the JWT verifier, the anonymous rules, the API keys and
//! the rate limits, fixed at start-up and shared read-only by every shard. It answers the
//! questions the shards ask at upgrade, subscribe and publish time; it never runs per
//! delivery. Pure: tokens and `now` in, decisions out.

use super::api_key::ApiKeys;
use super::grant::{Access, Grants};
use super::jwt::{TokenError, Verifier};
use super::pattern::Matcher;
use super::rate::RateLimit;

/// Everything the shards need to decide who may do what.
#[derive(Debug)]
pub struct Policy {
    pub(crate) verifier: Verifier,
    pub(crate) anonymous_subscribe: Matcher,
    pub(crate) anonymous_publish: Matcher,
    pub(crate) api_keys: Option<ApiKeys>,
    pub(crate) publish_rate: Option<RateLimit>,
    pub(crate) handshake_rate_per_ip: Option<RateLimit>,
}

/// The answer to `POST /publish`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpPublishAccess {
    Allowed,
    /// 401 with `WWW-Authenticate: Bearer` and this short reason as the body.
    Unauthorized(&'static str),
    /// 403: a valid token without a publish grant for the topic.
    Forbidden,
}

impl Policy {
    /// A policy from its parts (the configuration loader in `setup` reads the files).
    pub fn new(
        verifier: Verifier,
        anonymous_subscribe: Matcher,
        anonymous_publish: Matcher,
        api_keys: Option<ApiKeys>,
        publish_rate: Option<RateLimit>,
        handshake_rate_per_ip: Option<RateLimit>,
    ) -> Policy {
        Policy {
            verifier,
            anonymous_subscribe,
            anonymous_publish,
            api_keys,
            publish_rate,
            handshake_rate_per_ip,
        }
    }

    /// Today's open broker: no keys, no limits.
    pub fn open() -> Policy {
        Policy::new(
            Verifier::new(Vec::new(), Default::default()),
            Matcher::none(),
            Matcher::none(),
            None,
            None,
            None,
        )
    }

    /// Whether WebSocket clients need a token (a JWT key is configured).
    pub fn tokens_required(&self) -> bool {
        self.verifier.has_keys()
    }

    /// Whether the HTTP publish API needs an API key or token.
    pub fn api_key_required(&self) -> bool {
        self.api_keys.is_some()
    }

    pub fn publish_rate(&self) -> Option<RateLimit> {
        self.publish_rate
    }

    pub fn handshake_rate_per_ip(&self) -> Option<RateLimit> {
        self.handshake_rate_per_ip
    }

    /// Verifies a token and compiles its grants (once per token, not per check).
    pub fn authenticate(&self, token: &[u8], now_unix_secs: u64) -> Result<Grants, TokenError> {
        let claims = self.verifier.verify(token, now_unix_secs)?;
        Grants::from_claims(&claims)
    }

    /// May a connection holding `grants` (None: no valid token) subscribe to `topic`?
    pub fn may_subscribe(
        &self,
        grants: Option<&Grants>,
        topic: &str,
        now_unix_secs: u64,
    ) -> Access {
        self.decide(
            grants,
            now_unix_secs,
            topic,
            |g| &g.subscribe,
            &self.anonymous_subscribe,
        )
    }

    /// May a connection holding `grants` publish to `topic`?
    pub fn may_publish(&self, grants: Option<&Grants>, topic: &str, now_unix_secs: u64) -> Access {
        self.decide(
            grants,
            now_unix_secs,
            topic,
            |g| &g.publish,
            &self.anonymous_publish,
        )
    }

    fn decide(
        &self,
        grants: Option<&Grants>,
        now_unix_secs: u64,
        topic: &str,
        granted: impl Fn(&Grants) -> &Matcher,
        anonymous: &Matcher,
    ) -> Access {
        if !self.tokens_required() {
            return Access::Allowed;
        }
        // What anyone may do, a token holder may do too.
        if anonymous.matches(topic) {
            return Access::Allowed;
        }
        match grants.filter(|g| !g.expired(now_unix_secs)) {
            Some(g) if granted(g).matches(topic) => Access::Allowed,
            Some(_) => Access::Forbidden,
            None => Access::Unauthorized,
        }
    }

    /// `POST /publish/<topic>` with this `Authorization: Bearer` value (if any).
    ///
    /// - Nothing configured: allowed, as before.
    /// - An API key file: the bearer must be one of its keys, or a JWT with a publish grant
    ///   for the topic; nothing else, not even the anonymous rules (the API is for backends).
    /// - Only JWT keys: a JWT with a publish grant, or the anonymous publish rules.
    pub fn may_publish_http(
        &self,
        bearer: Option<&[u8]>,
        topic: &str,
        now_unix_secs: u64,
    ) -> HttpPublishAccess {
        if let (Some(keys), Some(bearer)) = (&self.api_keys, bearer) {
            if keys.accepts(bearer) {
                return HttpPublishAccess::Allowed;
            }
        }
        if !self.tokens_required() {
            return match (&self.api_keys, bearer) {
                (None, _) => HttpPublishAccess::Allowed,
                (Some(_), None) => HttpPublishAccess::Unauthorized("API key required"),
                (Some(_), Some(_)) => HttpPublishAccess::Unauthorized("invalid API key"),
            };
        }
        let Some(bearer) = bearer else {
            if self.api_keys.is_none() && self.anonymous_publish.matches(topic) {
                return HttpPublishAccess::Allowed;
            }
            return HttpPublishAccess::Unauthorized(TokenError::Missing.reason());
        };
        match self.authenticate(bearer, now_unix_secs) {
            Ok(grants) if grants.publish.matches(topic) => HttpPublishAccess::Allowed,
            Ok(_) if self.api_keys.is_none() && self.anonymous_publish.matches(topic) => {
                HttpPublishAccess::Allowed
            }
            Ok(_) => HttpPublishAccess::Forbidden,
            // A bearer that is neither a key nor a token: say "invalid API key" when keys are
            // what this API expects and the bearer does not even look like a JWT.
            Err(TokenError::Malformed) if self.api_keys.is_some() => {
                HttpPublishAccess::Unauthorized("invalid API key")
            }
            Err(e) => HttpPublishAccess::Unauthorized(e.reason()),
        }
    }

    /// `GET /history/<topic>` with this `Authorization: Bearer` value (if any): the subscribe
    /// permission a WebSocket needs for the topic, since a resume replays the same messages.
    ///
    /// - No JWT keys: allowed, like every WebSocket subscribe.
    /// - JWT keys: one of the API keys (when `--api-key-file` is set), a JWT with a subscribe
    ///   grant for the topic, or the anonymous subscribe rules.
    pub fn may_read_history_http(
        &self,
        bearer: Option<&[u8]>,
        topic: &str,
        now_unix_secs: u64,
    ) -> HttpPublishAccess {
        if !self.tokens_required() {
            return HttpPublishAccess::Allowed;
        }
        if let (Some(keys), Some(bearer)) = (&self.api_keys, bearer) {
            if keys.accepts(bearer) {
                return HttpPublishAccess::Allowed;
            }
        }
        let grants = match bearer.map(|b| self.authenticate(b, now_unix_secs)) {
            None => None,
            Some(Ok(grants)) => Some(grants),
            Some(Err(TokenError::Malformed)) if self.api_keys.is_some() => {
                return HttpPublishAccess::Unauthorized("invalid API key")
            }
            Some(Err(e)) => return HttpPublishAccess::Unauthorized(e.reason()),
        };
        match self.may_subscribe(grants.as_ref(), topic, now_unix_secs) {
            Access::Allowed => HttpPublishAccess::Allowed,
            Access::Forbidden => HttpPublishAccess::Forbidden,
            Access::Unauthorized => HttpPublishAccess::Unauthorized(TokenError::Missing.reason()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::jwt::{ClaimRules, JwtKey};
    use super::super::jwt_test_sign::{fixture, sign, Signer};
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_750_000_000;
    const API_KEY: &str = "backend-key-0123456789";

    fn policy(anon_sub: &[&str], anon_pub: &[&str], api_keys: bool) -> Policy {
        let secret = std::fs::read(fixture("hs.secret")).unwrap();
        Policy::new(
            Verifier::new(
                vec![JwtKey::secret(None, &secret).unwrap()],
                ClaimRules::default(),
            ),
            Matcher::compile_anonymous(anon_sub).unwrap(),
            Matcher::compile_anonymous(anon_pub).unwrap(),
            api_keys.then(|| ApiKeys::parse(API_KEY).unwrap()),
            None,
            None,
        )
    }

    fn token(claims: serde_json::Value) -> String {
        sign(Signer::Hs(256, "hs.secret"), None, &claims)
    }

    #[test]
    fn an_open_policy_allows_everything() {
        let p = Policy::open();
        assert!(!p.tokens_required());
        assert_eq!(p.may_subscribe(None, "a", NOW), Access::Allowed);
        assert_eq!(p.may_publish(None, "a", NOW), Access::Allowed);
        assert_eq!(
            p.may_publish_http(None, "a", NOW),
            HttpPublishAccess::Allowed
        );
    }

    #[test]
    fn the_grant_matrix() {
        let p = policy(&["public.*"], &[], false);
        let t = token(json!({ "sub": "7", "exp": NOW + 60,
            "subscribe": ["news.*", "user.{sub}.>"], "publish": ["chat.>"] }));
        let g = p.authenticate(t.as_bytes(), NOW).unwrap();
        let g = Some(&g);
        let sub = |topic| p.may_subscribe(g, topic, NOW);
        let publ = |topic| p.may_publish(g, topic, NOW);
        assert_eq!(sub("news.a"), Access::Allowed);
        assert_eq!(sub("news.a.b"), Access::Forbidden, "* is one segment");
        assert_eq!(sub("user.7.inbox"), Access::Allowed);
        assert_eq!(sub("user.7.a.b"), Access::Allowed, "> is one or more");
        assert_eq!(sub("user.7"), Access::Forbidden);
        assert_eq!(
            sub("user.8.inbox"),
            Access::Forbidden,
            "{{sub}} is this token's"
        );
        assert_eq!(
            sub("public.x"),
            Access::Allowed,
            "anonymous rules apply to everyone"
        );
        assert_eq!(publ("chat.room1"), Access::Allowed);
        assert_eq!(publ("news.a"), Access::Forbidden);
        // Without a token: the anonymous rules or unauthorized.
        assert_eq!(p.may_subscribe(None, "public.x", NOW), Access::Allowed);
        assert_eq!(p.may_subscribe(None, "news.a", NOW), Access::Unauthorized);
        assert_eq!(p.may_publish(None, "public.x", NOW), Access::Unauthorized);
        // After exp + leeway the grants count for nothing.
        assert_eq!(p.may_subscribe(g, "news.a", NOW + 61), Access::Unauthorized);
    }

    #[test]
    fn http_publish_with_and_without_api_keys() {
        let t = token(json!({ "exp": NOW + 60, "publish": ["alerts.>"] }));
        let keyed = policy(&[], &["open"], true);
        let ok = HttpPublishAccess::Allowed;
        assert_eq!(
            keyed.may_publish_http(Some(API_KEY.as_bytes()), "x", NOW),
            ok
        );
        assert_eq!(
            keyed.may_publish_http(Some(t.as_bytes()), "alerts.a", NOW),
            ok
        );
        assert_eq!(
            keyed.may_publish_http(Some(t.as_bytes()), "x", NOW),
            HttpPublishAccess::Forbidden
        );
        assert_eq!(
            keyed.may_publish_http(None, "open", NOW),
            HttpPublishAccess::Unauthorized("token required")
        );
        assert_eq!(
            keyed.may_publish_http(Some(b"guess"), "x", NOW),
            HttpPublishAccess::Unauthorized("invalid API key")
        );

        let tokens_only = policy(&[], &["open"], false);
        assert_eq!(tokens_only.may_publish_http(None, "open", NOW), ok);
        assert_eq!(
            tokens_only.may_publish_http(None, "x", NOW),
            HttpPublishAccess::Unauthorized("token required")
        );
        assert_eq!(
            tokens_only.may_publish_http(Some(API_KEY.as_bytes()), "x", NOW),
            HttpPublishAccess::Unauthorized("malformed token")
        );
        let expired = token(json!({ "exp": NOW - 100, "publish": ["x"] }));
        assert_eq!(
            tokens_only.may_publish_http(Some(expired.as_bytes()), "x", NOW),
            HttpPublishAccess::Unauthorized("token expired")
        );

        let keys_only = Policy::new(
            Verifier::new(Vec::new(), ClaimRules::default()),
            Matcher::none(),
            Matcher::none(),
            Some(ApiKeys::parse(API_KEY).unwrap()),
            None,
            None,
        );
        assert_eq!(
            keys_only.may_publish_http(Some(API_KEY.as_bytes()), "x", NOW),
            ok
        );
        assert_eq!(
            keys_only.may_publish_http(None, "x", NOW),
            HttpPublishAccess::Unauthorized("API key required")
        );
        assert_eq!(
            keys_only.may_publish_http(Some(b"nope"), "x", NOW),
            HttpPublishAccess::Unauthorized("invalid API key")
        );
        // WebSockets stay open when only the API has keys.
        assert_eq!(keys_only.may_publish(None, "x", NOW), Access::Allowed);
    }

    #[test]
    fn http_history_needs_the_subscribe_permission() {
        let t = token(json!({ "exp": NOW + 60, "subscribe": ["news.*"], "publish": ["x"] }));
        let ok = HttpPublishAccess::Allowed;
        let keyed = policy(&["public.*"], &[], true);
        let read = |bearer: Option<&[u8]>, topic| keyed.may_read_history_http(bearer, topic, NOW);
        assert_eq!(read(Some(t.as_bytes()), "news.a"), ok);
        assert_eq!(
            read(Some(t.as_bytes()), "x"),
            HttpPublishAccess::Forbidden,
            "a publish grant is not a subscribe grant"
        );
        assert_eq!(read(Some(API_KEY.as_bytes()), "x"), ok);
        assert_eq!(read(None, "public.a"), ok, "the anonymous subscribe rules");
        assert_eq!(
            read(None, "news.a"),
            HttpPublishAccess::Unauthorized("token required")
        );
        assert_eq!(
            read(Some(b"guess"), "news.a"),
            HttpPublishAccess::Unauthorized("invalid API key")
        );
        let expired = token(json!({ "exp": NOW - 100, "subscribe": ["news.*"] }));
        assert_eq!(
            read(Some(expired.as_bytes()), "news.a"),
            HttpPublishAccess::Unauthorized("token expired")
        );
        // No JWT keys: WebSockets subscribe freely, so history is open too.
        assert_eq!(Policy::open().may_read_history_http(None, "x", NOW), ok);
    }
}
