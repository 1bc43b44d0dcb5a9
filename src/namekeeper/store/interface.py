"""The store's contract: what the keeper, the workers, the server and the CLI may ask of it.

Every backend (SQLite, the embedded default; PostgreSQL, for several replicas
on several machines; a third party's, through the ``namekeeper_store`` hook)
implements `StoreBackend` and passes the same contract test suite
(``tests/test_store_contract.py``).  Nothing outside a backend's own module
touches SQL.

The promises every backend keeps, whatever its concurrency model:

- an event `accept`-ed is durable when the call returns, and is journaled
  once however often (and through however many replicas) it arrives;
- `claim` leases a ready item to exactly one holder, across processes, and only an
  expired lease is ever reclaimed; the claim's own id (`WorkItem.claim`), not its
  holder, is what may upload and settle the item;
- `take_budget` never grants more than ``limit`` slots per `BUDGET_WINDOW`,
  however many processes ask at once;
- `lease_job` grants a periodic job (re-check, reconciliation) to one holder
  at a time, so that the replicas take turns instead of electing a leader;
- `DeliveryLog.claim_retry` hands a pending notification retry to one sender,
  however many replicas (or overlapping retry rounds) ask at once.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from ..errors import StoreError
from ..model import Action, NameEvent, Outcome, PublicProject, Verdict, outcome_from_json
from ..names import ultranormalize
from .schema import BUDGET_WINDOW, NameRecord, WorkItem

__all__ = ["BUDGET_WINDOW", "DEFAULT_LEASE", "Condition", "DeliveryLog", "LeaseLost",
           "NameRecord", "QueueState", "Released", "Retry", "SchemaVersion", "StoreBackend",
           "StoreSnapshot", "StoreUnavailable", "StoreUnusable", "StoredLookalike", "WorkItem", "holder_id"]


#: How long a claim lasts unless its holder renews it (seconds).
DEFAULT_LEASE = 120.0


class LeaseLost(Exception):
    """The lease of a claim expired and the item may be another claim's now: stop."""


#: Replicas stamp leases, the budget's hour and retries with their own clocks: this far
#: from the database's (NTP keeps hosts within milliseconds), one of them is broken.
MAX_CLOCK_OFFSET = 10.0


def holder_id() -> str:
    """A name for this process that no other process, here or elsewhere, shares."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def other_holder(held: Mapping[str, Sequence[str]], name: str) -> str | None:
    """The first name of ``held`` (`StoreBackend.held_classes`) in ``name``'s class, not ``name``."""
    return next((h for h in held.get(ultranormalize(name), ()) if h != name), None)


@dataclass(frozen=True)
class Condition:
    """A service-wide problem (not about one name), raised once, shown until cleared."""

    key: str
    text: str
    since: float


@dataclass(frozen=True)
class StoredLookalike:
    """A reported look-alike and the facts the public index gave about it."""

    public: str
    ours: str
    kind: str
    distance: int
    owners: tuple[str, ...] | None  # None: not known (the lookup failed or is not published)
    organization: str | None
    first_release: datetime | None
    found_at: datetime
    alerted: bool


class QueueState(str, Enum):
    """Where a name's queue item is.  A ``str`` so that counts and JSON read as before."""

    def __str__(self) -> str:  # in tables and pages, as in JSON: "pending"
        return str(self.value)

    PENDING = "pending"
    CLAIMED = "claimed"
    DONE = "done"
    FAILED = "failed"


class Released(Enum):
    """What `StoreBackend.release` did with the item it was given back."""

    PENDING = "pending"  # ready again at ``not_before``
    FAILED = "failed"  # ``max_attempts`` reached: settled, nobody tries it again
    LOST = "lost"  # the caller no longer held it: nothing changed


class StoreUnavailable(StoreError):
    """The store cannot be reached or used right now; the message names it (never a secret).

    Every backend raises it (not its driver's errors) for a lost, refused or busy database;
    callers retry with a backoff, answer 503, and show it on /healthz.
    """


class StoreUnusable(StoreError):
    """The store is there but cannot be used (corrupt, not a database, a newer schema): retrying
    cannot help."""


@dataclass(frozen=True)
class SchemaVersion:
    """The schema a store holds (``found``; 0: empty) and the one this code writes (``known``)."""

    found: int
    known: int

    def problem(self) -> str | None:
        """Why this code must not use the store as it is, or None."""
        if self.found > self.known:
            return (f"its schema is version {self.found}, newer than this namekeeper knows "
                    f"({self.known}): upgrade namekeeper")
        if self.found < self.known:
            return (f"its schema is version {self.found}, this namekeeper needs {self.known}: "
                    "run `namekeeper store migrate`")
        return None


@dataclass(frozen=True)
class StoreSnapshot:
    """Everything a store holds, backend-neutral: what `namekeeper store copy` moves.

    ``tables`` maps each table of `schema.TRANSFERRED_COLUMNS` to its rows (tuples in
    that column order, history and budget in their original order).
    """

    tables: Mapping[str, tuple[tuple[Any, ...], ...]]
    budget_paused_until: float


@dataclass(frozen=True)
class Retry:
    """A delivery to send again: which target, which alert, how often tried, when next."""

    target: str
    name: str
    fingerprint: str
    payload: str  # outcome_to_json(outcome)
    attempts: int
    next_at: float  # epoch seconds

    @property
    def outcome(self) -> Outcome:
        return outcome_from_json(self.payload)


class DeliveryLog(ABC):
    """Where the alert dispatcher remembers what was delivered and what waits for a retry.

    At most one retry is pending per (target, name): a newer alert about the
    same name replaces an older one that never got through.  Every store keeps
    one (`StoreBackend.delivery_log`), so dedup and retries survive restarts and
    are shared by the replicas.
    """

    @abstractmethod
    def was_delivered(self, target: str, name: str, fingerprint: str) -> bool:
        """True when the last alert delivered to ``target`` about ``name`` had this fingerprint."""

    @abstractmethod
    def record_delivery(self, target: str, name: str, fingerprint: str, ok: bool,
                        error: str | None) -> None:
        """Record one attempt; a success becomes the last delivered alert for (target, name)."""

    @abstractmethod
    def schedule_retry(self, retry: Retry) -> None:
        """Make ``retry`` the pending retry for (retry.target, retry.name).

        A first attempt's (``attempts == 1``: a new alert) replaces any; a later attempt's
        replaces only its own alert's (same fingerprint), so that a newer alert recorded
        while the retry was being sent is not overwritten by the older one.
        """

    @abstractmethod
    def retry_for(self, target: str, name: str) -> Retry | None:
        """The pending retry for (target, name), if any."""

    @abstractmethod
    def clear_retry(self, target: str, name: str, fingerprint: str | None = None) -> None:
        """Forget the pending retry for (target, name); with ``fingerprint``, only that alert's
        (a newer alert's retry is kept)."""

    @abstractmethod
    def pending_retries(self, now: float) -> list[Retry]:
        """Every retry due at ``now`` (``next_at <= now``), oldest first."""

    @abstractmethod
    def claim_retry(self, retry: Retry, until: float) -> bool:
        """Take ``retry`` (as `pending_retries` gave it) to send it: True for one caller only,
        and only while it is still the pending retry of (target, name), unchanged.

        The claimed retry is not due again before ``until``: a sender that dies before it
        records the attempt leaves it to be sent later, by any process.
        """

    @abstractmethod
    def current_state(self, name: str) -> tuple[Verdict, Action] | None:
        """(verdict, action) the store records for ``name`` now; None when it cannot say."""

    @abstractmethod
    def active_condition(self, key: str) -> Condition | None:
        """The service-wide condition ``key`` while it lasts; None once it is cleared."""


class StoreBackend(ABC):
    """The durable state of namekeeper: names, history, journal, queue, budget, deliveries."""

    #: What to call the store in logs and errors (a path, or a URL without its password).
    location: str

    # -- lifecycle -------------------------------------------------------------------------------

    @abstractmethod
    def close(self) -> None:
        """Release connections; the object must not be used afterwards."""

    def __enter__(self) -> StoreBackend:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @abstractmethod
    def writable(self) -> bool:
        """True when a write can be committed right now (for /healthz)."""

    def background_maintenance(self, stop: threading.Event) -> threading.Thread | None:
        """Start the backend's housekeeping thread (checkpoints, ...), if it has one."""
        return None

    def watch_for_work(self, wake: Callable[[], None], stop: threading.Event
                       ) -> threading.Thread | None:
        """Call ``wake`` soon after any process queues work; None when the backend cannot tell.

        Without it an idle worker notices another process's work at its next poll.
        """
        return None

    # -- schema and transfer -----------------------------------------------------------------------

    @abstractmethod
    def schema_version(self) -> SchemaVersion:
        """The schema version found in the store and the one this code knows."""

    @abstractmethod
    def migrate(self) -> SchemaVersion:
        """Create or upgrade the schema; refuses (`StoreError`) a schema newer than known.

        Returns the version found before the migration (``found``) and now (``known``).
        """

    @abstractmethod
    def snapshot(self) -> StoreSnapshot:
        """A consistent copy of everything in the store (read in one transaction)."""

    @abstractmethod
    def restore(self, snapshot: StoreSnapshot) -> None:
        """Fill an empty store with ``snapshot`` in one transaction; `StoreError` if not empty."""

    # -- names and history -------------------------------------------------------------------------

    @abstractmethod
    def note_seen(self, event: NameEvent) -> None:
        """Remember that a private index has this name (first time seen, highest version)."""

    @abstractmethod
    def get(self, name: str) -> NameRecord | None: ...

    @abstractmethod
    def all_names(self) -> list[NameRecord]: ...

    @abstractmethod
    def failed_names(self, sample: int = 3) -> tuple[int, list[str]]:
        """How many names' last outcome is FAILED (not held), and the first ``sample`` of them;
        a name the queue is about to try again (pending: a 5xx's retry) has not ended FAILED."""

    @abstractmethod
    def mark_upload_started(self, name: str, display_name: str) -> None:
        """Written before every upload, so a crash mid-upload is recognised after a restart."""

    @abstractmethod
    def record_outcome(self, outcome: Outcome, *, reserved: bool = False) -> None:
        """Store the latest verdict/action for a name; append it to the history if it changed.

        An outcome whose verdict, severity, action and message are the name's stored ones
        (a re-check finding what the last one found) updates the row's time, no history;
        an upload's outcome (reserved, failed) is always an entry.
        """

    @abstractmethod
    def record_public(self, name: str, public: PublicProject) -> None:
        """What the index shows of ``name`` now (owners, organisation, versions, first
        release), kept with its last outcome, whose verdict, action, message and history
        stay: the index showing a placeholder we just uploaded, which the upload's outcome,
        decided before the index had it, could not say."""

    @abstractmethod
    def history(self, name: str) -> list[dict[str, Any]]:
        """The name's history, oldest first: ``{"at", "kind", "detail"}``."""

    # -- many names at once (audit): one transaction per call ---------------------------------------

    @abstractmethod
    def note_seen_many(self, events: Sequence[NameEvent]) -> None:
        """`note_seen` for every event, in one transaction."""

    @abstractmethod
    def records(self, names: Sequence[str]) -> dict[str, NameRecord]:
        """What the store knows of each of ``names`` (absent names are left out)."""

    @abstractmethod
    def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        """`record_outcome` (not reserved) for every outcome, in one transaction."""

    @abstractmethod
    def enqueue_in_order(self, events: Sequence[NameEvent]) -> list[bool]:
        """`accept` every event in one transaction; workers claim them in the given order."""

    # -- event journal and queue with leases --------------------------------------------------------
    # A claim has a holder (one process: `holder_id`), an expiry and an id of its own
    # (`WorkItem.claim`); the holder renews it while working; only an expired lease is
    # reclaimed, by any process.  `renew`, `begin_upload`, `complete` and `release` take
    # the claim's id: the threads of one process share a holder, and a claim that lapsed
    # must fail them even after its holder claimed the same name again.

    def accept(self, event: NameEvent) -> bool:
        """Journal ``event`` and queue its name; False when the event (key) was seen before."""
        return self.accept_many([event])[0]

    @abstractmethod
    def accept_many(self, events: list[NameEvent]) -> list[bool]:
        """`accept` for several events in one transaction (one durable commit for the lot)."""

    @abstractmethod
    def claim(self, holder: str, lease_seconds: float = DEFAULT_LEASE, *,
              now: float | None = None) -> WorkItem | None:
        """Lease the oldest ready item to ``holder`` until ``now + lease_seconds``, or None.

        Never the same item to two callers, whichever processes they run in.  The item's
        ``claim`` is an id no other claim, of any holder, ever had.
        """

    @abstractmethod
    def renew(self, name: str, claim: str, lease_seconds: float = DEFAULT_LEASE) -> bool:
        """Extend the lease of ``claim`` (`WorkItem.claim`) on ``name``; False when ``name``
        is no longer held by that claim."""

    @abstractmethod
    def reclaim_expired(self, *, now: float | None = None) -> list[str]:
        """Make every item whose lease has expired pending again; returns their names."""

    @abstractmethod
    def stuck_leases(self, grace: float, *, now: float | None = None) -> int:
        """Items whose lease expired more than ``grace`` s ago and that nobody reclaimed."""

    @abstractmethod
    def begin_upload(self, name: str, claim: str, display_name: str) -> bool:
        """Record ``upload_started_at`` while ``claim`` holds ``name`` unexpired; False: do not
        upload."""

    @abstractmethod
    def complete(self, name: str, claim: str, *, confirm_at: float | None = None,
                 error: str | None = None) -> bool:
        """``claim`` is done with ``name`` (look again at ``confirm_at``); False: lease lost.

        With ``error`` it ended FAILED for good (no retry would help): settled as failed.
        """

    @abstractmethod
    def release(self, name: str, claim: str, *, not_before: float, error: str | None = None,
                count_attempt: bool = True, max_attempts: int | None = None,
                confirming: bool = False) -> Released:
        """``claim`` gives ``name`` back for a later try (`Released` says what became of it)."""

    @abstractmethod
    def resume_deferred(self, *, now: float | None = None) -> int:
        """Make ready now every pending name that waits, DEFERRED, for a service-wide condition
        that ended (upload credentials taken again); how many."""

    @abstractmethod
    def release_held(self, holder: str) -> int:
        """On a clean shutdown: every item a claim of ``holder`` still holds is pending again."""

    @abstractmethod
    def schedule_confirmations(self, *, now: float | None = None) -> int:
        """Queue a lookup for every done item whose ``confirm_at`` has come."""

    @abstractmethod
    def next_ready_at(self) -> float | None:
        """When the earliest pending item (or confirmation) becomes ready (the workers' sleep)."""

    @abstractmethod
    def schedule_recheck(self, older_than: float, *, now: float | None = None) -> int:
        """Queue again every settled name last looked at more than ``older_than`` s ago."""

    @abstractmethod
    def queue_counts(self) -> dict[QueueState, int]:
        """Items per `QueueState` (every state present, zero included)."""

    @abstractmethod
    def queue_items(self, state: QueueState | None = None) -> list[dict[str, Any]]:
        """Per item, by name: name, state (a `QueueState`), attempts, not_before, last_error,
        claimed_by (the claim's id, `WorkItem.claim`), lease_until, confirm_at."""

    @abstractmethod
    def forget_reservation(self, name: str) -> None:
        """The index does not have our upload after all: the name is not held."""

    # -- periodic jobs ------------------------------------------------------------------------------

    @abstractmethod
    def lease_job(self, job: str, holder: str, seconds: float, *, now: float | None = None) -> bool:
        """Take (or keep) the lease on a periodic job for ``seconds``; False while another holds it."""

    @abstractmethod
    def release_jobs(self, holder: str) -> None:
        """``holder`` stops: every job lease it holds is free now (another replica takes the
        job at its next try, not when the lease would have expired)."""

    # -- budget of new public projects --------------------------------------------------------------

    @abstractmethod
    def take_budget(self, name: str, limit: int, *, now: float | None = None) -> float | None:
        """Spend one new-project slot; None on success, else seconds until a slot frees.

        A success clears the ``budget-paused`` condition (spending again: the pause is over).
        """

    @abstractmethod
    def refund_budget(self, name: str) -> None:
        """Give back a slot whose upload created no project."""

    @abstractmethod
    def pause_budget(self, seconds: float) -> float:
        """The public index said 429: spend nothing for ``seconds``; returns the pause's end."""

    @abstractmethod
    def budget_paused_until(self, *, now: float | None = None) -> float | None:
        """When the current pause ends, or None when spending is allowed."""

    @abstractmethod
    def budget_left(self, limit: int, *, now: float | None = None) -> int: ...

    @abstractmethod
    def budget_spent_at(self) -> list[float]: ...

    # -- conditions and health probes ---------------------------------------------------------------

    @abstractmethod
    def raise_condition(self, key: str, text: str) -> bool:
        """Record a service-wide problem; True only for the call that raised it (it alerts)."""

    @abstractmethod
    def clear_condition(self, key: str) -> bool:
        """The problem is over; True when the condition was raised."""

    @abstractmethod
    def conditions(self) -> list[Condition]: ...

    @abstractmethod
    def probe_writable(self) -> None:
        """Commit a tiny write; raises when the store cannot take writes."""

    @abstractmethod
    def probe_integrity(self) -> str | None:
        """None when a quick integrity check passes, else what it found (one line)."""

    def clock_offset(self, now: Callable[[], float]) -> float | None:
        """How many seconds ``now`` runs ahead of the clock of the store's server (behind:
        negative); None for a store with no server of its own (a file on this host)."""
        return None

    # -- our own placeholders; forgetting names -----------------------------------------------------

    @abstractmethod
    def record_placeholder_owners(self, name: str, owners: Iterable[str]) -> None:
        """Remember the accounts the index reports for a placeholder we just uploaded."""

    @abstractmethod
    def placeholder_owners(self, name: str) -> frozenset[str]: ...

    @abstractmethod
    def held_in_class(self, name: str) -> str | None:
        """Another name with ``name``'s ultranormalised key that we hold or are uploading."""

    @abstractmethod
    def held_classes(self) -> dict[str, list[str]]:
        """Ultranormalised key -> its names we hold or are uploading (in flight first)."""

    @abstractmethod
    def forget(self, names: Iterable[str]) -> list[str]:
        """Remove every trace of ``names``; returns those the store knew."""

    # -- what `watch` remembers ---------------------------------------------------------------------

    @abstractmethod
    def lookalikes(self) -> list[StoredLookalike]:
        """Every look-alike reported so far, oldest first."""

    @abstractmethod
    def add_lookalikes(self, found: Sequence[StoredLookalike]) -> list[str]:
        """Record look-alikes not recorded yet; the public names that were new, in order."""

    @abstractmethod
    def mark_lookalike_alerted(self, public: str) -> None: ...

    @abstractmethod
    def forget_lookalikes(self, publics: Iterable[str]) -> None:
        """Drop rows (the project left the listing, was allowed, or no longer looks like a name
        of ours): a return is new again."""

    @abstractmethod
    def watch_allowed(self) -> list[str]: ...

    @abstractmethod
    def allow_lookalikes(self, globs: Iterable[str]) -> None: ...

    @abstractmethod
    def scanned_listing(self) -> tuple[str | None, frozenset[str] | None]:
        """(digest of what the last scan looked for, the names it scanned), or (None, None)."""

    @abstractmethod
    def remember_scan(self, basis: str, names: Iterable[str], *, added: bool = False) -> None:
        """The names a scan saw: all of them, or with ``added`` the ones new since the last."""

    @abstractmethod
    def our_names(self) -> list[str]:
        """Every name of ours (private, reserved), canonical, sorted."""

    # -- notification deliveries --------------------------------------------------------------------

    @abstractmethod
    def delivery_log(self) -> DeliveryLog:
        """The dispatcher's memory (what was sent where, what waits for a retry), in this store."""
