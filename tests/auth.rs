//! Scenario: crier with JWT keys configured, clients on loopback presenting tokens signed by
//! the `openssl` command (not crier's verifier code): upgrades with and without tokens, the
//! grant matrix in-band, in-band refresh, expiry closing with 4001, anonymous rules, a `kid`
//! rotation, and the HTTP publish API with API keys on and off.

mod common;
#[path = "common/openssl_jwt.rs"]
mod openssl_jwt;

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use openssl_jwt::{fixture, sign, Signer};
use serde_json::json;
use tungstenite::Message;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn path(name: &str) -> String {
    fixture(name).to_string_lossy().into_owned()
}

fn hs(claims: serde_json::Value) -> String {
    sign(Signer::Hs(256, "hs.secret"), None, &claims)
}

/// Upgrade status (101 or the refusal) and the body of a refusal.
fn upgrade(addr: std::net::SocketAddr, target: &str, extra: &str) -> (u16, String) {
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    let mut stream = tcp(addr);
    stream.write_all(request.as_bytes()).unwrap();
    let (status, head, body) = read_response_with_head(&mut stream);
    if status == 401 {
        assert_eq!(header(&head, "www-authenticate"), Some("Bearer"), "{head}");
    }
    (status, body)
}

fn auth_server(extra: &[&str]) -> server_handle::Handle {
    let secret = path("hs.secret");
    let (ec, ed, rsa) = (path("ec.pub.pem"), path("ed.pub.pem"), path("rsa.pub.pem"));
    let mut args = vec![
        "--jwt-secret-file",
        &secret,
        "--jwt-public-key-file",
        &ec,
        "--jwt-public-key-file",
        &ed,
        "--jwt-public-key-file",
        &rsa,
    ];
    args.extend_from_slice(extra);
    server_handle::Handle(start(&args))
}

mod server_handle {
    pub(crate) struct Handle(pub crier::server::ServerHandle);
    impl Drop for Handle {
        fn drop(&mut self) {
            self.0.shutdown();
        }
    }
}

#[test]
fn every_configured_algorithm_opens_a_subscription_and_bad_tokens_get_401() {
    let server = auth_server(&[]);
    let addr = server.0.local_addr();
    let claims = json!({ "sub": "7", "exp": now() + 60, "subscribe": ["news.*"] });
    for signer in [
        Signer::Hs(256, "hs.secret"),
        Signer::Rs256("rsa.key.pem"),
        Signer::Es256("ec.key.pem"),
        Signer::EdDsa("ed.key.pem"),
    ] {
        let token = sign(signer, None, &claims);
        let (status, body) = upgrade(addr, &format!("/ws?topic=news.a&token={token}"), "");
        assert_eq!(status, 101, "{} {body}", signer.alg());
        // The same token in the Authorization header.
        let (status, _) = upgrade(
            addr,
            "/ws?topic=news.a",
            &format!("Authorization: Bearer {token}\r\n"),
        );
        assert_eq!(status, 101, "{} as Bearer", signer.alg());
    }
    let cases = [
        (
            hs(json!({ "exp": now() - 100, "subscribe": ["news.*"] })),
            "token expired",
        ),
        (
            hs(json!({ "exp": now() + 60, "nbf": now() + 600 })),
            "token not valid yet",
        ),
        (
            sign(Signer::Es256("ec2.key.pem"), None, &claims),
            "bad signature",
        ),
        (
            "eyJhbGciOiJub25lIn0.eyJleHAiOjF9.".to_string(),
            "token algorithm not allowed",
        ),
    ];
    for (token, reason) in cases {
        let (status, body) = upgrade(addr, &format!("/ws?topic=news.a&token={token}"), "");
        assert_eq!((status, body.trim()), (401, reason));
    }
    // No token, topic needing one: 401; valid token without the grant: 403.
    assert_eq!(upgrade(addr, "/ws?topic=news.a", "").0, 401);
    let token = hs(claims.clone());
    assert_eq!(
        upgrade(addr, &format!("/ws?topic=sport.a&token={token}"), "").0,
        403
    );
    // No topic and no token: the upgrade succeeds (the client may authenticate in-band).
    assert_eq!(upgrade(addr, "/ws", "").0, 101);
}

#[test]
fn wrong_audience_and_issuer_are_refused_at_the_upgrade() {
    let server = auth_server(&[
        "--jwt-audience",
        "crier",
        "--jwt-issuer",
        "https://app.example",
    ]);
    let addr = server.0.local_addr();
    let good = hs(
        json!({ "exp": now() + 60, "aud": "crier", "iss": "https://app.example", "subscribe": ["a"] }),
    );
    assert_eq!(
        upgrade(addr, &format!("/ws?topic=a&token={good}"), "").0,
        101
    );
    let aud = hs(
        json!({ "exp": now() + 60, "aud": "other", "iss": "https://app.example", "subscribe": ["a"] }),
    );
    assert_eq!(
        upgrade(addr, &format!("/ws?topic=a&token={aud}"), ""),
        (401, "wrong audience\n".into())
    );
    let iss =
        hs(json!({ "exp": now() + 60, "aud": "crier", "iss": "https://evil", "subscribe": ["a"] }));
    assert_eq!(
        upgrade(addr, &format!("/ws?topic=a&token={iss}"), ""),
        (401, "wrong issuer\n".into())
    );
}

/// A key rotation as an operator does it: both keys configured under their `kid`s while tokens
/// of both are in circulation, then the old one removed (a restart with the new config).
#[test]
fn kid_rotation_accepts_both_keys_then_only_the_new_one() {
    let (old, new) = (
        format!("old={}", path("ec.pub.pem")),
        format!("new={}", path("ec2.pub.pem")),
    );
    let (old_secret, new_secret) = (
        format!("hs-old={}", path("hs.secret")),
        format!("hs-new={}", path("hs2.secret")),
    );
    let claims = json!({ "sub": "7", "exp": now() + 60, "subscribe": ["news.*"] });
    let by_old = sign(Signer::Es256("ec.key.pem"), Some("old"), &claims);
    let by_new = sign(Signer::Es256("ec2.key.pem"), Some("new"), &claims);
    let hs_old = sign(Signer::Hs(256, "hs.secret"), Some("hs-old"), &claims);
    let hs_new = sign(Signer::Hs(256, "hs2.secret"), Some("hs-new"), &claims);
    // Signed by the old key but naming the new kid: checked against the new key only.
    let mislabelled = sign(Signer::Es256("ec.key.pem"), Some("new"), &claims);
    let status = |addr, token: &str| upgrade(addr, &format!("/ws?topic=news.a&token={token}"), "");

    let both = server_handle::Handle(start(&[
        "--jwt-public-key-file",
        &old,
        "--jwt-public-key-file",
        &new,
        "--jwt-secret-file",
        &old_secret,
        "--jwt-secret-file",
        &new_secret,
    ]));
    let addr = both.0.local_addr();
    for token in [&by_old, &by_new, &hs_old, &hs_new] {
        assert_eq!(status(addr, token).0, 101);
    }
    assert_eq!(status(addr, &mislabelled), (401, "bad signature\n".into()));
    drop(both);

    let rotated = server_handle::Handle(start(&[
        "--jwt-public-key-file",
        &new,
        "--jwt-secret-file",
        &new_secret,
    ]));
    let addr = rotated.0.local_addr();
    assert_eq!(status(addr, &by_new).0, 101);
    assert_eq!(status(addr, &hs_new).0, 101);
    assert_eq!(
        status(addr, &by_old),
        (401, "unknown key id (kid)\n".into())
    );
    assert_eq!(
        status(addr, &hs_old),
        (401, "unknown key id (kid)\n".into())
    );
}

fn error_code(client: &mut Client) -> String {
    let answer = next_json(client);
    assert_eq!(answer["op"], "error", "{answer}");
    answer["code"].as_str().unwrap().to_string()
}

#[test]
fn grant_matrix_in_band_with_anonymous_rules_and_refresh() {
    let server = auth_server(&["--anonymous-subscribe", "public.>"]);
    let addr = server.0.local_addr();
    let mut client = connect(addr, "/ws");
    // Anonymous: public.> only.
    subscribe(&mut client, "public.news");
    send_json(
        &mut client,
        json!({ "op": "subscribe", "topic": "user.7.inbox", "id": 2 }),
    );
    assert_eq!(error_code(&mut client), "unauthorized");
    send_json(
        &mut client,
        json!({ "op": "publish", "topic": "public.news", "data": 1, "id": 3 }),
    );
    assert_eq!(error_code(&mut client), "unauthorized");
    // A bad token in-band: error, the connection stays open.
    send_json(
        &mut client,
        json!({ "op": "auth", "token": "nope", "id": 4 }),
    );
    assert_eq!(error_code(&mut client), "unauthorized");
    // A token: the matrix over *, > and {sub}.
    let token = hs(json!({ "sub": "7", "exp": now() + 60,
        "subscribe": ["news.*", "user.{sub}.>"], "publish": ["chat.>"] }));
    send_json(
        &mut client,
        json!({ "op": "auth", "token": token, "id": 5 }),
    );
    assert_eq!(next_json(&mut client), json!({ "op": "ack", "id": 5 }));
    for (topic, allowed) in [
        ("news.a", true),
        ("news.a.b", false),
        ("news", false),
        ("user.7.inbox", true),
        ("user.7.a.b", true),
        ("user.7", false),
        ("user.8.inbox", false),
    ] {
        send_json(
            &mut client,
            json!({ "op": "subscribe", "topic": topic, "id": 1 }),
        );
        if allowed {
            assert_eq!(
                next_json(&mut client),
                json!({ "op": "ack", "id": 1 }),
                "{topic}"
            );
        } else {
            assert_eq!(error_code(&mut client), "forbidden", "{topic}");
        }
    }
    send_json(
        &mut client,
        json!({ "op": "publish", "topic": "chat.room1", "data": 1, "id": 6 }),
    );
    let ack = next_json(&mut client);
    assert_eq!(ack["op"], "ack", "{ack}");
    send_json(
        &mut client,
        json!({ "op": "publish", "topic": "news.a", "data": 1, "id": 7 }),
    );
    assert_eq!(error_code(&mut client), "forbidden");
    // Refresh with other grants: they replace the old ones.
    let token = hs(json!({ "sub": "7", "exp": now() + 60, "subscribe": ["sport.*"] }));
    send_json(
        &mut client,
        json!({ "op": "auth", "token": token, "id": 8 }),
    );
    assert_eq!(next_json(&mut client), json!({ "op": "ack", "id": 8 }));
    subscribe(&mut client, "sport.a");
    send_json(
        &mut client,
        json!({ "op": "subscribe", "topic": "news.b", "id": 9 }),
    );
    assert_eq!(error_code(&mut client), "forbidden");
}

#[test]
fn an_expired_token_closes_with_4001_unless_refreshed() {
    // Zero leeway: the token expires at `exp` exactly.
    let server = auth_server(&["--jwt-leeway", "0s", "--anonymous-publish", "a"]);
    let addr = server.0.local_addr();
    let short = |secs| hs(json!({ "exp": now() + secs, "subscribe": ["a"] }));
    let mut refreshed = connect(addr, &format!("/ws?topic=a&token={}", short(2)));
    let mut expiring = connect(addr, &format!("/ws?topic=a&token={}", short(2)));
    send_json(
        &mut refreshed,
        json!({ "op": "auth", "token": short(60), "id": 1 }),
    );
    assert_eq!(next_json(&mut refreshed), json!({ "op": "ack", "id": 1 }));
    let error = next_json(&mut expiring);
    assert_eq!(error["code"], "token_expired", "{error}");
    match next_data(&mut expiring) {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4001),
        other => panic!("expected close 4001, got {other:?}"),
    }
    // The refreshed one is still subscribed.
    let (status, _) = http_publish(addr, "a", "application/json", b"1");
    assert_eq!(status, 200);
    let message = next_json(&mut refreshed);
    assert_eq!(message["op"], "message", "{message}");
}

fn publish_with(
    addr: std::net::SocketAddr,
    topic: &str,
    bearer: Option<&str>,
) -> (u16, String, String) {
    let mut stream = tcp(addr);
    let auth = bearer
        .map(|b| format!("Authorization: Bearer {b}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /publish/{topic} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{auth}Content-Length: 1\r\n\r\n1"
    );
    stream.write_all(head.as_bytes()).unwrap();
    read_response_with_head(&mut stream)
}

#[test]
fn http_publish_needs_an_api_key_or_a_publish_grant_when_keys_are_set() {
    let dir = std::env::temp_dir().join(format!("crier-auth-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("api-keys");
    std::fs::write(&keys, "# backend\nbackend-key-0123456789\n").unwrap();
    let keys = keys.to_string_lossy().into_owned();

    // API keys on, no JWT keys: WebSockets stay open, the API needs the key.
    let open_ws = server_handle::Handle(start(&["--api-key-file", &keys]));
    let addr = open_ws.0.local_addr();
    let (status, head, _) = publish_with(addr, "a", None);
    assert_eq!(status, 401);
    assert_eq!(header(&head, "www-authenticate"), Some("Bearer"));
    assert_eq!(publish_with(addr, "a", Some("wrong-key-0123456789")).0, 401);
    assert_eq!(
        publish_with(addr, "a", Some("backend-key-0123456789")).0,
        200
    );
    drop(open_ws);

    // Both: the key, or a JWT with a publish grant for the topic.
    let both = auth_server(&["--api-key-file", &keys]);
    let addr = both.0.local_addr();
    assert_eq!(
        publish_with(addr, "alerts.a", Some("backend-key-0123456789")).0,
        200
    );
    let token = hs(json!({ "exp": now() + 60, "publish": ["alerts.>"] }));
    assert_eq!(publish_with(addr, "alerts.a", Some(&token)).0, 200);
    assert_eq!(publish_with(addr, "other", Some(&token)).0, 403);
    assert_eq!(publish_with(addr, "alerts.a", None).0, 401);

    // API keys off, JWT on: the anonymous rules or a token.
    let jwt_only = auth_server(&["--anonymous-publish", "open.*"]);
    let addr = jwt_only.0.local_addr();
    assert_eq!(publish_with(addr, "open.a", None).0, 200);
    assert_eq!(publish_with(addr, "closed", None).0, 401);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn without_keys_everything_stays_open() {
    let server = server_handle::Handle(start(&[]));
    let addr = server.0.local_addr();
    assert_eq!(upgrade(addr, "/ws?topic=anything", "").0, 101);
    assert_eq!(publish_with(addr, "anything", None).0, 200);
}

/// `GET /history/<topic>` with an optional bearer: (status, head, body).
fn history_with(addr: std::net::SocketAddr, topic: &str, bearer: Option<&str>) -> (u16, String) {
    let mut stream = tcp(addr);
    let auth = bearer
        .map(|b| format!("Authorization: Bearer {b}\r\n"))
        .unwrap_or_default();
    let head = format!("GET /history/{topic} HTTP/1.1\r\nHost: test\r\n{auth}\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let (status, head, body) = read_response_with_head(&mut stream);
    if status == 401 {
        assert_eq!(header(&head, "www-authenticate"), Some("Bearer"), "{head}");
    }
    (status, body)
}

#[test]
fn http_history_needs_the_subscribe_permission() {
    let dir = std::env::temp_dir().join(format!("crier-auth-history-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("api-keys");
    std::fs::write(&keys, "backend-key-0123456789\n").unwrap();
    let keys = keys.to_string_lossy().into_owned();
    let server = auth_server(&["--api-key-file", &keys, "--anonymous-subscribe", "public.*"]);
    let addr = server.0.local_addr();
    let reader = hs(json!({ "exp": now() + 60, "subscribe": ["news.*"], "publish": ["x"] }));
    let (status, body) = history_with(addr, "news.a", Some(&reader));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        json!({"epoch": null, "top": 0, "messages": []})
    );
    let (status, body) = history_with(addr, "x", Some(&reader));
    assert_eq!(
        status, 403,
        "a publish grant is not a subscribe grant: {body}"
    );
    assert!(body.contains(r#""code":"forbidden""#), "{body}");
    let (status, body) = history_with(addr, "news.a", None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains(r#""code":"unauthorized""#), "{body}");
    assert_eq!(
        history_with(addr, "public.a", None).0,
        200,
        "anonymous rules"
    );
    assert_eq!(
        history_with(addr, "news.a", Some("backend-key-0123456789")).0,
        200,
        "an API key reads any topic"
    );
    assert_eq!(history_with(addr, "news.a", Some("guess")).0, 401);
    let _ = std::fs::remove_dir_all(dir);
}
