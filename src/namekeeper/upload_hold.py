"""Uploads held back while the public index refuses our credentials, or we have none.

Like an unreachable public index (`worker`), that is one condition of the whole service, not
a failure of each name: every upload meets the same refusal until a person fixes the
credentials.  Under `serve` the keeper asks the queue's `CredentialsHold` before each upload
(`UploadGate`):

- the first refusal raises one condition, alerted once and shown by ``/healthz`` and
  ``status`` while it stands, whose text says what happened and what to do:
  `CONDITION_REFUSED` (the index refuses the credentials we send), or `CONDITION_MISSING`
  (none were found, at start or at an upload);
- the name is not FAILED: it goes back to the queue, DEFERRED, without spending an attempt
  and without an alert of its own;
- the other names' uploads wait too: one upload at a time probes the credentials, the next
  after a backoff doubling from ``[queue] backoff-base`` up to ``backoff-max``.  Their lookups
  go on, so a name taken meanwhile is still alerted;
- the first upload the index takes our credentials for (a new token in the keyring, a
  restart with a new one, the account fixed) clears the condition, whichever replica sends
  it, and the waiting names resume.

The command line has no hold: ``namekeeper reserve`` fails the name with the index's words
and its exit code, for the person watching.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING

from .config import QueueConfig, redact
from .model import Action, UploadResult

if TYPE_CHECKING:
    from .keeper import Keeper

log = logging.getLogger(__name__)

#: The public index refuses the credentials we send (a 401, or a 403 about no one project).
CONDITION_REFUSED = "public-credentials-refused"
#: No upload credentials were found at all: nothing can be uploaded.
CONDITION_MISSING = "public-credentials-missing"

# Answers the index gives only to an account it knows: our credentials work.  A 5xx, a
# timeout or a refusal before anything was sent says nothing about them; nor does a 429,
# which a proxy in front of the index may answer before they are read.
_CREDENTIALS_TAKEN = frozenset({Action.RESERVED, Action.ALREADY_OURS, Action.TAKEN,
                                Action.PROTECTED})


class UploadGate(ABC):
    """Whether an upload may go now; the keeper asks before it builds and sends a placeholder.

    `serve`'s queue holds uploads back while our credentials are refused (`CredentialsHold`);
    the command line passes no gate, and every upload goes.  A keeper given a gate leaves a
    failure on our credentials to it: the name is DEFERRED, not FAILED.
    """

    @abstractmethod
    def admit(self, name: str) -> str | None:
        """None when ``name``'s upload may go now (`finished` follows, whatever happens next);
        otherwise why it waits, in one line."""

    @abstractmethod
    def finished(self, name: str, result: UploadResult | None) -> None:
        """The index's answer to the upload `admit` let go; None when it was not made after all
        (a broken build, no budget slot, a lost lease)."""


class CredentialsHold(UploadGate):
    """`serve`'s gate: uploads wait while our credentials are refused or missing; thread-safe."""

    def __init__(self, keeper: Keeper, queue: QueueConfig, *,
                 clock: Callable[[], float] = time.time,
                 wake: Callable[[], None] = lambda: None) -> None:
        self.keeper = keeper
        self.queue = queue
        self.clock = clock
        #: Called once uploads may go again, so that idle workers look for ready names at once.
        self.wake = wake
        self._lock = threading.Lock()
        self._problem: str | None = None  # the condition's text, while uploads wait
        self._refusals = 0  # in a row: the wait between probes doubles with each
        self._probe_at = 0.0  # when the next upload may find out whether the credentials work
        self._probe: str | None = None  # the name whose upload is finding out now
        # A condition raised before this process started (by it, before a restart, or by a
        # replica) is cleared by the first upload the index takes our credentials for.
        self._maybe_raised = True

    def look_for_credentials(self) -> None:
        """At start: none found is the condition at once, names or not; credentials found
        end a 'none found' raised before (they make it untrue).  Sends nothing."""
        missing = self.keeper.missing_credentials()
        if missing is not None:
            if not self._refused(missing, missing=True):
                log.warning("%s", missing)  # raised before this start: said here all the same
            return
        if self.keeper.store.clear_condition(CONDITION_MISSING):
            log.warning("upload credentials for the public index are found now; waiting names "
                        "resume")
        elif not any(c.key == CONDITION_REFUSED for c in self.keeper.store.conditions()):
            return
        # The names waited for a probe up to backoff-max away: the credentials of this start
        # are tried at once (the first upload raises the condition again, or clears it).
        self.keeper.store.resume_deferred()

    def admit(self, name: str) -> str | None:
        with self._lock:
            if self._problem is None:
                return None
            if self._probe is None and self.clock() >= self._probe_at:
                self._probe = name  # the one upload that finds out whether they work now
                return None
            return f"the upload waits: {self._problem}"

    def finished(self, name: str, result: UploadResult | None) -> None:
        with self._lock:
            if self._probe == name:
                self._probe = None
        if result is None:
            return
        if result.credentials_problem is not None:
            # Refused, or none found: the backend's own check says which.
            self._refused(result.credentials_problem,
                          missing=self.keeper.missing_credentials() is not None)
        elif result.action in _CREDENTIALS_TAKEN:
            self._taken()

    def resume_at(self) -> float:
        """When a name that waited (or probed, and was refused) is tried again: at the next
        probe; soon, while one is under way (its answer may end the wait)."""
        now = self.clock()
        with self._lock:
            return max(self._probe_at, now + self._backoff(1))

    def _backoff(self, refusals: int) -> float:
        return min(self.queue.backoff_max, self.queue.backoff_base ** min(refusals, 30))

    def _refused(self, problem: str, *, missing: bool) -> bool:
        """Hold uploads back; True when this raised the condition (and alerted it)."""
        text = redact(f"{problem}; names wait in the queue, without spending attempts, until an "
                      "upload is accepted", self.keeper.config.secret_values())
        with self._lock:
            self._problem = text
            self._refusals += 1
            self._probe_at = self.clock() + self._backoff(self._refusals)
        key, other = ((CONDITION_MISSING, CONDITION_REFUSED) if missing
                      else (CONDITION_REFUSED, CONDITION_MISSING))
        # One of the two at a time: credentials refused were found; none found, none refused.
        self.keeper.store.clear_condition(other)
        raised = self.keeper.record_condition(key, text)
        if raised:
            self.keeper.alert_condition(key, text)
        return raised

    def _taken(self) -> None:
        with self._lock:
            was_held = self._problem is not None
            maybe_raised = was_held or self._maybe_raised
            self._problem, self._refusals, self._probe_at = None, 0, 0.0
            self._maybe_raised = False
        if not maybe_raised:
            return
        cleared = [key for key in (CONDITION_REFUSED, CONDITION_MISSING)
                   if self.keeper.store.clear_condition(key)]
        if was_held or cleared:
            log.warning("the public index accepts our upload credentials again; waiting names "
                        "resume")
            # Those a replica deferred wait for its next probe otherwise, up to backoff-max.
            self.keeper.store.resume_deferred()
            self.wake()
