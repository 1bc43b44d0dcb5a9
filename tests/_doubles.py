"""Test doubles shared by the tests: an in-memory event sink, a clock the test sets, and
Artifactory's webhook signature."""

from __future__ import annotations

import hashlib
import hmac
import threading

from namekeeper.model import NameEvent


class MemorySink:
    """An in-memory `EventSink` that deduplicates on the event's key (else its name), like the
    durable store; ``calls`` counts every `accept`, ``arrived`` is set by each new event."""

    def __init__(self) -> None:
        self.events: list[NameEvent] = []
        self.keys: set[str] = set()
        self.calls = 0
        self.cleared: list[str] = []  # the conditions its sources said were over
        self.arrived = threading.Event()
        self._lock = threading.Lock()

    def accept(self, event: NameEvent) -> bool:
        with self._lock:
            self.calls += 1
            key = event.key or event.name
            if key in self.keys:
                return False
            self.keys.add(key)
            self.events.append(event)
            self.arrived.set()
            return True

    def take_turn(self, job: str, seconds: float) -> bool:
        return True  # one process: every periodic round is its turn

    def clear_condition(self, key: str) -> None:
        self.cleared.append(key)

    @property
    def names(self) -> set[str]:
        return {e.name for e in self.events}

    def by_key(self, key: str) -> NameEvent:
        return next(e for e in self.events if e.key == key)


class Clock:
    """``clock()`` is ``clock.t``, which the test moves."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:  # a realistic "now"
        self.t = t

    def __call__(self) -> float:
        return self.t


def sign(body: bytes, secret: str) -> str:
    """The ``X-JFrog-Event-Auth`` value Artifactory sends with ``body``: HMAC-SHA256, hex."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
