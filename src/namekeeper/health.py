"""What ``/healthz`` reports: a list of reasons why names are not being protected.

The promise: ``/healthz`` is red (503) whenever names are not being protected,
and says why.  It is also cheap enough for a load balancer to ask many times a
second: reading a few rows, never a write per request (the store's write and
integrity probes run at most every few seconds and are cached).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

from .config import ENV_ARTIFACTORY_SECRET, Config
from .errors import StoreError
from .sources.interface import EventSource
from .store.interface import StoreBackend
from .store.sqlite_budget import CONDITION_PAUSED
from .worker import WorkerPool


class StoreProbe:
    """The store's health, probed at most every ``every`` seconds (integrity: ``integrity_every``)."""

    def __init__(self, store: StoreBackend, *, every: float = 5.0, integrity_every: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.every = every
        self.integrity_every = integrity_every
        self.clock = clock
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._integrity_at: float | None = None
        self._problem: str | None = None
        self._integrity: str | None = None

    def problem(self) -> str | None:
        """None when the store takes writes and passes a quick integrity check, else why not."""
        now = self.clock()
        with self._lock:
            if self._integrity_at is None or now - self._integrity_at >= self.integrity_every:
                self._integrity_at = now
                found = self.store.probe_integrity()
                self._integrity = (f"the store {self.store.location} fails its integrity check "
                                   f"({found})" if found else None)
            if self._checked_at is None or now - self._checked_at >= self.every:
                self._checked_at = now
                try:
                    self.store.probe_writable()
                    self._problem = None
                except (sqlite3.Error, StoreError) as exc:
                    self._problem = f"the store {self.store.location} does not take writes ({exc})"
            return self._integrity or self._problem


def startup_problems(config: Config, credentials_problem: str | None) -> list[str]:
    """Problems the configuration has from the start (each logged once at WARNING by `serve`)."""
    found = []
    af = config.artifactory
    if af.repos and af.secret is None:
        found.append(f"[artifactory] is configured but {ENV_ARTIFACTORY_SECRET} is not set: its "
                     "webhook cannot accept deliveries")
    if credentials_problem and not config.policy.dry_run:
        found.append(credentials_problem)
    return found


class Health:
    """Collects the reasons; one instance per service."""

    def __init__(self, config: Config, store: StoreBackend, workers: WorkerPool,
                 sources: Sequence[EventSource], fixed: Sequence[str]) -> None:
        self.config = config
        self.store = store
        self.workers = workers
        self.sources = list(sources)
        self.fixed = list(fixed)
        self.probe = StoreProbe(store)
        # A load balancer may ask many times a second; the store's reasons are read at most once a
        # second so that a flood of GETs does not compete with webhook intake for the store.
        self.store_reasons_every = 1.0
        self._store_reasons_lock = threading.Lock()
        self._store_reasons_at: float | None = None
        self._store_reasons: list[str] = []

    def reasons(self, *, stopping: bool, source_threads_alive: bool) -> list[str]:
        now = time.time()
        found = list(self.fixed)
        if stopping:
            found.append("namekeeper is shutting down")
        if self.workers.store_error:
            found.append(self.workers.store_error)
        elif not self.workers.alive():
            found.append("the queue workers are not running")
        if not source_threads_alive:
            found.append("an event source stopped with an error (see the log)")
        for source in self.sources:
            found += source.problems(now)
        store_problem = self.probe.problem()
        if store_problem:
            found.append(store_problem)
            return found  # the store's other answers cannot be trusted
        return found + self._cached_store_reasons(now)

    def _cached_store_reasons(self, now: float) -> list[str]:
        with self._store_reasons_lock:
            at = self._store_reasons_at
            if at is None or not 0 <= now - at < self.store_reasons_every:
                try:
                    self._store_reasons = self._store_reasons_now(now)
                except (sqlite3.Error, StoreError) as exc:
                    self._store_reasons = [f"the store {self.store.location} cannot be read ({exc})"]
                self._store_reasons_at = now
            return list(self._store_reasons)

    def _store_reasons_now(self, now: float) -> list[str]:
        found = []
        paused_until = self.store.budget_paused_until(now=now)
        conditions = {c.key: c.text for c in self.store.conditions()}
        paused_text = conditions.pop(CONDITION_PAUSED, "")  # shown only while the pause lasts
        if paused_until is not None:
            found.append(paused_text or
                         "the budget of new public projects is paused until "
                         f"{datetime.fromtimestamp(paused_until, timezone.utc):%H:%M:%S} UTC")
        found += conditions.values()
        stuck = self.store.stuck_leases(self.config.queue.lease, now=now)
        if stuck:
            found.append(f"{stuck} queue item(s) are held by leases that expired more than "
                         f"{self.config.queue.lease:.0f} s ago and were not reclaimed")
        return found
