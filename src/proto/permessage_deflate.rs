//! permessage-deflate negotiation (RFC 7692 §5, §7.1): the client's offers in, the first one we
//! can honour out, with its response line. Decides parameters only; compressing is `deflate.rs`,
//! inflating is `inflate.rs`.
//!
//! The server always answers `server_no_context_takeover` (RFC 7692 §7.1.1.1 lets it add the
//! parameter unasked): every message we send is compressed from an empty window, which is
//! what lets one deflated frame per publish be valid for every subscriber.

use std::fmt;

use super::extension::{parse_extensions, Extension};

/// The extension token (RFC 7692 §5).
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// The smallest window we compress with. zlib-style deflaters cannot produce a raw stream with
/// a 256-byte window (window bits 8), so an offer that demands `server_max_window_bits=8` is
/// declined and window 8 is never used.
pub const MIN_SERVER_WINDOW_BITS: u8 = 9;

/// The largest LZ77 window, 32 KiB (RFC 7692 §7.1.2).
pub const MAX_WINDOW_BITS: u8 = 15;

/// What the server asks of clients beyond the offer (server policy, from configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflatePolicy {
    /// Answer `client_no_context_takeover` to every accepted offer (RFC 7692 §7.1.1.2 allows it
    /// unasked). The client then compresses each message on its own, so our inflate state lives
    /// only while a compressed message is being received instead of for the whole connection.
    pub client_no_context_takeover: bool,
    /// When the client offers `client_max_window_bits`, answer at most this value (9..=15): the
    /// window our inflater keeps for a client that takes over context.
    pub client_max_window_bits: u8,
}

impl Default for DeflatePolicy {
    fn default() -> Self {
        DeflatePolicy {
            client_no_context_takeover: true,
            client_max_window_bits: MAX_WINDOW_BITS,
        }
    }
}

/// The parameters both ends agreed on for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The largest window we may use when compressing towards the client (9..=15). Since every
    /// message starts from an empty window, a deflated message of at most `1 << bits` bytes is
    /// valid for this peer whatever window it was compressed with.
    pub server_max_window_bits: u8,
    /// The window the client compresses with (8..=15); our inflater needs at least this much.
    pub client_max_window_bits: u8,
    /// Whether the client resets its compressor after each message (our inflate state is then
    /// per message, not per connection).
    pub client_no_context_takeover: bool,
}

impl DeflateParams {
    /// Whether a message deflated from an empty window, `uncompressed_len` bytes long, may be
    /// sent to this peer: its back-references reach at most `uncompressed_len - 1` bytes, so
    /// they fit the negotiated window when the message does (RFC 7692 §7.1.2.1).
    pub fn fits_window(&self, uncompressed_len: usize) -> bool {
        self.server_max_window_bits >= MAX_WINDOW_BITS
            || uncompressed_len <= 1usize << self.server_max_window_bits
    }

    /// The `Sec-WebSocket-Extensions` value of the server's response.
    fn response(&self, policy_capped_client_bits: bool, offered_server_bits: bool) -> String {
        let mut out = String::from("permessage-deflate; server_no_context_takeover");
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if offered_server_bits {
            out.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_max_window_bits
            ));
        }
        if policy_capped_client_bits {
            out.push_str(&format!(
                "; client_max_window_bits={}",
                self.client_max_window_bits
            ));
        }
        out
    }
}

/// Why one permessage-deflate offer was declined (RFC 7692 §7.1: "A server MUST decline...").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferDeclined {
    /// The element is not valid extension syntax (RFC 6455 §9.1).
    Malformed,
    /// A parameter RFC 7692 does not define for an offer.
    UnknownParam,
    /// The same parameter twice.
    DuplicateParam,
    /// A parameter value that is not allowed (e.g. a value on `server_no_context_takeover`, a
    /// window outside 8..=15, leading zeros, or `server_max_window_bits` with no value).
    InvalidValue,
    /// A valid configuration we do not support: `server_max_window_bits=8`.
    Unsupported,
}

impl fmt::Display for OfferDeclined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OfferDeclined::Malformed => "malformed extension element",
            OfferDeclined::UnknownParam => "unknown permessage-deflate parameter",
            OfferDeclined::DuplicateParam => "repeated permessage-deflate parameter",
            OfferDeclined::InvalidValue => "invalid permessage-deflate parameter value",
            OfferDeclined::Unsupported => "server_max_window_bits below 9 is not supported",
        })
    }
}

impl std::error::Error for OfferDeclined {}

/// The accepted offer: the agreed parameters and the response field value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// What both ends agreed.
    pub params: DeflateParams,
    /// The value of the `Sec-WebSocket-Extensions` response field.
    pub response: String,
}

/// Picks the first permessage-deflate offer we can honour from the `Sec-WebSocket-Extensions`
/// field values of a request, in order (RFC 7692 §5: the client lists offers by preference).
/// Declined offers are skipped; `None` means no compression, never a failed handshake.
pub fn negotiate<'a>(
    field_values: impl IntoIterator<Item = &'a [u8]>,
    policy: &DeflatePolicy,
) -> Option<Negotiated> {
    field_values
        .into_iter()
        .flat_map(parse_extensions)
        .filter_map(|element| match element {
            Ok(ext) if ext.name.eq_ignore_ascii_case(EXTENSION_NAME) => {
                Some(accept_offer(&ext, policy))
            }
            Ok(_) => None,
            // A broken element might have been ours; nothing to accept either way.
            Err(_) => None,
        })
        .find_map(Result::ok)
}

/// Checks one permessage-deflate offer (RFC 7692 §7.1) and builds our answer to it.
pub fn accept_offer(
    offer: &Extension<'_>,
    policy: &DeflatePolicy,
) -> Result<Negotiated, OfferDeclined> {
    #[derive(Default)]
    struct Seen {
        server_no_context_takeover: bool,
        client_no_context_takeover: bool,
        server_max_window_bits: Option<u8>,
        client_max_window_bits: Option<Option<u8>>,
    }
    let mut seen = Seen::default();
    for param in &offer.params {
        let value = param.value.as_deref();
        let name = param.name.to_ascii_lowercase();
        match name.as_str() {
            "server_no_context_takeover" | "client_no_context_takeover" => {
                // RFC 7692 §7.1.1.1, §7.1.1.2: these parameters have no value.
                if value.is_some() {
                    return Err(OfferDeclined::InvalidValue);
                }
                let flag = if name.starts_with("server") {
                    &mut seen.server_no_context_takeover
                } else {
                    &mut seen.client_no_context_takeover
                };
                if *flag {
                    return Err(OfferDeclined::DuplicateParam);
                }
                *flag = true;
            }
            "server_max_window_bits" => {
                if seen.server_max_window_bits.is_some() {
                    return Err(OfferDeclined::DuplicateParam);
                }
                // RFC 7692 §7.1.2.1: in an offer this parameter has a value.
                let bits = value
                    .and_then(window_bits)
                    .ok_or(OfferDeclined::InvalidValue)?;
                seen.server_max_window_bits = Some(bits);
            }
            "client_max_window_bits" => {
                if seen.client_max_window_bits.is_some() {
                    return Err(OfferDeclined::DuplicateParam);
                }
                // RFC 7692 §7.1.2.2: the value is optional in an offer.
                let bits = match value {
                    None => None,
                    Some(v) => Some(window_bits(v).ok_or(OfferDeclined::InvalidValue)?),
                };
                seen.client_max_window_bits = Some(bits);
            }
            _ => return Err(OfferDeclined::UnknownParam),
        }
    }
    let server_max_window_bits = match seen.server_max_window_bits {
        Some(bits) if bits < MIN_SERVER_WINDOW_BITS => return Err(OfferDeclined::Unsupported),
        Some(bits) => bits,
        None => MAX_WINDOW_BITS,
    };
    let cap = policy
        .client_max_window_bits
        .clamp(MIN_SERVER_WINDOW_BITS, MAX_WINDOW_BITS);
    // RFC 7692 §7.1.2.2: we may answer client_max_window_bits only when it was offered, with
    // a value no larger than the offered one; without an answer the client uses what it offered.
    let (client_max_window_bits, capped) = match seen.client_max_window_bits {
        None => (MAX_WINDOW_BITS, false),
        Some(None) => (cap, cap < MAX_WINDOW_BITS),
        Some(Some(offered)) if offered > cap => (cap, true),
        Some(Some(offered)) => (offered, false),
    };
    let params = DeflateParams {
        server_max_window_bits,
        client_max_window_bits,
        client_no_context_takeover: seen.client_no_context_takeover
            || policy.client_no_context_takeover,
    };
    // Answer client_no_context_takeover only when we ask for it; a client that offered it
    // behaves so anyway (RFC 7692 §7.1.1.2), but echoing it is harmless and explicit.
    Ok(Negotiated {
        response: params.response(capped, seen.server_max_window_bits.is_some()),
        params,
    })
}

/// A window-bits value: a decimal integer 8..=15 without leading zeros (RFC 7692 §7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    match value.as_bytes() {
        [d] if (b'8'..=b'9').contains(d) => Some(d - b'0'),
        [b'1', d] if (b'0'..=b'5').contains(d) => Some(10 + d - b'0'),
        _ => None,
    }
}

/// What a client learns from a server's permessage-deflate response (RFC 7692 §7.1), for the
/// load generator and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerAccepted {
    /// The server resets its compressor per message (so our inflater may too).
    pub server_no_context_takeover: bool,
    /// The window the server compresses with.
    pub server_max_window_bits: u8,
    /// Whether we must reset our compressor per message.
    pub client_no_context_takeover: bool,
    /// The window we must compress with.
    pub client_max_window_bits: u8,
}

/// Parses a server's `Sec-WebSocket-Extensions` response to an offer of plain
/// `permessage-deflate; client_max_window_bits`. `None`: the response is not one we can accept
/// (the client must then fail the connection, RFC 7692 §7.1).
pub fn parse_server_response(value: &[u8]) -> Option<ServerAccepted> {
    let mut elements = parse_extensions(value);
    let ext = elements.next()?.ok()?;
    if elements.next().is_some() || !ext.name.eq_ignore_ascii_case(EXTENSION_NAME) {
        return None;
    }
    let mut accepted = ServerAccepted {
        server_no_context_takeover: false,
        server_max_window_bits: MAX_WINDOW_BITS,
        client_no_context_takeover: false,
        client_max_window_bits: MAX_WINDOW_BITS,
    };
    let mut seen = [false; 4];
    for param in &ext.params {
        let value = param.value.as_deref();
        let index = match param.name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => {
                accepted.server_no_context_takeover = true;
                0
            }
            "client_no_context_takeover" if value.is_none() => {
                accepted.client_no_context_takeover = true;
                1
            }
            "server_max_window_bits" => {
                accepted.server_max_window_bits = window_bits(value?)?;
                2
            }
            "client_max_window_bits" => {
                accepted.client_max_window_bits = window_bits(value?)?;
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
    }
    Some(accepted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nego(value: &str) -> Option<Negotiated> {
        negotiate([value.as_bytes()], &DeflatePolicy::default())
    }

    fn params(server: u8, client: u8, client_nct: bool) -> DeflateParams {
        DeflateParams {
            server_max_window_bits: server,
            client_max_window_bits: client,
            client_no_context_takeover: client_nct,
        }
    }

    #[test]
    fn rfc7692_section_7_1_3_examples() {
        // The simplest offer: always answered with server_no_context_takeover.
        let n = nego("permessage-deflate").unwrap();
        assert_eq!(
            n.response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert_eq!(n.params, params(15, 15, true));
        // "permessage-deflate; client_max_window_bits" (RFC 7692 §7.1.3): the default policy
        // does not cap the client window.
        let n = nego("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(n.params, params(15, 15, true));
        // Two offers, the first with server_max_window_bits=10 which we honour.
        let n = nego(
            "permessage-deflate; client_max_window_bits; server_max_window_bits=10, \
             permessage-deflate; client_max_window_bits",
        )
        .unwrap();
        assert_eq!(n.params, params(10, 15, true));
        assert_eq!(
            n.response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10"
        );
    }

    #[test]
    fn context_takeover_policy() {
        let policy = DeflatePolicy {
            client_no_context_takeover: false,
            client_max_window_bits: 12,
        };
        let n = negotiate([&b"permessage-deflate"[..]], &policy).unwrap();
        assert_eq!(n.params, params(15, 15, false));
        assert_eq!(n.response, "permessage-deflate; server_no_context_takeover");
        // Offered without value: we cap it to our policy.
        let n = negotiate(
            [&b"permessage-deflate; client_max_window_bits"[..]],
            &policy,
        )
        .unwrap();
        assert_eq!(n.params, params(15, 12, false));
        assert_eq!(
            n.response,
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=12"
        );
        // Offered with a smaller value: the client keeps it, no answer needed.
        let n = negotiate(
            [&b"permessage-deflate; client_max_window_bits=8; client_no_context_takeover"[..]],
            &policy,
        )
        .unwrap();
        assert_eq!(n.params, params(15, 8, true));
        assert_eq!(
            n.response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        // Offered with a larger value: answered with our cap.
        let n = negotiate(
            [&b"permessage-deflate; client_max_window_bits=15"[..]],
            &policy,
        )
        .unwrap();
        assert_eq!(n.params, params(15, 12, false));
    }

    #[test]
    fn window_8_is_declined_and_the_next_offer_is_used() {
        assert_eq!(nego("permessage-deflate; server_max_window_bits=8"), None);
        let n = nego(
            "permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=9",
        )
        .unwrap();
        assert_eq!(n.params.server_max_window_bits, 9);
        let n = nego("permessage-deflate; server_max_window_bits=8, permessage-deflate").unwrap();
        assert_eq!(n.params.server_max_window_bits, 15);
    }

    #[test]
    fn autobahn_13_7_offers() {
        let n = nego(
            "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_max_window_bits=9, \
             permessage-deflate; client_no_context_takeover; client_max_window_bits, \
             permessage-deflate; client_max_window_bits",
        )
        .unwrap();
        assert_eq!(n.params, params(9, 15, true));
    }

    #[test]
    fn declined_offers_per_rfc7692_section_7_1() {
        let policy = DeflatePolicy::default();
        let cases: &[(&str, OfferDeclined)] = &[
            ("permessage-deflate; foo", OfferDeclined::UnknownParam),
            ("permessage-deflate; foo=1", OfferDeclined::UnknownParam),
            (
                "permessage-deflate; server_no_context_takeover=1",
                OfferDeclined::InvalidValue,
            ),
            (
                "permessage-deflate; client_no_context_takeover=\"\"",
                OfferDeclined::InvalidValue,
            ),
            (
                "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
                OfferDeclined::DuplicateParam,
            ),
            (
                "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
                OfferDeclined::DuplicateParam,
            ),
            (
                "permessage-deflate; server_max_window_bits",
                OfferDeclined::InvalidValue,
            ),
            (
                "permessage-deflate; server_max_window_bits=7",
                OfferDeclined::InvalidValue,
            ),
            (
                "permessage-deflate; server_max_window_bits=16",
                OfferDeclined::InvalidValue,
            ),
            (
                "permessage-deflate; server_max_window_bits=010",
                OfferDeclined::InvalidValue,
            ),
            (
                "permessage-deflate; server_max_window_bits=+9",
                OfferDeclined::InvalidValue,
            ),
            (
                "permessage-deflate; client_max_window_bits=0",
                OfferDeclined::InvalidValue,
            ),
            (
                "permessage-deflate; client_max_window_bits=\"1 5\"",
                OfferDeclined::InvalidValue,
            ),
            (
                "permessage-deflate; server_max_window_bits=8",
                OfferDeclined::Unsupported,
            ),
        ];
        for (offer, why) in cases {
            let element = parse_extensions(offer.as_bytes()).next().unwrap();
            match element {
                Ok(ext) => assert_eq!(accept_offer(&ext, &policy), Err(*why), "{offer}"),
                Err(_) => assert_eq!(*why, OfferDeclined::InvalidValue, "{offer}"),
            }
            assert_eq!(nego(offer), None, "{offer}");
            // ...and a valid offer after it is still accepted.
            let with_fallback = format!("{offer}, permessage-deflate");
            assert_eq!(
                nego(&with_fallback).map(|n| n.params),
                Some(params(15, 15, true)),
                "{with_fallback}"
            );
        }
    }

    #[test]
    fn quoted_values_other_extensions_and_several_fields() {
        let n = nego("permessage-deflate; server_max_window_bits=\"12\"").unwrap();
        assert_eq!(n.params.server_max_window_bits, 12);
        let n = nego("x-webkit-deflate-frame, Permessage-Deflate; Client_Max_Window_Bits").unwrap();
        assert_eq!(n.params, params(15, 15, true));
        assert_eq!(nego("x-webkit-deflate-frame"), None);
        assert_eq!(nego(""), None);
        // Offers split across two header fields are one list (RFC 9110 §5.3).
        let n = negotiate(
            [
                &b"permessage-deflate; server_max_window_bits=8"[..],
                &b"permessage-deflate; server_max_window_bits=11"[..],
            ],
            &DeflatePolicy::default(),
        )
        .unwrap();
        assert_eq!(n.params.server_max_window_bits, 11);
        // A syntactically broken element, then a good one.
        let n = nego("permessage-deflate; server_max_window_bits=\"9, permessage-deflate");
        assert_eq!(n, None, "the unterminated quote swallows the rest");
        let n = nego("permessage-deflate;; x, permessage-deflate").unwrap();
        assert_eq!(n.params, params(15, 15, true));
    }

    #[test]
    fn responses_round_trip_through_the_client_parser() {
        for offer in [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=9; client_max_window_bits=10",
            "permessage-deflate; client_no_context_takeover; server_no_context_takeover",
        ] {
            for policy in [
                DeflatePolicy::default(),
                DeflatePolicy {
                    client_no_context_takeover: false,
                    client_max_window_bits: 11,
                },
            ] {
                let n = negotiate([offer.as_bytes()], &policy).unwrap();
                let seen = parse_server_response(n.response.as_bytes()).unwrap();
                assert!(seen.server_no_context_takeover);
                assert_eq!(seen.server_max_window_bits, n.params.server_max_window_bits);
                if n.response.contains("client_max_window_bits") {
                    assert_eq!(seen.client_max_window_bits, n.params.client_max_window_bits);
                }
                assert_eq!(
                    seen.client_no_context_takeover,
                    n.params.client_no_context_takeover
                );
            }
        }
        assert_eq!(parse_server_response(b"permessage-deflate; foo"), None);
        assert_eq!(
            parse_server_response(b"permessage-deflate, permessage-deflate"),
            None
        );
        assert_eq!(
            parse_server_response(b"permessage-deflate; server_max_window_bits"),
            None
        );
    }

    #[test]
    fn fits_window_follows_the_message_length() {
        let p = params(9, 15, true);
        assert!(p.fits_window(512));
        assert!(!p.fits_window(513));
        assert!(params(15, 15, true).fits_window(1 << 20));
    }
}
