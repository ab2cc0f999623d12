//! Scenario: an operator stops the real `crier` binary with SIGTERM behind a load balancer.
//! With `--drain-delay`, `/readyz` turns 503 at once while the broker goes on accepting and
//! delivering; when the delay is over every WebSocket gets close 1001 and the process exits 0.
//! A second signal cuts the delay short.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

/// A running `crier` binary and its stderr, line by line.
struct Broker {
    child: Child,
    addr: SocketAddr,
    log: mpsc::Receiver<String>,
}

impl Broker {
    fn start(args: &[&str]) -> Broker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crier"))
            .args(["--listen", "127.0.0.1:0", "--threads", "2"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the crier binary");
        let stderr = child.stderr.take().unwrap();
        let (lines, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut broker = Broker {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            log,
        };
        let line = broker.wait_for_log(" listening on ");
        let addr = line.split(" listening on ").nth(1).unwrap();
        broker.addr = addr.split(' ').next().unwrap().parse().unwrap();
        broker
    }

    /// The next stderr line containing `needle` (earlier lines are skipped).
    fn wait_for_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no log line with {needle:?} within {ANSWER_TIMEOUT:?}"),
            }
        }
    }

    /// Sends `signal` ("TERM", "INT") with kill(1): the tests stay free of `unsafe`.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit within `within` and returns whether it exited 0.
    fn exits_cleanly_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "crier still running after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn during_the_drain_delay_readyz_is_503_while_connections_are_still_accepted_and_served() {
    let mut broker = Broker::start(&["--drain-delay", "2s"]);
    let addr = broker.addr;
    assert_eq!(http_get(addr, "/readyz").0, 200);
    let mut early = connect(addr, "/ws");
    subscribe(&mut early, "news");

    broker.signal("TERM");
    broker.wait_for_log("drain delay");
    let (status, _, body) = http_get(addr, "/readyz");
    assert_eq!((status, body.trim()), (503, "draining"));
    let (status, _, body) = http_get(addr, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    // Still accepting new WebSockets, and still delivering to old and new ones alike.
    let mut late = connect(addr, "/ws");
    subscribe(&mut late, "news");
    let (status, _) = http_publish(addr, "news", "application/json", b"\"still here\"");
    assert_eq!(status, 200);
    for client in [&mut early, &mut late] {
        let message = next_json(client);
        assert_eq!(
            (message["op"].as_str(), message["data"].as_str()),
            (Some("message"), Some("still here"))
        );
    }

    // Then the drain proper: close 1001 to both, and a clean exit.
    for client in [&mut early, &mut late] {
        match client.read() {
            Ok(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Away),
            other => panic!("expected close 1001, got {other:?}"),
        }
    }
    broker.wait_for_log("drain delay over");
    assert!(broker.exits_cleanly_within(ANSWER_TIMEOUT));
}

#[test]
fn a_second_signal_cuts_the_drain_delay_short() {
    let mut broker = Broker::start(&["--drain-delay", "300s"]);
    let mut client = connect(broker.addr, "/ws");
    subscribe(&mut client, "news");
    broker.signal("TERM");
    broker.wait_for_log("drain delay");
    assert_eq!(http_get(broker.addr, "/readyz").0, 503);
    broker.signal("INT");
    broker.wait_for_log("draining now");
    match client.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected close 1001, got {other:?}"),
    }
    // 300 s of delay skipped: the process is gone well before it would have ended.
    assert!(broker.exits_cleanly_within(ANSWER_TIMEOUT));
}
