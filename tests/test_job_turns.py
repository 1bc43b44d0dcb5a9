"""Periodic jobs take turns between replicas: one process at a time polls, reconciles, scans."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from _servers import free_port, wait_for
from namekeeper.config import PollConfig
from namekeeper.model import NameEvent
from namekeeper.server import GroupCommitSink
from namekeeper.sources.interface import EventSource
from namekeeper.sources.poll import SimpleIndexPoller
from namekeeper.store.sqlite import Store


class TurnSink:
    """A sink that records the turns asked for and answers them with ``mine``."""

    def __init__(self, mine: bool) -> None:
        self.mine = mine
        self.asked: list[tuple[str, float]] = []

    def accept(self, event: NameEvent) -> bool:
        return True

    def take_turn(self, job: str, seconds: float) -> bool:
        self.asked.append((job, seconds))
        return self.mine

    def clear_condition(self, key: str) -> None:
        pass  # no conditions here


@pytest.mark.slow
def test_two_processes_on_one_store_take_turns_on_a_job(tmp_path: Path) -> None:
    first = GroupCommitSink(Store(tmp_path / "s.sqlite3"), lambda: None, holder="host-a:1")
    second = GroupCommitSink(Store(tmp_path / "s.sqlite3"), lambda: None, holder="host-b:2")
    assert first.take_turn("artifactory-reconcile", 60)
    assert not second.take_turn("artifactory-reconcile", 60)
    assert first.take_turn("artifactory-reconcile", 60)  # the holder's next round renews it
    assert second.take_turn("poll:nexus", 60)  # another job, another holder


def run_briefly(source: EventSource, sink: TurnSink) -> None:
    """Run ``source`` until it has asked ``sink`` for a turn, and a little longer, then stop it."""
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(sink, stop), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not sink.asked and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    stop.set()
    thread.join(10)


def test_a_poller_polls_only_on_its_turn() -> None:
    url = f"http://127.0.0.1:{free_port()}/simple/"  # any poll fails at once: it shows
    others = SimpleIndexPoller(PollConfig(url=url, interval=600.0, name="nexus"), timeout=1)
    run_briefly(others, TurnSink(mine=False))
    assert others.consecutive_failures == 0  # another replica's turn: not even tried

    mine = SimpleIndexPoller(PollConfig(url=url, interval=600.0, name="nexus"), timeout=1)
    sink = TurnSink(mine=True)
    run_briefly(mine, sink)
    assert mine.consecutive_failures == 1
    [(job, seconds)] = sink.asked
    assert job == "poll:nexus" and seconds > 600.0  # outlives the interval: the holder renews


def test_artifactory_reconciles_only_on_its_turn(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from namekeeper.config import ArtifactoryConfig, Secret
    from namekeeper.sources.artifactory import ArtifactorySource

    rounds: list[str] = []
    for mine in (False, True):
        source = ArtifactorySource(ArtifactoryConfig(
            repos=("pypi-local",), base_url="http://127.0.0.1:9/artifactory",
            token=Secret("t"), secret=Secret("s"), reconcile_interval=600.0))
        monkeypatch.setattr(source, "reconcile_once",
                            lambda sink, stop=None, mine=mine: rounds.append(str(mine)) or 0)
        sink = TurnSink(mine=mine)
        run_briefly(source, sink)
        assert [job for job, _ in sink.asked] == ["artifactory-reconcile"]
    assert rounds == ["True"]  # only the replica whose turn it was listed the repositories


def run_until(source: EventSource, sink: TurnSink, done: Callable[[], bool], *,
              then_others_turn: Callable[[], bool]) -> None:
    """Run ``source`` on its turn until ``done``; then another replica's, until the other."""
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(sink, stop), daemon=True)
    thread.start()
    try:
        wait_for(done, 10, "a failing round that is a problem")
        sink.mine = False  # this replica stalled and another one took the job over
        wait_for(then_others_turn, 10, "the old failure to stop being this replica's problem")
    finally:
        stop.set()
        thread.join(10)


def test_a_poller_whose_turn_passed_to_another_replica_forgets_its_failures() -> None:
    # Else it stays red, and alerts again each time the new holder's good round clears it.
    url = f"http://127.0.0.1:{free_port()}/simple/"
    poller = SimpleIndexPoller(PollConfig(url=url, interval=0.05, name="nexus"), timeout=1,
                               max_backoff=0.05)
    run_until(poller, TurnSink(mine=True), lambda: bool(poller.problems(time.time())),
              then_others_turn=lambda: poller.consecutive_failures == 0)
    assert poller.problems(time.time() + 1) == []


def test_a_poller_whose_turn_lapsed_in_its_backoff_raises_nothing_more() -> None:
    # A pause longer than the lease (up to an hour) lets another replica poll meanwhile;
    # its good round clears the problem, and this one, still counting failures, must not
    # raise it again (an alert per poll interval for as long as it sleeps).  Nor may it hold
    # the turn through the pause: a healthy replica would then wait an hour to take over.
    url = f"http://127.0.0.1:{free_port()}/simple/"
    poller = SimpleIndexPoller(PollConfig(url=url, interval=0.05, name="nexus"), timeout=1,
                               max_backoff=300)
    sink = TurnSink(mine=True)
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(sink, stop), daemon=True)
    thread.start()
    try:
        wait_for(lambda: poller.consecutive_failures >= 3, 10, "three failed polls")
    finally:
        stop.set()
        thread.join(10)
    lease = 2 * 0.05 + 60
    assert {seconds for _, seconds in sink.asked} == {lease}
    assert poller.problems(time.time() + 1)  # its turn: its problem
    assert poller.problems(time.time() + lease + 1) == []  # lapsed: no longer its to say


def test_a_reconciliation_whose_turn_passed_to_another_replica_forgets_its_failures() -> None:
    from namekeeper.config import ArtifactoryConfig, Secret
    from namekeeper.sources.artifactory import ArtifactorySource

    source = ArtifactorySource(ArtifactoryConfig(
        repos=("pypi-local",), base_url=f"http://127.0.0.1:{free_port()}/artifactory",
        token=Secret("t"), secret=Secret("s"), reconcile_interval=0.05), timeout=1)
    run_until(source, TurnSink(mine=True), lambda: bool(source.problems(time.time() + 1)),
              then_others_turn=lambda: source.problems(time.time() + 3600) == [])
