//! The only `unsafe` code in crier: thin wrappers over libc for the open-file limit, signal
//! handling and CPU affinity, and the io_uring batch of socket sends (`send_ring`). Each block
//! says why it is sound.
#![allow(unsafe_code)]

pub mod send_ring;

use std::io;

/// The open-file limits after start-up: `soft` is what this process may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns both. A broker holds one
/// descriptor per connection, so the default soft limit (often 1024) is far too low.
pub fn raise_open_file_limit() -> io::Result<FileLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` struct through a valid, exclusive pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one initialised `rlimit` struct through a valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    // rlim_t is u64 on 64-bit Linux but not on every target.
    #[allow(clippy::unnecessary_cast)]
    Ok(FileLimit {
        soft: limit.rlim_cur as u64,
        hard: limit.rlim_max as u64,
    })
}

/// The shutdown signals crier handles: SIGINT and SIGTERM.
fn shutdown_signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before sigaddset reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT and SIGTERM in the calling thread and in every thread it spawns afterwards,
/// so that `wait_for_shutdown_signal` receives them synchronously instead of a handler.
pub fn block_shutdown_signals() -> io::Result<()> {
    let set = shutdown_signal_set();
    // SAFETY: `set` is an initialised sigset_t; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits until SIGINT or SIGTERM arrives (they must be blocked first) and returns which.
pub fn wait_for_shutdown_signal() -> io::Result<i32> {
    let set = shutdown_signal_set();
    let mut signal: libc::c_int = 0;
    // SAFETY: `set` is initialised and `signal` is a valid place for sigwait to write to.
    let rc = unsafe { libc::sigwait(&set, &mut signal) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(signal)
}

/// Like [`wait_for_shutdown_signal`], but gives up after `timeout`: `Ok(None)` when no signal
/// came in time.
pub fn wait_for_shutdown_signal_within(timeout: std::time::Duration) -> io::Result<Option<i32>> {
    let set = shutdown_signal_set();
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let wait = libc::timespec {
            tv_sec: left.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `set` and `wait` are initialised; a null siginfo pointer is allowed.
        let signal = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &wait) };
        if signal >= 0 {
            return Ok(Some(signal));
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EAGAIN) => return Ok(None),
            // Another signal's handler ran: wait for what is left.
            Some(libc::EINTR) => continue,
            _ => return Err(error),
        }
    }
}

/// The CPUs this process may run on (its affinity mask), in ascending order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data, zeroed is a valid empty set; sched_getaffinity writes at
    // most size_of::<cpu_set_t>() bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Pins the calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    debug_assert!(cpu < libc::CPU_SETSIZE as usize);
    // SAFETY: as above; CPU_SET writes inside the set because cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_file_limit_is_raised_to_hard() {
        let limit = raise_open_file_limit().unwrap();
        assert_eq!(limit.soft, limit.hard);
        assert!(limit.soft >= 1024);
    }

    #[test]
    fn this_process_may_run_somewhere() {
        assert!(!allowed_cpus().is_empty());
    }
}
