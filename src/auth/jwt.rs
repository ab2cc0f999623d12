//! Verification of JWT connection tokens (RFC 7519, compact JWS of RFC 7515): the configured
//! keys, the choice of key by `kid` and `alg`, the signature, and the claims crier reads.
//! Pure: bytes and `now` (Unix seconds) in, [`Claims`] or a [`TokenError`] out. No files (the
//! caller reads key files at start-up), no clock, no I/O.
//!
//! Key files are parsed by `jsonwebtoken`'s PEM reader, once, into a `PreparedKey` (an RSA
//! key, an EC or Ed25519 point, keyed HMAC states) whose check is the same RustCrypto call
//! jsonwebtoken's `rust_crypto` backend makes, without rebuilding the key for every token.
//! Everything around it (header, key choice, time and audience rules) is here, so the rules
//! are crier's and `now` is an argument.
//!
//! Algorithm policy: a key accepts only its own family's algorithms (an HMAC secret: HS256,
//! HS384, HS512; an RSA key: RS256/384/512 and PS256/384/512; a P-256 key: ES256; a P-384 key:
//! ES384; an Ed25519 key: EdDSA). A token whose `alg` no configured key accepts is refused
//! before any cryptography, which refuses `alg: none` and the HMAC-with-a-public-key confusion
//! (an `HS256` token is only ever checked against configured secrets).

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};

use super::prepared_key::PreparedKey;
use serde::Deserialize;

/// The longest token accepted, in bytes. Tokens with a few dozen grants fit easily; the limit
/// keeps a hostile client from making crier base64-decode and parse megabytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The shortest HMAC secret accepted, in bytes (RFC 7518 §3.2: at least the hash size; 32 is
/// HS256's; longer secrets are fine for every HS algorithm).
pub const MIN_SECRET_BYTES: usize = 32;

/// Why a token was refused, named after the broken rule. [`TokenError::reason`] is the short
/// text of an HTTP 401 body or an in-band error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// No token was presented where one is needed.
    Missing,
    /// Longer than [`MAX_TOKEN_BYTES`].
    TooLong,
    /// Not three base64url parts, or the header or claims are not the expected JSON.
    Malformed,
    /// The header has a `crit` parameter (RFC 7515 §4.1.11: extensions crier does not know).
    UnsupportedHeader,
    /// No configured key accepts this `alg` (includes `none` and HMAC-with-public-key).
    DisallowedAlg,
    /// The token names a `kid` no key has, and no key without a `kid` accepts its `alg`.
    UnknownKid,
    /// No candidate key verifies the signature.
    BadSignature,
    /// No `exp` claim: crier does not accept tokens that never expire.
    MissingExp,
    /// `exp` (plus leeway) has passed.
    Expired,
    /// `nbf` (minus leeway) has not come yet, or `iat` is in the future.
    NotYetValid,
    /// `aud` is missing or does not contain the configured audience.
    WrongAudience,
    /// `iss` is missing or is not the configured issuer.
    WrongIssuer,
    /// A `subscribe` or `publish` pattern is invalid.
    BadGrant,
}

impl TokenError {
    /// A short human reason, used in HTTP 401 bodies and in-band error messages.
    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Missing => "token required",
            TokenError::TooLong => "token too long",
            TokenError::Malformed => "malformed token",
            TokenError::UnsupportedHeader => "unsupported token header (crit)",
            TokenError::DisallowedAlg => "token algorithm not allowed",
            TokenError::UnknownKid => "unknown key id (kid)",
            TokenError::BadSignature => "bad signature",
            TokenError::MissingExp => "token has no exp",
            TokenError::Expired => "token expired",
            TokenError::NotYetValid => "token not valid yet",
            TokenError::WrongAudience => "wrong audience",
            TokenError::WrongIssuer => "wrong issuer",
            TokenError::BadGrant => "invalid topic pattern in token",
        }
    }

    /// The metric label of this refusal.
    pub fn label(self) -> &'static str {
        match self {
            TokenError::Missing => "missing",
            TokenError::TooLong => "too_long",
            TokenError::Malformed => "malformed",
            TokenError::UnsupportedHeader => "unsupported_header",
            TokenError::DisallowedAlg => "disallowed_alg",
            TokenError::UnknownKid => "unknown_kid",
            TokenError::BadSignature => "bad_signature",
            TokenError::MissingExp => "missing_exp",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::BadGrant => "bad_grant",
        }
    }

    /// Every variant, for metrics that keep one counter each.
    pub const ALL: [TokenError; 13] = [
        TokenError::Missing,
        TokenError::TooLong,
        TokenError::Malformed,
        TokenError::UnsupportedHeader,
        TokenError::DisallowedAlg,
        TokenError::UnknownKid,
        TokenError::BadSignature,
        TokenError::MissingExp,
        TokenError::Expired,
        TokenError::NotYetValid,
        TokenError::WrongAudience,
        TokenError::WrongIssuer,
        TokenError::BadGrant,
    ];
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for TokenError {}

/// Why a configured key could not be used, found at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// An HMAC secret shorter than [`MIN_SECRET_BYTES`] (after trimming trailing whitespace).
    SecretTooShort { bytes: usize },
    /// The PEM holds a private key; crier must be given only the public half.
    PrivateKey,
    /// Not a PEM RSA, EC (P-256/P-384) or Ed25519 public key.
    NotAPublicKey,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::SecretTooShort { bytes } => write!(
                f,
                "the secret has {bytes} bytes; HMAC secrets need at least {MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)"
            ),
            KeyError::PrivateKey => f.write_str(
                "this is a private key; give crier only the public key (`openssl pkey -in KEY -pubout`)",
            ),
            KeyError::NotAPublicKey => f.write_str(
                "not a PEM public key of a supported type (RSA, EC P-256/P-384, Ed25519)",
            ),
        }
    }
}

impl std::error::Error for KeyError {}

const HMAC_ALGS: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const P256_ALGS: &[Algorithm] = &[Algorithm::ES256];
const P384_ALGS: &[Algorithm] = &[Algorithm::ES384];
const ED_ALGS: &[Algorithm] = &[Algorithm::EdDSA];

/// One verification key with the algorithms it accepts and, optionally, its `kid`.
pub struct JwtKey {
    kid: Option<Box<str>>,
    algorithms: &'static [Algorithm],
    key: PreparedKey,
}

impl fmt::Debug for JwtKey {
    // Never print key material (a secret would end up in logs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtKey {
    /// An HMAC secret (the bytes of a secret file; trailing whitespace such as the newline an
    /// editor adds is not part of it).
    pub fn secret(kid: Option<&str>, bytes: &[u8]) -> Result<JwtKey, KeyError> {
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        let secret = &bytes[..end];
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::SecretTooShort {
                bytes: secret.len(),
            });
        }
        Ok(JwtKey {
            kid: kid.map(Into::into),
            algorithms: HMAC_ALGS,
            key: PreparedKey::hmac(secret).ok_or(KeyError::NotAPublicKey)?,
        })
    }

    /// A PEM public key: RSA (`PUBLIC KEY` or `RSA PUBLIC KEY`), EC P-256 or P-384, Ed25519.
    pub fn public_pem(kid: Option<&str>, pem: &[u8]) -> Result<JwtKey, KeyError> {
        if pem.windows(11).any(|w| w == b"PRIVATE KEY") {
            return Err(KeyError::PrivateKey);
        }
        // jsonwebtoken's PEM reader finds the key inside; it is parsed here, once.
        let prepared = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            PreparedKey::rsa(key.as_bytes()).map(|k| (RSA_ALGS, k))
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            // The SEC1 point: 0x04 || x || y (or 0x02/0x03 || x), so its length names the curve.
            let algorithms = match key.as_bytes().len() {
                65 | 33 => P256_ALGS,
                _ => P384_ALGS,
            };
            PreparedKey::ec(key.as_bytes()).map(|k| (algorithms, k))
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            PreparedKey::ed25519(key.as_bytes()).map(|k| (ED_ALGS, k))
        } else {
            None
        };
        let (algorithms, key) = prepared.ok_or(KeyError::NotAPublicKey)?;
        Ok(JwtKey {
            kid: kid.map(Into::into),
            algorithms,
            key,
        })
    }

    /// The key's `kid`, if it was given one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The JWS `alg` names this key accepts.
    pub fn algorithm_names(&self) -> Vec<&'static str> {
        self.algorithms.iter().map(|a| alg_name(*a)).collect()
    }
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
    }
}

/// What the verifier checks besides the signature.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimRules {
    /// When set, `aud` must be this string or an array containing it.
    pub audience: Option<String>,
    /// When set, `iss` must be exactly this.
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
}

/// The configured keys and claim rules. Immutable after start-up; shared by every shard.
#[derive(Debug)]
pub struct Verifier {
    keys: Vec<JwtKey>,
    rules: ClaimRules,
}

/// The claims of a verified token that crier uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub sub: Option<String>,
    /// When the token stops being valid, leeway included (Unix seconds): `exp + leeway`.
    pub valid_until_unix_secs: u64,
    pub subscribe: Vec<String>,
    pub publish: Vec<String>,
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    kid: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    iat: Option<f64>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

/// A NumericDate (RFC 7519 §2: seconds, possibly fractional) as whole seconds, rounded down;
/// `None` for values that are not a time (negative, NaN, infinite).
fn numeric_date(value: f64) -> Option<u64> {
    if value.is_finite() && value >= 0.0 {
        // `as` saturates at u64::MAX, which is fine for a date that far away.
        Some(value.floor() as u64)
    } else {
        None
    }
}

impl Verifier {
    /// A verifier with these keys and rules. With no keys it refuses every token.
    pub fn new(keys: Vec<JwtKey>, rules: ClaimRules) -> Verifier {
        Verifier { keys, rules }
    }

    /// Whether any key is configured (auth is on).
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The configured keys.
    pub fn keys(&self) -> &[JwtKey] {
        &self.keys
    }

    /// Verifies a compact JWS at `now_unix_secs` and returns its claims.
    pub fn verify(&self, token: &[u8], now_unix_secs: u64) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        let token = std::str::from_utf8(token).map_err(|_| TokenError::Malformed)?;
        let mut parts = token.split('.');
        let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header_json = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| TokenError::Malformed)?;
        let header: Header<'_> =
            serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed)?;
        if header.crit.is_some() {
            return Err(TokenError::UnsupportedHeader);
        }
        let alg = self
            .keys
            .iter()
            .flat_map(|k| k.algorithms.iter().copied())
            .find(|a| alg_name(*a) == header.alg)
            .ok_or(TokenError::DisallowedAlg)?;

        // Candidates: the key with this kid if there is one; else the keys without a kid (a
        // token minted before kids were introduced, or a set-up that never names keys); a token
        // without a kid may be checked against every key of its algorithm (rotation by trying).
        let accepts = |k: &&JwtKey| k.algorithms.contains(&alg);
        let kid = header.kid.as_deref();
        let named: Vec<&JwtKey> = match kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect(),
            None => Vec::new(),
        };
        let candidates: Vec<&JwtKey> = match kid {
            Some(_) if !named.is_empty() => named.into_iter().filter(accepts).collect(),
            Some(_) => {
                let unnamed: Vec<&JwtKey> = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.is_none())
                    .filter(accepts)
                    .collect();
                if unnamed.is_empty() {
                    return Err(TokenError::UnknownKid);
                }
                unnamed
            }
            None => self.keys.iter().filter(accepts).collect(),
        };
        if candidates.is_empty() {
            // The kid's key exists but is of another family: the token's alg is not its alg.
            return Err(TokenError::DisallowedAlg);
        }
        let signed = &token[..header_b64.len() + 1 + claims_b64.len()];
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| TokenError::Malformed)?;
        let verified = candidates
            .iter()
            .any(|k| k.key.verifies(alg, signed.as_bytes(), &signature));
        if !verified {
            return Err(TokenError::BadSignature);
        }

        let claims_json = URL_SAFE_NO_PAD
            .decode(claims_b64)
            .map_err(|_| TokenError::Malformed)?;
        let raw: RawClaims =
            serde_json::from_slice(&claims_json).map_err(|_| TokenError::Malformed)?;
        self.check(raw, now_unix_secs)
    }

    fn check(&self, raw: RawClaims, now: u64) -> Result<Claims, TokenError> {
        let leeway = self.rules.leeway_secs;
        let exp = raw.exp.ok_or(TokenError::MissingExp)?;
        let exp = numeric_date(exp).ok_or(TokenError::Malformed)?;
        let valid_until = exp.saturating_add(leeway);
        if now >= valid_until {
            return Err(TokenError::Expired);
        }
        for date in [raw.nbf, raw.iat].into_iter().flatten() {
            let date = numeric_date(date).ok_or(TokenError::Malformed)?;
            if date > now.saturating_add(leeway) {
                return Err(TokenError::NotYetValid);
            }
        }
        if let Some(audience) = &self.rules.audience {
            let ok = match &raw.aud {
                Some(Audience::One(aud)) => aud == audience,
                Some(Audience::Many(auds)) => auds.iter().any(|a| a == audience),
                None => false,
            };
            if !ok {
                return Err(TokenError::WrongAudience);
            }
        }
        if let Some(issuer) = &self.rules.issuer {
            if raw.iss.as_deref() != Some(issuer.as_str()) {
                return Err(TokenError::WrongIssuer);
            }
        }
        Ok(Claims {
            sub: raw.sub,
            valid_until_unix_secs: valid_until,
            subscribe: raw.subscribe,
            publish: raw.publish,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::jwt_test_sign::{b64, fixture, sign, sign_with_header, Signer};
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_750_000_000;

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(fixture(name)).unwrap()
    }

    fn verifier(keys: Vec<JwtKey>) -> Verifier {
        Verifier::new(
            keys,
            ClaimRules {
                audience: None,
                issuer: None,
                leeway_secs: 30,
            },
        )
    }

    fn all_keys() -> Verifier {
        verifier(vec![
            JwtKey::secret(None, &read("hs.secret")).unwrap(),
            JwtKey::public_pem(None, &read("rsa.pub.pem")).unwrap(),
            JwtKey::public_pem(None, &read("ec.pub.pem")).unwrap(),
            JwtKey::public_pem(None, &read("ed.pub.pem")).unwrap(),
        ])
    }

    fn claims() -> serde_json::Value {
        json!({ "sub": "42", "exp": NOW + 600, "iat": NOW, "subscribe": ["news.*"], "publish": ["user.{sub}.>"] })
    }

    #[test]
    fn every_configured_algorithm_is_accepted() {
        let v = all_keys();
        for signer in [
            Signer::Hs(256, "hs.secret"),
            Signer::Hs(384, "hs.secret"),
            Signer::Hs(512, "hs.secret"),
            Signer::Rs256("rsa.key.pem"),
            Signer::Ps256("rsa.key.pem"),
            Signer::Es256("ec.key.pem"),
            Signer::EdDsa("ed.key.pem"),
        ] {
            let token = sign(signer, None, &claims());
            let got = v.verify(token.as_bytes(), NOW);
            assert_eq!(
                got,
                Ok(Claims {
                    sub: Some("42".into()),
                    valid_until_unix_secs: NOW + 630,
                    subscribe: vec!["news.*".into()],
                    publish: vec!["user.{sub}.>".into()],
                }),
                "{}",
                signer.alg()
            );
        }
    }

    #[test]
    fn key_types_are_recognised_and_private_keys_refused() {
        let names = |k: JwtKey| k.algorithm_names();
        assert_eq!(
            names(JwtKey::public_pem(None, &read("ec.pub.pem")).unwrap()),
            ["ES256"]
        );
        assert_eq!(
            names(JwtKey::public_pem(None, &read("ed.pub.pem")).unwrap()),
            ["EdDSA"]
        );
        assert!(names(JwtKey::public_pem(None, &read("rsa.pub.pem")).unwrap()).contains(&"PS256"));
        assert_eq!(
            JwtKey::public_pem(None, &read("rsa.key.pem")).unwrap_err(),
            KeyError::PrivateKey
        );
        assert_eq!(
            JwtKey::public_pem(None, b"hello").unwrap_err(),
            KeyError::NotAPublicKey
        );
        assert_eq!(
            JwtKey::secret(None, b"short\n").unwrap_err(),
            KeyError::SecretTooShort { bytes: 5 }
        );
        // The trailing newline of hs2.secret is not part of the secret: tokens signed with
        // the trimmed secret verify.
        let v = verifier(vec![JwtKey::secret(None, &read("hs2.secret")).unwrap()]);
        let token = sign(Signer::Hs(256, "hs2.secret"), None, &claims());
        assert!(v.verify(token.as_bytes(), NOW).is_ok());
    }

    #[test]
    fn time_rules_use_the_given_now_and_leeway() {
        let v = all_keys();
        let hs = |claims: serde_json::Value| sign(Signer::Hs(256, "hs.secret"), None, &claims);
        let exp = hs(json!({ "exp": NOW }));
        assert!(
            v.verify(exp.as_bytes(), NOW + 29).is_ok(),
            "inside the leeway"
        );
        assert_eq!(v.verify(exp.as_bytes(), NOW + 30), Err(TokenError::Expired));
        assert_eq!(
            v.verify(exp.as_bytes(), NOW + 100_000),
            Err(TokenError::Expired)
        );
        let nbf = hs(json!({ "exp": NOW + 600, "nbf": NOW + 100 }));
        assert_eq!(v.verify(nbf.as_bytes(), NOW), Err(TokenError::NotYetValid));
        assert!(
            v.verify(nbf.as_bytes(), NOW + 70).is_ok(),
            "inside the leeway"
        );
        let iat = hs(json!({ "exp": NOW + 600, "iat": NOW + 100 }));
        assert_eq!(v.verify(iat.as_bytes(), NOW), Err(TokenError::NotYetValid));
        let no_exp = hs(json!({ "sub": "42" }));
        assert_eq!(
            v.verify(no_exp.as_bytes(), NOW),
            Err(TokenError::MissingExp)
        );
        let fractional = hs(json!({ "exp": (NOW + 10) as f64 + 0.5 }));
        assert!(v.verify(fractional.as_bytes(), NOW).is_ok());
        let negative = hs(json!({ "exp": -1 }));
        assert_eq!(
            v.verify(negative.as_bytes(), NOW),
            Err(TokenError::Malformed)
        );
        let string = hs(json!({ "exp": "tomorrow" }));
        assert_eq!(v.verify(string.as_bytes(), NOW), Err(TokenError::Malformed));
    }

    #[test]
    fn audience_and_issuer_are_checked_when_configured() {
        let v = Verifier::new(
            vec![JwtKey::secret(None, &read("hs.secret")).unwrap()],
            ClaimRules {
                audience: Some("crier".into()),
                issuer: Some("https://app.example".into()),
                leeway_secs: 30,
            },
        );
        let hs = |claims: serde_json::Value| sign(Signer::Hs(256, "hs.secret"), None, &claims);
        let good = hs(json!({ "exp": NOW + 60, "aud": "crier", "iss": "https://app.example" }));
        assert!(v.verify(good.as_bytes(), NOW).is_ok());
        let many =
            hs(json!({ "exp": NOW + 60, "aud": ["x", "crier"], "iss": "https://app.example" }));
        assert!(v.verify(many.as_bytes(), NOW).is_ok());
        for (claims, error) in [
            (
                json!({ "exp": NOW + 60, "aud": "other", "iss": "https://app.example" }),
                TokenError::WrongAudience,
            ),
            (
                json!({ "exp": NOW + 60, "aud": ["x"], "iss": "https://app.example" }),
                TokenError::WrongAudience,
            ),
            (
                json!({ "exp": NOW + 60, "iss": "https://app.example" }),
                TokenError::WrongAudience,
            ),
            (
                json!({ "exp": NOW + 60, "aud": "crier", "iss": "https://evil.example" }),
                TokenError::WrongIssuer,
            ),
            (
                json!({ "exp": NOW + 60, "aud": "crier" }),
                TokenError::WrongIssuer,
            ),
        ] {
            assert_eq!(
                v.verify(hs(claims.clone()).as_bytes(), NOW),
                Err(error),
                "{claims}"
            );
        }
        // Without rules, aud and iss are not checked.
        assert!(all_keys()
            .verify(
                hs(json!({ "exp": NOW + 60, "aud": "other" })).as_bytes(),
                NOW
            )
            .is_ok());
    }

    #[test]
    fn bad_signatures_are_refused() {
        let v = all_keys();
        for signer in [
            Signer::Hs(256, "hs2.secret"),
            Signer::Es256("ec2.key.pem"),
            Signer::Rs256("rsa.key.pem"),
            Signer::EdDsa("ed.key.pem"),
        ] {
            let token = sign(signer, None, &claims());
            // Change one claim after signing: same header and signature, other payload.
            let mut parts: Vec<String> = token.split('.').map(String::from).collect();
            parts[1] = b64(
                json!({ "sub": "admin", "exp": NOW + 600, "subscribe": [">"] })
                    .to_string()
                    .as_bytes(),
            );
            let forged = parts.join(".");
            assert_eq!(
                v.verify(forged.as_bytes(), NOW),
                Err(TokenError::BadSignature),
                "{}",
                signer.alg()
            );
        }
        // Signed with a key crier does not have.
        let other = sign(Signer::Hs(256, "hs2.secret"), None, &claims());
        assert_eq!(
            v.verify(other.as_bytes(), NOW),
            Err(TokenError::BadSignature)
        );
        let other = sign(Signer::Es256("ec2.key.pem"), None, &claims());
        assert_eq!(
            v.verify(other.as_bytes(), NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let v = all_keys();
        for alg in ["none", "None", "NONE", ""] {
            let token = format!(
                "{}.{}.",
                b64(json!({ "alg": alg }).to_string().as_bytes()),
                b64(claims().to_string().as_bytes())
            );
            assert_eq!(
                v.verify(token.as_bytes(), NOW),
                Err(TokenError::DisallowedAlg),
                "{alg}"
            );
        }
    }

    #[test]
    fn hmac_with_the_public_key_as_secret_is_refused() {
        // The classic confusion: sign HS256 with the server's public key bytes as the secret.
        let pem = read("rsa.pub.pem");
        let input = format!(
            "{}.{}",
            b64(json!({ "alg": "HS256" }).to_string().as_bytes()),
            b64(claims().to_string().as_bytes())
        );
        let mac = {
            use sha2::Digest as _;
            // HMAC-SHA-256 by its definition (RFC 2104), independent of the verifier's code.
            let mut key = pem.clone();
            if key.len() > 64 {
                key = sha2::Sha256::digest(&key).to_vec();
            }
            key.resize(64, 0);
            let ipad: Vec<u8> = key.iter().map(|b| b ^ 0x36).collect();
            let opad: Vec<u8> = key.iter().map(|b| b ^ 0x5c).collect();
            let inner = sha2::Sha256::new()
                .chain_update(&ipad)
                .chain_update(input.as_bytes())
                .finalize();
            sha2::Sha256::new()
                .chain_update(&opad)
                .chain_update(inner)
                .finalize()
                .to_vec()
        };
        let token = format!("{input}.{}", b64(&mac));
        let public_only = verifier(vec![JwtKey::public_pem(None, &read("rsa.pub.pem")).unwrap()]);
        assert_eq!(
            public_only.verify(token.as_bytes(), NOW),
            Err(TokenError::DisallowedAlg)
        );
        // With a secret configured too, HS256 is allowed but only checked against the secret.
        assert_eq!(
            all_keys().verify(token.as_bytes(), NOW),
            Err(TokenError::BadSignature)
        );
        // And an RS256 header on an ES256 signature does not get checked with the EC key.
        let es = sign(Signer::Es256("ec.key.pem"), None, &claims());
        let mut parts: Vec<String> = es.split('.').map(String::from).collect();
        parts[0] = b64(json!({ "alg": "RS256" }).to_string().as_bytes());
        assert_eq!(
            all_keys().verify(parts.join(".").as_bytes(), NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn kid_chooses_the_key_during_rotation() {
        let v = verifier(vec![
            JwtKey::public_pem(Some("2025-old"), &read("ec.pub.pem")).unwrap(),
            JwtKey::public_pem(Some("2025-new"), &read("ec2.pub.pem")).unwrap(),
        ]);
        let old = sign(Signer::Es256("ec.key.pem"), Some("2025-old"), &claims());
        let new = sign(Signer::Es256("ec2.key.pem"), Some("2025-new"), &claims());
        assert!(v.verify(old.as_bytes(), NOW).is_ok());
        assert!(v.verify(new.as_bytes(), NOW).is_ok());
        // The right signature under the wrong kid is refused: the kid pins the key.
        let swapped = sign(Signer::Es256("ec2.key.pem"), Some("2025-old"), &claims());
        assert_eq!(
            v.verify(swapped.as_bytes(), NOW),
            Err(TokenError::BadSignature)
        );
        let unknown = sign(Signer::Es256("ec.key.pem"), Some("2024"), &claims());
        assert_eq!(
            v.verify(unknown.as_bytes(), NOW),
            Err(TokenError::UnknownKid)
        );
        // Without a kid, every key of the algorithm is tried.
        let bare = sign(Signer::Es256("ec2.key.pem"), None, &claims());
        assert!(v.verify(bare.as_bytes(), NOW).is_ok());
        // After the old key is removed, its tokens stop working.
        let rotated = verifier(vec![JwtKey::public_pem(
            Some("2025-new"),
            &read("ec2.pub.pem"),
        )
        .unwrap()]);
        assert_eq!(
            rotated.verify(old.as_bytes(), NOW),
            Err(TokenError::UnknownKid)
        );
        assert!(rotated.verify(new.as_bytes(), NOW).is_ok());
        // A kid naming a key of another family: the alg is not that key's.
        let mixed = verifier(vec![JwtKey::secret(Some("k1"), &read("hs.secret")).unwrap()]);
        let es_k1 = sign(Signer::Es256("ec.key.pem"), Some("k1"), &claims());
        assert_eq!(
            mixed.verify(es_k1.as_bytes(), NOW),
            Err(TokenError::DisallowedAlg)
        );
    }

    #[test]
    fn malformed_tokens_are_refused_without_panicking() {
        let v = all_keys();
        let good = sign(Signer::Hs(256, "hs.secret"), None, &claims());
        let header = good.split('.').next().unwrap();
        for bad in [
            String::new(),
            "abc".into(),
            "a.b".into(),
            "a.b.c.d".into(),
            format!("{header}.!!!.abc"),
            format!("{header}.{}.abc", b64(b"not json")),
            format!("{}.e30.", b64(b"[1,2]")),
            format!("{good}="),
            "x".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert!(v.verify(bad.as_bytes(), NOW).is_err(), "{bad:.40}");
        }
        assert_eq!(v.verify(b"", NOW), Err(TokenError::Missing));
        assert_eq!(
            v.verify("x".repeat(MAX_TOKEN_BYTES + 1).as_bytes(), NOW),
            Err(TokenError::TooLong)
        );
        assert_eq!(v.verify(b"\xff.a.b", NOW), Err(TokenError::Malformed));
        // A signed token whose claims are not an object.
        let token = sign_with_header(
            Signer::Hs(256, "hs.secret"),
            &json!({ "alg": "HS256" }),
            &json!([1]),
        );
        assert_eq!(v.verify(token.as_bytes(), NOW), Err(TokenError::Malformed));
        let crit = sign_with_header(
            Signer::Hs(256, "hs.secret"),
            &json!({ "alg": "HS256", "crit": ["b64"] }),
            &claims(),
        );
        assert_eq!(
            v.verify(crit.as_bytes(), NOW),
            Err(TokenError::UnsupportedHeader)
        );
        // No keys: nothing verifies.
        assert_eq!(
            verifier(vec![]).verify(good.as_bytes(), NOW),
            Err(TokenError::DisallowedAlg)
        );
    }

    #[test]
    fn every_error_has_a_reason_and_a_distinct_label() {
        let mut labels: Vec<&str> = TokenError::ALL.iter().map(|e| e.label()).collect();
        assert!(TokenError::ALL.iter().all(|e| !e.reason().is_empty()));
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), TokenError::ALL.len());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = all_keys().verify(&bytes, NOW);
        }
    }
}
