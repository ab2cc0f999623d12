//! Static files served over plain HTTP (`GET /`, `GET /crier.js`), embedded in the binary so a
//! deployment is one file.

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub content_type: &'static str,
    pub cache_control: &'static str,
    pub body: &'static [u8],
}

/// Every embedded file by request path.
const ASSETS: &[(&str, Asset)] = &[];

/// The asset served at `path`, if any.
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS
        .iter()
        .find(|(asset_path, _)| *asset_path == path)
        .map(|(_, asset)| asset)
}
