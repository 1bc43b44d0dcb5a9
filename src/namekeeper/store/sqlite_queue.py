"""The work queue with leases: a claim has a holder and an expiry, renewed while working.

Part of the store's contract (`sqlite.Store` mixes it in), written in plain SQL
that any transactional database can run, so that several processes — on one
machine or on many, sharing one database — can drain one queue:

- `claim` gives the oldest ready item to ``holder`` for ``lease_seconds``;
- the holder `renew`s the lease while it works (the worker pool does it from
  a heartbeat thread), so a slow upload never loses its item;
- only an *expired* lease is reclaimed (`reclaim_expired`), by any process, at
  any time: a second process started on the same store never takes work that
  a live one holds;
- `begin_upload` is the last step before an upload: it records
  ``upload_started_at`` and succeeds only while the lease is held, so a lost
  lease never leads to an upload nobody is waiting for;
- `complete` / `release` settle an item only for its holder: an item that was
  reclaimed meanwhile belongs to its new holder.

A holder is a string naming one process (`holder_id`: host, pid and a random
part, so a reused pid on another host or after a restart is another holder).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from .interface import DEFAULT_LEASE, QueueState, Released
from .schema import WorkItem, event_from_json

if TYPE_CHECKING:
    from collections.abc import Callable

#: Columns added to the queue table since its first version (old stores gain them on open).
QUEUE_COLUMNS = {
    "lease_until": "REAL",
    # When a done item must be looked at again to confirm an upload (None: nothing to confirm).
    "confirm_at": "REAL",
    # 1 while the item is a confirmation (a lookup, never an upload).
    "confirming": "INTEGER NOT NULL DEFAULT 0",
}


def add_queue_columns(db: sqlite3.Connection) -> None:
    """Bring an older store's queue table up to date (idempotent)."""
    have = {row[1] for row in db.execute("PRAGMA table_info(queue)")}
    for column, kind in QUEUE_COLUMNS.items():
        if column not in have:
            db.execute(f"ALTER TABLE queue ADD COLUMN {column} {kind}")
    db.execute("CREATE INDEX IF NOT EXISTS queue_confirm ON queue(confirm_at)")


class QueueLeases:
    """The queue methods of the store; needs ``_write``, ``_db``, ``_clock`` and ``_history``."""

    _clock: Callable[[], float]

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:  # pragma: no cover
        raise NotImplementedError

    def _db(self) -> sqlite3.Connection:  # pragma: no cover
        raise NotImplementedError

    if TYPE_CHECKING:
        def _history(self, db: Any, name: str, kind: str, detail: dict[str, Any] | None
                     ) -> None: ...

    def claim(self, holder: str, lease_seconds: float = DEFAULT_LEASE, *,
              now: float | None = None) -> WorkItem | None:
        """Lease the oldest ready item to ``holder`` until ``now + lease_seconds``, or None."""
        now = self._clock() if now is None else now
        with self._write() as db:
            self._due_confirmations(db, now)
            row = db.execute("SELECT name, event, attempts, confirming FROM queue "
                             "WHERE state='pending' AND not_before <= ? "
                             # rowid: a batch shares one enqueued_at; keep its order
                             "ORDER BY not_before, enqueued_at, rowid LIMIT 1", (now,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE queue SET state='claimed', claimed_by=?, lease_until=?, "
                       "updated_at=? WHERE name=? AND state='pending'",
                       (holder, now + lease_seconds, now, row["name"]))
        return WorkItem(row["name"], event_from_json(row["event"]), row["attempts"],
                        confirming=bool(row["confirming"]))

    def renew(self, name: str, holder: str, lease_seconds: float = DEFAULT_LEASE) -> bool:
        """Extend ``holder``'s lease on ``name``; False when it is no longer theirs."""
        now = self._clock()
        with self._write() as db:
            cur = db.execute("UPDATE queue SET lease_until=? WHERE name=? AND state='claimed' "
                             "AND claimed_by=?", (now + lease_seconds, name, holder))
            return cur.rowcount == 1

    def reclaim_expired(self, *, now: float | None = None) -> list[str]:
        """Make every item whose lease has expired pending again; returns their names.

        Safe from any process at any time: a live holder renews long before expiry.
        """
        now = self._clock() if now is None else now
        expired = "SELECT name, claimed_by FROM queue WHERE state='claimed' " \
                  "AND COALESCE(lease_until, 0) < ?"
        if not self._db().execute(expired, (now,)).fetchone():
            return []  # the usual case: a read, no write transaction
        with self._write() as db:
            rows = db.execute(expired, (now,)).fetchall()
            for row in rows:
                db.execute("UPDATE queue SET state='pending', claimed_by=NULL, lease_until=NULL, "
                           "updated_at=? WHERE name=? AND state='claimed'", (now, row["name"]))
                self._history(db, row["name"], "lease-expired", {"holder": row["claimed_by"]})
        return [r["name"] for r in rows]

    def stuck_leases(self, grace: float, *, now: float | None = None) -> int:
        """Items whose lease expired more than ``grace`` s ago and that nobody reclaimed."""
        now = self._clock() if now is None else now
        row = self._db().execute("SELECT COUNT(*) AS n FROM queue WHERE state='claimed' "
                                 "AND COALESCE(lease_until, 0) < ?", (now - grace,)).fetchone()
        return int(row["n"])

    def begin_upload(self, name: str, holder: str, display_name: str) -> bool:
        """Record ``upload_started_at`` while ``holder`` holds ``name``; False: lease lost, do not upload."""
        now = self._clock()
        with self._write() as db:
            row = db.execute("SELECT 1 FROM queue WHERE name=? AND state='claimed' AND "
                             "claimed_by=? AND lease_until >= ?", (name, holder, now)).fetchone()
            if row is None:
                return False
            db.execute("INSERT OR IGNORE INTO names(name, display_name) VALUES (?, ?)",
                       (name, display_name))
            db.execute("UPDATE names SET upload_started_at = ?, attempts = attempts + 1 "
                       "WHERE name = ?", (now, name))
            self._history(db, name, "upload-started", {"holder": holder})
        return True

    def complete(self, name: str, holder: str, *, confirm_at: float | None = None) -> bool:
        """``holder`` is done with ``name``; ``confirm_at``: look at it again then.

        False when the lease was lost meanwhile (the item is someone else's now).
        """
        with self._write() as db:
            cur = db.execute("UPDATE queue SET state='done', claimed_by=NULL, lease_until=NULL, "
                             "last_error=NULL, confirming=0, confirm_at=?, updated_at=? "
                             "WHERE name=? AND state='claimed' AND claimed_by=?",
                             (confirm_at, self._clock(), name, holder))
            return cur.rowcount == 1

    def release(self, name: str, holder: str, *, not_before: float, error: str | None = None,
                count_attempt: bool = True, max_attempts: int | None = None,
                confirming: bool = False) -> Released:
        """Give a claimed item back for a later try.

        Returns what became of it: `Released.PENDING`, `Released.FAILED` (``max_attempts``
        reached), or `Released.LOST` when ``holder`` no longer held it (nothing changed).
        """
        now = self._clock()
        with self._write() as db:
            row = db.execute("SELECT attempts FROM queue WHERE name=? AND state='claimed' "
                             "AND claimed_by=?", (name, holder)).fetchone()
            if row is None:
                return Released.LOST
            attempts = row["attempts"] + (1 if count_attempt else 0)
            state = (Released.FAILED if max_attempts is not None and attempts >= max_attempts
                     else Released.PENDING)
            db.execute("UPDATE queue SET state=?, attempts=?, not_before=?, last_error=?, "
                       "claimed_by=NULL, lease_until=NULL, confirming=?, updated_at=? "
                       "WHERE name=?",
                       (state.value, attempts, not_before, error,
                        int(confirming and state is Released.PENDING), now, name))
            if state is Released.FAILED:
                self._history(db, name, "failed", {"error": error, "attempts": attempts})
        return state

    def release_held(self, holder: str) -> int:
        """On a clean shutdown: every item ``holder`` still holds is pending again at once."""
        with self._write() as db:
            cur = db.execute("UPDATE queue SET state='pending', claimed_by=NULL, lease_until=NULL, "
                             "updated_at=? WHERE state='claimed' AND claimed_by=?",
                             (self._clock(), holder))
            return cur.rowcount

    def schedule_confirmations(self, *, now: float | None = None) -> int:
        """Queue a lookup for every done item whose ``confirm_at`` has come."""
        now = self._clock() if now is None else now
        if not self._db().execute("SELECT 1 FROM queue WHERE confirm_at <= ? AND state='done' "
                                  "LIMIT 1", (now,)).fetchone():
            return 0
        with self._write() as db:
            return self._due_confirmations(db, now)

    @staticmethod
    def _due_confirmations(db: sqlite3.Connection, now: float) -> int:
        cur = db.execute("UPDATE queue SET state='pending', confirming=1, not_before=0, "
                         "confirm_at=NULL, updated_at=? WHERE confirm_at <= ? AND state='done'",
                         (now, now))
        return cur.rowcount

    def next_ready_at(self) -> float | None:
        """When the earliest pending item (or confirmation) becomes ready, for the workers' sleep."""
        row = self._db().execute(
            "SELECT MIN(t) AS t FROM (SELECT MIN(not_before) AS t FROM queue WHERE "
            "state='pending' UNION ALL SELECT MIN(confirm_at) FROM queue WHERE state='done')"
        ).fetchone()
        return row["t"] if row and row["t"] is not None else None

    def queue_counts(self) -> dict[QueueState, int]:
        counts = dict.fromkeys(QueueState, 0)
        for r in self._db().execute("SELECT state, COUNT(*) AS n FROM queue GROUP BY state"):
            counts[QueueState(r["state"])] = int(r["n"])
        return counts

    def queue_items(self, state: QueueState | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT name, state, attempts, not_before, last_error, claimed_by, lease_until, "
               "confirm_at FROM queue")
        rows: Iterator[sqlite3.Row] = (
            self._db().execute(sql + " WHERE state=? ORDER BY name", (QueueState(state).value,)) if state
            else self._db().execute(sql + " ORDER BY name"))
        return [{**dict(r), "state": QueueState(r["state"])} for r in rows]
