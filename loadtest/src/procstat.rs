//! Samples another process (the broker) from /proc: CPU time from /proc/PID/stat and resident
//! memory from /proc/PID/status, and the CPU time of the `ksoftirqd/N` kernel threads of the
//! CPUs it may run on (found once, from `Cpus_allowed_list:` and /proc/*/comm). Linux only;
//! read-only.

use std::fmt;
use std::io;
use std::time::Duration;

/// CPU numbers above this in a CPU list are taken as malformed input (Linux allows at most
/// 8,192 CPUs), so a bad range cannot make the parser allocate without bound.
const MAX_CPU: u32 = 65_535;

/// One sample of a process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcSample {
    pub cpu: Duration,
    pub rss_bytes: u64,
    /// utime + stime of the [`SoftirqThreads`], read right after the process's own CPU; `None`
    /// without them or when one could not be read (never a partial sum).
    pub softirq_cpu: Option<Duration>,
}

/// The per-CPU softirq kernel threads (`ksoftirqd/N`) of the CPUs a process may run on. On
/// loopback the receive side of the process's sends runs on its CPU, usually inline (charged
/// to the process) but under load partly deferred to these threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SoftirqThreads {
    /// (CPU, pid of its ksoftirqd), by CPU.
    pub threads: Vec<(u32, u32)>,
    /// The process may run on every online CPU: the threads then also carry every other
    /// process's softirqs (the load generator's too), so their CPU is an upper bound.
    pub unpinned: bool,
}

/// Why the ksoftirqd threads of a process could not be found: the report then leaves the
/// with-softirq figures out, the run goes on.
#[derive(Debug)]
pub(crate) enum SoftirqError {
    ReadStatus {
        pid: u32,
        error: io::Error,
    },
    /// No `Cpus_allowed_list:` line, or one that is not a CPU list.
    CpusAllowed {
        pid: u32,
    },
    ReadProc(io::Error),
    NotFound {
        cpus: Vec<u32>,
    },
}

impl fmt::Display for SoftirqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SoftirqError::ReadStatus { pid, error } => {
                write!(f, "cannot read /proc/{pid}/status ({error})")
            }
            SoftirqError::CpusAllowed { pid } => {
                write!(f, "no readable Cpus_allowed_list in /proc/{pid}/status")
            }
            SoftirqError::ReadProc(e) => write!(f, "cannot list /proc ({e})"),
            SoftirqError::NotFound { cpus } => {
                write!(f, "no ksoftirqd thread found for CPUs {cpus:?}")
            }
        }
    }
}

impl std::error::Error for SoftirqError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SoftirqError::ReadStatus { error, .. } | SoftirqError::ReadProc(error) => Some(error),
            _ => None,
        }
    }
}

/// utime + stime from the text of /proc/PID/stat. The command name (field 2) may contain
/// spaces and parentheses, so fields are counted after the last `)`.
pub(crate) fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // After the name: state is field 3, so utime (14) and stime (15) are the 12th and 13th.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// VmRSS in bytes from the text of /proc/PID/status.
pub(crate) fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// The CPUs of a kernel CPU list ("0", "0-1,3", as in `Cpus_allowed_list:` or
/// /sys/devices/system/cpu/online), ascending and without repeats; `None` if malformed (an
/// empty item, a reversed range, a CPU above `MAX_CPU`).
pub(crate) fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let cpu = |s: &str| s.parse::<u32>().ok().filter(|&c| c <= MAX_CPU);
    let mut cpus = Vec::new();
    for item in text.trim().split(',') {
        match item.split_once('-') {
            Some((low, high)) => {
                let (low, high) = (cpu(low)?, cpu(high)?);
                if low > high {
                    return None;
                }
                cpus.extend(low..=high);
            }
            None => cpus.push(cpu(item)?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// The CPUs in the `Cpus_allowed_list:` line of the text of /proc/PID/status.
pub(crate) fn parse_status_cpus_allowed(status: &str) -> Option<Vec<u32>> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    parse_cpu_list(line)
}

/// N from the text of /proc/PID/comm of a `ksoftirqd/N` thread.
pub(crate) fn parse_ksoftirqd_comm(comm: &str) -> Option<u32> {
    comm.trim_end_matches('\n')
        .strip_prefix("ksoftirqd/")?
        .parse()
        .ok()
}

/// The ksoftirqd threads of the CPUs process `pid` may run on (by its `Cpus_allowed_list`),
/// found by reading every /proc/*/comm once. CPUs without one (offline) are skipped.
pub(crate) fn find_softirq_threads(pid: u32) -> Result<SoftirqThreads, SoftirqError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|error| SoftirqError::ReadStatus { pid, error })?;
    let allowed = parse_status_cpus_allowed(&status).ok_or(SoftirqError::CpusAllowed { pid })?;
    let mut threads = Vec::new();
    for entry in std::fs::read_dir("/proc").map_err(SoftirqError::ReadProc)? {
        // Entries vanish while we scan (processes exit): skip what cannot be read.
        let Ok(entry) = entry else { continue };
        let Some(kpid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{kpid}/comm")) else {
            continue;
        };
        let cpu = parse_ksoftirqd_comm(&comm).filter(|c| allowed.binary_search(c).is_ok());
        if let Some(cpu) = cpu {
            threads.push((cpu, kpid));
        }
    }
    if threads.is_empty() {
        return Err(SoftirqError::NotFound { cpus: allowed });
    }
    threads.sort_unstable();
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|t| parse_cpu_list(&t));
    Ok(SoftirqThreads {
        threads,
        unpinned: online.is_some_and(|on| on.iter().all(|c| allowed.binary_search(c).is_ok())),
    })
}

/// The summed utime + stime of `threads`, or `None` if any cannot be read.
fn softirq_cpu(threads: &SoftirqThreads, ticks_per_second: u64) -> Option<Duration> {
    let mut ticks: u64 = 0;
    for &(_, kpid) in &threads.threads {
        let stat = std::fs::read_to_string(format!("/proc/{kpid}/stat")).ok()?;
        ticks = parse_stat_cpu_ticks(&stat)?.checked_add(ticks)?;
    }
    Some(ticks_to_duration(ticks, ticks_per_second))
}

fn ticks_to_duration(ticks: u64, ticks_per_second: u64) -> Duration {
    Duration::from_secs_f64(ticks as f64 / ticks_per_second.max(1) as f64)
}

/// Why process `pid` could not be sampled.
#[derive(Debug)]
pub(crate) enum ProcError {
    /// /proc/PID/stat unreadable: most likely no such process.
    ReadStat {
        pid: u32,
        error: io::Error,
    },
    ReadStatus {
        pid: u32,
        error: io::Error,
    },
    StatFormat,
    NoRss,
}

impl fmt::Display for ProcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcError::ReadStat { pid, error } => write!(
                f,
                "cannot read /proc/{pid}/stat ({error}): is --server-pid right?"
            ),
            ProcError::ReadStatus { pid, error } => {
                write!(f, "cannot read /proc/{pid}/status ({error})")
            }
            ProcError::StatFormat => f.write_str("unexpected /proc/PID/stat format"),
            ProcError::NoRss => f.write_str("no VmRSS in /proc/PID/status"),
        }
    }
}

impl std::error::Error for ProcError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProcError::ReadStat { error, .. } | ProcError::ReadStatus { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Samples process `pid` (and then `softirq`, if given; those failing only leaves
/// `softirq_cpu` out), or explains why it cannot.
pub(crate) fn sample(
    pid: u32,
    softirq: Option<&SoftirqThreads>,
    ticks_per_second: u64,
) -> Result<ProcSample, ProcError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|error| ProcError::ReadStat { pid, error })?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|error| ProcError::ReadStatus { pid, error })?;
    let ticks = parse_stat_cpu_ticks(&stat).ok_or(ProcError::StatFormat)?;
    let rss_bytes = parse_status_rss(&status).ok_or(ProcError::NoRss)?;
    Ok(ProcSample {
        cpu: ticks_to_duration(ticks, ticks_per_second),
        rss_bytes,
        softirq_cpu: softirq.and_then(|t| softirq_cpu(t, ticks_per_second)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_awkward_command_name() {
        let stat = "1234 (cr ier) (x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 99 1000 200";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(300));
    }

    #[test]
    fn status_rss() {
        let status = "Name:\tcrier\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss(status), Some(5120 * 1024));
        assert_eq!(parse_status_rss("Name: x\n"), None);
    }

    #[test]
    fn samples_this_process() {
        let ticks = crate::sys::clock_ticks_per_second();
        let s = sample(std::process::id(), None, ticks).unwrap();
        assert!(s.rss_bytes > 0);
        assert_eq!(s.softirq_cpu, None);
    }

    /// Standing in for ksoftirqd: this process's own stat reads; a pid that cannot exist (0
    /// has no /proc entry) makes the softirq part `None`, not an error and not a partial sum.
    #[test]
    fn softirq_threads_are_summed_or_left_out() {
        let ticks = crate::sys::clock_ticks_per_second();
        let me = std::process::id();
        let threads = |pids: &[u32]| SoftirqThreads {
            threads: pids.iter().map(|&p| (0, p)).collect(),
            unpinned: false,
        };
        let s = sample(me, Some(&threads(&[me])), ticks).unwrap();
        assert!(s.softirq_cpu.is_some());
        let s = sample(me, Some(&threads(&[me, 0])), ticks).unwrap();
        assert_eq!(s.softirq_cpu, None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0-1,3"), Some(vec![0, 1, 3]));
        assert_eq!(parse_cpu_list("0,2-3,7-8"), Some(vec![0, 2, 3, 7, 8]));
        assert_eq!(
            parse_cpu_list("5,1-2,2"),
            Some(vec![1, 2, 5]),
            "sorted, no repeats"
        );
        assert_eq!(parse_cpu_list("4-4"), Some(vec![4]));
    }

    #[test]
    fn malformed_cpu_lists() {
        for bad in [
            "",
            "x",
            "0-",
            "-1",
            "3-1",
            "0,,1",
            "0-1-2",
            "1 2",
            "0x1",
            "-",
            "70000",
            "0-4294967295",
        ] {
            assert_eq!(parse_cpu_list(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cpus_allowed_from_status() {
        let status =
            "Name:\tcrier\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1,3\nMems_allowed:\t1\n";
        assert_eq!(parse_status_cpus_allowed(status), Some(vec![0, 1, 3]));
        assert_eq!(
            parse_status_cpus_allowed("Cpus_allowed_list:\t0\n"),
            Some(vec![0])
        );
        assert_eq!(
            parse_status_cpus_allowed("Cpus_allowed:\t3\n"),
            None,
            "the mask alone"
        );
        assert_eq!(parse_status_cpus_allowed("Cpus_allowed_list:\tzz\n"), None);
    }

    #[test]
    fn ksoftirqd_comms() {
        assert_eq!(parse_ksoftirqd_comm("ksoftirqd/0\n"), Some(0));
        assert_eq!(parse_ksoftirqd_comm("ksoftirqd/12"), Some(12));
        assert_eq!(parse_ksoftirqd_comm("ksoftirqd/\n"), None);
        assert_eq!(parse_ksoftirqd_comm("kworker/0:1\n"), None);
        assert_eq!(parse_ksoftirqd_comm("crier\n"), None);
    }

    /// On Linux this process's own CPUs have ksoftirqd threads; where /proc hides them
    /// (containers with their own pid namespace), the error says so instead.
    #[test]
    fn finds_this_process_softirq_threads_or_says_why_not() {
        match find_softirq_threads(std::process::id()) {
            Ok(t) => assert!(!t.threads.is_empty()),
            Err(e) => assert!(matches!(e, SoftirqError::NotFound { .. }), "{e}"),
        }
    }
}
