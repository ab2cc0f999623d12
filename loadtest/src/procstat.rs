//! Samples another process (the broker) from /proc: CPU time from /proc/PID/stat and resident
//! memory from /proc/PID/status; parses kernel CPU lists. Linux only; read-only.

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
}

/// utime + stime from the text of /proc/PID/stat. The command name (field 2) may contain
/// spaces and parentheses, so fields are counted after the last `)`.
pub(crate) fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // After the name: state is field 3, so utime (14) and stime (15) are the 12th and 13th.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS in bytes from the text of /proc/PID/status.
pub(crate) fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
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

/// Samples process `pid`, or explains why it cannot.
pub(crate) fn sample(pid: u32, ticks_per_second: u64) -> Result<ProcSample, ProcError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|error| ProcError::ReadStat { pid, error })?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|error| ProcError::ReadStatus { pid, error })?;
    let ticks = parse_stat_cpu_ticks(&stat).ok_or(ProcError::StatFormat)?;
    let rss_bytes = parse_status_rss(&status).ok_or(ProcError::NoRss)?;
    let cpu = Duration::from_secs_f64(ticks as f64 / ticks_per_second as f64);
    Ok(ProcSample { cpu, rss_bytes })
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
        let s = sample(std::process::id(), crate::sys::clock_ticks_per_second()).unwrap();
        assert!(s.rss_bytes > 0);
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
}
