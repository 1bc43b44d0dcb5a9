"""The work queue with leases, for every SQL backend: a claim has a holder and an expiry.

Several processes — on one machine or on many, sharing one database — drain one queue:

- `claim` gives the oldest ready item to ``holder`` for ``lease_seconds``; on
  PostgreSQL the row is picked ``FOR UPDATE SKIP LOCKED``, so concurrent workers
  never claim the same name and never wait on each other (SQLite serialises
  writers, so the same statement needs no lock there);
- the holder `renew`s the lease while it works (the worker pool does it from
  a heartbeat thread), so a slow upload never loses its item;
- only an *expired* lease is reclaimed (`reclaim_expired`), by any process, at
  any time: a second process started on the same store never takes work that
  a live one holds;
- `begin_upload` is the last step before an upload: it records
  ``upload_started_at`` and succeeds only while the lease is held, so a lost
  lease never leads to an upload nobody is waiting for;
- `complete` / `release` settle an item only for its claim: an item that was
  reclaimed meanwhile belongs to its new claim.

A holder is a string naming one process (`interface.holder_id`).  Its threads share it,
so a claim is known by its own id, ``claimed_by`` = ``<holder>/<random hex>``
(`WorkItem.claim`): a thread whose claim lapsed cannot upload or settle the name once
another thread of the same process claimed it again.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Any

from ..model import Action, NameEvent, from_iso
from .interface import DEFAULT_LEASE, QueueState, Released, WorkItem
from .schema import event_from_json, event_to_json
from .sql import Sql, SqlBase


def _holder_of(claim: str) -> str:
    return claim.rpartition("/")[0]


class SqlQueue(SqlBase):
    """The queue part of `StoreBackend` (and the schedules that fill it)."""

    def claim(self, holder: str, lease_seconds: float = DEFAULT_LEASE, *,
              now: float | None = None) -> WorkItem | None:
        at = self._clock() if now is None else now
        claim = f"{holder}/{secrets.token_hex(8)}"

        def work(tx: Sql) -> Any:
            return tx.execute(
                "UPDATE queue SET state='claimed', claimed_by=?, lease_until=?, updated_at=? "  # noqa: S608
                "WHERE name = (SELECT name FROM queue WHERE state='pending' AND not_before <= ? "
                f"  ORDER BY not_before, enqueued_at{self.dialect.arrival} LIMIT 1"
                f"{self.dialect.skip_locked}) RETURNING name, event, attempts, confirming",
                (claim, at + lease_seconds, at, at)).fetchone()
        row = self._transaction(work, one_statement=True)
        # Due confirmations are queued here only when nothing else is ready (and by every
        # heartbeat): a claim under load stays one statement, and a due one waits seconds.
        if row is None and self.schedule_confirmations(now=at):
            row = self._transaction(work, one_statement=True)
        if row is None:
            return None
        return WorkItem(row["name"], event_from_json(row["event"]), row["attempts"], claim,
                        confirming=bool(row["confirming"]))

    def renew(self, name: str, claim: str, lease_seconds: float = DEFAULT_LEASE) -> bool:
        until = self._clock() + lease_seconds
        return self._transaction(lambda tx: tx.execute(
            "UPDATE queue SET lease_until=? WHERE name=? AND state='claimed' AND claimed_by=?",
            (until, name, claim)).rowcount == 1, one_statement=True)

    def reclaim_expired(self, *, now: float | None = None) -> list[str]:
        """Safe from any process at any time: a live holder renews long before expiry."""
        at = self._clock() if now is None else now
        expired = ("SELECT name, claimed_by FROM queue WHERE state='claimed' "
                   "AND COALESCE(lease_until, 0) < ? ORDER BY name")
        with self._read() as sql:
            if not sql.execute(expired + " LIMIT 1", (at,)).fetchone():
                return []  # the usual case: a read, no write transaction

        def work(tx: Sql) -> list[str]:
            # SKIP LOCKED: an item another process is reclaiming (or renewing) right now is theirs.
            rows = tx.execute(expired + self.dialect.skip_locked, (at,)).fetchall()
            for row in rows:
                tx.execute("UPDATE queue SET state='pending', claimed_by=NULL, lease_until=NULL, "
                           "updated_at=? WHERE name=? AND state='claimed'", (at, row["name"]))
                self._history(tx, row["name"], "lease-expired", {"claim": row["claimed_by"]})
            if rows:
                self._work_queued(tx)
            return [r["name"] for r in rows]
        return self._transaction(work)

    def stuck_leases(self, grace: float, *, now: float | None = None) -> int:
        at = self._clock() if now is None else now
        with self._read() as sql:
            row = sql.execute("SELECT COUNT(*) AS n FROM queue WHERE state='claimed' "
                              "AND COALESCE(lease_until, 0) < ?", (at - grace,)).fetchone()
        return int(row["n"]) if row else 0

    def begin_upload(self, name: str, claim: str, display_name: str) -> bool:
        now = self._clock()

        def work(tx: Sql) -> bool:
            if tx.execute("SELECT 1 FROM queue WHERE name=? AND state='claimed' AND "  # noqa: S608
                          "claimed_by=? AND lease_until >= ?" + self.dialect.lock_rows,
                          (name, claim, now)).fetchone() is None:
                return False
            self._upload_started(tx, name, display_name, {"claim": claim})
            return True
        return self._transaction(work)

    def complete(self, name: str, claim: str, *, confirm_at: float | None = None,
                 error: str | None = None) -> bool:
        state = QueueState.DONE if error is None else QueueState.FAILED
        return self._transaction(lambda tx: tx.execute(
            "UPDATE queue SET state=?, claimed_by=NULL, lease_until=NULL, "
            "last_error=?, confirming=0, confirm_at=?, updated_at=? "
            "WHERE name=? AND state='claimed' AND claimed_by=?",
            (state.value, error, confirm_at, self._clock(), name, claim)).rowcount == 1,
            one_statement=True)

    def release(self, name: str, claim: str, *, not_before: float, error: str | None = None,
                count_attempt: bool = True, max_attempts: int | None = None,
                confirming: bool = False) -> Released:
        now = self._clock()

        def work(tx: Sql) -> Released:
            row = tx.execute("SELECT attempts FROM queue WHERE name=? AND state='claimed' "  # noqa: S608
                             "AND claimed_by=?" + self.dialect.lock_rows, (name, claim)).fetchone()
            if row is None:
                return Released.LOST
            attempts = row["attempts"] + (1 if count_attempt else 0)
            state = (Released.FAILED if max_attempts is not None and attempts >= max_attempts
                     else Released.PENDING)
            tx.execute("UPDATE queue SET state=?, attempts=?, not_before=?, last_error=?, "
                       "claimed_by=NULL, lease_until=NULL, confirming=?, updated_at=? "
                       "WHERE name=?",
                       (state.value, attempts, not_before, error,
                        int(confirming and state is Released.PENDING), now, name))
            if state is Released.FAILED:
                self._history(tx, name, "failed", {"error": error, "attempts": attempts})
            return state
        return self._transaction(work)

    def resume_deferred(self, *, now: float | None = None) -> int:
        at = self._clock() if now is None else now

        def work(tx: Sql) -> int:
            count: int = tx.execute(
                "UPDATE queue SET not_before=?, updated_at=? WHERE state='pending' AND "
                "not_before > ? AND name IN (SELECT name FROM names WHERE action=?)",
                (at, at, at, Action.DEFERRED.value)).rowcount
            if count:
                self._work_queued(tx)
            return count
        return self._transaction(work)

    def release_held(self, holder: str) -> int:
        def work(tx: Sql) -> int:
            # Only a few rows are claimed at a time (one per worker thread of every process);
            # each is given back under its exact claim, so another's is neither taken nor locked.
            claims = [r["claimed_by"] for r in tx.execute(
                "SELECT claimed_by FROM queue WHERE state='claimed'").fetchall()]
            count = 0
            for claim in claims:
                if _holder_of(claim) == holder:
                    count += tx.execute(
                        "UPDATE queue SET state='pending', claimed_by=NULL, lease_until=NULL, "
                        "updated_at=? WHERE state='claimed' AND claimed_by=?",
                        (self._clock(), claim)).rowcount
            if count:
                self._work_queued(tx)
            return count
        return self._transaction(work)

    def schedule_confirmations(self, *, now: float | None = None) -> int:
        at = self._clock() if now is None else now
        with self._read() as sql:
            if not sql.execute("SELECT 1 FROM queue WHERE confirm_at <= ? AND state='done' "
                               "LIMIT 1", (at,)).fetchone():
                return 0  # the usual case: a read, no write transaction
        return self._transaction(lambda tx: self._due_confirmations(tx, at))

    def _due_confirmations(self, tx: Sql, now: float) -> int:
        count: int = tx.execute(
            "UPDATE queue SET state='pending', confirming=1, not_before=0, confirm_at=NULL, "  # noqa: S608
            "updated_at=? WHERE name IN (SELECT name FROM queue WHERE confirm_at <= ? "
            f"AND state='done'{self.dialect.skip_locked})", (now, now)).rowcount
        if count:
            self._work_queued(tx)
        return count

    def next_ready_at(self) -> float | None:
        with self._read() as sql:
            row = sql.execute(
                "SELECT MIN(t) AS t FROM (SELECT MIN(not_before) AS t FROM queue WHERE "
                "state='pending' UNION ALL SELECT MIN(confirm_at) FROM queue WHERE "
                "state='done') AS ready").fetchone()
        return row["t"] if row and row["t"] is not None else None

    def schedule_recheck(self, older_than: float, *, now: float | None = None) -> int:
        """Queue again every settled name last looked at more than ``older_than`` s ago.

        The public index changes without telling us (a placeholder removed under
        PEP 541, a taken name gaining a release or an owner): re-checking is how
        we would know.  A re-check costs lookups, never budget, unless the name
        turned out to be free again.
        """
        at = self._clock() if now is None else now

        def work(tx: Sql) -> int:
            count: int = tx.execute(
                "UPDATE queue SET state='pending', attempts=0, not_before=0, last_error=NULL, "
                "updated_at=? WHERE state IN ('done', 'failed') AND updated_at <= ?",
                (at, at - older_than)).rowcount
            count += self._enqueue_unqueued(tx, at)  # every name, whatever its source
            if count:
                self._work_queued(tx)
            return count
        return self._transaction(work)

    def _enqueue_unqueued(self, tx: Sql, now: float) -> int:
        """Queue every name in the store that has no queue row (e.g. reserved by `reserve`)."""
        rows = tx.execute("SELECT * FROM names n WHERE NOT EXISTS "
                          "(SELECT 1 FROM queue q WHERE q.name = n.name)").fetchall()
        for row in rows:
            event = NameEvent(name=row["name"], display_name=row["display_name"],
                              source=row["first_source"] or "store",
                              index=row["first_index"] or "store",
                              version=row["highest_private_version"])
            seen = from_iso(row["first_seen_private"])
            if seen is not None:
                event = replace(event, seen_at=seen)
            tx.execute("INSERT INTO queue(name, state, event, enqueued_at, updated_at) "
                       "VALUES (?, 'pending', ?, ?, ?) ON CONFLICT DO NOTHING",
                       (row["name"], event_to_json(event), now, now))
        return len(rows)

    def queue_counts(self) -> dict[QueueState, int]:
        counts = dict.fromkeys(QueueState, 0)
        with self._read() as sql:
            for r in sql.execute("SELECT state, COUNT(*) AS n FROM queue GROUP BY state"
                                 ).fetchall():
                counts[QueueState(r["state"])] = int(r["n"])
        return counts

    def queue_items(self, state: QueueState | None = None) -> list[dict[str, Any]]:
        sql_text = ("SELECT name, state, attempts, not_before, last_error, claimed_by, "
                    "lease_until, confirm_at FROM queue")
        with self._read() as sql:
            rows = (sql.execute(sql_text + " WHERE state=? ORDER BY name",
                                (QueueState(state).value,)) if state
                    else sql.execute(sql_text + " ORDER BY name")).fetchall()
        return [{**{k: r[k] for k in r.keys()}, "state": QueueState(r["state"])} for r in rows]
