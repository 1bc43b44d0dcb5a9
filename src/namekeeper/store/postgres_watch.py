"""What `watch` remembers, on the PostgreSQL store (mixed into `PostgresStore`).

The same contract as `sqlite_watch.WatchMemory`; ``watch_state`` holds bytes
(``BYTEA``), so the scan's basis digest is stored as its ASCII bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .interface import StoredLookalike
from .sqlite_watch import _pack, _unpack

if TYPE_CHECKING:
    import psycopg

WATCH_SCHEMA_PG = """
CREATE TABLE IF NOT EXISTS lookalikes (
    public TEXT PRIMARY KEY,
    ours TEXT NOT NULL,
    kind TEXT NOT NULL,
    distance INTEGER NOT NULL,
    owners TEXT,
    organization TEXT,
    first_release TEXT,
    found_at DOUBLE PRECISION NOT NULL,
    alerted_at DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS watch_allow (glob TEXT PRIMARY KEY,
                                        added_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS watch_state (key TEXT PRIMARY KEY, value BYTEA NOT NULL);
"""


class PostgresWatchMemory:
    """The watch tables' methods; needs ``_transaction``, ``_read`` and ``_clock``."""

    if TYPE_CHECKING:
        _clock: Callable[[], float]

        def _transaction(self, work: Callable[[Any], Any]) -> Any: ...
        def _read(self) -> AbstractContextManager[Any]: ...

    def lookalikes(self) -> list[StoredLookalike]:
        with self._read() as cur:
            rows = cur.execute("SELECT * FROM lookalikes ORDER BY found_at, public").fetchall()
        return [_stored(r) for r in rows]

    def add_lookalikes(self, found: Sequence[StoredLookalike]) -> list[str]:
        def work(cur: psycopg.Cursor[Any]) -> list[str]:
            new = []
            for item in found:
                cur.execute(
                    "INSERT INTO lookalikes(public, ours, kind, distance, owners, organization,"
                    " first_release, found_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) "
                    "ON CONFLICT DO NOTHING RETURNING public",
                    (item.public, item.ours, item.kind, item.distance,
                     None if item.owners is None else json.dumps(list(item.owners)),
                     item.organization,
                     item.first_release.isoformat() if item.first_release else None,
                     item.found_at.timestamp()))
                if cur.fetchone() is not None:
                    new.append(item.public)
            return new
        new: list[str] = self._transaction(work)
        return new

    def mark_lookalike_alerted(self, public: str) -> None:
        self._transaction(lambda cur: cur.execute(
            "UPDATE lookalikes SET alerted_at=%s WHERE public=%s", (self._clock(), public)))

    def forget_lookalikes(self, publics: Iterable[str]) -> None:
        gone = list(publics)
        self._transaction(lambda cur: cur.execute(
            "DELETE FROM lookalikes WHERE public = ANY(%s)", (gone,)))

    def watch_allowed(self) -> list[str]:
        with self._read() as cur:
            return [r["glob"] for r in cur.execute("SELECT glob FROM watch_allow ORDER BY glob")]

    def allow_lookalikes(self, globs: Iterable[str]) -> None:
        rows = [(g, self._clock()) for g in globs]

        def work(cur: psycopg.Cursor[Any]) -> None:
            if rows:
                cur.executemany("INSERT INTO watch_allow(glob, added_at) VALUES (%s, %s) "
                                "ON CONFLICT DO NOTHING", rows)
        self._transaction(work)

    def our_names(self) -> list[str]:
        with self._read() as cur:
            return [r["name"] for r in cur.execute("SELECT name FROM names ORDER BY name")]

    def scanned_listing(self) -> tuple[str | None, frozenset[str] | None]:
        with self._read() as cur:
            rows = {r["key"]: bytes(r["value"]) for r in cur.execute(
                "SELECT key, value FROM watch_state")}
        if "basis" not in rows or "names" not in rows:
            return None, None
        names = set(_unpack(rows["names"]))
        names.update(_unpack(rows.get("added")))
        return rows["basis"].decode("ascii"), frozenset(names)

    def remember_scan(self, basis: str, names: Iterable[str], *, added: bool = False) -> None:
        listed = list(names)

        def work(cur: psycopg.Cursor[Any]) -> None:
            upsert = ("INSERT INTO watch_state(key, value) VALUES (%s, %s) "
                      "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value")
            if not added:
                cur.execute("DELETE FROM watch_state WHERE key = 'added'")
                cur.executemany(upsert, [("basis", basis.encode("ascii")),
                                         ("names", _pack(listed))])
                return
            row = cur.execute("SELECT value FROM watch_state WHERE key = 'added' FOR UPDATE"
                              ).fetchone()
            known = _unpack(bytes(row["value"]) if row else None)
            cur.execute(upsert, ("added", _pack([*known, *listed])))
        self._transaction(work)


def _stored(row: dict[str, Any]) -> StoredLookalike:
    first = row["first_release"]
    return StoredLookalike(
        public=row["public"], ours=row["ours"], kind=row["kind"], distance=row["distance"],
        owners=None if row["owners"] is None else tuple(json.loads(row["owners"])),
        organization=row["organization"],
        first_release=datetime.fromisoformat(first) if first else None,
        found_at=datetime.fromtimestamp(row["found_at"], timezone.utc),
        alerted=row["alerted_at"] is not None,
    )
