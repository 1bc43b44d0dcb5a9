"""The PostgreSQL store's budget, conditions and health probes (mixed into `PostgresStore`).

The budget is the one invariant that spans rows: "at most ``limit`` slots in
any window" is a count followed by an insert.  Under READ COMMITTED two
replicas could both count ``limit - 1`` and both insert, so `take_budget`
first locks the single row of ``budget_lock`` ``FOR UPDATE``: every
replica's count-then-insert then runs one after the other, in one
transaction each.  A row lock rather than an advisory lock: plain SQL, shown
in ``pg_locks`` like any row lock, released with the transaction whatever
happens, and the row doubles as the place of the 429 pause.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from .interface import Condition
from .schema import BUDGET_WINDOW
from .sqlite_budget import CONDITION_PAUSED

if TYPE_CHECKING:
    import psycopg


class PostgresBudget:
    """Budget, condition and probe methods; needs ``_transaction``, ``_read`` and ``_clock``."""

    if TYPE_CHECKING:
        _clock: Callable[[], float]

        def _transaction(self, work: Callable[[Any], Any]) -> Any: ...
        def _read(self) -> AbstractContextManager[Any]: ...

    # -- budget ----------------------------------------------------------------------------------

    def take_budget(self, name: str, limit: int, *, now: float | None = None) -> float | None:
        at = self._clock() if now is None else now

        def work(cur: psycopg.Cursor[dict[str, Any]]) -> float | None:
            lock = cur.execute("SELECT paused_until FROM budget_lock WHERE id = 1 FOR UPDATE"
                               ).fetchone()
            paused_until = float(lock["paused_until"]) if lock else 0.0
            if paused_until > at:
                return paused_until - at
            rows = cur.execute("SELECT at FROM budget WHERE at > %s ORDER BY at",
                               (at - BUDGET_WINDOW,)).fetchall()
            if len(rows) >= limit:
                return max(0.001, rows[len(rows) - limit]["at"] + BUDGET_WINDOW - at)
            cur.execute("INSERT INTO budget(name, at) VALUES (%s, %s)", (name, at))
            cur.execute("DELETE FROM budget WHERE at <= %s", (at - 2 * BUDGET_WINDOW,))
            # Spending again: any pause the index asked for is over.
            cur.execute("DELETE FROM conditions WHERE key = %s", (CONDITION_PAUSED,))
            return None
        wait: float | None = self._transaction(work)
        return wait

    def refund_budget(self, name: str) -> None:
        self._transaction(lambda cur: cur.execute(
            "DELETE FROM budget WHERE id = (SELECT MAX(id) FROM budget WHERE name=%s)", (name,)))

    def pause_budget(self, seconds: float) -> float:
        until = self._clock() + seconds
        self._transaction(lambda cur: cur.execute(
            "UPDATE budget_lock SET paused_until = %s WHERE id = 1", (until,)))
        return until

    def budget_paused_until(self, *, now: float | None = None) -> float | None:
        at = self._clock() if now is None else now
        with self._read() as cur:
            row = cur.execute("SELECT paused_until FROM budget_lock WHERE id = 1").fetchone()
        until = float(row["paused_until"]) if row else 0.0
        return until if until > at else None

    def budget_left(self, limit: int, *, now: float | None = None) -> int:
        at = self._clock() if now is None else now
        with self._read() as cur:
            row = cur.execute("SELECT COUNT(*) AS n FROM budget WHERE at > %s",
                              (at - BUDGET_WINDOW,)).fetchone()
        return max(0, limit - (int(row["n"]) if row else 0))

    def budget_spent_at(self) -> list[float]:
        with self._read() as cur:
            return [r["at"] for r in cur.execute("SELECT at FROM budget ORDER BY at")]

    # -- conditions and probes -------------------------------------------------------------------

    def raise_condition(self, key: str, text: str) -> bool:
        def work(cur: psycopg.Cursor[Any]) -> bool:
            cur.execute("INSERT INTO conditions(key, text, since) VALUES (%s, %s, %s) "
                        "ON CONFLICT (key) DO NOTHING RETURNING key", (key, text, self._clock()))
            if cur.fetchone() is not None:
                return True
            cur.execute("UPDATE conditions SET text=%s WHERE key=%s", (text, key))
            return False
        raised: bool = self._transaction(work)
        return raised

    def clear_condition(self, key: str) -> bool:
        def work(cur: psycopg.Cursor[Any]) -> bool:
            cur.execute("DELETE FROM conditions WHERE key=%s", (key,))
            return cur.rowcount == 1
        cleared: bool = self._transaction(work)
        return cleared

    def conditions(self) -> list[Condition]:
        with self._read() as cur:
            rows = cur.execute("SELECT key, text, since FROM conditions ORDER BY since, key"
                               ).fetchall()
        return [Condition(r["key"], r["text"], r["since"]) for r in rows]

    def probe_writable(self) -> None:
        self._transaction(lambda cur: cur.execute(
            "INSERT INTO settings(key, value) VALUES ('health', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", (str(self._clock()),)))

    def probe_integrity(self) -> str | None:
        # PostgreSQL checks its own pages (and checksums, when enabled); what can go wrong on
        # our side is a schema that is not the one this code writes.
        import psycopg

        try:
            with self._read() as cur:
                row = cur.execute("SELECT value FROM settings WHERE key='schema_version'"
                                  ).fetchone()
        except psycopg.Error as exc:
            return " ".join(str(exc).split())[:300]
        return None if row else "the store has no schema version"
