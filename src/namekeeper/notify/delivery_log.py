"""The dispatcher's `DeliveryLog` on the SQLite store.

Deduplication and pending retries must survive a restart, or a restarted
service would repeat every alert (or forget the ones that failed), so they
live in the same file as the rest of namekeeper's state.
"""

from __future__ import annotations

import sqlite3

from ..store.sqlite import Store
from .dispatch import Retry


class StoreDeliveryLog:
    """`notify.dispatch.DeliveryLog` on the store, so dedup and retries survive restarts."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def was_delivered(self, target: str, name: str, fingerprint: str) -> bool:
        row = self.store._db().execute("SELECT fingerprint FROM delivered WHERE target=? AND "
                                       "name=?", (target, name)).fetchone()
        return row is not None and row["fingerprint"] == fingerprint

    def record_delivery(self, target: str, name: str, fingerprint: str, ok: bool,
                        error: str | None) -> None:
        with self.store._write() as db:
            if ok:
                db.execute("INSERT OR REPLACE INTO delivered VALUES (?, ?, ?, ?)",
                           (target, name, fingerprint, self.store._clock()))
            self.store._history(db, name, "notified" if ok else "notify-failed",
                                {"target": target, "error": error})

    def schedule_retry(self, retry: Retry) -> None:
        with self.store._write() as db:
            db.execute("INSERT OR REPLACE INTO delivery_retries VALUES (?, ?, ?, ?, ?, ?)",
                       (retry.target, retry.name, retry.fingerprint, retry.payload,
                        retry.attempts, retry.next_at))

    def retry_for(self, target: str, name: str) -> Retry | None:
        row = self.store._db().execute("SELECT * FROM delivery_retries WHERE target=? AND name=?",
                                       (target, name)).fetchone()
        return self._retry(row) if row else None

    def clear_retry(self, target: str, name: str) -> None:
        with self.store._write() as db:
            db.execute("DELETE FROM delivery_retries WHERE target=? AND name=?", (target, name))

    def pending_retries(self, now: float) -> list[Retry]:
        rows = self.store._db().execute("SELECT * FROM delivery_retries WHERE next_at <= ? "
                                        "ORDER BY next_at", (now,)).fetchall()
        return [self._retry(r) for r in rows]

    def current_state(self, name: str) -> tuple[str, str] | None:
        row = self.store._db().execute("SELECT verdict, action FROM names WHERE name=?",
                                       (name,)).fetchone()
        if row is None or row["verdict"] is None or row["action"] is None:
            return None
        return row["verdict"], row["action"]

    @staticmethod
    def _retry(row: sqlite3.Row) -> Retry:
        return Retry(target=row["target"], name=row["name"], fingerprint=row["fingerprint"],
                     payload=row["payload"], attempts=row["attempts"], next_at=row["next_at"])
