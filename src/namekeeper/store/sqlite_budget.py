"""The hourly budget of new public projects, part of the store's contract (mixed into `Store`).

The public index allows few new projects per hour (FIELD-NOTES); every
process sharing the store spends one budget.  A slot is spent *before* an
upload and given back only when the index certainly created nothing (a
definite 4xx): an upload whose outcome is unknown (timeout, reset) keeps its
slot, so the budget is never exceeded even when the index answers late.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from .schema import BUDGET_WINDOW

if TYPE_CHECKING:
    from collections.abc import Callable

#: The condition raised while the index has asked us to wait (see `store_health`).
CONDITION_PAUSED = "budget-paused"


class Budget:
    """The budget methods of the store; needs ``_write``, ``_db`` and ``_clock``."""

    _clock: Callable[[], float]

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:  # pragma: no cover
        raise NotImplementedError

    def _db(self) -> sqlite3.Connection:  # pragma: no cover
        raise NotImplementedError

    def take_budget(self, name: str, limit: int, *, now: float | None = None) -> float | None:
        """Spend one new-project slot; None on success, else seconds until a slot frees."""
        now = self._clock() if now is None else now
        with self._write() as db:
            paused = db.execute("SELECT value FROM settings WHERE key='budget_paused_until'"
                                ).fetchone()
            if paused and float(paused["value"]) > now:
                return float(paused["value"]) - now
            rows = db.execute("SELECT at FROM budget WHERE at > ? ORDER BY at",
                              (now - BUDGET_WINDOW,)).fetchall()
            if len(rows) >= limit:
                return max(0.001, rows[len(rows) - limit]["at"] + BUDGET_WINDOW - now)
            db.execute("INSERT INTO budget(name, at) VALUES (?, ?)", (name, now))
            db.execute("DELETE FROM budget WHERE at <= ?", (now - 2 * BUDGET_WINDOW,))
            # Spending again: any pause the index asked for is over.
            db.execute("DELETE FROM conditions WHERE key = ?", (CONDITION_PAUSED,))
        return None

    def refund_budget(self, name: str) -> None:
        """Give back a slot whose upload certainly created no project (a definite 4xx)."""
        with self._write() as db:
            db.execute("DELETE FROM budget WHERE id = (SELECT MAX(id) FROM budget WHERE name=?)",
                       (name,))

    def pause_budget(self, seconds: float) -> float:
        """The public index said 429: spend nothing for ``seconds``; returns the pause's end."""
        until = self._clock() + seconds
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO settings(key, value) "
                       "VALUES ('budget_paused_until', ?)", (str(until),))
        return until

    def budget_paused_until(self, *, now: float | None = None) -> float | None:
        """When the current pause ends, or None when spending is allowed."""
        now = self._clock() if now is None else now
        row = self._db().execute("SELECT value FROM settings WHERE key='budget_paused_until'"
                                 ).fetchone()
        until = float(row["value"]) if row else 0.0
        return until if until > now else None

    def budget_left(self, limit: int, *, now: float | None = None) -> int:
        now = self._clock() if now is None else now
        row = self._db().execute("SELECT COUNT(*) AS n FROM budget WHERE at > ?",
                                 (now - BUDGET_WINDOW,)).fetchone()
        return max(0, limit - int(row["n"]))

    def budget_spent_at(self) -> list[float]:
        return [r["at"] for r in self._db().execute("SELECT at FROM budget ORDER BY at")]
