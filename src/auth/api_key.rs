//! API keys for the HTTP publish API (`--api-key-file`): parsed from the file's text, kept
//! only as SHA-256 digests, and compared in constant time. Pure: the caller reads the file.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// The shortest key accepted, in bytes: shorter ones can be guessed.
pub const MIN_API_KEY_BYTES: usize = 16;

/// Why the key file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiKeyError {
    /// No key in the file (only blank lines and comments).
    NoKeys,
    /// The key on this line (1-based) is shorter than [`MIN_API_KEY_BYTES`].
    TooShort { line: usize },
    /// The key on this line holds whitespace or a control character (a `Bearer` value cannot).
    BadCharacter { line: usize },
}

impl fmt::Display for ApiKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiKeyError::NoKeys => f.write_str("no API key in the file (one key per line)"),
            ApiKeyError::TooShort { line } => write!(
                f,
                "line {line}: an API key needs at least {MIN_API_KEY_BYTES} characters (e.g. `openssl rand -hex 32`)"
            ),
            ApiKeyError::BadCharacter { line } => {
                write!(f, "line {line}: an API key cannot hold spaces or control characters")
            }
        }
    }
}

impl std::error::Error for ApiKeyError {}

/// The accepted keys, as digests. Immutable after start-up; shared by every shard.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl fmt::Debug for ApiKeys {
    // Digests of short keys can be brute-forced: keep them out of logs too.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeys({} keys)", self.digests.len())
    }
}

impl ApiKeys {
    /// Parses a key file: one key per line; blank lines and lines starting with `#` are
    /// skipped; surrounding whitespace is not part of a key.
    pub fn parse(text: &str) -> Result<ApiKeys, ApiKeyError> {
        let mut digests = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let key = line.trim();
            if key.is_empty() || key.starts_with('#') {
                continue;
            }
            let line = index + 1;
            if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ApiKeyError::BadCharacter { line });
            }
            if key.len() < MIN_API_KEY_BYTES {
                return Err(ApiKeyError::TooShort { line });
            }
            digests.push(Sha256::digest(key.as_bytes()).into());
        }
        if digests.is_empty() {
            return Err(ApiKeyError::NoKeys);
        }
        Ok(ApiKeys { digests })
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Always false: [`ApiKeys::parse`] refuses a file without keys.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `presented` is one of the keys. The presented key is hashed first, so the
    /// comparison's timing could at most tell an attacker about a digest, not the key; and
    /// every stored digest is compared in full, without an early exit.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = 0u8;
        for stored in &self.digests {
            found |= u8::from(constant_time_eq(stored, &digest));
        }
        found == 1
    }
}

/// Equality of two digests without a data-dependent branch or early exit.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut difference = 0u8;
    for (x, y) in a.iter().zip(b) {
        difference |= x ^ y;
    }
    // Keeps the optimiser from turning the fold back into an early-exit comparison.
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "k1-0123456789abcdef";
    const B: &str = "k2-fedcba9876543210";

    #[test]
    fn keys_are_matched_exactly() {
        let keys = ApiKeys::parse(&format!("# publishers\n{A}\n\n  {B}  \n")).unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.accepts(A.as_bytes()));
        assert!(keys.accepts(B.as_bytes()));
        assert!(!keys.accepts(b""));
        assert!(!keys.accepts(&A.as_bytes()[..A.len() - 1]));
        assert!(!keys.accepts(format!("{A}x").as_bytes()));
        assert!(!keys.accepts(b"# publishers"));
    }

    #[test]
    fn only_digests_are_kept() {
        let keys = ApiKeys::parse(A).unwrap();
        assert_eq!(
            keys.digests,
            vec![<[u8; 32]>::from(Sha256::digest(A.as_bytes()))]
        );
        assert_eq!(format!("{keys:?}"), "ApiKeys(1 keys)");
    }

    #[test]
    fn bad_files_are_refused_with_the_line() {
        assert_eq!(ApiKeys::parse("\n# none\n"), Err(ApiKeyError::NoKeys));
        assert_eq!(
            ApiKeys::parse(&format!("{A}\nshort")),
            Err(ApiKeyError::TooShort { line: 2 })
        );
        assert_eq!(
            ApiKeys::parse("has a space in the middle"),
            Err(ApiKeyError::BadCharacter { line: 1 })
        );
    }

    #[test]
    fn constant_time_eq_is_equality() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        for i in 0..32 {
            b = a;
            b[i] ^= 1;
            assert!(!constant_time_eq(&a, &b), "byte {i}");
        }
    }
}
