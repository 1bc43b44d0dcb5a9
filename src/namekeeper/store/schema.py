"""The store's format, for every SQL backend: tables, row types and the JSON form of an event.

Kept apart from the store's behaviour so that the format — what a migration would
have to change — is readable in one place.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..model import NameEvent, Outcome, from_iso, iso
from ..names import ULTRA_DROPPED, ULTRA_REPLACED


@dataclass(frozen=True)
class Dialect:
    """The few words in which the backends' SQL differs."""

    #: Appended to a ``SELECT`` whose rows the transaction goes on to change.
    lock_rows: str
    #: Appended to a ``SELECT`` that picks rows nobody else is working on.
    skip_locked: str
    #: After ``ORDER BY not_before, enqueued_at``: the arrival order within one batch.
    arrival: str
    #: Column types: a float, a growing integer key, bytes.
    real: str
    serial_key: str
    blob: str


#: SQLite serialises writers (``BEGIN IMMEDIATE``): a row read in a write is already ours.
SQLITE = Dialect(lock_rows="", skip_locked="", arrival=", rowid", real="REAL",
                 serial_key="INTEGER PRIMARY KEY", blob="BLOB")
#: Several writers at once under READ COMMITTED: lock what is read to be changed.
#: Its batches are stamped a microsecond apart, so arrival needs no tiebreak.
POSTGRESQL = Dialect(lock_rows=" FOR UPDATE", skip_locked=" FOR UPDATE SKIP LOCKED", arrival="",
                     real="DOUBLE PRECISION",
                     serial_key="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", blob="BYTEA")


#: Every table both backends keep, written once; `tables` fills in the dialect's column types.
_TABLES = """
-- Owners the public index reported for a placeholder we uploaded (sql_placeholders.py).
CREATE TABLE IF NOT EXISTS placeholder_owners (
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    PRIMARY KEY (name, owner)
);
CREATE TABLE IF NOT EXISTS names (
    name TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    first_seen_private TEXT,
    first_source TEXT,
    first_index TEXT,
    highest_private_version TEXT,
    verdict TEXT,
    severity TEXT,
    action TEXT,
    reason TEXT,
    message TEXT,
    owners TEXT,
    organization TEXT,
    public_versions TEXT,
    public_first_release TEXT,
    upload_started_at {real},
    reserved_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT
);
CREATE TABLE IF NOT EXISTS history (
    id {serial_key},
    name TEXT NOT NULL,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS history_name ON history(name);
CREATE INDEX IF NOT EXISTS names_ultra ON names (({ultra_name}));
CREATE TABLE IF NOT EXISTS events (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    source TEXT NOT NULL,
    idx TEXT NOT NULL,
    received_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS queue (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,             -- pending | claimed | done | failed
    event TEXT NOT NULL,             -- the NameEvent that (last) asked for this work, JSON
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before {real} NOT NULL DEFAULT 0,
    claimed_by TEXT,
    last_error TEXT,
    enqueued_at {real} NOT NULL,
    updated_at {real} NOT NULL,
    -- Older SQLite stores gain these three on open (sqlite.QUEUE_COLUMNS).
    lease_until {real},
    confirm_at {real},               -- when a done item is looked at again (an upload's check)
    confirming INTEGER NOT NULL DEFAULT 0  -- 1 while the item is that check: never an upload
);
CREATE INDEX IF NOT EXISTS queue_ready ON queue(state, not_before);
CREATE TABLE IF NOT EXISTS budget (
    id {serial_key},
    name TEXT NOT NULL,
    at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS delivered (
    target TEXT NOT NULL,
    name TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    at {real} NOT NULL,
    PRIMARY KEY (target, name)
);
CREATE TABLE IF NOT EXISTS delivery_retries (
    target TEXT NOT NULL,
    name TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_at {real} NOT NULL,
    PRIMARY KEY (target, name)
);
CREATE TABLE IF NOT EXISTS conditions (
    key TEXT PRIMARY KEY,            -- e.g. budget-paused, public-index-unreachable
    text TEXT NOT NULL,
    since {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT
);
-- What `watch` remembers (sql_watch.py).
CREATE TABLE IF NOT EXISTS lookalikes (
    public TEXT PRIMARY KEY,
    ours TEXT NOT NULL,
    kind TEXT NOT NULL,
    distance INTEGER NOT NULL,
    owners TEXT,                 -- JSON list; NULL when the public index could not say
    organization TEXT,
    first_release TEXT,
    found_at {real} NOT NULL,
    alerted_at {real}
);
CREATE TABLE IF NOT EXISTS watch_allow (glob TEXT PRIMARY KEY, added_at {real} NOT NULL);
CREATE TABLE IF NOT EXISTS watch_state (key TEXT PRIMARY KEY, value {blob} NOT NULL);
"""


def ultranormalized(column: str) -> str:
    """`names.ultranormalize` of ``column`` in SQL both backends speak (``names_ultra`` indexes it)."""
    expr = f"lower({column})"
    for dropped in ULTRA_DROPPED:
        expr = f"replace({expr}, '{dropped}', '')"
    for letter, digit in ULTRA_REPLACED.items():
        expr = f"replace({expr}, '{letter}', '{digit}')"
    return expr


def tables(dialect: Dialect) -> str:
    """The DDL of every table both backends keep, in ``dialect``'s column types."""
    return _TABLES.format(real=dialect.real, serial_key=dialect.serial_key, blob=dialect.blob,
                          ultra_name=ultranormalized("name"))

BUDGET_WINDOW = 3600.0


@dataclass(frozen=True)
class NameRecord:
    """One row of what the store knows about a name."""

    name: str
    display_name: str
    first_seen_private: datetime | None
    first_source: str | None
    first_index: str | None
    highest_private_version: str | None
    verdict: str | None
    severity: str | None
    action: str | None
    reason: str | None
    message: str | None
    owners: tuple[str, ...]
    organization: str | None
    reserved_at: datetime | None
    upload_started_at: float | None
    attempts: int
    updated_at: datetime | None

    @property
    def reserved(self) -> bool:
        return self.reserved_at is not None


@dataclass(frozen=True)
class WorkItem:
    """A claimed unit of queue work: reserve (or re-check) one name."""

    name: str
    event: NameEvent
    attempts: int
    #: This claim's id, unique to it: what renews, uploads and settles the item, so that a
    #: claim that lapsed can do none of it, even when its holder claimed the name again.
    claim: str
    #: True when this is the confirmation of an upload: a lookup, never an upload.
    confirming: bool = False


def list_json(items: Sequence[str]) -> str:
    """A column's list of strings (owners, versions) as JSON text.

    Most lists an audit writes are empty: ``[]`` is written without the encoder.
    """
    return json.dumps(list(items)) if items else "[]"


def list_from_json(text: str | None) -> tuple[str, ...]:
    """The strings `list_json` wrote (none for NULL)."""
    return tuple(json.loads(text)) if text and text != "[]" else ()


def name_record(row: Mapping[str, Any]) -> NameRecord:
    """A ``names`` row (either backend's) as a NameRecord."""
    return NameRecord(
        name=row["name"], display_name=row["display_name"],
        first_seen_private=from_iso(row["first_seen_private"]), first_source=row["first_source"],
        first_index=row["first_index"], highest_private_version=row["highest_private_version"],
        verdict=row["verdict"], severity=row["severity"], action=row["action"],
        reason=row["reason"], message=row["message"],
        owners=list_from_json(row["owners"]), organization=row["organization"],
        reserved_at=from_iso(row["reserved_at"]), upload_started_at=row["upload_started_at"],
        attempts=row["attempts"], updated_at=from_iso(row["updated_at"]))


def outcome_values(outcome: Outcome) -> tuple[Any, ...]:
    """What an outcome sets in ``names`` (verdict ... updated_at), for either backend."""
    public = outcome.public
    return (outcome.verdict.value, outcome.severity.value, outcome.action.value,
            outcome.reason, outcome.message,
            list_json(public.owners) if public else None,
            public.organization if public else None,
            list_json(public.versions) if public else None,
            iso(public.first_release) if public else None,
            iso(outcome.at))


def event_to_json(event: NameEvent) -> str:
    return json.dumps({
        "name": event.name, "display_name": event.display_name, "source": event.source,
        "index": event.index, "version": event.version, "seen_at": event.seen_at.isoformat(),
        "key": event.key,
    })


def event_from_json(text: str) -> NameEvent:
    d = json.loads(text)
    return NameEvent(name=d["name"], display_name=d["display_name"], source=d["source"],
                     index=d["index"], version=d.get("version"),
                     seen_at=datetime.fromisoformat(d["seen_at"]), key=d.get("key"))


#: What `store copy` carries from one backend to another, table by table, in this order.
#: Surrogate ids are left out: rows are copied in id order, so history keeps its sequence.
TRANSFERRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "names": ("name", "display_name", "first_seen_private", "first_source", "first_index",
              "highest_private_version", "verdict", "severity", "action", "reason", "message",
              "owners", "organization", "public_versions", "public_first_release",
              "upload_started_at", "reserved_at", "attempts", "updated_at"),
    "history": ("name", "at", "kind", "detail"),
    "events": ("key", "name", "source", "idx", "received_at"),
    "queue": ("name", "state", "event", "attempts", "not_before", "claimed_by", "last_error",
              "enqueued_at", "updated_at", "lease_until", "confirm_at", "confirming"),
    "budget": ("name", "at"),
    "delivered": ("target", "name", "fingerprint", "at"),
    "delivery_retries": ("target", "name", "fingerprint", "payload", "attempts", "next_at"),
    "conditions": ("key", "text", "since"),
    # watch_state is left out: a cache of the last scan (the next scan is then a full one).
    "lookalikes": ("public", "ours", "kind", "distance", "owners", "organization",
                   "first_release", "found_at", "alerted_at"),
    "watch_allow": ("glob", "added_at"),
    "placeholder_owners": ("name", "owner"),
}
#: The tables whose order matters (an autoincrement id): copied ``ORDER BY id``.
ORDERED_BY_ID = frozenset({"history", "budget"})
#: The SQLite schema's version (in ``settings``); bump it with every change of `tables`.
SQLITE_SCHEMA_VERSION = 1
