//! Scenario: crier started with `--metrics-listen` on a second loopback port: `/metrics` is
//! served there (with the shards' live counters) and answers 404 on the main port, the second
//! port serves nothing else but `/healthz`, and the server still stops promptly.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn metrics_move_to_their_own_listener() {
    let server = start(&["--threads", "2", "--metrics-listen", "127.0.0.1:0"]);
    let addr = server.local_addr();
    let metrics = server.metrics_addr().expect("a metrics address");
    assert_ne!(metrics.port(), addr.port());

    // Some traffic on the main port, so the counters move.
    let mut client = connect(addr, "/ws");
    subscribe(&mut client, "t");

    let (status, head, body) = http_get(metrics, "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(
        header(&head, "content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{head}"
    );
    eventually(Duration::from_secs(5), "a live subscription count", || {
        let (_, _, body) = http_get(metrics, "/metrics");
        body.lines().any(|l| l == "crier_subscriptions 1")
    });
    assert!(body.contains("crier_connections_accepted_total"), "{body}");
    assert_eq!(http_get(metrics, "/healthz").0, 200);
    assert_eq!(http_get(metrics, "/ws").0, 404);
    assert_eq!(http_get(metrics, "/publish/t").0, 404);

    // Not on the main port any more; the rest of it is unchanged.
    let (status, _, body) = http_get(addr, "/metrics");
    assert_eq!(status, 404, "{body}");
    assert_eq!(http_get(addr, "/healthz").0, 200);

    // A scraper that connects and sends nothing does not stop the next one for long.
    let idle = tcp(metrics);
    assert_eq!(http_get(metrics, "/healthz").0, 200);
    drop(idle);

    stop(server, Duration::from_secs(5));
    assert!(
        std::net::TcpStream::connect(metrics).is_err(),
        "the metrics listener is closed after stop"
    );
}
