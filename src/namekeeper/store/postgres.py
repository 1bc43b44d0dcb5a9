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
or a serialisation conflict are retried; any other database error is the
store's (`store_error`), so intake answers 503 rather than acknowledging an
event it did not store.
"""

from __future__ import annotations

import logging
import re
import select
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row, tuple_row
from psycopg.types.string import StrBinaryDumper, StrDumperUnknown
from psycopg_pool import ConnectionPool, PoolTimeout

from ..config import redact
from ..errors import StoreError
from ..model import NameEvent
from ..names import one_line
from .interface import (
    SchemaVersion,
    StoreUnavailable,
    StoreUnusable,
)
from .postgres_intake import WORK_CHANNEL, PostgresIntake, stored_text
from .schema import POSTGRESQL, tables, ultranormalized
from .sql import Sql, T
from .sql_store import SqlStore

log = logging.getLogger(__name__)
# The pool warns of every failed connection attempt in libpq's words, several lines each;
# a lost database is reported by us instead, once, as `StoreUnavailable` (one CLI line,
# one log line and /healthz red under `serve`), with libpq's reason when it gives one.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

#: The version of the schema below; `migrate` refuses a database with a higher one.
SCHEMA_VERSION = 2
_RETRIED = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
#: Of class 25, what a later try can get past: a standby refusing writes (read-only since a
#: failover), a transaction cut off by the idle-in-transaction or the transaction timeout.
_TRANSIENT_STATES = frozenset({"25006", "25P03", "25P04"})
# Any fixed key: held only while a process creates or upgrades the schema.
_MIGRATION_LOCK = 7_142_031_001

#: What only PostgreSQL keeps: the row every replica's budget spending locks (and the 429
#: pause), and the leases on periodic jobs.
_POSTGRES_TABLES = """
CREATE INDEX IF NOT EXISTS queue_confirm ON queue(confirm_at);
CREATE TABLE IF NOT EXISTS budget_lock (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    paused_until DOUBLE PRECISION NOT NULL DEFAULT 0
);
INSERT INTO budget_lock(id) VALUES (1) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS job_leases (
    job TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
"""

#: Schema version → the SQL that brings the previous version up to it.
MIGRATIONS = {1: tables(POSTGRESQL) + _POSTGRES_TABLES,
              # Version 2: the index on each name's "too similar" key, so that a worker's
              # `held_in_class` reads one row, not every held name.  (A new database has
              # it from version 1's tables already.)
              2: f"CREATE INDEX IF NOT EXISTS names_ultra ON names (({ultranormalized('name')}))"}


class SchemaTooNew(StoreUnavailable):
    """The database was upgraded by a newer namekeeper; this one must not write to it."""


def store_error(location: str, exc: psycopg.Error, secrets: Iterable[str | None] = ()
                ) -> StoreError:
    """psycopg's error as the interface's: unavailable (a later try may work) or unusable.

    Unavailable: every `OperationalError` (the connection lost, refused or timed out, a
    deadlock or serialisation race lost on every retry, a server shutting down or out of
    resources), the client's `InterfaceError`, and `_TRANSIENT_STATES`.  Anything else (a
    missing table or column, a permission the role lacks) stays until someone acts.
    """
    first = _first_line(exc, secrets)
    if (isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
            or exc.sqlstate in _TRANSIENT_STATES):
        return StoreUnavailable(f"the store at {location} is unavailable: {first}")
    return StoreUnusable(f"the store at {location} cannot be used: {first}")


#: What libpq says before its reason, naming the host and port the message names already.
_CONNECTING = re.compile(r"^(?:connection failed: )?connection to server (?:at|on) .*? failed: "
                         r"(?:FATAL: )?")


def _first_line(exc: psycopg.Error, secrets: Iterable[str | None]) -> str:
    # Only the first line (libpq adds context and hints), and never a secret it may echo.
    text = redact(str(exc), [s for s in secrets if s]).strip()
    first = _CONNECTING.sub("", one_line((text.splitlines() or [""])[0]), count=1)
    return one_line(first, 200) or type(exc).__name__


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


class _TextDumper(StrDumperUnknown):
    def dump(self, obj: str) -> Any:
        return super().dump(stored_text(obj))


class _TextBinaryDumper(StrBinaryDumper):
    def dump(self, obj: str) -> Any:
        return super().dump(stored_text(obj))


def _configure(conn: psycopg.Connection[Any]) -> None:
    # PostgreSQL's text cannot hold a NUL, which outside text (a public index's answer, an
    # exception quoting it) may carry: refused, the write is a DataError, which stops every
    # worker (StoreUnusable), of every replica that claims the name.  SQLite keeps it.
    # The text dumper last: the one registered last is the default (psycopg's own default,
    # an untyped literal that PostgreSQL types by its column).
    conn.adapters.register_dumper(str, _TextBinaryDumper)
    conn.adapters.register_dumper(str, _TextDumper)


class PooledConnection(psycopg.Connection[dict[str, Any]]):
    """A connection of the store's pool, which remembers when it was last given back."""

    #: A connection given back this recently is handed out again without a round trip (s).
    UNCHECKED_FOR = 1.0
    given_back_at = float("-inf")

    @staticmethod
    def given_back(conn: PooledConnection) -> None:
        conn.given_back_at = time.monotonic()

    def lost(self) -> bool:
        """Whether this connection, drawn from the pool, is no longer usable.

        Under load a connection comes back within milliseconds, and checking it every
        time would be one more round trip per transaction for nothing.  So one is
        checked only when it sat idle (a database host may have gone meanwhile) or when
        the server wrote to it in the pool, which it does only to say it is closing it
        (a restart, which can take a fifth of a second; ``pg_terminate_backend``).
        """
        if time.monotonic() - self.given_back_at <= self.UNCHECKED_FOR:
            poller = select.poll()
            poller.register(self.fileno(), select.POLLIN)
            if not poller.poll(0):
                return False
        try:
            ConnectionPool.check_connection(self)  # reads what the server said: may be harmless
        except psycopg.Error:
            return True
        return False


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


class PostgresStore(PostgresIntake, SqlStore):
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
        self._secrets = (password, urlsplit(url).password)
        # Autocommit: a read is one statement, not BEGIN, the statement and the pool's
        # ROLLBACK; `_transaction` still opens its own (BEGIN ... COMMIT).  A connection
        # broken by a database restart is replaced at checkout (`_connection`) instead of
        # failing the request that drew it.  No statement is prepared on the server (psycopg
        # does after 5 uses): behind a transaction-mode pooler (PgBouncer) the next
        # transaction may run on a server connection that never saw it.  That costs the
        # planning of every statement: measured, about 1.5 ms of an intake batch of 8 events
        # (5.9 against 4.4 ms), which a pooler in front of the database is worth.
        self._pool: ConnectionPool[PooledConnection] = ConnectionPool(
            url, connection_class=PooledConnection,
            kwargs={**self._conninfo_kwargs, "row_factory": dict_row, "autocommit": True,
                    "prepare_threshold": None},
            min_size=min_size, max_size=max_size, timeout=timeout, open=False,
            configure=_configure, reset=PooledConnection.given_back,
            name="namekeeper-store")
        try:
            self._pool.open(wait=True, timeout=timeout)
        except PoolTimeout:
            self._pool.close()
            why = self._why_no_connection()
            raise StoreUnavailable(f"cannot connect to the store at {self.location}"
                                   + (f": {why}" if why else f" within {timeout:.0f} s")
                                   ) from None
        # An empty database gets the schema on first use, as a new SQLite file does; an
        # existing one is only ever upgraded by `migrate` (`namekeeper store migrate`).
        if create_schema and self.schema_version().found == 0:
            self.migrate()

    def _why_no_connection(self) -> str | None:
        """libpq's reason (a wrong password, no such database) that the pool keeps to itself."""
        try:
            psycopg.connect(self.url, connect_timeout=2, **self._conninfo_kwargs).close()
        except psycopg.Error as exc:
            return _first_line(exc, self._secrets)
        return None  # it connects now: the pool was only slow

    # -- schema and transfer ---------------------------------------------------------------------

    def schema_version(self) -> SchemaVersion:
        with self._as_store_error(), self._connection() as conn:
            return SchemaVersion(schema_version(conn), SCHEMA_VERSION)

    def migrate(self) -> SchemaVersion:
        with self._as_store_error(), self._connection() as conn:
            try:
                before, after = migrate(conn)
            except SchemaTooNew as exc:
                raise StoreError(f"the store at {self.location}: {exc}") from None
        return SchemaVersion(before, after)

    def _consistent_read(self, work: Callable[[Sql], T]) -> T:
        def read(tx: Sql) -> T:
            tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return work(tx)
        return self._transaction(read)

    # -- connections -----------------------------------------------------------------------------

    def _transaction(self, work: Callable[[Sql], T], *, one_statement: bool = False) -> T:
        """Run ``work`` in one transaction, again when it lost a deadlock or serialisation race."""
        with self._as_store_error():
            for attempt in range(5):
                try:
                    # The connections autocommit: a single statement is its own transaction.
                    with self._connection() as conn, \
                            nullcontext() if one_statement else conn.transaction(), \
                            conn.cursor() as cur:
                        return work(Cursor(cur))
                except _RETRIED:
                    if attempt == 4:
                        raise
                    time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    @contextmanager
    def _read(self) -> Iterator[Cursor]:
        with self._as_store_error(), self._connection() as conn, conn.cursor() as cur:
            yield Cursor(cur)

    @contextmanager
    def _connection(self) -> Iterator[PooledConnection]:
        """A connection of the pool that still works (`PooledConnection.lost`)."""
        # After a restart every pooled connection is closed: each is passed over at once
        # (the pool replaces it), where the pool's own ``check`` would wait a second, then
        # two, ... before it tried the next one.
        for _ in range(self._pool.max_size):
            with self._pool.connection() as conn:
                if not conn.lost():
                    yield conn
                    return
        with self._pool.connection() as conn:  # a new one, or the pool's timeout
            yield conn

    @contextmanager
    def _as_store_error(self) -> Iterator[None]:
        """psycopg's errors as the store's (`store_error`): callers need not know psycopg."""
        try:
            yield
        except PoolTimeout:
            # The database went away, or refuses us now (a password rotated while we run):
            # say which, as at start, rather than the pool's "couldn't get a connection".
            why = self._why_no_connection()
            raise StoreUnavailable(f"the store at {self.location} is unavailable: "
                                   + (why or "no connection came free in time")) from None
        except psycopg.Error as exc:
            raise store_error(self.location, exc, self._secrets) from None

    def close(self) -> None:
        self._pool.close()

    def writable(self) -> bool:
        try:
            self.probe_writable()
            return True
        except StoreError:
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

    # -- event journal and queue -----------------------------------------------------------------

    def enqueue_in_order(self, events: Sequence[NameEvent]) -> list[bool]:
        # One microsecond apart in the caller's order: the queue hands out the oldest first.
        return self._accept_batch(list(events), self._clock(), 1e-6)

    def accept_many(self, events: list[NameEvent]) -> list[bool]:
        # A microsecond apart: rows are written in name order (below), but a batch is
        # claimed in the order it arrived, as SQLite's rowid keeps it there.
        return self._accept_batch(events, self._clock(), 1e-6)

    # -- what PostgreSQL keeps its own way -------------------------------------------------------

    def _work_queued(self, tx: Sql) -> None:
        tx.execute(f"NOTIFY {WORK_CHANNEL}")

    def _budget_pause(self, tx: Sql, *, lock: bool) -> float:
        row = tx.execute("SELECT paused_until FROM budget_lock WHERE id = 1"  # noqa: S608
                         + (self.dialect.lock_rows if lock else "")).fetchone()
        return float(row["paused_until"]) if row else 0.0

    def _pause_budget_until(self, tx: Sql, until: float) -> None:
        tx.execute("UPDATE budget_lock SET paused_until = ? WHERE id = 1", (until,))

    def probe_integrity(self) -> str | None:
        # PostgreSQL checks its own pages (and checksums, when enabled); what can go wrong on
        # our side is a schema that is not the one this code writes.
        try:
            with self._read() as sql:
                row = sql.execute("SELECT value FROM settings WHERE key='schema_version'"
                                  ).fetchone()
        except StoreError as exc:
            return " ".join(str(exc).split())[:300]
        return None if row else "the store has no schema version"

    def clock_offset(self, now: Callable[[], float]) -> float | None:
        with self._read() as sql:
            before = now()
            row = sql.execute("SELECT extract(epoch FROM clock_timestamp())::float8 AS at"
                              ).fetchone()
            after = now()
        assert row is not None
        return (before + after) / 2 - float(row["at"])

    def lease_job(self, job: str, holder: str, seconds: float, *, now: float | None = None) -> bool:
        at = self._clock() if now is None else now
        row = self._transaction(lambda tx: tx.execute(
            "INSERT INTO job_leases(job, holder, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (job) DO UPDATE SET holder = EXCLUDED.holder, "
            "expires_at = EXCLUDED.expires_at "
            "WHERE job_leases.holder = EXCLUDED.holder OR job_leases.expires_at <= ? "
            "RETURNING holder", (job, holder, at + seconds, at)).fetchone(), one_statement=True)
        return row is not None

    def release_jobs(self, holder: str) -> None:
        self._transaction(lambda tx: tx.execute("DELETE FROM job_leases WHERE holder = ?",
                                                (holder,)), one_statement=True)
