//! The once-a-second status line on stderr: rewritten in place on a terminal, appended
//! otherwise. Reads `Shared`; changes nothing.

use std::io::Write;
use std::sync::atomic::Ordering::Relaxed;

use crate::worker::{new_histogram, Shared};

pub(crate) struct Progress {
    tty: bool,
    total: u64,
    /// Which run this is, with `--repeat`.
    label: Option<String>,
    last_ns: u64,
    last_published: u64,
    last_delivered: u64,
    drawn: bool,
}

impl Progress {
    pub(crate) fn new(tty: bool, total: u64, label: Option<String>) -> Progress {
        Progress {
            tty,
            total,
            label,
            last_ns: 0,
            last_published: 0,
            last_delivered: 0,
            drawn: false,
        }
    }

    /// Draws the line if a second has passed; `window` is (start, measure, end) in ns once
    /// publishing has started.
    pub(crate) fn tick(&mut self, shared: &Shared, window: Option<(u64, u64, u64)>) {
        let now = shared.now_ns();
        if self.last_ns == 0 {
            self.last_ns = now;
            return;
        }
        if now - self.last_ns < 1_000_000_000 {
            return;
        }
        let secs = (now - self.last_ns) as f64 / 1e9;
        let published = shared.published.load(Relaxed);
        let delivered = shared.delivered.load(Relaxed);
        let phase = match window {
            None => "connecting",
            Some((_, measure, _)) if now < measure => "warmup",
            Some((_, _, end)) if now < end => "measuring",
            Some(_) => "draining",
        };
        let prefix = match &self.label {
            Some(label) => format!("{label} "),
            None => String::new(),
        };
        let line = format!(
            "[{prefix}{phase:>10}] conns {}/{} up ({} failed) | published {:.0}/s | deliveries {:.0}/s | p99 {}",
            shared.connections_up.load(Relaxed),
            self.total,
            shared.connections_failed.load(Relaxed),
            (published - self.last_published) as f64 / secs,
            (delivered - self.last_delivered) as f64 / secs,
            p99(shared),
        );
        self.draw(&line);
        self.last_ns = now;
        self.last_published = published;
        self.last_delivered = delivered;
    }

    fn draw(&mut self, line: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
        self.drawn = true;
    }

    /// Ends the line on a terminal so what follows starts on its own.
    pub(crate) fn clear(&mut self) {
        if self.tty && self.drawn {
            eprintln!();
        }
    }
}

/// The p99 of the threads' latest histogram copies, or `-` before any.
fn p99(shared: &Shared) -> String {
    let mut merged = new_histogram();
    for h in &shared.histograms {
        let _ = merged.add(&*h.lock().expect("lock"));
    }
    if merged.is_empty() {
        "-".to_string()
    } else {
        format!("{:.3} ms", merged.value_at_quantile(0.99) as f64 / 1e6)
    }
}
