//! Batched socket sends through io_uring: up to [`SEND_RING_ENTRIES`] sends, one per
//! connection, handed to the kernel with one `io_uring_enter` instead of one `write`/`writev`
//! syscall each. That is 22-25% less of the sending thread's own CPU per send than a `writev`
//! each (bench/uring_send); in the broker, counting the loopback softirq work the kernel then
//! defers to `ksoftirqd`, 1-17% less CPU per delivery (docs/benchmarks.md).
//!
//! Every send carries `MSG_DONTWAIT`, which makes io_uring's `-EAGAIN` final (the kernel sets
//! `REQ_F_NOWAIT` for it): a full socket answers at once instead of parking the request until
//! it drains. So each send completes inside the submitting call, nothing is ever in flight
//! between loop turns, and a flush keeps the meaning it has with plain syscalls: take what the
//! socket takes now, leave the rest queued, ask for writable readiness.
//!
//! The borrow of every buffer lasts from [`SendRing::batch`] to [`Batch::submit`], which waits
//! for every completion before it returns: the kernel never reads a buffer after that.

use std::io::{self, IoSlice};
use std::marker::PhantomData;
use std::os::fd::RawFd;

use io_uring::{opcode, types, IoUring};

/// Sends one batch holds at most: the shard's flush chunk (256 connections per turn).
pub const SEND_RING_ENTRIES: usize = 256;

/// Buffers one send of a batch carries at most (a connection's queued frames).
pub const MAX_SLICES_PER_SEND: usize = 64;

const SEND_FLAGS: i32 = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;

/// The io_uring instance of one shard and the iovec arrays its `sendmsg` entries point to.
pub struct SendRing {
    ring: IoUring,
    /// One `msghdr` per entry, pointing at that entry's row of `iovecs`.
    msgs: Box<[libc::msghdr]>,
    iovecs: Box<[[libc::iovec; MAX_SLICES_PER_SEND]]>,
    /// Entries queued in the batch being built.
    queued: usize,
}

// SAFETY: the raw pointers in `msgs` and `iovecs` point only into this value's own boxes or,
// between `batch` and `submit`, into buffers borrowed for that span; no batch outlives a call
// on one thread, so moving the ring to another thread (a shard is built, then moved into its
// thread) moves nothing that another thread could reach.
unsafe impl Send for SendRing {}

impl std::fmt::Debug for SendRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendRing").finish_non_exhaustive()
    }
}

impl SendRing {
    /// Sets up an io_uring for batches of up to [`SEND_RING_ENTRIES`] sends. Fails where the
    /// kernel has none or forbids it (`kernel.io_uring_disabled`, a container's seccomp
    /// profile): the caller then sends with plain syscalls.
    pub fn new() -> io::Result<SendRing> {
        let ring = IoUring::new(SEND_RING_ENTRIES as u32)?;
        let empty_iovec = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let iovecs = vec![[empty_iovec; MAX_SLICES_PER_SEND]; SEND_RING_ENTRIES].into_boxed_slice();
        let msgs = (0..SEND_RING_ENTRIES)
            // SAFETY: msghdr is plain data; all-zero is "no name, no iovec, no control".
            .map(|_| unsafe { std::mem::zeroed::<libc::msghdr>() })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Ok(SendRing {
            ring,
            msgs,
            iovecs,
            queued: 0,
        })
    }

    /// Starts a batch whose buffers are borrowed for `'buf`.
    pub fn batch<'buf>(&mut self) -> Batch<'_, 'buf> {
        self.queued = 0;
        Batch {
            ring: self,
            _buffers: PhantomData,
        }
    }
}

/// Sends being gathered; nothing reaches the kernel before [`Batch::submit`].
#[derive(Debug)]
pub struct Batch<'ring, 'buf> {
    ring: &'ring mut SendRing,
    _buffers: PhantomData<&'buf [u8]>,
}

impl<'buf> Batch<'_, 'buf> {
    /// Adds one send of `bufs` (at most [`MAX_SLICES_PER_SEND`] are taken) to socket `fd`;
    /// its result is the `index`-th of [`Batch::submit`]'s, in the order added. Returns false,
    /// adding nothing, when the batch already holds [`SEND_RING_ENTRIES`] sends.
    pub fn push(&mut self, fd: RawFd, bufs: &[IoSlice<'buf>]) -> bool {
        let ring = &mut *self.ring;
        let index = ring.queued;
        if index == SEND_RING_ENTRIES {
            return false;
        }
        let bufs = &bufs[..bufs.len().min(MAX_SLICES_PER_SEND)];
        let entry = if let [one] = bufs {
            opcode::Send::new(types::Fd(fd), one.as_ptr(), one.len() as u32)
                .flags(SEND_FLAGS)
                .build()
        } else {
            let row = &mut ring.iovecs[index];
            for (slot, buf) in row.iter_mut().zip(bufs) {
                *slot = libc::iovec {
                    iov_base: buf.as_ptr() as *mut libc::c_void,
                    iov_len: buf.len(),
                };
            }
            let msg = &mut ring.msgs[index];
            msg.msg_iov = row.as_mut_ptr();
            msg.msg_iovlen = bufs.len() as _;
            opcode::SendMsg::new(types::Fd(fd), msg as *const libc::msghdr)
                .flags(SEND_FLAGS as u32)
                .build()
        };
        let entry = entry.user_data(index as u64);
        // SAFETY: the entry points at `bufs` (borrowed for `'buf`, which this batch holds) or
        // at this entry's own msghdr and iovec row, none of which changes or goes away before
        // `submit` has reaped every completion. The submission queue has SEND_RING_ENTRIES
        // slots, emptied by every submit, and `index` is below that.
        let pushed = unsafe { ring.ring.submission().push(&entry) };
        if pushed.is_err() {
            return false;
        }
        ring.queued += 1;
        true
    }

    /// Hands every queued send to the kernel with one `io_uring_enter` and waits until each
    /// has completed (with `MSG_DONTWAIT` they complete inside that call). `results[i]` is
    /// the `i`-th send's outcome: bytes sent, or `-errno` (`-EAGAIN`: the socket is full).
    ///
    /// An error means the kernel took none of the sends (nothing was sent: write them another
    /// way) and this ring should not be used again. Once the kernel has taken any, this waits
    /// for all of them, because until then it may still read their buffers.
    pub fn submit(self, results: &mut Vec<i32>) -> io::Result<()> {
        let ring = self.ring;
        let queued = std::mem::take(&mut ring.queued);
        results.clear();
        results.resize(queued, NOT_COMPLETED);
        let mut reaped = 0;
        let mut hard_errors = 0u32;
        while reaped < queued {
            match ring.ring.submit_and_wait(queued - reaped) {
                Ok(_) => {}
                // Transient: interrupted, short of kernel memory, or completions to reap first.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                    ) => {}
                Err(e) if reaped == 0 && ring.ring.submission().len() == queued => return Err(e),
                Err(e) => {
                    hard_errors += 1;
                    assert!(
                        hard_errors < 1_000,
                        "io_uring keeps failing ({e}) with sends in the kernel's hands"
                    );
                }
            }
            for cqe in ring.ring.completion() {
                if let Some(slot) = results.get_mut(cqe.user_data() as usize) {
                    *slot = cqe.result();
                    reaped += 1;
                }
            }
        }
        Ok(())
    }
}

/// A result slot no completion has filled yet.
const NOT_COMPLETED: i32 = i32::MIN;

#[cfg(test)]
mod tests {
    use std::io::{IoSlice, Read};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    use super::*;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("nonblocking");
        (server, client)
    }

    #[test]
    fn a_batch_sends_single_and_vectored_buffers_in_order_of_results() {
        let mut ring = SendRing::new().expect("io_uring on the machines crier is tested on");
        let (a, mut a_peer) = pair();
        let (b, mut b_peer) = pair();
        let parts = [IoSlice::new(b"two,"), IoSlice::new(b"three")];
        let mut results = Vec::new();
        let mut batch = ring.batch();
        assert!(batch.push(a.as_raw_fd(), &[IoSlice::new(b"one")]));
        assert!(batch.push(b.as_raw_fd(), &parts));
        batch.submit(&mut results).expect("submit");
        assert_eq!(results, vec![3, 9]);
        drop((a, b));
        let (mut got_a, mut got_b) = (String::new(), String::new());
        a_peer.read_to_string(&mut got_a).expect("read a");
        b_peer.read_to_string(&mut got_b).expect("read b");
        assert_eq!((got_a.as_str(), got_b.as_str()), ("one", "two,three"));
    }

    #[test]
    fn a_full_socket_answers_eagain_at_once_and_a_batch_holds_at_most_its_entries() {
        let mut ring = SendRing::new().expect("io_uring on the machines crier is tested on");
        let (full, _unread_peer) = pair();
        let chunk = vec![0u8; 64 * 1024];
        let mut results = Vec::new();
        let mut sent = 0usize;
        // Fill the socket (send buffer plus the peer's receive buffer) until it refuses.
        loop {
            let mut batch = ring.batch();
            assert!(batch.push(full.as_raw_fd(), &[IoSlice::new(&chunk)]));
            batch.submit(&mut results).expect("submit");
            match results[0] {
                n if n > 0 => sent += n as usize,
                n => {
                    assert_eq!(n, -libc::EAGAIN, "a full socket says EAGAIN, not {n}");
                    break;
                }
            }
            assert!(sent < 512 * 1024 * 1024, "the socket never filled");
        }
        let mut batch = ring.batch();
        for _ in 0..SEND_RING_ENTRIES {
            assert!(batch.push(full.as_raw_fd(), &[IoSlice::new(b"x")]));
        }
        assert!(!batch.push(full.as_raw_fd(), &[IoSlice::new(b"x")]));
        batch.submit(&mut results).expect("submit");
        assert_eq!(results.len(), SEND_RING_ENTRIES);
        assert!(results.iter().all(|&r| r == -libc::EAGAIN));
    }
}
