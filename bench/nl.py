"""Plain English -> workflow: service detection accuracy and latency on the labelled sets in
tests/data/nl, for the full generator and the dictionary-only floor, in one run.

    .venv/bin/python bench/nl.py [--misses] [--set dev|heldout|all]

Local and offline: the generator reads only the packaged catalogue. Latency is per request,
in this process, the whole generate() call (detection, build, validation).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from atom.catalogue import load  # noqa: E402
from atom.generation import Generator  # noqa: E402
from atom.generation.evaluation import floor_method, full_method, load_cases, score  # noqa: E402

DATA = ROOT / "tests" / "data" / "nl"


def _row(label: str, s) -> str:
    return (
        f"{label:<35} n={s.n:<4} ordered {s.ordered:6.1%}  service-set {s.service_set:6.1%}  "
        f"trigger {s.trigger:6.1%}  P {s.precision:6.1%}  R {s.recall:6.1%}  "
        f"p50 {s.p50_ms:6.2f} ms  p95 {s.p95_ms:6.2f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=["dev", "heldout", "all"], default="all")
    parser.add_argument("--misses", action="store_true", help="print every wrong answer")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    generator = Generator(load())
    print(
        f"catalogue: {len(generator.catalogue.services)} services; generator built in "
        f"{(time.perf_counter() - started) * 1000:.0f} ms (once per process)"
    )
    names = ["dev", "heldout"] if args.set == "all" else [args.set]
    methods = [
        ("dictionary only", floor_method(generator)),
        ("dictionary + fuzzy (floor)", floor_method(generator, fuzzy=True)),
        ("full", full_method(generator)),
    ]
    for name in names:
        cases = load_cases(DATA / f"{name}.txt")
        full_method(generator)(cases[0])  # warm caches (template compilation) before timing
        print(f"\n== {name}.txt")
        for kind in ("title", "plain", "long", None):
            subset = [c for c in cases if kind is None or c.kind == kind]
            if not subset:
                continue
            for label, method in methods:
                result = score(subset, method)
                print(_row(f"{kind or 'all'}: {label}", result))
                if args.misses and label == "full" and kind is None:
                    for case, got in result.misses:
                        want = f"{case.trigger} -> {list(case.actions)}"
                        print(f"   MISS {case.text!r}\n        want {want}")
                        print(f"        got  {got[0]} -> {list(got[1])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
