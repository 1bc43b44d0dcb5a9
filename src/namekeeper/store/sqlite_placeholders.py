"""Our own placeholders and forgetting names: part of the store's contract (mixed into `Store`).

Kept in its own module (one concern) so the store's other parts can change beside it:

- the accounts the public index named as owners of a placeholder namekeeper uploaded, so a
  later lookup recognises our own work even when ``[public] owners`` does not list them;
- which name of an ultranormalised class we hold, so its look-alikes cost no upload;
- `forget`, the one way to take a name out of the store;
- queueing the names no source ever queued (reserved from the command line), so that the
  service's periodic re-check looks at every name in the store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import TYPE_CHECKING

from ..model import NameEvent
from ..names import ultranormalize
from .schema import dt, event_to_json

if TYPE_CHECKING:
    from collections.abc import Callable

#: Tables holding rows about one name (column ``name``), emptied by `forget`.
_PER_NAME_TABLES = ("names", "queue", "events", "history", "placeholder_owners", "delivered",
                    "delivery_retries")


class PlaceholderRecords:
    """Store methods about our placeholders; needs ``_write``, ``_db`` and ``_clock``."""

    _clock: Callable[[], float]

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:  # pragma: no cover
        raise NotImplementedError

    def _db(self) -> sqlite3.Connection:  # pragma: no cover
        raise NotImplementedError

    def record_placeholder_owners(self, name: str, owners: Iterable[str]) -> None:
        """Remember the accounts the index reports for a placeholder we just uploaded."""
        with self._write() as db:
            db.executemany("INSERT OR IGNORE INTO placeholder_owners(name, owner) VALUES (?, ?)",
                           [(name, owner.lower()) for owner in owners])

    def placeholder_owners(self, name: str) -> frozenset[str]:
        rows = self._db().execute("SELECT owner FROM placeholder_owners WHERE name = ?",
                                  (name,)).fetchall()
        return frozenset(r["owner"] for r in rows)

    def held_in_class(self, name: str) -> str | None:
        """Another name with ``name``'s ultranormalised key that we hold or are uploading."""
        key = ultranormalize(name)
        # An upload in flight counts; one the index refused (or that failed) does not.
        rows = self._db().execute(
            "SELECT name FROM names WHERE name != ? AND (reserved_at IS NOT NULL OR "
            "(upload_started_at IS NOT NULL AND COALESCE(action, '') NOT IN "
            "('protected', 'taken', 'failed'))) ORDER BY COALESCE(reserved_at, ''), name",
            (name,)).fetchall()
        return next((r["name"] for r in rows if ultranormalize(r["name"]) == key), None)

    def forget(self, names: Iterable[str]) -> list[str]:
        """Remove every trace of ``names``; returns those the store knew."""
        known = []
        with self._write() as db:
            for name in names:
                if db.execute("SELECT 1 FROM names WHERE name = ? UNION SELECT 1 FROM queue "
                              "WHERE name = ?", (name, name)).fetchone():
                    known.append(name)
                for table in _PER_NAME_TABLES:
                    db.execute(f"DELETE FROM {table} WHERE name = ?", (name,))  # noqa: S608
        return known

    def _enqueue_unqueued(self, db: sqlite3.Connection, now: float) -> int:
        """Queue every name in the store that has no queue row (e.g. reserved by `reserve`)."""
        rows = db.execute("SELECT * FROM names n WHERE NOT EXISTS "
                          "(SELECT 1 FROM queue q WHERE q.name = n.name)").fetchall()
        for row in rows:
            event = NameEvent(name=row["name"], display_name=row["display_name"],
                              source=row["first_source"] or "store",
                              index=row["first_index"] or "store",
                              version=row["highest_private_version"])
            seen = dt(row["first_seen_private"])
            if seen is not None:
                event = replace(event, seen_at=seen)
            db.execute("INSERT INTO queue(name, state, event, enqueued_at, updated_at) "
                       "VALUES (?, 'pending', ?, ?, ?)", (row["name"], event_to_json(event), now, now))
        return len(rows)
