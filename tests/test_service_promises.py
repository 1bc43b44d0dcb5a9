"""The service's promises: the budget is never exceeded, no name is silently abandoned.

One test per defect found by trying `serve` as an attacker and an operator would
(issue 7): a huge Retry-After, uploads that time out but succeed, a failing
placeholder build, an unreachable public index, two processes on one store, a
store write failure during in-flight uploads.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from _doubles import Clock
from _fake_public import FakePublicIndex, FaultPlan
from _servers import Service, payload, wait_for
from namekeeper.model import Action, NameEvent, Outcome
from namekeeper.public.simple import SimplePublicIndex
from namekeeper.sources.interface import EventSink, EventSource
from namekeeper.store.interface import BUDGET_WINDOW
from namekeeper.worker import WorkerPool
from test_worker import make_pool

pytestmark = pytest.mark.slow  # the fake public index and `serve` subprocesses


class Alerts:
    """Stands in for the dispatcher: keeps every outcome and condition it is handed."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.conditions: list[tuple[str, str, frozenset[str]]] = []

    def dispatch(self, outcome: Outcome) -> dict[str, bool]:
        self.outcomes.append(outcome)
        return {}

    def dispatch_condition(self, key: str, text: str, tags: frozenset[str], *,
                           since: float) -> dict[str, bool]:
        self.conditions.append((key, text, tags))
        return {}

    def failed(self, name: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.name == name and o.action is Action.FAILED]


def accept(pool: WorkerPool, *names: str) -> None:
    for name in names:
        pool.store.accept(NameEvent(name=name, display_name=name, source="t", index="x", key=name))


def drain(pool: WorkerPool, clock: Clock, *, until: float, steps: int = 400) -> None:
    """Run the queue, jumping the clock to the next ready item, up to ``until``."""
    for _ in range(steps):
        if pool.run_once():
            continue
        ready = pool.store.next_ready_at()
        if ready is None or ready > until:
            return
        clock.t = max(clock.t, ready)


def watched_pool(tmp_path: Path, fake: FakePublicIndex, monkeypatch: pytest.MonkeyPatch,
                 clock: Clock, extra: str = "") -> tuple[WorkerPool, Alerts]:
    pool = make_pool(tmp_path, fake, monkeypatch, clock, extra)
    alerts = Alerts()
    pool.keeper.alerts = alerts  # type: ignore[assignment]
    # No urllib3 retries with their real-time sleeps: the pool's own backoff is under test.
    pool.keeper.public = SimplePublicIndex(pool.keeper.config.public, retries=0)
    return pool, alerts


def test_a_huge_retry_after_pauses_at_most_max_pause_and_alerts_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    with FakePublicIndex(clock=clock) as fake:
        pool, alerts = watched_pool(tmp_path, fake, monkeypatch, clock,
                                    '[queue]\nmax-pause = "1h"\n')
        fake.faults = FaultPlan(rate=1.0, kinds=("429",), paths=("/legacy/",),
                                retry_after="999999999")
        accept(pool, "acme-a", "acme-b")
        start = clock.t
        drain(pool, clock, until=start + 10)  # both names meet the 429
        paused_until = pool.store.budget_paused_until()
        assert paused_until is not None and paused_until <= start + 3600 + 10
        [condition] = pool.store.conditions()
        assert condition.key == "budget-paused" and "capped" in condition.text
        assert [c[0] for c in alerts.conditions] == ["budget-paused"]  # once, not per name
        assert "paused" in alerts.conditions[0][2]
        fake.faults = None
        drain(pool, clock, until=start + 2 * 3600)
        assert fake.uploads["acme-a"] == fake.uploads["acme-b"] == 1
        assert pool.store.conditions() == []  # spending again: the pause is over
        assert [i["state"] for i in pool.store.queue_items()] == ["done", "done"]


def test_uploads_that_time_out_but_succeed_never_exceed_the_budget(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    with FakePublicIndex(clock=clock, new_projects_per_hour=1000) as fake:
        fake.add_user("acme-security", "pypi-worker-test-token")
        pool, _alerts = watched_pool(tmp_path, fake, monkeypatch, clock,
                                     '[queue]\nnew-projects-per-hour = 3\nconfirm-after = "1s"\n')
        pool.keeper.config = _with_timeout(pool.keeper.config, 1.0)
        pool.keeper.backend = _backend(pool)
        fake.faults = FaultPlan(rate=1.0, kinds=("stall",), paths=("/legacy/",), stall_seconds=2)
        names = [f"acme-slow-{i}" for i in range(10)]
        accept(pool, *names)
        start = clock.t
        drain(pool, clock, until=start + BUDGET_WINDOW - 60)
        created = [n for n in names if fake.project(n) is not None]
        assert 1 <= len(created) <= 3  # counted on the index itself
        for name in created:  # each timed-out upload is confirmed by a lookup
            assert pool.store.get(name).reserved
        assert len([t for t in pool.store.budget_spent_at() if t >= start]) <= 3


def test_a_failing_placeholder_build_spends_no_budget_and_is_alerted(
        tmp_path: Path, fake_public: FakePublicIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    pool, alerts = watched_pool(tmp_path, fake_public, monkeypatch, clock,
                                "[queue]\nnew-projects-per-hour = 3\nmax-attempts = 5\n")
    real = pool.keeper.builder

    class Broken:
        def build(self, name: str, display: str, out: Path) -> list[Path]:
            if name == "acme-broken":
                raise RuntimeError("build_sdist exploded")
            return real.build(name, display, out)  # type: ignore[union-attr]

    pool.keeper.builder = Broken()  # type: ignore[assignment]
    accept(pool, "acme-broken")
    drain(pool, clock, until=clock.t + 3000)
    assert pool.store.queue_items("failed")[0]["name"] == "acme-broken"
    assert pool.store.budget_left(3) == 3
    [failed] = alerts.failed("acme-broken")
    assert "build_sdist exploded" in failed.message
    accept(pool, "acme-a", "acme-b", "acme-c")
    drain(pool, clock, until=clock.t + 60)
    assert all(fake_public.uploads[n] == 1 for n in ("acme-a", "acme-b", "acme-c"))


def test_an_unreachable_index_is_one_condition_and_names_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    fake = FakePublicIndex(clock=clock).start()
    try:
        pool, alerts = watched_pool(tmp_path, fake, monkeypatch, clock,
                                    '[queue]\nmax-attempts = 3\noutage-after = "5m"\n'
                                    'backoff-max = 60\n')
        fake.stop()  # the port is kept: nothing listens there now
        names = [f"acme-out-{i}" for i in range(5)]
        accept(pool, *names)
        start = clock.t
        drain(pool, clock, until=start + 3 * 3600)  # hours of outage
        assert pool.store.queue_items("failed") == []  # nobody's fault: nothing failed
        assert [i["attempts"] for i in pool.store.queue_items()] == [0] * 5
        assert [c[0] for c in alerts.conditions] == ["public-index-unreachable"]
        assert [c.key for c in pool.store.conditions()] == ["public-index-unreachable"]
        assert not [o for o in alerts.outcomes if o.action is Action.FAILED]

        fake.start()
        # One name's lookups keep failing while the index answers others: that one is at fault.
        fake.faults = FaultPlan(rate=1.0, kinds=("500",), paths=("/simple/acme-doomed/",))
        accept(pool, "acme-doomed")
        drain(pool, clock, until=clock.t + 3 * 3600)
        assert all(fake.uploads[n] == 1 for n in names)
        assert pool.store.conditions() == []
        assert [i["name"] for i in pool.store.queue_items("failed")] == ["acme-doomed"]
        assert len(alerts.failed("acme-doomed")) == 1
    finally:
        fake.stop()


def test_a_store_write_failure_during_uploads_is_reclaimed_after_the_lease(
        tmp_path: Path, fake_public: FakePublicIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = make_pool(tmp_path, fake_public, monkeypatch, time.time,  # type: ignore[arg-type]
                     '[queue]\nlease = "1s"\n')
    pool.threads_wanted = 2
    real_complete = pool.store.complete
    failures = {"left": 2}
    lock = threading.Lock()

    def disk_full(name: str, claim: str, **kw: Any) -> bool:
        with lock:
            if failures["left"]:
                failures["left"] -= 1
                raise sqlite3.OperationalError("database or disk is full")
        return real_complete(name, claim, **kw)

    monkeypatch.setattr(pool.store, "complete", disk_full)
    accept(pool, "acme-a", "acme-b")
    pool.start()
    try:
        def settled() -> bool:
            return [i["state"] for i in pool.store.queue_items()] == ["done", "done"]

        wait_for(settled, 60, "the stuck items to be reclaimed and settled")
    finally:
        pool.shutdown(5)
    assert failures["left"] == 0
    assert fake_public.uploads["acme-a"] == fake_public.uploads["acme-b"] == 1
    assert pool.store.get("acme-a").reserved and pool.store.get("acme-b").reserved


def test_two_serve_processes_on_one_store_never_upload_a_name_twice(tmp_path: Path) -> None:
    with FakePublicIndex(new_projects_per_hour=1000) as fake:
        from _cli import TOKEN

        fake.add_user("acme-security", TOKEN)
        fake.faults = FaultPlan(rate=1.0, kinds=("stall",), paths=("/legacy/",),
                                stall_seconds=2.0)
        first = Service(tmp_path, fake.config_toml(),
                        "[queue]\nnew-projects-per-hour = 1000\n").start()
        second_dir = tmp_path / "second"
        second_dir.mkdir()
        second = Service(second_dir, fake.config_toml(), "[queue]\nnew-projects-per-hour = 1000\n")
        # The second process shares the first one's store file.
        second.config.write_text(second.config.read_text().replace(
            'path = "state.sqlite3"', f'path = "{first.store_path}"'))
        names = [f"acme-twice-{i}" for i in range(6)]
        try:
            for name in names:
                assert first.post(payload(name)).status_code == 202
            wait_for(lambda: sum(fake.attempts.values()) >= 1, 30, "the first uploads to start")
            second.start()  # a rolling restart: both run for a while
            wait_for(lambda: all(fake.uploads[n] == 1 for n in names), 120, "every name reserved")
        finally:
            first.stop()
            if second.proc is not None:
                second.stop()
        assert {n: fake.attempts[n] for n in names} == dict.fromkeys(names, 1)
        from namekeeper.store.sqlite import Store

        store = Store(first.store_path)
        assert len(store.budget_spent_at()) == len(names)
        assert store.queue_counts()["claimed"] == 0


def _with_timeout(config: Any, seconds: float) -> Any:
    from dataclasses import replace

    return replace(config, public=replace(config.public, timeout=seconds))


def _backend(pool: WorkerPool) -> Any:
    from namekeeper.reserve.twine import TwineReservationBackend

    return TwineReservationBackend(pool.keeper.config.public, config_file=None, use_keyring=False)


def test_an_outage_raised_before_a_restart_is_cleared_by_the_first_answer_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The operator restarts serve during an outage; the index comes back later.
    clock = Clock()
    with FakePublicIndex(clock=clock) as fake:
        pool, alerts = watched_pool(tmp_path, fake, monkeypatch, clock,
                                    '[queue]\noutage-after = "5m"\nbackoff-max = 60\n')
        fake.stop()
        accept(pool, "acme-a")
        drain(pool, clock, until=clock.t + 3600)
        assert [c.key for c in pool.store.conditions()] == ["public-index-unreachable"]
        restarted = WorkerPool(pool.keeper, pool.store, pool.queue, threads=1, clock=clock)
        fake.start()
        accept(restarted, "acme-b")
        drain(restarted, clock, until=clock.t + 3600)
        assert fake.uploads["acme-a"] == fake.uploads["acme-b"] == 1
        assert pool.store.conditions() == []  # /healthz green again
        before = len(alerts.conditions)
        fake.stop()  # a later outage is a new one, and alerted
        accept(restarted, "acme-c")
        drain(restarted, clock, until=clock.t + 3600)
        assert len(alerts.conditions) == before + 1


def test_names_that_end_failed_turn_healthz_red_and_say_which(
        tmp_path: Path, fake_public: FakePublicIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    from namekeeper.health import Health

    clock = Clock()
    pool, alerts = watched_pool(tmp_path, fake_public, monkeypatch, clock)
    for name in ("acme-a", "acme-b"):  # removed, their file names used for ever: refused
        fake_public.add_project(name, owners=["acme-security"], versions=["0.0.0"])
        fake_public.remove_project(name)
    accept(pool, "acme-a", "acme-b")
    drain(pool, clock, until=clock.t + 3600)
    assert {o.name for o in alerts.outcomes if o.action is Action.FAILED} == {"acme-a", "acme-b"}
    health = Health(pool.keeper.config, pool.store, pool, [], [])
    reasons = health.store_answer().reasons
    assert [r for r in reasons if r.startswith("2 name(s) ended FAILED") and "acme-a, acme-b" in r]
    # ...and the queue (`status`, /metrics) counts them as failed, not done.
    failed = pool.store.queue_items("failed")
    assert [i["name"] for i in failed] == ["acme-a", "acme-b"]
    assert all("400" in i["last_error"] for i in failed), failed


class _StuckRound(EventSource):
    """A source whose round in hand does not end when the service stops (a slow index)."""

    name = "stuck-round"

    def __init__(self) -> None:
        self.release = threading.Event()

    def run(self, sink: EventSink, stop: threading.Event) -> None:
        self.release.wait(60)


def test_a_stop_that_cannot_wait_ends_by_one_deadline_says_why_and_the_next_start_resumes(
        tmp_path: Path, fake_public: FakePublicIndex, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from namekeeper import config as cfg
    from namekeeper.server import Service as InProcess

    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", "pypi-stop-token")
    fake_public.add_user("acme-security", "pypi-stop-token")
    path = tmp_path / "nk.toml"
    path.write_text(fake_public.config_toml(owners=["acme-security"])
                    + f'[store]\npath = "{(tmp_path / "s.sqlite3").as_posix()}"\n')
    service = InProcess(cfg.load(path))
    stuck = _StuckRound()
    service.sources.append(stuck)
    in_upload, cut_off = threading.Event(), threading.Event()

    def upload_cut_off(name: str, files: Any) -> Any:
        in_upload.set()
        cut_off.wait(60)
        raise ConnectionError("the process ended mid-upload")

    monkeypatch.setattr(service.keeper.backend, "upload", upload_cut_off)
    service.start()
    joins: list[tuple[str, float | None]] = []
    join = threading.Thread.join
    try:
        service.sink.accept(NameEvent(name="acme-cut", display_name="acme-cut", source="t",
                                      index="x", key="cut"))
        assert in_upload.wait(30)

        def recorded(thread: threading.Thread, timeout: float | None = None) -> None:
            joins.append((thread.name, timeout))
            join(thread, timeout)

        monkeypatch.setattr(threading.Thread, "join", recorded)
        with caplog.at_level(logging.WARNING, logger="namekeeper"):
            still = service.shutdown(1.0)
        monkeypatch.setattr(threading.Thread, "join", join)
    finally:
        cut_off.set()
        stuck.release.set()
    # One deadline for every join: once the stuck worker has used it up, no loop waits.
    assert joins and all(timeout is not None and timeout <= 1.0 for _, timeout in joins), joins
    last_worker = max(i for i, (name, _) in enumerate(joins) if name.startswith("namekeeper-worker"))
    assert all(timeout is not None and timeout < 0.5 for _, timeout in joins[last_worker + 1:]), joins
    # The operator reads why the stop did not wait, and what becomes of the work.
    assert "namekeeper-source-stuck-round" in still
    [warning] = [r.getMessage() for r in caplog.records if "still running" in r.getMessage()]
    assert "namekeeper-source-stuck-round" in warning and "1 queue worker(s)" in warning
    assert "queued again" in warning
    wait_for(lambda: service.workers.alive_count() == 0, 30, "the cut-off worker to end")
    service.store.close()
    # Nothing accepted is lost: the next start reserves the name, with one upload in all.
    restarted = InProcess(cfg.load(path))
    restarted.start()
    try:
        def reserved() -> bool:
            record = restarted.store.get("acme-cut")
            return record is not None and record.reserved

        wait_for(reserved, 60, "the next start to reserve the cut-off name")
    finally:
        assert restarted.shutdown(10) == []
        restarted.store.close()
    assert fake_public.uploads["acme-cut"] == 1
