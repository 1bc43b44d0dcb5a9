"""A source that cannot do its job is alerted, once, and every replica's /healthz says so.

Only the replica that runs a source's rounds (the holder of the job's lease) sees its
problems; the service raises them as a condition in the shared store, so the alert goes
out once and a replica behind the same load balancer that does not poll is red too.  The
round that works again clears it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from _fake_public import FakePublicIndex
from _notify_servers import HttpReceiver, serving_http
from _servers import PORTAL_PAGE, serving, url_of, wait_for
from namekeeper import config as cfg
from namekeeper.server import Service
from namekeeper.sources.interface import EventSink, EventSource

pytestmark = pytest.mark.slow  # services, a fake public index, a private index, a receiver

KEY = "source:poll:acme-private"


@dataclass
class PrivateIndex:
    """A PEP 503 root page on 127.0.0.1 that can be made to fail (``status``)."""

    url: str = ""
    status: int = 500
    polls: int = 0
    page: bytes = b'<html><body><a href="acme-a/">acme-a</a></body></html>'  # when 200


@pytest.fixture
def private_index() -> Iterator[PrivateIndex]:
    index = PrivateIndex()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            index.polls += 1
            body = index.page if index.status == 200 else b"upstream broken"
            self.send_response(index.status)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving(Handler) as server:
        index.url = url_of(server) + "simple/"
        yield index


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with serving_http() as r:
        yield r


def make_service(tmp_path: Path, fake: FakePublicIndex, index: PrivateIndex,
                 receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch,
                 notify_query: str = "") -> Service:
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", "pypi-source-token")
    path = tmp_path / "nk.toml"
    path.write_text(fake.config_toml() + f"""
[store]
path = "{(tmp_path / 's.sqlite3').as_posix()}"
[policy]
dry-run = true
[notify]
urls = ["{receiver.url()}{notify_query}"]
[[poll]]
name = "acme-private"
url = "{index.url}"
interval = "1s"
""")
    service = Service(cfg.load(path))
    service.source_watch_every = 0.1
    return service


def alerts_about(receiver: HttpReceiver, words: str) -> list[str]:
    """The alerts (apprise's JSON: title and message) that mention ``words``."""
    texts = [f"{r.json()['title']}\n{r.json()['message']}" for r in receiver.requests]
    return [text for text in texts if words in text]


def source_alerts(receiver: HttpReceiver) -> list[str]:
    return alerts_about(receiver, "acme-private")


def reasons(service: Service) -> list[str]:
    return service.healthy()[1]["reasons"]


def stop(*services: Service, timeout: float = 5) -> None:
    """Shut each service down and close its store (a second shutdown does nothing more)."""
    for service in services:
        service.shutdown(timeout)
        service.store.close()


def test_a_private_index_that_stops_answering_is_alerted_once_and_cleared_when_it_answers(
        tmp_path: Path, fake_public: FakePublicIndex, private_index: PrivateIndex,
        receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    service = make_service(tmp_path, fake_public, private_index, receiver, monkeypatch)
    service.start()
    try:
        wait_for(lambda: source_alerts(receiver), 15, "an alert about the private index")
        [alert] = source_alerts(receiver)
        assert "the private index acme-private could not be read" in alert and "500" in alert
        assert any("acme-private could not be read" in r for r in reasons(service))
        assert [c.key for c in service.store.conditions()] == [KEY]
        # The problem lasts, its words are brought up to date: still one alert.
        service.source_restate_every = 0.2
        polls = private_index.polls
        wait_for(lambda: private_index.polls >= polls + 1, 15, "another failing poll")
        assert len(source_alerts(receiver)) == 1
        # Shown once on this replica, which runs the poll (its own words, not the copy too).
        assert sum("acme-private" in r for r in reasons(service)) == 1

        private_index.status = 200
        wait_for(lambda: service.store.conditions() == [], 30, "the condition to clear")
        wait_for(lambda: not any("acme-private" in r for r in reasons(service)), 5,
                 "/healthz to stop saying so")
        assert len(source_alerts(receiver)) == 1  # over: no second alert
    finally:
        stop(service)


def test_a_private_index_url_answered_by_a_sign_in_page_is_alerted_and_nothing_is_recorded(
        tmp_path: Path, fake_public: FakePublicIndex, private_index: PrivateIndex,
        receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    private_index.status, private_index.page = 200, PORTAL_PAGE
    service = make_service(tmp_path, fake_public, private_index, receiver, monkeypatch)
    service.start()
    try:
        wait_for(lambda: source_alerts(receiver), 15, "an alert about the private index")
        [alert] = source_alerts(receiver)
        assert f"({private_index.url} does not look like a simple index: its links do not " \
               "lead to project pages" in alert
        assert any("does not look like a simple index" in r for r in reasons(service))
        assert [c.key for c in service.store.conditions()] == [KEY]
        assert service.store.all_names() == [] and service.store.queue_items() == []
    finally:
        stop(service)


def test_a_slow_notifier_does_not_hold_up_the_round_that_clears_the_problem(
        tmp_path: Path, fake_public: FakePublicIndex, private_index: PrivateIndex,
        receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver.answer_after = 12.0  # apprise waits (rto=30): the alert takes 12 s to deliver
    service = make_service(tmp_path, fake_public, private_index, receiver, monkeypatch,
                           notify_query="?rto=30")
    service.start()
    try:
        wait_for(lambda: source_alerts(receiver), 15, "the alert to reach the receiver")
        private_index.status = 200
        # The poll (every second) works again and clears it while the alert is still on
        # its way; before, it waited for the delivery to end.
        wait_for(lambda: service.store.conditions() == [], 8, "the condition to clear")
        wait_for(lambda: not any("acme-private" in r for r in reasons(service)), 3,
                 "/healthz to stop saying so")
    finally:
        receiver.answer_after = 0.0
        stop(service, timeout=15)


def test_a_replica_that_does_not_poll_is_red_too_and_a_restart_does_not_alert_again(
        tmp_path: Path, fake_public: FakePublicIndex, private_index: PrivateIndex,
        receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    polling = make_service(tmp_path, fake_public, private_index, receiver, monkeypatch)
    polling.start()
    other = make_service(tmp_path, fake_public, private_index, receiver, monkeypatch)
    try:
        wait_for(lambda: source_alerts(receiver), 15, "an alert about the private index")
        other.start()  # the poll's lease is held: this one never polls
        wait_for(lambda: any("acme-private could not be read" in r for r in reasons(other)), 10,
                 "the replica that does not poll to be red")
        assert other.sources[0].problems(1e12) == []  # it knows only what the store says
        stop(polling)  # the holder goes; the problem stays until a round works
        polling = make_service(tmp_path, fake_public, private_index, receiver, monkeypatch)
        polling.start()
        assert any("acme-private" in r for r in reasons(polling))  # red from the start
        # The holder gave its turn up as it stopped, so a replica polls again at once; the
        # problem is not over until a round works: red meanwhile, and no second alert.
        wait_for(lambda: other.sources[0].polls_failed + polling.sources[0].polls_failed >= 1,
                 10, "a replica to take the poll over")
        assert [c.key for c in other.store.conditions()] == [KEY]
        private_index.status = 200
        wait_for(lambda: other.store.conditions() == [], 15, "the next good round to clear it")
        assert len(source_alerts(receiver)) == 1
    finally:
        stop(polling, other)


def test_a_condition_of_a_source_no_longer_configured_is_cleared_at_start(
        tmp_path: Path, fake_public: FakePublicIndex, private_index: PrivateIndex,
        receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    private_index.status = 200
    service = make_service(tmp_path, fake_public, private_index, receiver, monkeypatch)
    service.store.raise_condition("source:poll:retired-index", "the private index retired-index "
                                  "could not be read for 900 s (HTTP 500)")
    service.store.raise_condition(KEY, "the private index acme-private could not be read")
    service.start()
    try:
        assert "source:poll:retired-index" not in {c.key for c in service.store.conditions()}
        # The configured one stays until its own round works.
        wait_for(lambda: service.store.conditions() == [], 15, "the poll to clear its own")
        assert source_alerts(receiver) == []
    finally:
        stop(service)


class Crashing(EventSource):
    """A third-party source whose loop dies."""

    name = "crashing"

    def run(self, sink: EventSink, stop: threading.Event) -> None:
        raise RuntimeError("the plugin's loop broke")


def test_a_source_whose_loop_dies_is_alerted_and_named(
        tmp_path: Path, fake_public: FakePublicIndex, private_index: PrivateIndex,
        receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    private_index.status = 200
    service = make_service(tmp_path, fake_public, private_index, receiver, monkeypatch)
    service.sources.append(Crashing())
    service.start()
    try:
        wait_for(lambda: alerts_about(receiver, "crashing"), 15, "an alert about the crash")
        [alert] = alerts_about(receiver, "crashing")
        assert "the event source crashing stopped with an error" in alert
        # Said once here (this replica's own words), and the JSON says a source is down.
        assert sum("crashing" in r for r in reasons(service)) == 1
        wait_for(lambda: service.store.conditions(), 5, "the condition to be in the store")
        assert sum("crashing" in r for r in reasons(service)) == 1
        ok, detail = service.healthy()
        assert not ok and detail["sources"] is False
    finally:
        stop(service)


class WorkingRounds(EventSource):
    """The same source on another replica, whose rounds work (and so clear its condition)."""

    name = "crashing"

    def run(self, sink: EventSink, stop: threading.Event) -> None:
        while not stop.wait(0.1):
            sink.clear_condition(self.condition_key)


def test_a_loop_that_died_is_this_replicas_own_and_ends_with_its_process(
        tmp_path: Path, fake_public: FakePublicIndex, private_index: PrivateIndex,
        receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    private_index.status = 200
    broken = make_service(tmp_path, fake_public, private_index, receiver, monkeypatch)
    broken.sources.append(Crashing())
    broken.source_restate_every = 0.2
    broken.start()
    working = make_service(tmp_path, fake_public, private_index, receiver, monkeypatch)
    working.sources.append(WorkingRounds())
    working.source_restate_every = 0.2
    try:
        wait_for(lambda: alerts_about(receiver, "crashing"), 15, "an alert about the crash")
        dead_key = f"loop-died:crashing@{broken.holder}"
        assert [c.key for c in broken.store.conditions()] == [dead_key]
        # Another replica starting, and its working rounds, leave it be (before, they cleared
        # it and the broken replica raised it again: an alert each time).
        working.start()
        threading.Event().wait(1.5)  # rounds of both, restatements and sweeps
        assert len(alerts_about(receiver, "crashing")) == 1
        assert [c.key for c in working.store.conditions()] == [dead_key]
        # Red where the loop died, only there: the load balancer keeps the working replica.
        assert any(f"stopped with an error on {broken.holder}" in r for r in reasons(broken))
        assert reasons(working) == []
        # The process stops: its loop is nobody's problem any more.
        broken.shutdown(5)
        assert working.store.conditions() == []
    finally:
        stop(broken, working)


def test_a_loop_that_died_in_a_killed_process_is_cleared_by_the_next_start(
        tmp_path: Path, fake_public: FakePublicIndex, private_index: PrivateIndex,
        receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    private_index.status = 200
    service = make_service(tmp_path, fake_public, private_index, receiver, monkeypatch)
    service.sources.append(WorkingRounds())  # the plugin, fixed
    # What a process killed with -9 while its loop was dead leaves behind (it took its
    # liveness lease last 200 s ago: it is gone).
    gone = "gone-host:4242:0a1b2c3d"
    service.store.lease_job(f"alive:{gone}", gone, 100, now=time.time() - 200)
    service.store.raise_condition(f"loop-died:crashing@{gone}",
                                  f"the event source crashing stopped with an error on {gone}")
    service.start()
    try:
        assert service.store.conditions() == []
        wait_for(lambda: service.healthy()[0], 10, "/healthz to be green")
        assert alerts_about(receiver, "crashing") == []
    finally:
        stop(service)


def test_a_replica_that_stops_hands_its_polls_over_at_once(
        tmp_path: Path, fake_public: FakePublicIndex, private_index: PrivateIndex,
        receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    # A rolling deploy: the replica that polled stops; another polls within seconds, not
    # once the old lease (2 x interval + 60 s) lapses.
    private_index.status = 200
    first = make_service(tmp_path, fake_public, private_index, receiver, monkeypatch)
    second = make_service(tmp_path, fake_public, private_index, receiver, monkeypatch)
    try:
        first.start()
        wait_for(lambda: first.sources[0].polls_ok >= 1, 10, "the first replica to poll")
        second.start()
        threading.Event().wait(1.5)
        assert second.sources[0].polls_ok == 0  # not its turn
        first.shutdown(5)
        wait_for(lambda: second.sources[0].polls_ok >= 1, 10, "the second replica to poll")
    finally:
        stop(first, second)
