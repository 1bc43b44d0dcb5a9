"""The dispatcher's `DeliveryLog` in the store's own tables, for every SQL backend.

Deduplication and pending retries must survive a restart, or a restarted
service would repeat every alert (or forget the ones that failed), so they
live with the rest of namekeeper's state; on PostgreSQL the replicas share them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..model import Action, Verdict
from .interface import Condition, DeliveryLog, Retry

if TYPE_CHECKING:
    from .sql import Sql, SqlBase


class SqlDeliveryLog(DeliveryLog):
    """`DeliveryLog` on the tables ``delivered`` and ``delivery_retries``."""

    def __init__(self, store: SqlBase) -> None:
        self.store = store

    def was_delivered(self, target: str, name: str, fingerprint: str) -> bool:
        with self.store._read() as sql:
            row = sql.execute("SELECT fingerprint FROM delivered WHERE target=? AND name=?",
                              (target, name)).fetchone()
        return row is not None and row["fingerprint"] == fingerprint

    def record_delivery(self, target: str, name: str, fingerprint: str, ok: bool,
                        error: str | None) -> None:
        def work(tx: Sql) -> None:
            if ok:
                tx.execute("INSERT INTO delivered VALUES (?, ?, ?, ?) "
                           "ON CONFLICT (target, name) DO UPDATE SET "
                           "fingerprint = excluded.fingerprint, at = excluded.at",
                           (target, name, fingerprint, self.store._clock()))
            self.store._history(tx, name, "notified" if ok else "notify-failed",
                                {"target": target, "error": error})
        self.store._transaction(work)

    def schedule_retry(self, retry: Retry) -> None:
        self.store._transaction(lambda tx: tx.execute(
            "INSERT INTO delivery_retries VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (target, name) DO UPDATE SET fingerprint = excluded.fingerprint, "
            "payload = excluded.payload, attempts = excluded.attempts, next_at = excluded.next_at "
            "WHERE excluded.attempts = 1 OR delivery_retries.fingerprint = excluded.fingerprint",
            (retry.target, retry.name, retry.fingerprint, retry.payload, retry.attempts,
             retry.next_at)), one_statement=True)

    def retry_for(self, target: str, name: str) -> Retry | None:
        with self.store._read() as sql:
            row = sql.execute("SELECT * FROM delivery_retries WHERE target=? AND name=?",
                              (target, name)).fetchone()
        return _retry(row) if row else None

    def clear_retry(self, target: str, name: str, fingerprint: str | None = None) -> None:
        self.store._transaction(lambda tx: tx.execute(
            "DELETE FROM delivery_retries WHERE target=? AND name=? "
            "AND fingerprint = COALESCE(?, fingerprint)", (target, name, fingerprint)),
            one_statement=True)

    def pending_retries(self, now: float) -> list[Retry]:
        with self.store._read() as sql:
            rows = sql.execute("SELECT * FROM delivery_retries WHERE next_at <= ? "
                               "ORDER BY next_at", (now,)).fetchall()
        return [_retry(r) for r in rows]

    def claim_retry(self, retry: Retry, until: float) -> bool:
        # Every column that a claim, a new attempt or a newer alert changes is compared: a
        # retry read before any of them (or before its row was deleted) is no longer pending.
        return self.store._transaction(lambda tx: tx.execute(
            "UPDATE delivery_retries SET next_at=? WHERE target=? AND name=? AND fingerprint=? "
            "AND attempts=? AND next_at=?",
            (until, retry.target, retry.name, retry.fingerprint, retry.attempts, retry.next_at)
            ).rowcount == 1, one_statement=True)

    def current_state(self, name: str) -> tuple[Verdict, Action] | None:
        with self.store._read() as sql:
            row = sql.execute("SELECT verdict, action FROM names WHERE name=?",
                              (name,)).fetchone()
        if row is None or row["verdict"] is None or row["action"] is None:
            return None
        return Verdict(row["verdict"]), Action(row["action"])

    def active_condition(self, key: str) -> Condition | None:
        with self.store._read() as sql:
            row = sql.execute("SELECT key, text, since FROM conditions WHERE key=?",
                              (key,)).fetchone()
        return Condition(row["key"], row["text"], row["since"]) if row else None


def _retry(row: Any) -> Retry:
    return Retry(target=row["target"], name=row["name"], fingerprint=row["fingerprint"],
                 payload=row["payload"], attempts=row["attempts"], next_at=row["next_at"])
