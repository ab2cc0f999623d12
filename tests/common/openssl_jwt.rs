//! Test tokens signed by the `openssl` command, so the signer shares no code with crier's
//! verifier (jsonwebtoken on RustCrypto). Keys are the committed test keys in
//! tests/fixtures/auth. Used by the unit tests in src/auth (through `#[path]`) and by the
//! integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// How to sign: the JWS algorithm and the key openssl signs with.
#[derive(Debug, Clone, Copy)]
pub(super) enum Signer {
    /// HMAC-SHA-256/384/512 (`bits`) with the secret in this fixture file (trailing newline trimmed).
    Hs(u16, &'static str),
    Rs256(&'static str),
    Ps256(&'static str),
    Es256(&'static str),
    EdDsa(&'static str),
}

impl Signer {
    pub(super) fn alg(self) -> &'static str {
        match self {
            Signer::Hs(256, _) => "HS256",
            Signer::Hs(384, _) => "HS384",
            Signer::Hs(_, _) => "HS512",
            Signer::Rs256(_) => "RS256",
            Signer::Ps256(_) => "PS256",
            Signer::Es256(_) => "ES256",
            Signer::EdDsa(_) => "EdDSA",
        }
    }
}

/// The path of a fixture under tests/fixtures/auth.
pub(super) fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/auth")
        .join(name)
}

pub(super) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS: `header` gets `alg` (and `kid` when given) added; `claims` as given.
pub(super) fn sign(signer: Signer, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let mut header = serde_json::json!({ "alg": signer.alg(), "typ": "JWT" });
    if let Some(kid) = kid {
        header["kid"] = kid.into();
    }
    sign_with_header(signer, &header, claims)
}

/// A compact JWS with exactly this header (which may lie about `alg`).
pub(super) fn sign_with_header(
    signer: Signer,
    header: &serde_json::Value,
    claims: &serde_json::Value,
) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = signature(signer, input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

/// The raw signature openssl makes over `input`.
pub(super) fn signature(signer: Signer, input: &[u8]) -> Vec<u8> {
    let key = |name: &str| fixture(name).to_string_lossy().into_owned();
    match signer {
        Signer::Hs(bits, secret) => {
            let secret = std::fs::read(fixture(secret)).unwrap();
            let secret = trim_end(&secret);
            let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            openssl(
                &[
                    "dgst",
                    &format!("-sha{bits}"),
                    "-mac",
                    "HMAC",
                    "-macopt",
                    &format!("hexkey:{hex}"),
                    "-binary",
                ],
                input,
            )
        }
        Signer::Rs256(pem) => openssl(&["dgst", "-sha256", "-sign", &key(pem), "-binary"], input),
        Signer::Ps256(pem) => openssl(
            &[
                "dgst",
                "-sha256",
                "-sign",
                &key(pem),
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:32",
                "-binary",
            ],
            input,
        ),
        Signer::Es256(pem) => {
            let der = openssl(&["dgst", "-sha256", "-sign", &key(pem), "-binary"], input);
            ecdsa_der_to_raw(&der, 32)
        }
        Signer::EdDsa(pem) => {
            // `-rawin` needs the message from a file: Ed25519 hashes it itself.
            let dir = std::env::temp_dir().join(format!("crier-jwt-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            // One file per call: two tests signing the same input at once must not share it
            // (one would remove it while the other's openssl reads it).
            static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let file = dir.join(format!("{:x}-{call}.msg", fnv(input)));
            std::fs::write(&file, input).unwrap();
            let out = openssl(
                &[
                    "pkeyutl",
                    "-sign",
                    "-inkey",
                    &key(pem),
                    "-rawin",
                    "-in",
                    &file.to_string_lossy(),
                ],
                b"",
            );
            let _ = std::fs::remove_file(&file);
            out
        }
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    }) ^ u64::from(std::process::id())
}

fn trim_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the openssl command (tests sign their tokens with it)");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// ECDSA-Sig-Value (DER SEQUENCE of two INTEGERs) to the JWS form: r and s, each `width` bytes.
fn ecdsa_der_to_raw(der: &[u8], width: usize) -> Vec<u8> {
    assert_eq!(der[0], 0x30, "a DER SEQUENCE");
    let mut at = if der[1] & 0x80 != 0 {
        2 + usize::from(der[1] & 0x7f)
    } else {
        2
    };
    let mut raw = Vec::with_capacity(2 * width);
    for _ in 0..2 {
        assert_eq!(der[at], 0x02, "a DER INTEGER");
        let len = usize::from(der[at + 1]);
        let mut int = &der[at + 2..at + 2 + len];
        while int.len() > width && int[0] == 0 {
            int = &int[1..];
        }
        raw.resize(raw.len() + width - int.len(), 0);
        raw.extend_from_slice(int);
        at += 2 + len;
    }
    raw
}
