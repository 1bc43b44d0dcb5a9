"""What an event source is: something that turns outside signals into `NameEvent`s.

A source never talks to the public index and never decides; it hands events to
an `EventSink`, which makes them durable before the source acknowledges them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..model import NameEvent

# A plain WSGI application; the server mounts a source's routes under their paths.
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: What the key of a condition about a source starts with (`EventSource.condition_key`).
CONDITION_PREFIX = "source:"
#: What the key of a condition about a source's loop that died in one process starts with
#: (`health.Health.died_key`): that process's problem, not every replica's.
LOOP_DIED_PREFIX = "loop-died:"


class EventSink(Protocol):
    """Where sources put events: durable once `accept` returns."""

    def accept(self, event: NameEvent) -> bool:
        """Queue ``event``; return False when it was already known (a duplicate)."""
        ...

    def take_turn(self, job: str, seconds: float) -> bool:
        """True when this process should run the periodic ``job`` now (a listing, a poll).

        Several replicas share one store: a lease on the job, held for ``seconds`` and
        renewed by each turn, lets one of them at a time do it; another takes over when
        the holder stops renewing.  Call it before each round and skip the round on False.
        """
        ...

    def clear_condition(self, key: str) -> None:
        """A round succeeded: the problem ``key`` (the source's `condition_key`) is over.

        While a source has `problems`, the service raises them as the condition
        ``condition_key`` (alerted once, shown by every replica); only a round that
        worked can say it is over, and only the replica that ran the round knows.
        """
        ...


@dataclass(frozen=True)
class SourceMetrics:
    """What ``/metrics`` shows of one source."""

    #: Answers given by result, or "result:why": "accepted", "duplicate", "rejected:unauthorized".
    events: Mapping[str, int] = field(default_factory=dict)
    #: Wall-clock time of the last successful poll, for a source that polls; None otherwise.
    last_poll_at: float | None = None
    #: Which one, when there are several sources of a kind (a ``[[poll]]`` name or its index).
    label: str | None = None


class EventSource:
    """A webhook receiver (``routes``) and/or a background loop (``run``)."""

    #: Short identifier, used in logs, metrics and `NameEvent.source`.
    name: str = "source"

    def routes(self, sink: EventSink) -> dict[str, WSGIApp]:
        """Map URL paths (e.g. ``/webhooks/artifactory``) to WSGI apps served by `namekeeper serve`."""
        return {}

    def run(self, sink: EventSink, stop: threading.Event) -> None:
        """Produce events until ``stop`` is set; the default source has no loop."""

    def problems(self, now: float) -> list[str]:
        """Why this source cannot do its job right now (for ``/healthz``); empty when it can."""
        return []

    @property
    def condition_key(self) -> str:
        """The service-wide condition its `problems` are raised as (`EventSink.clear_condition`)."""
        return f"{CONDITION_PREFIX}{self.name}"

    def metrics(self) -> SourceMetrics:
        """Its figures for ``/metrics``; by default none."""
        return SourceMetrics()
