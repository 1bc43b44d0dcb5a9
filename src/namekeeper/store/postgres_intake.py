"""The PostgreSQL store's intake (mixed into `PostgresStore`): a batch in a few round trips.

`namekeeper.server.GroupCommitSink` hands the store every event that arrived while the
previous commit was in progress.  On SQLite a batch costs one fsync; here every
statement also costs a round trip to the database server (on a busy machine, a
wake-up of each side).  One event at a time, a batch of N events took 5N + 4
round trips; here it takes the same few whatever N, each statement working on
the whole batch at once (arrays, ``unnest``):

1. the journal: one ``INSERT ... ON CONFLICT DO NOTHING RETURNING key`` of every
   keyed event tells which are new;
2. the names: one ``INSERT`` of every name not yet known, with its ``seen``
   history row in the same statement.  Names that existed are locked and read
   in one ``SELECT ... FOR UPDATE``, their first sighting and highest private
   version folded in Python (PEP 440 order), and written back in one
   ``UPDATE`` (only for batches that carry such names);
3. the queue: one upsert of each name's first new event (reserved names
   excluded) that re-queues only a settled item (done or failed), and
   notifies the work channel once if it queued anything.

The arrays travel in binary (psycopg's ``%b`` placeholder; the rest keep the shared
SQL's ``?``): in text form psycopg escapes every element with a regular expression,
which took more of the client's time than all else a batch does (3.3 against 2.1 ms
of CPU for a batch of 8, measured).

The answers are those of `accept` called once per event, in name order: the
first event with a key is the new one, the first event of a name decides its
queue row.  Rows are locked in name order in each table, as they were one event
at a time, so two replicas' batches on the same names queue behind each other
rather than deadlock (a deadlock that happens anyway is retried).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..model import NameEvent, iso
from .interface import QueueState
from .schema import event_to_json
from .sql import SIGHTING_COLUMNS, Sql, SqlBase, created_row, fold_sightings, seen_detail

#: The channel a transaction that queues work notifies (`PostgresStore.watch_for_work`).
WORK_CHANNEL = "namekeeper_work"


def stored_text(text: str) -> str:
    """``text`` as PostgreSQL keeps it: its text cannot hold a NUL, which outside text
    (a webhook's path, an index's answer) may carry; U+FFFD stands in for it."""
    return text.replace("\x00", "\ufffd")


class PostgresIntake(SqlBase):
    """The shared SQL store's intake and sightings, a batch at a time on PostgreSQL."""

    def note_seen(self, event: NameEvent) -> None:
        self._transaction(lambda tx: self._note_seen_batch(tx, [event]))

    def note_seen_many(self, events: Sequence[NameEvent]) -> None:
        # In name order, as `_accept_batch` locks them: concurrent batches never deadlock.
        self._transaction(lambda tx: self._note_seen_batch(
            tx, sorted(events, key=lambda e: e.name)))

    def _accept_batch(self, events: list[NameEvent], now: float, step: float) -> list[bool]:
        """Accept ``events`` in one transaction, the i-th stamped ``now + i * step``."""
        # The key breaks ties between events of one name, so that every batch locks the
        # journal's rows in the same order too.
        order = sorted(range(len(events)), key=lambda i: (events[i].name, events[i].key or ""))

        def work(cur: Sql) -> list[bool]:
            new = _journal(cur, events, order, now, step)
            fresh = [i for i in order if new[i]]
            reserved = self._note_seen_batch(cur, [events[i] for i in fresh])
            _queue(cur, events, [i for i in fresh if events[i].name not in reserved], now, step)
            return new
        results: list[bool] = self._transaction(work)
        return results

    def _note_seen_batch(self, cur: Sql,
                         events: Sequence[NameEvent]) -> set[str]:
        """Record the sightings, as one at a time in the given order; returns the reserved names."""
        if not events:
            return set()
        first: dict[str, int] = {}
        for j, event in enumerate(events):
            first.setdefault(event.name, j)
        newcomers = [events[j] for name, j in sorted(first.items())]
        at = self._history_at()
        new_names = [e.name for e in newcomers]
        seen_at = [iso(e.seen_at) for e in newcomers]
        rows = cur.execute(
            "WITH created AS ("
            " INSERT INTO names(name, display_name, first_seen_private, first_source, first_index,"
            "  highest_private_version, updated_at)"
            " SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[],"
            "  %b::text[], %b::text[])"
            " ON CONFLICT (name) DO NOTHING RETURNING name) "
            "INSERT INTO history(name, at, kind, detail) "
            "SELECT name, ?::text, 'seen', detail FROM created"
            " JOIN unnest(%b::text[], %b::text[]) AS seen(name, detail) USING (name) "
            "RETURNING name",
            (new_names, [e.display_name for e in newcomers], seen_at,
             [e.source for e in newcomers], [e.index for e in newcomers],
             [e.version for e in newcomers], seen_at, at, new_names,
             [json.dumps(seen_detail(e)) for e in newcomers])).fetchall()
        created = {row["name"] for row in rows}
        state: dict[str, dict[str, Any]] = {
            e.name: created_row(e) for e in newcomers if e.name in created}
        known = sorted(first.keys() - created)
        if known:
            for row in cur.execute(
                    "SELECT name, first_seen_private, first_source, first_index,"
                    " highest_private_version, reserved_at FROM names"
                    " WHERE name = ANY(%b::text[]) ORDER BY name FOR UPDATE", (known,)).fetchall():
                state[row["name"]] = row
        changed = fold_sightings(state, events, {first[name] for name in created})
        if changed:
            names = sorted(changed)
            cur.execute(
                "UPDATE names SET first_seen_private = u.first_seen_private,"
                " first_source = u.first_source, first_index = u.first_index,"
                " highest_private_version = u.highest_private_version "
                "FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[])"
                " AS u(name, first_seen_private, first_source, first_index,"
                "  highest_private_version) WHERE names.name = u.name",
                (names, *([state[n][c] for n in names] for c in SIGHTING_COLUMNS)))
        return {name for name, row in state.items() if row["reserved_at"] is not None}


def _journal(cur: Sql, events: list[NameEvent], order: list[int],
             now: float, step: float) -> list[bool]:
    """Journal the keyed events; which of ``events`` are new (an event without a key always is)."""
    new = [event.key is None for event in events]
    keyed = [i for i in order if events[i].key is not None]
    if not keyed:
        return new
    rows = cur.execute(
        "INSERT INTO events(key, name, source, idx, received_at) "
        "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::float8[]) "
        "ON CONFLICT DO NOTHING RETURNING key",
        ([events[i].key for i in keyed], [events[i].name for i in keyed],
         [events[i].source for i in keyed], [events[i].index for i in keyed],
         [now + i * step for i in keyed])).fetchall()
    inserted = {row["key"] for row in rows}
    for i in keyed:  # a key twice in the batch: its first event is the new one
        key = stored_text(events[i].key or "")  # as the database gives it back
        if key in inserted:
            inserted.discard(key)
            new[i] = True
    return new


def _queue(cur: Sql, events: list[NameEvent], fresh: list[int],
           now: float, step: float) -> None:
    """Queue each name's first event of ``fresh`` unless queued already; notify once if any was."""
    first: dict[str, int] = {}
    for i in fresh:
        first.setdefault(events[i].name, i)
    if not first:
        return
    picks = sorted(first.items())
    cur.execute(
        "WITH queued AS ("
        " INSERT INTO queue(name, state, event, enqueued_at, updated_at)"
        " SELECT name, ?, event, at, at"
        " FROM unnest(%b::text[], %b::text[], %b::float8[]) AS u(name, event, at)"
        " ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state, attempts = 0, not_before = 0,"
        "  event = EXCLUDED.event, last_error = NULL, updated_at = EXCLUDED.updated_at"
        # A name we could not hold (taken, failed) is looked at again on new evidence.
        " WHERE queue.state IN (?, ?)"
        " RETURNING name) "
        "SELECT pg_notify(?, '') FROM (SELECT 1 FROM queued LIMIT 1) AS any_queued",
        (QueueState.PENDING.value, [name for name, _ in picks],
         [event_to_json(events[i]) for _, i in picks], [now + i * step for _, i in picks],
         QueueState.DONE.value, QueueState.FAILED.value, WORK_CHANNEL))
