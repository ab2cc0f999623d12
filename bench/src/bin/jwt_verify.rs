//! Verifying a JWT connection token: `auth::Policy::authenticate` (signature, claims, and the
//! grants compiled once) for HS256, ES256, EdDSA and RS256 (2048-bit) tokens with two grant
//! patterns, signed with the committed test keys in tests/fixtures/auth.

use std::hint::black_box;
use std::path::PathBuf;

use clap::Parser;
use crier::auth::{ClaimRules, JwtKey, Matcher, Policy, Verifier};
use crier_bench::{Harness, MicroArgs, Per};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

#[derive(Debug, Parser)]
#[command(about = "JWT verification and grant compilation: µs per token, by algorithm")]
struct Args {
    #[command(flatten)]
    micro: MicroArgs,
}

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/auth")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn main() {
    let args = Args::parse();
    let harness = Harness::new("jwt_verify", args.micro);
    let now = 1_750_000_000u64;
    let claims = serde_json::json!({
        "sub": "user-42", "exp": now + 3600, "iat": now, "aud": "crier",
        "subscribe": ["news.*", "user.{sub}.>"], "publish": ["user.{sub}.out"],
    });
    let secret = fixture("hs.secret");
    let cases: [(&str, Algorithm, EncodingKey, JwtKey); 4] = [
        (
            "HS256",
            Algorithm::HS256,
            EncodingKey::from_secret(&secret),
            JwtKey::secret(None, &secret).unwrap(),
        ),
        (
            "ES256",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&fixture("ec.key.pem")).unwrap(),
            JwtKey::public_pem(None, &fixture("ec.pub.pem")).unwrap(),
        ),
        (
            "EdDSA",
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&fixture("ed.key.pem")).unwrap(),
            JwtKey::public_pem(None, &fixture("ed.pub.pem")).unwrap(),
        ),
        (
            "RS256",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&fixture("rsa.key.pem")).unwrap(),
            JwtKey::public_pem(None, &fixture("rsa.pub.pem")).unwrap(),
        ),
    ];
    for (name, alg, signing, verifying) in cases {
        let token = encode(&Header::new(alg), &claims, &signing).unwrap();
        let rules = ClaimRules {
            audience: Some("crier".into()),
            issuer: None,
            leeway_secs: 30,
        };
        let policy = Policy::new(
            Verifier::new(vec![verifying], rules),
            Matcher::none(),
            Matcher::none(),
            None,
            None,
            None,
        );
        let grants = policy
            .authenticate(token.as_bytes(), now)
            .expect("the token verifies");
        assert!(grants.subscribe.matches("user.user-42.inbox"));
        harness.case(name, Per::op("token").bytes(token.len() as u64), |n| {
            let mut sum = 0u64;
            for _ in 0..n {
                let grants = policy
                    .authenticate(black_box(token.as_bytes()), now)
                    .unwrap();
                sum += grants.valid_until_unix_secs;
            }
            sum
        });
    }
    // The per-check cost the broker pays at subscribe/publish time, for comparison.
    let policy_grants = {
        let token = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&secret),
        )
        .unwrap();
        let v = Verifier::new(
            vec![JwtKey::secret(None, &secret).unwrap()],
            ClaimRules::default(),
        );
        Policy::new(v, Matcher::none(), Matcher::none(), None, None, None)
            .authenticate(token.as_bytes(), now)
            .unwrap()
    };
    harness.case(
        "grant check (subscribe, 2 patterns)",
        Per::op("check"),
        |n| {
            let mut sum = 0u64;
            for _ in 0..n {
                sum += u64::from(
                    policy_grants
                        .subscribe
                        .matches(black_box("user.user-42.inbox")),
                );
            }
            sum
        },
    );
}
