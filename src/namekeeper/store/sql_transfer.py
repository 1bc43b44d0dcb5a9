"""A store's snapshot and restore, for every SQL backend (`namekeeper store copy`)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any

from ..errors import StoreError
from .interface import StoreSnapshot
from .schema import ORDERED_BY_ID, TRANSFERRED_COLUMNS
from .sql import Sql, SqlBase, T


class SqlTransfer(SqlBase):
    """Everything `schema.TRANSFERRED_COLUMNS` names, out of one store and into another."""

    @abstractmethod
    def _consistent_read(self, work: Callable[[Sql], T]) -> T:
        """Run ``work`` in one read transaction: one picture of the store under live writers."""

    def snapshot(self) -> StoreSnapshot:
        def work(sql: Sql) -> StoreSnapshot:
            tables: dict[str, tuple[tuple[Any, ...], ...]] = {}
            for table, columns in TRANSFERRED_COLUMNS.items():
                order = " ORDER BY id" if table in ORDERED_BY_ID else ""
                # Table and column names are our own constants, never input.
                rows = sql.execute(f"SELECT {', '.join(columns)} FROM {table}{order}"  # noqa: S608
                                   ).fetchall()
                tables[table] = tuple(tuple(row[c] for c in columns) for row in rows)
            return StoreSnapshot(tables=tables,
                                 budget_paused_until=self._budget_pause(sql, lock=False))
        return self._consistent_read(work)

    def restore(self, snapshot: StoreSnapshot) -> None:
        def work(tx: Sql) -> None:
            for table in TRANSFERRED_COLUMNS:
                if tx.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone():  # noqa: S608
                    raise StoreError(f"the store at {self.location} is not empty "
                                     f"(table {table} has rows): copy only into a new store")
            for table, columns in TRANSFERRED_COLUMNS.items():
                marks = ", ".join("?" for _ in columns)
                rows = snapshot.tables.get(table, ())
                if rows:
                    tx.executemany(f"INSERT INTO {table}({', '.join(columns)}) "  # noqa: S608
                                   f"VALUES ({marks})", rows)
            if snapshot.budget_paused_until:
                self._pause_budget_until(tx, snapshot.budget_paused_until)
        self._transaction(work)
