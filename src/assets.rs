//! Static files served over plain HTTP (`GET /`, `GET /crier.js`), embedded in the binary so a
//! deployment is one file, with the validator (`ETag`) that lets browsers revalidate them.

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub content_type: &'static str,
    pub cache_control: &'static str,
    pub body: &'static [u8],
    /// The strong `ETag`: a hash of `body` as 16 hex digits in quotes, fixed at compile time.
    etag: [u8; 18],
}

impl Asset {
    const fn new(content_type: &'static str, body: &'static [u8]) -> Asset {
        Asset {
            content_type,
            cache_control: "no-cache",
            body,
            etag: quoted_hex(fnv1a64(body)),
        }
    }

    /// The `ETag` header value: `"<16 hex digits>"`.
    pub fn etag(&self) -> &str {
        // Always ASCII: built by `quoted_hex`.
        std::str::from_utf8(&self.etag).unwrap_or_default()
    }

    /// Whether an `If-None-Match` field value names this asset's current version (RFC 9110
    /// §13.1.2: `*` or a list of entity tags compared weakly, so `W/"x"` matches `"x"`).
    pub fn is_not_modified(&self, if_none_match: &[u8]) -> bool {
        crate::proto::http::list_elements(if_none_match).any(|tag| {
            let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
            tag == b"*" || tag == self.etag
        })
    }
}

/// `value` as 16 lowercase hex digits between double quotes.
const fn quoted_hex(value: u64) -> [u8; 18] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = DIGITS[((value >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

/// FNV-1a, 64 bits: enough to tell two builds' files apart, and computable in a `const`.
const fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// Every embedded file by request path. The files change with the binary, so browsers must
/// revalidate (`no-cache`) and get `304 Not Modified` while their copy is current.
const ASSETS: &[(&str, Asset)] = &[
    (
        "/",
        Asset::new(
            "text/html; charset=utf-8",
            include_bytes!("../web/index.html"),
        ),
    ),
    (
        "/index.html",
        Asset::new(
            "text/html; charset=utf-8",
            include_bytes!("../web/index.html"),
        ),
    ),
    (
        "/crier.js",
        Asset::new(
            "text/javascript; charset=utf-8",
            include_bytes!("../web/crier.js"),
        ),
    ),
];

/// The asset served at `path`, if any.
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS
        .iter()
        .find(|(asset_path, _)| *asset_path == path)
        .map(|(_, asset)| asset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_the_client_are_embedded() {
        let page = find("/").expect("the demo page");
        assert!(page.content_type.starts_with("text/html"));
        assert!(std::str::from_utf8(page.body).unwrap().contains("crier.js"));
        let client = find("/crier.js").expect("the browser client");
        assert!(client.content_type.starts_with("text/javascript"));
        assert!(std::str::from_utf8(client.body)
            .unwrap()
            .contains("root.Crier = Crier"));
        assert!(find("/nope").is_none());
    }

    #[test]
    fn etags_name_the_content_and_if_none_match_is_compared_weakly() {
        let page = find("/").unwrap();
        let client = find("/crier.js").unwrap();
        assert_ne!(page.etag(), client.etag());
        assert_eq!(page.etag(), find("/index.html").unwrap().etag());
        let tag = client.etag();
        assert_eq!(tag.len(), 18);
        assert!(client.is_not_modified(tag.as_bytes()));
        assert!(client.is_not_modified(format!("W/{tag}").as_bytes()));
        assert!(client.is_not_modified(format!("\"other\", {tag}").as_bytes()));
        assert!(client.is_not_modified(b"*"));
        assert!(!client.is_not_modified(b"\"0000000000000000\""));
        assert!(!client.is_not_modified(page.etag().as_bytes()));
        assert!(!client.is_not_modified(b""));
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(&quoted_hex(0xaf63_dc4c_8601_ec8c), b"\"af63dc4c8601ec8c\"");
    }
}
