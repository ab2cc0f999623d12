//! Static files served over plain HTTP (`GET /`, `GET /crier.js`), embedded in the binary so a
//! deployment is one file.

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub content_type: &'static str,
    pub cache_control: &'static str,
    pub body: &'static [u8],
}

/// Every embedded file by request path. The page changes with the binary, so browsers must
/// revalidate (`no-cache`); both files are small.
const ASSETS: &[(&str, Asset)] = &[
    (
        "/",
        Asset {
            content_type: "text/html; charset=utf-8",
            cache_control: "no-cache",
            body: include_bytes!("../web/index.html"),
        },
    ),
    (
        "/index.html",
        Asset {
            content_type: "text/html; charset=utf-8",
            cache_control: "no-cache",
            body: include_bytes!("../web/index.html"),
        },
    ),
    (
        "/crier.js",
        Asset {
            content_type: "text/javascript; charset=utf-8",
            cache_control: "no-cache",
            body: include_bytes!("../web/crier.js"),
        },
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
}
