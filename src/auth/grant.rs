//! What one connection may do: the compiled `subscribe` and `publish` patterns of its token
//! (or of the anonymous rules) and when they stop being valid. Compiled once when the token
//! arrives; asked at subscribe and publish time, never per delivery. Pure data.

use super::jwt::{Claims, TokenError};
use super::pattern::Matcher;

/// The permissions of a verified token. A connection holds one only while it has a token
/// (`Option<Box<Grants>>`), so connections without one pay a pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    pub subscribe: Matcher,
    pub publish: Matcher,
    /// `exp + leeway`, Unix seconds: after it the connection's token is expired.
    pub valid_until_unix_secs: u64,
}

impl Grants {
    /// Compiles a verified token's patterns with its `sub`.
    pub fn from_claims(claims: &Claims) -> Result<Grants, TokenError> {
        let sub = claims.sub.as_deref();
        Ok(Grants {
            subscribe: Matcher::compile(&claims.subscribe, sub)
                .map_err(|_| TokenError::BadGrant)?,
            publish: Matcher::compile(&claims.publish, sub).map_err(|_| TokenError::BadGrant)?,
            valid_until_unix_secs: claims.valid_until_unix_secs,
        })
    }

    /// Whether the token has expired at `now_unix_secs`.
    pub fn expired(&self, now_unix_secs: u64) -> bool {
        now_unix_secs >= self.valid_until_unix_secs
    }
}

/// What to do with the action a client is asking for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// Auth is on, no valid token, and the anonymous rules do not allow it: `unauthorized`
    /// in-band, 401 over HTTP.
    Unauthorized,
    /// A valid token that does not grant it: `forbidden` in-band, 403 over HTTP.
    Forbidden,
}

impl Access {
    /// The in-band error code (`None` when allowed).
    pub fn code(self) -> Option<&'static str> {
        match self {
            Access::Allowed => None,
            Access::Unauthorized => Some("unauthorized"),
            Access::Forbidden => Some("forbidden"),
        }
    }

    /// The HTTP status of a refusal (`None` when allowed).
    pub fn status(self) -> Option<u16> {
        match self {
            Access::Allowed => None,
            Access::Unauthorized => Some(401),
            Access::Forbidden => Some(403),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: Option<&str>, subscribe: &[&str], publish: &[&str]) -> Claims {
        Claims {
            sub: sub.map(Into::into),
            valid_until_unix_secs: 1000,
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            publish: publish.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn grants_compile_with_the_tokens_sub() {
        let g = Grants::from_claims(&claims(
            Some("7"),
            &["news.*", "user.{sub}.>"],
            &["user.{sub}.out"],
        ))
        .unwrap();
        assert!(g.subscribe.matches("news.x"));
        assert!(g.subscribe.matches("user.7.in"));
        assert!(!g.subscribe.matches("user.8.in"));
        assert!(g.publish.matches("user.7.out"));
        assert!(
            !g.publish.matches("news.x"),
            "subscribe grants do not allow publishing"
        );
        assert!(!g.expired(999));
        assert!(g.expired(1000));
    }

    #[test]
    fn an_invalid_pattern_refuses_the_token() {
        assert_eq!(
            Grants::from_claims(&claims(None, &["news*"], &[])),
            Err(TokenError::BadGrant)
        );
        assert_eq!(
            Grants::from_claims(&claims(None, &[], &["a..b"])),
            Err(TokenError::BadGrant)
        );
    }

    #[test]
    fn refusals_map_to_codes_and_statuses() {
        assert_eq!(Access::Unauthorized.code(), Some("unauthorized"));
        assert_eq!(Access::Forbidden.status(), Some(403));
        assert_eq!(Access::Allowed.status(), None);
    }
}
