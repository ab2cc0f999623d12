//! Payload masking (RFC 6455 §5.3): XOR with a 4-byte key, resumable at any payload offset so
//! a frame can be unmasked across reads. Safe code only: eight bytes at a time via `u64`.

/// XORs `buf` with `key`, where `offset` is how many payload bytes of this frame came before
/// `buf` (RFC 6455 §5.3: byte i of the payload uses `key[i % 4]`). Masking and unmasking are
/// the same operation.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let mut key = key;
    key.rotate_left(offset % 4);
    // Chunks are 8 bytes, a multiple of 4, so every chunk starts at key position 0.
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

/// The byte-at-a-time reference for `apply_mask`, kept for differential tests and benchmarks.
pub fn apply_mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= key[(offset + i) % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_section_5_7_masked_hello() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut payload, key, 0);
        assert_eq!(&payload, b"Hello");
    }

    #[test]
    fn word_masking_matches_bytewise_at_every_length_offset_and_alignment() {
        let key = [0x12, 0x34, 0x56, 0x78];
        let source: Vec<u8> = (0..90u32).map(|i| (i * 37 + 11) as u8).collect();
        for len in 0..=70 {
            for offset in 0..8 {
                for align in 0..8 {
                    let mut fast = source.clone();
                    let mut slow = source.clone();
                    apply_mask(&mut fast[align..align + len], key, offset);
                    apply_mask_bytewise(&mut slow[align..align + len], key, offset);
                    assert_eq!(fast, slow, "len {len} offset {offset} align {align}");
                }
            }
        }
    }

    #[test]
    fn masking_resumes_across_splits() {
        let key = [1, 2, 3, 4];
        let original: Vec<u8> = (0..100).collect();
        let mut whole = original.clone();
        apply_mask(&mut whole, key, 0);
        for split in 0..=100 {
            let mut parts = original.clone();
            let (a, b) = parts.split_at_mut(split);
            apply_mask(a, key, 0);
            apply_mask(b, key, split);
            assert_eq!(parts, whole, "split {split}");
        }
    }
}
