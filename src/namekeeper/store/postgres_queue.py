"""The PostgreSQL store's queue with leases and its periodic-job leases (mixed into `PostgresStore`).

The same contract as `sqlite_queue.QueueLeases` (read its docstring for the
lease design); what changes is how it holds with several writers at once:
rows are picked ``FOR UPDATE SKIP LOCKED``, so concurrent workers (in any
number of replicas) never claim the same name and never wait on each other,
and every check-then-write on one item locks that item's row first.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from .interface import DEFAULT_LEASE, QueueState, Released
from .schema import WorkItem, event_from_json

if TYPE_CHECKING:
    import psycopg

#: The channel a transaction that queues work notifies (`PostgresStore.watch_for_work`).
WORK_CHANNEL = "namekeeper_work"


class PostgresQueue:
    """Queue, lease and job-lease methods; needs ``_transaction``, ``_read``, ``_clock``, ``_history``."""

    if TYPE_CHECKING:
        _clock: Callable[[], float]

        def _transaction(self, work: Callable[[Any], Any]) -> Any: ...
        def _read(self) -> AbstractContextManager[Any]: ...
        def _history(self, cur: Any, name: str, kind: str,
                     detail: dict[str, Any] | None) -> None: ...
        @staticmethod
        def _enqueue_unqueued(cur: psycopg.Cursor[dict[str, Any]], now: float) -> int: ...

    def claim(self, holder: str, lease_seconds: float = DEFAULT_LEASE, *,
              now: float | None = None) -> WorkItem | None:
        at = self._clock() if now is None else now

        def work(cur: psycopg.Cursor[dict[str, Any]]) -> dict[str, Any] | None:
            _due_confirmations(cur, at)
            return cur.execute(
                "UPDATE queue SET state='claimed', claimed_by=%s, lease_until=%s, updated_at=%s "
                "WHERE name = (SELECT name FROM queue WHERE state='pending' AND not_before <= %s "
                "  ORDER BY not_before, enqueued_at LIMIT 1 FOR UPDATE SKIP LOCKED) "
                "RETURNING name, event, attempts, confirming",
                (holder, at + lease_seconds, at, at)).fetchone()
        row = self._transaction(work)
        if row is None:
            return None
        return WorkItem(row["name"], event_from_json(row["event"]), row["attempts"],
                        confirming=bool(row["confirming"]))

    def renew(self, name: str, holder: str, lease_seconds: float = DEFAULT_LEASE) -> bool:
        until = self._clock() + lease_seconds

        def work(cur: psycopg.Cursor[Any]) -> bool:
            cur.execute("UPDATE queue SET lease_until=%s WHERE name=%s AND state='claimed' "
                        "AND claimed_by=%s", (until, name, holder))
            return cur.rowcount == 1
        renewed: bool = self._transaction(work)
        return renewed

    def reclaim_expired(self, *, now: float | None = None) -> list[str]:
        at = self._clock() if now is None else now

        def work(cur: psycopg.Cursor[dict[str, Any]]) -> list[str]:
            # SKIP LOCKED: an item another replica is reclaiming (or renewing) right now is theirs.
            rows = cur.execute("SELECT name, claimed_by FROM queue WHERE state='claimed' "
                               "AND COALESCE(lease_until, 0) < %s ORDER BY name "
                               "FOR UPDATE SKIP LOCKED", (at,)).fetchall()
            for row in rows:
                cur.execute("UPDATE queue SET state='pending', claimed_by=NULL, "
                            "lease_until=NULL, updated_at=%s WHERE name=%s", (at, row["name"]))
                self._history(cur, row["name"], "lease-expired", {"holder": row["claimed_by"]})
            if rows:
                cur.execute(f"NOTIFY {WORK_CHANNEL}")
            return [r["name"] for r in rows]
        names: list[str] = self._transaction(work)
        return names

    def stuck_leases(self, grace: float, *, now: float | None = None) -> int:
        at = self._clock() if now is None else now
        with self._read() as cur:
            row = cur.execute("SELECT COUNT(*) AS n FROM queue WHERE state='claimed' "
                              "AND COALESCE(lease_until, 0) < %s", (at - grace,)).fetchone()
        return int(row["n"]) if row else 0

    def begin_upload(self, name: str, holder: str, display_name: str) -> bool:
        now = self._clock()

        def work(cur: psycopg.Cursor[Any]) -> bool:
            held = cur.execute("SELECT 1 FROM queue WHERE name=%s AND state='claimed' AND "
                               "claimed_by=%s AND lease_until >= %s FOR UPDATE",
                               (name, holder, now)).fetchone()
            if held is None:
                return False
            cur.execute("INSERT INTO names(name, display_name) VALUES (%s, %s) "
                        "ON CONFLICT DO NOTHING", (name, display_name))
            cur.execute("UPDATE names SET upload_started_at = %s, attempts = attempts + 1 "
                        "WHERE name = %s", (now, name))
            self._history(cur, name, "upload-started", {"holder": holder})
            return True
        started: bool = self._transaction(work)
        return started

    def complete(self, name: str, holder: str, *, confirm_at: float | None = None) -> bool:
        def work(cur: psycopg.Cursor[Any]) -> bool:
            cur.execute("UPDATE queue SET state='done', claimed_by=NULL, lease_until=NULL, "
                        "last_error=NULL, confirming=0, confirm_at=%s, updated_at=%s "
                        "WHERE name=%s AND state='claimed' AND claimed_by=%s",
                        (confirm_at, self._clock(), name, holder))
            return cur.rowcount == 1
        done: bool = self._transaction(work)
        return done

    def release(self, name: str, holder: str, *, not_before: float, error: str | None = None,
                count_attempt: bool = True, max_attempts: int | None = None,
                confirming: bool = False) -> Released:
        now = self._clock()

        def work(cur: psycopg.Cursor[dict[str, Any]]) -> Released:
            row = cur.execute("SELECT attempts FROM queue WHERE name=%s AND state='claimed' "
                              "AND claimed_by=%s FOR UPDATE", (name, holder)).fetchone()
            if row is None:
                return Released.LOST
            attempts = row["attempts"] + (1 if count_attempt else 0)
            state = (Released.FAILED if max_attempts is not None and attempts >= max_attempts
                     else Released.PENDING)
            cur.execute("UPDATE queue SET state=%s, attempts=%s, not_before=%s, last_error=%s, "
                        "claimed_by=NULL, lease_until=NULL, confirming=%s, updated_at=%s "
                        "WHERE name=%s",
                        (state.value, attempts, not_before, error,
                         int(confirming and state is Released.PENDING), now, name))
            if state is Released.FAILED:
                self._history(cur, name, "failed", {"error": error, "attempts": attempts})
            return state
        state: Released = self._transaction(work)
        return state

    def release_held(self, holder: str) -> int:
        def work(cur: psycopg.Cursor[Any]) -> int:
            cur.execute("UPDATE queue SET state='pending', claimed_by=NULL, lease_until=NULL, "
                        "updated_at=%s WHERE state='claimed' AND claimed_by=%s",
                        (self._clock(), holder))
            count = cur.rowcount
            if count:
                cur.execute(f"NOTIFY {WORK_CHANNEL}")
            return count
        released: int = self._transaction(work)
        return released

    def schedule_confirmations(self, *, now: float | None = None) -> int:
        at = self._clock() if now is None else now
        count: int = self._transaction(lambda cur: _due_confirmations(cur, at))
        return count

    def next_ready_at(self) -> float | None:
        with self._read() as cur:
            row = cur.execute(
                "SELECT MIN(t) AS t FROM (SELECT MIN(not_before) AS t FROM queue WHERE "
                "state='pending' UNION ALL SELECT MIN(confirm_at) FROM queue WHERE "
                "state='done') AS ready").fetchone()
        return row["t"] if row and row["t"] is not None else None

    def schedule_recheck(self, older_than: float, *, now: float | None = None) -> int:
        at = self._clock() if now is None else now

        def work(cur: psycopg.Cursor[Any]) -> int:
            cur.execute("UPDATE queue SET state='pending', attempts=0, not_before=0, "
                        "last_error=NULL, updated_at=%s WHERE state IN ('done', 'failed') "
                        "AND updated_at <= %s", (at, at - older_than))
            count = cur.rowcount + self._enqueue_unqueued(cur, at)  # every name, any source
            if count:
                cur.execute(f"NOTIFY {WORK_CHANNEL}")
            return count
        count: int = self._transaction(work)
        return count

    def queue_counts(self) -> dict[QueueState, int]:
        counts = dict.fromkeys(QueueState, 0)
        with self._read() as cur:
            for r in cur.execute("SELECT state, COUNT(*) AS n FROM queue GROUP BY state"):
                counts[QueueState(r["state"])] = int(r["n"])
        return counts

    def queue_items(self, state: QueueState | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT name, state, attempts, not_before, last_error, claimed_by, lease_until, "
               "confirm_at FROM queue")
        with self._read() as cur:
            rows = (cur.execute(sql + " WHERE state=%s ORDER BY name", (QueueState(state).value,)) if state
                    else cur.execute(sql + " ORDER BY name")).fetchall()
        return [{**r, "state": QueueState(r["state"])} for r in rows]

    def forget_reservation(self, name: str) -> None:
        def work(cur: psycopg.Cursor[Any]) -> None:
            cur.execute("UPDATE names SET reserved_at = NULL WHERE name = %s", (name,))
            self._history(cur, name, "unconfirmed", None)
        self._transaction(work)

    # -- periodic jobs ---------------------------------------------------------------------------

    def lease_job(self, job: str, holder: str, seconds: float, *, now: float | None = None) -> bool:
        at = self._clock() if now is None else now
        row = self._transaction(lambda cur: cur.execute(
            "INSERT INTO job_leases(job, holder, expires_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (job) DO UPDATE SET holder = EXCLUDED.holder, "
            "expires_at = EXCLUDED.expires_at "
            "WHERE job_leases.holder = EXCLUDED.holder OR job_leases.expires_at <= %s "
            "RETURNING holder", (job, holder, at + seconds, at)).fetchone())
        return row is not None


def _due_confirmations(cur: psycopg.Cursor[Any], now: float) -> int:
    cur.execute("UPDATE queue SET state='pending', confirming=1, not_before=0, confirm_at=NULL, "
                "updated_at=%s WHERE name IN (SELECT name FROM queue WHERE confirm_at <= %s "
                "AND state='done' FOR UPDATE SKIP LOCKED)", (now, now))
    count = cur.rowcount
    if count:
        cur.execute(f"NOTIFY {WORK_CHANNEL}")
    return count
