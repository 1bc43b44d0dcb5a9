"""Durable state: what we know per name, the event journal, the work queue, the budget.

SQLite in WAL mode with ``synchronous=FULL``: when `accept` returns, the event
survives a power cut, so a webhook may be acknowledged.  One connection per
thread; every write is a short ``BEGIN IMMEDIATE`` transaction, so the
service's workers, its HTTP threads and a concurrent `namekeeper` command can
share one file.

Nothing secret is ever written here: names, verdicts, messages (already
scrubbed by the reservation backend) and public facts only.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..model import NameEvent
from .interface import SchemaVersion, StoreUnavailable, StoreUnusable
from .schema import SQLITE, SQLITE_SCHEMA_VERSION, event_to_json, tables
from .sql import Sql, T
from .sql_store import SqlStore

__all__ = ["Store", "store_error"]


def store_error(location: str, exc: sqlite3.Error) -> StoreError:
    """SQLite's error as the interface's: busy or unreachable (retry), or unusable (stop)."""
    if isinstance(exc, sqlite3.OperationalError):
        return StoreUnavailable(f"the store {location} is unavailable ({exc})")
    return StoreUnusable(f"the store {location} cannot be used ({exc}); restore it from a "
                         "backup or move it away to start afresh")


class _Connection(sqlite3.Connection):
    """A connection whose errors are the store interface's, so no caller needs ``sqlite3``."""

    location = "?"

    def execute(self, sql: str, params: Any = (), /) -> sqlite3.Cursor:
        try:
            return super().execute(sql, params)
        except sqlite3.Error as exc:
            raise store_error(self.location, exc) from exc

    def executemany(self, sql: str, params: Any, /) -> sqlite3.Cursor:
        try:
            return super().executemany(sql, params)
        except sqlite3.Error as exc:
            raise store_error(self.location, exc) from exc

    def executescript(self, script: str, /) -> sqlite3.Cursor:
        try:
            return super().executescript(script)
        except sqlite3.Error as exc:
            raise store_error(self.location, exc) from exc


_WRITE_LOCKS: dict[str, threading.Lock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


#: Columns added to the queue table since its first version (old stores gain them on open).
QUEUE_COLUMNS = {"lease_until": "REAL", "confirm_at": "REAL",
                 "confirming": "INTEGER NOT NULL DEFAULT 0"}


def add_queue_columns(db: sqlite3.Connection) -> None:
    """Bring an older store's queue table up to date (idempotent)."""
    have = {row[1] for row in db.execute("PRAGMA table_info(queue)")}
    for column, kind in QUEUE_COLUMNS.items():
        if column not in have:
            db.execute(f"ALTER TABLE queue ADD COLUMN {column} {kind}")
    db.execute("CREATE INDEX IF NOT EXISTS queue_confirm ON queue(confirm_at)")


class Store(SqlStore):
    """The SQLite store; safe to share between threads and processes.

    The store's logic is the shared SQL of `sql_store.SqlStore`; here are the
    connections, the write lock, checkpoints and what SQLite keeps its own way
    (the budget's pause and the job leases in ``settings``, the schema's version).
    """

    def __init__(self, path: Path | str, *, clock: Any = time.time) -> None:
        self.path = Path(path)
        self.location = str(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._clock = clock
        #: False once `checkpoint_in_background` runs: commits then never pay for a checkpoint.
        self.autocheckpoint = True
        with _WRITE_LOCKS_GUARD:
            key = str(self.path.resolve()) if str(path) != ":memory:" else f":memory:{id(self)}"
            self._write_lock = _WRITE_LOCKS.setdefault(key, threading.Lock())
        self._db().executescript(tables(SQLITE))  # executescript manages its own transaction
        with self._write() as db:
            add_queue_columns(db)

    # -- connections --------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                     check_same_thread=False, factory=_Connection)
            except sqlite3.Error as exc:
                raise store_error(self.location, exc) from exc
            db.location = self.location
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=30000")
            if not self.autocheckpoint:
                db.execute("PRAGMA wal_autocheckpoint=0")
            self._local.db = db
        return db

    dialect = SQLITE

    def _transaction(self, work: Callable[[Sql], T], *, one_statement: bool = False) -> T:
        with self._write() as db:
            return work(db)

    @contextmanager
    def _read(self) -> Iterator[Sql]:
        try:
            yield self._db()
        except sqlite3.Error as exc:  # raised while fetching rows
            raise store_error(self.location, exc) from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # Threads of one process queue on a lock instead of in SQLite's busy handler,
        # which sleeps in steps of up to 100 ms: fair, and keeps webhook latency flat.
        # Other processes on the same file still meet SQLite's own locking.
        with self._write_lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException as exc:
                db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):  # raised while fetching rows
                    raise store_error(self.location, exc) from exc
                raise
            db.execute("COMMIT")

    def checkpoint_in_background(self, stop: threading.Event, every: float = 1.0) -> threading.Thread:
        """Move WAL checkpoints off the request path.

        An automatic checkpoint runs inside whichever commit crosses the WAL
        size limit and fsyncs the database file: measured here, a webhook then
        waits half a second.  A passive checkpoint on its own connection runs
        beside the writers instead.  Call before the threads that write start.
        """
        self.autocheckpoint = False

        def run() -> None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                 check_same_thread=False)
            try:
                while not stop.wait(every):
                    try:
                        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    except sqlite3.Error:
                        continue  # busy: the next round catches up
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                db.close()

        thread = threading.Thread(target=run, name="namekeeper-checkpoint", daemon=True)
        thread.start()
        return thread

    def background_maintenance(self, stop: threading.Event) -> threading.Thread | None:
        return self.checkpoint_in_background(stop)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def writable(self) -> bool:
        """True when a write transaction can be committed."""
        try:
            self.probe_writable()
            return True
        except StoreError:
            return False

    # -- event journal and queue ----------------------------------------------------------------

    def accept(self, event: NameEvent) -> bool:
        """Journal ``event`` and queue its name; False when the event (key) was seen before.

        Durable when it returns.  A name already queued or already reserved is not
        queued again: the same name from a webhook and a poller is one piece of work.
        """
        return self.accept_many([event])[0]

    def accept_many(self, events: list[NameEvent]) -> list[bool]:
        """`accept` for several events in one transaction: one fsync for the lot."""
        now = self._clock()
        with self._write() as db:
            return [self._accept(db, event, now) for event in events]

    def enqueue_in_order(self, events: Sequence[NameEvent]) -> list[bool]:
        """`accept` every event in one transaction, queued so that workers claim them in order.

        Each event is stamped one microsecond after the one before: the queue hands out
        the oldest first, so the order chosen by the caller is the order of the uploads.
        """
        now = self._clock()
        with self._write() as db:
            return [self._accept(db, event, now + i * 1e-6) for i, event in enumerate(events)]

    def _accept(self, db: sqlite3.Connection, event: NameEvent, now: float) -> bool:
        if event.key is not None:
            cur = db.execute("INSERT OR IGNORE INTO events(key, name, source, idx, "
                             "received_at) VALUES (?,?,?,?,?)",
                             (event.key, event.name, event.source, event.index, now))
            if cur.rowcount == 0:
                return False
        reserved = self._note_seen(db, event)
        row = db.execute("SELECT state FROM queue WHERE name = ?", (event.name,)).fetchone()
        if row is None:
            if reserved:
                return True  # held already; the periodic re-check keeps an eye on it
            db.execute("INSERT INTO queue(name, state, event, enqueued_at, updated_at) "
                       "VALUES (?, 'pending', ?, ?, ?)",
                       (event.name, event_to_json(event), now, now))
        elif row["state"] in ("done", "failed") and not reserved:
            # A name we could not hold (taken, failed) is looked at again on new evidence.
            db.execute("UPDATE queue SET state='pending', attempts=0, not_before=0, "
                       "event=?, last_error=NULL, updated_at=? WHERE name=?",
                       (event_to_json(event), now, event.name))
        return True

    # -- periodic jobs (one process at a time) -------------------------------------------------

    def lease_job(self, job: str, holder: str, seconds: float, *, now: float | None = None) -> bool:
        # In `settings` ("job-lease:<job>" -> {"holder", "expires_at"}): the write transaction
        # serialises the check and the update, and the file keeps the tables it had.
        now = self._clock() if now is None else now
        key = f"job-lease:{job}"
        with self._write() as db:
            row = db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
            lease = json.loads(row["value"]) if row else None
            if lease and lease["holder"] != holder and lease["expires_at"] > now:
                return False
            db.execute("INSERT OR REPLACE INTO settings(key, value) VALUES (?, ?)",
                       (key, json.dumps({"holder": holder, "expires_at": now + seconds})))
            return True

    def release_jobs(self, holder: str) -> None:
        with self._write() as db:
            held = [row["key"] for row in db.execute(
                "SELECT key, value FROM settings WHERE key LIKE 'job-lease:%'")
                if json.loads(row["value"])["holder"] == holder]
            db.executemany("DELETE FROM settings WHERE key = ?", [(key,) for key in held])

    # -- what SQLite keeps its own way ---------------------------------------------------------

    def _budget_pause(self, tx: Sql, *, lock: bool) -> float:
        # The write transaction already serialises spending: nothing to lock.
        row = tx.execute("SELECT value FROM settings WHERE key='budget_paused_until'").fetchone()
        return float(row["value"]) if row else 0.0

    def _pause_budget_until(self, tx: Sql, until: float) -> None:
        tx.execute("INSERT OR REPLACE INTO settings(key, value) VALUES ('budget_paused_until', ?)",
                   (str(until),))

    def probe_integrity(self) -> str | None:
        try:
            with self._read() as db:
                rows = db.execute("PRAGMA quick_check(3)").fetchall()
        except StoreError as exc:
            return str(exc.__cause__ or exc)  # SQLite's own words: the caller says which store
        found = [str(r[0]) for r in rows]
        return None if found == ["ok"] else "; ".join(found)[:300]

    # -- schema and transfer ---------------------------------------------------------------------

    def schema_version(self) -> SchemaVersion:
        try:
            row = self._db().execute("SELECT value FROM settings WHERE key = 'schema_version'"
                                     ).fetchone()
        except StoreError:
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

    def _consistent_read(self, work: Callable[[Sql], T]) -> T:
        db = self._db()
        db.execute("BEGIN")  # one read transaction: a consistent picture under live writers
        try:
            return work(db)
        finally:
            db.execute("COMMIT")
