"""The SQLite store's own behaviour: group commit of intake, and files older code wrote.

What every backend promises is in ``test_store_contract.py`` (run on SQLite and PostgreSQL).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

from namekeeper.model import NameEvent
from namekeeper.store.sqlite import Store


def ev(name: str, key: str | None = None, version: str | None = None,
       seen_at: datetime | None = None, source: str = "artifactory") -> NameEvent:
    kw = {"seen_at": seen_at} if seen_at else {}
    return NameEvent(name=name, display_name=name, source=source, index="pypi-local",
                     version=version, key=key, **kw)


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


def test_no_webhook_waits_while_its_leader_commits_for_the_others(tmp_path: Path) -> None:
    # A leader commits its own batch and hands over: under a steady stream of webhooks no
    # request is answered late because it kept committing everyone else's events.
    import threading
    import time

    from namekeeper.server import GroupCommitSink

    class SlowDisk(Store):
        committed = 0

        def accept_many(self, events):  # type: ignore[no-untyped-def]
            time.sleep(0.01)
            answers = super().accept_many(events)
            self.committed += 1
            return answers

    store = SlowDisk(tmp_path / "s.sqlite3")
    sink = GroupCommitSink(store, lambda: None, max_batch=4)
    waited: list[int] = []  # batches committed while each request waited

    def client(k: int) -> None:
        for i in range(20):
            before = store.committed
            assert sink.accept(ev(f"acme-{k}-{i}", key=f"{k}-{i}"))
            waited.append(store.committed - before)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(waited) == 320 and store.queue_counts()["pending"] == 320
    # At most the 16 requests ahead of it, 4 to a batch, then its own (and one of slack for
    # a thread slow to read the count): never the whole stream's 80 batches.
    assert max(waited) <= 16 // 4 + 2, sorted(waited)[-10:]


def test_the_last_scan_an_older_store_remembered_as_text_is_still_read(tmp_path: Path) -> None:
    # Before the backends shared one watch module, SQLite kept the scan's basis as text.
    path = tmp_path / "state.sqlite3"
    Store(path).remember_scan("digest-1", ["acme-a", "acme-b"])
    with sqlite3.connect(path) as db:
        db.execute("UPDATE watch_state SET value = 'digest-1' WHERE key = 'basis'")
    assert Store(path).scanned_listing() == ("digest-1", frozenset({"acme-a", "acme-b"}))


def test_the_class_of_a_name_is_found_through_the_index_not_by_reading_every_held_name(
        tmp_path: Path) -> None:
    # A worker asks once per FREE name; with 10,000 placeholders a scan took 30 ms each.
    store = Store(tmp_path / "s.sqlite3")
    statements: list[str] = []
    db = store._db()
    db.set_trace_callback(statements.append)
    assert store.held_in_class("acme-uti1s") is None
    db.set_trace_callback(None)
    [query] = [s for s in statements if s.startswith("SELECT")]
    plan = db.execute("EXPLAIN QUERY PLAN " + query).fetchall()
    assert any("USING INDEX names_ultra" in row["detail"] for row in plan), plan
