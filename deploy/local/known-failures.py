#!/usr/bin/env python3
"""Compares a pytest JUnit report with a known-failures list and prints the pass rate per file.

Usage: known-failures.py REPORT.xml KNOWN.txt. KNOWN.txt has one `<file>::<test> <reason>`
per line (`#` starts a comment; the reason's part before ':' groups the failures). Exits 1
when a test failed that the list does not name; lists entries that passed, to be removed.
Used by deploy/local/redis-py-compat.sh and deploy/local/rq-compat.sh.
"""
import collections, sys, xml.etree.ElementTree as ET

report, known_path = sys.argv[1], sys.argv[2]
known = {}
for line in open(known_path):
    line = line.strip()
    if line and not line.startswith("#"):
        test, _, reason = line.partition(" ")
        known[test] = reason.strip()
per_file = collections.defaultdict(collections.Counter)
failed = []
for case in ET.parse(report).iter("testcase"):
    module = case.get("classname", "").split(".")[1]
    name = f"{module}::{case.get('name')}"
    outcome = "passed"
    for kind in ("failure", "error", "skipped"):
        if case.find(kind) is not None:
            outcome = "skipped" if kind == "skipped" else "failed"
    per_file[module][outcome] += 1
    if outcome == "failed":
        failed.append(name)
print(f"{'file':24} {'passed':>7} {'failed':>7} {'skipped':>8} {'pass rate':>10}")
total = collections.Counter()
for module, counts in sorted(per_file.items()):
    total.update(counts)
    ran = counts["passed"] + counts["failed"]
    rate = f"{100 * counts['passed'] / ran:.0f}%" if ran else "-"
    print(f"{module:24} {counts['passed']:7} {counts['failed']:7} {counts['skipped']:8} {rate:>10}")
ran = total["passed"] + total["failed"]
print(f"{'total':24} {total['passed']:7} {total['failed']:7} {total['skipped']:8} "
      f"{100 * total['passed'] / max(ran, 1):9.1f}%")
reasons = collections.Counter(known[t].split(":")[0] for t in set(failed) if t in known)
print("\nknown failures by reason:")
for reason, n in reasons.most_common():
    print(f"  {n:4}  {reason}")
new = sorted(set(t for t in failed if t not in known))
fixed = sorted(t for t in known if t not in failed)
if fixed:
    print("\nlisted as failing but passed now (remove from the list):")
    for t in fixed:
        print("  " + t)
if new:
    print("\nNEW failures:")
    for t in new:
        print("  " + t)
    sys.exit(1)
