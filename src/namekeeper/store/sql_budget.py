"""The hourly budget of new public projects, for every SQL backend.

The public index allows few new projects per hour (FIELD-NOTES); every
process sharing the store spends one budget.  A slot is spent *before* an
upload and given back only when the index certainly created nothing (a
definite 4xx): an upload whose outcome is unknown (timeout, reset) keeps its
slot, so the budget is never exceeded even when the index answers late.

"At most ``limit`` slots in any window" is a count followed by an insert.
`take_budget` first reads the 429 pause through `SqlBase._budget_pause` with
``lock=True``: on PostgreSQL that locks the single row of ``budget_lock``
``FOR UPDATE``, so every replica's count-then-insert runs one after the other
(a row lock rather than an advisory lock: plain SQL, shown in ``pg_locks``,
released with the transaction whatever happens); SQLite serialises writers.
"""

from __future__ import annotations

from .schema import BUDGET_WINDOW
from .sql import Sql, SqlBase

#: The condition raised while the index has asked us to wait.
CONDITION_PAUSED = "budget-paused"


class SqlBudget(SqlBase):
    """The budget part of `StoreBackend`."""

    def take_budget(self, name: str, limit: int, *, now: float | None = None) -> float | None:
        at = self._clock() if now is None else now

        def work(tx: Sql) -> float | None:
            paused_until = self._budget_pause(tx, lock=True)
            if paused_until > at:
                return paused_until - at
            rows = tx.execute("SELECT at FROM budget WHERE at > ? ORDER BY at",
                              (at - BUDGET_WINDOW,)).fetchall()
            if len(rows) >= limit:
                return max(0.001, rows[len(rows) - limit]["at"] + BUDGET_WINDOW - at)
            tx.execute("INSERT INTO budget(name, at) VALUES (?, ?)", (name, at))
            tx.execute("DELETE FROM budget WHERE at <= ?", (at - 2 * BUDGET_WINDOW,))
            # Spending again: any pause the index asked for is over.
            tx.execute("DELETE FROM conditions WHERE key = ?", (CONDITION_PAUSED,))
            return None
        return self._transaction(work)

    def refund_budget(self, name: str) -> None:
        self._transaction(lambda tx: tx.execute(
            "DELETE FROM budget WHERE id = (SELECT MAX(id) FROM budget WHERE name=?)", (name,)),
            one_statement=True)

    def pause_budget(self, seconds: float) -> float:
        until = self._clock() + seconds
        self._transaction(lambda tx: self._pause_budget_until(tx, until))
        return until

    def budget_paused_until(self, *, now: float | None = None) -> float | None:
        at = self._clock() if now is None else now
        with self._read() as sql:
            until = self._budget_pause(sql, lock=False)
        return until if until > at else None

    def budget_left(self, limit: int, *, now: float | None = None) -> int:
        at = self._clock() if now is None else now
        with self._read() as sql:
            row = sql.execute("SELECT COUNT(*) AS n FROM budget WHERE at > ?",
                              (at - BUDGET_WINDOW,)).fetchone()
        return max(0, limit - (int(row["n"]) if row else 0))

    def budget_spent_at(self) -> list[float]:
        with self._read() as sql:
            return [r["at"] for r in sql.execute("SELECT at FROM budget ORDER BY at").fetchall()]
