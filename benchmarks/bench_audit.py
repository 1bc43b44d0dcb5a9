"""Audit of 10,000 private names against a public index of 800,000 projects, vs the seed's method.

    python benchmarks/bench_audit.py [--public 800000] [--private 10000] [--sample 200]
                                     [--runs 3] [--index-latency-ms 0 20] [--json]

- The fake public index (tests/_fake_public.py) runs in its own process on
  127.0.0.1 with ``--public`` generated projects (mixed spellings, so names
  need canonicalising); the private index (another fake, PEP 503 HTML only,
  like Artifactory's) runs in this process with ``--private`` names: 5 % exist
  publicly (held by someone else: one JSON-API lookup each), 1 % are "too
  similar" to a public project (o/0, l/1, separators), the rest are free.
- **cold**: ``namekeeper audit --index <private> --format json`` as a
  subprocess with an empty listing cache (the listing is downloaded, parsed,
  cached) and an empty store; **warm**: the same command again (the listing is
  revalidated with a conditional request, 304). namekeeper's modules are
  compiled first, as ``pip install`` compiles them (``compile_like_pip``).
  Wall time, start-up included,
  and each run's CPU time (user + system: what the audit itself costs, whatever else the
  machine does) and peak RSS (``wait4``).
- **baseline**: the seed's method, one lookup per name in sequence
  (``SimplePublicIndex.lookup``: the simple page, then the JSON API when it
  exists), timed on ``--sample`` names drawn like the private ones and
  extrapolated to ``--private``.
- **latency**: on 127.0.0.1 a lookup costs about a millisecond, which no real
  index answers in.  ``--index-latency-ms`` makes every request to the fake
  public index (listing, simple pages, JSON API) wait that long before it is
  answered, for the audit and the baseline alike, so a network round trip is
  modelled the same for both.  Each value given is measured in turn (default:
  0 and 20 ms); the listing's transfer time is not modelled (it comes over
  loopback).
- ``--runs`` rounds (a fresh cache and store each: cold, warm, baseline) per
  latency; figures are the median and the range (min-max) of the rounds.

Goals (issue 11): cold <= 10 s, warm <= 3 s, >= 20x faster than the baseline,
peak RSS <= 400 MB.  Exit 0 when every verdict came back as expected (goals
met or not: this is a measurement), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from _fake_public import FakePublicIndex  # noqa: E402  (the tests' fake index)
from namekeeper.config import PublicConfig  # noqa: E402
from namekeeper.public.simple import SimplePublicIndex  # noqa: E402

WORDS = ["tools", "core", "client", "utils", "sdk", "api", "io", "lib", "plugin", "data"]

_PUBLIC_SERVER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from _fake_public import FakePublicIndex, FaultPlan
    sys.path.insert(0, sys.argv[2])
    from bench_audit import public_names
    fake = FakePublicIndex()
    fake.add_listed_projects(public_names(int(sys.argv[3])))
    fake._listing_bodies()  # a real index serves its listing ready-made (from its CDN)
    fake.start()
    print(fake.url, flush=True)
    for line in sys.stdin:  # "latency <seconds>": every public request waits that long first
        seconds = float(line.split()[1])
        fake.faults = (FaultPlan(rate=1.0, kinds=("stall",), stall_seconds=seconds,
                                 paths=("/simple/", "/pypi/")) if seconds > 0 else None)
        fake.requests.clear()
        fake.request_headers.clear()
        print("ok", flush=True)
    fake.stop()  # the benchmark closed our stdin
""")


def public_name(i: int) -> str:
    """The i-th generated public project, in one of several spellings of its canonical form."""
    word = WORDS[i % len(WORDS)]
    spelling = i % 3
    if spelling == 0:
        return f"pkg{i:06d}-{word}"
    if spelling == 1:
        return f"Pkg{i:06d}_{word.capitalize()}"
    return f"pkg{i:06d}.{word}"


def public_names(n: int) -> list[str]:
    return [public_name(i) for i in range(n)]


def private_names(n: int, public: int, seed: int = 11) -> dict[str, str]:
    """``n`` private names -> the verdict expected for each."""
    rng = random.Random(seed)
    names: dict[str, str] = {}
    taken = max(1, n * 5 // 100)
    similar = max(1, n // 100)
    for i in rng.sample(range(public), taken + similar):
        canon = public_name(i).lower().replace("_", "-").replace(".", "-")
        if len(names) < taken:
            names[canon] = "taken"
        else:  # o/0 or l/1 look-alike, separators dropped: too similar, refused to everyone
            look_alike = canon.replace("-", "").replace("o", "0").replace("l", "1")
            names[look_alike if look_alike != canon else canon + "0"] = "protected"
    i = 0
    while len(names) < n:
        names[f"acme-service-{i:05d}"] = "free"
        i += 1
    return names


def run_audit(private_url: str, config: Path,
              cache: Path) -> tuple[float, float, int, dict[str, Any]]:
    """(wall seconds, CPU seconds, peak RSS bytes, report) of one ``namekeeper audit`` process."""
    env = {**installed_env(), "XDG_CACHE_HOME": str(cache), "NAMEKEEPER_CONFIG": str(config)}
    out = tempfile.TemporaryFile()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "namekeeper", "--format", "json", "audit",
                             "--index", private_url], stdout=out, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    text = out.read().decode()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"audit failed with exit {proc.returncode}:\n{text[:2000]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, json.loads(text)


def installed_env() -> dict[str, str]:
    """The environment of an installed namekeeper: its bytecode compiled and kept.

    pip compiles a package's modules when it installs it, so a user's audit does not
    compile them; an editable checkout under ``PYTHONDONTWRITEBYTECODE`` (CI's, this
    machine's) would compile every module on every run (~0.1-0.2 s).
    """
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def compile_like_pip() -> None:
    """Compile namekeeper's modules, as ``pip install`` does (``__pycache__`` is git-ignored)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "src" / "namekeeper")],
                   env=installed_env(), check=True, stdout=subprocess.DEVNULL)


def baseline(public_url: str, expected: dict[str, str], sample: int) -> float:
    """Seconds per name of one sequential lookup per name (the seed's method)."""
    index = SimplePublicIndex(PublicConfig(simple_url=public_url + "simple/",
                                           json_url=public_url + "pypi/",
                                           upload_url=public_url + "legacy/"))
    names = random.Random(3).sample(sorted(expected), min(sample, len(expected)))
    start = time.perf_counter()
    for name in names:
        index.lookup(name)
    return (time.perf_counter() - start) / len(names)


def set_latency(server: subprocess.Popen[str], seconds: float) -> None:
    """Make every request to the fake public index wait ``seconds`` before it is answered."""
    assert server.stdin is not None and server.stdout is not None
    server.stdin.write(f"latency {seconds}\n")
    server.stdin.flush()
    if server.stdout.readline().strip() != "ok":
        raise SystemExit("the fake public index did not take the latency")


def one_round(public_url: str, private_url: str, expected: dict[str, str],
              sample: int) -> dict[str, Any]:
    """A cold audit, a warm one (fresh cache and store) and the baseline's sample."""
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        config = Path(tmp) / "namekeeper.toml"
        config.write_text(f'[public]\nsimple-url = "{public_url}simple/"\n'
                          f'json-url = "{public_url}pypi/"\nowners = ["acme-security"]\n'
                          f'[store]\npath = "{Path(tmp) / "store.sqlite3"}"\n')
        cache = Path(tmp) / "cache"
        cold, cold_cpu, cold_rss, report = run_audit(private_url, config, cache)
        warm, warm_cpu, warm_rss, warm_report = run_audit(private_url, config, cache)
    per_name = baseline(public_url, expected, sample)
    wrong = sum(1 for doc in (report, warm_report) for row in doc["names"]
                if expected.get(row["name"]) != row["verdict"])
    base = per_name * len(expected)
    return {"cold_s": cold, "warm_s": warm, "cold_cpu_s": cold_cpu, "warm_cpu_s": warm_cpu,
            "baseline_s": base, "per_name_s": per_name,
            "ratio_cold": base / cold, "ratio_warm": base / warm,
            "rss": max(cold_rss, warm_rss), "wrong": wrong}


def spread(values: list[float], digits: int = 2) -> dict[str, float]:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--public", type=int, default=800_000)
    parser.add_argument("--private", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=200, help="baseline names timed")
    parser.add_argument("--runs", type=int, default=3,
                        help="rounds (cold, warm, baseline) per latency (default 3)")
    parser.add_argument("--index-latency-ms", type=float, nargs="+", default=[0.0, 20.0],
                        metavar="MS",
                        help="per-request delay of the fake public index, the same for audit "
                             "and baseline (a real index's round trip); each value is measured "
                             "(default: 0 20)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (1 <= args.runs <= 20 and all(0 <= ms <= 1000 for ms in args.index_latency_ms)):
        parser.error("--runs 1..20, --index-latency-ms 0..1000")

    compile_like_pip()
    print(f"starting the fake public index with {args.public:,} projects ...", file=sys.stderr)
    server = subprocess.Popen(
        [sys.executable, "-c", _PUBLIC_SERVER, str(REPO / "tests"), str(REPO / "benchmarks"),
         str(args.public)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    private = FakePublicIndex()
    results: dict[float, list[dict[str, Any]]] = {}
    try:
        assert server.stdout is not None
        public_url = server.stdout.readline().strip()
        if not public_url:
            raise SystemExit("the fake public index did not start")
        expected = private_names(args.private, args.public)
        private.serve_json = False
        private.add_listed_projects(expected)
        private.start()
        for ms in args.index_latency_ms:
            set_latency(server, ms / 1000)
            for i in range(args.runs):
                print(f"latency {ms:g} ms, round {i + 1} of {args.runs} ...", file=sys.stderr)
                results.setdefault(ms, []).append(
                    one_round(public_url, private.simple_url, expected, args.sample))
    finally:
        private.stop()
        if server.stdin:
            server.stdin.close()
        server.wait(timeout=60)

    figures: dict[str, Any] = {
        "public_projects": args.public, "private_names": args.private, "runs": args.runs,
        "goals": {"cold_s": 10, "warm_s": 3, "ratio": 20, "peak_rss_mb": 400}, "latencies": {}}
    wrong = 0
    for ms, rounds in results.items():
        wrong += sum(r["wrong"] for r in rounds)
        figures["latencies"][f"{ms:g}"] = {
            "cold_s": spread([r["cold_s"] for r in rounds]),
            "warm_s": spread([r["warm_s"] for r in rounds]),
            "cold_cpu_s": spread([r["cold_cpu_s"] for r in rounds]),
            "warm_cpu_s": spread([r["warm_cpu_s"] for r in rounds]),
            "baseline_s": spread([r["baseline_s"] for r in rounds], 1),
            "baseline_per_name_ms": spread([r["per_name_s"] * 1000 for r in rounds]),
            "ratio_cold": spread([r["ratio_cold"] for r in rounds], 1),
            "ratio_warm": spread([r["ratio_warm"] for r in rounds], 1),
            "peak_rss_mb": round(max(r["rss"] for r in rounds) / 2**20),
        }
    figures["wrong_verdicts"] = wrong
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"audit of {args.private:,} private names vs {args.public:,} public projects; "
              f"median (min-max) of {args.runs} round(s)")
        for ms, f in figures["latencies"].items():
            def show(key: str, unit: str = " s", f: dict[str, Any] = f) -> str:
                v = f[key]
                return f"{v['median']:g}{unit} ({v['min']:g}-{v['max']:g})"

            print(f"index latency {ms} ms per request:")
            print(f"  cold (listing downloaded):  {show('cold_s')}   (goal <= 10 s)")
            print(f"  warm (listing revalidated): {show('warm_s')}   (goal <= 3 s)")
            print(f"  CPU of the audit process (user + system): cold {show('cold_cpu_s')}, "
                  f"warm {show('warm_cpu_s')}")
            print(f"  baseline, one lookup per name in sequence: {show('baseline_per_name_ms', ' ms')}"
                  f"/name x {args.private:,} = {show('baseline_s')} (sample of {args.sample})")
            print(f"  ratio: cold {show('ratio_cold', 'x')}, warm {show('ratio_warm', 'x')}"
                  f"   (goal >= 20x)")
            print(f"  peak RSS: {f['peak_rss_mb']} MB   (goal <= 400 MB)")
        print(f"wrong verdicts: {wrong}")
    return 0 if wrong == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
