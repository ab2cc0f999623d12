//! Who may subscribe and publish: JWT connection tokens, their topic grants, the anonymous
//! rules, API keys for the HTTP API, and rate limits. Sans-IO like `proto`: pure functions and
//! small state over bytes and a `now` passed in; no sockets, threads or clocks. Only `setup`
//! reads files, once, at start-up.
//!
//! How the shards use it:
//! - start-up: [`setup::load_policy`] reads the key files into a [`Policy`], shared read-only;
//! - a token arrives (upgrade URL, `Authorization`, or in-band `auth`):
//!   [`Policy::authenticate`] verifies it and compiles its [`Grants`] once; the connection
//!   keeps them in an `Option<Box<Grants>>`;
//! - subscribe / publish: [`Policy::may_subscribe`] / [`Policy::may_publish`] give an
//!   [`Access`]; deliveries are never checked;
//! - the coarse sweep closes connections whose [`Grants::expired`] (4001);
//! - publishes and handshakes take a token from a [`rate::TokenBucket`].
#![forbid(unsafe_code)]

pub mod api_key;
pub mod grant;
pub mod jwt;
pub mod pattern;
pub mod policy;
mod prepared_key;
pub mod rate;
pub mod setup;

pub use api_key::{ApiKeyError, ApiKeys};
pub use grant::{Access, Grants};
pub use jwt::{ClaimRules, Claims, JwtKey, KeyError, TokenError, Verifier};
pub use pattern::{Matcher, PatternError};
pub use policy::{HttpPublishAccess, Policy};
pub use rate::{IpKey, KeyedLimiter, RateDecision, RateLimit, TokenBucket};
pub use setup::{load_policy, open_access_warning, SetupError};

#[cfg(test)]
#[path = "../../tests/common/openssl_jwt.rs"]
mod jwt_test_sign;
