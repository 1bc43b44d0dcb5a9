"""The store's logic written once, in SQL that both built-in backends run.

SQLite (3.35 or newer: ``RETURNING``, ``ON CONFLICT ... DO UPDATE``) and PostgreSQL
understand the same statements for everything namekeeper does; what differs is
said once, in the backend's `schema.Dialect` (row locks, which SQLite does not
need because it serialises writers; column types) and in the few hooks a backend
fills in (`SqlBase._transaction`, `_read`, `_work_queued`, `_budget_pause`,
`_pause_budget_until`).  The store's parts (`sql_queue`, `sql_budget`,
`sql_placeholders`, `sql_watch`, `sql_delivery`) build on `SqlBase`;
`sql_store.SqlStore` is all of them, what a backend subclasses.
Statements use ``?`` for parameters; the PostgreSQL backend's cursor turns them
into psycopg's ``%s``.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol, TypeVar

from ..model import Action, NameEvent, Outcome, PublicProject, from_iso, iso
from ..names import highest_version
from .interface import Condition, DeliveryLog, NameRecord, QueueState, StoreBackend
from .schema import Dialect, list_json, name_record, outcome_values
from .sql_delivery import SqlDeliveryLog

T = TypeVar("T")


def higher_private_version(known: str | None, seen: str | None) -> str | None:
    """The highest private version once ``seen`` is seen too (``known``: the highest so far)."""
    # An unparsable version is kept only while there is nothing better.
    return highest_version([v for v in (known, seen) if v]) or known or seen


def seen_earlier(first_seen_private: str | None, seen_at: datetime) -> bool:
    """Whether a sighting at ``seen_at`` is the name's first (``first_seen_private``: so far)."""
    first = from_iso(first_seen_private)
    return first is None or seen_at < first


def seen_detail(event: NameEvent) -> dict[str, Any]:
    """What the history's "seen" entry keeps of a sighting."""
    return {"source": event.source, "index": event.index, "version": event.version}


def execute_rows(tx: Sql, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """``sql`` once per row: one executemany, or one execute for a single row.

    psycopg's executemany runs in pipeline mode, which costs more than it saves for one row
    (a worker records one outcome at a time; an audit, thousands).
    """
    if len(rows) == 1:
        tx.execute(sql, rows[0])
    elif rows:
        tx.executemany(sql, rows)


def rows_named(sql: Sql, columns: str, names: Sequence[str], suffix: str = "") -> list[Any]:
    """``columns`` of the rows of table ``names`` for these ``names`` (absent ones left out).

    ``suffix`` ends each statement (a row lock, say).
    """
    rows: list[Any] = []
    # In chunks: SQLite's limit of parameters per statement is 999 (older builds).
    for i in range(0, len(names), 900):
        chunk = list(names[i:i + 900])
        rows += sql.execute(f"SELECT {columns} FROM names "  # noqa: S608 - our own columns
                            f"WHERE name IN ({','.join('?' * len(chunk))}){suffix}",
                            chunk).fetchall()
    return rows


#: An outcome's row in ``names`` (`outcome_row`): the first reservation's time is kept,
#: a later one never moves it.
OUTCOME_UPSERT = (
    "INSERT INTO names(name, display_name, verdict, severity, action, reason, message, "
    "owners, organization, public_versions, public_first_release, updated_at, "
    "reserved_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (name) DO UPDATE SET "
    "verdict=excluded.verdict, severity=excluded.severity, action=excluded.action, "
    "reason=excluded.reason, message=excluded.message, owners=excluded.owners, "
    "organization=excluded.organization, public_versions=excluded.public_versions, "
    "public_first_release=excluded.public_first_release, "
    "updated_at=excluded.updated_at, "
    "reserved_at=COALESCE(names.reserved_at, excluded.reserved_at)")


def outcome_row(outcome: Outcome, reserved: bool) -> tuple[Any, ...]:
    """`OUTCOME_UPSERT`'s parameters for ``outcome``."""
    return (outcome.name, outcome.display_name, *outcome_values(outcome),
            iso(outcome.at) if reserved else None)


def outcome_detail(outcome: Outcome) -> str:
    """The detail of an outcome's history row."""
    return json.dumps({"verdict": outcome.verdict.value, "action": outcome.action.value,
                       "severity": outcome.severity.value, "message": outcome.message})


#: The columns of ``names`` an outcome's history entry is about: an outcome that repeats
#: them (a re-check or an audit finding what the last one found) adds no entry.
OUTCOME_CHANGES = ("verdict", "severity", "action", "message")
#: Outcomes of an upload attempt: always an entry, so every "upload-started" has its end.
ATTEMPT_ACTIONS = frozenset({Action.RESERVED, Action.FAILED})


def outcome_changes(outcome: Outcome) -> tuple[str, str, str, str]:
    """`OUTCOME_CHANGES`'s values for ``outcome``."""
    return (outcome.verdict.value, outcome.severity.value, outcome.action.value, outcome.message)


#: What a sighting can change of a known name (`fold_sightings`).
SIGHTING_COLUMNS = ("first_seen_private", "first_source", "first_index",
                    "highest_private_version")


def created_row(event: NameEvent) -> dict[str, Any]:
    """What `fold_sightings` knows of a name whose row was just created from ``event``."""
    return {"first_seen_private": iso(event.seen_at), "first_source": event.source,
            "first_index": event.index, "highest_private_version": event.version,
            "reserved_at": None}


def fold_sightings(state: dict[str, dict[str, Any]], events: Sequence[NameEvent],
                   written: set[int]) -> set[str]:
    """Apply the sightings in order to their names' rows (`SIGHTING_COLUMNS`); the names changed.

    ``written``: the positions of the events whose rows were just created from them.
    """
    changed: set[str] = set()
    for j, event in enumerate(events):
        if j in written:
            continue
        row = state[event.name]
        if seen_earlier(row["first_seen_private"], event.seen_at):
            row.update(first_seen_private=iso(event.seen_at), first_source=event.source,
                       first_index=event.index)
            changed.add(event.name)
        highest = higher_private_version(row["highest_private_version"], event.version)
        if highest != row["highest_private_version"]:
            row["highest_private_version"] = highest
            changed.add(event.name)
    return changed


class Sql(Protocol):
    """Where shared code runs statements: one transaction (or one read) of a backend.

    ``execute`` gives back a DB-API cursor (``fetchone``, ``fetchall``, ``rowcount``,
    iteration); rows are read by column name (``row["name"]``): SQLite's ``Row`` and
    psycopg's ``dict_row`` both allow it.
    """

    def execute(self, sql: str, params: Any = ..., /) -> Any: ...
    def executemany(self, sql: str, params: Any, /) -> Any: ...


class SqlBase(StoreBackend):
    """What every part of the SQL store shares: the backend's hooks, names and history."""

    dialect: Dialect
    _clock: Callable[[], float]

    @abstractmethod
    def _transaction(self, work: Callable[[Sql], T], *, one_statement: bool = False) -> T:
        """Run ``work`` in one write transaction (durable when this returns) and give its result.

        ``one_statement``: ``work`` runs a single statement, which a backend may run as its
        own transaction (PostgreSQL: without the BEGIN and COMMIT round trips).
        """

    @abstractmethod
    def _read(self) -> AbstractContextManager[Sql]:
        """A connection to read from (no transaction of its own is promised)."""

    def _work_queued(self, tx: Sql) -> None:
        """Called in a transaction that made work ready; a backend may wake other processes."""

    @abstractmethod
    def _budget_pause(self, tx: Sql, *, lock: bool) -> float:
        """When the 429 pause ends (0: none); ``lock``: serialise budget spending until commit."""

    @abstractmethod
    def _pause_budget_until(self, tx: Sql, until: float) -> None:
        """Record the end of the 429 pause."""

    # -- names and history -----------------------------------------------------------------------

    def _history_at(self) -> str:
        """The time a history row written now carries (local time, ISO 8601)."""
        return datetime.fromtimestamp(self._clock()).astimezone().isoformat()

    def _history(self, tx: Sql, name: str, kind: str, detail: dict[str, Any] | None) -> None:
        tx.execute("INSERT INTO history(name, at, kind, detail) VALUES (?,?,?,?)",
                   (name, self._history_at(), kind,
                    json.dumps(detail) if detail is not None else None))

    def history(self, name: str) -> list[dict[str, Any]]:
        with self._read() as sql:
            rows = sql.execute("SELECT at, kind, detail FROM history WHERE name = ? "
                               "ORDER BY id", (name,)).fetchall()
        return [{"at": r["at"], "kind": r["kind"],
                 "detail": json.loads(r["detail"]) if r["detail"] else None} for r in rows]

    def _note_seen(self, tx: Sql, event: NameEvent) -> bool:
        """Record the sighting; whether the name is reserved."""
        return bool(self._note_seen_all(tx, [event]))

    def note_seen(self, event: NameEvent) -> None:
        self._transaction(lambda tx: self._note_seen(tx, event))

    def get(self, name: str) -> NameRecord | None:
        with self._read() as sql:
            row = sql.execute("SELECT * FROM names WHERE name = ?", (name,)).fetchone()
        return name_record(row) if row else None

    def all_names(self) -> list[NameRecord]:
        with self._read() as sql:
            rows = sql.execute("SELECT * FROM names ORDER BY name").fetchall()
        return [name_record(r) for r in rows]

    def failed_names(self, sample: int = 3) -> tuple[int, list[str]]:
        with self._read() as sql:
            rows = sql.execute("SELECT name, COUNT(*) OVER () AS n FROM names "
                               "WHERE action = ? AND NOT EXISTS (SELECT 1 FROM queue "
                               "WHERE queue.name = names.name AND queue.state = ?) "
                               "ORDER BY name LIMIT ?",
                               (Action.FAILED.value, QueueState.PENDING.value, sample)
                               ).fetchall()
        return (int(rows[0]["n"]) if rows else 0), [r["name"] for r in rows]

    def _upload_started(self, tx: Sql, name: str, display_name: str,
                        detail: dict[str, Any] | None) -> None:
        tx.execute("INSERT INTO names(name, display_name) VALUES (?, ?) ON CONFLICT DO NOTHING",
                   (name, display_name))
        tx.execute("UPDATE names SET upload_started_at = ?, attempts = attempts + 1 "
                   "WHERE name = ?", (self._clock(), name))
        self._history(tx, name, "upload-started", detail)

    def mark_upload_started(self, name: str, display_name: str) -> None:
        self._transaction(lambda tx: self._upload_started(tx, name, display_name, None))

    def record_outcome(self, outcome: Outcome, *, reserved: bool = False) -> None:
        self._transaction(lambda tx: self._record_outcomes(tx, [outcome], reserved))

    def record_public(self, name: str, public: PublicProject) -> None:
        self._transaction(lambda tx: tx.execute(
            "UPDATE names SET owners = ?, organization = ?, public_versions = ?, "
            "public_first_release = ? WHERE name = ?",
            (list_json(public.owners), public.organization, list_json(public.versions),
             iso(public.first_release), name)), one_statement=True)

    def _record_outcomes(self, tx: Sql, outcomes: Sequence[Outcome], reserved: bool) -> None:
        # One upsert per name, and a history row where the outcome changed: an audit records
        # thousands at once, and a daily one of unchanged names would otherwise add them all.
        # The rows are read locked (PostgreSQL): a read of the statement's snapshot could
        # compare with an outcome another replica is overwriting, and lose the change back.
        last = {row["name"]: tuple(row[c] for c in OUTCOME_CHANGES) for row in rows_named(
            tx, "name, " + ", ".join(OUTCOME_CHANGES), list(dict.fromkeys(o.name for o in outcomes)),
            self.dialect.lock_rows)}
        execute_rows(tx, OUTCOME_UPSERT, [outcome_row(o, reserved) for o in outcomes])
        at = self._history_at()
        changes = []
        for o in outcomes:  # in order: a name twice in one batch is compared with its previous
            now = outcome_changes(o)
            if last.get(o.name) != now or o.action in ATTEMPT_ACTIONS:
                changes.append((o.name, at, "outcome", outcome_detail(o)))
                last[o.name] = now
        execute_rows(tx, "INSERT INTO history(name, at, kind, detail) VALUES (?,?,?,?)", changes)

    def forget_reservation(self, name: str) -> None:
        def work(tx: Sql) -> None:
            tx.execute("UPDATE names SET reserved_at = NULL WHERE name = ?", (name,))
            self._history(tx, name, "unconfirmed", None)
        self._transaction(work)

    # -- many names at once (audit) --------------------------------------------------------------
    # Rows are written in name order (as in `accept_many`) so that concurrent batches never
    # deadlock on each other.

    def note_seen_many(self, events: Sequence[NameEvent]) -> None:
        ordered = sorted(events, key=lambda e: e.name)
        self._transaction(lambda tx: self._note_seen_all(tx, ordered))

    def _note_seen_all(self, tx: Sql, events: Sequence[NameEvent]) -> set[str]:
        """Record the sightings, as one at a time in the given order; returns the reserved names.

        SQLite's way, under its one writer (PostgreSQL's intake has its own, `PostgresIntake`).
        """
        first: dict[str, int] = {}
        for j, event in enumerate(events):
            first.setdefault(event.name, j)
        state = {row["name"]: dict(row) for row in rows_named(
            tx, "name, reserved_at, " + ", ".join(SIGHTING_COLUMNS), list(first),
            self.dialect.lock_rows)}
        newcomers = [events[j] for name, j in first.items() if name not in state]
        if newcomers:
            execute_rows(
                tx, "INSERT INTO names(name, display_name, first_seen_private, first_source, "
                "first_index, highest_private_version, updated_at) VALUES (?,?,?,?,?,?,?)",
                [(e.name, e.display_name, iso(e.seen_at), e.source, e.index, e.version,
                  iso(e.seen_at)) for e in newcomers])
            at = self._history_at()
            execute_rows(tx, "INSERT INTO history(name, at, kind, detail) VALUES (?,?,?,?)",
                         [(e.name, at, "seen", json.dumps(seen_detail(e))) for e in newcomers])
            state.update((e.name, created_row(e)) for e in newcomers)
        changed = sorted(fold_sightings(state, events, {first[e.name] for e in newcomers}))
        if changed:
            execute_rows(
                tx, "UPDATE names SET " + ", ".join(f"{c} = ?" for c in SIGHTING_COLUMNS) +  # noqa: S608
                " WHERE name = ?",
                [(*(state[n][c] for c in SIGHTING_COLUMNS), n) for n in changed])
        return {name for name, row in state.items() if row["reserved_at"] is not None}

    def records(self, names: Sequence[str]) -> dict[str, NameRecord]:
        with self._read() as sql:
            return {row["name"]: name_record(row) for row in rows_named(sql, "*", names)}

    def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        ordered = sorted(outcomes, key=lambda o: o.name)
        self._transaction(lambda tx: self._record_outcomes(tx, ordered, False))

    # -- conditions and probes -------------------------------------------------------------------

    def raise_condition(self, key: str, text: str) -> bool:
        def work(tx: Sql) -> bool:
            if tx.execute("INSERT INTO conditions(key, text, since) VALUES (?, ?, ?) "
                          "ON CONFLICT (key) DO NOTHING RETURNING key",
                          (key, text, self._clock())).fetchone() is not None:
                return True
            tx.execute("UPDATE conditions SET text=? WHERE key=?", (text, key))
            return False
        return self._transaction(work)

    def clear_condition(self, key: str) -> bool:
        return self._transaction(lambda tx: tx.execute(
            "DELETE FROM conditions WHERE key=?", (key,)).rowcount == 1, one_statement=True)

    def conditions(self) -> list[Condition]:
        with self._read() as sql:
            rows = sql.execute("SELECT key, text, since FROM conditions ORDER BY since, key"
                               ).fetchall()
        return [Condition(r["key"], r["text"], r["since"]) for r in rows]

    def probe_writable(self) -> None:
        self._transaction(lambda tx: tx.execute(
            "INSERT INTO settings(key, value) VALUES ('health', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(self._clock()),)),
            one_statement=True)

    # -- notification deliveries -------------------------------------------------------------------

    def delivery_log(self) -> DeliveryLog:
        """The dispatcher's memory (what was sent where, what waits for a retry), in this store."""
        return SqlDeliveryLog(self)
