//! Why a connection failed or was closed: one variant per cause. The wording is what the
//! report's `first_error` shows and what users search for ("is crier running?").

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::ws::{HandshakeError, ProtocolError};

/// A connection that failed before it was ready, or was closed after.
#[derive(Debug)]
pub(super) enum ConnError {
    /// The TCP connect failed (at once, or when it completed).
    Connect {
        target: SocketAddr,
        source: Option<IpAddr>,
        error: io::Error,
    },
    /// mio would not register the socket.
    Register(io::Error),
    Read(io::Error),
    Write(io::Error),
    /// Writing the upgrade request failed.
    HandshakeWrite(io::Error),
    /// The broker closed the TCP connection (EOF) after the handshake.
    ClosedByBroker,
    /// The broker closed the TCP connection (EOF) before answering the upgrade.
    ClosedDuringHandshake,
    /// The broker's upgrade response broke RFC 6455 §4.1.
    HandshakeRefused {
        target: SocketAddr,
        error: HandshakeError,
    },
    /// The broker's frames broke RFC 6455.
    Protocol(ProtocolError),
    /// The broker sent a Close frame.
    BrokerSentClose {
        code: Option<u16>,
        reason: String,
    },
    /// The TCP connect did not complete in time.
    ConnectTimeout(Duration),
    /// The WebSocket handshake (or the `load-all` subscription) did not complete in time.
    HandshakeTimeout(Duration),
    /// The answer to an HTTP publish is not HTTP.
    MalformedHttp(httparse::Error),
    /// The answer to an HTTP publish has no Content-Length (we cannot find its end).
    HttpNoContentLength,
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Connect {
                target,
                source,
                error,
            } => connect_error(f, *target, *source, error),
            ConnError::Register(e) => write!(f, "cannot register socket: {e}"),
            ConnError::Read(e) => write!(f, "read failed: {e}"),
            ConnError::Write(e) => write!(f, "write failed: {e}"),
            ConnError::HandshakeWrite(e) => write!(f, "write failed during handshake: {e}"),
            ConnError::ClosedByBroker => f.write_str("broker closed the connection"),
            ConnError::ClosedDuringHandshake => {
                f.write_str("broker closed the connection during the handshake")
            }
            ConnError::HandshakeRefused { target, error } => {
                write!(f, "WebSocket handshake refused by {target}: {error}")
            }
            ConnError::Protocol(e) => write!(f, "protocol error: {e:?}"),
            ConnError::BrokerSentClose { code, reason } => {
                write!(f, "broker sent Close (code {code:?}, reason {reason:?})")
            }
            ConnError::ConnectTimeout(after) => timed_out(f, "TCP connect", after),
            ConnError::HandshakeTimeout(after) => timed_out(f, "WebSocket handshake", after),
            ConnError::MalformedHttp(e) => write!(f, "malformed HTTP response to publish: {e}"),
            ConnError::HttpNoContentLength => {
                f.write_str("HTTP publish response without Content-Length")
            }
        }
    }
}

impl std::error::Error for ConnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnError::Connect { error, .. } => Some(error),
            ConnError::Register(e)
            | ConnError::Read(e)
            | ConnError::Write(e)
            | ConnError::HandshakeWrite(e) => Some(e),
            ConnError::MalformedHttp(e) => Some(e),
            _ => None,
        }
    }
}

/// A failed connect, with the likely fix for the usual causes.
fn connect_error(
    f: &mut fmt::Formatter<'_>,
    target: SocketAddr,
    source: Option<IpAddr>,
    e: &io::Error,
) -> fmt::Result {
    let from = source.map(|s| format!(" from {s}")).unwrap_or_default();
    match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            write!(
                f,
                "connection refused at {target}{from} — is crier running?"
            )
        }
        io::ErrorKind::AddrNotAvailable => write!(
            f,
            "cannot connect to {target}{from}: {e} — out of ephemeral ports? (see README: limits)"
        ),
        _ if e.raw_os_error() == Some(libc::EMFILE) || e.raw_os_error() == Some(libc::ENFILE) => {
            write!(f, "out of file descriptors connecting to {target}: {e} — raise `ulimit -n` / LimitNOFILE")
        }
        _ => write!(f, "cannot connect to {target}{from}: {e}"),
    }
}

fn timed_out(f: &mut fmt::Formatter<'_>, what: &str, after: &Duration) -> fmt::Result {
    write!(
        f,
        "{what} timed out after {after:?} (broker overloaded or listen backlog full?)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_cause_and_the_fix() {
        let target: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let refused = ConnError::Connect {
            target,
            source: Some("127.0.0.2".parse().unwrap()),
            error: io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(
            refused.to_string(),
            "connection refused at 127.0.0.1:8080 from 127.0.0.2 — is crier running?"
        );
        let emfile = ConnError::Connect {
            target,
            source: None,
            error: io::Error::from_raw_os_error(libc::EMFILE),
        };
        assert!(emfile.to_string().starts_with("out of file descriptors"));
        assert_eq!(
            ConnError::HandshakeTimeout(Duration::from_secs(15)).to_string(),
            "WebSocket handshake timed out after 15s (broker overloaded or listen backlog full?)"
        );
        assert_eq!(
            ConnError::BrokerSentClose {
                code: Some(1001),
                reason: "bye".into()
            }
            .to_string(),
            "broker sent Close (code Some(1001), reason \"bye\")"
        );
    }
}
