//! A JWT verification key parsed once, at start-up, into the form its signature check uses:
//! an RSA public key, a P-256/P-384 point, an Ed25519 point, or HMAC states already keyed.
//! `jsonwebtoken::crypto::verify` rebuilds these from bytes on every call (an RSA key from DER,
//! an EC point from SEC1, with its validation); here a token costs only its own check. Pure
//! RustCrypto, the same crates and calls as jsonwebtoken's `rust_crypto` backend, so the
//! accepted signatures are the same.

use hmac::{Hmac, Mac};
use p256::ecdsa::signature::Verifier as _;
use rsa::{Pkcs1v15Sign, Pss, RsaPublicKey};
use sha2::{Digest, Sha256, Sha384, Sha512};

use jsonwebtoken::Algorithm;

/// A key ready to check signatures. Built by [`PreparedKey::hmac`] or from the public key
/// bytes `jsonwebtoken`'s PEM parser extracts.
#[derive(Clone)]
pub(crate) enum PreparedKey {
    /// HMAC states with the secret already absorbed: a check clones one and hashes the token.
    Hmac(Box<HmacKeys>),
    Rsa(Box<RsaPublicKey>),
    P256(Box<p256::ecdsa::VerifyingKey>),
    P384(Box<p384::ecdsa::VerifyingKey>),
    Ed25519(Box<ed25519_dalek::VerifyingKey>),
}

#[derive(Clone)]
pub(crate) struct HmacKeys {
    sha256: Hmac<Sha256>,
    sha384: Hmac<Sha384>,
    sha512: Hmac<Sha512>,
}

impl PreparedKey {
    /// HMAC states keyed with `secret` (any length is accepted by HMAC; the caller enforces
    /// the minimum).
    pub(crate) fn hmac(secret: &[u8]) -> Option<PreparedKey> {
        Some(PreparedKey::Hmac(Box::new(HmacKeys {
            sha256: Hmac::new_from_slice(secret).ok()?,
            sha384: Hmac::new_from_slice(secret).ok()?,
            sha512: Hmac::new_from_slice(secret).ok()?,
        })))
    }

    /// An RSA public key from its PKCS#1 DER.
    pub(crate) fn rsa(pkcs1_der: &[u8]) -> Option<PreparedKey> {
        use rsa::pkcs1::DecodeRsaPublicKey;
        let key = RsaPublicKey::from_pkcs1_der(pkcs1_der).ok()?;
        Some(PreparedKey::Rsa(Box::new(key)))
    }

    /// A P-256 or P-384 point from its SEC1 encoding (the curve is told by its length).
    pub(crate) fn ec(sec1: &[u8]) -> Option<PreparedKey> {
        match sec1.len() {
            65 | 33 => p256::ecdsa::VerifyingKey::from_sec1_bytes(sec1)
                .ok()
                .map(|k| PreparedKey::P256(Box::new(k))),
            97 | 49 => p384::ecdsa::VerifyingKey::from_sec1_bytes(sec1)
                .ok()
                .map(|k| PreparedKey::P384(Box::new(k))),
            _ => None,
        }
    }

    /// An Ed25519 point from its 32 bytes.
    pub(crate) fn ed25519(bytes: &[u8]) -> Option<PreparedKey> {
        let bytes: &[u8; 32] = bytes.try_into().ok()?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(bytes).ok()?;
        Some(PreparedKey::Ed25519(Box::new(key)))
    }

    /// Whether `signature` (raw bytes, base64url-decoded) signs `message` under `alg` with
    /// this key. An `alg` of another family is simply `false` (the caller never asks).
    pub(crate) fn verifies(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        match (self, alg) {
            (PreparedKey::Hmac(keys), Algorithm::HS256) => {
                mac_ok(keys.sha256.clone(), message, signature)
            }
            (PreparedKey::Hmac(keys), Algorithm::HS384) => {
                mac_ok(keys.sha384.clone(), message, signature)
            }
            (PreparedKey::Hmac(keys), Algorithm::HS512) => {
                mac_ok(keys.sha512.clone(), message, signature)
            }
            (PreparedKey::Rsa(key), alg) => rsa_ok(key, alg, message, signature),
            (PreparedKey::P256(key), Algorithm::ES256) => {
                p256::ecdsa::Signature::from_slice(signature)
                    .is_ok_and(|sig| key.verify(message, &sig).is_ok())
            }
            (PreparedKey::P384(key), Algorithm::ES384) => {
                p384::ecdsa::Signature::from_slice(signature)
                    .is_ok_and(|sig| key.verify(message, &sig).is_ok())
            }
            (PreparedKey::Ed25519(key), Algorithm::EdDSA) => {
                ed25519_dalek::Signature::from_slice(signature)
                    .is_ok_and(|sig| key.verify(message, &sig).is_ok())
            }
            _ => false,
        }
    }
}

/// HMAC over `message`, compared with `signature` in constant time (`verify_slice`).
fn mac_ok<M: Mac>(mut mac: M, message: &[u8], signature: &[u8]) -> bool {
    mac.update(message);
    mac.verify_slice(signature).is_ok()
}

fn rsa_ok(key: &RsaPublicKey, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
    match alg {
        Algorithm::RS256 => {
            let digest = Sha256::digest(message);
            key.verify(Pkcs1v15Sign::new::<Sha256>(), &digest, signature)
                .is_ok()
        }
        Algorithm::RS384 => {
            let digest = Sha384::digest(message);
            key.verify(Pkcs1v15Sign::new::<Sha384>(), &digest, signature)
                .is_ok()
        }
        Algorithm::RS512 => {
            let digest = Sha512::digest(message);
            key.verify(Pkcs1v15Sign::new::<Sha512>(), &digest, signature)
                .is_ok()
        }
        Algorithm::PS256 => {
            let digest = Sha256::digest(message);
            key.verify(Pss::new::<Sha256>(), &digest, signature).is_ok()
        }
        Algorithm::PS384 => {
            let digest = Sha384::digest(message);
            key.verify(Pss::new::<Sha384>(), &digest, signature).is_ok()
        }
        Algorithm::PS512 => {
            let digest = Sha512::digest(message);
            key.verify(Pss::new::<Sha512>(), &digest, signature).is_ok()
        }
        _ => false,
    }
}
