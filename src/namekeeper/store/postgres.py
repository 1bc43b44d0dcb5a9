"""The store on PostgreSQL: one shared database for several `serve` replicas on several hosts.

SQLite's store is correct because SQLite serialises every writer; here several
processes write at once under READ COMMITTED, so each invariant says how it
holds:

- **journal**: the event key is the primary key (``ON CONFLICT DO NOTHING``):
  two replicas receiving the same delivery journal it once.
- **queue**: `claim` takes the oldest ready row ``FOR UPDATE SKIP LOCKED``, so
  concurrent workers never claim the same name and never wait on each other.
- **budget**: `take_budget` first locks one row (``budget_lock``) ``FOR UPDATE``,
  then counts and inserts in the same transaction: the count-then-insert of all
  replicas is serialised, so the limit holds in total.  A row lock (rather than
  an advisory lock) because it is plain SQL, visible in ``pg_locks`` as an
  ordinary row lock, and released by the transaction whatever happens.
- **periodic jobs**: `lease_job` is one upsert guarded by the lease's expiry.
- **wake-ups**: a transaction that queues work sends ``NOTIFY namekeeper_work``;
  `watch_for_work` LISTENs on its own connection, so an idle replica wakes
  within milliseconds (and polls every second as a fallback while the
  connection is being re-established).

Times are the callers' clock (epoch seconds, as in SQLite), so the hosts'
clocks must agree to within seconds (NTP).  Transactions that lose a deadlock
or a serialisation conflict are retried; any other database error propagates,
so intake answers 503 rather than acknowledging an event it did not store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import StoreError
from ..model import NameEvent, Outcome
from .interface import (
    NameRecord,
    SchemaVersion,
    StoreSnapshot,
    StoreUnavailable,
)
from .postgres_budget import PostgresBudget
from .postgres_intake import PostgresIntake
from .postgres_placeholders import PLACEHOLDERS_SCHEMA_PG, PostgresPlaceholderRecords
from .postgres_queue import WORK_CHANNEL, PostgresQueue
from .postgres_watch import WATCH_SCHEMA_PG, PostgresWatchMemory
from .schema import (
    ORDERED_BY_ID,
    TRANSFERRED_COLUMNS,
    name_record,
    outcome_values,
    ts,
)
from .sql import POSTGRESQL, Sql, SqlStore, T

log = logging.getLogger(__name__)

#: The version of the schema below; `migrate` refuses a database with a higher one.
SCHEMA_VERSION = 1
_RETRIED = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
# Any fixed key: held only while a process creates or upgrades the schema.
_MIGRATION_LOCK = 7_142_031_001

SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS names (
    name TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    first_seen_private TEXT,
    first_source TEXT,
    first_index TEXT,
    highest_private_version TEXT,
    verdict TEXT,
    severity TEXT,
    action TEXT,
    reason TEXT,
    message TEXT,
    owners TEXT,
    organization TEXT,
    public_versions TEXT,
    public_first_release TEXT,
    upload_started_at DOUBLE PRECISION,
    reserved_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT
);
CREATE TABLE IF NOT EXISTS history (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS history_name ON history(name);
CREATE TABLE IF NOT EXISTS events (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    source TEXT NOT NULL,
    idx TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS queue (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    event TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before DOUBLE PRECISION NOT NULL DEFAULT 0,
    claimed_by TEXT,
    last_error TEXT,
    enqueued_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    lease_until DOUBLE PRECISION,
    confirm_at DOUBLE PRECISION,
    confirming INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS queue_ready ON queue(state, not_before);
CREATE INDEX IF NOT EXISTS queue_confirm ON queue(confirm_at);
CREATE TABLE IF NOT EXISTS budget (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS budget_lock (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    paused_until DOUBLE PRECISION NOT NULL DEFAULT 0
);
INSERT INTO budget_lock(id) VALUES (1) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS delivered (
    target TEXT NOT NULL,
    name TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (target, name)
);
CREATE TABLE IF NOT EXISTS delivery_retries (
    target TEXT NOT NULL,
    name TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (target, name)
);
CREATE TABLE IF NOT EXISTS conditions (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    since DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS job_leases (
    job TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT
);
"""

#: Schema version → the SQL that brings the previous version up to it.
MIGRATIONS = {1: SCHEMA_V1 + WATCH_SCHEMA_PG + PLACEHOLDERS_SCHEMA_PG}


class SchemaTooNew(StoreUnavailable):
    """The database was upgraded by a newer namekeeper; this one must not write to it."""


def redacted_url(url: str) -> str:
    """The URL for logs and errors: never a password, even one someone put in it."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def schema_version(conn: psycopg.Connection[Any]) -> int:
    """The database's schema version; 0 for an empty database."""
    cur = conn.cursor(row_factory=tuple_row)  # whatever the connection's own row factory
    found = cur.execute("SELECT to_regclass('settings')").fetchone()
    if found is None or found[0] is None:
        return 0
    row = cur.execute("SELECT value FROM settings WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """Create or upgrade the schema in one transaction; returns (version before, after).

    Several replicas starting at once serialise on an advisory lock, so the
    schema is created once.  A database newer than this code is refused.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        before = schema_version(conn)
        if before > SCHEMA_VERSION:
            raise SchemaTooNew(f"the store's schema is version {before}, newer than this "
                               f"namekeeper knows ({SCHEMA_VERSION}): upgrade namekeeper")
        for version in range(before + 1, SCHEMA_VERSION + 1):
            conn.execute(MIGRATIONS[version])  # our own constant SQL
            conn.execute("INSERT INTO settings(key, value) VALUES ('schema_version', %s) "
                         "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                         (str(version),))
    return before, SCHEMA_VERSION


class Cursor:
    """A psycopg cursor that also takes the shared SQL's ``?`` parameters (`store.sql`)."""

    __slots__ = ("cursor",)

    def __init__(self, cursor: psycopg.Cursor[dict[str, Any]]) -> None:
        self.cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] | None = None, /
                ) -> psycopg.Cursor[dict[str, Any]]:
        # No statement of ours has a literal "?" (PostgreSQL's jsonb "?" operator is unused).
        return self.cursor.execute(sql.replace("?", "%s"), params)

    def executemany(self, sql: str, params: Sequence[Sequence[Any]], /) -> None:
        self.cursor.executemany(sql.replace("?", "%s"), params)

    def fetchone(self) -> dict[str, Any] | None:
        return self.cursor.fetchone()

    def fetchall(self) -> list[dict[str, Any]]:
        return self.cursor.fetchall()

    @property
    def rowcount(self) -> int:
        return self.cursor.rowcount


class PostgresStore(PostgresIntake, PostgresQueue, PostgresBudget, PostgresWatchMemory,
                    PostgresPlaceholderRecords, SqlStore):
    """`StoreBackend` on a PostgreSQL database shared by any number of processes."""

    dialect = POSTGRESQL

    def __init__(self, url: str, *, password: str | None = None, clock: Any = time.time,
                 min_size: int = 1, max_size: int = 10, timeout: float = 5.0,
                 create_schema: bool = True) -> None:
        """Connect (a pool of up to ``max_size``); StoreUnavailable within ``timeout`` if not."""
        self.url = url
        self.location = redacted_url(url)
        self._clock = clock
        self._conninfo_kwargs: dict[str, Any] = {"password": password} if password else {}
        # ``check``: a connection broken by a database restart is replaced at checkout
        # instead of failing the request that drew it.
        self._pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] = ConnectionPool(
            url, kwargs={**self._conninfo_kwargs, "row_factory": dict_row},
            min_size=min_size, max_size=max_size, timeout=timeout, open=False,
            check=ConnectionPool.check_connection, name="namekeeper-store")
        try:
            self._pool.open(wait=True, timeout=timeout)
        except PoolTimeout:
            self._pool.close()
            raise StoreUnavailable(f"cannot connect to the store at {self.location} "
                                   f"within {timeout:.0f} s") from None
        # An empty database gets the schema on first use, as a new SQLite file does; an
        # existing one is only ever upgraded by `migrate` (`namekeeper store migrate`).
        if create_schema and self.schema_version().found == 0:
            self.migrate()

    # -- schema and transfer ---------------------------------------------------------------------

    def schema_version(self) -> SchemaVersion:
        with self._pool.connection() as conn:
            return SchemaVersion(schema_version(conn), SCHEMA_VERSION)

    def migrate(self) -> SchemaVersion:
        with self._pool.connection() as conn:
            conn.autocommit = True
            try:
                before, after = migrate(conn)
            except SchemaTooNew as exc:
                raise StoreError(f"the store at {self.location}: {exc}") from None
            finally:
                conn.autocommit = False
        return SchemaVersion(before, after)

    def snapshot(self) -> StoreSnapshot:
        def work(cur: Sql) -> StoreSnapshot:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            tables: dict[str, tuple[tuple[Any, ...], ...]] = {}
            for table, columns in TRANSFERRED_COLUMNS.items():
                order = " ORDER BY id" if table in ORDERED_BY_ID else ""
                # Table and column names are our own constants, never input.
                rows = cur.execute(f"SELECT {', '.join(columns)} FROM {table}{order}"  # noqa: S608
                                   ).fetchall()
                tables[table] = tuple(tuple(row[c] for c in columns) for row in rows)
            lock = cur.execute("SELECT paused_until FROM budget_lock WHERE id = 1").fetchone()
            return StoreSnapshot(tables=tables,
                                 budget_paused_until=float(lock["paused_until"]) if lock else 0.0)
        snap: StoreSnapshot = self._transaction(work)
        return snap

    def restore(self, snapshot: StoreSnapshot) -> None:
        def work(cur: Sql) -> None:
            for table in TRANSFERRED_COLUMNS:
                if cur.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone():  # noqa: S608
                    raise StoreError(f"the store at {self.location} is not empty "
                                     f"(table {table} has rows): copy only into a new store")
            for table, columns in TRANSFERRED_COLUMNS.items():
                marks = ", ".join("%s" for _ in columns)
                rows = snapshot.tables.get(table, ())
                if rows:
                    cur.executemany(f"INSERT INTO {table}({', '.join(columns)}) "  # noqa: S608
                                    f"VALUES ({marks})", rows)
            cur.execute("UPDATE budget_lock SET paused_until = %s WHERE id = 1",
                        (snapshot.budget_paused_until,))
        self._transaction(work)

    # -- connections -----------------------------------------------------------------------------

    def _transaction(self, work: Callable[[Sql], T]) -> T:
        """Run ``work`` in one transaction, again when it lost a deadlock or serialisation race."""
        with self._unreachable_as_store_error():
            for attempt in range(5):
                try:
                    with self._pool.connection() as conn, conn.transaction(), \
                            conn.cursor() as cur:
                        return work(Cursor(cur))
                except _RETRIED:
                    if attempt == 4:
                        raise
                    time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    @contextmanager
    def _read(self) -> Iterator[Cursor]:
        with self._unreachable_as_store_error(), self._pool.connection() as conn, \
                conn.cursor() as cur:
            yield Cursor(cur)

    @contextmanager
    def _unreachable_as_store_error(self) -> Iterator[None]:
        """A lost or refused connection is `StoreUnavailable`: callers need not know psycopg."""
        try:
            yield
        except (psycopg.OperationalError, PoolTimeout) as exc:
            if isinstance(exc, _RETRIED):
                raise
            # Only the first line: libpq's messages name the host, never the password.
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StoreUnavailable(f"the store at {self.location} is unavailable: "
                                   f"{first[:200]}") from None

    def close(self) -> None:
        self._pool.close()

    def writable(self) -> bool:
        try:
            self.probe_writable()
            return True
        except (psycopg.Error, PoolTimeout, StoreUnavailable):
            return False

    def watch_for_work(self, wake: Callable[[], None], stop: threading.Event
                       ) -> threading.Thread | None:
        def run() -> None:
            while not stop.is_set():
                try:
                    with psycopg.connect(self.url, autocommit=True,
                                         **self._conninfo_kwargs) as conn:
                        conn.execute(f"LISTEN {WORK_CHANNEL}")
                        wake()  # work queued while we were not listening
                        while not stop.is_set():
                            for _ in conn.notifies(timeout=1.0, stop_after=1):
                                wake()
                except psycopg.Error as exc:
                    log.debug("work notifications from %s interrupted: %s", self.location,
                              type(exc).__name__)
                    wake()  # the workers poll while we reconnect
                    stop.wait(1.0)

        thread = threading.Thread(target=run, name="namekeeper-store-listen", daemon=True)
        thread.start()
        return thread

    # -- names and history -----------------------------------------------------------------------

    def note_seen(self, event: NameEvent) -> None:
        self._transaction(lambda cur: self._note_seen_batch(cur, [event]))

    def get(self, name: str) -> NameRecord | None:
        with self._read() as cur:
            row = cur.execute("SELECT * FROM names WHERE name = %s", (name,)).fetchone()
        return name_record(row) if row else None

    def all_names(self) -> list[NameRecord]:
        with self._read() as cur:
            rows = cur.execute("SELECT * FROM names ORDER BY name").fetchall()
        return [name_record(r) for r in rows]

    def mark_upload_started(self, name: str, display_name: str) -> None:
        def work(cur: Sql) -> None:
            cur.execute("INSERT INTO names(name, display_name) VALUES (%s, %s) "
                        "ON CONFLICT DO NOTHING", (name, display_name))
            cur.execute("UPDATE names SET upload_started_at = %s, attempts = attempts + 1 "
                        "WHERE name = %s", (self._clock(), name))
            self._history(cur, name, "upload-started", None)
        self._transaction(work)

    def record_outcome(self, outcome: Outcome, *, reserved: bool = False) -> None:
        self._transaction(lambda cur: self._record_outcome(cur, outcome, reserved))

    def _record_outcome(self, cur: Sql, outcome: Outcome, reserved: bool) -> None:
        cur.execute("INSERT INTO names(name, display_name) VALUES (%s, %s) "
                    "ON CONFLICT DO NOTHING", (outcome.name, outcome.display_name))
        cur.execute(
            "UPDATE names SET verdict=%s, severity=%s, action=%s, reason=%s, message=%s, "
            "owners=%s, organization=%s, public_versions=%s, public_first_release=%s, "
            "updated_at=%s WHERE name=%s", (*outcome_values(outcome), outcome.name))
        if reserved:
            cur.execute("UPDATE names SET reserved_at = COALESCE(reserved_at, %s) "
                        "WHERE name=%s", (ts(outcome.at), outcome.name))
        self._history(cur, outcome.name, "outcome", {
            "verdict": outcome.verdict.value, "action": outcome.action.value,
            "severity": outcome.severity.value, "message": outcome.message})

    # -- many names at once (audit) --------------------------------------------------------------
    # Rows are written in name order (as in `accept_many`) so that concurrent batches never
    # deadlock on each other.

    def note_seen_many(self, events: Sequence[NameEvent]) -> None:
        self._transaction(lambda cur: self._note_seen_batch(
            cur, sorted(events, key=lambda e: e.name)))

    def records(self, names: Sequence[str]) -> dict[str, NameRecord]:
        with self._read() as cur:
            rows = cur.execute("SELECT * FROM names WHERE name = ANY(%s)",
                               (list(names),)).fetchall()
        return {row["name"]: name_record(row) for row in rows}

    def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        def work(cur: Sql) -> None:
            for outcome in sorted(outcomes, key=lambda o: o.name):
                self._record_outcome(cur, outcome, False)
        self._transaction(work)

    def enqueue_in_order(self, events: Sequence[NameEvent]) -> list[bool]:
        # One microsecond apart in the caller's order: the queue hands out the oldest first.
        return self._accept_batch(list(events), self._clock(), 1e-6)

    # -- event journal and queue -----------------------------------------------------------------

    def accept_many(self, events: list[NameEvent]) -> list[bool]:
        # A microsecond apart: rows are written in name order (below), but a batch is
        # claimed in the order it arrived, as SQLite's rowid keeps it there.
        return self._accept_batch(events, self._clock(), 1e-6)

