//! Scenario: a browser loads the embedded demo page and `crier.js` over real HTTP, then
//! revalidates them: the first answer carries the content type, `Cache-Control: no-cache` and
//! an `ETag`; a request with that tag in `If-None-Match` gets `304 Not Modified` without a
//! body, on the same keep-alive connection, which stays usable.

mod common;

use std::io::Write;

use common::*;

fn exchange(stream: &mut std::net::TcpStream, request: &str) -> (u16, String, String) {
    stream.write_all(request.as_bytes()).unwrap();
    read_response_with_head(stream)
}

#[test]
fn assets_carry_an_etag_and_revalidate_to_304_on_a_kept_alive_connection() {
    let server = start(&[]);
    let mut stream = tcp(server.local_addr());
    for (path, content_type, marker) in [
        (
            "/crier.js",
            "text/javascript; charset=utf-8",
            "root.Crier = Crier",
        ),
        ("/", "text/html; charset=utf-8", "/crier.js"),
    ] {
        let (status, head, body) = exchange(
            &mut stream,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"),
        );
        assert_eq!(status, 200, "{head}");
        assert_eq!(header(&head, "content-type"), Some(content_type));
        assert_eq!(header(&head, "cache-control"), Some("no-cache"));
        assert!(body.contains(marker), "{path} body");
        let etag = header(&head, "etag").expect("an ETag").to_string();
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() == 18,
            "{etag}"
        );

        let revalidate = format!("GET {path} HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}\r\n\r\n");
        let (status, head, body) = exchange(&mut stream, &revalidate);
        assert_eq!(status, 304, "{head}");
        assert_eq!(header(&head, "etag"), Some(etag.as_str()));
        assert_eq!(header(&head, "content-length"), None);
        assert!(body.is_empty());

        let stale = format!("GET {path} HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"0\"\r\n\r\n");
        let (status, _, body) = exchange(&mut stream, &stale);
        assert_eq!(status, 200);
        assert!(body.contains(marker));
    }
    let (status, _, body) = exchange(&mut stream, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((status, body.trim()), (200, "ok"));
    stop(server, std::time::Duration::from_secs(5));
}
