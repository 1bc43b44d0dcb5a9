"""Store operations on many names at once (for `audit`): one transaction, one fsync, per batch.

Recording 10,000 names one transaction at a time costs 10,000 fsyncs; these
methods do the same writes as their one-name counterparts (`Store.note_seen`,
`Store.record_outcome`, `Store.accept`) inside a single transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from ..model import NameEvent, Outcome
from .schema import name_record

if TYPE_CHECKING:
    from .schema import NameRecord

#: SQLite's default limit of host parameters per statement is 999 (older builds).
_CHUNK = 900


class BulkNames:
    """Mixed into `Store`; relies on its transaction and per-row helpers."""

    if TYPE_CHECKING:  # provided by Store
        def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...
        def _db(self) -> sqlite3.Connection: ...
        _clock: Callable[[], float]
        def _note_seen(self, db: sqlite3.Connection, event: NameEvent) -> str | None: ...
        def _record_outcome(self, db: sqlite3.Connection, outcome: Outcome,
                            reserved: bool) -> None: ...
        def _accept(self, db: sqlite3.Connection, event: NameEvent, now: float) -> bool: ...

    def note_seen_many(self, events: Sequence[NameEvent]) -> None:
        """`note_seen` for every event, in one transaction."""
        with self._write() as db:
            for event in events:
                self._note_seen(db, event)

    def records(self, names: Sequence[str]) -> dict[str, NameRecord]:
        """What the store knows of each of ``names`` (absent names are left out)."""
        found: dict[str, NameRecord] = {}
        db = self._db()
        for chunk in _chunks(names):
            marks = ",".join("?" * len(chunk))
            for row in db.execute(f"SELECT * FROM names WHERE name IN ({marks})",  # noqa: S608
                                  chunk):
                record = name_record(row)
                found[record.name] = record
        return found

    def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        """`record_outcome` (not reserved) for every outcome, in one transaction."""
        with self._write() as db:
            for outcome in outcomes:
                self._record_outcome(db, outcome, False)

    def enqueue_in_order(self, events: Sequence[NameEvent]) -> list[bool]:
        """`accept` every event in one transaction, queued so that workers claim them in order.

        Each event is stamped one microsecond after the one before: the queue hands out
        the oldest first, so the order chosen by the caller is the order of the uploads.
        """
        now = self._clock()
        with self._write() as db:
            return [self._accept(db, event, now + i * 1e-6) for i, event in enumerate(events)]


def _chunks(names: Sequence[str]) -> Iterator[list[str]]:
    for i in range(0, len(names), _CHUNK):
        yield list(names[i:i + _CHUNK])
