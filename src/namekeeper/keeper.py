"""The decision: classify a name, reserve it when free, tell people.

Orchestration only: the keeper asks the plugins (lookup, placeholder,
reservation backend, notifiers) and the store, and never parses a webhook or
speaks HTTP itself.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from . import names
from .config import Config
from .keeper_ours import OwnPlaceholders
from .model import (
    Action,
    Classification,
    NameEvent,
    Outcome,
    PublicProject,
    Severity,
    UploadResult,
    Verdict,
    utcnow,
)
from .names import glob_matcher, pip_prefers_public
from .notify.interface import TAG_FAILED, TAG_PAUSED
from .placeholder.interface import PlaceholderBuilder
from .public.interface import PublicIndex
from .public.listing import FRESH_FOR, PublicListing, cached_listing
from .reserve.interface import ReservationBackend
from .store.interface import LeaseLost, NameRecord, StoreBackend
from .store.sql_budget import CONDITION_PAUSED
from .upload_hold import UploadGate

if TYPE_CHECKING:
    from .notify.dispatch import Dispatcher

log = logging.getLogger(__name__)

#: How often a keeper without a fresh listing looks for one in the cache (`fresh_listing`).
LOOK_IN_CACHE_EVERY = 60.0


# Actions after which the public name is held by us.
_HELD = {Action.RESERVED, Action.ALREADY_OURS}


class Keeper(OwnPlaceholders):
    """Classify → reserve → notify, for one name at a time."""

    def __init__(self, config: Config, store: StoreBackend, public: PublicIndex,
                 builder: PlaceholderBuilder | None = None,
                 backend: ReservationBackend | None = None,
                 alerts: Dispatcher | None = None, *, notify_transient: bool = True) -> None:
        self.config = config
        self.store = store
        self.public = public
        self.builder = builder
        self.backend = backend
        self.alerts = alerts
        #: False under the queue (`WorkerPool`): a failure it will retry is not worth an alert yet.
        self.notify_transient = notify_transient
        #: The public index's cached full listing, when a fresh one exists (see public/listing.py).
        self.listing: PublicListing | None = None
        #: Whether `fresh_listing` looks in the cache for a listing (`app.build_keeper`'s
        #: ``with_listing``); audit and watch bring their own.
        self.reads_listing_cache = False
        self._cache_looked_at = time.monotonic()
        self._included = glob_matcher(config.policy.include)
        self._excluded = glob_matcher(config.policy.exclude)
        #: Dry runs: ultranormalised key → the name of that class a real run would upload.
        self._planned: dict[str, str] = {}

    def missing_credentials(self) -> str | None:
        """Why an upload cannot be attempted (no token anywhere), in the backend's words, or None."""
        return self.backend.unready_reason() if self.backend is not None else None

    def budget_spender(self) -> Callable[[str], float | None]:
        """Spends the store's hourly budget of new public projects, shared with the service."""
        limit = self.config.queue.new_projects_per_hour
        return lambda name: self.store.take_budget(name, limit)

    # -- classification ------------------------------------------------------------------------

    def policy_excludes(self, name: str) -> bool:
        return self._excluded(name) or not self._included(name)

    def classify(self, name: str, record: NameRecord | None) -> Classification:
        """The verdict for canonical ``name``; asks the public index unless policy says no.

        ``record`` is what the store knows of the name (None: nothing), read once by the caller.
        A cached listing (``self.listing``) only adds "too similar": whether the name itself
        exists is asked afresh, since the cache may be a day old.
        """
        local = self.prejudge(name, record, self.fresh_listing(), trust_absence=False)
        if local is not None:
            return local
        return self.judge_answer(name, self.public.lookup(name), record)

    def fresh_listing(self) -> PublicListing | None:
        """``self.listing`` while it was validated less than `FRESH_FOR` ago, else None.

        `serve` runs for months: without a fresh listing (none at start, or the one it started
        with is a day old: a project that made a name "too similar" may have been removed since)
        it looks in the cache again, at most every `LOOK_IN_CACHE_EVERY` seconds (an audit or a
        look-alike scan refreshes the cache; looking costs one small file read until it does).
        """
        listing = self.listing
        if listing is not None and listing.info.age <= FRESH_FOR:
            return listing
        if self.reads_listing_cache and \
                time.monotonic() - self._cache_looked_at >= LOOK_IN_CACHE_EVERY:
            self._cache_looked_at = time.monotonic()
            self.listing = cached_listing(self.config.public)
            return self.listing
        return None

    def judge_answer(self, name: str, public: PublicProject, record: NameRecord | None, *,
                     held: Mapping[str, Sequence[str]] | None = None) -> Classification:
        """The index's answer about ``name``, as `check` judges it (an audit too).

        Learns our placeholder's owners from it, and a FREE name whose class we hold is
        covered (``held``: the store's `held_classes`, read once for many names).
        """
        self.learn_placeholder_owners(name, public, record)
        return self.covered(self.judge(name, public, record), held=held)

    def prejudge(self, name: str, record: NameRecord | None, listing: PublicListing | None, *,
                 trust_absence: bool) -> Classification | None:
        """The verdict when no per-name lookup is needed, else None (then: lookup, `judge`).

        Shared by `check`/`reserve` and `audit`, so both give the same verdicts: policy,
        and with a listing PyPI's "too similar" rule; with ``trust_absence`` (a listing
        just revalidated) a name it does not hold is judged as absent from the public
        index without asking.
        """
        if self.policy_excludes(name):
            return Classification(name, Verdict.EXCLUDED, Severity.NONE,
                                  "The policy's include/exclude patterns leave this name alone.")
        if listing is None:
            return None
        similar = listing.similar(name)
        if similar is not None:
            return Classification(name, Verdict.PROTECTED, Severity.NONE,
                                  f"The public index refuses it to everyone as too similar to "
                                  f"the existing project {similar}.")
        if trust_absence and name not in listing:
            absent = PublicProject(name=name, exists=False,
                                   ownership_known=self.public.publishes_owners())
            return self.judge(name, absent, record)
        return None

    def judge(self, name: str, public: PublicProject, record: NameRecord | None) -> Classification:
        """Turn what the public index says into a verdict; no network I/O."""
        ours_in_store = record is not None and record.reserved
        if not public.exists:
            if names.is_stdlib_name(name):
                # Only absent ones: the rule came after projects such as "logging" existed.
                return Classification(name, Verdict.PROTECTED, Severity.NONE,
                                      "The public index refuses standard-library module names "
                                      "to everyone.", public)
            if ours_in_store and record is not None and record.reserved_at is not None:
                # The index's answers are CDN-cached: a fresh upload may still look absent.
                if utcnow() - record.reserved_at < timedelta(seconds=self.config.public.cdn_grace):
                    return Classification(name, Verdict.OURS, Severity.NONE,
                                          "namekeeper reserved this name; the public index has "
                                          "not shown it yet.", public)
                return Classification(name, Verdict.FREE, Severity.HIGH,
                                      f"namekeeper reserved this name on "
                                      f"{record.reserved_at:%Y-%m-%d}, but the public index no "
                                      "longer has it (removed, e.g. under PEP 541?); anyone "
                                      "could register it now.", public)
            return Classification(name, Verdict.FREE, Severity.LOW,
                                  "Nobody holds this name on the public index; anyone could "
                                  "register it.", public)
        if public.ownership_known:
            if self.config.public.holds(public.owners, public.organization):
                return Classification(name, Verdict.OURS, Severity.NONE,
                                      "The public project belongs to one of our accounts.", public)
            uploaders = self.store.placeholder_owners(name) if ours_in_store else frozenset()
            if uploaders & {o.lower() for o in public.owners}:
                return Classification(name, Verdict.OURS, Severity.NONE,
                                      f"namekeeper's placeholder, held by "
                                      f"{', '.join(sorted(uploaders))}, the account that "
                                      "uploaded it.", public)
        elif ours_in_store:
            return Classification(name, Verdict.OURS, Severity.NONE,
                                  "namekeeper reserved this name (the index does not publish "
                                  "owners).", public)
        return self._taken(name, public, record)

    def _taken(self, name: str, public: PublicProject, record: NameRecord | None, *,
               appeared_during_upload: bool = False) -> Classification:
        """Severity and reason from the same facts, so the alert's title, reason and advice agree."""
        who = ", ".join(public.owners) or "unknown owners"
        if public.organization:
            who += f" (organisation {public.organization})"
        first_private = record.first_seen_private if record else None
        private_version = record.highest_private_version if record else None
        reasons = []
        if appeared_during_upload:  # exactly what an attack looks like
            reasons.append("it was registered between our lookup and our upload")
        elif (public.first_release and first_private
                and public.first_release > first_private):
            reasons.append(f"it appeared on the public index ({public.first_release:%Y-%m-%d}) "
                           f"after we first saw it privately ({first_private:%Y-%m-%d})")
        picked = pip_prefers_public(public.versions, private_version)
        if picked:
            ours = names.parsed_version(private_version)
            reasons.append(f"its version {picked} outranks our private {private_version}, so "
                           "pip with --extra-index-url would install it"
                           + (" (pip skips pre-releases when a final release is on offer)"
                              if ours is not None and ours.is_prerelease else ""))
        if reasons:
            return Classification(name, Verdict.TAKEN, Severity.CRITICAL,
                                  f"Held by {who}; {' and '.join(reasons)}.", public)
        # An unparsable private version (a legacy one) cannot be compared: nothing says theirs
        # is lower.
        if names.parsed_version(private_version) is None or not public.ownership_known:
            return Classification(name, Verdict.TAKEN, Severity.HIGH,
                                  f"Held by {who}; we cannot tell whether it outranks our "
                                  "private package.", public)
        return Classification(name, Verdict.TAKEN, Severity.MEDIUM,
                              f"Held by {who} since before we saw it privately, with a lower "
                              "version than ours.", public)

    # -- reservation ---------------------------------------------------------------------------

    def check(self, name: str, display_name: str | None = None) -> Outcome:
        """Classify without uploading and without writing anything (`check` is read-only)."""
        record = self.store.get(name)
        cls = self.classify(name, record)
        return self._outcome(cls, record, display_name or name, Action.SKIPPED, cls.reason)

    def reserve_name(self, name: str, display_name: str | None = None, *,
                     event: NameEvent | None = None, dry_run: bool | None = None,
                     budget: Callable[[str], float | None] | None = None,
                     claim: str | None = None, record_it: bool = True,
                     gate: UploadGate | None = None) -> Outcome:
        """Make sure the public name is held; upload the placeholder when it is free.

        ``record_it=False`` (the command line's dry run) writes nothing to the store and
        alerts nobody.  Of an ultranormalised class only the first name is uploaded; the
        others are PROTECTED by it (`covered`), without an upload or a budget slot.

        ``budget`` spends one new-project slot and returns None, or the seconds to
        wait; a name that must wait gets `Action.RATE_LIMITED` and no upload.
        ``claim``: the queue claim this work runs under (`WorkItem.claim`); the upload
        starts only while its lease is held (`LeaseLost` otherwise).
        ``gate`` (the queue's): asked whether the upload may go now; one that must wait, or
        that fails on our credentials, is `Action.DEFERRED` (the gate's service-wide
        condition, not this name's failure), never FAILED, and alerts nobody by name.
        """
        display = display_name or (event.display_name if event else name)
        dry_run = self.config.policy.dry_run if dry_run is None else dry_run
        record = self.store.get(name)
        cls = self.classify(name, record)
        planned = self._planned.get(names.ultranormalize(name)) if dry_run else None
        if planned:  # classify asked the store already; this dry run's own plan counts too
            cls = self.covered(cls, planned)

        if cls.verdict is not Verdict.FREE:
            if (cls.verdict is Verdict.TAKEN and not (cls.public and cls.public.ownership_known)
                    and record is not None and record.upload_started_at and not dry_run):
                # We uploaded before a crash and the index cannot say whose it is:
                # upload again and let its answer ("File already exists") decide.
                return self._upload(cls, record, display, event, budget=None, claim=claim,
                                    gate=gate)
            action = {Verdict.OURS: Action.ALREADY_OURS, Verdict.TAKEN: Action.TAKEN,
                      Verdict.PROTECTED: Action.PROTECTED, Verdict.EXCLUDED: Action.SKIPPED
                      }[cls.verdict]
            return self._finish(self._outcome(cls, record, display, action, cls.reason, event),
                                held=cls.verdict is Verdict.OURS, record_it=record_it)
        if dry_run:
            self._planned.setdefault(names.ultranormalize(name), name)
            return self._finish(self._outcome(cls, record, display, Action.DRY_RUN,
                                              "Dry run: the placeholder would be uploaded.",
                                              event), record_it=record_it)
        return self._upload(cls, record, display, event, budget=budget, claim=claim, gate=gate)

    def _upload(self, cls: Classification, record: NameRecord | None, display: str,
                event: NameEvent | None, *, budget: Callable[[str], float | None] | None,
                claim: str | None = None, gate: UploadGate | None = None) -> Outcome:
        if self.builder is None or self.backend is None:
            raise RuntimeError("reserving needs a placeholder builder and a reservation backend")
        waits = gate.admit(cls.name) if gate is not None else None
        if waits is not None:  # nothing built, spent or sent: it would meet the same refusal
            return self._finish(self._deferred(cls, record, display, waits, event))
        result: UploadResult | None = None
        try:
            with tempfile.TemporaryDirectory(prefix="namekeeper-") as tmp:
                # Built before a slot is taken: a broken template must not spend the budget.
                files = self.builder.build(cls.name, display, Path(tmp))
                if budget is not None:
                    wait = budget(cls.name)
                    if wait is not None:
                        return replace(self._outcome(cls, record, display, Action.RATE_LIMITED,
                                                     f"The budget of new public projects is "
                                                     f"spent; next slot in {_wait_words(wait)}.",
                                                     event),
                                       retry_after=wait)
                if claim is None:
                    self.store.mark_upload_started(cls.name, display)
                elif not self.store.begin_upload(cls.name, claim, display):
                    if budget is not None:
                        self.store.refund_budget(cls.name)  # nothing was sent
                    raise LeaseLost(f"{cls.name}: the queue lease expired before the upload")
                result = self.backend.upload(cls.name, files)
        finally:
            if gate is not None:
                gate.finished(cls.name, result)
        assert result is not None  # the block returns or raises wherever it sends nothing
        if result.action not in _HELD and budget is not None and not result.outcome_unknown:
            self.store.refund_budget(cls.name)  # a definite answer: no project was created
        if result.credentials_problem is not None and gate is not None:
            # Not this name's failure: the gate has raised it as the service's condition.
            return self._finish(self._deferred(cls, record, display, result.message, event))
        if result.action is Action.RATE_LIMITED:
            result = replace(result, retry_after=self._pause(result.retry_after))
        outcome = self._finish(self._after_upload(cls, record, display, result, event),
                               held=result.action in _HELD)
        if result.action in _HELD and claim is None:
            # The queue confirms every upload by a later lookup (`confirm`), which learns the
            # owners then; a command-line run has no later, so it asks now, and its row
            # shows them as `status` will.
            shown = self._learn_owners_now(cls.name)
            if shown is not None:
                outcome = replace(outcome, public=shown)
        return outcome

    def _deferred(self, cls: Classification, record: NameRecord | None, display: str,
                  why: str, event: NameEvent | None) -> Outcome:
        """The name waits for a service-wide condition (`UploadGate`); the queue decides when."""
        return replace(self._outcome(cls, record, display, Action.DEFERRED, why, event),
                       retry_after=0.0)

    def _pause(self, asked: float | None) -> float:
        """Obey the index's 429 for at most ``[queue] max-pause``; raise the pause condition."""
        cap = self.config.queue.max_pause
        pause = min(asked if asked is not None else 60.0, cap)
        until = self.store.pause_budget(pause)
        text = (f"the public index rate-limited new projects: no uploads until "
                f"{datetime.fromtimestamp(until, timezone.utc):%Y-%m-%d %H:%M:%S} UTC")
        if asked is not None and asked > cap:
            text += f" (it asked for {asked:.0f} s; capped by [queue] max-pause)"
        self.raise_condition(CONDITION_PAUSED, text, TAG_PAUSED)
        return pause

    # -- service-wide conditions and confirmations -----------------------------------------------

    def raise_condition(self, key: str, text: str, tag: str = TAG_FAILED) -> None:
        """Record a service-wide problem; the process that raises it first alerts, once."""
        if self.record_condition(key, text):
            self.alert_condition(key, text, tag)

    def record_condition(self, key: str, text: str) -> bool:
        """Record a service-wide problem (or its new words); True when this process raised it
        first, and so must `alert_condition`."""
        raised = self.store.raise_condition(key, text)
        if raised:
            log.warning("%s", text)
        return raised

    def alert_condition(self, key: str, text: str, tag: str = TAG_FAILED) -> None:
        """Send the alert about a condition this process raised (as slow as the notifiers)."""
        if self.alerts is None:
            return
        try:
            since = next((c.since for c in self.store.conditions() if c.key == key),
                         time.time())  # cleared already by another process
            self.alerts.dispatch_condition(key, text, frozenset({tag}), since=since)
        except Exception:
            log.exception("notifying about %s failed", key)

    def fail(self, name: str, display: str, message: str, event: NameEvent | None = None
             ) -> Outcome:
        """End ``name`` as FAILED with ``message``: recorded, and alerted (once)."""
        record = self.store.get(name)
        cls = Classification(name, Verdict.FREE, Severity.HIGH,
                             "namekeeper could not make sure the public name is held.")
        outcome = self._outcome(cls, record, display, Action.FAILED, message, event)
        self.store.record_outcome(outcome)
        self.notify(outcome)
        return outcome

    def confirm(self, name: str, display: str, event: NameEvent | None = None
                ) -> tuple[Outcome | None, float | None]:
        """Check by lookup that an upload the index answered 2xx really holds the name.

        Returns the outcome to report (None: confirmed, or not decidable yet) and
        when to look again (None: never).  Never uploads.
        """
        record = self.store.get(name)
        public = self.public.lookup(name)
        self.learn_placeholder_owners(name, public, record)
        cls = self.judge(name, public, record)
        if cls.verdict is Verdict.OURS:
            self.show_upload(name, public, record)
            if public.exists or record is None or record.reserved_at is None:
                return None, None
            # Not visible yet: the CDN may lag; ask again once the grace is over.
            return None, record.reserved_at.timestamp() + self.config.public.cdn_grace + 1
        if cls.verdict is Verdict.FREE:
            self.store.forget_reservation(name)
            cls = Classification(name, Verdict.FREE, Severity.HIGH,
                                 "The public index answered our upload with success, but does "
                                 "not have the project after the CDN grace: the name is not "
                                 "held, and anyone could register it.", public)
            outcome = self._outcome(cls, record, display, Action.FAILED, cls.reason, event)
        else:
            action = Action.TAKEN if cls.verdict is Verdict.TAKEN else Action.SKIPPED
            outcome = self._outcome(cls, record, display, action, cls.reason, event)
        self.store.record_outcome(outcome)
        log.warning("%s: %s", name, outcome.message)
        self.notify(outcome)
        return outcome, None

    def _after_upload(self, cls: Classification, record: NameRecord | None, display: str,
                      result: UploadResult, event: NameEvent | None) -> Outcome:
        """The index's answer is the final word: it may overrule the lookup's prediction."""
        if result.action in _HELD:
            return self._outcome(Classification(cls.name, Verdict.OURS, Severity.NONE,
                                                "The public name is held by our placeholder.",
                                                cls.public), record, display, result.action,
                                 result.message, event)
        if result.action is Action.TAKEN:
            public = cls.public or PublicProject(cls.name, exists=True)
            taken = self._taken(cls.name, public, record,
                                appeared_during_upload=not public.exists)
            return self._outcome(replace(taken, public=cls.public), record, display,
                                 Action.TAKEN, result.message, event)
        if result.action is Action.PROTECTED:
            return self._outcome(Classification(cls.name, Verdict.PROTECTED, Severity.NONE,
                                                result.message, cls.public), record, display,
                                 Action.PROTECTED, result.message, event)
        severity = Severity.HIGH if result.action is Action.FAILED else Severity.LOW
        outcome = self._outcome(Classification(cls.name, Verdict.FREE, severity, cls.reason,
                                               cls.public), record, display, result.action,
                                result.message, event)
        retry = result.transient or result.action is Action.RATE_LIMITED
        wait = result.retry_after or 0.0
        if result.outcome_unknown:  # a lookup after [queue] confirm-after tells what happened
            wait = max(wait, self.config.queue.confirm_after)
        return replace(outcome, retry_after=wait if retry else None)

    # -- helpers -------------------------------------------------------------------------------

    def outcome_of(self, cls: Classification, record: NameRecord | None, display: str,
                   event: NameEvent | None = None) -> Outcome:
        """A classification reported without acting on it (what `audit` records per name)."""
        return self._outcome(cls, record, display, Action.SKIPPED, cls.reason, event)

    def _outcome(self, cls: Classification, record: NameRecord | None, display: str,
                 action: Action, message: str, event: NameEvent | None = None) -> Outcome:
        """``record`` is the store's row read once per request (first seen privately)."""
        return Outcome(name=cls.name, display_name=display, verdict=cls.verdict, action=action,
                       severity=cls.severity, reason=cls.reason, message=message,
                       public=cls.public, event=event,
                       first_seen_private=record.first_seen_private if record else None)

    def _finish(self, outcome: Outcome, *, held: bool = False, record_it: bool = True) -> Outcome:
        if not record_it:
            return outcome
        self.store.record_outcome(outcome, reserved=held)
        log.info("%s: %s (%s) — %s", outcome.name, outcome.verdict.value, outcome.action.value,
                 outcome.message)
        # A DEFERRED name waits for a condition, which is alerted instead (once, not per name).
        if outcome.action is not Action.DEFERRED and (
                outcome.retry_after is None or self.notify_transient):
            self.notify(outcome)
        return outcome

    def notify(self, outcome: Outcome) -> None:
        """Hand an outcome to the notifiers; their failure never stops a reservation."""
        if self.alerts is None:
            return
        try:
            self.alerts.dispatch(outcome)
        except Exception:
            log.exception("notifying about %s failed", outcome.name)


def _wait_words(seconds: float) -> str:
    """``3600`` → ``60 min``: a budget's wait, as a person reads it ("3600 s" is a sum to do)."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{math.ceil(seconds / 60)} min"

