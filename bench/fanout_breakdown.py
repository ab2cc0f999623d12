#!/usr/bin/env python3
"""bench/fanout_breakdown.py METRICS_FILE: crier's own view of a run, from a /metrics scrape.

Prints the server-side fan-out latency (crier_fanout_seconds: sequencing on the owner to the
end of the flush pass that reached the shard's last subscriber) as p50/p90/p99, interpolated
within Prometheus buckets, next to the time spent in each loop phase and the writes per
delivery. Set it beside crier-load's client-side p99: the difference is kernel delivery and
the client's own loop, not the broker (docs/operations.md, "Fan-out latency").
"""
import re
import sys


def merged_histogram(text, name, labels=""):
    """Cumulative (le, count) of the merged series `name{labels}` (no shard label)."""
    pattern = re.compile(
        r"^%s_bucket\{%sle=\"([^\"]+)\"\} (\S+)$" % (re.escape(name), re.escape(labels)), re.M
    )
    buckets = [(float("inf") if le == "+Inf" else float(le), float(v)) for le, v in pattern.findall(text)]
    return sorted(buckets)


def quantile(buckets, q):
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            share = (rank - prev_count) / (count - prev_count) if count > prev_count else 1.0
            return prev_le + (le - prev_le) * share
        prev_le, prev_count = le, count
    return prev_le


def value(text, series):
    match = re.search(r"^%s (\S+)$" % re.escape(series), text, re.M)
    return float(match.group(1)) if match else 0.0


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: bench/fanout_breakdown.py METRICS_FILE")
    text = open(sys.argv[1]).read()
    fanout = merged_histogram(text, "crier_fanout_seconds")
    count = fanout[-1][1] if fanout else 0
    parts = ["fan-outs %d" % count]
    for q in (0.5, 0.9, 0.99):
        v = quantile(fanout, q)
        parts.append("p%g %s ms" % (q * 100, "-" if v is None else "%.1f" % (v * 1e3)))
    print("server fan-out: " + ", ".join(parts))
    phases = []
    for phase in ("read", "inbox", "sweep", "flush"):
        total = value(text, 'crier_loop_phase_seconds_sum{phase="%s"}' % phase)
        n = value(text, 'crier_loop_phase_seconds_count{phase="%s"}' % phase)
        phases.append("%s %.3f s in %d" % (phase, total, n))
    print("loop phases: " + "; ".join(phases))
    deliveries = value(text, "crier_deliveries_total")
    writes = value(text, "crier_writes_total")
    blocked = value(text, "crier_writes_blocked_total")
    print(
        "writes: %d for %d deliveries (%.2f deliveries per write), %d blocked"
        % (writes, deliveries, deliveries / writes if writes else 0, blocked)
    )


if __name__ == "__main__":
    main()
