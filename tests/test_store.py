"""The store: durable journal, one queue item per name, budget that is never overspent."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from _doubles import Clock
from namekeeper.model import Action, NameEvent, Outcome, Severity, Verdict
from namekeeper.store.interface import BUDGET_WINDOW, Released
from namekeeper.store.sqlite import Store


def ev(name: str, key: str | None = None, version: str | None = None,
       seen_at: datetime | None = None, source: str = "artifactory") -> NameEvent:
    kw = {"seen_at": seen_at} if seen_at else {}
    return NameEvent(name=name, display_name=name, source=source, index="pypi-local",
                     version=version, key=key, **kw)


def test_accepted_events_survive_a_new_store_on_the_same_file(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite3"
    store = Store(db)
    assert store.accept(ev("acme-a", key="k1"))
    store.close()
    again = Store(db)
    item = again.claim("w")
    assert item is not None and item.name == "acme-a" and item.event.key == "k1"


def test_the_same_delivery_twice_is_one_event(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    assert store.accept(ev("acme-a", key="repo:path:sha"))
    assert not store.accept(ev("acme-a", key="repo:path:sha"))
    assert store.queue_counts()["pending"] == 1


def test_the_same_name_from_two_sources_is_one_piece_of_work(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    assert store.accept(ev("acme-a", key="artifactory:1"))
    assert store.accept(ev("acme-a", key="poll:x:acme-a", source="poll"))
    assert store.claim("w") is not None
    assert store.claim("w") is None


def test_a_reserved_name_is_never_queued_again(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    store.accept(ev("acme-a", key="1"))
    item = store.claim("w")
    assert item is not None
    store.record_outcome(Outcome(name="acme-a", display_name="acme-a", verdict=Verdict.OURS,
                                 action=Action.RESERVED, severity=Severity.NONE, reason="r",
                                 message="m"), reserved=True)
    store.complete("acme-a", "w")
    store.accept(ev("acme-a", key="2"))
    assert store.claim("w") is None
    assert store.get("acme-a").reserved


def test_first_seen_and_highest_private_version_are_kept(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    later = datetime(2026, 5, 1, tzinfo=timezone.utc)
    earlier = later - timedelta(days=30)
    store.accept(ev("acme-a", key="1", version="1.2", seen_at=later))
    store.accept(ev("acme-a", key="2", version="1.10", seen_at=earlier))
    store.accept(ev("acme-a", key="3", version="bogus!", seen_at=later))
    rec = store.get("acme-a")
    assert rec.first_seen_private == earlier
    assert rec.highest_private_version == "1.10"


def test_work_in_flight_at_a_crash_is_pending_again_once_its_lease_expires(tmp_path: Path) -> None:
    clock = Clock(1_000_000.0)
    store = Store(tmp_path / "s.sqlite3", clock=clock)
    store.accept(ev("acme-a", key="1"))
    assert store.claim("crashed", lease_seconds=60) is not None
    restarted = Store(tmp_path / "s.sqlite3", clock=clock)
    assert restarted.claim("new") is None
    assert restarted.reclaim_expired() == []  # a live lease is never taken
    clock.t += 61
    assert restarted.reclaim_expired() == ["acme-a"]
    assert restarted.claim("new") is not None
    # The old holder can no longer settle or upload what is not theirs.
    assert not store.complete("acme-a", "crashed")
    assert store.release("acme-a", "crashed", not_before=0) is Released.LOST
    assert not store.begin_upload("acme-a", "crashed", "acme-a")
    assert restarted.begin_upload("acme-a", "new", "acme-a")


def test_a_renewed_lease_is_not_reclaimed_and_release_held_gives_back(tmp_path: Path) -> None:
    clock = Clock(1_000_000.0)
    store = Store(tmp_path / "s.sqlite3", clock=clock)
    store.accept(ev("acme-a", key="1"))
    store.claim("me", lease_seconds=60)
    for _ in range(5):
        clock.t += 40
        assert store.renew("acme-a", "me", 60)
        assert store.reclaim_expired() == []
    assert not store.renew("acme-a", "someone-else", 60)
    assert store.release_held("me") == 1
    assert store.claim("other") is not None


def test_release_counts_attempts_and_fails_visibly(tmp_path: Path) -> None:
    clock = Clock(1_000_000.0)
    store = Store(tmp_path / "s.sqlite3", clock=clock)
    store.accept(ev("acme-a", key="1"))
    for attempt in range(1, 4):
        clock.t += 100
        item = store.claim("w")
        assert item is not None and item.attempts == attempt - 1
        state = store.release("acme-a", "w", not_before=clock.t + 1, error=f"boom {attempt}",
                              max_attempts=3)
    assert state is Released.FAILED
    assert store.queue_items("failed")[0]["last_error"] == "boom 3"
    clock.t += 1000
    assert store.claim("w") is None


def test_budget_is_never_exceeded_within_the_window(tmp_path: Path) -> None:
    clock = Clock(1_000_000.0)
    store = Store(tmp_path / "s.sqlite3", clock=clock)
    for i in range(3):
        assert store.take_budget(f"n{i}", 3) is None
        clock.t += 10
    wait = store.take_budget("n3", 3)
    assert wait is not None and abs(wait - (BUDGET_WINDOW - 30)) < 0.01
    clock.t += wait
    assert store.take_budget("n3", 3) is None  # the slot frees exactly when the window moves
    assert store.budget_left(3) == 0


def test_refund_and_pause(tmp_path: Path) -> None:
    clock = Clock(1_000_000.0)
    store = Store(tmp_path / "s.sqlite3", clock=clock)
    assert store.take_budget("a", 1) is None
    store.refund_budget("a")
    assert store.budget_left(1) == 1
    store.pause_budget(120)
    assert store.take_budget("b", 1) == 120
    clock.t += 121
    assert store.take_budget("b", 1) is None


def test_group_commit_answers_each_event_as_accept_would(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from namekeeper.server import GroupCommitSink

    store = Store(tmp_path / "s.sqlite3")
    woken = []
    sink = GroupCommitSink(store, lambda: woken.append(1), max_batch=7)
    events = [ev(f"acme-{i % 50}", key=f"k{i % 150}") for i in range(300)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(sink.accept, events))
    assert answers.count(True) == 150  # every key once, whatever the interleaving
    assert store.queue_counts()["pending"] == 50
    assert woken
    fresh = Store(tmp_path / "s.sqlite3")  # all of it is on disk
    assert len(fresh.all_names()) == 50


def test_group_commit_failure_reaches_every_waiter(tmp_path: Path) -> None:
    import pytest

    from namekeeper.server import GroupCommitSink

    class Broken(Store):
        def accept_many(self, events):  # type: ignore[no-untyped-def]
            raise OSError("disk full")

    sink = GroupCommitSink(Broken(tmp_path / "s.sqlite3"), lambda: None)
    with pytest.raises(OSError, match="disk full"):
        sink.accept(ev("acme-a", key="1"))
    with pytest.raises(OSError):  # and the next caller is not stuck behind a dead leader
        sink.accept(ev("acme-b", key="2"))
