//! How a connection's queued frames reach its socket: `send(2)` and `sendmsg(2)` rather than
//! `write(2)` and `writev(2)`. Both pairs end in the same `tcp_sendmsg`, but the socket calls
//! skip the VFS layer (`fdget_pos`, `rw_verify_area`, fsnotify) that `write` and `writev` pass
//! through for every file. Per small loopback send that is 3-10% less kernel CPU here (see
//! docs/benchmarks.md), and a fan-out is little else than such sends.

use std::io::{self, IoSlice, Write};

use mio::net::TcpStream;
use socket2::SockRef;

/// A `Write` over a connected TCP socket that sends with `MSG_NOSIGNAL`: a peer that went
/// away is an `EPIPE` error, never a signal, whatever the process's SIGPIPE disposition.
pub(super) struct SocketSink<'a>(SockRef<'a>);

impl<'a> SocketSink<'a> {
    pub(super) fn new(stream: &'a TcpStream) -> Self {
        SocketSink(SockRef::from(stream))
    }
}

impl Write for SocketSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send_with_flags(buf, libc::MSG_NOSIGNAL)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{IoSlice, Read, Write};
    use std::net::{TcpListener, TcpStream as StdStream};

    use super::SocketSink;

    #[test]
    fn plain_and_vectored_sends_arrive_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let mut peer = StdStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        let stream = mio::net::TcpStream::from_std(accepted);
        let mut sink = SocketSink::new(&stream);
        assert_eq!(sink.write(b"one,").expect("send"), 4);
        let parts = [
            IoSlice::new(b"two,"),
            IoSlice::new(b""),
            IoSlice::new(b"three"),
        ];
        assert_eq!(sink.write_vectored(&parts).expect("sendmsg"), 9);
        drop(stream);
        let mut got = String::new();
        peer.read_to_string(&mut got).expect("read");
        assert_eq!(got, "one,two,three");
    }
}
