//! One small frame to each of N loopback TCP sockets per round: one `writev` per socket (what
//! the shard's flush does at low publish rates) against batches of `IORING_OP_SEND`/`SENDMSG`
//! submitted with one `io_uring_enter` each. Reports wall time and the writer thread's CPU time
//! per send, median over rounds, and the ratio uring/writev. `--mode all` adds one plain
//! `sendmsg(2)` per socket: a syscall per send like `writev`, without the VFS write path, which
//! separates what batching saves from what skipping `vfs_writev` saves. A measurement, not
//! broker code: nothing here is used by crier itself.
//!
//! The reading ends are drained by a second thread (epoll through mio, edge-triggered, read and
//! discard), pinnable with `--reader-cpu`, so sockets never fill up, like a subscriber load
//! generator. Between rounds the writer waits until the reader has received every byte sent, so
//! each round starts with empty socket buffers. Every SQE carries `MSG_DONTWAIT`: a full socket
//! then completes at once with `-EAGAIN` instead of arming a poll and completing later (the
//! kernel sets `REQ_F_NOWAIT` for it in `io_sendmsg_prep`); `--check-eagain` shows it on a
//! socket whose reader does not read, with a send without the flag for contrast.

use std::io::{self, IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use crier_bench::median_sorted;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// One `writev` per socket.
    Writev,
    /// One `sendmsg(2)` per socket with `MSG_DONTWAIT`: a syscall per send without the VFS
    /// write path (`vfs_writev`, `fdget_pos`) that `writev` goes through.
    Sendmsg,
    /// Batches of io_uring send SQEs, one `io_uring_enter` per batch.
    Uring,
    /// Alternate rounds of writev and uring (writev-uring, uring-writev, ...), same machine
    /// conditions.
    Both,
    /// Alternate rounds of writev, sendmsg and uring.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Op {
    /// `IORING_OP_SENDMSG` with a one-entry iovec (the vectored call, like `writev`).
    Sendmsg,
    /// `IORING_OP_SEND` with a plain buffer.
    Send,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Setup {
    /// No setup flags.
    Default,
    /// `IORING_SETUP_SINGLE_ISSUER`.
    SingleIssuer,
    /// `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN`.
    DeferTaskrun,
}

#[derive(Debug, Parser)]
#[command(about = "CPU per small loopback send: one writev per socket vs batched io_uring SQEs")]
struct Args {
    /// Connection pairs (2 descriptors each); lowered to fit the open-file limit.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Measured rounds per mode; one round = one frame to every connection.
    #[arg(long, default_value_t = 200)]
    rounds: usize,
    /// Unmeasured rounds per mode before the measured ones.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Fixed mode (for `perf stat`/`strace -c`): this many rounds per mode, no clock reads.
    #[arg(long)]
    iterations: Option<usize>,
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    mode: Mode,
    /// SQEs per `io_uring_enter`; 0 = all connections in one submission.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    #[arg(long, value_enum, default_value_t = Op::Sendmsg)]
    op: Op,
    #[arg(long, value_enum, default_value_t = Setup::Default)]
    setup: Setup,
    /// WebSocket frame bytes per send (an unmasked text frame, 3..=127).
    #[arg(long, default_value_t = 74)]
    size: usize,
    /// Pin the writer (main) thread to this CPU.
    #[arg(long)]
    writer_cpu: Option<usize>,
    /// Pin the reader thread to this CPU.
    #[arg(long)]
    reader_cpu: Option<usize>,
    /// Only show how a send with and without `MSG_DONTWAIT` completes on a full socket.
    #[arg(long)]
    check_eagain: bool,
    /// Print one JSON line instead of the text report.
    #[arg(long)]
    json: bool,
}

/// Why a run could not be done.
#[derive(Debug)]
enum BenchError {
    /// Opening the loopback connection pairs failed.
    Connect(io::Error),
    /// `io_uring_setup` failed: io_uring disabled (`kernel.io_uring_disabled`), filtered by
    /// seccomp (containers), or an old kernel.
    UringSetup(io::Error),
    /// `io_uring_enter` failed or submitted fewer SQEs than queued.
    UringSubmit(io::Error),
    /// The reader did not receive what was sent within the deadline.
    ReaderStalled { expected: u64, received: u64 },
    /// A write failed with an error other than `EAGAIN`.
    Write(io::Error),
    /// Pinning a thread to a CPU failed.
    Pin(usize, io::Error),
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchError::Connect(e) => write!(f, "opening loopback connections: {e}"),
            BenchError::UringSetup(e) => write!(
                f,
                "io_uring setup failed ({e}); check sysctl kernel.io_uring_disabled, seccomp \
                 filters of the container, or the setup flags (--setup default); \
                 `--mode writev` runs without io_uring"
            ),
            BenchError::UringSubmit(e) => write!(f, "io_uring_enter: {e}"),
            BenchError::ReaderStalled { expected, received } => write!(
                f,
                "reader received {received} of {expected} bytes within the deadline"
            ),
            BenchError::Write(e) => write!(f, "write: {e}"),
            BenchError::Pin(cpu, e) => write!(f, "pinning to CPU {cpu}: {e}"),
        }
    }
}

/// The plain `sendmsg(2)` and the calling thread's CPU-time clocks: with the ring, the only
/// `unsafe` of this program.
#[allow(unsafe_code)]
mod sys {
    use std::io;
    use std::os::fd::RawFd;

    /// One `sendmsg(2)` of `buf` on `fd` with `MSG_DONTWAIT`; the byte count or the error.
    pub(crate) fn sendmsg(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
        let mut iov = libc::iovec {
            iov_base: buf.as_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; all-zero is "no name, no iovec, no control".
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        // SAFETY: `msg` points to one iovec describing `buf`, both alive for the call; the
        // kernel only reads them. A bad or closed fd is an error return, not UB.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// The calling thread's CPU time (user + system), in nanoseconds.
    pub(crate) fn cpu_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one `timespec` through a valid, exclusive pointer.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        debug_assert_eq!(rc, 0);
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    /// The calling thread's user and system CPU time, in microseconds (tick-sampled split).
    pub(crate) fn user_sys_us() -> (u64, u64) {
        // SAFETY: rusage is plain data; an all-zero value is valid.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage writes one `rusage` through a valid, exclusive pointer.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
        debug_assert_eq!(rc, 0);
        let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        (us(ru.ru_utime), us(ru.ru_stime))
    }
}

/// The io_uring sender: the ring and the per-slot `msghdr`/`iovec` that SQEs point to.
#[allow(unsafe_code)]
mod uring {
    use std::io;
    use std::os::fd::RawFd;

    use io_uring::{opcode, types, IoUring};

    use super::{Op, Setup};

    /// What the CQEs of one round said.
    #[derive(Debug, Default, Clone, Copy)]
    pub(crate) struct Completions {
        pub(crate) bytes: u64,
        pub(crate) eagain: u64,
        pub(crate) short: u64,
        pub(crate) errors: u64,
        pub(crate) enters: u64,
        pub(crate) first_error: Option<i32>,
    }

    /// A ring with `batch` SQ entries and the buffers its SQEs point to. The frame and the
    /// `msghdr`/`iovec` arrays live on the heap, owned here, so their addresses stay valid for
    /// as long as the ring may read them.
    pub(crate) struct Sender {
        ring: IoUring,
        batch: usize,
        op: Op,
        frame: Box<[u8]>,
        iovs: Box<[libc::iovec]>,
        msgs: Box<[libc::msghdr]>,
    }

    /// Builds a ring with `entries` SQ slots and the chosen setup flags.
    pub(crate) fn build_ring(entries: usize, setup: Setup) -> io::Result<IoUring> {
        let mut builder = IoUring::builder();
        match setup {
            Setup::Default => {}
            Setup::SingleIssuer => {
                builder.setup_single_issuer();
            }
            Setup::DeferTaskrun => {
                builder.setup_single_issuer().setup_defer_taskrun();
            }
        }
        let entries = u32::try_from(entries.clamp(1, 32_768)).expect("clamped");
        builder.build(entries)
    }

    impl Sender {
        pub(crate) fn new(batch: usize, op: Op, setup: Setup, frame: &[u8]) -> io::Result<Sender> {
            let ring = build_ring(batch, setup)?;
            let frame: Box<[u8]> = frame.into();
            let iovs: Box<[libc::iovec]> = (0..batch)
                .map(|_| libc::iovec {
                    iov_base: frame.as_ptr() as *mut libc::c_void,
                    iov_len: frame.len(),
                })
                .collect();
            let mut msgs: Box<[libc::msghdr]> = (0..batch)
                // SAFETY: msghdr is plain data; all-zero is "no name, no iovec, no control".
                .map(|_| unsafe { std::mem::zeroed::<libc::msghdr>() })
                .collect();
            for (msg, iov) in msgs.iter_mut().zip(iovs.iter()) {
                msg.msg_iov = iov as *const libc::iovec as *mut libc::iovec;
                msg.msg_iovlen = 1;
            }
            Ok(Sender {
                ring,
                batch,
                op,
                frame,
                iovs,
                msgs,
            })
        }

        /// One frame to every fd, `batch` SQEs per `io_uring_enter`, waiting for all CQEs of a
        /// batch before the next (they complete inline: `MSG_DONTWAIT` never arms a poll).
        pub(crate) fn send_round(&mut self, fds: &[RawFd]) -> io::Result<Completions> {
            let mut done = Completions::default();
            let len = self.frame.len();
            debug_assert!(self.iovs.iter().all(|iov| iov.iov_len == len));
            for chunk in fds.chunks(self.batch) {
                {
                    let mut sq = self.ring.submission();
                    for (slot, &fd) in chunk.iter().enumerate() {
                        let entry = match self.op {
                            Op::Send => {
                                opcode::Send::new(types::Fd(fd), self.frame.as_ptr(), len as u32)
                                    .flags(libc::MSG_DONTWAIT)
                                    .build()
                            }
                            Op::Sendmsg => opcode::SendMsg::new(types::Fd(fd), &self.msgs[slot])
                                .flags(libc::MSG_DONTWAIT as u32)
                                .build(),
                        }
                        .user_data(slot as u64);
                        debug_assert!(slot < self.msgs.len());
                        // SAFETY: the SQE points into `self.frame` and `self.msgs[slot]` (whose
                        // iovec is `self.iovs[slot]`), all owned by `self` and not touched until
                        // this batch's CQEs are reaped below; the queue has `batch` >= chunk
                        // free slots because every earlier batch was fully reaped.
                        unsafe { sq.push(&entry) }
                            .map_err(|_| io::Error::other("submission queue full"))?;
                    }
                }
                let submitted = self.ring.submit_and_wait(chunk.len())?;
                done.enters += 1;
                if submitted != chunk.len() {
                    return Err(io::Error::other(format!(
                        "submitted {submitted} of {} SQEs",
                        chunk.len()
                    )));
                }
                let mut reaped = 0;
                for cqe in self.ring.completion() {
                    reaped += 1;
                    let res = cqe.result();
                    if res == len as i32 {
                        done.bytes += len as u64;
                    } else if res >= 0 {
                        done.short += 1;
                        done.bytes += res as u64;
                    } else if res == -libc::EAGAIN {
                        done.eagain += 1;
                    } else {
                        done.errors += 1;
                        done.first_error.get_or_insert(-res);
                    }
                }
                debug_assert_eq!(reaped, chunk.len());
            }
            Ok(done)
        }
    }

    /// How one send SQE completed on a socket whose peer does not read.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct EagainCheck {
        /// SQEs of 64 KiB with `MSG_DONTWAIT` that completed with bytes before one got `-EAGAIN`.
        pub(crate) sends_until_full: u64,
        /// Bytes the socket took before it was full.
        pub(crate) bytes_until_full: u64,
        /// The `-EAGAIN` CQE was there when `io_uring_enter(.., min_complete=1)` returned.
        pub(crate) eagain_immediate: bool,
        /// Time from submit to the `-EAGAIN` CQE, nanoseconds.
        pub(crate) eagain_ns: u64,
        /// Without `MSG_DONTWAIT`, no CQE 50 ms after submitting (a poll was armed)...
        pub(crate) without_flag_pending: bool,
        /// ...and its CQE result after the reader drained the socket.
        pub(crate) without_flag_result: i32,
    }

    /// Fills one socket (`writer`, whose peer is `reader` and does not read), showing that a
    /// send SQE with `MSG_DONTWAIT` completes at once with `-EAGAIN`, and one without it stays
    /// pending until the reader makes room.
    pub(crate) fn check_eagain(
        mut ring: IoUring,
        writer: RawFd,
        reader: &mut std::net::TcpStream,
        op: Op,
    ) -> io::Result<EagainCheck> {
        use std::io::Read;
        use std::time::{Duration, Instant};

        let chunk = vec![0u8; 64 * 1024].into_boxed_slice();
        let iov = Box::new(libc::iovec {
            iov_base: chunk.as_ptr() as *mut libc::c_void,
            iov_len: chunk.len(),
        });
        // SAFETY: msghdr is plain data; all-zero is "no name, no iovec, no control".
        let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msg.msg_iov = &*iov as *const libc::iovec as *mut libc::iovec;
        msg.msg_iovlen = 1;
        let entry = |flags: i32| match op {
            Op::Send => opcode::Send::new(types::Fd(writer), chunk.as_ptr(), chunk.len() as u32)
                .flags(flags)
                .build(),
            Op::Sendmsg => opcode::SendMsg::new(types::Fd(writer), &*msg)
                .flags(flags as u32)
                .build(),
        };
        let submit_one = |ring: &mut IoUring, flags: i32, wait: usize| -> io::Result<()> {
            let e = entry(flags);
            // SAFETY: the SQE points into `chunk` and `msg`/`iov`, which outlive every
            // submission of this function (its CQE is always reaped before returning), and the
            // ring has free slots: at most one SQE is in flight.
            unsafe { ring.submission().push(&e) }
                .map_err(|_| io::Error::other("submission queue full"))?;
            ring.submit_and_wait(wait)?;
            Ok(())
        };

        let mut sends = 0u64;
        let mut bytes = 0u64;
        let (immediate, eagain_ns) = loop {
            if sends > 10_000 {
                return Err(io::Error::other(
                    "socket never filled after 10,000 sends of 64 KiB",
                ));
            }
            let start = Instant::now();
            submit_one(&mut ring, libc::MSG_DONTWAIT, 1)?;
            let elapsed = start.elapsed().as_nanos() as u64;
            sends += 1;
            let cqe = ring.completion().next();
            let res = cqe.map(|c| c.result());
            match res {
                Some(r) if r == -libc::EAGAIN => {
                    sends -= 1;
                    break (true, elapsed);
                }
                Some(r) if r >= 0 => bytes += r as u64,
                Some(r) => return Err(io::Error::from_raw_os_error(-r)),
                None => break (false, elapsed),
            }
        };

        // Contrast: the same SQE without MSG_DONTWAIT on the full socket.
        submit_one(&mut ring, 0, 0)?;
        std::thread::sleep(Duration::from_millis(50));
        // With DEFER_TASKRUN completions only run in an enter with GETEVENTS: wait 1 ms.
        let poll_cqe = |ring: &mut IoUring| -> io::Result<Option<i32>> {
            let ts = types::Timespec::new().nsec(1_000_000);
            match ring
                .submitter()
                .submit_with_args(1, &types::SubmitArgs::new().timespec(&ts))
            {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
                Err(e) => return Err(e),
            }
            Ok(ring.completion().next().map(|c| c.result()))
        };
        let pending = poll_cqe(&mut ring)?.is_none();
        // Let the reader drain the socket; the pending send then completes.
        reader.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut buf = vec![0u8; 256 * 1024];
        let deadline = Instant::now() + Duration::from_secs(10);
        let result = loop {
            match reader.read(&mut buf) {
                Ok(0) => break -1,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
            if let Some(res) = poll_cqe(&mut ring)? {
                break res;
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the send without MSG_DONTWAIT never completed",
                ));
            }
        };
        Ok(EagainCheck {
            sends_until_full: sends,
            bytes_until_full: bytes,
            eagain_immediate: immediate,
            eagain_ns,
            without_flag_pending: pending,
            without_flag_result: result,
        })
    }
}

/// N connected pairs: the writer ends (accepted, non-blocking, `TCP_NODELAY`) and the reader
/// ends (connected, non-blocking, for the reader thread).
fn open_pairs(n: usize) -> io::Result<(Vec<TcpStream>, Vec<TcpStream>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut writers = Vec::with_capacity(n);
    let mut readers = Vec::with_capacity(n);
    for _ in 0..n {
        let reader = TcpStream::connect(addr)?;
        let (writer, _) = listener.accept()?;
        writer.set_nodelay(true)?;
        writer.set_nonblocking(true)?;
        reader.set_nonblocking(true)?;
        writers.push(writer);
        readers.push(reader);
    }
    Ok((writers, readers))
}

/// Reads and discards on every reader end until `stop`, adding what it read to `received`.
fn reader_loop(
    readers: Vec<TcpStream>,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    cpu: Option<usize>,
) -> Result<(), BenchError> {
    use mio::{Events, Interest, Poll, Token};
    if let Some(cpu) = cpu {
        crier::sys::pin_current_thread(cpu).map_err(|e| BenchError::Pin(cpu, e))?;
    }
    let mut poll = Poll::new().map_err(BenchError::Connect)?;
    let mut streams: Vec<mio::net::TcpStream> = readers
        .into_iter()
        .map(mio::net::TcpStream::from_std)
        .collect();
    for (i, s) in streams.iter_mut().enumerate() {
        poll.registry()
            .register(s, Token(i), Interest::READABLE)
            .map_err(BenchError::Connect)?;
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(50))) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(BenchError::Connect(e));
        }
        let mut got = 0u64;
        for event in events.iter() {
            let s = &mut streams[event.token().0];
            // Edge-triggered: read to WouldBlock.
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got += n as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(BenchError::Connect(e)),
                }
            }
        }
        if got > 0 {
            received.fetch_add(got, Ordering::Release);
        }
    }
    Ok(())
}

/// What one round cost and what its sends returned.
#[derive(Debug, Default, Clone, Copy)]
struct Round {
    wall_ns: u64,
    cpu_ns: u64,
    user_us: u64,
    sys_us: u64,
    bytes: u64,
    eagain: u64,
    short: u64,
    errors: u64,
    enters: u64,
}

/// One writev (or, with `sendmsg`, one `sendmsg(2)`) per socket.
fn syscall_round(
    writers: &[TcpStream],
    fds: &[RawFd],
    frame: &[u8],
    sendmsg: bool,
) -> Result<Round, BenchError> {
    let mut r = Round::default();
    let bufs = [IoSlice::new(frame)];
    for (w, &fd) in writers.iter().zip(fds) {
        let written = if sendmsg {
            sys::sendmsg(fd, frame)
        } else {
            (&*w).write_vectored(&bufs)
        };
        match written {
            Ok(n) if n == frame.len() => r.bytes += n as u64,
            Ok(n) => {
                r.short += 1;
                r.bytes += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => r.eagain += 1,
            Err(e) => return Err(BenchError::Write(e)),
        }
        r.enters += 1;
    }
    Ok(r)
}

/// Runs one round of `mode` (Writev or Uring), timed unless `timed` is false.
fn run_round(
    mode: Mode,
    writers: &[TcpStream],
    fds: &[RawFd],
    frame: &[u8],
    sender: Option<&mut uring::Sender>,
    timed: bool,
) -> Result<Round, BenchError> {
    let (wall0, cpu0, (u0, s0)) = if timed {
        (Some(Instant::now()), sys::cpu_ns(), sys::user_sys_us())
    } else {
        (None, 0, (0, 0))
    };
    let mut r = match mode {
        Mode::Writev => syscall_round(writers, fds, frame, false)?,
        Mode::Sendmsg => syscall_round(writers, fds, frame, true)?,
        _ => {
            let sender = sender.expect("uring mode has a sender");
            let c = sender.send_round(fds).map_err(BenchError::UringSubmit)?;
            if let Some(errno) = c.first_error {
                return Err(BenchError::Write(io::Error::from_raw_os_error(errno)));
            }
            Round {
                bytes: c.bytes,
                eagain: c.eagain,
                short: c.short,
                errors: c.errors,
                enters: c.enters,
                ..Round::default()
            }
        }
    };
    if let Some(wall0) = wall0 {
        r.wall_ns = wall0.elapsed().as_nanos() as u64;
        r.cpu_ns = sys::cpu_ns() - cpu0;
        let (u1, s1) = sys::user_sys_us();
        r.user_us = u1 - u0;
        r.sys_us = s1 - s0;
    }
    Ok(r)
}

/// Waits until the reader has received `expected` bytes in total.
fn wait_drained(received: &AtomicU64, expected: u64) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = received.load(Ordering::Acquire);
        if got >= expected {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::ReaderStalled {
                expected,
                received: got,
            });
        }
        thread::sleep(Duration::from_micros(200));
    }
}

/// The rounds of one mode.
#[derive(Debug, Default)]
struct Series {
    rounds: Vec<Round>,
}

impl Series {
    fn sends(&self, n: usize) -> u64 {
        (self.rounds.len() * n) as u64
    }

    fn total(&self) -> Round {
        let mut t = Round::default();
        for r in &self.rounds {
            t.wall_ns += r.wall_ns;
            t.cpu_ns += r.cpu_ns;
            t.user_us += r.user_us;
            t.sys_us += r.sys_us;
            t.bytes += r.bytes;
            t.eagain += r.eagain;
            t.short += r.short;
            t.errors += r.errors;
            t.enters += r.enters;
        }
        t
    }

    /// Median and minimum of `f(round)` / n, in µs per send.
    fn per_send_us(&self, n: usize, f: impl Fn(&Round) -> u64) -> (f64, f64) {
        let mut v: Vec<f64> = self
            .rounds
            .iter()
            .map(|r| f(r) as f64 / n as f64 / 1e3)
            .collect();
        if v.is_empty() {
            return (0.0, 0.0);
        }
        v.sort_by(f64::total_cmp);
        (median_sorted(&v), v[0])
    }
}

/// The command-line spelling of a flag value.
fn value_name(v: impl ValueEnum) -> String {
    v.to_possible_value()
        .map_or_else(String::new, |p| p.get_name().to_string())
}

/// The unmasked text frame written to every socket: `size` bytes in all.
fn make_frame(size: usize) -> Vec<u8> {
    let size = size.clamp(3, 127);
    let mut f = vec![b'x'; size];
    f[0] = 0x81; // FIN + text (RFC 6455 section 5.2)
    f[1] = (size - 2) as u8; // 7-bit length, server frames are unmasked
    f
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("uring_send: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), BenchError> {
    let limit = crier::sys::raise_open_file_limit().map_err(BenchError::Connect)?;
    if let Some(cpu) = args.writer_cpu {
        crier::sys::pin_current_thread(cpu).map_err(|e| BenchError::Pin(cpu, e))?;
    }
    if args.check_eagain {
        return check_eagain(args);
    }
    // Two descriptors per pair plus a few for the listener, epoll, the ring and stdio.
    let fit = (limit.soft.saturating_sub(64) / 2) as usize;
    let n = if args.connections <= fit {
        args.connections
    } else {
        (fit / 1_000 * 1_000).max(1)
    };
    if n != args.connections && !args.json {
        println!(
            "note: {} connections need {} descriptors, the soft limit is {}: using {n}",
            args.connections,
            2 * args.connections + 64,
            limit.soft
        );
    }
    let frame = make_frame(args.size);
    let batch = if args.batch == 0 {
        n
    } else {
        args.batch.min(n)
    };

    let mut mode = args.mode;
    let mut uring_error = None;
    let mut sender = if matches!(mode, Mode::Writev | Mode::Sendmsg) {
        None
    } else {
        match uring::Sender::new(batch, args.op, args.setup, &frame) {
            Ok(s) => Some(s),
            Err(e) if matches!(mode, Mode::Both | Mode::All) => {
                eprintln!(
                    "uring_send: {}; measuring writev only",
                    BenchError::UringSetup(io::Error::new(e.kind(), e.to_string()))
                );
                uring_error = Some(e.to_string());
                mode = Mode::Writev;
                None
            }
            Err(e) => return Err(BenchError::UringSetup(e)),
        }
    };

    let (writers, readers) = open_pairs(n).map_err(BenchError::Connect)?;
    let fds: Vec<RawFd> = writers.iter().map(|w| w.as_raw_fd()).collect();
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (received, stop, cpu) = (received.clone(), stop.clone(), args.reader_cpu);
        thread::spawn(move || reader_loop(readers, received, stop, cpu))
    };

    let modes: &[Mode] = match mode {
        Mode::Both => &[Mode::Writev, Mode::Uring],
        Mode::All => &[Mode::Writev, Mode::Sendmsg, Mode::Uring],
        Mode::Writev => &[Mode::Writev],
        Mode::Sendmsg => &[Mode::Sendmsg],
        Mode::Uring => &[Mode::Uring],
    };
    let mut series: Vec<Series> = modes.iter().map(|_| Series::default()).collect();
    let mut sent = 0u64;
    let timed = args.iterations.is_none();
    let measured = args.iterations.unwrap_or(args.rounds);
    let result = (|| -> Result<(), BenchError> {
        for pass in 0..args.warmup + measured {
            // Alternate the order within each pair of rounds (ABBA) so neither mode always
            // runs right after the other.
            let order: Vec<usize> = if pass % 2 == 0 {
                (0..modes.len()).collect()
            } else {
                (0..modes.len()).rev().collect()
            };
            for i in order {
                let r = run_round(modes[i], &writers, &fds, &frame, sender.as_mut(), timed)?;
                sent += r.bytes;
                wait_drained(&received, sent)?;
                if pass >= args.warmup {
                    series[i].rounds.push(r);
                }
            }
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let reader_result = reader.join().expect("reader thread does not panic");
    result?;
    reader_result?;

    report(
        args,
        n,
        batch,
        modes,
        &series,
        uring_error.as_deref(),
        timed,
    );
    Ok(())
}

/// `--check-eagain`: one pair, the reader never reads until the check drains it.
fn check_eagain(args: &Args) -> Result<(), BenchError> {
    let (writers, mut readers) = open_pairs(1).map_err(BenchError::Connect)?;
    readers[0]
        .set_nonblocking(false)
        .map_err(BenchError::Connect)?;
    let ring = uring::build_ring(4, args.setup).map_err(BenchError::UringSetup)?;
    let c = uring::check_eagain(ring, writers[0].as_raw_fd(), &mut readers[0], args.op)
        .map_err(BenchError::UringSubmit)?;
    let (op, setup) = (value_name(args.op), value_name(args.setup));
    if args.json {
        println!(
            "{{\"check\":\"eagain\",\"op\":\"{op}\",\"setup\":\"{setup}\",\"sends_until_full\":{},\"bytes_until_full\":{},\"eagain_immediate\":{},\"eagain_us\":{:.1},\"without_dontwait_pending\":{},\"without_dontwait_result\":{}}}",
            c.sends_until_full, c.bytes_until_full, c.eagain_immediate, c.eagain_ns as f64 / 1e3,
            c.without_flag_pending, c.without_flag_result
        );
    } else {
        println!("uring_send --check-eagain (op {op}, setup {setup}), one loopback pair whose reader does not read:");
        println!(
            "  with MSG_DONTWAIT: {} SQEs of 64 KiB took {} bytes, the next got {} ({:.1} µs from submit)",
            c.sends_until_full,
            c.bytes_until_full,
            if c.eagain_immediate {
                "its CQE, -EAGAIN, at once"
            } else {
                "NO CQE when io_uring_enter(min_complete=1) returned"
            },
            c.eagain_ns as f64 / 1e3
        );
        println!(
            "  without MSG_DONTWAIT: {} 50 ms after submit; after the reader drained: result {}",
            if c.without_flag_pending {
                "no CQE (poll armed, request pending)"
            } else {
                "a CQE already"
            },
            c.without_flag_result
        );
    }
    Ok(())
}

fn report(
    args: &Args,
    n: usize,
    batch: usize,
    modes: &[Mode],
    series: &[Series],
    uring_error: Option<&str>,
    timed: bool,
) {
    let (op, setup) = (value_name(args.op), value_name(args.setup));
    let name = |m: Mode| match m {
        Mode::Writev => "writev",
        Mode::Sendmsg => "sendmsg",
        _ => "uring",
    };
    let stats: Vec<_> = modes
        .iter()
        .zip(series)
        .map(|(&m, s)| {
            (
                name(m),
                s.sends(n),
                s.total(),
                s.per_send_us(n, |r| r.wall_ns),
                s.per_send_us(n, |r| r.cpu_ns),
            )
        })
        .collect();
    // (mode, CPU ratio, wall ratio) of each other mode against writev, medians.
    let ratios: Vec<(&str, f64, f64)> = match stats.iter().find(|s| s.0 == "writev") {
        Some(base) if timed => stats
            .iter()
            .filter(|s| s.0 != "writev")
            .map(|s| {
                (
                    s.0,
                    s.4 .0 / base.4 .0.max(f64::MIN_POSITIVE),
                    s.3 .0 / base.3 .0.max(f64::MIN_POSITIVE),
                )
            })
            .collect(),
        _ => Vec::new(),
    };
    let ratio_json = |mode: &str| {
        ratios
            .iter()
            .find(|r| r.0 == mode)
            .map_or("null".to_string(), |(_, cpu, wall)| {
                format!("{{\"cpu\":{cpu:.3},\"wall\":{wall:.3}}}")
            })
    };
    let rounds = series.first().map_or(0, |s| s.rounds.len());
    if args.json {
        let modes_json: Vec<String> = stats
            .iter()
            .map(|(name, sends, t, wall, cpu)| {
                let cpu_total = (t.user_us + t.sys_us).max(1) as f64;
                format!(
                    "\"{name}\":{{\"sends\":{sends},\"wall_us_per_send\":{{\"median\":{:.3},\"min\":{:.3}}},\"cpu_us_per_send\":{{\"median\":{:.3},\"min\":{:.3}}},\"sys_share\":{:.3},\"enters_per_round\":{:.1},\"eagain\":{},\"short\":{},\"errors\":{}}}",
                    wall.0, wall.1, cpu.0, cpu.1, t.sys_us as f64 / cpu_total,
                    t.enters as f64 / rounds.max(1) as f64, t.eagain, t.short, t.errors
                )
            })
            .collect();
        println!(
            "{{\"connections\":{n},\"frame_bytes\":{},\"rounds\":{rounds},\"batch\":{batch},\"op\":\"{op}\",\"setup\":\"{setup}\",\"uring_error\":{},{},\"ratio_uring_writev\":{},\"ratio_sendmsg_writev\":{}}}",
            args.size.clamp(3, 127),
            uring_error.map_or("null".to_string(), |e| format!("{e:?}")),
            modes_json.join(","),
            ratio_json("uring"),
            ratio_json("sendmsg"),
        );
        return;
    }
    println!(
        "uring_send: {n} connections, {} B frame, {rounds} rounds per mode{}, batch {batch}, op {op}, setup {setup}; writer CPU {}, reader CPU {}",
        args.size.clamp(3, 127),
        if timed { "" } else { " (fixed mode, no timing)" },
        args.writer_cpu.map_or_else(
            || format!("{:?}", crier::sys::allowed_cpus()),
            |c| c.to_string()
        ),
        args.reader_cpu.map_or("any".to_string(), |c| c.to_string()),
    );
    println!(
        "  {:<7} {:>10} {:>22} {:>22} {:>6} {:>12} {:>7} {:>6} {:>6}",
        "mode",
        "sends",
        "wall µs/send med (min)",
        "CPU µs/send med (min)",
        "sys %",
        "enters/round",
        "EAGAIN",
        "short",
        "errors"
    );
    // Fixed mode reads no clocks: no timing columns.
    let timing = |(median, min): (f64, f64)| {
        if timed {
            format!("{median:.3} ({min:.3})")
        } else {
            "-".to_string()
        }
    };
    for (name, sends, t, wall, cpu) in &stats {
        let cpu_total = (t.user_us + t.sys_us).max(1) as f64;
        println!(
            "  {:<7} {:>10} {:>22} {:>22} {:>6} {:>12.1} {:>7} {:>6} {:>6}",
            name,
            sends,
            timing(*wall),
            timing(*cpu),
            if timed {
                format!("{:.1}", 100.0 * t.sys_us as f64 / cpu_total)
            } else {
                "-".to_string()
            },
            t.enters as f64 / rounds.max(1) as f64,
            t.eagain,
            t.short,
            t.errors
        );
    }
    for (mode, cpu, wall) in &ratios {
        println!("  ratio {mode}/writev (medians): CPU {cpu:.3}, wall {wall:.3}");
    }
}
