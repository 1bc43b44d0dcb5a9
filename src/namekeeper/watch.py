"""`namekeeper watch`: public projects that imitate our names, or sit in our private prefixes.

One scan:

1. Our names: every name in the store (private, reserved).  The `LookalikeIndex` is built
   from them, the ``[watch]`` prefixes and the allow-list (config plus ``watch --allow``).
2. The public listing, from the cache `audit` also uses (revalidated with a conditional
   request, `public.listing.fetch_listing`).
3. Full scan the first time and whenever what we look for changed (our names, prefixes,
   allow-list, thresholds); otherwise only projects new since the last scan: the
   difference between this listing and the names the last scan saw (kept in the store).
4. For look-alikes not reported before: owners, organisation and first-release time from
   the JSON API (one request each, reported names only), recorded in the store, unless
   they show the project is ours (``[public] owners`` or ``organization``).
5. Each look-alike not alerted yet goes to the notifiers with tag ``lookalike``, once per
   target and state (the delivery log); a failed delivery is tried again on the next scan.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .config import Config
from .lookalike import Likeness, LookalikeIndex, Thresholds, word_counts
from .model import Action, Outcome, PublicProject, Severity, Verdict
from .notify.dispatch import Dispatcher
from .notify.render_lookalike import lookalike_fingerprint, render_lookalike
from .public.interface import PublicIndex, PublicIndexUnavailable
from .public.listing import PublicListing, fetch_listing
from .store.interface import StoreBackend, StoredLookalike

log = logging.getLogger(__name__)

#: Concurrent JSON-API requests for the facts of new look-alikes.
LOOKUP_WORKERS = 8


@dataclass
class WatchResult:
    """What one scan saw and found."""

    #: Every look-alike on record (allowed ones left out), oldest first.
    lookalikes: list[StoredLookalike] = field(default_factory=list)
    #: The public names first reported by this scan.
    new: list[str] = field(default_factory=list)
    scanned: int = 0  # public names examined
    listed: int = 0  # public names in the listing
    full: bool = True  # False: only projects new since the last scan were examined
    listing: PublicListing | None = None


@dataclass
class WatchState:
    """What a long-running process (`serve`) keeps between scans, so that an incremental scan
    costs only its new names: the index, the names scanned, the listing's word counts."""

    basis: str | None = None
    index: LookalikeIndex | None = None
    names: frozenset[str] | None = None
    words: Counter[str] | None = None


def build_index(config: Config, store: StoreBackend, ours: list[str] | None = None,
                thresholds: Thresholds | None = None) -> LookalikeIndex:
    allow = list(config.watch.allow) + store.watch_allowed()
    return LookalikeIndex(store.our_names() if ours is None else ours,
                          prefixes=config.watch.prefixes, allow=allow, thresholds=thresholds)


def basis(config: Config, store: StoreBackend, ours: list[str],
          thresholds: Thresholds | None = None) -> str:
    """A digest of what a scan looks for: when it changes, the next scan is a full one."""
    blob = json.dumps([ours, sorted(config.watch.prefixes),
                       sorted(set(config.watch.allow) | set(store.watch_allowed())),
                       repr(thresholds or Thresholds())])
    return hashlib.sha256(blob.encode()).hexdigest()


def run_watch(config: Config, store: StoreBackend, public: PublicIndex, *,
              alerts: Callable[[Outcome, StoredLookalike], bool] | None = None,
              full: bool = False, cache_dir: Path | None = None,
              listing: PublicListing | None = None, state: WatchState | None = None
              ) -> WatchResult:
    """One scan (see the module's docstring); raises `PublicIndexUnavailable` when the
    listing cannot be had.  ``alerts(about, lookalike)`` delivers one alert, True when
    every target has it; ``state`` is kept by the caller between scans."""
    state = state if state is not None else WatchState()
    ours = store.our_names()
    wanted = basis(config, store, ours)
    if state.index is None or state.basis != wanted:
        state.index, state.names, state.words = build_index(config, store, ours), None, None
    index = state.index
    listing = listing or fetch_listing(config.public, cache_dir=cache_dir)
    if state.names is None or state.basis != wanted:
        state.basis, state.names = store.scanned_listing()
    result = WatchResult(listed=len(listing), listing=listing)
    previous = state.names
    if full or state.basis != wanted or previous is None:
        todo: list[str] | frozenset[str] = list(listing)
    else:
        result.full = False
        todo = listing.names - previous
    result.scanned = len(todo)
    on_record = store.lookalikes()
    known = {item.public for item in on_record}
    # Recorded before [public] owners or organization said so: one of ours, no look-alike.
    ours_now = {item.public for item in on_record if held_by_us(item, config)}
    raw = [hit for hit in map(index.match, todo) if hit is not None]
    # A full scan asks about every listed project: one on record that now looks like nothing
    # of ours (a name forgotten, a prefix narrowed) is no look-alike any more.
    unmatched = known - {hit.public for hit in raw} if result.full else set()
    if raw:
        if state.words is None or result.full:
            state.words = word_counts(listing)
        elif todo:
            state.words.update(word_counts(todo))
        words = index.words_of(listing.names, known | {hit.public for hit in raw}, state.words)
        raw = index.quiet(raw, words)
    elif result.full:
        state.words = None  # counted when first needed
    elif state.words is not None and todo:
        state.words.update(word_counts(todo))
    fresh = [hit for hit in raw if hit.public not in known]
    # Our own public projects (an open-source release in our prefix) imitate nothing.
    found = [item for item in _with_facts(fresh, public) if not held_by_us(item, config)]
    store.add_lookalikes(found)
    result.new = [item.public for item in found]
    # Gone from the listing, allowed or no longer like ours: forget, so a return is reported again.
    gone = [p for p in known
            if p not in listing or index.allowed(p) or p in unmatched or p in ours_now]
    if gone:
        store.forget_lookalikes(gone)
    if result.full or gone:  # a project gone from the listing must be new when it returns
        store.remember_scan(wanted, listing.names)
    elif todo:
        store.remember_scan(wanted, todo, added=True)
    state.basis, state.names = wanted, listing.names
    result.lookalikes = store.lookalikes()
    if alerts is not None:
        for item in result.lookalikes:
            if not item.alerted and alerts(about(item, public.project_url(item.public)), item):
                store.mark_lookalike_alerted(item.public)
        result.lookalikes = store.lookalikes()
    return result


def _with_facts(found: list[Likeness], public: PublicIndex) -> list[StoredLookalike]:
    """Each new look-alike with its owners and first release (one JSON-API request each)."""
    def facts(hit: Likeness) -> PublicProject | None:
        try:
            return public.lookup_existing(hit.public)
        except PublicIndexUnavailable as exc:
            log.warning("facts about %s are unknown: %s", hit.public, exc)
            return None

    with ThreadPoolExecutor(max_workers=LOOKUP_WORKERS) as pool:
        projects = list(pool.map(facts, found))
    now = datetime.now(timezone.utc)
    return [StoredLookalike(
        public=hit.public, ours=hit.ours, kind=hit.kind.value, distance=hit.distance,
        owners=project.owners if project is not None and project.ownership_known else None,
        organization=project.organization if project is not None else None,
        first_release=project.first_release if project is not None else None,
        found_at=now, alerted=False) for hit, project in zip(found, projects, strict=True)]


def held_by_us(item: StoredLookalike, config: Config) -> bool:
    """True when one of our public accounts or our organisation holds the project, as the
    keeper judges OURS (`Keeper.judge`); an index that did not say who holds it: False."""
    return item.owners is not None and config.public.holds(item.owners, item.organization)


def about(item: StoredLookalike, url: str | None = None) -> Outcome:
    """The look-alike as an `Outcome`, for notifiers that read outcomes rather than messages."""
    return Outcome(
        name=item.public, display_name=item.public, verdict=Verdict.TAKEN, action=Action.SKIPPED,
        severity=Severity.MEDIUM,
        reason=f"looks like our {item.ours} ({item.kind}, edit distance {item.distance})",
        message=f"{item.public} on the public index looks like our {item.ours} ({item.kind})",
        public=PublicProject(name=item.public, exists=True, owners=item.owners or (),
                             organization=item.organization, first_release=item.first_release,
                             ownership_known=item.owners is not None, url=url))


def dispatcher_alerts(dispatcher: Dispatcher) -> Callable[[Outcome, StoredLookalike], bool]:
    """``alerts`` for `run_watch` through the dispatcher every other alert goes through."""

    def send(outcome: Outcome, item: StoredLookalike) -> bool:
        message = render_lookalike(item, outcome.public.url if outcome.public else None,
                                   dispatcher.secrets)
        results = dispatcher.dispatch_rendered(message, outcome, lookalike_fingerprint(item))
        return all(results.values())

    return send


def row_of(item: StoredLookalike, new: bool) -> dict[str, object]:
    """One report row (json, csv and table use the same keys)."""
    return {
        "public": item.public, "ours": item.ours, "kind": item.kind, "distance": item.distance,
        "owners": list(item.owners) if item.owners is not None else None,
        "organization": item.organization,
        "first_release": item.first_release.isoformat() if item.first_release else None,
        "found_at": item.found_at.isoformat(), "new": new,
    }
