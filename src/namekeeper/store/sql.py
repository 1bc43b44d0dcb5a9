"""The store's logic written once, in SQL that both built-in backends run.

SQLite (3.35 or newer: ``RETURNING``, ``ON CONFLICT ... DO UPDATE``) and PostgreSQL
understand the same statements for everything namekeeper does; what differs is
said once, in the backend's `Dialect` (row locks, which SQLite does not need
because it serialises writers) and in the few hooks a backend fills in
(`SqlStore._transaction`, `SqlStore._read`, `SqlStore._work_queued`).
Statements use ``?`` for parameters; the PostgreSQL backend's cursor turns them
into psycopg's ``%s``.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from .interface import DeliveryLog, StoreBackend
from .sql_delivery import SqlDeliveryLog

T = TypeVar("T")


class Sql(Protocol):
    """Where shared code runs statements: one transaction (or one read) of a backend.

    ``execute`` gives back a DB-API cursor (``fetchone``, ``fetchall``, ``rowcount``,
    iteration); rows are read by column name (``row["name"]``): SQLite's ``Row`` and
    psycopg's ``dict_row`` both allow it.
    """

    def execute(self, sql: str, params: Any = ..., /) -> Any: ...
    def executemany(self, sql: str, params: Any, /) -> Any: ...


@dataclass(frozen=True)
class Dialect:
    """The few words in which the backends' SQL differs."""

    #: Appended to a ``SELECT`` whose rows the transaction goes on to change.
    lock_rows: str
    #: Appended to a ``SELECT`` that picks rows nobody else is working on.
    skip_locked: str


#: SQLite serialises writers (``BEGIN IMMEDIATE``): a row read in a write is already ours.
SQLITE = Dialect(lock_rows="", skip_locked="")
#: Several writers at once under READ COMMITTED: lock what is read to be changed.
POSTGRESQL = Dialect(lock_rows=" FOR UPDATE", skip_locked=" FOR UPDATE SKIP LOCKED")


class SqlStore(StoreBackend):
    """The part of `StoreBackend` that is the same SQL on every built-in backend."""

    dialect: Dialect
    _clock: Callable[[], float]

    @abstractmethod
    def _transaction(self, work: Callable[[Sql], T]) -> T:
        """Run ``work`` in one write transaction (durable when this returns) and give its result."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[Sql]:
        """A connection to read from (no transaction of its own is promised)."""

    def _work_queued(self, tx: Sql) -> None:
        """Called in a transaction that made work ready; a backend may wake other processes."""

    # -- names and history -----------------------------------------------------------------------

    def _history(self, tx: Sql, name: str, kind: str, detail: dict[str, Any] | None) -> None:
        tx.execute("INSERT INTO history(name, at, kind, detail) VALUES (?,?,?,?)",
                   (name, datetime.fromtimestamp(self._clock()).astimezone().isoformat(), kind,
                    json.dumps(detail) if detail is not None else None))

    def history(self, name: str) -> list[dict[str, Any]]:
        with self._read() as sql:
            rows = sql.execute("SELECT at, kind, detail FROM history WHERE name = ? "
                               "ORDER BY id", (name,)).fetchall()
        return [{"at": r["at"], "kind": r["kind"],
                 "detail": json.loads(r["detail"]) if r["detail"] else None} for r in rows]

    # -- notification deliveries -------------------------------------------------------------------

    def delivery_log(self) -> DeliveryLog:
        """The dispatcher's memory (what was sent where, what waits for a retry), in this store."""
        return SqlDeliveryLog(self)
