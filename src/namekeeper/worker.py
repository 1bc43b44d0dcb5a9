"""Queue workers: claim a name, let the keeper act, settle the queue item.

The keeper decides; the worker only translates its outcome into queue state:
done, try again later (with exponential backoff, or when the budget frees a
slot), or FAILED after ``max-attempts`` with the last error kept visible.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

from .config import QueueConfig
from .keeper import Keeper
from .model import Action, Outcome
from .public.interface import PublicIndexUnavailable
from .store_interface import StoreBackend, WorkItem

log = logging.getLogger(__name__)


class WorkerPool:
    """A few threads draining the durable queue; safe to run beside other processes."""

    def __init__(self, keeper: Keeper, store: StoreBackend, queue: QueueConfig, *, threads: int = 2,
                 clock: Callable[[], float] = time.time) -> None:
        self.keeper = keeper
        keeper.notify_transient = False  # the pool retries; it alerts when it gives up
        self.store = store
        self.queue = queue
        self.threads_wanted = threads
        self.clock = clock
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.actions: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        recovered = self.store.requeue_claimed()
        if recovered:
            log.warning("resuming %d name(s) that were in flight when the service stopped",
                        recovered)
        for i in range(self.threads_wanted):
            t = threading.Thread(target=self._loop, args=(f"worker-{i}",),
                                 name=f"namekeeper-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Finish the item in hand, claim nothing new."""
        self.stop.set()
        self.wake.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def alive_count(self) -> int:
        return sum(t.is_alive() for t in self._threads)

    def notify_work(self) -> None:
        self.wake.set()

    # -- the loop -------------------------------------------------------------------------------

    def _loop(self, worker: str) -> None:
        while not self.stop.is_set():
            try:
                busy = self.run_once(worker)
            except Exception:  # noqa: BLE001 - a worker thread must survive anything
                log.exception("queue worker %s hit an unexpected error", worker)
                busy = False
            if not busy:
                self._idle()

    def _idle(self) -> None:
        next_at = self.store.next_ready_at()
        timeout = 5.0 if next_at is None else min(5.0, max(0.01, next_at - self.clock()))
        self.wake.wait(timeout)
        self.wake.clear()

    def run_once(self, worker: str = "worker") -> bool:
        """Handle one ready item; False when there was none."""
        item = self.store.claim(worker, now=self.clock())
        if item is None:
            return False
        self._handle(item)
        return True

    def _handle(self, item: WorkItem) -> None:
        spend = self.keeper.budget_spender()
        try:
            outcome = self.keeper.reserve_name(item.name, item.event.display_name,
                                               event=item.event, budget=spend)
        except PublicIndexUnavailable as exc:
            self._retry(item, f"public index unavailable: {exc}", None)
            return
        except Exception as exc:  # noqa: BLE001 - any failure is retried, then shown as FAILED
            log.exception("reserving %s failed", item.name)
            self._retry(item, f"{type(exc).__name__}: {exc}", None)
            return
        with self._lock:
            self.actions[outcome.action.value] += 1
        self._settle(item, outcome)

    def _settle(self, item: WorkItem, outcome: Outcome) -> None:
        if outcome.retry_after is None:
            self.store.complete(item.name)
            return
        if outcome.action is Action.RATE_LIMITED:
            # Waiting for budget is not a failure: no attempt is counted.
            self.store.release(item.name, not_before=self.clock() + max(outcome.retry_after, 0.05),
                               error=outcome.message, count_attempt=False)
            return
        if self._retry(item, outcome.message, outcome.retry_after) == "failed":
            self.keeper.notify(replace(outcome, retry_after=None))

    def _retry(self, item: WorkItem, error: str, retry_after: float | None) -> str:
        backoff = min(self.queue.backoff_base ** (item.attempts + 1), self.queue.backoff_max)
        delay = max(backoff, retry_after or 0.0)
        state = self.store.release(item.name, not_before=self.clock() + delay, error=error,
                                   max_attempts=self.queue.max_attempts)
        if state == "failed":
            log.error("giving up on %s after %d attempts: %s", item.name,
                      self.queue.max_attempts, error)
        else:
            log.warning("%s will be tried again in %.1f s: %s", item.name, delay, error)
        return state
