"""The SQLite store's schema version and its snapshot/restore (for `namekeeper store copy`).

A mixin of `sqlite.Store`, kept apart so that the store's everyday behaviour stays in one
file and this rarely-used path in another.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from ..errors import StoreError
from .interface import SchemaVersion, StoreSnapshot
from .schema import ORDERED_BY_ID, SQLITE_SCHEMA_VERSION, TRANSFERRED_COLUMNS


class SqliteTransfer:
    """Schema version, snapshot and restore on a SQLite store."""

    if TYPE_CHECKING:
        location: str

        def _db(self) -> sqlite3.Connection: ...
        def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def schema_version(self) -> SchemaVersion:
        try:
            row = self._db().execute("SELECT value FROM settings WHERE key = 'schema_version'"
                                     ).fetchone()
        except sqlite3.DatabaseError:
            # A file SQLite cannot read is reported where it is used (the workers stop with
            # one clear error, /healthz and the CLI name it), not mistaken for a version.
            return SchemaVersion(SQLITE_SCHEMA_VERSION, SQLITE_SCHEMA_VERSION)
        # Opening the file created every table this code knows (the schema is additive, so
        # far): without a recorded version it is this code's version.  A later, incompatible
        # schema records its number, which an older namekeeper then refuses.
        return SchemaVersion(int(row["value"]) if row else SQLITE_SCHEMA_VERSION,
                             SQLITE_SCHEMA_VERSION)

    def migrate(self) -> SchemaVersion:
        # Opening the file already created every missing table (the schema is additive).
        version = self.schema_version()
        if version.found > version.known:
            raise StoreError(f"the store at {self.location}: {version.problem()}")
        return version

    def snapshot(self) -> StoreSnapshot:
        db = self._db()
        db.execute("BEGIN")  # one read transaction: a consistent picture under live writers
        try:
            tables = {table: tuple(tuple(row) for row in _rows(db, table, columns))
                      for table, columns in TRANSFERRED_COLUMNS.items()}
            paused = db.execute("SELECT value FROM settings WHERE key='budget_paused_until'"
                                ).fetchone()
        finally:
            db.execute("COMMIT")
        return StoreSnapshot(tables=tables,
                             budget_paused_until=float(paused["value"]) if paused else 0.0)

    def restore(self, snapshot: StoreSnapshot) -> None:
        with self._write() as db:
            for table in TRANSFERRED_COLUMNS:
                if db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone():  # noqa: S608
                    raise StoreError(f"the store at {self.location} is not empty "
                                     f"(table {table} has rows): copy only into a new store")
            for table, columns in TRANSFERRED_COLUMNS.items():
                marks = ", ".join("?" for _ in columns)
                db.executemany(f"INSERT INTO {table}({', '.join(columns)}) "  # noqa: S608
                               f"VALUES ({marks})", snapshot.tables.get(table, ()))
            if snapshot.budget_paused_until:
                db.execute("INSERT OR REPLACE INTO settings(key, value) "
                           "VALUES ('budget_paused_until', ?)",
                           (str(snapshot.budget_paused_until),))


def _rows(db: sqlite3.Connection, table: str, columns: tuple[str, ...]) -> Iterator[sqlite3.Row]:
    order = " ORDER BY id" if table in ORDERED_BY_ID else ""
    # Table and column names are our own constants, never input.
    yield from db.execute(f"SELECT {', '.join(columns)} FROM {table}{order}")  # noqa: S608
