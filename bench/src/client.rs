//! A minimal blocking WebSocket client for the networked benchmarks, built from crier's own
//! sans-IO client helpers (`client_request`, `check_server_response`, `encode_client_frame`,
//! `Session` in the client role) over `std::net::TcpStream`. It measures brokers; it is not
//! an independent conformance check (the tests and Autobahn are).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use crier::proto::close;
use crier::proto::frame::OpCode;
use crier::proto::handshake::{accept_key, check_server_response, client_request};
use crier::proto::prepared::encode_client_frame;
use crier::proto::session::{Event, Role, Session, SessionLimits};

/// Where to connect: parsed from `ws://host:port/path?query`.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` as written, for the Host header.
    pub host: String,
    /// The resolved address.
    pub addr: SocketAddr,
    /// Path and query, `/` if none.
    pub path: String,
}

impl Target {
    /// Parses a `ws://` URL (no TLS).
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("{url}: only ws:// URLs are supported"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let with_port = if host.contains(':') {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("{host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host}: no address"))?;
        Ok(Target {
            host: host.to_string(),
            addr,
            path: path.to_string(),
        })
    }

    /// The same target with another path and query.
    pub fn with_path(&self, path: &str) -> Target {
        Target {
            path: path.to_string(),
            ..self.clone()
        }
    }
}

/// An open WebSocket: the socket, the decoder, and bytes that arrived with the 101 response.
#[derive(Debug)]
pub struct Client {
    /// The socket (blocking, TCP_NODELAY).
    pub stream: TcpStream,
    /// Decoder for the server's frames.
    pub session: Session,
    /// Frame bytes read together with the handshake response, to decode first.
    pub leftover: Vec<u8>,
    mask_counter: u32,
}

/// Connects and completes the opening handshake (RFC 6455 §4.1), offering `crier.v1`.
/// `nonce` only varies the `Sec-WebSocket-Key`.
pub fn connect(target: &Target, nonce: u64, timeout: Duration) -> io::Result<Client> {
    let stream = TcpStream::connect_timeout(&target.addr, timeout)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut key_bytes = [0u8; 16];
    key_bytes[..8].copy_from_slice(&nonce.to_le_bytes());
    key_bytes[8..].copy_from_slice(&(nonce ^ 0x9e37_79b9_7f4a_7c15).to_be_bytes());
    let key = BASE64.encode(key_bytes);
    let expected = accept_key(key.as_bytes());
    let request = client_request(&target.host, &target.path, &key, Some("crier.v1"));
    let mut stream = stream;
    stream.write_all(&request)?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed during the handshake",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        match check_server_response(&buf, &expected) {
            Ok(None) => continue,
            Ok(Some(head_len)) => {
                let leftover = buf.split_off(head_len);
                return Ok(Client {
                    stream,
                    session: Session::new(
                        Role::Client,
                        SessionLimits {
                            max_message_bytes: 64 << 20,
                        },
                    ),
                    leftover,
                    mask_counter: nonce as u32,
                });
            }
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        }
    }
}

impl Client {
    /// Appends one masked client frame to `out` (the caller writes it, so frames can batch).
    pub fn encode(&mut self, opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
        self.mask_counter = self.mask_counter.wrapping_mul(1_664_525).wrapping_add(1);
        encode_client_frame(true, opcode, payload, self.mask_counter.to_le_bytes(), out);
    }

    /// Clean close (RFC 6455 §7.1.2): send Close 1000, then read until the server's Close and
    /// its end of the TCP connection (the server closes first, so TIME_WAIT stays there).
    pub fn close(mut self) -> io::Result<()> {
        let mut out = Vec::new();
        self.encode(OpCode::Close, &close::NORMAL.to_be_bytes(), &mut out);
        self.stream.write_all(&out)?;
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Decodes every complete data message in `input` (unmasked in place), calling `on_message`
/// with (is_text, payload). Control frames are ignored except Close, which is an error.
pub fn decode_all(
    session: &mut Session,
    input: &mut [u8],
    mut on_message: impl FnMut(bool, &[u8]),
) -> io::Result<()> {
    let mut pos = 0;
    loop {
        let decoded = session
            .decode(&mut input[pos..], 0)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")))?;
        pos += decoded.consumed;
        match decoded.event {
            None => return Ok(()),
            Some(Event::Text(p)) => on_message(true, p),
            Some(Event::Binary(p)) => on_message(false, p),
            Some(Event::Ping(_) | Event::Pong(_)) => {}
            Some(Event::Close { code, .. }) => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!("server closed the WebSocket (code {code:?})"),
                ))
            }
        }
    }
}
