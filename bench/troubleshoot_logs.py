"""Accuracy of the error-line classifier on a labelled set of log lines.

The set (bench/data/error_log_lines.tsv) is in two batches, written by hand from the way
common clients, servers and platforms phrase failures: batch 1 before the rules existed,
batch 2 after them (other languages, SaaS APIs and platforms), measured first untouched and
then used for a second round of rules. In each batch a fixed third (by a hash of the line)
is held out: the rules were only ever adjusted on mistakes of the other two thirds. Prints
accuracy and per-category recall per part, and the confusions on the development parts.

    .venv/bin/python bench/troubleshoot_logs.py [--show-held-out-errors]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from atom.troubleshoot.classify import classify

DATA = Path(__file__).resolve().parent / "data" / "error_log_lines.tsv"


def held_out(line: str) -> bool:
    """A fixed third of the set, chosen by a hash of the line (not by its label)."""
    return int(hashlib.sha1(line.encode()).hexdigest(), 16) % 3 == 0


def evaluate(rows: list[tuple[str, str]]) -> tuple[float, dict[str, tuple[int, int]], list]:
    """Accuracy, per-category (right, total) and the mistakes."""
    per: dict[str, list[int]] = {}
    wrong = []
    for label, line in rows:
        got = classify(line).category.value
        right = per.setdefault(label, [0, 0])
        right[1] += 1
        if got == label:
            right[0] += 1
        else:
            wrong.append((label, got, line))
    total = sum(t for _, t in per.values())
    accuracy = sum(r for r, _ in per.values()) / total if total else 0.0
    return accuracy, {k: (v[0], v[1]) for k, v in per.items()}, wrong


def main(argv: list[str] | None = None) -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--show-held-out-errors", action="store_true")
    args = parser.parse_args(argv)
    with DATA.open() as f:
        table = list(csv.DictReader(f, delimiter="\t"))
    rows = [(r["category"], r["line"]) for r in table]
    dev = [r for r in rows if not held_out(r[1])]
    test = [r for r in rows if held_out(r[1])]
    second = [(r["category"], r["line"]) for r in table if r["batch"] == "2"]
    start = time.perf_counter()
    for _ in range(10):
        for _, line in rows:
            classify(line)
    per_line_us = (time.perf_counter() - start) / (10 * len(rows)) * 1e6
    print(f"lines: {len(rows)} (development {len(dev)}, held out {len(test)})")
    print(f"classification time: {per_line_us:.0f} us per line")
    parts = (
        ("development (both batches)", dev),
        ("held out (both batches)", test),
        ("held out, batch 2 only", [r for r in second if held_out(r[1])]),
    )
    for name, part in parts:
        accuracy, per, wrong = evaluate(part)
        print(f"\n{name}: accuracy {accuracy:.3f} ({len(part) - len(wrong)}/{len(part)})")
        for category in sorted(per):
            r, t = per[category]
            print(f"  {category:20s} {r:3d}/{t:<3d} recall {r / t:.2f}")
        if name.startswith("development") or args.show_held_out_errors:
            for label, got, line in wrong:
                print(f"  WRONG {label} -> {got}: {line[:110]}")
    counts = Counter(label for label, _ in rows)
    print("\nlabels:", dict(sorted(counts.items())))


if __name__ == "__main__":
    main()
