//! Incremental UTF-8 validation for Text messages and close reasons that arrive in pieces
//! (RFC 6455 §8.1). Fails as soon as the bytes seen so far can no longer begin valid UTF-8,
//! even in the middle of a code point split across chunks. Keeps at most 3 bytes; never copies.

/// The input is not (or can no longer become) valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

/// Validates a UTF-8 byte stream fed in chunks of any size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    /// The bytes of an incomplete code point at the end of the last chunk (a valid prefix).
    partial: [u8; 4],
    partial_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a stream.
    pub fn new() -> Utf8Validator {
        Utf8Validator::default()
    }

    /// Validates the next chunk. Fails as soon as the stream cannot be valid UTF-8.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), InvalidUtf8> {
        let mut rest = chunk;
        if self.partial_len > 0 {
            let have = usize::from(self.partial_len);
            let width = sequence_width(self.partial[0]);
            let take = (width - have).min(rest.len());
            self.partial[have..have + take].copy_from_slice(&rest[..take]);
            let candidate = &self.partial[..have + take];
            match std::str::from_utf8(candidate) {
                Ok(_) => self.partial_len = 0,
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                // Still a valid prefix: the chunk ended inside the code point.
                Err(_) => {
                    self.partial_len = (have + take) as u8;
                    return Ok(());
                }
            }
            rest = &rest[take..];
        }
        match std::str::from_utf8(rest) {
            Ok(_) => Ok(()),
            // `error_len() == None` means the input ended inside a code point whose bytes so far
            // are a valid prefix: std checks the second byte's range (0xE0 0xA0.., 0xED ..0x9F,
            // 0xF0 0x90.., 0xF4 ..0x8F), so `0xED 0xA0` or `0xF4 0x90` already fail here.
            Err(e) if e.error_len().is_none() => {
                let tail = &rest[e.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Ends the stream: fails if it stopped inside a code point. Resets for the next message.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.partial_len == 0;
        self.reset();
        if complete {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }

    /// Forgets any partial code point.
    pub fn reset(&mut self) {
        self.partial_len = 0;
    }
}

/// The length of the sequence a lead byte starts; only called on leads std accepted as prefixes.
fn sequence_width(lead: u8) -> usize {
    match lead {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(chunks: &[&[u8]]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        for chunk in chunks {
            v.feed(chunk)?;
        }
        v.finish()
    }

    #[test]
    fn valid_text_at_every_split() {
        let text = "κόσμε a€𝄞 Hello-µ@ßöäüàá-UTF-8!!".as_bytes();
        for a in 0..=text.len() {
            for b in a..=text.len() {
                assert_eq!(
                    feed_all(&[&text[..a], &text[a..b], &text[b..]]),
                    Ok(()),
                    "{a} {b}"
                );
            }
        }
    }

    #[test]
    fn fails_fast_on_impossible_prefixes() {
        // Autobahn 6.4.x: the error must be seen before the rest of the code point arrives.
        for prefix in [
            &[0xC0][..],
            &[0xC1],
            &[0xF5],
            &[0xFF],
            &[0x80],
            &[0xED, 0xA0],
            &[0xF4, 0x90],
            &[0xE0, 0x80],
            &[0xF0, 0x80],
        ] {
            let mut v = Utf8Validator::new();
            assert_eq!(v.feed(prefix), Err(InvalidUtf8), "{prefix:x?}");
            // The same bytes one per chunk fail too, at the latest on the last one.
            let mut v = Utf8Validator::new();
            let failed = prefix.iter().any(|b| v.feed(&[*b]).is_err());
            assert!(failed, "{prefix:x?} bytewise");
        }
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xCE, 0xBA, 0xE1]), Ok(()));
        assert_eq!(v.feed(&[0xBD]), Ok(()));
        assert_eq!(v.feed(&[0x41]), Err(InvalidUtf8));
    }

    #[test]
    fn incomplete_at_finish_fails_and_reset_clears() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xF0, 0x9D]), Ok(()));
        assert_eq!(v.finish(), Err(InvalidUtf8));
        assert_eq!(v.finish(), Ok(()));
        assert_eq!(v.feed(&[0xE2, 0x82]), Ok(()));
        v.reset();
        assert_eq!(v.feed(b"ok"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn agrees_with_std_on_every_two_byte_sequence_split_in_two() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let bytes = [a, b];
                let expected = std::str::from_utf8(&bytes).is_ok();
                assert_eq!(
                    feed_all(&[&bytes[..1], &bytes[1..]]).is_ok(),
                    expected,
                    "{a:x} {b:x}"
                );
            }
        }
    }
}
