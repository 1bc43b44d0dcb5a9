"""What `watch` remembers, for every SQL backend: look-alikes found, the stored allow-list,
the names of the last listing scanned.

- ``lookalikes``: one row per public project reported, with its facts; ``alerted_at`` is set
  once every notifier that wants the alert has it ("already reported").
- ``watch_allow``: globs a human allowed (``watch --allow``); never reported again.
- ``watch_state``: the digest of what the last scan looked for (``basis``) and the public
  names it scanned (``names``, compressed, plus ``added`` since), so that the next scan
  compares only the projects that are new.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from .interface import StoredLookalike
from .schema import list_from_json, list_json
from .sql import Sql, SqlBase

_UPSERT_STATE = ("INSERT INTO watch_state(key, value) VALUES (?, ?) "
                 "ON CONFLICT (key) DO UPDATE SET value = excluded.value")


class SqlWatch(SqlBase):
    """The look-alike part of `StoreBackend`."""

    def lookalikes(self) -> list[StoredLookalike]:
        with self._read() as sql:
            rows = sql.execute("SELECT * FROM lookalikes ORDER BY found_at, public").fetchall()
        return [_stored(r) for r in rows]

    def add_lookalikes(self, found: Sequence[StoredLookalike]) -> list[str]:
        def work(tx: Sql) -> list[str]:
            new = []
            for item in found:
                if tx.execute(
                        "INSERT INTO lookalikes(public, ours, kind, distance, owners, "
                        "organization, first_release, found_at) VALUES (?,?,?,?,?,?,?,?) "
                        "ON CONFLICT DO NOTHING RETURNING public",
                        (item.public, item.ours, item.kind, item.distance,
                         None if item.owners is None else list_json(item.owners),
                         item.organization,
                         item.first_release.isoformat() if item.first_release else None,
                         item.found_at.timestamp())).fetchone() is not None:
                    new.append(item.public)
            return new
        return self._transaction(work)

    def mark_lookalike_alerted(self, public: str) -> None:
        self._transaction(lambda tx: tx.execute(
            "UPDATE lookalikes SET alerted_at=? WHERE public=?", (self._clock(), public)),
            one_statement=True)

    def forget_lookalikes(self, publics: Iterable[str]) -> None:
        gone = [(p,) for p in publics]

        def work(tx: Sql) -> None:
            if gone:
                tx.executemany("DELETE FROM lookalikes WHERE public=?", gone)
        self._transaction(work)

    def watch_allowed(self) -> list[str]:
        with self._read() as sql:
            return [r["glob"] for r in sql.execute("SELECT glob FROM watch_allow ORDER BY glob"
                                                   ).fetchall()]

    def allow_lookalikes(self, globs: Iterable[str]) -> None:
        rows = [(g, self._clock()) for g in globs]

        def work(tx: Sql) -> None:
            if rows:
                tx.executemany("INSERT INTO watch_allow(glob, added_at) VALUES (?, ?) "
                               "ON CONFLICT DO NOTHING", rows)
        self._transaction(work)

    def our_names(self) -> list[str]:
        with self._read() as sql:
            return [r["name"] for r in sql.execute("SELECT name FROM names ORDER BY name"
                                                   ).fetchall()]

    def scanned_listing(self) -> tuple[str | None, frozenset[str] | None]:
        with self._read() as sql:
            rows = {r["key"]: r["value"] for r in sql.execute(
                "SELECT key, value FROM watch_state").fetchall()}
        if "basis" not in rows or "names" not in rows:
            return None, None
        names = set(_unpack(rows["names"]))
        names.update(_unpack(rows.get("added")))
        basis = rows["basis"]  # bytes; text in SQLite stores written before the backends met
        return basis if isinstance(basis, str) else bytes(basis).decode("ascii"), frozenset(names)

    def remember_scan(self, basis: str, names: Iterable[str], *, added: bool = False) -> None:
        listed = list(names)

        def work(tx: Sql) -> None:
            if not added:
                tx.execute("DELETE FROM watch_state WHERE key = 'added'")
                tx.executemany(_UPSERT_STATE, [("basis", basis.encode("ascii")),
                                               ("names", _pack(listed))])
                return
            row = tx.execute("SELECT value FROM watch_state WHERE key = 'added'"  # noqa: S608
                             + self.dialect.lock_rows).fetchone()
            known = _unpack(row["value"] if row else None)
            tx.execute(_UPSERT_STATE, ("added", _pack([*known, *listed])))
        self._transaction(work)


def _pack(names: Iterable[str]) -> bytes:
    return zlib.compress("\n".join(names).encode("ascii"), 1)


def _unpack(blob: Any) -> list[str]:
    text = zlib.decompress(bytes(blob)).decode("ascii") if blob else ""
    return text.split("\n") if text else []


def _stored(row: Any) -> StoredLookalike:
    first = row["first_release"]
    return StoredLookalike(
        public=row["public"], ours=row["ours"], kind=row["kind"], distance=row["distance"],
        owners=None if row["owners"] is None else list_from_json(row["owners"]),
        organization=row["organization"],
        first_release=datetime.fromisoformat(first) if first else None,
        found_at=datetime.fromtimestamp(row["found_at"], timezone.utc),
        alerted=row["alerted_at"] is not None,
    )
