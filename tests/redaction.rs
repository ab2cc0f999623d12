//! Scenario: the real `crier` binary with auth on receives tokens every way a client can send
//! them (in the upgrade URL, in `Authorization`, in-band, on `POST /publish`), refused for
//! every reason (bad signature, malformed, malformed request around it), then stops on
//! SIGTERM: nothing it wrote to stderr contains any of those secrets.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
#[path = "common/openssl_jwt.rs"]
mod openssl_jwt;
use openssl_jwt::{fixture, sign, Signer};
use serde_json::json;

/// A distinctive text that must never show up in the log.
const SECRET: &str = "Zq7secretTOKENvalue";

fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = tcp(addr);
    stream.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn refused_tokens_never_reach_stderr() {
    let secret_file = fixture("hs.secret").to_string_lossy().into_owned();
    let mut child = Command::new(env!("CARGO_BIN_EXE_crier"))
        .args(["--listen", "127.0.0.1:0", "--threads", "2"])
        .args(["--jwt-secret-file", &secret_file, "--drain-timeout", "1s"])
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the crier binary");
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let mut log = Vec::new();
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let addr: std::net::SocketAddr = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("crier logs its address");
        log.push(line.clone());
        if let Some(rest) = line.split(" listening on ").nth(1) {
            break rest.split(' ').next().unwrap().parse().unwrap();
        }
    };

    // A well-formed token signed with the wrong key, carrying the secret in its claims.
    let claims = json!({ "sub": SECRET, "exp": 4_000_000_000u64, "subscribe": ["news.*"] });
    let forged = sign(Signer::Hs(256, "hs2.secret"), None, &claims);
    let upgrade = |target: &str, extra: &str| {
        format!(
            "GET {target} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    };
    let answers = [
        exchange(
            addr,
            &upgrade(&format!("/ws?topic=news.a&token={forged}"), ""),
        ),
        exchange(
            addr,
            &upgrade(&format!("/ws?topic=news.a&token={SECRET}"), ""),
        ),
        exchange(
            addr,
            &upgrade(
                "/ws?topic=news.a",
                &format!("Authorization: Bearer {SECRET}\r\n"),
            ),
        ),
        // Malformed around the token: no Host, then a bad version.
        exchange(addr, &format!("GET /ws?token={SECRET} HTTP/1.1\r\n\r\n")),
        exchange(
            addr,
            &format!("GET /ws?token={SECRET} HTTP/9.9\r\nHost: t\r\n\r\n"),
        ),
        exchange(
            addr,
            &format!(
                "POST /publish/news.a?token={SECRET} HTTP/1.1\r\nHost: t\r\n\
                 Authorization: Bearer {SECRET}\r\nContent-Type: application/json\r\n\
                 Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            ),
        ),
    ];
    for answer in &answers {
        let status = &answer[9..12];
        assert!(["400", "401", "505"].contains(&status), "{answer}");
    }
    // In-band, on an open connection.
    let mut client = connect(addr, "/ws");
    send_json(&mut client, json!({"op": "auth", "token": forged, "id": 1}));
    assert_eq!(next_json(&mut client)["code"], "unauthorized");
    drop(client);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill(1)");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "crier did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The reader thread ends at EOF, once the process is gone.
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(2)) {
        log.push(line);
    }
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let all = format!("{}\n{stdout}", log.join("\n"));
    assert!(
        all.contains("crier: stopped"),
        "the whole log was read: {all}"
    );
    for secret in [SECRET, forged.as_str(), forged.rsplit('.').next().unwrap()] {
        assert!(
            !all.contains(secret),
            "{secret:?} appears in the log:\n{all}"
        );
    }
}
