"""Queue workers: the budget of new public projects is spent fully and never exceeded, and
a name is in one worker's hands at a time."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from _doubles import Clock
from _fake_public import FakePublicIndex
from _servers import wait_for
from namekeeper import config as cfg
from namekeeper.app import build_keeper
from namekeeper.model import Action, NameEvent
from namekeeper.store.interface import BUDGET_WINDOW
from namekeeper.store.sqlite import Store
from namekeeper.worker import WorkerPool

TOKEN = "pypi-worker-test-token"


def make_pool(tmp_path: Path, fake: FakePublicIndex, monkeypatch: pytest.MonkeyPatch,
              clock: Clock, extra: str = "") -> WorkerPool:
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", TOKEN)
    fake.add_user("acme-security", TOKEN)
    path = tmp_path / "nk.toml"
    path.write_text(fake.config_toml(owners=["acme-security"]) + extra)
    config = cfg.load(path)
    store = Store(tmp_path / "s.sqlite3", clock=clock)
    keeper, _ = build_keeper(config, with_notifiers=False, store=store, for_queue=True)
    return WorkerPool(keeper, store, config.queue, threads=1, clock=clock)


def test_budget_is_spent_fully_and_never_exceeded(tmp_path: Path, fake_public: FakePublicIndex,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    budget = 3
    pool = make_pool(tmp_path, fake_public, monkeypatch, clock,
                     f"[queue]\nnew-projects-per-hour = {budget}\n")
    names = [f"acme-pkg-{i}" for i in range(8)]
    for name in names:
        pool.store.accept(NameEvent(name=name, display_name=name, source="test", index="x",
                                    key=name))
    upload_times: list[float] = []
    for _ in range(200):  # bounded: each step either uploads, waits for budget, or ends
        before = sum(fake_public.uploads.values())
        if not pool.run_once():
            ready = pool.store.next_ready_at()
            if ready is None:
                break
            clock.t = max(clock.t, ready)  # jump straight to the moment work may go on
            continue
        if sum(fake_public.uploads.values()) > before:
            upload_times.append(clock.t)
    assert sorted(fake_public.uploads) == sorted(names)
    assert all(n == 1 for n in fake_public.uploads.values())
    # Never more than `budget` uploads in any window of an hour...
    for i, start in enumerate(upload_times):
        assert sum(1 for t in upload_times[i:] if t < start + BUDGET_WINDOW) <= budget
    # ...and no idle window: each upload beyond the budget happens as soon as a slot frees.
    for k in range(budget, len(upload_times)):
        assert upload_times[k] == pytest.approx(upload_times[k - budget] + BUDGET_WINDOW, abs=1)


def test_a_rate_limit_answer_pauses_spending(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    with FakePublicIndex(new_projects_per_hour=1, clock=clock) as fake:
        pool = make_pool(tmp_path, fake, monkeypatch, clock)
        for name in ("acme-a", "acme-b"):
            pool.store.accept(NameEvent(name=name, display_name=name, source="t", index="x",
                                        key=name))
        assert pool.run_once() and pool.run_once()
        assert sum(fake.uploads.values()) == 1
        items = {i["name"]: i for i in pool.store.queue_items()}
        waiting = [i for i in items.values() if i["state"] == "pending"]
        assert len(waiting) == 1 and waiting[0]["attempts"] == 0  # waiting is not failing
        assert waiting[0]["not_before"] > clock.t
        attempts_before = sum(fake.attempts.values())
        assert not pool.run_once()  # nothing is tried while the index asks us to wait
        assert sum(fake.attempts.values()) == attempts_before
        clock.t += 2 * 3600
        assert pool.run_once()
        while pool.run_once():  # the upload, and the confirmation lookups of both uploads
            pass
        assert sum(fake.uploads.values()) == 2


def test_after_max_attempts_a_name_is_visibly_failed(tmp_path: Path, fake_public: FakePublicIndex,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from _fake_public import FaultPlan

    clock = Clock()
    pool = make_pool(tmp_path, fake_public, monkeypatch, clock,
                     "[queue]\nmax-attempts = 3\n")
    fake_public.faults = FaultPlan(rate=1.0, kinds=("500",), paths=("/legacy/",))
    pool.store.accept(NameEvent(name="acme-a", display_name="acme-a", source="t", index="x",
                                key="a"))
    for _ in range(10):
        if not pool.run_once():
            ready = pool.store.next_ready_at()
            if ready is None:
                break
            clock.t = ready
    [item] = pool.store.queue_items()
    assert item["state"] == "failed" and item["attempts"] == 3
    assert item["last_error"]
    assert sum(fake_public.uploads.values()) == 0


def test_the_periodic_recheck_sees_changes_without_uploading_twice(
        tmp_path: Path, fake_public: FakePublicIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    pool = make_pool(tmp_path, fake_public, monkeypatch, clock)
    told: list = []

    class Recording:
        dispatch = staticmethod(told.append)

    pool.keeper.alerts = Recording()  # type: ignore[assignment]
    fake_public.add_project("acme-theirs", owners=["mallory"], versions=["1.0"])
    for name in ("acme-mine", "acme-theirs"):
        pool.store.accept(NameEvent(name=name, display_name=name, source="t", index="x", key=name))
    while pool.run_once():
        pass
    assert fake_public.uploads["acme-mine"] == 1
    assert [o.public.versions for o in told if o.name == "acme-theirs"] == [("1.0",)]

    assert pool.store.schedule_recheck(3600) == 0  # nothing is due yet
    fake_public.add_project("acme-theirs", owners=["mallory"], versions=["1.0", "42.0"])
    clock.t += 3601
    assert pool.store.schedule_recheck(3600) == 2
    attempts = sum(fake_public.attempts.values())
    while pool.run_once():
        pass
    assert sum(fake_public.attempts.values()) == attempts  # our held name: looked at, not re-uploaded
    latest = [o for o in told if o.name == "acme-theirs"][-1]
    assert "42.0" in latest.public.versions and latest.verdict.value == "taken"


@pytest.mark.parametrize("slow", ["build", "upload"])
def test_two_threads_of_one_process_never_both_upload_a_name(
        slow: str, tmp_path: Path, fake_public: FakePublicIndex,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first thread's lease lapses in a slow step: before its upload (its claim may not
    start one) or during it (the second thread must not start another)."""
    clock = Clock()
    pool = make_pool(tmp_path, fake_public, monkeypatch, clock)
    pool.store.accept(NameEvent(name="acme-a", display_name="acme-a", source="t", index="x",
                                key="a"))
    reached = {"build": threading.Event(), "upload": threading.Event()}
    go_on = threading.Event()
    uploads: list[str] = []

    def held(step: str, real: Any) -> Any:
        def call(*args: Any) -> Any:
            if step == "upload":
                uploads.append(args[0])
            # The slow step of the first thread; and, after a slow build, the second
            # thread's upload, so that it still holds the name when the first goes on.
            if not reached[step].is_set() and (step == slow or step == "upload"):
                reached[step].set()
                go_on.wait(30)
            return real(*args)
        return call

    keeper = pool.keeper
    monkeypatch.setattr(keeper.builder, "build", held("build", keeper.builder.build))
    monkeypatch.setattr(keeper.backend, "upload", held("upload", keeper.backend.upload))
    first = threading.Thread(target=pool.run_once)
    first.start()
    assert reached[slow].wait(30)
    clock.t += pool.queue.lease + 1
    assert pool.store.reclaim_expired(now=clock.t) == ["acme-a"]
    second = threading.Thread(target=pool.run_once)  # same process, same holder
    second.start()
    wait_for(lambda: not second.is_alive() or (slow == "build" and reached["upload"].is_set()),
             30, "the second thread")
    go_on.set()
    first.join(30)
    second.join(30)
    for _ in range(10):  # whatever was given back is handled once it is ready
        if not pool.run_once():
            ready = pool.store.next_ready_at()
            if ready is None:
                break
            clock.t = max(clock.t, ready)
    assert uploads == ["acme-a"]
    record = pool.store.get("acme-a")
    assert record is not None and record.reserved


def failed_alerts(pool: WorkerPool, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names whose FAILED outcome ``pool``'s keeper alerts from now on, in order."""
    alerted: list[str] = []
    notify = pool.keeper.notify

    def recorded(outcome: Any) -> Any:
        if outcome.action is Action.FAILED:
            alerted.append(outcome.name)
        return notify(outcome)

    monkeypatch.setattr(pool.keeper, "notify", recorded)
    return alerted


class Killed(BaseException):
    """The process dies here (kill -9): nothing after this point runs."""


@pytest.mark.parametrize("failure", ["an exception", "the index's answer"])
def test_a_name_ending_failed_is_alerted_even_if_the_process_dies_as_the_queue_ends_it(
        failure: str, tmp_path: Path, fake_public: FakePublicIndex,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from _fake_public import FaultPlan

    clock = Clock()
    pool = make_pool(tmp_path, fake_public, monkeypatch, clock, "[queue]\nmax-attempts = 1\n")
    if failure == "an exception":
        def broken(*args: Any) -> Any:
            raise RuntimeError("the reservation backend broke")
        monkeypatch.setattr(pool.keeper.backend, "upload", broken)
    else:
        fake_public.faults = FaultPlan(rate=1.0, kinds=("500",), paths=("/legacy/",))
    alerted = failed_alerts(pool, monkeypatch)
    real_release = pool.store.release

    def dies_on_the_last_release(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("max_attempts"):
            raise Killed
        return real_release(*args, **kwargs)

    monkeypatch.setattr(pool.store, "release", dies_on_the_last_release)
    pool.store.accept(NameEvent(name="acme-a", display_name="acme-a", source="t", index="x",
                                key="a"))
    with pytest.raises(Killed):
        pool.run_once()
    # Told, and /healthz red, although the queue never recorded the end.
    assert alerted == ["acme-a"]
    assert pool.store.failed_names() == (1, ["acme-a"])

    # Restarted: the lease lapses, the name is tried again and ends FAILED in the queue too.
    monkeypatch.setattr(pool.store, "release", real_release)
    clock.t += pool.queue.lease + 1
    assert pool.store.reclaim_expired(now=clock.t) == ["acme-a"]
    assert pool.run_once()
    [item] = pool.store.queue_items()
    assert item["state"] == "failed" and pool.store.failed_names() == (1, ["acme-a"])


def test_a_last_attempt_whose_lease_was_lost_is_not_reported_failed(
        tmp_path: Path, fake_public: FakePublicIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    pool = make_pool(tmp_path, fake_public, monkeypatch, clock, "[queue]\nmax-attempts = 1\n")
    others: list[Any] = []

    def slow_then_broken(*args: Any) -> Any:
        # The step outlasted the lease (a database failover kept the heartbeat from renewing
        # it) and another replica took the name meanwhile: the name is its to settle now.
        clock.t += pool.queue.lease + 1
        assert pool.store.reclaim_expired(now=clock.t) == ["acme-a"]
        others.append(pool.store.claim("other-replica", now=clock.t))
        raise RuntimeError("the reservation backend broke")

    monkeypatch.setattr(pool.keeper.backend, "upload", slow_then_broken)
    alerted = failed_alerts(pool, monkeypatch)
    pool.store.accept(NameEvent(name="acme-a", display_name="acme-a", source="t", index="x",
                                key="a"))
    assert pool.run_once()
    assert others[0] is not None and others[0].attempts == 0  # its try is the last one too
    assert alerted == [] and pool.store.failed_names() == (0, [])
    [item] = pool.store.queue_items()
    assert item["state"] == "claimed" and item["claimed_by"] == others[0].claim
