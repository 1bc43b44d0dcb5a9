"""Look-alike scans: 10,000 of our names against 800,000 public names, full and incremental.

    .venv/bin/python benchmarks/bench_watch.py [--ours 10000] [--public 800000] [--json]
    .venv/bin/python benchmarks/bench_watch.py --listing names.txt   # a real listing

Everything is generated (tests/_lookalike_names.py, seeded) and stays in this process:
no network.  `--listing FILE` reads public names from a file instead (one per line; a
TSV's first column), to measure precision against a real listing.

- full scan: `watch.run_watch` over the whole listing, as the first `namekeeper watch
  --once` does: build the index from the store's names, match every public name, leave
  out honest neighbours, record the reports, remember the listing.  The listing itself
  is passed in (its download and cache are `audit`'s, measured there); facts come from a
  stub index that answers at once (the JSON API is asked about reported names only).
- incremental scan: `run_watch` again after 1,000 new public names were added: only
  those are examined.  Timed as `serve` runs it (the index, the names scanned and the word
  counts kept in memory between scans), and as a fresh `watch --once` process would.
- baseline: what the obvious code does, a Python loop over rapidfuzz's Levenshtein
  distance (score_cutoff 2) from each public name to each of our names, timed on a
  sample of public names and extrapolated to the whole listing.
- precision: reports per 1,000 of our names (the full scan's, planted names aside).
- rapidfuzz: one bounded OSA distance through rapidfuzz against the same in pure Python.

Goals (issue 13, on a 2-core machine): full scan <= 15 s, incremental <= 1 s.  The exit
code is 0 whatever the figures (this is a measurement), 2 when it cannot run.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rapidfuzz.distance import OSA, Levenshtein

from namekeeper.config import Config, StoreConfig
from namekeeper.lookalike import LookalikeIndex
from namekeeper.model import NameEvent, PublicProject
from namekeeper.public.interface import PublicIndex
from namekeeper.public.listing import ListingInfo, PublicListing
from namekeeper.store.sqlite import Store
from namekeeper.watch import WatchState, basis, run_watch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from _lookalike_names import our_names, public_names  # noqa: E402

GOAL_FULL_S = 15.0
GOAL_INCREMENTAL_S = 1.0


class StubIndex(PublicIndex):
    """Answers every lookup at once: the benchmark measures the scan, not the network."""

    def lookup(self, name: str) -> PublicProject:
        return PublicProject(name=name, exists=True, owners=("someone",), ownership_known=True)


def listing_of(names: list[str]) -> PublicListing:
    info = ListingInfo(url="bench://listing", count=len(names), validated_at=time.time())
    return PublicListing.of(names, info)


def read_listing(path: Path) -> list[str]:
    import re

    names = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        name = line.split("\t", 1)[0].strip().lower()
        if name and name != "name":
            names.append(re.sub(r"[-_.]+", "-", name))
    return sorted(set(names))


def python_osa(a: str, b: str) -> int:
    """Optimal string alignment distance, textbook dynamic programming."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = ca != cb
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def baseline_seconds(ours: list[str], public: list[str], sample: int) -> tuple[float, int]:
    """(extrapolated seconds for every public name, matches in the sample)."""
    rng = random.Random(7)
    chosen = rng.sample(public, min(sample, len(public)))
    distance = Levenshtein.distance
    start = time.perf_counter()
    hits = 0
    for p in chosen:
        for o in ours:
            if p != o and distance(p, o, score_cutoff=2) <= 2:
                hits += 1
    elapsed = time.perf_counter() - start
    return elapsed / len(chosen) * len(public), hits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ours", type=int, default=10_000, help="our names (default 10000)")
    parser.add_argument("--public", type=int, default=800_000,
                        help="generated public names (default 800000)")
    parser.add_argument("--new", type=int, default=1_000,
                        help="public names added before the incremental scan (default 1000)")
    parser.add_argument("--baseline-sample", type=int, default=100,
                        help="public names the baseline is timed on (default 100)")
    parser.add_argument("--listing", type=Path, help="read public names from this file")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args()

    ours = our_names(args.ours)
    if args.listing:
        try:
            public = read_listing(args.listing)
        except OSError as exc:
            print(f"bench_watch: cannot read {args.listing}: {exc.strerror}", file=sys.stderr)
            return 2
    else:
        public = public_names(args.public)
    listed = set(public)
    newcomers = [n for n in public_names(args.new * 2, seed=1313) if n not in listed]
    newcomers = newcomers[:args.new]

    with tempfile.TemporaryDirectory() as tmp:
        config = Config(store=StoreConfig(path=Path(tmp) / "bench.sqlite3"))
        store = Store(config.store.path)
        store.note_seen_many([NameEvent(name=n, display_name=n, source="bench", index="bench")
                              for n in ours])
        index_start = time.perf_counter()
        LookalikeIndex(ours)
        index_s = time.perf_counter() - index_start

        state = WatchState()  # what `serve` keeps between scans
        # Listings are built before the clock starts: loading one is `audit`'s cost.
        first, grown = listing_of(public), listing_of(sorted(listed | set(newcomers)))
        start = time.perf_counter()
        full = run_watch(config, store, StubIndex(), listing=first, state=state)
        full_s = time.perf_counter() - start

        start = time.perf_counter()
        incremental = run_watch(config, store, StubIndex(), listing=grown, state=state)
        incremental_s = time.perf_counter() - start

        # The same increment for a fresh `namekeeper watch --once`: index, names and word
        # counts come from the store and the listing instead of memory.
        store.forget_lookalikes(incremental.new)
        store.remember_scan(basis(config, store, store.our_names()), public)
        grown = listing_of(sorted(listed | set(newcomers)))  # a fresh process loads it anew
        start = time.perf_counter()
        run_watch(config, store, StubIndex(), listing=grown)
        cold_s = time.perf_counter() - start
        store.close()

    base_s, _ = baseline_seconds(ours, public, args.baseline_sample)
    pairs = [(random.Random(i).choice(ours), random.Random(-i).choice(public)) for i in range(2000)]
    start = time.perf_counter()
    for a, b in pairs:
        OSA.distance(a.replace("-", ""), b.replace("-", ""), score_cutoff=2)
    rapidfuzz_us = (time.perf_counter() - start) / len(pairs) * 1e6
    start = time.perf_counter()
    for a, b in pairs[:500]:
        python_osa(a.replace("-", ""), b.replace("-", ""))
    python_us = (time.perf_counter() - start) / 500 * 1e6

    reports = len(full.new)
    figures: dict[str, Any] = {
        "ours": len(ours), "public": len(public), "listing": str(args.listing or "generated"),
        "index_build_s": round(index_s, 3),
        "full_scan_s": round(full_s, 2), "full_goal_s": GOAL_FULL_S,
        "full_scanned": full.scanned,
        "incremental_scan_s": round(incremental_s, 3), "incremental_goal_s": GOAL_INCREMENTAL_S,
        "incremental_scanned": incremental.scanned, "incremental_cold_s": round(cold_s, 3),
        "incremental_new": len(incremental.new),
        "baseline_extrapolated_s": round(base_s, 1),
        "ratio_baseline_over_full": round(base_s / full_s, 1),
        "reports": reports, "reports_per_1000_ours": round(reports / len(ours) * 1000, 2),
        "osa_rapidfuzz_us": round(rapidfuzz_us, 2), "osa_python_us": round(python_us, 1),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"our names {len(ours)}, public names {len(public)} ({figures['listing']})")
    print(f"index build            {index_s:8.2f} s")
    print(f"full scan              {full_s:8.2f} s   goal <= {GOAL_FULL_S:.0f} s  "
          f"({'met' if full_s <= GOAL_FULL_S else 'MISSED'})")
    print(f"incremental ({incremental.scanned} new) {incremental_s:6.3f} s   goal <= "
          f"{GOAL_INCREMENTAL_S:.0f} s  ({'met' if incremental_s <= GOAL_INCREMENTAL_S else 'MISSED'})"
          f"; {len(incremental.new)} new look-alike(s)")
    print(f"  the same from a fresh `watch --once` (index, names, words re-read) {cold_s:6.3f} s")
    print(f"baseline (Python loop over rapidfuzz Levenshtein, {args.baseline_sample} names "
          f"extrapolated) {base_s:8.1f} s   ratio {base_s / full_s:.0f}x")
    print(f"reports per 1,000 of our names  {figures['reports_per_1000_ours']}  ({reports} reports)")
    print(f"one bounded OSA distance: rapidfuzz {rapidfuzz_us:.2f} µs, pure Python "
          f"{python_us:.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
