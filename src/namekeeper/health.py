"""What ``/healthz`` reports: a list of reasons why names are not being protected.

The promise: ``/healthz`` is red (503) whenever names are not being protected,
and says why.  It is also cheap enough for a load balancer to ask many times a
second: a request reads only memory; the store's part of the answer (its write and
integrity probes, every few seconds; the reasons it holds, every second) is kept
fresh by a background loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from .config import ENV_ARTIFACTORY_SECRET, Config
from .errors import StoreError
from .sources.interface import CONDITION_PREFIX, LOOP_DIED_PREFIX, EventSource
from .store.interface import MAX_CLOCK_OFFSET, StoreBackend, StoreUnusable
from .store.sql_budget import CONDITION_PAUSED
from .worker import WorkerPool

log = logging.getLogger(__name__)

#: The words of the reason naming the FAILED names (the devpi status page lists them its own way).
FAILED_REASON = "name(s) ended FAILED and are not held"


def alive_job(holder: str) -> str:
    """The job a process whose loop died keeps leased while it runs (`StoreBackend.lease_job`)."""
    return f"alive:{holder}"


def died_holder(key: str) -> str | None:
    """The process a `Health.died_key` names; None for any other condition's key."""
    return key.rpartition("@")[2] if key.startswith(LOOP_DIED_PREFIX) else None


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
        self._newer_schema: str | None = None

    def problem(self) -> str | None:
        """None when the store takes writes and passes a quick integrity check, else why not.

        Raises `StoreUnusable` once the store's schema is newer than this code's (another host
        ran `namekeeper store migrate`), and from then on: this process must not write to it.
        """
        now = self.clock()
        with self._lock:
            if self._integrity_at is None or now - self._integrity_at >= self.integrity_every:
                self._integrity_at = now
                found = self.store.probe_integrity()
                self._integrity = (f"the store {self.store.location} fails its integrity check "
                                   f"({found})" if found else None)
            if self._newer_schema is None and (
                    self._checked_at is None or now - self._checked_at >= self.every):
                self._checked_at = now
                try:
                    # `open_store` compares versions once, at start; a replica left running
                    # through another host's `store migrate` must notice it before it writes.
                    version = self.store.schema_version()
                    if version.found > version.known:
                        self._newer_schema = (f"the store at {self.store.location}: "
                                              f"{version.problem()}")
                    else:
                        self.store.probe_writable()
                    self._problem = None
                except StoreError as exc:
                    self._problem = f"the store {self.store.location} does not take writes ({exc})"
            if self._newer_schema is not None:
                raise StoreUnusable(self._newer_schema)
            return self._integrity or self._problem


def startup_problems(config: Config) -> list[str]:
    """Problems the configuration has from the start (each logged once at WARNING by `serve`).

    Missing upload credentials are not one of them: they may be found later (a token in the
    keyring), so they are a condition of the queue's (`upload_hold.CONDITION_MISSING`).
    """
    found = []
    af = config.artifactory
    if af.repos and af.secret is None:
        found.append(f"[artifactory] is configured but {ENV_ARTIFACTORY_SECRET} is not set: its "
                     "webhook cannot accept deliveries")
    return found


@dataclass(frozen=True)
class StoreAnswer:
    """What the store said when it was last asked: ``problem`` (None: it takes writes and passes
    its integrity check), and the reasons it holds (conditions, stuck leases, a paused budget)."""

    checked_at: float  # monotonic
    problem: str | None
    reasons: tuple[str, ...]
    #: The budget's pause (wall-clock end) and its reason: a pause ends by itself, so the answer
    #: stops showing it the moment it is over, not up to a refresh later.
    paused_until: float | None = None
    paused_reason: str = ""
    #: The sources' problems as raised by the replica that runs each (key, text): a replica
    #: that runs the source itself shows its own, fresher words instead.
    source_conditions: tuple[tuple[str, str], ...] = ()

    def reasons_at(self, now: float) -> list[str]:
        paused = self.paused_until is not None and self.paused_until > now
        return ([self.paused_reason] if paused else []) + list(self.reasons)


class Health:
    """Collects the reasons; one instance per service.

    The store's part of the answer is computed by a background loop (`run_in_background`) every
    ``refresh_every`` seconds, so that a request only reads memory: a load balancer's flood of
    GETs never waits on the store, never takes its write lock and never runs its integrity check.
    When no loop keeps that answer fresh (a service not started, or a stalled loop), the request
    that finds it stale computes it, once for all the requests waiting meanwhile.
    """

    #: How often the loop reads the store's reasons (the store's probes have their own cadence).
    refresh_every = 1.0
    #: A loop that has not finished asking the store for this long is stuck (a database that
    #: stopped answering), not busy: the answer turns red without waiting for it.
    stuck_after = 5.0

    def __init__(self, config: Config, store: StoreBackend, workers: WorkerPool,
                 sources: Sequence[EventSource], fixed: Sequence[str],
                 *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.workers = workers
        self.sources = sources  # the service's own list, not a copy of it
        self.fixed = list(fixed)
        self.clock = clock
        #: The clock this process stamps leases with (the workers' clock).
        self.wall = wall
        self._clock_was_off = False
        self.probe = StoreProbe(store, clock=clock)
        self._refresh_lock = threading.Lock()
        self._store_answer: StoreAnswer | None = None
        self._loop_running = False

    def died_key(self, source: EventSource) -> str:
        """The condition of ``source``'s loop having died in this process: this replica's own
        (its rounds go on elsewhere), alerted once and cleared when the process ends; no other
        replica's working round clears it, and no other replica is red for it."""
        return f"{LOOP_DIED_PREFIX}{_source_name(source)}@{self.workers.holder}"

    def conditions_of(self, source: EventSource, now: float, *,
                      loop_died: bool = False) -> dict[str, list[str]]:
        """Each condition of ``source`` in this process -> its problems ([]: none now).

        The rounds' problems (`EventSource.problems`) are the source's own condition, the
        same on every replica, cleared by the next round that works wherever it runs; a
        loop that died is this replica's (`died_key`), and its rounds say nothing current.
        """
        if loop_died:
            return {self.died_key(source): [
                f"the event source {_source_name(source)} "
                f"stopped with an error on {self.workers.holder} (see its log)"]}
        return {source.condition_key: source.problems(now)}

    def reasons(self, *, stopping: bool, dead_sources: Collection[str] = (),
                store: StoreAnswer | None = None) -> list[str]:
        """Why names are not being protected; ``dead_sources``: the `condition_key` of each
        source whose loop stopped with an error in this process."""
        now = time.time()
        found = list(self.fixed)
        if stopping:
            found.append("namekeeper is shutting down")
        if self.workers.store_error:
            found.append(self.workers.store_error)
        elif not self.workers.alive():
            found.append("the queue workers are not running")
        live = set()
        for source in self.sources:
            for key, problems in self.conditions_of(
                    source, now, loop_died=source.condition_key in dead_sources).items():
                if problems:
                    live.add(key)
                found += problems
        store = store or self.store_answer()
        if store.problem:
            if store.problem not in found:  # said already when the workers stopped for it
                found.append(store.problem)
            return found  # the store's other answers cannot be trusted
        return found + store.reasons_at(now) + [
            text for key, text in store.source_conditions if key not in live]

    def fresh_store_answer(self) -> StoreAnswer | None:
        """The store's answer if fresh enough, else None; never blocks.

        Fresh: at most ``3 * refresh_every`` seconds old while the loop runs (it is late, not
        gone), ``refresh_every`` when no loop refreshes it.
        """
        current = self._store_answer
        fresh_for = self.refresh_every * (3 if self._loop_running else 1)
        if current is not None and 0 <= self.clock() - current.checked_at < fresh_for:
            return current
        return None

    def store_answer(self) -> StoreAnswer:
        """The store's answer, at most ``3 * refresh_every`` seconds old (asked now if older).

        While the loop is stuck asking the store (a database that stopped answering), the
        answer says so at once: a load balancer's check must not wait out a connect timeout.
        """
        current = self.fresh_store_answer()
        if current is not None:
            return current
        if not self._refresh_lock.acquire(timeout=self.refresh_every if self._loop_running
                                          else -1):
            last = self._store_answer
            if last is not None and self.clock() - last.checked_at < self.stuck_after:
                return last  # the loop is busy (an integrity check), not stuck: its word stands
            silent = f" for {self.clock() - last.checked_at:.0f} s" if last else ""
            return StoreAnswer(self.clock(),
                               f"the store {self.store.location} has not answered{silent}", ())
        try:
            current = self._store_answer  # another request may have refreshed it meanwhile
            if current is not None and 0 <= self.clock() - current.checked_at < self.refresh_every:
                return current
            return self._refresh_locked()
        finally:
            self._refresh_lock.release()

    def refresh(self) -> StoreAnswer:
        """Ask the store now (the loop's step)."""
        with self._refresh_lock:
            return self._refresh_locked()

    def run_in_background(self, stop: threading.Event) -> threading.Thread:
        """Refresh the store's answer every ``refresh_every`` seconds until ``stop`` is set."""
        def loop() -> None:
            self._loop_running = True
            while True:
                try:
                    self.refresh()
                except Exception:  # the loop must outlive any one failure
                    # _refresh_locked turns the store's own errors into reasons; anything else
                    # is a bug: logged, and the next request computes the answer itself.
                    log.exception("refreshing the health answer failed")
                if stop.wait(self.refresh_every):
                    self._loop_running = False
                    return

        thread = threading.Thread(target=loop, name="namekeeper-health", daemon=True)
        thread.start()
        return thread

    def _refresh_locked(self) -> StoreAnswer:
        try:
            problem = self.probe.problem()
        except StoreUnusable as exc:
            self.workers.store_unusable(exc)  # they stop, and intake refuses (`GroupCommitSink`)
            problem = str(exc)
        answer = StoreAnswer(self.clock(), problem, ())
        if problem is None:
            try:
                answer = self._ask_store(time.time())
            except StoreError as exc:
                answer = StoreAnswer(self.clock(), None, (
                    f"the store {self.store.location} cannot be read ({exc})",))
        self._store_answer = answer
        return answer

    def _ask_store(self, now: float) -> StoreAnswer:
        paused_until = self.store.budget_paused_until(now=now)
        conditions = {c.key: c.text for c in self.store.conditions()}
        paused_text = conditions.pop(CONDITION_PAUSED, "")  # shown only while the pause lasts
        paused_reason = ""
        if paused_until is not None:
            paused_reason = (paused_text or
                             "the budget of new public projects is paused until "
                             f"{datetime.fromtimestamp(paused_until, timezone.utc):%H:%M:%S} UTC")
        sources = tuple((k, t) for k, t in conditions.items() if k.startswith(CONDITION_PREFIX))
        # A loop that died in a process is that process's reason (`reasons`), not every one's.
        found = [t for k, t in conditions.items()
                 if not k.startswith((CONDITION_PREFIX, LOOP_DIED_PREFIX))]
        stuck = self.store.stuck_leases(self.config.queue.lease, now=now)
        if stuck:
            found.append(f"{stuck} queue item(s) are held by leases that expired more than "
                         f"{self.config.queue.lease:.0f} s ago and were not reclaimed")
        failed, some = self.store.failed_names()
        if failed:
            more = f" and {failed - len(some)} more" if failed > len(some) else ""
            found.append(f"{failed} {FAILED_REASON}: {', '.join(some)}"
                         f"{more} (`namekeeper status` says why)")
        clock_off = self._clock_problem()
        if clock_off:
            found.append(clock_off)
        return StoreAnswer(self.clock(), None, tuple(found), paused_until, paused_reason, sources)

    def _clock_problem(self) -> str | None:
        """Why this process's clock cannot share the store's leases, if it cannot (logged once)."""
        offset = self.store.clock_offset(self.wall)
        if offset is None or abs(offset) <= MAX_CLOCK_OFFSET:
            self._clock_was_off = False
            return None
        problem = (f"this host's clock is {abs(offset):.0f} s "
                   f"{'ahead of' if offset > 0 else 'behind'} the store's ({self.store.location}): "
                   "every replica stamps leases and the budget's hour with its own clock, so "
                   f"they must agree within {MAX_CLOCK_OFFSET:.0f} s (NTP)")
        if not self._clock_was_off:
            log.warning("%s", problem)
        self._clock_was_off = True
        return problem


def _source_name(source: EventSource) -> str:
    return source.condition_key.removeprefix(CONDITION_PREFIX)
