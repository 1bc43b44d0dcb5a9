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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ..errors import StoreError
from ..model import NameEvent, Outcome
from .schema import (
    SCHEMA,
    NameRecord,
    dt,
    event_to_json,
    higher_version,
    name_record,
    outcome_values,
    ts,
)
from .sql import SQLITE, Sql, SqlStore
from .sqlite_budget import Budget
from .sqlite_bulk import BulkNames
from .sqlite_health import StoreHealth
from .sqlite_placeholders import PlaceholderRecords
from .sqlite_queue import QueueLeases, add_queue_columns
from .sqlite_transfer import SqliteTransfer
from .sqlite_watch import WATCH_SCHEMA, WatchMemory

__all__ = ["Store", "unusable"]


def unusable(path: Path | str, exc: sqlite3.Error) -> StoreError:
    """The one-line error for a store SQLite cannot use (corrupt, not a database, ...)."""
    return StoreError(f"the store {path} cannot be used ({exc}); restore it from a backup or "
                      "move it away to start afresh")


T = TypeVar("T")

_WRITE_LOCKS: dict[str, threading.Lock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


class Store(SqliteTransfer, QueueLeases, Budget, StoreHealth, BulkNames, WatchMemory,
            PlaceholderRecords, SqlStore):
    """The SQLite store; safe to share between threads and processes.

    The queue with its leases, the budget, the conditions, bulk name writes and our own
    placeholders live in their own modules (`sqlite_queue`, `sqlite_budget`, `sqlite_health`,
    `sqlite_bulk`, `sqlite_watch`, `sqlite_placeholders`): one concern each.
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
        self._db().executescript(SCHEMA)  # executescript manages its own transaction
        self._db().executescript(WATCH_SCHEMA)
        with self._write() as db:
            add_queue_columns(db)

    # -- connections --------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                 check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=30000")
            if not self.autocheckpoint:
                db.execute("PRAGMA wal_autocheckpoint=0")
            self._local.db = db
        return db

    dialect = SQLITE

    def _transaction(self, work: Callable[[Sql], T]) -> T:
        with self._write() as db:
            return work(db)

    @contextmanager
    def _read(self) -> Iterator[Sql]:
        yield self._db()

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
            except BaseException:
                db.execute("ROLLBACK")
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
        except sqlite3.Error:
            return False

    # -- names ----------------------------------------------------------------------------------

    def _note_seen(self, db: sqlite3.Connection, event: NameEvent) -> str | None:
        """Record the sighting; returns the name's ``reserved_at`` (None: not reserved)."""
        row = db.execute("SELECT first_seen_private, highest_private_version, reserved_at "
                         "FROM names WHERE name = ?", (event.name,)).fetchone()
        if row is None:
            db.execute(
                "INSERT INTO names(name, display_name, first_seen_private, first_source, "
                "first_index, highest_private_version, updated_at) VALUES (?,?,?,?,?,?,?)",
                (event.name, event.display_name, ts(event.seen_at), event.source, event.index,
                 event.version, ts(event.seen_at)))
            self._history(db, event.name, "seen", {"source": event.source, "index": event.index,
                                                   "version": event.version})
            return None
        first = dt(row["first_seen_private"])
        if first is None or event.seen_at < first:
            db.execute("UPDATE names SET first_seen_private = ?, first_source = ?, "
                       "first_index = ? WHERE name = ?",
                       (ts(event.seen_at), event.source, event.index, event.name))
        highest = higher_version(row["highest_private_version"], event.version)
        if highest != row["highest_private_version"]:
            db.execute("UPDATE names SET highest_private_version = ? WHERE name = ?",
                       (highest, event.name))
        reserved_at: str | None = row["reserved_at"]
        return reserved_at

    def note_seen(self, event: NameEvent) -> None:
        """Remember that a private index has this name (first time seen, highest version)."""
        with self._write() as db:
            self._note_seen(db, event)

    def get(self, name: str) -> NameRecord | None:
        row = self._db().execute("SELECT * FROM names WHERE name = ?", (name,)).fetchone()
        return name_record(row) if row else None

    def all_names(self) -> list[NameRecord]:
        rows = self._db().execute("SELECT * FROM names ORDER BY name").fetchall()
        return [name_record(r) for r in rows]

    def mark_upload_started(self, name: str, display_name: str) -> None:
        """Written before every upload, so a crash mid-upload is recognised after restart."""
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO names(name, display_name) VALUES (?, ?)",
                       (name, display_name))
            db.execute("UPDATE names SET upload_started_at = ?, attempts = attempts + 1 "
                       "WHERE name = ?", (self._clock(), name))
            self._history(db, name, "upload-started", None)

    def record_outcome(self, outcome: Outcome, *, reserved: bool = False) -> None:
        """Store the latest verdict/action for a name and append it to the history."""
        with self._write() as db:
            self._record_outcome(db, outcome, reserved)

    def _record_outcome(self, db: sqlite3.Connection, outcome: Outcome, reserved: bool) -> None:
        db.execute("INSERT OR IGNORE INTO names(name, display_name) VALUES (?, ?)",
                   (outcome.name, outcome.display_name))
        db.execute(
            "UPDATE names SET verdict=?, severity=?, action=?, reason=?, message=?, owners=?, "
            "organization=?, public_versions=?, public_first_release=?, updated_at=? "
            "WHERE name=?", (*outcome_values(outcome), outcome.name))
        if reserved:
            db.execute("UPDATE names SET reserved_at = COALESCE(reserved_at, ?) WHERE name=?",
                       (ts(outcome.at), outcome.name))
        self._history(db, outcome.name, "outcome", {
            "verdict": outcome.verdict.value, "action": outcome.action.value,
            "severity": outcome.severity.value, "message": outcome.message})

    def forget_reservation(self, name: str) -> None:
        """The index does not have our upload after all: the name is not held."""
        with self._write() as db:
            db.execute("UPDATE names SET reserved_at = NULL WHERE name = ?", (name,))
            self._history(db, name, "unconfirmed", None)

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

    def schedule_recheck(self, older_than: float, *, now: float | None = None) -> int:
        """Queue again every settled name last looked at more than ``older_than`` s ago.

        The public index changes without telling us (a placeholder removed under
        PEP 541, a taken name gaining a release or an owner): re-checking is how
        we would know.  A re-check costs lookups, never budget, unless the name
        turned out to be free again.
        """
        now = self._clock() if now is None else now
        with self._write() as db:
            cur = db.execute("UPDATE queue SET state='pending', attempts=0, not_before=0, "
                             "last_error=NULL, updated_at=? WHERE state IN ('done', 'failed') "
                             "AND updated_at <= ?", (now, now - older_than))
            return cur.rowcount + self._enqueue_unqueued(db, now)  # every name, whatever its source

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
