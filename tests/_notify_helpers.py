"""Outcomes, recording notifiers and a SQLite delivery log for the notification tests."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from namekeeper.model import Action, NameEvent, Outcome, PublicProject, Severity, Verdict
from namekeeper.notify.dispatch import Retry
from namekeeper.notify.interface import Message, Notifier

SEEN = datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc)
FIRST_RELEASE = datetime(2026, 3, 4, 17, 5, tzinfo=timezone.utc)
PAGE = "https://public.invalid/project/acme-utils/"


def taken(severity: Severity = Severity.CRITICAL, **changes: Any) -> Outcome:
    """acme-utils, held on the public index by someone else."""
    public = PublicProject(
        name="acme-utils", exists=True, owners=("mallory",), organization="Evil Corp",
        versions=("0.0.1", "99.0.0"), first_release=FIRST_RELEASE, ownership_known=True,
        url=PAGE,
    )
    event = NameEvent(name="acme-utils", display_name="Acme_Utils", source="artifactory",
                      index="pypi-local", version="1.4.0", seen_at=SEEN)
    outcome = Outcome(
        name="acme-utils", display_name="Acme_Utils", verdict=Verdict.TAKEN, action=Action.TAKEN,
        severity=severity, reason="the public project appeared after we first saw the name",
        message="acme-utils is held on the public index by someone else", public=public,
        event=event, first_seen_private=SEEN,
        at=datetime(2026, 3, 5, 8, 0, tzinfo=timezone.utc),
    )
    return replace(outcome, **changes)


def with_public(outcome: Outcome, **changes: Any) -> Outcome:
    assert outcome.public is not None
    return replace(outcome, public=replace(outcome.public, **changes))


def simple(verdict: Verdict, action: Action, severity: Severity = Severity.NONE,
           name: str = "acme-utils", message: str = "done") -> Outcome:
    return Outcome(name=name, display_name=name, verdict=verdict, action=action,
                   severity=severity, reason="because", message=message)


class Recorder(Notifier):
    """Keeps what it is given; answers ``ok`` (flip it to simulate an outage)."""

    def __init__(self, name: str, *, ok: bool = True, tags: frozenset[str] | None = None) -> None:
        self.name = name
        self.ok = ok
        self.tags = tags
        self.messages: list[Message] = []

    def wants(self, tags: frozenset[str]) -> bool:
        return self.tags is None or bool(self.tags & tags)

    def deliver(self, message: Message, outcome: Outcome) -> bool:
        self.messages.append(message)
        return self.ok


class SqliteDeliveryLog:
    """The `DeliveryLog` protocol on SQLite: state that survives a restart."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path)
        with self.db:
            self.db.execute("CREATE TABLE IF NOT EXISTS delivered (target TEXT, name TEXT, "
                            "fingerprint TEXT, PRIMARY KEY (target, name))")
            self.db.execute("CREATE TABLE IF NOT EXISTS attempts (target TEXT, name TEXT, "
                            "fingerprint TEXT, ok INTEGER, error TEXT)")
            self.db.execute("CREATE TABLE IF NOT EXISTS retries (target TEXT, name TEXT, "
                            "fingerprint TEXT, payload TEXT, attempts INTEGER, next_at REAL, "
                            "PRIMARY KEY (target, name))")

    def close(self) -> None:
        self.db.close()

    def was_delivered(self, target: str, name: str, fingerprint: str) -> bool:
        row = self.db.execute("SELECT fingerprint FROM delivered WHERE target=? AND name=?",
                              (target, name)).fetchone()
        return row is not None and row[0] == fingerprint

    def record_delivery(self, target: str, name: str, fingerprint: str, ok: bool,
                        error: str | None) -> None:
        with self.db:
            self.db.execute("INSERT INTO attempts VALUES (?, ?, ?, ?, ?)",
                            (target, name, fingerprint, int(ok), error))
            if ok:
                self.db.execute("INSERT OR REPLACE INTO delivered VALUES (?, ?, ?)",
                                (target, name, fingerprint))

    def schedule_retry(self, retry: Retry) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO retries VALUES (?, ?, ?, ?, ?, ?)",
                            (retry.target, retry.name, retry.fingerprint, retry.payload,
                             retry.attempts, retry.next_at))

    def retry_for(self, target: str, name: str) -> Retry | None:
        row = self.db.execute("SELECT * FROM retries WHERE target=? AND name=?",
                              (target, name)).fetchone()
        return Retry(*row) if row else None

    def clear_retry(self, target: str, name: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM retries WHERE target=? AND name=?", (target, name))

    def pending_retries(self, now: float) -> list[Retry]:
        rows = self.db.execute("SELECT * FROM retries WHERE next_at <= ? ORDER BY next_at",
                               (now,)).fetchall()
        return [Retry(*row) for row in rows]

    def current_state(self, name: str) -> tuple[str, str] | None:
        return None  # no store of names here
