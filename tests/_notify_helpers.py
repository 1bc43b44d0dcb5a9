"""Outcomes, recording notifiers and a SQLite delivery log for the notification tests."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from namekeeper.model import Action, NameEvent, Outcome, PublicProject, Severity, Verdict
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
    """Keeps what it is given (and whom it is about); answers ``ok`` (flip it to simulate an
    outage) after ``delay`` seconds (a slow target)."""

    def __init__(self, name: str, *, ok: bool = True, tags: frozenset[str] | None = None,
                 delay: float = 0.0) -> None:
        self.name = name
        self.ok = ok
        self.tags = tags
        self.delay = delay
        self.messages: list[Message] = []
        self.names: list[str] = []

    def wants(self, tags: frozenset[str]) -> bool:
        return self.tags is None or bool(self.tags & tags)

    def deliver(self, message: Message, outcome: Outcome) -> bool:
        self.messages.append(message)
        self.names.append(outcome.name)
        time.sleep(self.delay)
        return self.ok
