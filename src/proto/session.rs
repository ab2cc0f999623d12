//! The per-connection frame decoder (RFC 6455 §5-§7): received bytes in, unmasked in place,
//! at most one event out per call. Whole frames inside one read are delivered zero-copy;
//! the rest spills into a lazily allocated buffer that is freed once the message is delivered.
//! Sends nothing and decides no replies (pong, close): the caller does, from the events.
//! Keeps no clock: the caller passes `now_ms` in and asks whether a message is overdue.
//! With permessage-deflate (RFC 7692) compressed messages are inflated into the spill under the
//! same message limit, applied to the inflated size.

use std::fmt;

use super::close::is_valid_received_code;
use super::error::ProtocolError;
use super::frame::{OpCode, MAX_HEADER_BYTES};
use super::inflate::{inflater_heap_estimate, InflateError, Inflater};
use super::mask::apply_mask;
use super::prepared::MAX_CONTROL_PAYLOAD;
use super::utf8::Utf8Validator;

/// Which end of the connection we are; decides the masking rule (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We are the server: every received frame must be masked (else `UnmaskedFrame`).
    Server,
    /// We are the client (load generator): received frames must not be masked (else `MaskedFrame`).
    Client,
}

/// How the peer compresses, as negotiated (RFC 7692 §7.1): what our inflater needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerDeflate {
    /// The peer's LZ77 window (8..=15); we inflate with at least this window (9 at minimum).
    pub window_bits: u8,
    /// The peer compresses each message from an empty window, so our inflate state lives only
    /// while a compressed message is being received.
    pub no_context_takeover: bool,
}

/// Per-connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// The largest message (sum of its fragments' payloads) we accept, checked against the
    /// declared lengths before any payload is buffered and, for a compressed message, against
    /// the inflated size as it is produced.
    pub max_message_bytes: usize,
}

/// What one `decode` call produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete Text message, valid UTF-8 (RFC 6455 §5.6).
    Text(&'a [u8]),
    /// A complete Binary message.
    Binary(&'a [u8]),
    /// A Ping; the caller answers with a Pong carrying the same payload (RFC 6455 §5.5.2).
    Ping(&'a [u8]),
    /// A Pong, solicited or not (RFC 6455 §5.5.3: unsolicited ones are allowed and ignored).
    Pong(&'a [u8]),
    /// A Close: `code` is `None` for an empty body; `reason` is valid UTF-8 (RFC 6455 §5.5.1).
    Close {
        /// The status code, already checked against RFC 6455 §7.4.
        code: Option<u16>,
        /// The reason text, already checked to be UTF-8.
        reason: &'a [u8],
    },
}

/// The result of one `decode` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// How many input bytes were used. When `event` is `None` this is all of them.
    pub consumed: usize,
    /// The event completed by those bytes, if any.
    pub event: Option<Event<'a>>,
}

/// Message and control kinds; `Continuation` is resolved to the message's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

/// Where the decoder is inside the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// Between frames; a partial header may sit in `Session::header`.
    Header,
    /// Streaming a data frame's payload into the spill.
    Data { fin: bool },
    /// Streaming a control frame's payload (split across reads) into the spill.
    Control(Kind),
}

/// Buffers a connection only needs while a message or control frame straddles reads.
/// Boxed and allocated on demand so an idle `Session` holds no heap.
#[derive(Debug, Default)]
struct Spill {
    message: Vec<u8>,
    control: Vec<u8>,
    /// Sum of the declared payload lengths of the current message's frames so far.
    declared: usize,
    utf8: Utf8Validator,
    /// The inflate stream of a peer that compresses. Created by its first compressed message;
    /// with no context takeover it goes with the rest of the spill once the connection is idle,
    /// with context takeover it stays (the spill box then keeps only this).
    inflater: Option<Box<Inflater>>,
}

/// The decoder state of one WebSocket connection. See `decode` for the calling convention.
pub struct Session {
    limits: SessionLimits,
    /// Payload bytes of the current frame not yet consumed.
    remaining: usize,
    spill: Option<Box<Spill>>,
    /// A header split across reads (at most 14 bytes, RFC 6455 §5.2).
    header: [u8; MAX_HEADER_BYTES],
    /// The current frame's key, rotated by the payload bytes already unmasked (RFC 6455 §5.3).
    mask: [u8; 4],
    header_len: u8,
    role: Role,
    frame: Frame,
    /// The data message in progress (fragmented, or one frame split across reads).
    message: Option<Kind>,
    /// When `message` started (the caller's `now_ms` at its first frame header).
    message_started_ms: u32,
    masked: bool,
    closed: bool,
    /// Set when permessage-deflate was negotiated: RSV1 marks a compressed message.
    peer_deflate: Option<PeerDeflate>,
    /// The message in progress is compressed (RSV1 on its first frame, RFC 7692 §6).
    compressed: bool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("frame", &self.frame)
            .field("message", &self.message)
            .field("remaining", &self.remaining)
            .field("closed", &self.closed)
            .field("heap_bytes", &self.heap_bytes())
            .finish()
    }
}

/// A parsed frame header.
struct Header {
    fin: bool,
    /// RSV1 on a first data frame with permessage-deflate: the message is compressed.
    compressed: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    len: u64,
}

/// What a step of the decoder loop ended with.
enum Step {
    /// More frames may follow in the input.
    Continue,
    /// Every input byte was absorbed into the state; no event.
    NeedMore,
    /// An event is ready.
    Ready(Ready),
}

/// Where a ready event's payload is, without borrowing it (the loop must not hold borrows).
enum Ready {
    Input {
        start: usize,
        end: usize,
        kind: Kind,
    },
    Message(Kind),
    Control(Kind),
}

impl Session {
    /// A session at the start of a connection (after the handshake).
    pub fn new(role: Role, limits: SessionLimits) -> Session {
        Session {
            limits,
            remaining: 0,
            spill: None,
            header: [0; MAX_HEADER_BYTES],
            mask: [0; 4],
            header_len: 0,
            role,
            frame: Frame::Header,
            message: None,
            message_started_ms: 0,
            masked: false,
            closed: false,
            peer_deflate: None,
            compressed: false,
        }
    }

    /// Accepts compressed messages from now on (call right after the handshake negotiated
    /// permessage-deflate); `None` refuses RSV1 again.
    pub fn set_peer_deflate(&mut self, peer: Option<PeerDeflate>) {
        self.peer_deflate = peer;
    }

    /// What was negotiated with `set_peer_deflate`.
    pub fn peer_deflate(&self) -> Option<PeerDeflate> {
        self.peer_deflate
    }

    /// Whether a Close frame was received; after it, input is ignored (RFC 6455 §5.5.1).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// This session's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Heap bytes this session holds (0 when idle): at most the message limit plus a control
    /// frame plus the spill bookkeeping.
    pub fn heap_bytes(&self) -> usize {
        self.spill.as_ref().map_or(0, |s| {
            std::mem::size_of::<Spill>()
                + s.message.capacity()
                + s.control.capacity()
                + s.inflater
                    .as_ref()
                    .map_or(0, |i| inflater_heap_estimate(i.window_bits()))
        })
    }

    /// `Err(MessageTimeout)` when a data message has been arriving (more fragments, or the rest
    /// of a frame split across reads) for `timeout_ms` or longer at `now_ms`: a peer that
    /// starts a message and never finishes it must not hold its assembly buffer for ever. The
    /// caller closes the connection (close code 1008), which drops this session and its buffers.
    pub fn check_message_deadline(
        &self,
        now_ms: u32,
        timeout_ms: u32,
    ) -> Result<(), ProtocolError> {
        let in_progress = self.message.is_some() && !self.closed;
        // Wrapping: the caller's clock is a u32 of milliseconds (exact within 24.8 days).
        if in_progress && now_ms.wrapping_sub(self.message_started_ms) >= timeout_ms {
            return Err(ProtocolError::MessageTimeout);
        }
        Ok(())
    }

    /// Decodes from `input`, unmasking it in place, and returns at most one event. When the
    /// event is `None`, all of `input` was consumed (partial frames are kept inside). Call it
    /// again on the unconsumed rest until it returns `None`; that last call also frees the
    /// buffers of a message delivered from the spill. After an error the connection must be
    /// closed (with `error.close_code()`); the session is not reusable. `now_ms` is the
    /// caller's coarse clock (milliseconds, may wrap): a message that does not arrive whole in
    /// one read is stamped with it, for [`Session::check_message_deadline`].
    ///
    /// ```
    /// # use crier::proto::session::*;
    /// let mut session = Session::new(Role::Server, SessionLimits { max_message_bytes: 1 << 20 });
    /// let mut buf = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    /// let n = buf.len();
    /// let mut pos = 0;
    /// loop {
    ///     let d = session.decode(&mut buf[pos..n], 0).unwrap();
    ///     pos += d.consumed;
    ///     match d.event {
    ///         None => break,
    ///         Some(event) => assert_eq!(event, Event::Text(b"Hello")),
    ///     }
    /// }
    /// ```
    pub fn decode<'a>(
        &'a mut self,
        input: &'a mut [u8],
        now_ms: u32,
    ) -> Result<Decoded<'a>, ProtocolError> {
        if self.closed {
            // RFC 6455 §5.5.1: nothing after a Close is data; it is not decoded, and a message
            // left unfinished by the Close is dropped.
            self.spill = None;
            return Ok(none(input.len()));
        }
        if self.message.is_none() && self.frame == Frame::Header {
            self.release_idle_spill();
        }
        let mut pos = 0;
        let ready = loop {
            let step = match self.frame {
                Frame::Header if pos == input.len() => Step::NeedMore,
                Frame::Header => match self.read_header(&input[pos..])? {
                    None => Step::NeedMore,
                    Some((header, used)) => {
                        pos += used;
                        self.start_frame(header, input, &mut pos, now_ms)?
                    }
                },
                Frame::Data { fin } => self.continue_data(fin, input, &mut pos)?,
                Frame::Control(kind) => self.continue_control(kind, input, &mut pos),
            };
            match step {
                Step::Continue => {}
                Step::NeedMore => return Ok(none(input.len())),
                Step::Ready(ready) => break ready,
            }
        };
        let input: &'a [u8] = input;
        let this: &'a Session = self;
        let spill = this.spill.as_deref();
        let (payload, kind) = match ready {
            Ready::Input { start, end, kind } => (&input[start..end], kind),
            Ready::Message(kind) => (spill.map_or(&[][..], |s| &s.message[..]), kind),
            Ready::Control(kind) => (spill.map_or(&[][..], |s| &s.control[..]), kind),
        };
        let event = match kind {
            Kind::Text => Event::Text(payload),
            Kind::Binary => Event::Binary(payload),
            Kind::Ping => Event::Ping(payload),
            Kind::Pong => Event::Pong(payload),
            Kind::Close => close_event(payload)?,
        };
        Ok(Decoded {
            consumed: pos,
            event: Some(event),
        })
    }

    /// Idle between messages: an idle server-side connection holds no heap, except the inflate
    /// window of a peer that compresses with context takeover (RFC 7692 §7.1.1.2), which must
    /// survive.
    fn release_idle_spill(&mut self) {
        let Some(spill) = self.spill.as_mut() else {
            return;
        };
        // A client (the load generator) keeps its inflater: few connections, many messages,
        // and allocating a 32 KiB window per message would dominate its CPU. It is reset
        // after each message all the same when the peer takes over no context.
        let keep_inflater = spill.inflater.is_some()
            && (self.role == Role::Client
                || self.peer_deflate.is_some_and(|p| !p.no_context_takeover));
        if keep_inflater {
            spill.message = Vec::new();
            spill.control = Vec::new();
        } else {
            self.spill = None;
        }
    }

    /// Parses a header from the start of `bytes`, completing one kept from earlier reads.
    /// Returns `None` after absorbing all of `bytes` when the header is still incomplete.
    fn read_header(&mut self, bytes: &[u8]) -> Result<Option<(Header, usize)>, ProtocolError> {
        let old = usize::from(self.header_len);
        if old == 0 {
            if let Some(parsed) = parse_header(bytes, self.role, self.peer_deflate.is_some())? {
                return Ok(Some(parsed));
            }
        }
        // Only reached with fewer bytes than a complete header, so they fit in 14.
        let take = (MAX_HEADER_BYTES - old).min(bytes.len());
        self.header[old..old + take].copy_from_slice(&bytes[..take]);
        match parse_header(
            &self.header[..old + take],
            self.role,
            self.peer_deflate.is_some(),
        )? {
            Some((header, len)) => {
                self.header_len = 0;
                Ok(Some((header, len.saturating_sub(old))))
            }
            None => {
                self.header_len = (old + take) as u8;
                Ok(None)
            }
        }
    }

    /// Applies the stateful rules to a new frame and either delivers it from `input` (zero
    /// copy) or sets up streaming its payload into the spill.
    fn start_frame(
        &mut self,
        header: Header,
        input: &mut [u8],
        pos: &mut usize,
        now_ms: u32,
    ) -> Result<Step, ProtocolError> {
        let available = input.len() - *pos;
        self.masked = header.mask.is_some();
        self.mask = header.mask.unwrap_or([0; 4]);
        let kind = match (header.opcode, self.message) {
            (OpCode::Close, _) => Kind::Close,
            (OpCode::Ping, _) => Kind::Ping,
            (OpCode::Pong, _) => Kind::Pong,
            // RFC 6455 §5.4: a continuation needs a message in progress...
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Continuation, Some(kind)) => kind,
            // ...and a new message must wait until the previous one is finished.
            (_, Some(_)) => return Err(ProtocolError::ExpectedContinuation),
            (OpCode::Text, None) => Kind::Text,
            (OpCode::Binary, None) => Kind::Binary,
        };
        if header.opcode.is_control() {
            // Control frames are at most 125 bytes (checked in parse_header), may arrive in the
            // middle of a fragmented message (RFC 6455 §5.4) and leave it untouched.
            let len = header.len as usize;
            if available >= len {
                let start = *pos;
                *pos += len;
                self.unmask(&mut input[start..*pos]);
                self.closed = kind == Kind::Close;
                return Ok(Step::Ready(Ready::Input {
                    start,
                    end: *pos,
                    kind,
                }));
            }
            let spill = self.spill.get_or_insert_with(Box::default);
            spill.control.clear();
            spill.control.reserve_exact(len);
            self.frame = Frame::Control(kind);
            self.remaining = len;
            return Ok(Step::Continue);
        }
        let continuation = header.opcode == OpCode::Continuation;
        let declared_before = match (&self.spill, continuation) {
            (Some(spill), true) => spill.declared,
            _ => 0,
        };
        // Enforced on declared lengths, before buffering anything (our limit, close code 1009).
        let allowance = self
            .limits
            .max_message_bytes
            .saturating_sub(declared_before);
        if header.len > allowance as u64 {
            return Err(ProtocolError::MessageTooLarge);
        }
        let len = header.len as usize;
        if !continuation {
            self.compressed = header.compressed;
        }
        if !continuation && header.fin && available >= len && !header.compressed {
            // Fast path: a whole unfragmented message in this read, delivered in place.
            let start = *pos;
            *pos += len;
            let payload = &mut input[start..*pos];
            self.unmask(payload);
            if kind == Kind::Text && std::str::from_utf8(payload).is_err() {
                return Err(ProtocolError::InvalidUtf8);
            }
            return Ok(Step::Ready(Ready::Input {
                start,
                end: *pos,
                kind,
            }));
        }
        let spill = self.spill.get_or_insert_with(Box::default);
        if !continuation {
            self.message = Some(kind);
            self.message_started_ms = now_ms;
            spill.message.clear();
            spill.declared = 0;
            spill.utf8.reset();
        }
        spill.declared += len;
        self.frame = Frame::Data { fin: header.fin };
        self.remaining = len;
        Ok(Step::Continue)
    }

    /// Streams data payload from `input` into the spill; delivers the message after its last frame.
    fn continue_data(
        &mut self,
        fin: bool,
        input: &mut [u8],
        pos: &mut usize,
    ) -> Result<Step, ProtocolError> {
        let n = self.remaining.min(input.len() - *pos);
        let chunk = &mut input[*pos..*pos + n];
        self.unmask(chunk);
        let kind = self.message.unwrap_or(Kind::Binary);
        let spill = self.spill.get_or_insert_with(Box::default);
        let limit = self.limits.max_message_bytes;
        if self.compressed {
            let peer = self.peer_deflate.unwrap_or(PeerDeflate {
                window_bits: 15,
                no_context_takeover: false,
            });
            let inflater = spill
                .inflater
                .get_or_insert_with(|| Box::new(Inflater::new(peer.window_bits)));
            let before = spill.message.len();
            inflater
                .feed(chunk, &mut spill.message, limit)
                .map_err(inflate_error)?;
            if self.remaining == n && fin {
                // RFC 7692 §7.2.2: the message ends; append the removed 00 00 FF FF.
                inflater
                    .finish(&mut spill.message, limit)
                    .map_err(inflate_error)?;
                if peer.no_context_takeover {
                    inflater.reset();
                }
            }
            if kind == Kind::Text {
                // Fail fast on the inflated bytes, as for plain messages.
                spill
                    .utf8
                    .feed(&spill.message[before..])
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
        } else {
            if kind == Kind::Text {
                // Fail fast, per chunk and across fragments (Autobahn 6.4.x).
                spill
                    .utf8
                    .feed(chunk)
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            reserve_bounded(&mut spill.message, n, spill.declared);
            spill.message.extend_from_slice(chunk);
        }
        *pos += n;
        self.remaining -= n;
        if self.remaining > 0 {
            return Ok(Step::NeedMore);
        }
        self.frame = Frame::Header;
        if !fin {
            return Ok(Step::Continue);
        }
        if kind == Kind::Text {
            spill
                .utf8
                .finish()
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        self.message = None;
        Ok(Step::Ready(Ready::Message(kind)))
    }

    /// Collects a control frame's payload that straddles reads.
    fn continue_control(&mut self, kind: Kind, input: &mut [u8], pos: &mut usize) -> Step {
        let n = self.remaining.min(input.len() - *pos);
        let chunk = &mut input[*pos..*pos + n];
        self.unmask(chunk);
        self.spill
            .get_or_insert_with(Box::default)
            .control
            .extend_from_slice(chunk);
        *pos += n;
        self.remaining -= n;
        if self.remaining > 0 {
            return Step::NeedMore;
        }
        self.frame = Frame::Header;
        self.closed = kind == Kind::Close;
        Step::Ready(Ready::Control(kind))
    }

    /// Unmasks the next payload bytes of the current frame and advances the key.
    fn unmask(&mut self, chunk: &mut [u8]) {
        if self.masked {
            apply_mask(chunk, self.mask, 0);
            self.mask.rotate_left(chunk.len() % 4);
        }
    }
}

fn inflate_error(error: InflateError) -> ProtocolError {
    match error {
        InflateError::TooLarge => ProtocolError::MessageTooLarge,
        InflateError::Corrupt => ProtocolError::InvalidCompressedData,
    }
}

fn none<'a>(consumed: usize) -> Decoded<'a> {
    Decoded {
        consumed,
        event: None,
    }
}

/// Grows `buf` for `additional` bytes, doubling but never past `bound` (the declared message
/// length), so capacity stays within the message limit however the payload is split.
fn reserve_bounded(buf: &mut Vec<u8>, additional: usize, bound: usize) {
    let needed = buf.len() + additional;
    if needed <= buf.capacity() {
        return;
    }
    let target = needed
        .max(buf.capacity().saturating_mul(2))
        .max(256)
        .min(bound.max(needed));
    buf.reserve_exact(target - buf.len());
}

/// Parses one frame header (RFC 6455 §5.2), checking every stateless rule as soon as the
/// bytes that carry it are present. `Ok(None)`: more bytes are needed.
fn parse_header(
    bytes: &[u8],
    role: Role,
    deflate: bool,
) -> Result<Option<(Header, usize)>, ProtocolError> {
    let Some(&b0) = bytes.first() else {
        return Ok(None);
    };
    // RFC 6455 §5.2: RSV1-3 MUST be 0 unless an extension defines them; permessage-deflate
    // defines RSV1 only (RFC 7692 §6).
    let rsv_allowed = if deflate { 0x40 } else { 0 };
    if b0 & 0x70 & !rsv_allowed != 0 {
        return Err(ProtocolError::ReservedBitsSet);
    }
    let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(ProtocolError::ReservedOpcode)?;
    let compressed = b0 & 0x40 != 0;
    // RFC 7692 §6.1: RSV1 only on the first frame of a data message, never on control frames
    // or continuations.
    if compressed && (opcode.is_control() || opcode == OpCode::Continuation) {
        return Err(ProtocolError::ReservedBitsSet);
    }
    let fin = b0 & 0x80 != 0;
    // RFC 6455 §5.5: control frames MUST NOT be fragmented.
    if opcode.is_control() && !fin {
        return Err(ProtocolError::FragmentedControlFrame);
    }
    let Some(&b1) = bytes.get(1) else {
        return Ok(None);
    };
    let masked = b1 & 0x80 != 0;
    // RFC 6455 §5.1: clients MUST mask, servers MUST NOT.
    match role {
        Role::Server if !masked => return Err(ProtocolError::UnmaskedFrame),
        Role::Client if masked => return Err(ProtocolError::MaskedFrame),
        _ => {}
    }
    let len7 = b1 & 0x7F;
    // RFC 6455 §5.5: control payloads are at most 125 bytes (so they use the 7-bit length).
    if opcode.is_control() && usize::from(len7) > MAX_CONTROL_PAYLOAD {
        return Err(ProtocolError::ControlFrameTooLong);
    }
    // Non-minimal length encodings are accepted: RFC 6455 §5.2 asks senders for the minimal
    // one but gives receivers no rule, and refusing them protects nothing.
    let (len, mut used) = match len7 {
        126 => match bytes.get(2..4) {
            Some(&[a, b]) => (u64::from(u16::from_be_bytes([a, b])), 4),
            _ => return Ok(None),
        },
        127 => match bytes.get(2..10) {
            Some(ext) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(ext);
                let len = u64::from_be_bytes(be);
                // RFC 6455 §5.2: "the most significant bit MUST be 0".
                if len >> 63 != 0 {
                    return Err(ProtocolError::LengthTopBitSet);
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    let mask = if masked {
        let Some(key) = bytes.get(used..used + 4) else {
            return Ok(None);
        };
        used += 4;
        Some([key[0], key[1], key[2], key[3]])
    } else {
        None
    };
    Ok(Some((
        Header {
            fin,
            compressed,
            opcode,
            mask,
            len,
        },
        used,
    )))
}

/// Validates a Close payload (RFC 6455 §5.5.1, §7.4).
fn close_event(payload: &[u8]) -> Result<Event<'_>, ProtocolError> {
    match payload {
        [] => Ok(Event::Close {
            code: None,
            reason: &[],
        }),
        [_] => Err(ProtocolError::InvalidClosePayload),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_received_code(code) {
                return Err(ProtocolError::InvalidCloseCode);
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(ProtocolError::InvalidCloseReason);
            }
            Ok(Event::Close {
                code: Some(code),
                reason,
            })
        }
    }
}

/// Helpers shared by the unit and property tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// An `Event` that owns its payload, so tests can collect them.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum OwnedEvent {
        Text(Vec<u8>),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<u16>, Vec<u8>),
    }

    impl From<Event<'_>> for OwnedEvent {
        fn from(event: Event<'_>) -> Self {
            match event {
                Event::Text(p) => OwnedEvent::Text(p.to_vec()),
                Event::Binary(p) => OwnedEvent::Binary(p.to_vec()),
                Event::Ping(p) => OwnedEvent::Ping(p.to_vec()),
                Event::Pong(p) => OwnedEvent::Pong(p.to_vec()),
                Event::Close { code, reason } => OwnedEvent::Close(code, reason.to_vec()),
            }
        }
    }

    /// Feeds each read to `session` with the documented caller loop; checks the contract
    /// (`None` consumes everything) and calls `after_each` with the session after every call.
    pub(crate) fn decode_reads(
        session: &mut Session,
        reads: &[Vec<u8>],
        mut after_each: impl FnMut(&Session),
    ) -> Result<Vec<OwnedEvent>, ProtocolError> {
        let mut events = Vec::new();
        for read in reads {
            let mut buf = read.clone();
            let n = buf.len();
            let mut pos = 0;
            loop {
                let decoded = session.decode(&mut buf[pos..n], 0)?;
                let consumed = decoded.consumed;
                let event = decoded.event.map(OwnedEvent::from);
                assert!(consumed <= n - pos);
                pos += consumed;
                after_each(session);
                match event {
                    None => {
                        assert_eq!(pos, n, "None must consume all input");
                        break;
                    }
                    Some(event) => events.push(event),
                }
            }
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{decode_reads, OwnedEvent};
    use super::*;
    use crate::proto::prepared::encode_client_frame;

    const LIMITS: SessionLimits = SessionLimits {
        max_message_bytes: 1 << 20,
    };
    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    const MASKED_HELLO: [u8; 11] = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];

    fn server() -> Session {
        Session::new(Role::Server, LIMITS)
    }

    fn client() -> Session {
        Session::new(Role::Client, LIMITS)
    }

    fn decode_one(session: &mut Session, bytes: &[u8]) -> Result<Vec<OwnedEvent>, ProtocolError> {
        decode_reads(session, &[bytes.to_vec()], |_| {})
    }

    fn bytewise(session: &mut Session, bytes: &[u8]) -> Result<Vec<OwnedEvent>, ProtocolError> {
        let reads: Vec<Vec<u8>> = bytes.iter().map(|b| vec![*b]).collect();
        decode_reads(session, &reads, |_| {})
    }

    fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_client_frame(fin, opcode, payload, KEY, &mut out);
        out
    }

    #[test]
    fn session_is_small() {
        let size = std::mem::size_of::<Session>();
        println!("size_of::<Session>() = {size}");
        assert!(size <= 64, "Session is {size} bytes");
    }

    #[test]
    fn rfc6455_section_5_7_masked_hello_is_delivered_in_place() {
        let mut session = server();
        let mut buf = MASKED_HELLO;
        let base = buf.as_ptr() as usize;
        let decoded = session.decode(&mut buf, 0).unwrap();
        assert_eq!(decoded.consumed, 11);
        let Some(Event::Text(text)) = decoded.event else {
            panic!("expected text, got {:?}", decoded.event);
        };
        assert_eq!(text, b"Hello");
        assert_eq!(text.as_ptr() as usize, base + 6, "zero copy");
        assert_eq!(session.heap_bytes(), 0);
        assert_eq!(
            bytewise(&mut server(), &MASKED_HELLO),
            Ok(vec![OwnedEvent::Text(b"Hello".to_vec())])
        );
    }

    #[test]
    fn rfc6455_section_5_7_client_role_vectors() {
        let hello = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(
            decode_one(&mut client(), &hello),
            Ok(vec![OwnedEvent::Text(b"Hello".to_vec())])
        );
        let fragmented = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
        assert_eq!(
            decode_one(&mut client(), &fragmented),
            Ok(vec![OwnedEvent::Text(b"Hello".to_vec())])
        );
        assert_eq!(
            bytewise(&mut client(), &fragmented),
            Ok(vec![OwnedEvent::Text(b"Hello".to_vec())])
        );
        let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(
            decode_one(&mut client(), &ping),
            Ok(vec![OwnedEvent::Ping(b"Hello".to_vec())])
        );
        let mut binary_256 = vec![0x82, 0x7E, 0x01, 0x00];
        binary_256.extend((0..256).map(|i| i as u8));
        assert_eq!(
            decode_one(&mut client(), &binary_256),
            Ok(vec![OwnedEvent::Binary(binary_256[4..].to_vec())])
        );
        let mut binary_64k = vec![0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0];
        binary_64k.extend((0..65536).map(|i| (i % 251) as u8));
        let reads: Vec<Vec<u8>> = binary_64k.chunks(1000).map(<[u8]>::to_vec).collect();
        assert_eq!(
            decode_reads(&mut client(), &reads, |_| {}),
            Ok(vec![OwnedEvent::Binary(binary_64k[10..].to_vec())])
        );
    }

    #[test]
    fn rfc6455_section_5_7_masked_pong() {
        let pong = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            decode_one(&mut server(), &pong),
            Ok(vec![OwnedEvent::Pong(b"Hello".to_vec())])
        );
        assert_eq!(
            bytewise(&mut server(), &pong),
            Ok(vec![OwnedEvent::Pong(b"Hello".to_vec())])
        );
    }

    #[test]
    fn control_frames_interleave_with_fragments_and_buffers_are_freed() {
        let mut wire = frame(false, OpCode::Text, "héllo ".as_bytes());
        wire.extend(frame(true, OpCode::Ping, b"are you there"));
        wire.extend(frame(false, OpCode::Continuation, &[0xE2, 0x82]));
        wire.extend(frame(true, OpCode::Pong, b""));
        wire.extend(frame(true, OpCode::Continuation, &[0xAC, b'!']));
        wire.extend(frame(true, OpCode::Binary, &[]));
        wire.extend(frame(true, OpCode::Close, b"\x03\xe8bye"));
        let expected = vec![
            OwnedEvent::Ping(b"are you there".to_vec()),
            OwnedEvent::Pong(vec![]),
            OwnedEvent::Text("héllo €!".as_bytes().to_vec()),
            OwnedEvent::Binary(vec![]),
            OwnedEvent::Close(Some(1000), b"bye".to_vec()),
        ];
        for split in [1, 2, 3, 7, 13, wire.len()] {
            let reads: Vec<Vec<u8>> = wire.chunks(split).map(<[u8]>::to_vec).collect();
            let mut session = server();
            assert_eq!(
                decode_reads(&mut session, &reads, |_| {}),
                Ok(expected.clone()),
                "split {split}"
            );
            assert!(session.is_closed());
            assert_eq!(session.heap_bytes(), 0);
        }
    }

    #[test]
    fn idle_session_holds_no_heap_after_a_spilled_message() {
        let mut session = server();
        let wire = frame(true, OpCode::Binary, &[9; 10_000]);
        let (a, b) = wire.split_at(5000);
        assert_eq!(decode_one(&mut session, a), Ok(vec![]));
        assert!(session.heap_bytes() >= 4996);
        assert_eq!(
            decode_one(&mut session, b),
            Ok(vec![OwnedEvent::Binary(vec![9; 10_000])])
        );
        // decode_reads ends with the call that returns None, which frees the spill.
        assert_eq!(session.heap_bytes(), 0);
    }

    #[test]
    fn close_bodies() {
        assert_eq!(
            decode_one(&mut server(), &frame(true, OpCode::Close, b"")),
            Ok(vec![OwnedEvent::Close(None, vec![])])
        );
        let error = decode_one(&mut server(), &frame(true, OpCode::Close, b"\x03")).unwrap_err();
        assert_eq!(
            (error, error.close_code()),
            (ProtocolError::InvalidClosePayload, 1002)
        );
        for code in [999u16, 1004, 1005, 1006, 1015, 2000, 5000] {
            let error = decode_one(
                &mut server(),
                &frame(true, OpCode::Close, &code.to_be_bytes()),
            )
            .unwrap_err();
            assert_eq!(
                (error, error.close_code()),
                (ProtocolError::InvalidCloseCode, 1002),
                "{code}"
            );
        }
        let error =
            decode_one(&mut server(), &frame(true, OpCode::Close, b"\x03\xe8\xff")).unwrap_err();
        assert_eq!(
            (error, error.close_code()),
            (ProtocolError::InvalidCloseReason, 1007)
        );
        let error = bytewise(
            &mut server(),
            &frame(true, OpCode::Close, b"\x03\xe8\xed\xa0\x80"),
        )
        .unwrap_err();
        assert_eq!(error, ProtocolError::InvalidCloseReason);
    }

    #[test]
    fn nothing_is_decoded_after_close() {
        let mut wire = frame(true, OpCode::Close, b"\x0f\xa0");
        wire.extend(frame(true, OpCode::Text, b"late"));
        wire.extend([0xFF; 4]);
        let mut session = server();
        assert_eq!(
            decode_one(&mut session, &wire),
            Ok(vec![OwnedEvent::Close(Some(4000), vec![])])
        );
        assert!(session.is_closed());
    }

    fn error_of(session: &mut Session, bytes: &[u8]) -> ProtocolError {
        let whole = decode_one(session, bytes).unwrap_err();
        let (role, limits) = (session.role, session.limits);
        let mut fresh = Session::new(role, limits);
        fresh.set_peer_deflate(session.peer_deflate);
        assert_eq!(bytewise(&mut fresh, bytes), Err(whole), "bytewise");
        whole
    }

    #[test]
    fn every_framing_rule() {
        let cases: Vec<(Session, Vec<u8>, ProtocolError, u16)> = vec![
            (
                server(),
                vec![0x81, 0x05, b'H', b'e', b'l', b'l', b'o'],
                ProtocolError::UnmaskedFrame,
                1002,
            ),
            (
                client(),
                MASKED_HELLO.to_vec(),
                ProtocolError::MaskedFrame,
                1002,
            ),
            (
                server(),
                vec![0xC1, 0x80, 0, 0, 0, 0],
                ProtocolError::ReservedBitsSet,
                1002,
            ),
            (
                server(),
                vec![0x91, 0x80, 0, 0, 0, 0],
                ProtocolError::ReservedBitsSet,
                1002,
            ),
            (
                server(),
                vec![0x83, 0x80, 0, 0, 0, 0],
                ProtocolError::ReservedOpcode,
                1002,
            ),
            (
                server(),
                vec![0x8B, 0x80, 0, 0, 0, 0],
                ProtocolError::ReservedOpcode,
                1002,
            ),
            (
                server(),
                frame(true, OpCode::Ping, &[0; 126]),
                ProtocolError::ControlFrameTooLong,
                1002,
            ),
            (
                server(),
                frame(false, OpCode::Ping, b""),
                ProtocolError::FragmentedControlFrame,
                1002,
            ),
            (
                server(),
                frame(true, OpCode::Continuation, b"x"),
                ProtocolError::UnexpectedContinuation,
                1002,
            ),
            (
                server(),
                [
                    frame(false, OpCode::Text, b"a"),
                    frame(true, OpCode::Text, b"b"),
                ]
                .concat(),
                ProtocolError::ExpectedContinuation,
                1002,
            ),
            (
                server(),
                vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
                ProtocolError::LengthTopBitSet,
                1002,
            ),
            (
                Session::new(
                    Role::Server,
                    SessionLimits {
                        max_message_bytes: 10,
                    },
                ),
                frame(true, OpCode::Binary, &[0; 11]),
                ProtocolError::MessageTooLarge,
                1009,
            ),
            (
                Session::new(
                    Role::Server,
                    SessionLimits {
                        max_message_bytes: 10,
                    },
                ),
                [
                    frame(false, OpCode::Binary, &[0; 6]),
                    frame(true, OpCode::Continuation, &[0; 5]),
                ]
                .concat(),
                ProtocolError::MessageTooLarge,
                1009,
            ),
            (
                server(),
                frame(true, OpCode::Text, b"\xce\xba\xff"),
                ProtocolError::InvalidUtf8,
                1007,
            ),
            (
                server(),
                [
                    frame(false, OpCode::Text, b"ok"),
                    frame(true, OpCode::Continuation, b"\xf4\x90\x80\x80"),
                ]
                .concat(),
                ProtocolError::InvalidUtf8,
                1007,
            ),
            (
                server(),
                frame(true, OpCode::Text, b"\xe2\x82"),
                ProtocolError::InvalidUtf8,
                1007,
            ),
            (
                server(),
                frame(true, OpCode::Close, &[0x03, 0xed]),
                ProtocolError::InvalidCloseCode,
                1002,
            ),
            (
                server(),
                frame(true, OpCode::Close, &[0x03]),
                ProtocolError::InvalidClosePayload,
                1002,
            ),
            (
                server(),
                frame(true, OpCode::Close, b"\x03\xe8\xc0"),
                ProtocolError::InvalidCloseReason,
                1007,
            ),
        ];
        for (mut session, bytes, expected, code) in cases {
            let error = error_of(&mut session, &bytes);
            assert_eq!(error, expected, "{bytes:x?}");
            assert_eq!(error.close_code(), code);
        }
    }

    #[test]
    fn errors_fail_fast_before_the_payload_arrives() {
        // The declared length alone is refused: nothing is buffered for an oversized message.
        let mut session = Session::new(
            Role::Server,
            SessionLimits {
                max_message_bytes: 100,
            },
        );
        let header = &frame(true, OpCode::Binary, &[0; 1000])[..8];
        assert_eq!(
            session.decode(&mut header.to_vec(), 0),
            Err(ProtocolError::MessageTooLarge)
        );
        assert_eq!(session.heap_bytes(), 0);
        // Invalid UTF-8 is seen in the first chunk of a long text frame.
        let mut text = b"ab\xc0".to_vec();
        text.resize(1000, b'a');
        let wire = frame(true, OpCode::Text, &text);
        assert_eq!(
            server().decode(&mut wire[..20].to_vec(), 0),
            Err(ProtocolError::InvalidUtf8)
        );
        // RSV bits are refused on the first byte.
        assert_eq!(
            server().decode(&mut [0xC1], 0),
            Err(ProtocolError::ReservedBitsSet)
        );
    }

    /// Decodes `bytes` as one read at `now_ms`, returning the events.
    fn decode_at(session: &mut Session, bytes: &[u8], now_ms: u32) -> Vec<OwnedEvent> {
        let mut buf = bytes.to_vec();
        let mut pos = 0;
        let mut events = Vec::new();
        loop {
            let decoded = session.decode(&mut buf[pos..], now_ms).unwrap();
            pos += decoded.consumed;
            match decoded.event {
                Some(event) => events.push(event.into()),
                None => return events,
            }
        }
    }

    #[test]
    fn a_fragmented_message_must_finish_within_the_deadline_from_its_first_frame() {
        const TIMEOUT_MS: u32 = 1000;
        let mut session = server();
        assert_eq!(
            session.check_message_deadline(5_000_000, TIMEOUT_MS),
            Ok(())
        );
        // Started at t=100: fragments keep coming, but the clock runs from the first one.
        assert_eq!(
            decode_at(&mut session, &frame(false, OpCode::Text, b"a"), 100),
            vec![]
        );
        assert_eq!(
            decode_at(&mut session, &frame(false, OpCode::Continuation, b"b"), 900),
            vec![]
        );
        assert_eq!(session.check_message_deadline(1099, TIMEOUT_MS), Ok(()));
        let error = session
            .check_message_deadline(1100, TIMEOUT_MS)
            .unwrap_err();
        assert_eq!(
            (error, error.close_code()),
            (ProtocolError::MessageTimeout, 1008)
        );
        // Finished in time, the next message gets its own clock; control frames in between
        // neither start nor stop it.
        let mut session = server();
        decode_at(&mut session, &frame(false, OpCode::Binary, b"x"), 100);
        let mut rest = frame(true, OpCode::Ping, b"p");
        rest.extend(frame(true, OpCode::Continuation, b"y"));
        assert_eq!(
            decode_at(&mut session, &rest, 1050),
            vec![
                OwnedEvent::Ping(b"p".to_vec()),
                OwnedEvent::Binary(b"xy".to_vec())
            ]
        );
        assert_eq!(session.check_message_deadline(1200, TIMEOUT_MS), Ok(()));
        decode_at(&mut session, &frame(false, OpCode::Text, b"z"), 1500);
        decode_at(&mut session, &frame(true, OpCode::Ping, b""), 2400);
        assert_eq!(session.check_message_deadline(2499, TIMEOUT_MS), Ok(()));
        assert!(session.check_message_deadline(2500, TIMEOUT_MS).is_err());
    }

    #[test]
    fn one_frame_split_across_reads_has_the_same_deadline_and_the_clock_may_wrap() {
        let mut session = server();
        let wire = frame(true, OpCode::Binary, &[7; 300]);
        let started = u32::MAX - 10;
        assert_eq!(decode_at(&mut session, &wire[..100], started), vec![]);
        assert!(session.heap_bytes() > 0);
        assert_eq!(
            session.check_message_deadline(started.wrapping_add(499), 500),
            Ok(())
        );
        assert_eq!(
            session.check_message_deadline(started.wrapping_add(500), 500),
            Err(ProtocolError::MessageTimeout)
        );
        // A whole message in one read never starts the clock.
        let mut session = server();
        assert_eq!(decode_at(&mut session, &wire, 0).len(), 1);
        assert_eq!(session.check_message_deadline(1_000_000, 500), Ok(()));
        // Nor does a pong or ping split across reads.
        let ping = frame(true, OpCode::Ping, b"hello");
        assert_eq!(decode_at(&mut session, &ping[..8], 0), vec![]);
        assert_eq!(session.check_message_deadline(1_000_000, 500), Ok(()));
    }

    fn deflating_server(no_context_takeover: bool, limit: usize) -> Session {
        let mut session = Session::new(
            Role::Server,
            SessionLimits {
                max_message_bytes: limit,
            },
        );
        session.set_peer_deflate(Some(PeerDeflate {
            window_bits: 15,
            no_context_takeover,
        }));
        session
    }

    /// A compressed client message in frames of `fragment` compressed bytes (RSV1 on the first).
    fn compressed_frames(opcode: OpCode, compressed: &[u8], fragment: usize) -> Vec<u8> {
        use crate::proto::deflate::encode_compressed_client_frame;
        let mut out = Vec::new();
        let pieces: Vec<&[u8]> = if compressed.is_empty() {
            vec![&[]]
        } else {
            compressed.chunks(fragment).collect()
        };
        for (i, piece) in pieces.iter().enumerate() {
            let op = if i == 0 { opcode } else { OpCode::Continuation };
            encode_compressed_client_frame(i == 0, i + 1 == pieces.len(), piece, op, KEY, &mut out);
        }
        out
    }

    fn deflated(payload: &[u8]) -> Vec<u8> {
        crate::proto::deflate::Deflater::new(6)
            .payload(payload, 15)
            .unwrap()
            .to_vec()
    }

    #[test]
    fn rfc7692_section_7_2_3_compressed_messages() {
        // §7.2.3.1 "Hello" as one compressed text frame, whole and byte by byte.
        let hello = compressed_frames(
            OpCode::Text,
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
            100,
        );
        assert_eq!(
            decode_one(&mut deflating_server(true, 100), &hello),
            Ok(vec![OwnedEvent::Text(b"Hello".to_vec())])
        );
        assert_eq!(
            bytewise(&mut deflating_server(true, 100), &hello),
            Ok(vec![OwnedEvent::Text(b"Hello".to_vec())])
        );
        // §7.2.3.1 fragmented: f2 48 cd | c9 c9 07 00, RSV1 on the first frame only.
        let fragmented =
            compressed_frames(OpCode::Text, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 3);
        assert_eq!(
            decode_one(&mut deflating_server(true, 100), &fragmented),
            Ok(vec![OwnedEvent::Text(b"Hello".to_vec())])
        );
        // §7.2.3.2: the second "Hello" refers back into the first (context takeover): the
        // window survives the idle point between the two messages, and only the window.
        let mut session = deflating_server(false, 100);
        assert_eq!(
            decode_one(&mut session, &hello),
            Ok(vec![OwnedEvent::Text(b"Hello".to_vec())])
        );
        let kept = session.heap_bytes();
        assert!(kept > 32 * 1024, "the inflate window is kept: {kept}");
        let second = compressed_frames(OpCode::Text, &[0xf2, 0x00, 0x11, 0x00, 0x00], 100);
        assert_eq!(
            decode_one(&mut session, &second),
            Ok(vec![OwnedEvent::Text(b"Hello".to_vec())])
        );
        assert_eq!(session.heap_bytes(), kept);
        // Without context takeover the same second message has nothing to refer to.
        let mut session = deflating_server(true, 100);
        decode_one(&mut session, &hello).unwrap();
        assert_eq!(session.heap_bytes(), 0, "no inflate state between messages");
        assert_eq!(
            decode_one(&mut session, &second),
            Err(ProtocolError::InvalidCompressedData)
        );
        // §7.2.3.3 and §7.2.3.5: a stored block, and a final block.
        for body in [
            &[
                0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
            ][..],
            &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00][..],
        ] {
            assert_eq!(
                decode_one(
                    &mut deflating_server(false, 100),
                    &compressed_frames(OpCode::Binary, body, 100)
                ),
                Ok(vec![OwnedEvent::Binary(b"Hello".to_vec())])
            );
        }
    }

    #[test]
    fn a_client_keeps_its_inflater_a_server_does_not() {
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let mut wire = vec![0xc1, hello.len() as u8];
        wire.extend_from_slice(&hello);
        let peer = Some(PeerDeflate {
            window_bits: 15,
            no_context_takeover: true,
        });
        let mut client = Session::new(Role::Client, LIMITS);
        client.set_peer_deflate(peer);
        for _ in 0..2 {
            assert_eq!(
                decode_one(&mut client, &wire),
                Ok(vec![OwnedEvent::Text(b"Hello".to_vec())])
            );
            assert!(client.heap_bytes() > 32 * 1024, "kept, reset per message");
        }
        let mut server = deflating_server(true, 100);
        let masked = compressed_frames(OpCode::Text, &hello, 100);
        assert_eq!(
            decode_one(&mut server, &masked),
            Ok(vec![OwnedEvent::Text(b"Hello".to_vec())])
        );
        assert_eq!(server.heap_bytes(), 0);
    }

    #[test]
    fn fragmented_compressed_messages_with_control_frames_between() {
        let payload: Vec<u8> = "{\"topic\":\"prices\",\"data\":[1,2,3]} "
            .repeat(200)
            .into_bytes();
        let compressed = deflated(&payload);
        let frames = compressed_frames(OpCode::Text, &compressed, 37);
        // Put a ping after every data frame.
        let mut wire = Vec::new();
        let mut rest = &frames[..];
        let mut pings = 0;
        while !rest.is_empty() {
            let len = usize::from(rest[1] & 0x7f);
            let (one, tail) = rest.split_at(2 + 4 + len);
            wire.extend_from_slice(one);
            wire.extend(frame(true, OpCode::Ping, b"p"));
            pings += 1;
            rest = tail;
        }
        wire.extend(frame(true, OpCode::Binary, b"plain"));
        let mut expected = vec![OwnedEvent::Ping(b"p".to_vec()); pings - 1];
        expected.push(OwnedEvent::Text(payload.clone()));
        expected.push(OwnedEvent::Ping(b"p".to_vec()));
        expected.push(OwnedEvent::Binary(b"plain".to_vec()));
        for split in [1, 5, 64, wire.len()] {
            let reads: Vec<Vec<u8>> = wire.chunks(split).map(<[u8]>::to_vec).collect();
            let mut session = deflating_server(true, 1 << 20);
            assert_eq!(
                decode_reads(&mut session, &reads, |_| {}),
                Ok(expected.clone()),
                "split {split}"
            );
            assert_eq!(session.heap_bytes(), 0);
        }
    }

    #[test]
    fn a_zip_bomb_closes_with_1009_before_it_costs_memory() {
        // 16 MiB of zeros deflate to about 16 KiB: well under the 64 KiB limit on the wire.
        let bomb = deflated(&vec![0u8; 16 << 20]);
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        for fragment in [bomb.len(), 1000] {
            let wire = compressed_frames(OpCode::Binary, &bomb, fragment);
            let mut session = deflating_server(true, 64 * 1024);
            let mut peak = 0;
            let reads: Vec<Vec<u8>> = wire.chunks(4096).map(<[u8]>::to_vec).collect();
            let result = decode_reads(&mut session, &reads, |s| peak = peak.max(s.heap_bytes()));
            assert_eq!(result, Err(ProtocolError::MessageTooLarge));
            assert_eq!(ProtocolError::MessageTooLarge.close_code(), 1009);
            // Peak heap: the limit (plus one byte), the inflater and the spill bookkeeping.
            assert!(peak < 64 * 1024 + 48 * 1024, "peak {peak}");
        }
        // Exactly at the limit is fine.
        let exact = deflated(&vec![b'x'; 64 * 1024]);
        assert_eq!(
            decode_one(
                &mut deflating_server(true, 64 * 1024),
                &compressed_frames(OpCode::Binary, &exact, 500)
            ),
            Ok(vec![OwnedEvent::Binary(vec![b'x'; 64 * 1024])])
        );
    }

    #[test]
    fn compressed_framing_rules() {
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let cases: Vec<(Session, Vec<u8>, ProtocolError)> = vec![
            // RSV1 without the extension.
            (
                server(),
                compressed_frames(OpCode::Text, &hello, 100),
                ProtocolError::ReservedBitsSet,
            ),
            // RSV2 and RSV3 stay reserved with it.
            (
                deflating_server(true, 100),
                vec![0xA1, 0x80, 0, 0, 0, 0],
                ProtocolError::ReservedBitsSet,
            ),
            (
                deflating_server(true, 100),
                vec![0x91, 0x80, 0, 0, 0, 0],
                ProtocolError::ReservedBitsSet,
            ),
            // RSV1 on a control frame or a continuation (RFC 7692 §6.1).
            (
                deflating_server(true, 100),
                vec![0xC9, 0x80, 0, 0, 0, 0],
                ProtocolError::ReservedBitsSet,
            ),
            (
                deflating_server(true, 100),
                [
                    frame(false, OpCode::Text, b"a"),
                    vec![0xC0, 0x80, 0, 0, 0, 0],
                ]
                .concat(),
                ProtocolError::ReservedBitsSet,
            ),
            // Not a deflate stream: reserved block type 3.
            (
                deflating_server(true, 100),
                compressed_frames(OpCode::Binary, &[0xff, 0xff, 0xff], 100),
                ProtocolError::InvalidCompressedData,
            ),
            // Inflates to invalid UTF-8 in a text message.
            (
                deflating_server(true, 100),
                compressed_frames(
                    OpCode::Text,
                    &deflated(
                        &[b'a'; 40]
                            .iter()
                            .copied()
                            .chain([0xff])
                            .collect::<Vec<u8>>(),
                    ),
                    100,
                ),
                ProtocolError::InvalidUtf8,
            ),
        ];
        for (mut session, bytes, expected) in cases {
            assert_eq!(error_of(&mut session, &bytes), expected, "{bytes:x?}");
        }
        assert_eq!(ProtocolError::InvalidCompressedData.close_code(), 1007);
        // An uncompressed message on a compressing connection is still delivered in place.
        let mut session = deflating_server(true, 100);
        let mut buf = MASKED_HELLO;
        let base = buf.as_ptr() as usize;
        let decoded = session.decode(&mut buf, 0).unwrap();
        let Some(Event::Text(text)) = decoded.event else {
            panic!("{:?}", decoded.event);
        };
        assert_eq!((text, text.as_ptr() as usize), (&b"Hello"[..], base + 6));
    }
}
