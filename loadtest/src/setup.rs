//! Everything checked once before any connection: flags, URLs, the file-descriptor limit,
//! ephemeral ports; and the facts every run shares (plan, threads, cores, who connects where).

use std::sync::Arc;
use std::time::Duration;

use crate::config::{parse_url, Args, Plan};
use crate::error::SetupError;
use crate::net;
use crate::payload;
use crate::procstat::{self, SoftirqThreads};
use crate::sys;
use crate::worker::{PublishMode, Reconnect, Role, RunConfig};

/// File descriptors kept free beyond one per connection (stdio, epoll and timer fds, output
/// files, /proc reads).
const FD_HEADROOM: u64 = 64;

/// What every run of the scenario shares.
#[derive(Debug)]
pub(crate) struct Setup {
    pub cfg: Arc<RunConfig>,
    pub threads: usize,
    /// CPUs this process may use.
    pub cores: usize,
    /// CPUs online on the machine.
    pub machine_cores: usize,
    /// Subscribers + publishers.
    pub total: u64,
    /// Clock ticks per second, to read /proc/PID/stat.
    pub ticks: u64,
    /// The ksoftirqd threads of the broker's CPUs (with `--server-pid`, if found).
    pub softirq: Option<SoftirqThreads>,
}

impl Setup {
    pub(crate) fn plan(&self) -> &Plan {
        &self.cfg.plan
    }

    /// (global connection index, role) per thread: connection g goes to thread g % threads,
    /// subscribers first, then publishers.
    pub(crate) fn roles(&self, args: &Args) -> Vec<Vec<(u64, Role)>> {
        let threads = self.threads;
        let mut roles: Vec<Vec<(u64, Role)>> = vec![Vec::new(); threads];
        for s in 0..args.subscribers {
            roles[s as usize % threads].push((u64::from(s), Role::Subscriber(s)));
        }
        for p in 0..args.publishers {
            let g = u64::from(args.subscribers) + u64::from(p);
            roles[g as usize % threads].push((g, Role::Publisher(p)));
        }
        roles
    }
}

/// Checks the flags and the machine's limits (raising the fd limit), or says what to change.
pub(crate) fn prepare(args: &Args) -> Result<Setup, SetupError> {
    check_flags(args)?;
    let plan = Plan {
        topics: args.topics,
        publishers: args.publishers,
        all_topic: args.all_topic,
    };
    let ws = parse_url(&args.url, "ws", 80)?;
    let http = args
        .http_publish
        .as_deref()
        .map(|u| parse_url(u, "http", 80))
        .transpose()?;
    if args.binary && args.size < payload::BINARY_STAMP_BYTES {
        eprintln!(
            "crier-load: note: --size {} is below the {}-byte binary stamp; sending {} bytes",
            args.size,
            payload::BINARY_STAMP_BYTES,
            payload::BINARY_STAMP_BYTES
        );
    }
    debug_assert!(plan.topic_name(plan.topic_count() - 1).len() < 256);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or(cores).max(1);
    let total = u64::from(args.subscribers) + u64::from(args.publishers);
    check_fds(total, threads)?;
    check_ports(total, ws.addr)?;
    let mode = if args.max {
        PublishMode::Max {
            window: args.window,
        }
    } else {
        PublishMode::Rate(args.rate)
    };
    let cfg = RunConfig {
        plan,
        ws,
        http,
        binary: args.binary,
        compression: args.compression,
        size: args.size,
        mode,
        warmup: args.warmup,
        duration: args.duration,
        connect_rate: args.connect_rate,
        threads,
        total_connections: total,
        reconnect: match (args.reconnect_every, args.drop_all_at) {
            (Some(period), _) => Some(Reconnect::Every {
                period: period.max(Duration::from_millis(1)),
            }),
            (None, Some(at)) => Some(Reconnect::AllAt {
                at,
                after: args.resume_after,
            }),
            (None, None) => None,
        },
    };
    Ok(Setup {
        cfg: Arc::new(cfg),
        threads,
        cores,
        machine_cores: online_cpus().unwrap_or(cores),
        total,
        ticks: sys::clock_ticks_per_second(),
        softirq: args.server_pid.and_then(softirq_threads),
    })
}

/// The ksoftirqd threads of the broker's CPUs, said on stderr; `None` (the with-softirq
/// figures are then left out) with a note saying why.
fn softirq_threads(pid: u32) -> Option<SoftirqThreads> {
    match procstat::find_softirq_threads(pid) {
        Ok(t) => {
            let names: Vec<String> = t
                .threads
                .iter()
                .map(|(cpu, kpid)| format!("ksoftirqd/{cpu} (pid {kpid})"))
                .collect();
            eprintln!("crier-load: broker softirq threads: {}", names.join(", "));
            if t.unpinned {
                eprintln!("crier-load: note: the broker may run on every CPU, so these threads also carry other processes' softirqs (this client's too): the with-softirq CPU is an upper bound; pin the broker (taskset) to separate them");
            }
            Some(t)
        }
        Err(e) => {
            eprintln!("crier-load: note: {e}; reporting the broker's CPU without ksoftirqd");
            None
        }
    }
}

fn check_flags(args: &Args) -> Result<(), SetupError> {
    if args.topics == 0 || args.publishers == 0 {
        return Err(SetupError::NoTopicsOrPublishers);
    }
    if !args.max && (args.rate.is_nan() || args.rate <= 0.0 || args.rate.is_infinite()) {
        return Err(SetupError::BadRate);
    }
    if args.max && args.binary && args.http_publish.is_none() {
        return Err(SetupError::MaxNeedsAcks);
    }
    if args.max && args.window == 0 {
        return Err(SetupError::ZeroWindow);
    }
    if args.repeat == 0 {
        return Err(SetupError::ZeroRepeat);
    }
    Ok(())
}

/// One file descriptor per connection plus headroom, or a clear refusal.
fn check_fds(total: u64, threads: usize) -> Result<(), SetupError> {
    let (soft, hard) = sys::raise_nofile_limit().map_err(SetupError::ReadFdLimit)?;
    let needed = total + FD_HEADROOM + 4 * threads as u64;
    eprintln!("crier-load: fd limit {soft} (hard {hard}); need {needed} for {total} connections");
    if soft < needed {
        return Err(SetupError::FdLimit {
            connections: total,
            needed,
            soft,
            hard,
        });
    }
    Ok(())
}

/// Ephemeral ports: one per connection per source address.
fn check_ports(total: u64, target: std::net::SocketAddr) -> Result<(), SetupError> {
    let Some(ports) = net::ephemeral_ports() else {
        return Ok(());
    };
    let sources = if net::source_addr(0, total, target).is_some() {
        u64::from(net::LOOPBACK_SOURCES)
    } else {
        1
    };
    if total > ports * sources {
        return Err(SetupError::EphemeralPorts {
            connections: total,
            target,
            ports,
            sources,
        });
    }
    Ok(())
}

/// CPUs online on this machine (not only those this process may use, which `taskset` limits),
/// from `/sys/devices/system/cpu/online` ("0-1", "0,2-3").
fn online_cpus() -> Option<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    procstat::parse_cpu_list(&text).map(|cpus| cpus.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn flags(extra: &[&str]) -> Result<(), SetupError> {
        let args = Args::parse_from(["crier-load"].iter().chain(extra));
        check_flags(&args)
    }

    #[test]
    fn flag_combinations() {
        assert!(flags(&[]).is_ok());
        assert!(matches!(
            flags(&["--topics", "0"]),
            Err(SetupError::NoTopicsOrPublishers)
        ));
        assert!(matches!(flags(&["--rate", "0"]), Err(SetupError::BadRate)));
        assert!(matches!(
            flags(&["--max", "--binary"]),
            Err(SetupError::MaxNeedsAcks)
        ));
        assert!(flags(&["--max", "--binary", "--http-publish", "http://x"]).is_ok());
        assert!(matches!(
            flags(&["--max", "--window", "0"]),
            Err(SetupError::ZeroWindow)
        ));
        assert!(matches!(
            flags(&["--repeat", "0"]),
            Err(SetupError::ZeroRepeat)
        ));
    }
}
