//! Why crier-load could not run (or finish) a measurement, one variant per cause, each worded
//! with the fix, and the exit code it maps to. Findings about the broker are not errors: they
//! go in the report.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::config::UrlError;
use crate::procstat::ProcError;

/// Setup failed: bad flags, fd limit, ports, connection failures beyond --max-failed-pct.
pub(crate) const EXIT_SETUP: u8 = 2;
/// The hard timeout was hit.
pub(crate) const EXIT_TIMEOUT: u8 = 3;

#[derive(Debug)]
pub(crate) enum SetupError {
    NoTopicsOrPublishers,
    BadRate,
    /// `--max` counts acks, and binary WebSocket publishes carry no id.
    MaxNeedsAcks,
    ZeroWindow,
    ZeroRepeat,
    Url(UrlError),
    ReadFdLimit(io::Error),
    FdLimit {
        connections: u64,
        needed: u64,
        soft: u64,
        hard: u64,
    },
    EphemeralPorts {
        connections: u64,
        target: SocketAddr,
        ports: u64,
        sources: u64,
    },
    ServerSample(ProcError),
    StartWorker(io::Error),
    SpawnWorker(io::Error),
    /// More connections failed than --max-failed-pct allows (or a publisher did).
    ConnectionsFailed {
        failed: u64,
        total: u64,
        publishers_failed: u64,
        max_failed: u64,
        first_error: String,
    },
    /// The hard timeout hit before everyone was connected.
    ConnectTimeout {
        up: u64,
        total: u64,
    },
    WriteOutput {
        path: String,
        error: io::Error,
    },
}

impl SetupError {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            SetupError::ConnectTimeout { .. } => EXIT_TIMEOUT,
            _ => EXIT_SETUP,
        }
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::NoTopicsOrPublishers => {
                f.write_str("--topics and --publishers must be at least 1")
            }
            SetupError::BadRate => {
                f.write_str("--rate must be a positive number of messages per second")
            }
            SetupError::MaxNeedsAcks => f.write_str("--max opens its window with acks, and binary publishes carry no id: use --max without --binary, or with --http-publish"),
            SetupError::ZeroWindow => f.write_str("--window must be at least 1"),
            SetupError::ZeroRepeat => f.write_str("--repeat must be at least 1"),
            SetupError::Url(e) => e.fmt(f),
            SetupError::ReadFdLimit(e) => write!(f, "cannot read RLIMIT_NOFILE: {e}"),
            SetupError::FdLimit { connections, needed, soft, hard } => write!(
                f,
                "{connections} connections need about {needed} file descriptors but the limit is {soft} (hard {hard}): raise it with `ulimit -n {needed}` or LimitNOFILE={needed} in the systemd unit"
            ),
            SetupError::EphemeralPorts { connections, target, ports, sources } => write!(
                f,
                "{connections} connections to {target} need more than the {ports} ephemeral ports x {sources} source address(es) available (net.ipv4.ip_local_port_range)"
            ),
            SetupError::ServerSample(e) => e.fmt(f),
            SetupError::StartWorker(e) => write!(f, "cannot start worker: {e}"),
            SetupError::SpawnWorker(e) => write!(f, "cannot spawn worker thread: {e}"),
            SetupError::ConnectionsFailed { failed, total, publishers_failed, max_failed, first_error } => write!(
                f,
                "{failed} of {total} connections failed ({publishers_failed} publishers; at most {max_failed} subscriber failures allowed by --max-failed-pct): {first_error}"
            ),
            SetupError::ConnectTimeout { up, total } => write!(
                f,
                "hard timeout while connecting: {up} of {total} connections up"
            ),
            SetupError::WriteOutput { path, error } => write!(f, "cannot write {path}: {error}"),
        }
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SetupError::Url(e) => Some(e),
            SetupError::ServerSample(e) => Some(e),
            SetupError::ReadFdLimit(e)
            | SetupError::StartWorker(e)
            | SetupError::SpawnWorker(e)
            | SetupError::WriteOutput { error: e, .. } => Some(e),
            _ => None,
        }
    }
}

impl From<UrlError> for SetupError {
    fn from(e: UrlError) -> SetupError {
        SetupError::Url(e)
    }
}

impl From<ProcError> for SetupError {
    fn from(e: ProcError) -> SetupError {
        SetupError::ServerSample(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_connect_timeout_exits_3() {
        let timeout = SetupError::ConnectTimeout { up: 1, total: 2 };
        assert_eq!(timeout.exit_code(), EXIT_TIMEOUT);
        assert_eq!(
            timeout.to_string(),
            "hard timeout while connecting: 1 of 2 connections up"
        );
        assert_eq!(SetupError::ZeroWindow.exit_code(), EXIT_SETUP);
        let fds = SetupError::FdLimit {
            connections: 10,
            needed: 80,
            soft: 64,
            hard: 64,
        };
        assert!(fds.to_string().contains("`ulimit -n 80`"));
    }
}
