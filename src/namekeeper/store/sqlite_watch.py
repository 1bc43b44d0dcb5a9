"""What `watch` remembers (mixed into `Store`): look-alikes found, the stored allow-list, the
names of the last listing scanned.

- ``lookalikes``: one row per public project reported, with its facts; ``alerted_at`` is set
  once every notifier that wants the alert has it ("already reported").
- ``watch_allow``: globs added with ``namekeeper watch --allow`` (the config's ``[watch]
  allow`` is the other half of the allow-list).
- ``watch_state``: the canonical names of the listing last scanned (zlib-compressed, about
  3 MB for the public index) and a digest of what that scan looked for, so the next scan
  examines only projects new since then, unless our names or the settings changed.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timezone

from .interface import StoredLookalike

WATCH_SCHEMA = """
CREATE TABLE IF NOT EXISTS lookalikes (
    public TEXT PRIMARY KEY,
    ours TEXT NOT NULL,
    kind TEXT NOT NULL,
    distance INTEGER NOT NULL,
    owners TEXT,                 -- JSON list; NULL when the public index could not say
    organization TEXT,
    first_release TEXT,
    found_at REAL NOT NULL,
    alerted_at REAL
);
CREATE TABLE IF NOT EXISTS watch_allow (glob TEXT PRIMARY KEY, added_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS watch_state (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


class WatchMemory:
    """The watch tables' methods; needs the store's ``_write``, ``_db`` and ``_clock``."""

    _clock: Callable[[], float]

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:  # pragma: no cover
        raise NotImplementedError

    def _db(self) -> sqlite3.Connection:  # pragma: no cover
        raise NotImplementedError

    def lookalikes(self) -> list[StoredLookalike]:
        rows = self._db().execute("SELECT * FROM lookalikes ORDER BY found_at, public")
        return [_stored(r) for r in rows]

    def add_lookalikes(self, found: Sequence[StoredLookalike]) -> list[str]:
        """Record look-alikes not recorded yet; the public names that were new, in order."""
        new = []
        with self._write() as db:
            for item in found:
                cur = db.execute(
                    "INSERT OR IGNORE INTO lookalikes(public, ours, kind, distance, owners,"
                    " organization, first_release, found_at) VALUES (?,?,?,?,?,?,?,?)",
                    (item.public, item.ours, item.kind, item.distance,
                     None if item.owners is None else json.dumps(list(item.owners)),
                     item.organization,
                     item.first_release.isoformat() if item.first_release else None,
                     item.found_at.timestamp()))
                if cur.rowcount == 1:
                    new.append(item.public)
        return new

    def mark_lookalike_alerted(self, public: str) -> None:
        with self._write() as db:
            db.execute("UPDATE lookalikes SET alerted_at=? WHERE public=?", (self._clock(), public))

    def forget_lookalikes(self, publics: Iterable[str]) -> None:
        """Drop rows (the project left the listing, or was allowed): a return is new again."""
        with self._write() as db:
            db.executemany("DELETE FROM lookalikes WHERE public=?", [(p,) for p in publics])

    def watch_allowed(self) -> list[str]:
        return [r[0] for r in self._db().execute("SELECT glob FROM watch_allow ORDER BY glob")]

    def allow_lookalikes(self, globs: Iterable[str]) -> None:
        with self._write() as db:
            db.executemany("INSERT OR IGNORE INTO watch_allow(glob, added_at) VALUES (?,?)",
                           [(g, self._clock()) for g in globs])

    def our_names(self) -> list[str]:
        """Every name of ours (private, reserved), canonical, sorted."""
        return [r[0] for r in self._db().execute("SELECT name FROM names ORDER BY name")]

    def scanned_listing(self) -> tuple[str | None, frozenset[str] | None]:
        """(digest of what the last scan looked for, the names it scanned), or (None, None)."""
        rows = dict(self._db().execute("SELECT key, value FROM watch_state").fetchall())
        if "basis" not in rows or "names" not in rows:
            return None, None
        names = set(_unpack(rows["names"]))
        names.update(_unpack(rows.get("added")))
        return str(rows["basis"]), frozenset(names)

    def remember_scan(self, basis: str, names: Iterable[str], *, added: bool = False) -> None:
        """The names a scan saw: all of them, or with ``added`` the ones new since the last."""
        with self._write() as db:
            if not added:
                db.execute("DELETE FROM watch_state WHERE key='added'")
                db.executemany("INSERT OR REPLACE INTO watch_state(key, value) VALUES (?,?)",
                               [("basis", basis), ("names", _pack(names))])
                return
            row = db.execute("SELECT value FROM watch_state WHERE key='added'").fetchone()
            known = list(_unpack(row[0] if row else None))
            db.execute("INSERT OR REPLACE INTO watch_state(key, value) VALUES ('added', ?)",
                       (_pack([*known, *names]),))


def _pack(names: Iterable[str]) -> bytes:
    return zlib.compress("\n".join(names).encode("ascii"), 1)


def _unpack(blob: bytes | None) -> list[str]:
    text = zlib.decompress(blob).decode("ascii") if blob else ""
    return text.split("\n") if text else []


def _stored(row: sqlite3.Row) -> StoredLookalike:
    first = row["first_release"]
    return StoredLookalike(
        public=row["public"], ours=row["ours"], kind=row["kind"], distance=row["distance"],
        owners=None if row["owners"] is None else tuple(json.loads(row["owners"])),
        organization=row["organization"],
        first_release=datetime.fromisoformat(first) if first else None,
        found_at=datetime.fromtimestamp(row["found_at"], timezone.utc),
        alerted=row["alerted_at"] is not None,
    )
