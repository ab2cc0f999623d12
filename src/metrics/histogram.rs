//! Fixed-bucket latency histograms in microseconds: a plain one a shard records into, an
//! atomic copy other threads read, and the Prometheus rendering of either.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (microseconds) of the latency buckets (fan-out, loop phases); the last bucket
/// is +Inf. From 5 µs (a phase with little to do) to 1 s (a fan-out stuck behind a stall),
/// finer from 10 to 100 ms, where a 10,000-subscriber fan-out on one core lands.
pub const LATENCY_BUCKETS_US: [u64; 22] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 20_000, 30_000, 40_000, 50_000,
    65_000, 80_000, 100_000, 150_000, 250_000, 500_000, 1_000_000,
];

const SLOTS: usize = LATENCY_BUCKETS_US.len() + 1;

/// Observations per bucket (not cumulative) and their sum, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Histogram {
    buckets: [u64; SLOTS],
    sum_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: [0; SLOTS],
            sum_us: 0,
        }
    }
}

impl Histogram {
    /// Counts one observation of `us` microseconds.
    #[inline]
    pub fn record(&mut self, us: u64) {
        let bucket = LATENCY_BUCKETS_US.partition_point(|&upper| upper < us);
        self.buckets[bucket] += 1;
        self.sum_us += us;
    }

    /// Observations recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds another histogram's observations to this one (merging shards).
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *mine += theirs;
        }
        self.sum_us += other.sum_us;
    }

    /// Writes `name_bucket`, `name_sum` and `name_count` samples with `labels` (already
    /// formatted, `a="1",b="2"`, or empty).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (index, count) in self.buckets.iter().enumerate() {
            cumulative += count;
            let _ = match LATENCY_BUCKETS_US.get(index) {
                Some(us) => writeln!(
                    out,
                    "{name}_bucket{{{labels}{sep}le=\"{}\"}} {cumulative}",
                    *us as f64 / 1e6
                ),
                None => writeln!(
                    out,
                    "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
                ),
            };
        }
        let braced = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braced} {}", self.sum_us as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braced} {cumulative}");
    }
}

/// A [`Histogram`] as other threads see it: written by one shard only.
#[derive(Debug)]
pub struct SharedHistogram {
    buckets: [AtomicU64; SLOTS],
    sum_us: AtomicU64,
}

impl Default for SharedHistogram {
    fn default() -> Self {
        SharedHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl SharedHistogram {
    /// Copies the owner's histogram in (relaxed: a scrape may mix two turns' values).
    pub fn publish(&self, histogram: &Histogram) {
        for (slot, value) in self.buckets.iter().zip(histogram.buckets.iter()) {
            slot.store(*value, Ordering::Relaxed);
        }
        self.sum_us.store(histogram.sum_us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// A Prometheus label value with `\`, `"` and newlines escaped (text format 0.0.4).
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let mut h = Histogram::default();
        h.record(0);
        h.record(5);
        h.record(6);
        h.record(1_000_001);
        assert_eq!(h.buckets[0], 2, "0 and 5 µs are <= 5 µs");
        assert_eq!(h.buckets[1], 1, "6 µs is <= 10 µs");
        assert_eq!(h.buckets[SLOTS - 1], 1, "over 1 s is +Inf only");
        assert_eq!(h.count(), 4);
        let mut text = String::new();
        h.render(&mut text, "x", "shard=\"0\"");
        assert!(
            text.contains("x_bucket{shard=\"0\",le=\"0.000005\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("x_bucket{shard=\"0\",le=\"1\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("x_bucket{shard=\"0\",le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("x_count{shard=\"0\"} 4\n"), "{text}");
        assert!(text.contains("x_sum{shard=\"0\"} 1.000012\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c"), "a\\\"b\\\\c");
    }
}
