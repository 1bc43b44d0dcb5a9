"""The store's contract, run against every backend: SQLite and a real PostgreSQL.

Each test opens stores through `open_store`, a factory bound to one fresh
location (a file, or a fresh database); opening it twice is two processes (or
two replicas) on the same state.  The concurrency tests use one store object
per thread, each with its own connections, as separate replicas would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from _doubles import Clock
from _notify_helpers import Recorder, simple
from _postgres import PostgresServer
from namekeeper.model import Action, NameEvent, Outcome, PublicProject, Severity, Verdict
from namekeeper.names import ultranormalize
from namekeeper.notify.dispatch import Dispatcher
from namekeeper.store.interface import (
    BUDGET_WINDOW,
    DeliveryLog,
    QueueState,
    Released,
    Retry,
    StoreBackend,
    other_holder,
)
from namekeeper.store.sqlite import Store

OpenStore = Callable[..., StoreBackend]


def ev(name: str, key: str | None = None, version: str | None = None,
       seen_at: datetime | None = None, source: str = "artifactory") -> NameEvent:
    kw = {"seen_at": seen_at} if seen_at else {}
    return NameEvent(name=name, display_name=name, source=source, index="pypi-local",
                     version=version, key=key, **kw)


def outcome(name: str, verdict: Verdict = Verdict.OURS, action: Action = Action.RESERVED
            ) -> Outcome:
    return Outcome(name=name, display_name=name, verdict=verdict, action=action,
                   severity=Severity.NONE, reason="r", message=f"{name}: {action.value}")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """A factory of stores on one fresh location of the backend under test."""
    opened: list[StoreBackend] = []
    if request.param == "sqlite":
        path = tmp_path / "s.sqlite3"

        def make(clock: Any = time.time) -> StoreBackend:
            return Store(path, clock=clock)
    else:
        from namekeeper.store.postgres import PostgresStore

        server = request.getfixturevalue("postgres")
        url = server.new_database()

        def make(clock: Any = time.time) -> StoreBackend:
            return PostgresStore(url, password=server.password, clock=clock, max_size=4)

    def tracked(**kw: Any) -> StoreBackend:
        store = make(**kw)
        opened.append(store)
        return store

    yield tracked
    for store in opened:
        store.close()


# -- journal and queue -----------------------------------------------------------------------------


def test_accepted_events_survive_a_new_store_on_the_same_location(open_store: OpenStore) -> None:
    assert open_store().accept(ev("acme-a", key="k1"))
    item = open_store().claim("w")
    assert item is not None and item.name == "acme-a" and item.event.key == "k1"


def test_the_same_delivery_twice_is_one_event(open_store: OpenStore) -> None:
    store = open_store()
    assert store.accept(ev("acme-a", key="repo:path:sha"))
    assert not store.accept(ev("acme-a", key="repo:path:sha"))
    assert store.queue_counts() == {"pending": 1, "claimed": 0, "done": 0, "failed": 0}


def test_the_same_name_from_two_sources_is_one_piece_of_work(open_store: OpenStore) -> None:
    store = open_store()
    assert store.accept(ev("acme-a", key="artifactory:1"))
    assert store.accept(ev("acme-a", key="poll:x:acme-a", source="poll"))
    assert store.claim("w") is not None
    assert store.claim("w") is None


def test_a_batch_answers_each_event_as_accept_would(open_store: OpenStore) -> None:
    store = open_store()
    answers = store.accept_many([ev("acme-b", key="1"), ev("acme-a", key="2"),
                                 ev("acme-b", key="1"), ev("acme-c")])
    assert answers == [True, True, False, True]
    assert [i["name"] for i in store.queue_items()] == ["acme-a", "acme-b", "acme-c"]


def test_a_reserved_name_is_never_queued_again(open_store: OpenStore) -> None:
    store = open_store()
    store.accept(ev("acme-a", key="1"))
    item = store.claim("w")
    assert item is not None
    store.record_outcome(outcome("acme-a"), reserved=True)
    assert store.complete("acme-a", item.claim)
    store.accept(ev("acme-a", key="2"))
    assert store.claim("w") is None
    rec = store.get("acme-a")
    assert rec is not None and rec.reserved and rec.verdict == "ours"


def test_an_item_that_ended_failed_for_good_is_settled_failed_and_looked_at_again_later(
        open_store: OpenStore) -> None:
    store = open_store()
    store.accept(ev("acme-a", key="1"))
    item = store.claim("w")
    assert item is not None
    assert store.complete("acme-a", item.claim, error="HTTP 403: the token may not upload")
    [item] = store.queue_items(QueueState.FAILED)
    assert item["name"] == "acme-a" and item["last_error"] == "HTTP 403: the token may not upload"
    assert store.queue_counts()[QueueState.FAILED] == 1
    assert store.claim("w") is None
    store.accept(ev("acme-a", key="2"))  # new evidence: looked at again
    item2 = store.claim("w")
    assert item2 is not None and item2.event.key == "2"


def test_a_name_we_could_not_hold_is_looked_at_again_on_new_evidence(
        open_store: OpenStore) -> None:
    store = open_store()
    store.accept(ev("acme-a", key="1"))
    item = store.claim("w")
    assert item is not None
    store.record_outcome(outcome("acme-a", Verdict.TAKEN, Action.SKIPPED))
    assert store.complete("acme-a", item.claim)
    assert store.claim("w") is None
    store.accept(ev("acme-a", key="2"))
    item = store.claim("w")
    assert item is not None and item.event.key == "2"


def test_first_seen_and_highest_private_version_are_kept(open_store: OpenStore) -> None:
    store = open_store()
    later = datetime(2026, 5, 1, tzinfo=timezone.utc)
    earlier = later - timedelta(days=30)
    store.accept(ev("acme-a", key="1", version="1.2", seen_at=later))
    store.accept(ev("acme-a", key="2", version="1.10", seen_at=earlier))
    store.accept(ev("acme-a", key="3", version="bogus!", seen_at=later))
    rec = store.get("acme-a")
    assert rec is not None
    assert rec.first_seen_private == earlier
    assert rec.highest_private_version == "1.10"
    assert [h["kind"] for h in store.history("acme-a")] == ["seen"]


def test_one_batch_with_several_events_of_a_name_is_as_one_at_a_time(
        open_store: OpenStore) -> None:
    later = datetime(2026, 5, 1, tzinfo=timezone.utc)
    earlier = later - timedelta(days=30)
    store = open_store()
    store.accept(ev("acme-old", key="0", version="2.0", seen_at=later))
    answers = store.accept_many([
        ev("acme-new", key="1", version="1.2", seen_at=later),
        ev("acme-old", key="2", version="1.0", seen_at=earlier),
        ev("acme-new", key="3", version="1.10", seen_at=earlier),
        ev("acme-new", key="1", version="9.0", seen_at=earlier),  # a retried delivery
        ev("acme-new", key="4", version="bogus!", seen_at=earlier - timedelta(days=1)),
    ])
    assert answers == [True, True, True, False, True]
    new, old = store.get("acme-new"), store.get("acme-old")
    assert new is not None and old is not None
    assert (new.first_seen_private, new.highest_private_version) == (
        earlier - timedelta(days=1), "1.10")
    assert (old.first_seen_private, old.highest_private_version) == (earlier, "2.0")
    assert [h["kind"] for h in store.history("acme-new")] == ["seen"]
    item = store.claim("w")
    assert item is not None and item.name == "acme-old" and item.event.key == "0"
    item = store.claim("w")
    assert item is not None and item.name == "acme-new" and item.event.key == "1"
    assert store.claim("w") is None


def test_work_in_flight_at_a_crash_is_pending_again_once_its_lease_expires(
        open_store: OpenStore) -> None:
    clock = Clock(1_000_000.0)
    store = open_store(clock=clock)
    store.accept(ev("acme-a", key="1"))
    crashed = store.claim("crashed", lease_seconds=60)
    assert crashed is not None
    restarted = open_store(clock=clock)
    assert restarted.claim("new") is None
    assert restarted.reclaim_expired() == []  # a live lease is never taken
    assert restarted.stuck_leases(0) == 0
    clock.t += 61
    assert restarted.stuck_leases(0) == 1
    assert restarted.reclaim_expired() == ["acme-a"]
    new = restarted.claim("new")
    assert new is not None
    # The old holder can no longer settle or upload what is not theirs.
    assert not store.complete("acme-a", crashed.claim)
    assert store.release("acme-a", crashed.claim, not_before=0) is Released.LOST
    assert not store.begin_upload("acme-a", crashed.claim, "acme-a")
    assert restarted.begin_upload("acme-a", new.claim, "acme-a")
    assert [h["kind"] for h in store.history("acme-a")][-2:] == ["lease-expired",
                                                                "upload-started"]


def test_a_lapsed_claim_can_do_nothing_once_its_own_holder_claimed_the_name_again(
        open_store: OpenStore) -> None:
    """A process's threads share one holder: a claim, not its holder, uploads and settles."""
    clock = Clock(1_000_000.0)
    store = open_store(clock=clock)
    store.accept(ev("acme-a", key="1"))
    first = store.claim("H", lease_seconds=60, now=clock.t)
    assert first is not None
    clock.t += 61  # a database failover, or a slow step, outlasted the lease
    assert store.reclaim_expired(now=clock.t) == ["acme-a"]
    second = store.claim("H", lease_seconds=60, now=clock.t)
    assert second is not None and second.name == "acme-a"
    assert not store.begin_upload("acme-a", first.claim, "acme-a")
    assert not store.renew("acme-a", first.claim, 60)
    assert not store.complete("acme-a", first.claim)
    assert store.release("acme-a", first.claim, not_before=0) is Released.LOST
    [item] = store.queue_items(QueueState.CLAIMED)
    assert item["claimed_by"] == second.claim and item["lease_until"] == clock.t + 60
    assert store.renew("acme-a", second.claim, 60)
    assert store.begin_upload("acme-a", second.claim, "acme-a")
    assert store.release("acme-a", second.claim, not_before=0) is Released.PENDING
    third = store.claim("H", now=clock.t)
    assert third is not None
    assert not store.complete("acme-a", second.claim)
    assert store.complete("acme-a", third.claim)
    assert [h["kind"] for h in store.history("acme-a")] == ["seen", "lease-expired",
                                                            "upload-started"]


def test_a_renewed_lease_is_not_reclaimed_and_release_held_gives_back(
        open_store: OpenStore) -> None:
    clock = Clock(1_000_000.0)
    store = open_store(clock=clock)
    store.accept_many([ev("acme-a", key="1"), ev("acme-b", key="2")])
    mine = store.claim("me", lease_seconds=60)
    assert mine is not None
    for _ in range(5):
        clock.t += 40
        assert store.renew("acme-a", mine.claim, 60)
        assert store.reclaim_expired() == []
    assert not store.renew("acme-a", "someone-else", 60)
    assert not store.renew("acme-a", "me", 60)  # the holder is not the claim
    assert store.claim("me-too", lease_seconds=60) is not None  # "me" is a prefix, not a holder
    item = next(i for i in store.queue_items("claimed") if i["name"] == "acme-a")
    assert item["claimed_by"] == mine.claim and item["lease_until"] == clock.t + 60
    assert store.release_held("me") == 1
    assert [i["name"] for i in store.queue_items("claimed")] == ["acme-b"]
    assert store.claim("other") is not None


def test_a_completed_upload_is_confirmed_by_a_lookup_when_due(open_store: OpenStore) -> None:
    clock = Clock(1_000_000.0)
    store = open_store(clock=clock)
    store.accept(ev("acme-a", key="1"))
    item = store.claim("w")
    assert item is not None and not item.confirming
    assert store.complete("acme-a", item.claim, confirm_at=clock.t + 300)
    assert store.next_ready_at() == clock.t + 300
    assert store.claim("w") is None
    clock.t += 300
    again = store.claim("w")
    assert again is not None and again.name == "acme-a" and again.confirming
    assert store.release("acme-a", again.claim, not_before=clock.t + 5,
                         confirming=True) is Released.PENDING
    clock.t += 5
    still = store.claim("w")
    assert still is not None and still.confirming
    assert store.complete("acme-a", still.claim)
    clock.t += 10_000
    assert store.schedule_confirmations() == 0 and store.claim("w") is None


def test_a_reservation_the_index_does_not_confirm_is_forgotten(open_store: OpenStore) -> None:
    store = open_store()
    store.record_outcome(outcome("acme-a"), reserved=True)
    store.forget_reservation("acme-a")
    rec = store.get("acme-a")
    assert rec is not None and not rec.reserved
    assert store.history("acme-a")[-1]["kind"] == "unconfirmed"


def test_a_condition_is_raised_once_and_cleared(open_store: OpenStore) -> None:
    a, b = open_store(), open_store()
    assert a.raise_condition("public-index-unreachable", "down since 10:00")
    assert not b.raise_condition("public-index-unreachable", "still down")  # b does not alert
    [condition] = a.conditions()
    assert (condition.key, condition.text) == ("public-index-unreachable", "still down")
    # The alert's retry asks whether it lasts (any replica's delivery log answers).
    assert b.delivery_log().active_condition("public-index-unreachable") == condition
    assert b.clear_condition("public-index-unreachable")
    assert not a.clear_condition("public-index-unreachable")
    assert a.conditions() == []
    assert a.delivery_log().active_condition("public-index-unreachable") is None


def test_the_health_probes_pass_on_a_healthy_store(open_store: OpenStore) -> None:
    store = open_store()
    store.probe_writable()
    assert store.probe_integrity() is None


def test_a_shared_store_measures_how_far_a_clock_is_from_its_own(
        open_store: OpenStore, request: pytest.FixtureRequest) -> None:
    store = open_store()
    if request.node.callspec.id == "sqlite":
        assert store.clock_offset(time.time) is None  # a file on this host: one clock
        return
    offset = store.clock_offset(time.time)
    assert offset is not None and abs(offset) < 1.0  # this test and the server share a host
    ahead = store.clock_offset(lambda: time.time() + 90)
    assert ahead is not None and 89 < ahead < 91


def test_names_whose_last_outcome_failed_are_counted_until_one_succeeds(
        open_store: OpenStore) -> None:
    store = open_store()
    assert store.failed_names() == (0, [])
    for name in ("acme-d", "acme-b", "acme-c", "acme-a"):
        store.record_outcome(outcome(name, Verdict.FREE, Action.FAILED))
    store.record_outcome(outcome("acme-e"))
    assert store.failed_names() == (4, ["acme-a", "acme-b", "acme-c"])
    store.record_outcome(outcome("acme-a"))  # reserved after all
    assert store.failed_names(sample=10) == (3, ["acme-b", "acme-c", "acme-d"])


def test_a_failure_the_queue_will_try_again_has_not_ended_failed(open_store: OpenStore) -> None:
    # A 5xx on the upload: the outcome is FAILED, the queue tries again later. /healthz said
    # "1 name(s) ended FAILED and are not held" meanwhile: a page for a retry under way.
    store = open_store()
    assert store.accept(ev("acme-a", key="1"))
    item = store.claim("w")
    assert item is not None
    store.record_outcome(outcome("acme-a", Verdict.FREE, Action.FAILED))
    assert store.release("acme-a", item.claim, not_before=0, error="503",
                         max_attempts=2) is Released.PENDING
    assert store.failed_names() == (0, [])
    item = store.claim("w")  # the last attempt fails too: ended
    assert item is not None
    assert store.release("acme-a", item.claim, not_before=0, error="503",
                         max_attempts=2) is Released.FAILED
    assert store.failed_names() == (1, ["acme-a"])


def test_names_deferred_for_a_condition_resume_at_once_when_it_ends(
        open_store: OpenStore) -> None:
    clock = Clock()
    store = open_store(clock=clock)
    for name in ("acme-a", "acme-b"):
        assert store.accept(ev(name, key=name))
        item = store.claim("w")
        assert item is not None
        action = Action.DEFERRED if name == "acme-a" else Action.RATE_LIMITED
        store.record_outcome(outcome(name, Verdict.FREE, action))
        store.release(name, item.claim, not_before=clock.t + 600, count_attempt=False)
    assert store.resume_deferred() == 1  # the one waiting for the condition, not the budget's
    item = store.claim("w")
    assert item is not None and item.name == "acme-a"
    assert store.claim("w") is None


def test_outside_text_with_a_nul_byte_is_stored_not_refused(open_store: OpenStore) -> None:
    # A public index's answer (an owner's name) and the errors quoting one are outside text:
    # PostgreSQL refusing it was a DataError that stopped every worker on the store.
    store = open_store()
    assert store.accept(ev("acme-a", key="1"))
    store.record_outcome(replace(outcome("acme-a", Verdict.TAKEN, Action.SKIPPED),
                                 reason="Held by mallory\x00x.", message="Held by mallory\x00x."))
    store.record_placeholder_owners("acme-a", ["mallory\x00x"])
    item = store.claim("w")
    assert item is not None
    assert store.release("acme-a", item.claim, not_before=0,
                         error="ValueError: an answer with \x00 in it") is Released.PENDING
    record = store.get("acme-a")
    assert record is not None and record.message is not None
    assert record.message.startswith("Held by mallory") and record.message.endswith("x.")
    assert len(store.placeholder_owners("acme-a")) == 1


def test_an_event_key_with_a_nul_byte_is_journaled_once(open_store: OpenStore) -> None:
    # A webhook's key holds its path, outside text: PostgreSQL keeps U+FFFD for the NUL, and
    # the key it gave back did not match the one sent, so the event was answered as a
    # duplicate and never recorded or queued.
    store = open_store()
    assert store.accept_many([ev("acme-a", key="artifactory:libs:a\x00b"),
                              ev("acme-b", key="artifactory:libs:c\x00d")]) == [True, True]
    assert store.accept(ev("acme-a", key="artifactory:libs:a\x00b")) is False
    assert {item["name"] for item in store.queue_items()} == {"acme-a", "acme-b"}
    assert store.get("acme-b") is not None


def test_release_counts_attempts_and_fails_visibly(open_store: OpenStore) -> None:
    clock = Clock(1_000_000.0)
    store = open_store(clock=clock)
    store.accept(ev("acme-a", key="1"))
    for attempt in range(1, 4):
        clock.t += 100
        item = store.claim("w", now=clock.t)
        assert item is not None and item.attempts == attempt - 1
        state = store.release("acme-a", item.claim, not_before=clock.t + 1,
                              error=f"boom {attempt}", max_attempts=3)
    assert state is Released.FAILED
    assert store.queue_items("failed")[0]["last_error"] == "boom 3"
    assert store.history("acme-a")[-1]["kind"] == "failed"
    clock.t += 1000
    assert store.claim("w", now=clock.t) is None


def test_an_item_released_for_later_is_not_ready_before_then(open_store: OpenStore) -> None:
    clock = Clock(1_000_000.0)
    store = open_store(clock=clock)
    store.accept(ev("acme-a", key="1"))
    item = store.claim("w", now=clock.t)
    assert item is not None
    assert store.release("acme-a", item.claim, not_before=clock.t + 50, count_attempt=False) \
        is Released.PENDING
    assert store.next_ready_at() == clock.t + 50
    assert store.claim("w", now=clock.t + 49) is None
    item = store.claim("w", now=clock.t + 50)
    assert item is not None and item.attempts == 0


def test_settled_names_are_queued_again_for_the_periodic_recheck(open_store: OpenStore) -> None:
    clock = Clock(1_000_000.0)
    store = open_store(clock=clock)
    store.accept_many([ev("acme-a", key="1"), ev("acme-b", key="2")])
    for _ in range(2):
        item = store.claim("w")
        assert item is not None
        store.complete(item.name, item.claim)
    clock.t += 100
    assert store.schedule_recheck(3600) == 0
    clock.t += 3600
    assert store.schedule_recheck(3600) == 2
    assert store.queue_counts()["pending"] == 2


def test_upload_started_and_outcome_are_on_record(open_store: OpenStore) -> None:
    store = open_store()
    store.mark_upload_started("acme-x", "Acme.X")
    store.record_outcome(outcome("acme-x"), reserved=True)
    [rec] = store.all_names()
    assert rec.display_name == "Acme.X" and rec.attempts == 1
    assert rec.upload_started_at is not None and rec.reserved
    assert [h["kind"] for h in store.history("acme-x")] == ["upload-started", "outcome"]
    assert store.history("acme-x")[1]["detail"]["action"] == "reserved"
    # A later outcome (a re-check) updates the verdict, keeps when we reserved it, adds history.
    store.record_outcome(outcome("acme-x", Verdict.TAKEN, Action.SKIPPED))
    later = store.get("acme-x")
    assert later is not None and later.verdict == "taken" and later.reserved_at == rec.reserved_at
    assert [h["detail"]["action"] for h in store.history("acme-x")[1:]] == ["reserved", "skipped"]


def test_what_the_index_shows_of_our_upload_is_kept_with_its_outcome_and_history(
        open_store: OpenStore) -> None:
    store = open_store()
    store.mark_upload_started("acme-x", "acme-x")
    store.record_outcome(outcome("acme-x"), reserved=True)
    before = store.get("acme-x")
    store.record_public("acme-x", PublicProject(
        name="acme-x", exists=True, owners=("Acme-Security",), organization="acme",
        versions=("0.0.0",), first_release=datetime(2026, 1, 2, tzinfo=timezone.utc)))
    after = store.get("acme-x")
    assert after is not None and before is not None
    assert (after.owners, after.organization) == (("Acme-Security",), "acme")
    assert (after.verdict, after.action, after.message, after.reserved_at) == (
        before.verdict, before.action, before.message, before.reserved_at)
    assert [h["kind"] for h in store.history("acme-x")] == ["upload-started", "outcome"]
    store.record_public("acme-unknown", PublicProject(name="acme-unknown", exists=True))
    assert store.get("acme-unknown") is None  # only a name the store knows


def test_the_history_keeps_changes_not_repeats(open_store: OpenStore) -> None:
    """A daily audit (or re-check) that finds what the last one found adds no history."""
    store = open_store()
    store.record_outcome(outcome("acme-a", Verdict.FREE, Action.SKIPPED))
    store.record_outcomes([outcome("acme-a", Verdict.FREE, Action.SKIPPED),
                           outcome("acme-b", Verdict.TAKEN, Action.SKIPPED)])
    first = store.get("acme-a")
    assert first is not None and first.updated_at is not None
    later = first.updated_at + timedelta(hours=1)
    store.record_outcome(replace(outcome("acme-a", Verdict.FREE, Action.SKIPPED), at=later))
    store.record_outcomes([outcome("acme-b", Verdict.TAKEN, Action.SKIPPED)])
    assert len(store.history("acme-a")) == 1 and len(store.history("acme-b")) == 1
    again = store.get("acme-a")  # the row still says when it was last checked
    assert again is not None and again.updated_at == later
    # A change of verdict, severity, action or message is an entry, on either path.
    changed = replace(outcome("acme-a", Verdict.FREE, Action.SKIPPED), severity=Severity.HIGH)
    store.record_outcome(changed)
    store.record_outcomes([replace(changed, message="removed, held by nobody")])
    store.record_outcome(outcome("acme-a", Verdict.OURS, Action.RESERVED), reserved=True)
    store.record_outcomes([outcome("acme-b", Verdict.OURS, Action.SKIPPED)])
    assert [(h["detail"]["verdict"], h["detail"]["severity"], h["detail"]["action"])
            for h in store.history("acme-a")] == [
        ("free", "none", "skipped"), ("free", "high", "skipped"), ("free", "high", "skipped"),
        ("ours", "none", "reserved")]
    assert store.history("acme-a")[2]["detail"]["message"] == "removed, held by nobody"
    assert [h["detail"]["verdict"] for h in store.history("acme-b")] == ["taken", "ours"]


def test_every_upload_attempt_has_its_outcome_in_the_history(open_store: OpenStore) -> None:
    """A retried upload that fails the same way again still ends its "upload-started"."""
    store = open_store()
    failed = outcome("acme-a", Verdict.FREE, Action.FAILED)
    for _ in range(2):
        store.mark_upload_started("acme-a", "acme-a")
        store.record_outcome(failed)
    assert [h["kind"] for h in store.history("acme-a")] == [
        "upload-started", "outcome", "upload-started", "outcome"]


def test_the_history_keeps_the_last_of_two_outcomes_of_one_batch(open_store: OpenStore) -> None:
    store = open_store()
    store.record_outcome(outcome("acme-a", Verdict.FREE, Action.SKIPPED))
    store.record_outcomes([outcome("acme-a", Verdict.TAKEN, Action.SKIPPED),
                           outcome("acme-a", Verdict.FREE, Action.SKIPPED)])
    assert [h["detail"]["verdict"] for h in store.history("acme-a")] == ["free", "taken", "free"]


@pytest.mark.slow
@pytest.mark.parametrize("many", [False, True], ids=["one", "many"])
def test_an_outcome_racing_another_replicas_change_is_compared_with_it(
        postgres: PostgresServer, many: bool) -> None:
    """Replica B records FREE while replica A's TAKEN is not yet committed: once A commits,
    B's FREE is a change (the row goes back to free) and must be in the history."""
    import psycopg

    from namekeeper.store.postgres import PostgresStore

    url = postgres.new_database()
    store = PostgresStore(url, password=postgres.password, max_size=2)
    try:
        free = outcome("acme-a", Verdict.FREE, Action.SKIPPED)
        taken = outcome("acme-a", Verdict.TAKEN, Action.SKIPPED)
        store.record_outcome(free)
        with psycopg.connect(url, password=postgres.password) as other:  # replica A, mid-way
            other.execute("UPDATE names SET verdict = 'taken', message = %s WHERE name = %s",
                          (taken.message, "acme-a"))
            other.execute("INSERT INTO history(name, at, kind, detail) VALUES "
                          "(%s, 'then', 'outcome', %s)",
                          ("acme-a", '{"verdict": "taken", "action": "skipped", '
                                     '"severity": "none", "message": "x"}'))
            record = threading.Thread(target=store.record_outcomes if many else store.record_outcome,
                                      args=([free],) if many else (free,))
            record.start()
            record.join(0.5)
            assert record.is_alive()  # waiting for A's row lock
            other.commit()
            record.join(30)
        latest = store.get("acme-a")
        assert latest is not None and latest.verdict == "free"
        assert [h["detail"]["verdict"] for h in store.history("acme-a")] == [
            "free", "taken", "free"]
    finally:
        store.close()


def test_the_store_reports_itself_writable(open_store: OpenStore) -> None:
    assert open_store().writable()


# -- concurrency: several processes (replicas) on one store -----------------------------------------


def test_concurrent_workers_never_claim_the_same_name(open_store: OpenStore) -> None:
    open_store().accept_many([ev(f"acme-{i}", key=str(i)) for i in range(60)])
    replicas = [open_store() for _ in range(4)]
    start = threading.Barrier(len(replicas))

    def drain(store: StoreBackend) -> list[str]:
        start.wait()
        got = []
        while (item := store.claim(f"w{id(store)}")) is not None:
            got.append(item.name)
        return got

    with ThreadPoolExecutor(len(replicas)) as pool:
        claimed = [name for batch in pool.map(drain, replicas) for name in batch]
    assert sorted(claimed) == sorted(f"acme-{i}" for i in range(60))


def test_concurrent_intake_journals_each_delivery_once(open_store: OpenStore) -> None:
    replicas = [open_store() for _ in range(4)]
    events = [ev(f"acme-{i % 20}", key=f"k{i % 60}") for i in range(240)]
    start = threading.Barrier(len(replicas))

    def intake(r: int) -> list[bool]:
        start.wait()
        mine = events[r::len(replicas)]
        return [ok for i in range(0, len(mine), 7)
                for ok in replicas[r].accept_many(mine[i:i + 7])]

    with ThreadPoolExecutor(len(replicas)) as pool:
        answers = [ok for batch in pool.map(intake, range(len(replicas))) for ok in batch]
    assert answers.count(True) == 60
    assert open_store().queue_counts()["pending"] == 20


def test_the_budget_holds_in_total_under_concurrent_replicas(open_store: OpenStore) -> None:
    # Every replica counts and inserts at the same moment: only a lock that serialises the
    # count-then-insert keeps the total at the limit.
    replicas = [open_store() for _ in range(8)]
    start = threading.Barrier(len(replicas))

    def spend(r: int) -> int:
        start.wait()
        return sum(replicas[r].take_budget(f"n{r}-{i}", 5) is None for i in range(5))

    with ThreadPoolExecutor(len(replicas)) as pool:
        granted = sum(pool.map(spend, range(len(replicas))))
    assert granted == 5
    assert len(open_store().budget_spent_at()) == 5


def test_a_periodic_job_has_one_holder_until_its_lease_expires(open_store: OpenStore) -> None:
    clock = Clock(1_000_000.0)
    a, b = open_store(clock=clock), open_store(clock=clock)
    assert a.lease_job("recheck", "a", 60)
    assert not b.lease_job("recheck", "b", 60)
    assert a.lease_job("recheck", "a", 60)  # the holder renews
    assert b.lease_job("other-job", "b", 60)
    clock.t += 61
    assert b.lease_job("recheck", "b", 60)  # a stopped renewing: b takes over
    assert not a.lease_job("recheck", "a", 60)


def test_a_stopping_holder_releases_its_job_leases_and_only_its_own(open_store: OpenStore) -> None:
    a, b = open_store(), open_store()
    assert a.lease_job("recheck", "a", 600) and a.lease_job("poll:nexus", "a", 600)
    assert b.lease_job("reconcile", "b", 600)
    a.release_jobs("a")
    assert b.lease_job("recheck", "b", 600) and b.lease_job("poll:nexus", "b", 600)
    assert not a.lease_job("reconcile", "a", 600)  # b's own lease stays b's


def test_concurrent_replicas_take_a_free_job_lease_once(open_store: OpenStore) -> None:
    replicas = [open_store() for _ in range(6)]
    start = threading.Barrier(len(replicas))

    def take(r: int) -> bool:
        start.wait()
        return replicas[r].lease_job("reconcile", f"r{r}", 60)

    with ThreadPoolExecutor(len(replicas)) as pool:
        assert sum(pool.map(take, range(len(replicas)))) == 1


# -- budget ------------------------------------------------------------------------------------------


def test_budget_is_never_exceeded_within_the_window(open_store: OpenStore) -> None:
    clock = Clock(1_000_000.0)
    store = open_store(clock=clock)
    for i in range(3):
        assert store.take_budget(f"n{i}", 3) is None
        clock.t += 10
    wait = store.take_budget("n3", 3)
    assert wait is not None and abs(wait - (BUDGET_WINDOW - 30)) < 0.01
    clock.t += wait
    assert store.take_budget("n3", 3) is None  # the slot frees exactly when the window moves
    assert store.budget_left(3) == 0


def test_refund_and_pause(open_store: OpenStore) -> None:
    clock = Clock(1_000_000.0)
    store = open_store(clock=clock)
    assert store.take_budget("a", 1) is None
    store.refund_budget("a")
    assert store.budget_left(1) == 1
    assert store.pause_budget(120) == clock.t + 120
    assert store.budget_paused_until() == clock.t + 120
    store.raise_condition("budget-paused", "the index asked us to wait")
    assert store.take_budget("b", 1) == 120
    clock.t += 121
    assert store.budget_paused_until() is None
    assert store.take_budget("b", 1) is None
    assert store.conditions() == []  # spending again: the pause is over


# -- delivery log ------------------------------------------------------------------------------------


def test_deliveries_and_retries_survive_a_new_store(open_store: OpenStore) -> None:
    log = open_store().delivery_log()
    assert isinstance(log, DeliveryLog)  # the interface's contract, whichever backend
    log.record_delivery("ops", "acme-a", "fp1", True, None)
    log.record_delivery("ops", "acme-b", "fp2", False, "receiver down")
    log.schedule_retry(Retry("ops", "acme-b", "fp2", "{}", 1, 500.0))
    log.schedule_retry(Retry("ops", "acme-b", "fp3", "{}", 1, 600.0))  # a newer alert's replaces it
    again = open_store()
    log2 = again.delivery_log()
    assert log2.was_delivered("ops", "acme-a", "fp1")
    assert not log2.was_delivered("ops", "acme-a", "fp2")
    assert log2.retry_for("ops", "acme-b") == Retry("ops", "acme-b", "fp3", "{}", 1, 600.0)
    assert log2.pending_retries(599.0) == []
    assert [r.fingerprint for r in log2.pending_retries(600.0)] == ["fp3"]
    log2.clear_retry("ops", "acme-b")
    assert log2.retry_for("ops", "acme-b") is None
    assert [h["kind"] for h in again.history("acme-b")] == ["notify-failed"]


def test_a_pending_retry_is_claimed_by_one_sender(open_store: OpenStore) -> None:
    a, b = open_store().delivery_log(), open_store().delivery_log()
    a.schedule_retry(Retry("ops", "acme-a", "fp1", "{}", 1, 500.0))
    [seen_by_a], [seen_by_b] = a.pending_retries(500.0), b.pending_retries(500.0)
    assert a.claim_retry(seen_by_a, 800.0)
    assert not b.claim_retry(seen_by_b, 800.0)  # the same retry, taken already
    assert b.pending_retries(799.0) == []  # its sender has it until then
    [again] = b.pending_retries(800.0)  # the sender died before it recorded the attempt
    assert again == replace(seen_by_a, next_at=800.0)
    assert b.claim_retry(again, 1100.0)
    # A retry changed since it was read (a newer alert, due at the same time) or gone is not
    # claimed: it is not the one the claimer meant to send.
    a.schedule_retry(Retry("ops", "acme-a", "fp2", "{}", 1, 500.0))
    assert not a.claim_retry(seen_by_a, 800.0)
    a.clear_retry("ops", "acme-a")
    assert not b.claim_retry(Retry("ops", "acme-a", "fp2", "{}", 1, 500.0), 800.0)


def test_concurrent_senders_claim_a_retry_once(open_store: OpenStore) -> None:
    open_store().delivery_log().schedule_retry(Retry("ops", "acme-a", "fp1", "{}", 1, 500.0))
    logs = [open_store().delivery_log() for _ in range(6)]
    start = threading.Barrier(len(logs))

    def claim(log: DeliveryLog) -> bool:
        [retry] = log.pending_retries(500.0)
        start.wait()
        return log.claim_retry(retry, 800.0)

    with ThreadPoolExecutor(len(logs)) as pool:
        assert sum(pool.map(claim, logs)) == 1


def test_overlapping_retry_rounds_send_each_alert_once(open_store: OpenStore) -> None:
    # Two replicas' rounds at once, as when a round of slow deliveries outlasts the job's
    # lease: both read the same due retries when they begin.
    first = open_store()
    failing = Dispatcher([Recorder("chat", ok=False)], first.delivery_log(), clock=lambda: 1000.0)
    for i in range(3):
        failing.dispatch(simple(Verdict.TAKEN, Action.TAKEN, name=f"acme-{i}"))
    first.raise_condition("budget-paused", "no uploads until 12:00 UTC")
    [paused] = first.conditions()
    failing.dispatch_condition(paused.key, paused.text, frozenset({"paused"}), since=paused.since)
    assert len(first.delivery_log().pending_retries(1030.0)) == 4
    targets = [Recorder("chat", delay=0.2) for _ in range(2)]
    rounds = [Dispatcher([t], open_store().delivery_log()) for t in targets]
    start = threading.Barrier(len(rounds))

    def retry(dispatcher: Dispatcher) -> int:
        start.wait()
        return dispatcher.retry_due()

    with ThreadPoolExecutor(len(rounds)) as pool:
        assert sum(pool.map(retry, rounds)) == 4
    assert sorted(name for t in targets for name in t.names) == [
        "acme-0", "acme-1", "acme-2", "condition:budget-paused"]
    assert first.delivery_log().pending_retries(time.time() + 1e6) == []


def test_a_retry_never_overwrites_or_ends_a_newer_alert_about_the_name(
        open_store: OpenStore) -> None:
    log = open_store().delivery_log()
    log.schedule_retry(Retry("ops", "acme-a", "old", "{}", 1, 500.0))
    log.schedule_retry(Retry("ops", "acme-a", "new", "{}", 1, 600.0))  # a newer alert's
    log.schedule_retry(Retry("ops", "acme-a", "old", "{}", 2, 700.0))  # the old one failed again
    log.clear_retry("ops", "acme-a", "old")  # or was delivered
    assert log.retry_for("ops", "acme-a") == Retry("ops", "acme-a", "new", "{}", 1, 600.0)
    log.schedule_retry(Retry("ops", "acme-a", "new", "{}", 2, 900.0))
    assert log.retry_for("ops", "acme-a") == Retry("ops", "acme-a", "new", "{}", 2, 900.0)
    log.clear_retry("ops", "acme-a", "new")
    assert log.retry_for("ops", "acme-a") is None


class NewerAlertMeanwhile(Recorder):
    """While it is sent a retry, another replica alerts about the same name (and fails)."""

    def __init__(self, ok: bool, newer: Callable[[], object]) -> None:
        super().__init__("chat", ok=ok)
        self.newer = newer

    def deliver(self, message: Any, outcome: Outcome) -> bool:
        self.newer()
        return super().deliver(message, outcome)


@pytest.mark.parametrize("retry_ok", [True, False], ids=["retry delivered", "retry failed"])
def test_a_newer_alert_recorded_while_a_retry_is_sent_stays_pending(
        open_store: OpenStore, retry_ok: bool) -> None:
    first = open_store()
    Dispatcher([Recorder("chat", ok=False)], first.delivery_log(), clock=lambda: 1000.0
               ).dispatch(simple(Verdict.TAKEN, Action.TAKEN, name="acme-a"))
    [old] = first.delivery_log().pending_retries(2000.0)
    other = Dispatcher([Recorder("chat", ok=False)], open_store().delivery_log(),
                       clock=lambda: 1040.0)
    newer = simple(Verdict.FREE, Action.FAILED, Severity.HIGH, name="acme-a")
    target = NewerAlertMeanwhile(retry_ok, lambda: other.dispatch(newer))
    Dispatcher([target], first.delivery_log(), clock=lambda: 1030.0).retry_due(1030.0)
    assert target.names == ["acme-a"]
    [pending] = first.delivery_log().pending_retries(1e12)
    assert pending.fingerprint != old.fingerprint and pending.attempts == 1
    assert pending.next_at == pytest.approx(1040.0 + 30.0)


def test_a_stale_retry_dropped_leaves_the_newer_alert_recorded_meanwhile(
        open_store: OpenStore) -> None:
    first = open_store()
    Dispatcher([Recorder("chat", ok=False)], first.delivery_log(), clock=lambda: 1000.0
               ).dispatch(simple(Verdict.TAKEN, Action.TAKEN, name="acme-a"))
    other = open_store()
    newer = simple(Verdict.FREE, Action.FAILED, Severity.HIGH, name="acme-a")
    log = first.delivery_log()
    current_state = log.current_state

    def newer_alert_meanwhile(name: str) -> Any:
        # Between this round's claim of the old retry and its look at the name, another
        # replica records the name's new state and fails to send the alert about it.
        other.record_outcome(newer)
        Dispatcher([Recorder("chat", ok=False)], other.delivery_log(), clock=lambda: 1040.0
                   ).dispatch(newer)
        return current_state(name)

    log.current_state = newer_alert_meanwhile  # type: ignore[method-assign]
    target = Recorder("chat")
    Dispatcher([target], log, clock=lambda: 1030.0).retry_due(1030.0)
    assert target.names == []  # the old alert is stale: dropped, not sent
    [pending] = first.delivery_log().pending_retries(1e12)
    assert (pending.outcome.verdict, pending.attempts) == (Verdict.FREE, 1)


# -- wake-ups ---------------------------------------------------------------------------------------


def test_an_idle_replica_hears_of_work_queued_by_another(
        open_store: OpenStore, request: pytest.FixtureRequest) -> None:
    idle, busy = open_store(), open_store()
    woken, stop = threading.Event(), threading.Event()
    watcher = idle.watch_for_work(woken.set, stop)
    if watcher is None:
        pytest.skip(f"{request.node.callspec.id}: no notifications; the workers poll")
    try:
        assert woken.wait(10)  # the first wake-up: "look once, in case you missed something"
        woken.clear()
        busy.accept(ev("acme-a", key="1"))
        assert woken.wait(10)
    finally:
        stop.set()
        watcher.join(10)


# -- many names at once (audit) -----------------------------------------------------------------


def test_bulk_writes_match_their_one_name_counterparts(open_store: OpenStore) -> None:
    store = open_store()
    store.note_seen_many([ev("acme-b", version="2.0"), ev("acme-a", version="1.0"),
                          ev("acme-b", version="3.0")])
    store.record_outcomes([outcome("acme-b", Verdict.TAKEN, Action.SKIPPED), outcome("acme-a")])
    found = store.records(["acme-a", "acme-b", "acme-missing"])
    assert set(found) == {"acme-a", "acme-b"}
    assert found["acme-b"].highest_private_version == "3.0"
    assert found["acme-b"].verdict == "taken" and not found["acme-a"].reserved


def test_many_sightings_at_once_leave_what_one_at_a_time_leaves(open_store: OpenStore) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def day(n: int) -> datetime:
        return t0 + timedelta(days=n)

    known = [ev("a", version="1.0", seen_at=day(5)), ev("c", version="2.0", seen_at=day(1))]
    batch = [ev("a", version="0.9", seen_at=day(2), source="lock"),
             ev("b", version="1.0", seen_at=day(3)), ev("b", version="0.5", seen_at=day(2)),
             ev("c", version="not-a-version", seen_at=day(9)), ev("a", version="2.0", seen_at=day(7)),
             ev("d", seen_at=day(4))]
    store = open_store()

    def renamed(prefix: str, events: list[NameEvent]) -> list[NameEvent]:
        return [replace(e, name=f"{prefix}-{e.name}", display_name=f"{prefix}-{e.name}")
                for e in events]

    for prefix in ("one", "many"):
        for event in renamed(prefix, known):
            store.note_seen(event)
    for event in sorted(renamed("one", batch), key=lambda e: e.name):  # note_seen_many's order
        store.note_seen(event)
    store.note_seen_many(renamed("many", batch))

    def seen(prefix: str) -> dict[str, tuple[object, ...]]:
        found = store.records([f"{prefix}-{n}" for n in "abcd"])
        return {name.split("-", 1)[1]: (r.first_seen_private, r.first_source, r.first_index,
                                        r.highest_private_version,
                                        [h["kind"] for h in store.history(name)])
                for name, r in found.items()}

    assert seen("many") == seen("one")
    assert seen("many")["a"][:2] == (day(2), "lock") and seen("many")["a"][3] == "2.0"
    assert seen("many")["b"][0] == day(2) and seen("many")["b"][3] == "1.0"


def test_names_enqueued_in_order_are_claimed_in_that_order(open_store: OpenStore) -> None:
    store = open_store()
    order = ["acme-z", "acme-a", "acme-m", "acme-b"]
    assert store.enqueue_in_order([ev(n, key=n) for n in order]) == [True] * 4
    claimed = [item.name for item in iter(lambda: store.claim("w"), None)]
    assert claimed == order


# -- what `watch` remembers -------------------------------------------------------------------------


def test_watch_memory_round_trips(open_store: OpenStore) -> None:
    from namekeeper.store.interface import StoredLookalike

    store = open_store()
    found = StoredLookalike(public="acme-uti1s", ours="acme-utils", kind="homoglyph", distance=1,
                            owners=("mallory",), organization=None,
                            first_release=datetime(2026, 1, 2, tzinfo=timezone.utc),
                            found_at=datetime(2026, 3, 4, tzinfo=timezone.utc), alerted=False)
    assert store.add_lookalikes([found]) == ["acme-uti1s"]
    assert store.add_lookalikes([found]) == []  # reported once
    store.mark_lookalike_alerted("acme-uti1s")
    assert open_store().lookalikes() == [StoredLookalike(**{**found.__dict__, "alerted": True})]
    store.allow_lookalikes(["acme-*", "acme-*"])
    assert store.watch_allowed() == ["acme-*"]
    assert store.scanned_listing() == (None, None)
    store.remember_scan("digest-1", ["a", "b"])
    store.remember_scan("digest-2", ["a", "b", "c"])
    assert open_store().scanned_listing() == ("digest-2", frozenset({"a", "b", "c"}))
    store.remember_scan("digest-2", ["d"], added=True)
    store.remember_scan("digest-2", ["e"], added=True)
    assert store.scanned_listing() == ("digest-2", frozenset("abcde"))
    store.remember_scan("digest-3", ["x"])
    assert store.scanned_listing() == ("digest-3", frozenset({"x"}))
    store.record_outcome(outcome("acme-b"))
    store.note_seen(ev("acme-a"))
    assert store.our_names() == ["acme-a", "acme-b"]
    store.forget_lookalikes(["acme-uti1s"])
    assert store.lookalikes() == []


# -- our own placeholders; forgetting names -------------------------------------------------------


def test_placeholder_owners_classes_and_forget(open_store: OpenStore) -> None:
    store = open_store()
    store.record_placeholder_owners("acme-utils", ["Acme-Security", "acme-bot"])
    assert store.placeholder_owners("acme-utils") == {"acme-security", "acme-bot"}
    store.record_outcome(outcome("acme-utils"), reserved=True)
    assert store.held_in_class("acme_uti1s") == "acme-utils"  # the same ultranormalised class
    assert store.held_in_class("acme-utils") is None  # not another name
    # An upload in flight holds its class too; one that ended TAKEN does not.
    store.mark_upload_started("acme-ut1ls", "acme-ut1ls")
    store.mark_upload_started("acme-cli", "acme-cli")
    store.record_outcome(outcome("acme-cli", Verdict.TAKEN, Action.TAKEN))
    assert store.held_classes() == {"acmeut11s": ["acme-ut1ls", "acme-utils"]}
    assert store.held_in_class("acme-utils") == "acme-ut1ls"
    store.forget(["acme-ut1ls", "acme-cli"])
    store.accept(ev("acme-utils", key="k"))
    assert store.delivery_log().current_state("acme-utils") == ("ours", "reserved")
    assert store.forget(["acme-utils", "acme-never-seen"]) == ["acme-utils"]
    assert store.get("acme-utils") is None and store.placeholder_owners("acme-utils") == set()
    assert store.queue_items() == [] and store.history("acme-utils") == []


#: A name we hold, and canonical names the public index finds too similar to it, or not.
HELD = "acme-utils"
SAME_CLASS = ["acme-uti1s", "acmeutils", "acme-utiis", "acme-ut1ls", "acme-u-t-i-l-s",
              "acme-ut11s"]
OTHER_CLASS = ["acme-tools", "acme-utilz", "acme-utils2", "acme-util", "xacme-utils"]


@pytest.mark.parametrize("other", SAME_CLASS + OTHER_CLASS)
def test_the_store_finds_the_class_a_name_falls_in_as_the_index_would(
        open_store: OpenStore, other: str) -> None:
    # The store compares PyPI's "too similar" key in SQL: it must agree with `ultranormalize`.
    store = open_store()
    store.record_outcome(outcome(HELD), reserved=True)
    store.record_outcome(outcome("acme-other-held"), reserved=True)
    expected = HELD if ultranormalize(other) == ultranormalize(HELD) else None
    assert (other in SAME_CLASS) == (expected is not None)
    assert store.held_in_class(other) == expected
    assert other_holder(store.held_classes(), other) == expected


def test_the_recheck_also_queues_names_no_source_queued(open_store: OpenStore) -> None:
    clock = Clock(1_000_000.0)
    store = open_store(clock=clock)
    store.record_outcome(outcome("acme-cli"), reserved=True)  # reserved from the command line
    assert store.schedule_recheck(3600) == 1
    item = store.claim("w")
    assert item is not None and item.name == "acme-cli"


def test_a_batch_is_claimed_in_the_order_it_arrived(open_store: OpenStore) -> None:
    store = open_store()
    order = ["acme-z", "acme-a", "acme-m", "acme-b"]
    store.accept_many([ev(n, key=n) for n in order])
    assert [item.name for item in iter(lambda: store.claim("w"), None)] == order
