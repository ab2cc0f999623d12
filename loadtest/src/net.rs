//! Opening client sockets: non-blocking connect with TCP_NODELAY, and spreading source
//! addresses over 127.0.0.1-127.0.0.254 when one source address would run out of ports.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Above this many connections to a loopback target, connection `i` binds source address
/// 127.0.0.(1 + i % 254). One source address has one ephemeral port range per destination
/// (28,232 ports by default); staying well under that keeps TIME_WAIT from previous runs
/// from refusing new connections.
pub(crate) const SPREAD_ABOVE_CONNECTIONS: u64 = 25_000;

/// Source addresses used when spreading.
pub(crate) const LOOPBACK_SOURCES: u32 = 254;

/// The source address connection `i` of `total` should bind, if any.
pub(crate) fn source_addr(i: u64, total: u64, target: SocketAddr) -> Option<IpAddr> {
    if total <= SPREAD_ABOVE_CONNECTIONS {
        return None;
    }
    match target.ip() {
        IpAddr::V4(v4) if v4.is_loopback() => {
            let last = 1 + (i % u64::from(LOOPBACK_SOURCES)) as u8;
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
        }
        // A non-loopback target must be reached from a routable address we cannot guess.
        _ => None,
    }
}

/// Starts a non-blocking connect (completion shows as writability).
pub(crate) fn start_connect(
    target: SocketAddr,
    source: Option<IpAddr>,
) -> io::Result<mio::net::TcpStream> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        crate::sys::set_bind_address_no_port(socket.as_raw_fd())?;
        socket.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
    }
    match socket.connect(&SockAddr::from(target)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(socket.into()))
}

/// The kernel's ephemeral port range, for the "too many connections" check.
pub(crate) fn ephemeral_ports() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|s| s.parse::<u64>());
    let (lo, hi) = (it.next()?.ok()?, it.next()?.ok()?);
    Some(hi.saturating_sub(lo) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_spreading_for_small_runs_or_remote_targets() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let remote: SocketAddr = "10.0.0.5:8080".parse().unwrap();
        assert_eq!(source_addr(0, 1000, local), None);
        assert_eq!(source_addr(0, 100_000, remote), None);
    }

    #[test]
    fn spreading_cycles_over_254_loopback_addresses() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let total = 100_000;
        let ip = |i| source_addr(i, total, local).unwrap();
        assert_eq!(ip(0), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(ip(253), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 254)));
        assert_eq!(ip(254), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
        let mut per_addr = std::collections::HashMap::new();
        for i in 0..total {
            *per_addr.entry(ip(i)).or_insert(0u64) += 1;
        }
        assert_eq!(per_addr.len(), 254);
        assert!(
            per_addr.values().all(|&n| n == 393 || n == 394),
            "even spread"
        );
    }
}
