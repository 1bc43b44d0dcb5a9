"""Webhook intake under load: sustained accepted events/s and latency, with durable enqueue.

    /work/venv/bin/python benchmarks/bench_webhooks.py [--count 5000] [--threads 8] [--json]
        [--store postgresql://user@127.0.0.1:5432/db]   # + 1 and 3 replicas on the database
        [--postgres]   # the same on a throw-away PostgreSQL server it starts itself (initdb)

Starts ``namekeeper serve`` as a subprocess on a free port of 127.0.0.1, with
the Artifactory webhook source (signing on) and its public side pointed at a
fake public index (tests/_fake_public.py, in a subprocess of its own so it
shares no interpreter lock with the load generator).  The queue workers run as
in production and drain the queue meanwhile; by default with ``[policy]
dry-run = true`` (they look names up on the fake but upload nothing;
``--upload`` lets them upload to the fake too).

K client threads (``--threads``), each on one keep-alive connection, post
Artifactory ``deployed`` webhooks for distinct names, signed with
``X-JFrog-Event-Auth`` = hex HMAC-SHA256 of the raw body, until ``--count``
events are sent or ``--max-seconds`` have passed.  By default each thread sends
as fast as it is answered (closed loop: the throughput the service can
sustain); ``--rate N`` paces the whole load to N events/s instead (open loop,
latency counted from each request's scheduled time).  Every answer must be 202.

``--healthz-flood N`` measures in the same run alternating rounds alone and
while another process GETs ``/healthz`` N times a second (a load balancer gone
wild), each side's p99 over all its rounds; goal: webhook p99 moves by no more
than 20 %.

With ``--upload``, a latency phase runs first (after the warm-up has drained):
``--latency-names`` webhooks, one every half second, each timed from its 202 to
its placeholder being on the fake public index (the store's ``reserved_at``,
written once the index has answered the upload): the window in which an
attacker could still take the name; goal: median <= 1 s while the budget has room.

Then: the service gets SIGTERM and must exit 0 within 30 s, and the store is
opened to check that every accepted event is in the events journal.

Baseline: the goal itself — 500 events/s with p99 <= 50 ms on this 2-core
machine; the ratios printed are measured/500 and p99/50 ms.

Exit code: 0 when every answer was 202, every accepted event is journaled and
the service stopped cleanly (goals met or not: this is a measurement); 1
otherwise; 2 when the service could not be started.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import http.client
import json
import multiprocessing
import os
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from namekeeper.config import ENV_ARTIFACTORY_SECRET, ENV_PUBLIC_TOKEN, ENV_STORE_PASSWORD
from namekeeper.store.sqlite import Store

REPO = Path(__file__).resolve().parent.parent

GOAL_EVENTS_PER_S = 500.0
GOAL_P99_MS = 50.0
GOAL_FLOOD_P99_RATIO = 1.2  # a /healthz flood may move webhook p99 by 20 % at most
FLOOD_ROUNDS = 5  # alone and flooded rounds, alternating
GOAL_PLACEHOLDER_MEDIAN_S = 1.0
WEBHOOK_PATH = "/webhooks/artifactory"
REPO_KEY = "pypi-local"
USER = "bench-user"
STOP_TIMEOUT = 30.0

# The fake public index, run in its own process; stops when stdin closes (or after a cap).
FAKE_SCRIPT = textwrap.dedent("""
    import json, sys, threading
    sys.path.insert(0, sys.argv[1])
    import _fake_public
    from _fake_public import FakePublicIndex, FaultPlan
    _fake_public._Handler.disable_nagle_algorithm = True  # see bench_reserve.py
    fake = FakePublicIndex(new_projects_per_hour=1_000_000).start()
    fake.add_user(sys.argv[2], sys.argv[3])
    if float(sys.argv[5]) > 0:  # every lookup takes as long as a round trip to a real index
        fake.faults = FaultPlan(rate=1.0, kinds=("stall",), stall_seconds=float(sys.argv[5]),
                                paths=("/simple/", "/pypi/"))
    print(json.dumps({"config": fake.config_toml(owners=[sys.argv[2]])}), flush=True)
    closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), closed.set()), daemon=True).start()
    closed.wait(float(sys.argv[4]))
    fake.stop()
""")


class BenchError(Exception):
    """The benchmark cannot run (setup problem); exit 2 with this message."""


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)  # of 202 answers
    statuses: Counter[str] = field(default_factory=Counter)
    accepted_names: set[str] = field(default_factory=set)
    sent: int = 0
    wall_s: float = 0.0
    stopped_by_time: bool = False


def _add_to(total: LoadResult, part: LoadResult) -> None:
    total.latencies_ms += part.latencies_ms
    total.statuses.update(part.statuses)
    total.accepted_names |= part.accepted_names
    total.sent += part.sent
    total.wall_s += part.wall_s
    total.stopped_by_time = total.stopped_by_time or part.stopped_by_time


def webhook(i: int, run_id: str, secret: bytes) -> tuple[str, bytes, str]:
    """(canonical name, raw body, signature) of the ``i``-th distinct deploy."""
    name = f"nkbench-{run_id}-w{i:06d}"
    dist = name.replace("-", "_")
    filename = f"{dist}-1.0-py3-none-any.whl"
    payload = {
        "domain": "artifact",
        "event_type": "deployed",
        "data": {"repo_key": REPO_KEY, "path": f"{name}/1.0/{filename}", "name": filename,
                 "sha256": hashlib.sha256(filename.encode()).hexdigest(), "size": 2841},
        "subscription_key": "bench",
        "jpd_origin": "",
        "source": "jfrog/jfrt@bench",
    }
    body = json.dumps(payload).encode()
    return name, body, hmac.new(secret, body, hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------- processes


def start_fake(token: str, lifetime: float, lookup_latency: float
               ) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", FAKE_SCRIPT, str(REPO / "tests"), USER, token,
                             str(lifetime), str(lookup_latency)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise BenchError("the fake public index did not start")
    return proc, json.loads(line)["config"]


def stop_fake(proc: subprocess.Popen[str]) -> None:
    try:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def write_config(workdir: Path, public_toml: str, *, workers: int, dry_run: bool,
                 store_url: str | None = None) -> Path:
    config = workdir / "namekeeper.toml"
    store = (f'url = "{store_url}"' if store_url
             else f'path = "{(workdir / "state.sqlite3").as_posix()}"')
    config.write_text(public_toml + textwrap.dedent(f"""
        [placeholder]
        organization = "Bench Org"
        contact = "security@bench.invalid"

        [policy]
        dry-run = {"true" if dry_run else "false"}

        [store]
        {store}

        [serve]
        host = "127.0.0.1"
        port = 0
        workers = {workers}

        [artifactory]
        signing = true
        repos = ["{REPO_KEY}"]

        [queue]
        new-projects-per-hour = 1000000
        """), encoding="utf-8")
    return config


def start_service(config: Path, env: dict[str, str], logdir: Path
                  ) -> tuple[subprocess.Popen[bytes], int]:
    """``namekeeper serve`` on port 0; returns once /healthz answers 200."""
    out, err = (logdir / "serve.stdout").open("wb"), (logdir / "serve.stderr").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "namekeeper.cli", "--config", str(config),
                             "serve"], env=env, stdout=out, stderr=err)
    deadline = time.monotonic() + 30
    port = None
    while time.monotonic() < deadline and proc.poll() is None:
        text = (logdir / "serve.stdout").read_text(errors="replace")
        if "serving on http://" in text:
            port = int(text.split("serving on http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
            break
        time.sleep(0.05)
    while port is not None and time.monotonic() < deadline and proc.poll() is None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return proc, port
            conn.close()
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    tail = (logdir / "serve.stderr").read_text(errors="replace")[-1500:]
    raise BenchError(f"namekeeper serve did not become healthy within 30 s:\n{tail}")


def stop_service(proc: subprocess.Popen[bytes]) -> tuple[int | None, float]:
    """SIGTERM; (exit code or None if it had to be killed, seconds to exit)."""
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    try:
        code: int | None = proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    return code, time.perf_counter() - t0


def get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


# --------------------------------------------------------------------------- load


def run_load(port: int | list[int], bodies: list[tuple[str, bytes, str]], *, threads: int,
             max_seconds: float, rate: float) -> LoadResult:
    """Post every body once from ``threads`` keep-alive connections; bounded in time.

    With several ports (replicas), client thread k talks to ``ports[k % len(ports)]``.
    """
    ports = port if isinstance(port, list) else [port]
    result = LoadResult()
    lock = threading.Lock()
    next_index = iter(range(len(bodies)))
    start = time.perf_counter() + 0.05  # every thread starts from the same instant
    deadline = start + max_seconds

    def client(port: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        latencies, statuses, accepted, sent = [], Counter[str](), [], 0
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                break
            scheduled = start + i / rate if rate else None
            now = time.perf_counter()
            if now >= deadline:
                with lock:
                    result.stopped_by_time = True
                break
            if scheduled is not None and scheduled > now:
                time.sleep(scheduled - now)
            name, body, signature = bodies[i]
            t0 = time.perf_counter() if scheduled is None else scheduled
            try:
                conn.request("POST", WEBHOOK_PATH, body=body, headers={
                    "Content-Type": "application/json", "X-JFrog-Event-Auth": signature})
                resp = conn.getresponse()
                resp.read()
                status = str(resp.status)
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            elapsed = (time.perf_counter() - t0) * 1000
            sent += 1
            statuses[status] += 1
            if status == "202":
                latencies.append(elapsed)
                accepted.append(name)
        conn.close()
        with lock:
            result.latencies_ms += latencies
            result.statuses.update(statuses)
            result.accepted_names.update(accepted)
            result.sent += sent

    workers = [threading.Thread(target=client, args=(ports[k % len(ports)],), name=f"load-{k}")
               for k in range(threads)]
    while time.perf_counter() < start:
        pass
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    result.wall_s = time.perf_counter() - start
    return result


def _flood_process(port: int, rate: float, stop: Any, go: Any, out: Any) -> None:
    out.put(dict(flood_healthz(port, rate, stop, go=go)))


def flood_healthz(port: int, rate: float, stop: threading.Event, threads: int = 2,
                  go: Any = None) -> Counter[str]:
    """GET /healthz ``rate`` times a second from ``threads`` keep-alive connections until ``stop``.

    With ``go`` (an event), the flood runs only while it is set.
    """
    statuses: Counter[str] = Counter()
    lock = threading.Lock()

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        interval = threads / rate
        next_at = time.perf_counter() + k * interval / threads
        while not stop.is_set():
            if go is not None and not go.is_set():
                time.sleep(0.01)
                next_at = time.perf_counter() + k * interval / threads
                continue
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            next_at += interval
            try:
                conn.request("GET", "/healthz")
                resp = conn.getresponse()
                resp.read()
                status = str(resp.status)
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            with lock:
                statuses[status] += 1
        conn.close()

    workers = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(threads)]
    for t in workers:
        t.start()
    stop.wait()
    for t in workers:
        t.join(10)
    return statuses


def wait_drained(store_path: Path, timeout: float) -> bool:
    """True once nothing is pending or claimed in the queue (within ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = Store(store_path).queue_counts()
        if counts["pending"] == 0 and counts["claimed"] == 0:
            return True
        time.sleep(0.2)
    return False


def placeholder_latency(port: int, bodies: list[tuple[str, bytes, str]], store_path: Path, *,
                        every: float = 0.5, timeout: float = 60.0) -> tuple[list[float], int]:
    """Seconds from each webhook's 202 to its placeholder being held; and how many never were."""
    answered: dict[str, float] = {}
    for name, body, signature in bodies:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", WEBHOOK_PATH, body=body, headers={
            "Content-Type": "application/json", "X-JFrog-Event-Auth": signature})
        resp = conn.getresponse()
        resp.read()
        if resp.status == 202:
            answered[name] = time.time()
        conn.close()
        time.sleep(every)
    deadline = time.monotonic() + timeout
    held: dict[str, float] = {}
    while time.monotonic() < deadline and len(held) < len(answered):
        store = Store(store_path)
        for name in answered.keys() - held.keys():
            record = store.get(name)
            if record is not None and record.reserved_at is not None:
                held[name] = record.reserved_at.timestamp()
        store.close()
        time.sleep(0.1)
    return sorted(held[n] - answered[n] for n in held), len(answered) - len(held)


def _percentile(sorted_values: list[float], pct: float) -> float:
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return sorted_values[int(rank) - 1]


def journaled_names(store_path: Path) -> set[str]:
    """Names of every Artifactory event in the store's journal."""
    Store(store_path).close()  # opens it the way the service does (schema, WAL)
    with sqlite3.connect(f"file:{store_path}?mode=ro", uri=True) as db:
        return {row[0] for row in db.execute("SELECT name FROM events WHERE source = ?",
                                             ("artifactory",))}


def journaled_in_database(url: str, password: str | None) -> tuple[set[str], dict[str, int]]:
    """(names of every Artifactory event in the shared database's journal, queue counts)."""
    from namekeeper.store.postgres import PostgresStore

    store = PostgresStore(url, password=password, create_schema=False)
    try:
        events = store.snapshot().tables["events"]  # (key, name, source, idx, received_at)
        return {row[1] for row in events if row[2] == "artifactory"}, store.queue_counts()
    finally:
        store.close()


def throwaway_postgres(cleanup: contextlib.ExitStack, env: dict[str, str], log: Any
                       ) -> Callable[[], str]:
    """Start a PostgreSQL cluster for this run (stopped by ``cleanup``); returns new_database.

    The tests' own helper (tests/_postgres.py): initdb + pg_ctl in a temporary
    directory, as the unprivileged ``postgres`` account when run as root.  Its
    password goes into ``env`` as the services' store password.
    """
    sys.path.insert(0, str(REPO / "tests"))
    from _postgres import PostgresError, server_binaries, start_postgres

    if server_binaries() is None:
        raise BenchError("--postgres needs the PostgreSQL server binaries (initdb, pg_ctl; "
                         "Debian: apt-get install postgresql)")
    workdir = Path(tempfile.mkdtemp(prefix="nk-bench-pg-"))
    cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
    try:
        server = start_postgres(workdir)
    except PostgresError as exc:
        raise BenchError(str(exc)) from None
    cleanup.callback(server.stop, "fast")
    env[ENV_STORE_PASSWORD] = server.password
    log(f"PostgreSQL {server.bindir.parent.name} on 127.0.0.1:{server.port} (throw-away)")
    return server.new_database


#: The goals of several machines (issue 12), measured beside SQLite in the same run.
GOAL_PG_P99_OVER_SQLITE = 1.5
GOAL_THREE_OVER_ONE = 1.0


def compare(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    sqlite, one, three = (reports["sqlite x1"], reports["postgresql x1"],
                          reports["postgresql x3"])

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a is not None and b else None

    p99_ratio = ratio(one["p99_ms"], sqlite["p99_ms"])
    three_ratio = ratio(three["events_per_s"], one["events_per_s"])
    goals = {
        f"postgresql x1 >= {GOAL_EVENTS_PER_S:.0f} events/s":
            one["events_per_s"] >= GOAL_EVENTS_PER_S,
        f"postgresql x1 p99 <= {GOAL_PG_P99_OVER_SQLITE}x SQLite's":
            p99_ratio is not None and p99_ratio <= GOAL_PG_P99_OVER_SQLITE,
        "postgresql x3 together no slower than x1":
            three_ratio is not None and three_ratio >= GOAL_THREE_OVER_ONE,
    }
    lines = [f"{label:>15}: {r['events_per_s']:>7} events/s, p50 {r['p50_ms']} ms, "
             f"p99 {r['p99_ms']} ms" for label, r in reports.items()]
    lines += [f"postgresql x1 / SQLite: events/s {ratio(one['events_per_s'], sqlite['events_per_s'])}"
              f"x, p99 {p99_ratio}x;  postgresql x3 / x1: events/s {three_ratio}x"]
    lines += [f"  goal {goal}: {'met' if met else 'NOT met'}" for goal, met in goals.items()]
    return {"p99_pg1_over_sqlite": p99_ratio, "events_pg3_over_pg1": three_ratio,
            "goals": goals, "lines": lines}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000, help="events to send (default 5000)")
    parser.add_argument("--threads", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="time cap for the load (default 60)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="pace the load to this many events/s (default: unpaced)")
    parser.add_argument("--warmup", type=int, default=100,
                        help="events sent before the measurement (not counted in figures, "
                             "checked in the journal; default 100)")
    parser.add_argument("--workers", type=int, default=2, help="[serve] workers (default 2)")
    parser.add_argument("--upload", action="store_true",
                        help="let the workers upload placeholders to the fake (default dry run)")
    parser.add_argument("--index-latency-ms", type=float, default=50.0,
                        help="how long the fake public index takes to answer a lookup, like a "
                             "real one far away (default 50; 0 = instant, so the workers hammer "
                             "the store as fast as they can)")
    parser.add_argument("--store", metavar="URL",
                        help="also measure on this shared database (postgresql://user@host/db, "
                             f"password from {ENV_STORE_PASSWORD}) with one and three replicas, "
                             "beside SQLite in the same run")
    parser.add_argument("--postgres", action="store_true",
                        help="like --store, on a throw-away PostgreSQL server started for the run "
                             "(initdb + pg_ctl on 127.0.0.1; each scenario gets a new database)")
    parser.add_argument("--healthz-flood", type=float, default=0.0, metavar="N",
                        help="measure the second half of the events while /healthz is asked "
                             "N times a second (default 0: no flood)")
    parser.add_argument("--latency-names", type=int, default=20,
                        help="with --upload: webhooks timed from 202 to placeholder (default 20)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    if not (1 <= args.count <= 200_000 and 1 <= args.threads <= 64
            and 0 < args.max_seconds <= 600 and 0 <= args.warmup <= 10_000
            and 0 <= args.index_latency_ms <= 10_000):
        parser.error("--count 1..200000, --threads 1..64, --max-seconds up to 600, "
                     "--warmup up to 10000, --index-latency-ms up to 10000")
    if args.store and args.postgres:
        parser.error("--store and --postgres exclude each other")
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))

    secret = secrets.token_hex(32)
    token = "bench-" + secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NAMEKEEPER_") or k == ENV_STORE_PASSWORD}
    env.update({ENV_ARTIFACTORY_SECRET: secret, ENV_PUBLIC_TOKEN: token})
    base: dict[str, Any] = {
        "machine_cores": os.cpu_count(), "python": sys.version.split()[0],
        "threads": args.threads, "rate_target": args.rate or None,
        "workers": args.workers, "worker_mode": "upload" if args.upload else "dry-run",
        "index_latency_ms": args.index_latency_ms,
    }
    # SQLite alone; with a database, SQLite (the baseline) then the database with 1 and 3 replicas.
    plan = [("sqlite", 1)]
    if args.store or args.postgres:
        plan += [("postgresql", 1), ("postgresql", 3)]
    with contextlib.ExitStack() as cleanup:
        try:
            new_database = (throwaway_postgres(cleanup, env, log) if args.postgres
                            else lambda: args.store)
        except BenchError as exc:
            print(f"bench_webhooks: cannot run: {exc}", file=sys.stderr)
            return 2
        fake, public_toml = start_fake(token, lifetime=len(plan) * (2 * args.max_seconds + 300),
                                       lookup_latency=args.index_latency_ms / 1000)
        cleanup.callback(stop_fake, fake)
        reports: dict[str, dict[str, Any]] = {}
        for backend, replicas in plan:
            label = f"{backend} x{replicas}"
            log(f"--- {label}")
            try:
                store_url = new_database() if backend == "postgresql" else None
                reports[label] = {**base, "store": backend, "replicas": replicas,
                                  **scenario(args, public_toml, env, secret, log,
                                             store_url=store_url, replicas=replicas)}
            except BenchError as exc:
                print(f"bench_webhooks: cannot run: {exc}", file=sys.stderr)
                return 2
    if len(plan) == 1:
        report = reports["sqlite x1"]
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print_report(report)
        return 0 if all(report["correct"].values()) else 1
    comparison = compare(reports)
    if args.json:
        print(json.dumps({"scenarios": reports, "comparison": comparison}, indent=2))
    else:
        for report in reports.values():
            print(f"\n=== {report['store']}, {report['replicas']} replica(s)")
            print_report(report)
        print("\n=== the shared database beside SQLite (same run, same machine)")
        for line in comparison["lines"]:
            print(line)
    return 0 if all(all(r["correct"].values()) for r in reports.values()) else 1


def scenario(args: argparse.Namespace, public_toml: str, env: dict[str, str], secret: str,
             log: Any, *, store_url: str | None, replicas: int) -> dict[str, Any]:
    """One measurement: ``replicas`` services on one store, loaded, stopped, journal checked."""
    run_id = secrets.token_hex(3)
    bodies = [webhook(i, run_id, secret.encode()) for i in range(args.warmup + args.count)]
    warmup, measured = bodies[:args.warmup], bodies[args.warmup:]
    report: dict[str, Any] = {}
    services: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="nk-bench-webhooks-") as tmp:
        ports = []
        try:
            for r in range(replicas):
                workdir = Path(tmp) / f"r{r}"
                workdir.mkdir()
                config = write_config(workdir, public_toml, workers=args.workers,
                                      dry_run=not args.upload, store_url=store_url)
                proc, port = start_service(config, env, workdir)
                services.append(proc)
                ports.append(port)
            log(f"namekeeper serve x{replicas} on 127.0.0.1:{','.join(map(str, ports))}; "
                f"{len(warmup)} warm-up events ...")
            warm = run_load(ports, warmup, threads=args.threads, max_seconds=args.max_seconds,
                            rate=0.0) if warmup else LoadResult()
            store_file = Path(tmp) / "r0" / "state.sqlite3"
            if args.upload and args.latency_names and store_url is None:
                wait_drained(store_file, 120)
                log(f"{args.latency_names} webhooks timed from 202 to placeholder ...")
                spans, missing = placeholder_latency(
                    ports[0], [webhook(i, run_id + "l", secret.encode())
                               for i in range(args.latency_names)], store_file)
                report["placeholder_latency_s"] = {
                    "median": round(statistics.median(spans), 3) if spans else None,
                    "p90": round(_percentile(spans, 90), 3) if spans else None,
                    "max": round(spans[-1], 3) if spans else None,
                    "held": len(spans), "not_held_in_60_s": missing}
            if args.healthz_flood:
                # Alone and flooded rounds alternate, so that whatever drifts during a run (the
                # journal's size, checkpoints) weighs on both sides alike; each side's p99 is taken
                # over all its rounds. The flood comes from its own process, as a load balancer's
                # checks would: in this process its threads would slow the webhook clients (the GIL).
                rounds = FLOOD_ROUNDS
                log(f"{len(measured)} events in {rounds} alone and {rounds} flooded rounds "
                    f"(/healthz {args.healthz_flood:g}/s), from {args.threads} threads ...")
                flood_statuses: Counter[str] = Counter()
                spawn = multiprocessing.get_context("spawn")
                stop_flood, flooding = spawn.Event(), spawn.Event()
                flood_out: Any = spawn.Queue()
                flooder = spawn.Process(target=_flood_process, daemon=True,
                                        args=(ports[0], args.healthz_flood, stop_flood, flooding,
                                              flood_out))
                flooder.start()
                time.sleep(1.5)  # the process has started before the first round
                alone, load = LoadResult(), LoadResult()
                size = -(-len(measured) // (2 * rounds))
                chunks = [measured[i:i + size] for i in range(0, len(measured), size)]
                for k, chunk in enumerate(chunks):
                    flooded = k % 2 == 1
                    if flooded:
                        flooding.set()
                        time.sleep(0.2)
                    _add_to(load if flooded else alone,
                            run_load(ports, chunk, threads=args.threads,
                                     max_seconds=args.max_seconds / len(chunks), rate=args.rate))
                    flooding.clear()
                stop_flood.set()
                flood_statuses.update(flood_out.get(timeout=30))
                flooder.join(15)
                a_lat = sorted(alone.latencies_ms)
                report["healthz_flood"] = {
                    "rate": args.healthz_flood, "healthz_answers": dict(flood_statuses),
                    "p99_ms_alone": round(_percentile(a_lat, 99), 2) if a_lat else None,
                    "events_per_s_alone": round(len(alone.accepted_names) / alone.wall_s, 1)
                    if alone.wall_s else None}
                warm.accepted_names |= alone.accepted_names  # the journal check covers them
                warm.sent += alone.sent
                warm.statuses.update(alone.statuses)
            else:
                log(f"{len(measured)} events from {args.threads} threads"
                    f"{f' at {args.rate:g}/s' if args.rate else ''} (cap {args.max_seconds:g} s)"
                    " ...")
                load = run_load(ports, measured, threads=args.threads,
                                max_seconds=args.max_seconds, rate=args.rate)
            _, metrics = get(ports[0], "/metrics")
            stops = [stop_service(proc) for proc in services]
            services = []
            codes = [code for code, _ in stops]
            stop_s = max(seconds for _, seconds in stops)
            if store_url is None:
                journal = journaled_names(Path(tmp) / "r0" / "state.sqlite3")
                queue = Store(Path(tmp) / "r0" / "state.sqlite3").queue_counts()
            else:
                journal, queue = journaled_in_database(store_url, env.get(ENV_STORE_PASSWORD))
            report["service_errors_logged"] = sum(
                1 for r in range(replicas)
                for line in (Path(tmp) / f"r{r}" / "serve.stderr").read_text(
                    errors="replace").splitlines() if " ERROR " in line)
        finally:
            for proc in services:
                proc.kill()
                proc.wait()
    code = 0 if all(c == 0 for c in codes) else (codes[0] if len(codes) == 1 else None)
    lat = sorted(load.latencies_ms)
    accepted = len(load.accepted_names)
    events_s = accepted / load.wall_s if load.wall_s else 0.0
    all_accepted = load.accepted_names | warm.accepted_names
    lost = sorted(all_accepted - journal)
    p99 = _percentile(lat, 99) if lat else None
    report.update({
        "sent": load.sent,
        "accepted": accepted,
        "answers": dict(load.statuses),
        "stopped_by_time_cap": load.stopped_by_time,
        "wall_s": round(load.wall_s, 2),
        "events_per_s": round(events_s, 1),
        "p50_ms": round(_percentile(lat, 50), 2) if lat else None,
        "p90_ms": round(_percentile(lat, 90), 2) if lat else None,
        "p99_ms": round(p99, 2) if p99 is not None else None,
        "max_ms": round(lat[-1], 2) if lat else None,
        "mean_ms": round(statistics.fmean(lat), 2) if lat else None,
        "ratio_events_per_s_over_goal": round(events_s / GOAL_EVENTS_PER_S, 2),
        "ratio_p99_over_goal": round(p99 / GOAL_P99_MS, 2) if p99 is not None else None,
        "warmup_answers": dict(warm.statuses),
        "journal": {"accepted_including_warmup": len(all_accepted),
                    "journaled": len(journal & all_accepted), "lost": lost[:20],
                    "lost_count": len(lost)},
        "queue_after_stop": queue,
        "metrics_events": [line for line in metrics.splitlines()
                           if line.startswith("namekeeper_events_total")],
        "shutdown": {"exit_code": code, "seconds": round(stop_s, 2)},
    })
    # Paced, the throughput can only approach the offered rate (the last answer comes
    # after the last scheduled send): keeping pace within 1% with >= 500/s offered counts.
    throughput_ok = (events_s >= GOAL_EVENTS_PER_S if not args.rate else
                     args.rate >= GOAL_EVENTS_PER_S and events_s >= 0.99 * args.rate)
    report["goals"] = {
        f">= {GOAL_EVENTS_PER_S:.0f} events/s" + (" (kept pace with the offered rate)"
                                                   if args.rate else ""): throughput_ok,
        f"p99 <= {GOAL_P99_MS:.0f} ms": p99 is not None and p99 <= GOAL_P99_MS,
    }
    flood = report.get("healthz_flood")
    if flood and flood["p99_ms_alone"] and p99 is not None:
        flood["p99_ms_flooded"] = round(p99, 2)
        flood["ratio_p99_flooded_over_alone"] = round(p99 / flood["p99_ms_alone"], 2)
        report["goals"][f"/healthz flood moves p99 by <= {GOAL_FLOOD_P99_RATIO - 1:.0%}"] = (
            p99 <= GOAL_FLOOD_P99_RATIO * flood["p99_ms_alone"])
    latency = report.get("placeholder_latency_s")
    if latency:
        report["goals"][f"202 -> placeholder median <= {GOAL_PLACEHOLDER_MEDIAN_S:g} s"] = (
            latency["median"] is not None and latency["median"] <= GOAL_PLACEHOLDER_MEDIAN_S)
    non_202 = (load.sent - accepted) + (warm.sent - len(warm.accepted_names))
    report["correct"] = {"every_answer_202": non_202 == 0, "every_accepted_event_journaled":
                         not lost, "clean_shutdown": code == 0}
    return report


def print_report(r: dict[str, Any]) -> None:
    mode = f"paced at {r['rate_target']:g}/s" if r["rate_target"] else "unpaced (closed loop)"
    print(f"\nArtifactory webhook intake — {r['machine_cores']} cores, Python {r['python']}, "
          f"{r['threads']} client threads, {mode}, {r['workers']} worker(s) in {r['worker_mode']} "
          f"(lookups take {r['index_latency_ms']:g} ms)")
    print(f"sent {r['sent']}, accepted (202) {r['accepted']} in {r['wall_s']} s"
          f"{' (stopped by the time cap)' if r['stopped_by_time_cap'] else ''}; answers "
          f"{r['answers']}")
    print(f"sustained: {r['events_per_s']} events/s  (goal {GOAL_EVENTS_PER_S:.0f}: ratio "
          f"{r['ratio_events_per_s_over_goal']}x)")
    print(f"latency:   p50 {r['p50_ms']} ms, p90 {r['p90_ms']} ms, p99 {r['p99_ms']} ms, "
          f"max {r['max_ms']} ms  (goal p99 <= {GOAL_P99_MS:.0f} ms: ratio "
          f"{r['ratio_p99_over_goal']})")
    flood = r.get("healthz_flood")
    if flood:
        print(f"/healthz flood of {flood['rate']:g}/s (answers {flood['healthz_answers']}): "
              f"webhook p99 {flood.get('p99_ms_alone')} ms alone, {flood.get('p99_ms_flooded')} ms "
              f"flooded: ratio {flood.get('ratio_p99_flooded_over_alone')} (goal <= "
              f"{GOAL_FLOOD_P99_RATIO}); {flood['events_per_s_alone']} events/s alone")
    latency = r.get("placeholder_latency_s")
    if latency:
        print(f"202 -> placeholder on the index: median {latency['median']} s, p90 "
              f"{latency['p90']} s, max {latency['max']} s ({latency['held']} held, "
              f"{latency['not_held_in_60_s']} not within 60 s; goal median <= "
              f"{GOAL_PLACEHOLDER_MEDIAN_S:g} s)")
    for goal, met in r["goals"].items():
        print(f"  goal {goal}: {'met' if met else 'NOT met'}")
    j = r["journal"]
    print(f"durability: {j['journaled']}/{j['accepted_including_warmup']} accepted events in the "
          f"store's journal (warm-up included){'' if not j['lost_count'] else '; LOST: ' + str(j['lost'])}")
    print(f"queue after stop: {r['queue_after_stop']} (workers drained some meanwhile)")
    sd = r["shutdown"]
    print(f"SIGTERM: exit {sd['exit_code']} after {sd['seconds']} s; errors in the service log: "
          f"{r['service_errors_logged']}")
    print("correct: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in r["correct"].items()),
          flush=True)


if __name__ == "__main__":
    sys.exit(main())
