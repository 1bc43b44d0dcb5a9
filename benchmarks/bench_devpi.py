"""What the devpi plugin costs an upload, and how fast a devpi upload becomes a placeholder.

    .venv/bin/python benchmarks/bench_devpi.py [--uploads 100] [--json]

Two real devpi-servers on 127.0.0.1 in the same run (fast argon2 flags,
``--no-root-pypi``): one *without* the namekeeper plugin (blocked in its
plugin manager, as if not installed), one with it configured and the index
opted in (``reserve_public_names=True``).  Each server gets ``--uploads``
twine uploads of a new sdist, alternating between the two servers so that
drift on a shared machine hits both alike.  twine runs in-process
(``twine.commands.upload.upload``) so the figure is the upload itself, not
interpreter start-up.  Printed: median (and p90) upload time per server, the
median overhead ratio (goal: <= 5 %), and for the plugin's server the time
from twine's return to the placeholder being on the tests' fake public index
(median, p90): the window in which an attacker could still take the name.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import _fake_public  # noqa: E402
from _devpi import DevpiServer, make_sdist, start_devpi  # noqa: E402
from _fake_public import FakePublicIndex  # noqa: E402

GOAL_OVERHEAD = 0.05
TOKEN = "bench-devpi-token-not-secret"


def upload(server: DevpiServer, path: Path) -> float:
    """One twine upload, in-process; seconds."""
    from twine.commands.upload import upload as twine_upload
    from twine.settings import Settings

    settings = Settings(repository_url=server.upload_url, username=server.user,
                        password=server.password, non_interactive=True,
                        disable_progress_bar=True)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # twine narrates every upload through rich
        twine_upload(settings, [str(path)])
    return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class PlaceholderWatch:
    """Notes when each name's placeholder appears on the fake (polled every millisecond)."""

    def __init__(self, fake: FakePublicIndex) -> None:
        self.fake = fake
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.001):
            now = time.perf_counter()
            for name, count in list(self.fake.uploads.items()):
                if count and name not in self.seen:
                    self.seen[name] = now


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=100, help="uploads per server (100)")
    parser.add_argument("--wait", type=float, default=120.0,
                        help="seconds to wait for the last placeholders (120)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    if not 1 <= args.uploads <= 1000:
        parser.error("--uploads 1..1000")
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))

    _fake_public._Handler.disable_nagle_algorithm = True  # see bench_reserve.py
    fake = FakePublicIndex(new_projects_per_hour=1_000_000).start()
    fake.add_user("bench-owner", TOKEN)
    report: dict[str, Any] = {"uploads_per_server": args.uploads, "machine_cores": os.cpu_count()}
    try:
        with tempfile.TemporaryDirectory(prefix="nk-bench-devpi-") as tmp:
            work = Path(tmp)
            config = work / "namekeeper.toml"
            config.write_text(fake.config_toml(owners=["bench-owner"]) + """
[placeholder]
organization = "Bench Corp"
contact = "security@bench.example"
[store]
path = "state.sqlite3"
[queue]
new-projects-per-hour = 100000
""")
            (work / "plain").mkdir()
            (work / "nk").mkdir()
            (work / "files").mkdir()
            log("starting devpi-server without and with the namekeeper plugin ...")
            with start_devpi(work / "plain") as plain, start_devpi(
                    work / "nk", namekeeper_plugin=True,
                    server_args=["--namekeeper-config", str(config)],
                    env={"NAMEKEEPER_PUBLIC_TOKEN": TOKEN}) as with_plugin:
                plain_ix = plain.new_index("bench")
                nk_ix = with_plugin.new_index("bench", reserve_public_names=True)
                watch = PlaceholderWatch(fake)
                # One warm-up upload each (connection set-up, first-use imports).
                upload(plain_ix, make_sdist(work / "files", "bench-warm-plain"))
                upload(nk_ix, make_sdist(work / "files", "bench-warm-nk"))
                times: dict[str, list[float]] = {"without": [], "with": []}
                returned: dict[str, float] = {}
                log(f"{args.uploads} uploads to each, alternating ...")
                for i in range(args.uploads):
                    times["without"].append(upload(plain_ix, make_sdist(
                        work / "files", f"bench-plain-{i}")))
                    name = f"bench-nk-{i}"
                    times["with"].append(upload(nk_ix, make_sdist(work / "files", name)))
                    returned[name] = time.perf_counter()
                deadline = time.monotonic() + args.wait
                while time.monotonic() < deadline and not all(n in watch.seen for n in returned):
                    time.sleep(0.05)
                watch.stop.set()
                latencies = [watch.seen[n] - t for n, t in returned.items() if n in watch.seen]
    finally:
        fake.stop()

    med_without, med_with = statistics.median(times["without"]), statistics.median(times["with"])
    overhead = med_with / med_without - 1
    report.update({
        "upload_median_ms_without_plugin": round(med_without * 1000, 1),
        "upload_p90_ms_without_plugin": round(percentile(times["without"], 0.9) * 1000, 1),
        "upload_median_ms_with_plugin": round(med_with * 1000, 1),
        "upload_p90_ms_with_plugin": round(percentile(times["with"], 0.9) * 1000, 1),
        "median_ratio_with_vs_without": round(med_with / med_without, 3),
        "median_overhead_percent": round(overhead * 100, 1),
        "goal_overhead_percent": GOAL_OVERHEAD * 100,
        "goal_met": overhead <= GOAL_OVERHEAD,
        "placeholders_on_fake": len(latencies),
        "upload_to_placeholder_median_ms": round(statistics.median(latencies) * 1000, 1)
        if latencies else None,
        "upload_to_placeholder_p90_ms": round(percentile(latencies, 0.9) * 1000, 1)
        if latencies else None,
    })
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"twine upload, median (p90): without plugin {report['upload_median_ms_without_plugin']} "
              f"ms ({report['upload_p90_ms_without_plugin']}), with plugin "
              f"{report['upload_median_ms_with_plugin']} ms ({report['upload_p90_ms_with_plugin']})")
        print(f"ratio with/without (medians): {report['median_ratio_with_vs_without']} -> overhead "
              f"{report['median_overhead_percent']} % (goal <= 5 %: "
              f"{'met' if report['goal_met'] else 'NOT met'})")
        print(f"upload -> placeholder on the fake: median {report['upload_to_placeholder_median_ms']}"
              f" ms, p90 {report['upload_to_placeholder_p90_ms']} ms "
              f"({len(latencies)}/{len(returned)} names)")
    return 0 if len(latencies) == len(returned) else 1


if __name__ == "__main__":
    sys.exit(main())
