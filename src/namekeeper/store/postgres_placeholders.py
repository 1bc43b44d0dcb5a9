"""Our own placeholders and forgetting names, on the PostgreSQL store (mixed into `PostgresStore`).

The same contract as `sqlite_placeholders.PlaceholderRecords`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..model import NameEvent
from ..names import ultranormalize
from .schema import dt, event_to_json
from .sqlite_placeholders import _PER_NAME_TABLES

if TYPE_CHECKING:
    import psycopg

PLACEHOLDERS_SCHEMA_PG = """
CREATE TABLE IF NOT EXISTS placeholder_owners (
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    PRIMARY KEY (name, owner)
);
"""


class PostgresPlaceholderRecords:
    """Placeholder and forget methods; needs ``_transaction``, ``_read`` and ``_clock``."""

    if TYPE_CHECKING:
        _clock: Callable[[], float]

        def _transaction(self, work: Callable[[Any], Any]) -> Any: ...
        def _read(self) -> AbstractContextManager[Any]: ...

    def record_placeholder_owners(self, name: str, owners: Iterable[str]) -> None:
        rows = [(name, owner.lower()) for owner in owners]

        def work(cur: psycopg.Cursor[Any]) -> None:
            if rows:
                cur.executemany("INSERT INTO placeholder_owners(name, owner) VALUES (%s, %s) "
                                "ON CONFLICT DO NOTHING", rows)
        self._transaction(work)

    def placeholder_owners(self, name: str) -> frozenset[str]:
        with self._read() as cur:
            rows = cur.execute("SELECT owner FROM placeholder_owners WHERE name = %s",
                               (name,)).fetchall()
        return frozenset(r["owner"] for r in rows)

    def held_in_class(self, name: str) -> str | None:
        key = ultranormalize(name)
        # An upload in flight counts; one the index refused (or that failed) does not.
        with self._read() as cur:
            rows = cur.execute(
                "SELECT name FROM names WHERE name != %s AND (reserved_at IS NOT NULL OR "
                "(upload_started_at IS NOT NULL AND COALESCE(action, '') NOT IN "
                "('protected', 'taken', 'failed'))) ORDER BY COALESCE(reserved_at, ''), name",
                (name,)).fetchall()
        return next((r["name"] for r in rows if ultranormalize(r["name"]) == key), None)

    def forget(self, names: Iterable[str]) -> list[str]:
        wanted = sorted(set(names))

        def work(cur: psycopg.Cursor[Any]) -> list[str]:
            known = []
            for name in wanted:
                if cur.execute("SELECT 1 FROM names WHERE name = %s UNION SELECT 1 FROM queue "
                               "WHERE name = %s", (name, name)).fetchone():
                    known.append(name)
                for table in _PER_NAME_TABLES:
                    cur.execute(f"DELETE FROM {table} WHERE name = %s", (name,))  # noqa: S608
            return known
        known: list[str] = self._transaction(work)
        return known

    @staticmethod
    def _enqueue_unqueued(cur: psycopg.Cursor[dict[str, Any]], now: float) -> int:
        """Queue every name in the store that has no queue row (e.g. reserved by `reserve`)."""
        rows = cur.execute("SELECT * FROM names n WHERE NOT EXISTS "
                           "(SELECT 1 FROM queue q WHERE q.name = n.name)").fetchall()
        for row in rows:
            event = NameEvent(name=row["name"], display_name=row["display_name"],
                              source=row["first_source"] or "store",
                              index=row["first_index"] or "store",
                              version=row["highest_private_version"])
            seen = dt(row["first_seen_private"])
            if seen is not None:
                event = replace(event, seen_at=seen)
            cur.execute("INSERT INTO queue(name, state, event, enqueued_at, updated_at) "
                        "VALUES (%s, 'pending', %s, %s, %s) ON CONFLICT DO NOTHING",
                        (row["name"], event_to_json(event), now, now))
        return len(rows)
