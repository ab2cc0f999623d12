//! Start-up only: reads the key and API-key files the configuration names and builds the
//! [`Policy`]; and the warning printed when anyone may publish and subscribe. The only file
//! I/O of `auth`, run once before the shards start; every error names the file.

use std::fmt;
use std::path::{Path, PathBuf};

use super::api_key::{ApiKeyError, ApiKeys};
use super::jwt::{ClaimRules, JwtKey, KeyError, Verifier};
use super::pattern::{Matcher, PatternError};
use super::policy::Policy;
use super::rate::RateLimit;
use crate::config::Config;

/// Why the policy could not be built.
#[derive(Debug)]
pub enum SetupError {
    /// A file named in the configuration could not be read.
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A JWT key file holds no usable key.
    BadKey { path: PathBuf, error: KeyError },
    /// Two keys share a `kid`: a token naming it would be ambiguous.
    DuplicateKid(String),
    /// The API key file is not usable.
    BadApiKeys { path: PathBuf, error: ApiKeyError },
    /// An anonymous rule is not a valid pattern (normally caught when parsing the config).
    BadPattern {
        pattern: String,
        error: PatternError,
    },
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Unreadable { path, source } => {
                write!(f, "{}: cannot read: {source}", path.display())
            }
            SetupError::BadKey { path, error } => write!(f, "{}: {error}", path.display()),
            SetupError::DuplicateKid(kid) => {
                write!(
                    f,
                    "two JWT keys have the kid {kid:?}; each kid must name one key"
                )
            }
            SetupError::BadApiKeys { path, error } => write!(f, "{}: {error}", path.display()),
            SetupError::BadPattern { pattern, error } => write!(f, "{pattern:?}: {error}"),
        }
    }
}

impl std::error::Error for SetupError {}

fn read(path: &Path) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|source| SetupError::Unreadable {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads every file the configuration names and builds the policy the shards share.
pub fn load_policy(config: &Config) -> Result<Policy, SetupError> {
    let mut keys = Vec::new();
    for file in &config.jwt_secret_file {
        let key = JwtKey::secret(file.kid.as_deref(), &read(&file.path)?);
        keys.push(key.map_err(|error| SetupError::BadKey {
            path: file.path.clone(),
            error,
        })?);
    }
    for file in &config.jwt_public_key_file {
        let key = JwtKey::public_pem(file.kid.as_deref(), &read(&file.path)?);
        keys.push(key.map_err(|error| SetupError::BadKey {
            path: file.path.clone(),
            error,
        })?);
    }
    let mut kids: Vec<&str> = keys.iter().filter_map(JwtKey::kid).collect();
    kids.sort_unstable();
    if let Some(pair) = kids.windows(2).find(|w| w[0] == w[1]) {
        return Err(SetupError::DuplicateKid(pair[0].to_string()));
    }
    let rules = ClaimRules {
        audience: config.jwt_audience.clone(),
        issuer: config.jwt_issuer.clone(),
        leeway_secs: config.jwt_leeway.as_secs(),
    };
    let anonymous = |patterns: &[String]| {
        Matcher::compile_anonymous(patterns).map_err(|error| SetupError::BadPattern {
            pattern: patterns.join(", "),
            error,
        })
    };
    let api_keys = match &config.api_key_file {
        Some(path) => {
            let text = String::from_utf8_lossy(&read(path)?).into_owned();
            Some(
                ApiKeys::parse(&text).map_err(|error| SetupError::BadApiKeys {
                    path: path.clone(),
                    error,
                })?,
            )
        }
        None => None,
    };
    Ok(Policy::new(
        Verifier::new(keys, rules),
        anonymous(&config.anonymous_subscribe)?,
        anonymous(&config.anonymous_publish)?,
        api_keys,
        config.max_publish_rate.map(RateLimit::per_second),
        config.max_handshake_rate_per_ip.map(RateLimit::per_second),
    ))
}

/// The start-up warning for a broker anyone may use, or `None` when authentication is on.
pub fn open_access_warning(config: &Config) -> Option<String> {
    if !config.jwt_secret_file.is_empty() || !config.jwt_public_key_file.is_empty() {
        return None;
    }
    let api = if config.api_key_file.is_some() {
        "POST /publish needs an API key, but"
    } else {
        "POST /publish is open too, and"
    };
    Some(format!(
        "WARNING: no JWT key configured (--jwt-secret-file / --jwt-public-key-file): anyone who \
         can reach {} may publish and subscribe to every topic over WebSocket; {api} /metrics is \
         public unless --metrics-listen moves it. See docs/auth.md.",
        config.listen
    ))
}

#[cfg(test)]
mod tests {
    use super::super::jwt_test_sign::fixture;
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> Config {
        let mut all = vec!["crier"];
        all.extend_from_slice(args);
        Config::parse_from(all)
    }

    fn path(name: &str) -> String {
        fixture(name).to_string_lossy().into_owned()
    }

    #[test]
    fn the_warning_appears_only_without_jwt_keys() {
        let open = open_access_warning(&config(&[])).unwrap();
        assert!(
            open.contains("anyone who can reach 0.0.0.0:8080 may publish and subscribe"),
            "{open}"
        );
        let secret = path("hs.secret");
        assert_eq!(
            open_access_warning(&config(&["--jwt-secret-file", &secret])),
            None
        );
    }

    #[test]
    fn keys_load_with_their_kids() {
        let (a, b) = (
            format!("old={}", path("ec.pub.pem")),
            format!("new={}", path("ec2.pub.pem")),
        );
        let ed = path("ed.pub.pem");
        let policy = load_policy(&config(&[
            "--jwt-public-key-file",
            &a,
            "--jwt-public-key-file",
            &b,
            "--jwt-public-key-file",
            &ed,
            "--anonymous-subscribe",
            "public.>",
        ]))
        .unwrap();
        assert!(policy.tokens_required());
        let kids: Vec<Option<&str>> = policy.verifier.keys().iter().map(JwtKey::kid).collect();
        assert_eq!(kids, [Some("old"), Some("new"), None]);
        assert!(policy.anonymous_subscribe.matches("public.a"));
    }

    #[test]
    fn bad_files_are_named() {
        let missing =
            load_policy(&config(&["--jwt-secret-file", "/nonexistent/secret"])).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("/nonexistent/secret: cannot read"),
            "{missing}"
        );
        let private = path("ec.key.pem");
        let err = load_policy(&config(&["--jwt-public-key-file", &private])).unwrap_err();
        assert!(
            matches!(
                err,
                SetupError::BadKey {
                    error: KeyError::PrivateKey,
                    ..
                }
            ),
            "{err}"
        );
        let twice = format!("k={}", path("ec.pub.pem"));
        let secret = format!("k={}", path("hs.secret"));
        let err = load_policy(&config(&[
            "--jwt-public-key-file",
            &twice,
            "--jwt-secret-file",
            &secret,
        ]))
        .unwrap_err();
        assert!(
            matches!(err, SetupError::DuplicateKid(ref k) if k == "k"),
            "{err}"
        );
        let not_keys = path("README.md");
        let err = load_policy(&config(&["--api-key-file", &not_keys])).unwrap_err();
        assert!(matches!(err, SetupError::BadApiKeys { .. }), "{err}");
    }
}
