//! `--metrics-listen ADDR`: a separate listener serving only `GET /metrics` (and `/healthz`),
//! so metrics need not be reachable where clients are. One small thread of its own, not a
//! shard: scrapes are rare, so it answers one request per connection, in turn, with blocking
//! I/O bounded by short timeouts, and reads the counters the shards publish every loop turn.
//! It never touches a shard's state.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::metrics::render_prometheus;
use crate::proto::http::parse_request_head;
use crate::proto::response::{response, status};
use crate::shared::Shared;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

/// How long one scraper may take to send its request or read the answer: a slow or stalled
/// client holds the thread at most this long (the address is meant to be private).
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections answered per readiness event before the stop flag is checked again.
const ACCEPTS_PER_TURN: usize = 64;

/// The running metrics listener: its address, and how to stop it.
#[derive(Debug)]
pub struct MetricsListener {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsListener {
    /// Binds `addr` and starts the thread.
    pub fn start(addr: SocketAddr, shared: Arc<Shared>) -> io::Result<MetricsListener> {
        let mut listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("crier-metrics".into())
                .spawn(move || serve(poll, listener, &shared, &stop))?
        };
        Ok(MetricsListener {
            local_addr,
            stop,
            waker,
            thread: Some(thread),
        })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Asks the thread to stop; returns at once.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
    }

    /// Stops the thread and waits for it.
    pub fn join(mut self) {
        self.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut poll: Poll, listener: TcpListener, shared: &Shared, stop: &AtomicBool) {
    let mut events = Events::with_capacity(16);
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            eprintln!("crier: the metrics listener stopped: {e}");
            return;
        }
        for _ in 0..ACCEPTS_PER_TURN {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match listener.accept() {
                Ok((stream, _peer)) => answer(std::net::TcpStream::from(stream), shared),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // Out of descriptors, say: try again at the next readiness event.
                Err(_) => break,
            }
        }
    }
}

/// Reads one request head and answers it, closing the connection. Errors are the client's.
fn answer(mut stream: std::net::TcpStream, shared: &Shared) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(IO_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(IO_TIMEOUT)).is_err()
    {
        return;
    }
    let limits = shared.head_limits;
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head = loop {
        match parse_request_head(&buf, &limits) {
            Ok(Some((head, _len))) => break head,
            Ok(None) => {}
            Err(_) => return reply(&mut stream, status::BAD_REQUEST, b"bad request\n"),
        }
        if Instant::now() >= deadline {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    match (head.method(), head.path()) {
        ("GET", "/metrics") => {
            let snapshots: Vec<_> = shared.counters.iter().map(|c| c.snapshot()).collect();
            let text = render_prometheus(&snapshots);
            let bytes = response(
                status::OK,
                &[],
                "text/plain; version=0.0.4; charset=utf-8",
                text.as_bytes(),
                false,
            );
            let _ = stream.write_all(&bytes);
        }
        ("GET", "/healthz") => reply(&mut stream, status::OK, b"ok\n"),
        _ => reply(
            &mut stream,
            status::NOT_FOUND,
            b"only /metrics and /healthz here\n",
        ),
    }
}

fn reply(stream: &mut std::net::TcpStream, code: u16, body: &[u8]) {
    let bytes = response(code, &[], "text/plain; charset=utf-8", body, false);
    let _ = stream.write_all(&bytes);
}
