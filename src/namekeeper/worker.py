"""Queue workers: lease a name, let the keeper act, settle the queue item.

The keeper decides; the worker only translates its outcome into queue state:
done (with a confirmation lookup scheduled after an upload), try again later
(with exponential backoff, or when the budget frees a slot), or FAILED after
``max-attempts`` — always alerted, with the last error kept visible.

Work is leased, not owned (`store_queue`): a heartbeat thread renews the
leases this process holds, reclaims expired ones (any process's), and queues
the confirmations that are due.  A public index that cannot be reached is one
condition for the whole service, not a failure of each name: names wait,
without spending attempts, and resume when it answers again.  So are upload
credentials that the index refuses, or that are missing (`upload_hold`):
uploads wait behind one condition, one of them at a time finding out whether
the credentials work again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

from .config import QueueConfig, redact
from .errors import StoreError
from .keeper import Keeper
from .model import Action, Outcome
from .public.interface import PublicIndexUnavailable
from .store.interface import (
    LeaseLost,
    Released,
    StoreBackend,
    StoreUnavailable,
    StoreUnusable,
    WorkItem,
    holder_id,
)
from .upload_hold import CONDITION_MISSING, CONDITION_REFUSED, CredentialsHold

log = logging.getLogger(__name__)

CONDITION_UNREACHABLE = "public-index-unreachable"


class WorkerPool:
    """A few threads draining the durable queue; safe to run beside other processes."""

    def __init__(self, keeper: Keeper, store: StoreBackend, queue: QueueConfig, *, threads: int = 2,
                 clock: Callable[[], float] = time.time, holder: str | None = None) -> None:
        # The pool retries and alerts when it gives up: build the keeper with
        # notify_transient=False (`app.build_keeper(..., for_queue=True)`).
        self.keeper = keeper
        self.store = store
        self.queue = queue
        self.threads_wanted = threads
        self.clock = clock
        #: This process's name on the leases it takes.
        self.holder = holder or holder_id()
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.actions: Counter[str] = Counter()
        #: Set when the store is unusable (corrupt): the workers stop, /healthz says why.
        self.store_error: str | None = None
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._held: dict[str, str] = {}  # claim -> name, of the items the threads have in hand
        self._outage_since: float | None = None
        # An outage raised before this process started (by it, before a restart, or by a
        # replica) is cleared by the first answer this process gets, as its own would be.
        self._outage_maybe_raised = True
        self._outage_streak = 0
        self._lookups_ok = 0
        self._failed_at: dict[str, int] = {}  # name -> _lookups_ok when its lookup last failed
        self._secrets = keeper.config.secret_values()
        #: Holds uploads back while our credentials are refused or missing (one condition).
        self.credentials = CredentialsHold(keeper, queue, clock=clock, wake=self.wake.set)

    # -- lifecycle -----------------------------------------------------------------------------

    def look_for_credentials(self) -> None:
        """Before work starts: no upload credentials at all is the condition at once, names or
        not; credentials found end a 'none found' left by an earlier start (`upload_hold`)."""
        try:
            if self.keeper.config.policy.dry_run:
                # A dry run uploads nothing: it needs no credentials, and no name waits for
                # them; a condition an earlier start left would stand for as long as it runs.
                for key in (CONDITION_REFUSED, CONDITION_MISSING):
                    self.store.clear_condition(key)
                return
            self.credentials.look_for_credentials()
        except StoreError as exc:  # the workers meet it too, and say so
            log.warning("could not record whether upload credentials are found: %s", exc)

    def start(self) -> None:
        for i in range(self.threads_wanted):
            t = threading.Thread(target=self._loop, args=(f"worker-{i}",),
                                 name=f"namekeeper-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        self._heartbeat = threading.Thread(target=self._beat, name="namekeeper-leases",
                                           daemon=True)
        self._heartbeat.start()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Finish the item in hand, claim nothing new; give back what is still held."""
        self.stop.set()
        self.wake.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if self.alive_count():
            try:
                # Still blocked on the network: the items are pending again for anyone.
                self.store.release_held(self.holder)
            except StoreError:
                log.warning("could not give back the items in hand; their leases expire")

    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def alive_count(self) -> int:
        return sum(t.is_alive() for t in self._threads)

    def notify_work(self) -> None:
        self.wake.set()

    # -- leases --------------------------------------------------------------------------------

    def _beat(self) -> None:
        """Renew our leases, reclaim expired ones, queue due confirmations, until stopped."""
        every = max(0.05, min(self.queue.lease / 3, 10.0))
        while not self.stop.wait(every):
            if self.store_error:
                return
            try:
                self.tend_leases()
            except StoreUnusable as exc:
                self.store_unusable(exc)
                return
            except StoreUnavailable as exc:
                log.warning("renewing leases failed (will retry): %s", exc)
            except Exception:
                log.exception("renewing leases failed")

    def tend_leases(self) -> None:
        """One heartbeat: renew, reclaim, schedule confirmations (tests call it directly)."""
        with self._lock:
            held = list(self._held.items())
        for claim, name in held:
            if not self.store.renew(name, claim, self.queue.lease):
                log.warning("%s: our lease on it was lost; its new holder decides", name)
        reclaimed = self.store.reclaim_expired(now=self.clock())
        if reclaimed:
            log.warning("reclaimed %d name(s) whose lease expired: %s", len(reclaimed),
                        ", ".join(reclaimed[:10]))
        if reclaimed or self.store.schedule_confirmations(now=self.clock()):
            self.wake.set()

    def store_unusable(self, exc: StoreUnusable) -> None:
        """The store is corrupt: say so once, stop the workers (retrying cannot help)."""
        with self._lock:
            if self.store_error is None:
                self.store_error = str(exc)
                log.error("%s; the queue workers stop", self.store_error)
        self.stop.set()
        self.wake.set()

    # -- the loop -------------------------------------------------------------------------------

    def _loop(self, worker: str) -> None:
        errors = 0
        while not self.stop.is_set():
            try:
                busy = self.run_once(worker)
                errors = 0
            except StoreUnusable as exc:
                self.store_unusable(exc)  # corrupt: retrying cannot help
                return
            except StoreUnavailable as exc:  # lost or busy: one line, then back off
                errors += 1
                log.warning("queue worker %s: the store failed (%s); retrying", worker, exc)
                busy = False
            except Exception:
                errors += 1
                log.exception("queue worker %s hit an unexpected error", worker)
                busy = False
            if errors:
                # Back off on repeated errors: no hot loop, no flood of log lines.
                self.stop.wait(min(30.0, 0.1 * 2 ** min(errors, 9)))
            elif not busy:
                self._idle()

    def _idle(self) -> None:
        try:
            next_at = self.store.next_ready_at()
        except StoreError:
            next_at = None  # the next claim meets the failure and reports it
        timeout = 5.0 if next_at is None else min(5.0, max(0.01, next_at - self.clock()))
        self.wake.wait(timeout)
        self.wake.clear()

    def run_once(self, worker: str = "worker") -> bool:
        """Handle one ready item; False when there was none."""
        item = self.store.claim(self.holder, self.queue.lease, now=self.clock())
        if item is None:
            return False
        with self._lock:
            busy = item.name in self._held.values()
            if not busy:
                self._held[item.claim] = item.name
        if busy:
            # Another thread still has the name in hand under a claim that lapsed: it can no
            # longer start an upload or settle the name, but its upload may be under way.
            self.store.release(item.name, item.claim,
                               not_before=self.clock() + self.queue.backoff_base,
                               error="still in the hands of another worker of this process",
                               count_attempt=False, confirming=item.confirming)
            log.warning("%s: another worker of this process still has it in hand; tried again "
                        "in %.1f s", item.name, self.queue.backoff_base)
            return True
        try:
            self._handle(item)
        finally:
            with self._lock:
                del self._held[item.claim]
        return True

    def _handle(self, item: WorkItem) -> None:
        display = item.event.display_name
        try:
            if item.confirming:
                outcome, again_at = self.keeper.confirm(item.name, display, event=item.event)
                self._index_answered(item.name)
                self._complete(item, again_at)
                return
            outcome = self.keeper.reserve_name(item.name, display, event=item.event,
                                               budget=self.keeper.budget_spender(),
                                               claim=item.claim, gate=self.credentials)
        except LeaseLost as exc:
            log.warning("%s", exc)
            return
        except PublicIndexUnavailable as exc:
            self._index_unreachable(item, f"public index unavailable: {exc}")
            return
        except StoreError:
            raise  # the loop decides: back off, or stop on a corrupt store
        except Exception as exc:  # any failure is retried, then shown as FAILED
            # Redacted before it is logged, stored or alerted; the traceback only at DEBUG.
            error = redact(f"{type(exc).__name__}: {exc}", self._secrets)
            log.error("reserving %s failed: %s", item.name, error,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            self._retry(item, error, None, report=lambda: self.keeper.fail(
                item.name, display, f"giving up after {self.queue.max_attempts} attempts: {error}",
                item.event))
            return
        self._index_answered(item.name)
        with self._lock:
            self.actions[outcome.action.value] += 1
        self._settle(item, outcome)

    def _complete(self, item: WorkItem, confirm_at: float | None,
                  error: str | None = None) -> None:
        if not self.store.complete(item.name, item.claim, confirm_at=confirm_at, error=error):
            log.warning("%s: finished after our lease was lost; its new holder decides",
                        item.name)

    def _settle(self, item: WorkItem, outcome: Outcome) -> None:
        if outcome.action is Action.DEFERRED:
            # Waiting for the credentials (`upload_hold`) is no failure of this name: no
            # attempt is counted, and the condition was alerted, not the name.
            self.store.release(item.name, item.claim, not_before=self.credentials.resume_at(),
                               error=outcome.message, count_attempt=False)
            return
        if outcome.retry_after is None:
            # A 2xx is confirmed by a lookup a little later (the index may not hold it after all).
            confirm = (self.clock() + self.queue.confirm_after
                       if outcome.action is Action.RESERVED else None)
            # FAILED with nothing to wait for (the index refused for good): the queue says failed.
            self._complete(item, confirm,
                           outcome.message if outcome.action is Action.FAILED else None)
            return
        if outcome.action is Action.RATE_LIMITED:
            # Waiting for budget is not a failure: no attempt is counted.
            self.store.release(item.name, item.claim,
                               not_before=self.clock() + max(outcome.retry_after, 0.05),
                               error=outcome.message, count_attempt=False)
            return
        self._retry(item, outcome.message, outcome.retry_after,
                    report=lambda: self.keeper.notify(replace(outcome, retry_after=None)))

    def _retry(self, item: WorkItem, error: str, retry_after: float | None, *,
               report: Callable[[], object]) -> None:
        """Give ``item`` back to be tried again later, or end it FAILED after its last
        attempt; ``report`` (record and alert the failure) runs before a last release."""
        backoff = min(self.queue.backoff_base ** (item.attempts + 1), self.queue.backoff_max)
        delay = max(backoff, retry_after or 0.0)
        if (item.attempts + 1 >= self.queue.max_attempts
                and self.store.renew(item.name, item.claim, self.queue.lease)):
            # Before the queue records the end, not after: a process killed in between
            # would leave a name FAILED in the queue that nobody was told about.  Killed
            # after the report, the lease lapses and the name is tried (and reported) again.
            # Only while the claim holds (renewed for the report's time): a lost one's name
            # is another claim's to try, and to report.
            report()
        state = self.store.release(item.name, item.claim, not_before=self.clock() + delay,
                                   error=error, max_attempts=self.queue.max_attempts,
                                   confirming=item.confirming)
        if state is Released.FAILED:
            log.error("giving up on %s after %d attempts: %s", item.name,
                      self.queue.max_attempts, error)
        elif state is Released.LOST:
            log.warning("%s: our lease was lost; its new holder decides", item.name)
        else:
            log.warning("%s will be tried again in %.1f s: %s", item.name, delay, error)

    # -- the public index's availability ------------------------------------------------------

    def _index_unreachable(self, item: WorkItem, error: str) -> None:
        """A lookup failed: the index is down (wait, no attempt spent) or this name is at fault."""
        now = self.clock()
        with self._lock:
            # Other lookups succeeded since this name last failed: the fault is this name's.
            at_fault = self._failed_at.get(item.name, self._lookups_ok) < self._lookups_ok
            self._failed_at[item.name] = self._lookups_ok
            if self._outage_since is None:
                self._outage_since = now
            self._outage_streak += 1
            streak, since = self._outage_streak, self._outage_since
        if at_fault:
            self._retry(item, error, None, report=lambda: self.keeper.fail(
                item.name, item.event.display_name, error, item.event))
            return
        delay = min(self.queue.backoff_max, self.queue.backoff_base ** min(streak, 30))
        self.store.release(item.name, item.claim, not_before=now + delay, error=error,
                           count_attempt=False, confirming=item.confirming)
        if now - since >= self.queue.outage_after:
            self.keeper.raise_condition(
                CONDITION_UNREACHABLE,
                f"the public index has been unreachable for {now - since:.0f} s ({error}); "
                "names wait in the queue and are handled when it answers again")

    def _index_answered(self, name: str) -> None:
        with self._lock:
            was_down = self._outage_since is not None or self._outage_maybe_raised
            self._outage_since, self._outage_streak = None, 0
            self._outage_maybe_raised = False
            self._lookups_ok += 1
            self._failed_at.pop(name, None)
        if was_down and self.store.clear_condition(CONDITION_UNREACHABLE):
            log.warning("the public index answers again; waiting names resume")
            self.wake.set()
