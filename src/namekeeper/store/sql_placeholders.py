"""Our own placeholders and forgetting names, for every SQL backend.

- the accounts the public index named as owners of a placeholder namekeeper uploaded, so a
  later lookup recognises the placeholder as ours even where ownership is not published;
- `held_in_class`: a name we hold (or are uploading) that the index would treat as the same
  project as another (its ultranormalised form), so we never spend budget on the second;
- `forget`: every trace of a name, from every table that has rows about one name.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..names import ultranormalize
from .schema import ultranormalized
from .sql import Sql, SqlBase

#: A name we hold: an upload in flight counts; one the index refused (or that failed) does
#: not, nor a placeholder last found gone from the index (FREE: removed, under PEP 541 say).
_HELD = ("(reserved_at IS NOT NULL AND COALESCE(verdict, '') <> 'free') OR "
         "(upload_started_at IS NOT NULL AND "
         "COALESCE(action, '') NOT IN ('protected', 'taken', 'failed'))")
_HELD_ORDER = "ORDER BY COALESCE(reserved_at, ''), name"

#: Tables holding rows about one name (column ``name``), emptied by `forget`.
PER_NAME_TABLES = ("names", "queue", "events", "history", "placeholder_owners", "delivered",
                   "delivery_retries")


class SqlPlaceholders(SqlBase):
    """The placeholder and forget part of `StoreBackend`."""

    def record_placeholder_owners(self, name: str, owners: Iterable[str]) -> None:
        rows = [(name, owner.lower()) for owner in owners]

        def work(tx: Sql) -> None:
            if rows:
                tx.executemany("INSERT INTO placeholder_owners(name, owner) VALUES (?, ?) "
                               "ON CONFLICT DO NOTHING", rows)
        self._transaction(work)

    def placeholder_owners(self, name: str) -> frozenset[str]:
        with self._read() as sql:
            rows = sql.execute("SELECT owner FROM placeholder_owners WHERE name = ?",
                               (name,)).fetchall()
        return frozenset(r["owner"] for r in rows)

    def held_in_class(self, name: str) -> str | None:
        with self._read() as sql:  # one row, through the index on the key
            row = sql.execute(
                f"SELECT name FROM names WHERE {ultranormalized('name')} = ? AND name != ? "  # noqa: S608
                f"AND ({_HELD}) {_HELD_ORDER} LIMIT 1", (ultranormalize(name), name)).fetchone()
        return row["name"] if row else None

    def held_classes(self) -> dict[str, list[str]]:
        with self._read() as sql:
            rows = sql.execute(f"SELECT name FROM names WHERE {_HELD} {_HELD_ORDER}"  # noqa: S608
                               ).fetchall()
        classes: dict[str, list[str]] = {}
        for row in rows:
            classes.setdefault(ultranormalize(row["name"]), []).append(row["name"])
        return classes

    def forget(self, names: Iterable[str]) -> list[str]:
        wanted = list(dict.fromkeys(names))

        def work(tx: Sql) -> set[str]:
            known = set()
            # In name order: two processes forgetting the same names never deadlock.
            for name in sorted(wanted):
                if tx.execute("SELECT 1 FROM names WHERE name = ? UNION SELECT 1 FROM queue "
                              "WHERE name = ?", (name, name)).fetchone():
                    known.add(name)
                for table in PER_NAME_TABLES:
                    tx.execute(f"DELETE FROM {table} WHERE name = ?", (name,))  # noqa: S608
            return known
        known = self._transaction(work)
        return [name for name in wanted if name in known]
