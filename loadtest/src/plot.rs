//! Output files: the latency distribution in HdrHistogram's percentile text format and a
//! latency-by-percentile SVG. Hand-written SVG rather than `plotters`: the one chart needs an
//! inverse-log "percentile" axis that plotters has no ready scale for anyway, and this keeps
//! the load generator's build free of a font and image stack.

use std::fmt::Write;

use hdrhistogram::Histogram;

const NS_PER_MS: f64 = 1e6;

/// One point of the percentile distribution: latency in ms, quantile, cumulative count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Point {
    pub value_ms: f64,
    pub quantile: f64,
    pub total_count: u64,
}

/// The distribution as HdrHistogram prints it (5 ticks per half distance), values in ms.
pub(crate) fn percentile_points(h: &Histogram<u64>) -> Vec<Point> {
    let mut total = 0;
    h.iter_quantiles(5)
        .map(|v| {
            total += v.count_since_last_iteration();
            Point {
                value_ms: h.highest_equivalent(v.value_iterated_to()) as f64 / NS_PER_MS,
                quantile: v.quantile_iterated_to(),
                total_count: total,
            }
        })
        .collect()
}

/// HdrHistogram's `outputPercentileDistribution` format (values scaled to milliseconds), as
/// read by HdrHistogram's plotter and `hdr-plot`.
pub(crate) fn hdr_percentile_text(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    for p in percentile_points(h) {
        if p.quantile < 1.0 {
            let _ = writeln!(
                out,
                "{:12.3} {:2.12} {:10} {:14.2}",
                p.value_ms,
                p.quantile,
                p.total_count,
                1.0 / (1.0 - p.quantile)
            );
        } else {
            let _ = writeln!(
                out,
                "{:12.3} {:2.12} {:10}",
                p.value_ms, p.quantile, p.total_count
            );
        }
    }
    let sub_buckets = (2.0 * 10f64.powi(i32::from(h.sigfig())))
        .log2()
        .ceil()
        .exp2() as u64;
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / NS_PER_MS,
        h.stdev() / NS_PER_MS
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / NS_PER_MS,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets
    );
    out
}

/// The x position of quantile `q` on the "percentile" axis: log10(1 / (1 - q)), so 90% is 1,
/// 99% is 2, 99.9% is 3. `q = 1` is placed one decade past the last point (`cap`).
fn x_of(q: f64, cap: f64) -> f64 {
    if q >= 1.0 {
        cap
    } else {
        (1.0 / (1.0 - q)).log10().min(cap)
    }
}

/// Chart size and margins, in SVG user units.
const W: f64 = 800.0;
const H: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// A latency-by-percentile SVG chart.
pub(crate) fn latency_svg(h: &Histogram<u64>, title: &str) -> String {
    let points = percentile_points(h);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = write!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    if points.is_empty() {
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">no latencies recorded</text></svg>"#,
            W / 2.0,
            H / 2.0
        );
        return svg;
    }
    let frame = Frame::fit(&points);
    frame.grid(&mut svg);
    axis_titles(&mut svg);
    frame.curve(&mut svg, &points);
    svg.push_str("</svg>\n");
    svg
}

/// The plot area's scales: `decades` of the percentile axis, `y_max` ms.
struct Frame {
    decades: f64,
    y_max: f64,
}

impl Frame {
    fn fit(points: &[Point]) -> Frame {
        let finite_max = points
            .iter()
            .filter(|p| p.quantile < 1.0)
            .map(|p| x_of(p.quantile, f64::MAX))
            .fold(0.0, f64::max);
        Frame {
            decades: (finite_max.ceil() + 1.0).max(2.0),
            y_max: nice_ceiling(points.iter().map(|p| p.value_ms).fold(0.0, f64::max) * 1.05),
        }
    }

    fn px(&self, x: f64) -> f64 {
        LEFT + x / self.decades * (W - LEFT - RIGHT)
    }

    fn py(&self, y: f64) -> f64 {
        H - BOTTOM - y / self.y_max * (H - TOP - BOTTOM)
    }

    /// Vertical lines at 0%, 90%, 99%, ... and horizontal ones at fifths of `y_max`.
    fn grid(&self, svg: &mut String) {
        for d in 0..=self.decades as u32 {
            let x = self.px(f64::from(d));
            let label = match d {
                0 => "0%".to_string(),
                _ => format!("{}%", 100.0 - 100.0 / 10f64.powi(d as i32)),
            };
            let _ = write!(
                svg,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##,
                H - BOTTOM
            );
            let _ = write!(
                svg,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
                H - BOTTOM + 18.0
            );
        }
        for i in 0..=5 {
            let v = self.y_max * f64::from(i) / 5.0;
            let y = self.py(v);
            let _ = write!(
                svg,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
                W - RIGHT
            );
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                y + 4.0,
                trim_float(v)
            );
        }
    }

    fn curve(&self, svg: &mut String, points: &[Point]) {
        let mut path = String::new();
        for (i, p) in points.iter().enumerate() {
            let x = self.px(x_of(p.quantile, self.decades));
            let _ = write!(
                path,
                "{}{:.1},{:.1} ",
                if i == 0 { "M" } else { "L" },
                x,
                self.py(p.value_ms)
            );
        }
        let _ = write!(
            svg,
            r##"<path d="{path}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##
        );
    }
}

fn axis_titles(svg: &mut String) {
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 10.0
    );
    let _ = write!(
        svg,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">latency (ms)</text>"#,
        H / 2.0,
        H / 2.0
    );
}

/// 1, 2 or 5 times a power of ten, at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * magnitude >= v {
            return m * magnitude;
        }
    }
    10.0 * magnitude
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Histogram<u64> {
        let mut h = crate::worker::new_histogram();
        for i in 1..=10_000u64 {
            h.record(i * 1_000).unwrap(); // 1 µs .. 10 ms
        }
        h
    }

    #[test]
    fn hdr_text_has_the_standard_shape() {
        let text = hdr_percentile_text(&sample());
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
            ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
        );
        assert_eq!(lines.next(), Some(""));
        let first: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(first.len(), 4);
        assert!(text.contains("#[Max     ="));
        assert!(text.contains("Total count    =        10000]"));
        assert!(text.contains("SubBuckets     =         2048]"));
        let last_value_line = text.lines().rfind(|l| !l.starts_with('#')).unwrap();
        assert!(
            last_value_line.contains("1.000000000000"),
            "{last_value_line}"
        );
    }

    #[test]
    fn svg_is_well_formed_and_labels_percentiles() {
        let svg = latency_svg(&sample(), "a < b");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains(">99%<") && svg.contains(">99.9%<") && svg.contains(">90%<"));
        assert!(svg.contains("a &lt; b"));
        let empty = latency_svg(&crate::worker::new_histogram(), "x");
        assert!(empty.contains("no latencies recorded"));
    }

    #[test]
    fn percentile_axis_is_inverse_log() {
        assert_eq!(x_of(0.0, 9.0), 0.0);
        assert!((x_of(0.9, 9.0) - 1.0).abs() < 1e-9);
        assert!((x_of(0.999, 9.0) - 3.0).abs() < 1e-6);
        assert_eq!(x_of(1.0, 6.0), 6.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(0.011), 0.02);
    }
}
