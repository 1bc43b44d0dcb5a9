"""Time to reserve a new name: namekeeper against the seed-style baseline, in one run.

    /work/venv/bin/python benchmarks/bench_reserve.py [--names 50] [--baseline-names 10] [--json]

Both sides upload to the same fake public index (tests/_fake_public.py) on
127.0.0.1; nothing leaves the machine.

- namekeeper: ``keeper.reserve_name`` through ``app.build_keeper`` in this
  process — the path ``namekeeper reserve`` and the service's workers take:
  lookup (simple + JSON API), render and build the placeholder sdist, upload it
  with twine, record the outcome.  One timing per name, ``--names`` distinct
  new names.  Optionally (on by default) one ``namekeeper reserve`` command for
  ``--names`` more names, as a subprocess, reported per name.
- baseline ("seed-style", the design namekeeper replaced): per name, write a
  minimal setuptools project whose package raises on import, build it with
  ``python -m build --sdist --wheel`` (isolated, the default) and upload both
  files with ``python -m twine upload``, each a subprocess.

Every upload is checked on the fake (its ``uploads`` counter); the exit code is
0 when every upload landed (goals met or not: this is a measurement), 1 when
one did not, 2 when the benchmark could not run (e.g. no local setuptools wheel).

The isolated baseline build needs setuptools without the network: it runs with
``PIP_NO_INDEX=1`` and ``PIP_FIND_LINKS`` pointing at a temporary wheelhouse
filled from local copies (``--wheelhouse DIR``, else virtualenv's embedded
wheels, else CPython's ``ensurepip/_bundled``).  setuptools older than 70.1
also needs the ``wheel`` package to build a wheel; the newest local setuptools
is chosen, and the benchmark says so when only an old one is found.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import Version

from namekeeper.app import build_keeper
from namekeeper.config import ENV_PUBLIC_TOKEN, load
from namekeeper.model import Action, NameEvent

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import _fake_public  # noqa: E402  (the tests' fake public index)
from _fake_public import FakePublicIndex  # noqa: E402

GOAL_MS_PER_NAME = 150.0
GOAL_RATIO = 10.0
USER = "bench-user"
SUBPROCESS_TIMEOUT = 300.0


class BenchError(Exception):
    """The benchmark cannot run here (setup problem); exit 2 with this message."""


@dataclass
class Series:
    """Per-name wall times in seconds, plus names whose upload did not land."""

    label: str
    times: list[float] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        ms = sorted(t * 1000 for t in self.times)
        return {
            "label": self.label,
            "names": len(ms),
            "median_ms": round(statistics.median(ms), 1) if ms else None,
            "p90_ms": round(_percentile(ms, 90), 1) if ms else None,
            "min_ms": round(ms[0], 1) if ms else None,
            "max_ms": round(ms[-1], 1) if ms else None,
            "uploads_missing": self.missing,
            **self.extra,
        }


def _percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return sorted_values[int(rank) - 1]


# --------------------------------------------------------------------------- namekeeper


def write_config(fake: FakePublicIndex, workdir: Path) -> Path:
    config = workdir / "namekeeper.toml"
    config.write_text(
        fake.config_toml(owners=[USER])
        + textwrap.dedent(f"""
            [placeholder]
            organization = "Bench Org"
            contact = "security@bench.invalid"

            [store]
            path = "{(workdir / 'state.sqlite3').as_posix()}"

            [queue]
            new-projects-per-hour = 1000
            """),
        encoding="utf-8")
    return config


def bench_namekeeper(fake: FakePublicIndex, config_path: Path, names: list[str]) -> Series:
    """Time ``note_seen`` + ``reserve_name`` for each new name, in this process."""
    series = Series("namekeeper (in-process keeper.reserve_name)")
    started = time.perf_counter()
    config = load(config_path)
    keeper, store = build_keeper(config, with_notifiers=False)
    series.extra["startup_ms"] = round((time.perf_counter() - started) * 1000, 1)
    if keeper.missing_credentials():
        raise BenchError("namekeeper found no upload token; is NAMEKEEPER_PUBLIC_TOKEN set?")
    budget = keeper.budget_spender()
    actions: dict[str, int] = {}
    for name in names:
        t0 = time.perf_counter()
        store.note_seen(NameEvent(name=name, display_name=name, source="cli",
                                  index="command line"))
        outcome = keeper.reserve_name(name, name, budget=budget)
        series.times.append(time.perf_counter() - t0)
        actions[outcome.action.value] = actions.get(outcome.action.value, 0) + 1
        if outcome.action is not Action.RESERVED or fake.uploads[name] != 1:
            series.missing.append(name)
            print(f"  ! {name}: {outcome.action.value}: {outcome.message}", file=sys.stderr)
    store.close()
    series.extra["actions"] = actions
    return series


def bench_cli(fake: FakePublicIndex, config_path: Path, names: list[str],
              env: dict[str, str]) -> Series:
    """One ``namekeeper reserve`` subprocess for all ``names``; per-name = wall time / count."""
    series = Series("namekeeper reserve (one CLI subprocess, per name)")
    cmd = [sys.executable, "-m", "namekeeper.cli", "--config", str(config_path), "reserve",
           "--format", "json", *names]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT, check=False)
    wall = time.perf_counter() - t0
    per_name = wall / len(names)
    series.times = [per_name] * len(names)
    series.extra.update(wall_s=round(wall, 2), exit_code=proc.returncode)
    series.missing = [n for n in names if fake.uploads[n] != 1]
    if proc.returncode != 0:
        print(f"  ! namekeeper reserve exited {proc.returncode}: {proc.stderr.strip()[-500:]}",
              file=sys.stderr)
    return series


# --------------------------------------------------------------------------- baseline


def _wheel_version(path: Path) -> Version:
    return Version(path.name.split("-")[1])


def local_setuptools_wheels(extra_dir: Path | None) -> list[Path]:
    """Every setuptools/wheel wheel this machine has without a download."""
    dirs: list[Path] = []
    if extra_dir is not None:
        dirs.append(extra_dir)
    try:
        import virtualenv.seed.wheels.embed as embed

        dirs.append(Path(embed.__file__).parent)
    except ImportError:
        pass
    import ensurepip

    dirs.append(Path(ensurepip.__file__).parent / "_bundled")
    found = []
    for d in dirs:
        if d.is_dir():
            found += sorted(d.glob("setuptools-*.whl")) + sorted(d.glob("wheel-*.whl"))
    return found


def make_wheelhouse(dest: Path, extra_dir: Path | None) -> dict[str, str]:
    """Copy the newest local setuptools (and a `wheel` wheel, if any) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    candidates = local_setuptools_wheels(extra_dir)
    setuptools = sorted((p for p in candidates if p.name.startswith("setuptools-")),
                        key=_wheel_version)
    if not setuptools:
        raise BenchError("no local setuptools wheel found for the isolated baseline build; "
                         "pass --wheelhouse DIR holding setuptools-*.whl")
    chosen = setuptools[-1]
    shutil.copy2(chosen, dest)
    info = {"setuptools": chosen.name, "from": str(chosen.parent)}
    wheels = sorted((p for p in candidates if p.name.startswith("wheel-")), key=_wheel_version)
    if _wheel_version(chosen) < Version("70.1"):
        if not wheels:
            raise BenchError(f"the newest local setuptools ({chosen.name}) needs the 'wheel' "
                             "package to build a wheel, and no wheel-*.whl is here; pass "
                             "--wheelhouse DIR holding setuptools>=70.1 (or both)")
        shutil.copy2(wheels[-1], dest)
        info["wheel"] = wheels[-1].name
    return info


SEED_INIT = '''\
raise ImportError(
    "{name} is a private package of Bench Org, reserved on the public index to prevent "
    "dependency confusion; configure your installer to use Bench Org's index."
)
'''


def write_seed_project(root: Path, name: str) -> Path:
    """The old seed design: a setuptools project whose only module raises on import."""
    project = root / name
    package = project / canonicalize_name(name).replace("-", "_")
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(SEED_INIT.format(name=name), encoding="utf-8")
    (project / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{name}"
        version = "0.0.0"
        description = "Reserved name of a private package of Bench Org"
        """), encoding="utf-8")
    return project


def _run(cmd: list[str], env: dict[str, str], what: str) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip()[-1500:]
        raise BenchError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def bench_baseline(fake: FakePublicIndex, names: list[str], workdir: Path,
                   wheelhouse: Path, token: str, deadline: float) -> Series:
    """Per name: isolated ``python -m build --sdist --wheel``, then ``python -m twine upload``."""
    series = Series("seed-style baseline (isolated build + twine upload subprocesses)")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "TWINE_")) and k != ENV_PUBLIC_TOKEN}
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse),
               PIP_DISABLE_PIP_VERSION_CHECK="1", TWINE_USERNAME="__token__",
               TWINE_PASSWORD=token, TWINE_REPOSITORY_URL=fake.upload_url,
               TWINE_NON_INTERACTIVE="1")
    build_times, upload_times = [], []
    for name in names:
        if time.monotonic() > deadline:
            series.extra["stopped_early"] = f"time cap reached after {len(series.times)} name(s)"
            break
        project = write_seed_project(workdir / "seed", name)
        outdir = project / "dist"
        t0 = time.perf_counter()
        _run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(outdir),
              str(project)], env, f"python -m build for {name}")
        t1 = time.perf_counter()
        files = sorted(str(p) for p in outdir.iterdir())
        try:
            _run([sys.executable, "-m", "twine", "upload", "--disable-progress-bar", *files], env,
                 f"twine upload for {name}")
        except BenchError as exc:  # the index refused: an upload that did not land, not a setup error
            print(f"  ! {exc}", file=sys.stderr)
        t2 = time.perf_counter()
        series.times.append(t2 - t0)
        build_times.append(t1 - t0)
        upload_times.append(t2 - t1)
        if fake.uploads[name] != 2:  # sdist + wheel
            series.missing.append(name)
    if build_times:
        series.extra["build_median_ms"] = round(statistics.median(build_times) * 1000, 1)
        series.extra["upload_median_ms"] = round(statistics.median(upload_times) * 1000, 1)
    return series


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=50,
                        help="new names reserved by namekeeper (default 50)")
    parser.add_argument("--baseline-names", type=int, default=10,
                        help="names built and uploaded the seed-style way (default 10)")
    parser.add_argument("--no-cli", action="store_true",
                        help="skip the `namekeeper reserve` subprocess measurement")
    parser.add_argument("--wheelhouse", type=Path, default=None,
                        help="directory with a setuptools wheel for the isolated baseline build")
    parser.add_argument("--max-seconds", type=float, default=600.0,
                        help="time cap for the baseline loop (default 600)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--keep-fake-nagle", action="store_true",
                        help="leave the fake's Nagle/delayed-ACK stall on keep-alive requests "
                             "(~40 ms per lookup, an artefact of http.server, not of namekeeper)")
    args = parser.parse_args(argv)
    if args.names < 1 or args.baseline_names < 1 or args.names > 1000 \
            or args.baseline_names > 200:
        parser.error("--names must be 1..1000 and --baseline-names 1..200")

    run_id = secrets.token_hex(3)
    token = "bench-" + secrets.token_hex(16)
    os.environ[ENV_PUBLIC_TOKEN] = token
    # http.server sends a response's headers and body in two writes; with Nagle on, the
    # second waits for the client's delayed ACK (~40 ms) on every keep-alive request.
    # A real index does not do that; namekeeper's lookup session keeps connections alive.
    _fake_public._Handler.disable_nagle_algorithm = not args.keep_fake_nagle
    deadline = time.monotonic() + args.max_seconds
    report: dict[str, Any] = {"machine_cores": os.cpu_count(), "python": sys.version.split()[0],
                              "fake_nagle_disabled": not args.keep_fake_nagle}
    fake = FakePublicIndex(new_projects_per_hour=1000).start()
    fake.add_user(USER, token)
    try:
        with tempfile.TemporaryDirectory(prefix="nk-bench-reserve-") as tmp:
            workdir = Path(tmp)
            config_path = write_config(fake, workdir)
            wheelhouse_info = make_wheelhouse(workdir / "wheelhouse", args.wheelhouse)
            report["baseline_wheelhouse"] = wheelhouse_info
            log = (lambda *a: None) if args.json else \
                (lambda *a: print(*a, file=sys.stderr, flush=True))

            log(f"namekeeper: reserving {args.names} new names in-process ...")
            nk = bench_namekeeper(fake, config_path,
                                  [f"nkbench-{run_id}-r{i:04d}" for i in range(args.names)])
            cli = None
            if not args.no_cli:
                log(f"namekeeper reserve: one subprocess for {args.names} names ...")
                cli = bench_cli(fake, config_path,
                                [f"nkbench-{run_id}-c{i:04d}" for i in range(args.names)],
                                dict(os.environ))
            log(f"baseline: {args.baseline_names} isolated build + twine upload, "
                f"setuptools from {wheelhouse_info['setuptools']} ...")
            base = bench_baseline(fake, [f"nkbench-{run_id}-b{i:04d}"
                                         for i in range(args.baseline_names)],
                                  workdir, workdir / "wheelhouse", token, deadline)
    except BenchError as exc:
        print(f"bench_reserve: cannot run: {exc}", file=sys.stderr)
        return 2
    finally:
        fake.stop()

    nk_s, base_s = nk.summary(), base.summary()
    report["namekeeper"] = nk_s
    if cli is not None:
        report["namekeeper_cli"] = cli.summary()
    report["baseline"] = base_s
    ratio = (base_s["median_ms"] / nk_s["median_ms"]
             if nk_s["median_ms"] and base_s["median_ms"] else None)
    report["ratio_baseline_over_namekeeper"] = round(ratio, 1) if ratio else None
    report["goals"] = {
        f"median <= {GOAL_MS_PER_NAME:.0f} ms per name": nk_s["median_ms"] is not None
        and nk_s["median_ms"] <= GOAL_MS_PER_NAME,
        f">= {GOAL_RATIO:.0f}x faster than the baseline": ratio is not None
        and ratio >= GOAL_RATIO,
    }
    missing = nk.missing + base.missing + (cli.missing if cli else [])
    report["all_uploads_landed"] = not missing

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 1 if missing else 0


def print_report(report: dict[str, Any]) -> None:
    rows = [report["namekeeper"]]
    if "namekeeper_cli" in report:
        rows.append(report["namekeeper_cli"])
    rows.append(report["baseline"])
    print(f"\nreserve one new name — {report['machine_cores']} cores, Python {report['python']}, "
          f"fake public index on 127.0.0.1"
          f"{'' if report['fake_nagle_disabled'] else ' (with its 40 ms Nagle stall)'}")
    width = max(len(row["label"]) for row in rows)
    print(f"{'':{width}} {'names':>5} {'median':>10} {'p90':>10}")
    for row in rows:
        print(f"{row['label']:{width}} {row['names']:>5} {row['median_ms']:>8.1f}ms "
              f"{row['p90_ms']:>8.1f}ms")
    nk, base = report["namekeeper"], report["baseline"]
    print(f"\nnamekeeper start-up (plugins, store): {nk['startup_ms']} ms; slowest name "
          f"{nk['max_ms']} ms")
    if "namekeeper_cli" in report:
        cli = report["namekeeper_cli"]
        print(f"namekeeper reserve CLI: {cli['wall_s']} s wall for {cli['names']} names "
              f"(exit {cli['exit_code']}), start-up included")
    if "build_median_ms" in base:
        print(f"baseline split: build {base['build_median_ms']} ms, upload "
              f"{base['upload_median_ms']} ms (median); setuptools "
              f"{report['baseline_wheelhouse']['setuptools']}")
    if "stopped_early" in base:
        print(f"baseline {base['stopped_early']}")
    print(f"\nratio baseline/namekeeper (median): {report['ratio_baseline_over_namekeeper']}x")
    for goal, met in report["goals"].items():
        print(f"  goal {goal}: {'met' if met else 'NOT met'}")
    print(f"every upload landed on the fake: {'yes' if report['all_uploads_landed'] else 'NO'}",
          flush=True)
    for row in rows:
        if row["uploads_missing"]:
            print(f"  missing ({row['label']}): {', '.join(row['uploads_missing'])}")


if __name__ == "__main__":
    sys.exit(main())
