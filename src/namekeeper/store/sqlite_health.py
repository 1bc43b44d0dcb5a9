"""Conditions and health probes, part of the store's contract (mixed into `Store`).

A *condition* is a service-wide problem that is not about one name: the
budget paused by the index, the public index unreachable, a source that cannot
run.  It is raised once (the first process to raise it alerts; the others see
it is already there), shown by ``/healthz``, ``/metrics`` and ``status``, and
cleared when the problem is over.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from .interface import Condition

if TYPE_CHECKING:
    from collections.abc import Callable


class StoreHealth:
    """Condition and probe methods of the store; needs ``_write``, ``_db`` and ``_clock``."""

    _clock: Callable[[], float]

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:  # pragma: no cover
        raise NotImplementedError

    def _db(self) -> sqlite3.Connection:  # pragma: no cover
        raise NotImplementedError

    def raise_condition(self, key: str, text: str) -> bool:
        """Record the condition; True only for the call that raised it (that one alerts)."""
        with self._write() as db:
            cur = db.execute("INSERT OR IGNORE INTO conditions(key, text, since) VALUES (?,?,?)",
                             (key, text, self._clock()))
            if cur.rowcount == 0:
                db.execute("UPDATE conditions SET text=? WHERE key=?", (text, key))
            return cur.rowcount == 1

    def clear_condition(self, key: str) -> bool:
        """The problem is over; True when the condition was raised."""
        with self._write() as db:
            return db.execute("DELETE FROM conditions WHERE key=?", (key,)).rowcount == 1

    def conditions(self) -> list[Condition]:
        rows = self._db().execute("SELECT key, text, since FROM conditions ORDER BY since, key")
        return [Condition(r["key"], r["text"], r["since"]) for r in rows]

    def probe_writable(self) -> None:
        """Commit a tiny write; raises `sqlite3.Error` when the store cannot take writes."""
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO settings(key, value) VALUES ('health', ?)",
                       (str(self._clock()),))

    def probe_integrity(self) -> str | None:
        """None when a quick integrity check passes, else what it found (one line)."""
        try:
            rows = self._db().execute("PRAGMA quick_check(3)").fetchall()
        except sqlite3.DatabaseError as exc:
            return str(exc)
        found = [str(r[0]) for r in rows]
        return None if found == ["ok"] else "; ".join(found)[:300]
