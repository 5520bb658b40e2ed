#!/usr/bin/env python3
"""Lines the steady client's slow requests up with the migration step in progress.

Reads what `KEEP_STEADY=dir LOG_LEVEL="warn,slotproxy::migration=debug"
deploy/local/rebalance-compare.sh` kept: slotproxy-steady.log (unix_ns latency_us ok|err),
slotproxy-window (start_ns end_ns of the move) and slotproxy-proxy.log. Prints the latency
quantiles before and during the move, then, for each kind of log line (numbers masked), how
many requests were sent while it was the latest one and how many of those were slow.

Usage: deploy/local/slow-steps.py DIR [SLOW_MS]   (SLOW_MS default 1.0)
"""
import bisect
import collections
import datetime
import re
import sys


def events(path):
    """(unix_ns, kind) of every log line, numbers and ids masked."""
    out = []
    with open(path) as log:
        for line in log:
            m = re.match(r"(\S+)Z\s+\w+\s+(.*)", line)
            if not m:
                continue
            when = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc)
            text = re.sub(r"\w+\{[^}]*\}: ", "", m.group(2))
            text = re.sub(r"slotproxy::migration::", "", text)
            text = re.sub(r"(job|holder)=\S+ ?", "", text)
            text = re.sub(r"[0-9a-f]{40}", "ID", text)
            text = re.sub(r"\d+", "N", text)
            out.append((int(when.timestamp() * 1e9), text[:100]))
    out.sort()
    return out


def quantiles(name, values):
    values = sorted(values)
    n = len(values)
    if n == 0:
        print(f"{name:>7}: no requests")
        return
    at = lambda q: values[min(n - 1, int(n * q))] / 1000
    print(f"{name:>7}: {n:6d} requests  p50 {at(0.5):.2f}  p90 {at(0.9):.2f}  p99 {at(0.99):.2f}  max {values[-1] / 1000:.2f} ms")


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    folder = sys.argv[1]
    slow_us = float(sys.argv[2]) * 1000 if len(sys.argv) == 3 else 1000.0
    with open(f"{folder}/slotproxy-window") as window:
        start, end = map(int, window.read().split())
    requests = []
    with open(f"{folder}/slotproxy-steady.log") as steady:
        for line in steady:
            sent, latency, _ = line.split()
            requests.append((int(sent), int(latency)))
    quantiles("before", [lat for sent, lat in requests if start - 10_000_000_000 <= sent < start])
    during = [(sent, lat) for sent, lat in requests if start <= sent < end]
    quantiles("during", [lat for _, lat in during])
    log = events(f"{folder}/slotproxy-proxy.log")
    times = [t for t, _ in log]
    sent_under = collections.Counter()
    slow_under = collections.Counter()
    for sent, latency in during:
        i = bisect.bisect_right(times, sent) - 1
        kind = log[i][1] if i >= 0 else "(before the first line)"
        sent_under[kind] += 1
        if latency >= slow_us:
            slow_under[kind] += 1
    print(f"slow (>= {slow_us / 1000:.2f} ms) / sent while the latest log line was:")
    for kind, slow in slow_under.most_common(12):
        print(f"{slow:5d} / {sent_under[kind]:5d}  {kind}")


if __name__ == "__main__":
    main()
