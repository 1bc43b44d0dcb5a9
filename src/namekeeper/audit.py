"""`namekeeper audit`: every private name of an index or a lock file, classified in seconds.

1. Collect the private names: the root listing of each private simple index
   (the poller's listing code: one request per index, whatever its size), and
   the packages of each lock file that came from a non-public index.
2. Record every name in the store (index, first seen privately), in one transaction.
3. Fetch the public index's full listing (cached; revalidated with a conditional
   request) and decide locally what it can: policy, standard library, "too
   similar", and absence (`Keeper.prejudge`, the same code `check` runs).
4. Ask the JSON API only about names that exist, a bounded pool at a time; the
   session's retries honour 429 and ``Retry-After``; then `Keeper.judge`.
5. Record every verdict; with ``reserve``, queue the FREE names (one per
   ultranormalised class) in `reservation_order` for `serve` or the devpi plugin.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import requests
from requests.auth import AuthBase, HTTPBasicAuth

from .config import Config
from .errors import UsageError
from .http import new_session, public_url, web_url
from .keeper import Keeper
from .lockfiles import private_packages
from .model import Classification, NameEvent, Outcome, PublicProject, Verdict, utcnow
from .names import shown, ultranormalize
from .public.interface import PublicIndex, PublicIndexUnavailable
from .public.listing import PublicListing
from .sources.poll import BearerAuth, PollError, auth_for, list_projects
from .store.interface import StoreBackend
from .store.schema import BUDGET_WINDOW

log = logging.getLogger(__name__)
T = TypeVar("T")

ENV_INDEX_TOKEN = "NAMEKEEPER_INDEX_TOKEN"  # noqa: S105 - a variable name, not a secret
ENV_INDEX_USERNAME = "NAMEKEEPER_INDEX_USERNAME"
ENV_INDEX_PASSWORD = "NAMEKEEPER_INDEX_PASSWORD"  # noqa: S105
#: Concurrent JSON-API requests: enough to hide latency, few enough to stay polite.
LOOKUP_WORKERS = 8


class AuditInputError(UsageError):
    """An index URL or lock file we refuse before doing any work (one line)."""


@dataclass(frozen=True)
class PrivateName:
    """A project seen on a private index (or locked from one)."""

    name: str  # canonical
    display_name: str
    index: str  # the private index's URL without credentials
    version: str | None = None
    source: str = "audit"
    #: A locked package whose lock names no index: its files' sha256 (`without_public_files`).
    digests: frozenset[str] = frozenset()


@dataclass(frozen=True)
class AuditRow:
    """One name's result: an outcome, or the reason the public index could not answer."""

    private: PrivateName
    outcome: Outcome | None
    error: str | None = None


@dataclass
class AuditResult:
    rows: list[AuditRow] = field(default_factory=list)
    #: Private indexes that could not be read, each a credential-free one-line reason.
    unreadable: list[str] = field(default_factory=list)
    #: Names queued for reservation, in queue order.
    queued: list[str] = field(default_factory=list)
    #: With ``reserve``: how long the budget takes to let them out (`budget_estimate`).
    estimate: str | None = None
    listing: PublicListing | None = None


class Progress:
    """What `run_audit` reports while it works; the command line draws it on a terminal."""

    def stage(self, description: str, total: int | None = None) -> None:
        """A new step begins (``total`` units of work, when known)."""

    def advance(self, units: int = 1) -> None:
        """``units`` more of the current step are done."""


def run_audit(config: Config, *, indexes: Sequence[str] = (), locks: Sequence[Path] = (),
              reserve: bool = False, workers: int = LOOKUP_WORKERS,
              progress: Progress | None = None, cache_dir: Path | None = None) -> AuditResult:
    """Collect, classify and record every private name; with ``reserve``, queue the FREE ones.

    Bad input (an index URL with credentials, a malformed lock file) raises before any
    request; an unreadable private index is reported in the result; an unusable public
    index raises `PublicIndexUnavailable`.
    """
    from .app import build_keeper
    from .public.listing import fetch_listing

    progress = progress or Progress()
    started = time.perf_counter()
    urls = [check_index_url(u) for u in indexes]
    check_environment_credentials(urls, config)
    private = names_of_locks(locks, config) if locks else []
    result = AuditResult()
    with ExitStack() as resources:
        # The public listing downloads while the private indexes are read and the plugins load.
        listing = in_background(fetch_listing, config.public, cache_dir=cache_dir)
        for url in urls:
            progress.stage(f"listing {public_url(url)}")
            try:
                private += names_of_index(url, config)
            except PollError as exc:
                result.unreadable.append(str(exc))
        log.info("%d private names read in %.2f s", len(private), time.perf_counter() - started)
        keeper, store = build_keeper(config, with_notifiers=False, with_listing=False)
        resources.enter_context(store)
        progress.stage("public index: full listing")
        result.listing = listing.result()
        info = result.listing.info
        log.info("public listing of %d projects %s in %.2f s", info.count,
                 "downloaded" if info.downloaded else "revalidated", time.perf_counter() - started)
        if any(p.digests for p in private):
            progress.stage("public index: the files of locks that name no index")
            private = without_public_files(private, keeper.public, workers=workers)
        progress.stage("classifying", total=len({p.name for p in private}))
        result.rows = classify_all(keeper, store, private, result.listing, workers=workers,
                                   advance=progress.advance)
        if reserve:
            result.queued = queue_free(store, result.rows)
            result.estimate = budget_estimate(
                len(result.queued), config.queue.new_projects_per_hour,
                spent_at=store.budget_spent_at(), now=time.time(),
                paused_until=store.budget_paused_until())
        log.info("audit of %d names done in %.2f s", len(result.rows), time.perf_counter() - started)
        return result


def in_background(function: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
    """``function`` run in a daemon thread: Ctrl-C ends the audit at once, not after a
    download of the whole public listing (an executor's worker is joined at exit)."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(function(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever asks for the result
            future.set_exception(exc)

    threading.Thread(target=run, name="namekeeper-listing", daemon=True).start()
    return future


@contextlib.contextmanager
def _lookups(workers: int) -> Iterator[ThreadPoolExecutor]:
    """A pool of public-index lookups that Ctrl-C (any exception) abandons: the names not
    yet asked are never asked, rather than thousands waited for."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="namekeeper-audit")
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


# -- collecting private names ------------------------------------------------------------------

def index_auth(url: str, config: Config) -> AuthBase | None:
    """Credentials for a private index: its ``[[poll]]`` entry's, else the environment's."""
    for poll in config.polls:
        if public_url(poll.url) == public_url(url):
            return auth_for(poll)
    token = os.environ.get(ENV_INDEX_TOKEN)
    if token:
        return BearerAuth(token)
    username = os.environ.get(ENV_INDEX_USERNAME)
    if username:
        return HTTPBasicAuth(username, os.environ.get(ENV_INDEX_PASSWORD, ""))
    return None


def check_environment_credentials(urls: Sequence[str], config: Config) -> None:
    """Refuse to send the environment's index credentials to more than one host: they are
    one index's, and another host (a second --index) must not receive them."""
    from urllib.parse import urlsplit

    variable = next((v for v in (ENV_INDEX_TOKEN, ENV_INDEX_USERNAME) if os.environ.get(v)), None)
    if variable is None:
        return
    polled = {public_url(p.url) for p in config.polls}  # these have credentials of their own
    hosts = sorted({urlsplit(u).netloc.lower() for u in urls if public_url(u) not in polled})
    if len(hosts) > 1:
        raise AuditInputError(f"{variable} would be sent to {len(hosts)} hosts "
                              f"({', '.join(hosts)}): audit one host at a time")


def check_index_url(url: str) -> str:
    """``url`` if usable as a private index root; credentials belong in the environment."""
    from urllib.parse import urlsplit

    if not web_url(url):
        raise AuditInputError(f"--index must be an http(s) URL of a simple index, got "
                              f"{shown(public_url(url))}")
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise AuditInputError(f"--index {public_url(url)}: put credentials in {ENV_INDEX_TOKEN} "
                              f"or {ENV_INDEX_USERNAME} + {ENV_INDEX_PASSWORD}, not in the URL")
    return url if url.endswith("/") else url + "/"


def names_of_index(url: str, config: Config,
                   session: requests.Session | None = None) -> list[PrivateName]:
    """Every valid project name of the private simple index ``url``; raises `PollError`."""
    projects = list_projects(url, session or new_session(purpose="audit"), timeout=config.public.timeout,
                              auth=index_auth(url, config))
    where = public_url(url)
    return [PrivateName(name, display, where) for display, name in projects]


def names_of_locks(paths: Sequence[Path], config: Config) -> list[PrivateName]:
    """The packages of the lock files that came from a non-public index; `LockFileError`."""
    return [PrivateName(p.name, p.display_name, p.index, p.version, source="lock",
                        digests=p.digests)
            for p in private_packages(list(paths), config.public.simple_url)]


def without_public_files(private: Sequence[PrivateName], public: PublicIndex, *,
                         workers: int = LOOKUP_WORKERS) -> list[PrivateName]:
    """``private`` less the locked packages whose files the public index serves.

    A lock that names no index (pip's) says only which files it took: a file the public
    index serves came from it (or from a mirror of it); one it does not serve, or a
    project it does not have, came from somewhere else.  Raises `PublicIndexUnavailable`.
    """
    asked = list(dict.fromkeys(p.name for p in private if p.digests))
    with _lookups(max(1, min(workers, len(asked)))) as pool:
        served = dict(zip(asked, pool.map(public.file_digests, asked), strict=True))
    return [p for p in private if not (p.digests and p.digests & (served[p.name] or set()))]


# -- classifying -------------------------------------------------------------------------------

def classify_all(keeper: Keeper, store: StoreBackend, private: Sequence[PrivateName],
                 listing: PublicListing, *, workers: int = LOOKUP_WORKERS,
                 advance: Callable[[int], None] = lambda n: None) -> list[AuditRow]:
    """Record, classify (locally where possible, else one lookup) and record the verdicts."""
    unique: dict[str, PrivateName] = {}
    for p in private:
        unique.setdefault(p.name, p)
    # The names the listing holds (and no local rule decides) need one JSON-API request
    # each.  They go out first: their round trips overlap the store's work below.
    to_ask = [name for name in unique if name in listing
              and keeper.prejudge(name, None, listing, trust_absence=False) is None]
    errors: dict[str, str] = {}

    def ask(name: str) -> tuple[str, PublicProject | None, str | None]:
        try:
            return name, keeper.public.lookup_existing(name), None
        except PublicIndexUnavailable as exc:
            return name, None, str(exc)

    with _lookups(max(1, min(workers, len(to_ask) or 1))) as pool:
        answers = pool.map(ask, to_ask)
        now = utcnow()
        events = [NameEvent(name=p.name, display_name=p.display_name, source=p.source,
                            index=p.index, version=p.version, seen_at=now)
                  for p in unique.values()]
        store.note_seen_many(events)
        records = store.records(list(unique))
        # Read once: `check` asks the store per FREE name whether we hold its class.
        held = keeper.still_held(store.held_classes(), listing)
        asked = set(to_ask)
        decided: dict[str, Classification] = {}
        for name in unique:
            if name not in asked:  # decided locally: the same code `check` runs
                cls = keeper.prejudge(name, records.get(name), listing, trust_absence=True)
                assert cls is not None, name  # held by the listing: it would have been asked
                decided[name] = keeper.covered(cls, held=held)
        advance(len(decided))
        for name, public, error in answers:
            if public is None:
                errors[name] = error or "the public index did not answer"
            else:
                decided[name] = keeper.judge_answer(name, public, records.get(name), held=held)
            advance(1)

    events_by_name = {e.name: e for e in events}
    rows: list[AuditRow] = []
    outcomes: list[Outcome] = []
    for name, p in unique.items():
        if name in errors:
            rows.append(AuditRow(p, None, errors[name]))
            continue
        outcome = keeper.outcome_of(decided[name], records.get(name), p.display_name,
                                    events_by_name[name])
        outcomes.append(outcome)
        rows.append(AuditRow(p, outcome))
    store.record_outcomes(outcomes)
    return rows


# -- reserving ---------------------------------------------------------------------------------

def reservation_order(outcomes: Sequence[Outcome]) -> list[Outcome]:
    """The FREE names to queue, one per ultranormalised class, riskiest first.

    Order: higher severity first (a placeholder of ours that vanished before a name
    nobody ever held), then the name seen privately longest ago, then the name.
    The first of each class in that order represents it; the others are covered by
    its placeholder (the public index then refuses them to everyone as too similar).
    """
    free = [o for o in outcomes if o.verdict is Verdict.FREE]
    never = datetime.min.replace(tzinfo=timezone.utc)
    free.sort(key=lambda o: (-o.severity.rank, o.first_seen_private or never, o.name))
    chosen: list[Outcome] = []
    classes: set[str] = set()
    for outcome in free:
        key = ultranormalize(outcome.name)
        if key not in classes:
            classes.add(key)
            chosen.append(outcome)
    return chosen


def queue_free(store: StoreBackend, rows: Sequence[AuditRow]) -> list[str]:
    """Queue the FREE names in `reservation_order`; returns the names queued."""
    chosen = reservation_order([r.outcome for r in rows if r.outcome is not None])
    # A placeholder of ours the index no longer has is FREE like any other name, but the
    # queue passes over a name it thinks held: the reservation is forgotten first.
    records = store.records([o.name for o in chosen])
    for name, record in records.items():
        if record.reserved:
            store.forget_reservation(name)
    events = [o.event or NameEvent(name=o.name, display_name=o.display_name, source="audit",
                                   index="audit") for o in chosen]
    store.enqueue_in_order(events)
    return [e.name for e in events]


def budget_estimate(count: int, per_hour: int, *, spent_at: Sequence[float] = (),
                    now: float = 0.0, paused_until: float | None = None) -> str:
    """How long the budget takes to let ``count`` more names out, from ``now``:
    ``240 names at 20/hour: about 11 h``; ``3 names at 20/hour: at once, ...``.

    The budget's hour slides (`StoreBackend.take_budget`): the hour's free slots go at
    once, and each later name when the oldest slot of its hour is an hour old; slots
    spent at ``spent_at`` count, and a pause the index asked for delays every name.
    """
    if count == 0:
        return "0 names: nothing to queue"
    at = max(now, paused_until or now)
    hour = deque(sorted(t for t in spent_at if t > at - BUDGET_WINDOW))
    for _ in range(count):
        while len(hour) >= per_hour:
            at = max(at, hour[0] + BUDGET_WINDOW)
            while hour and hour[0] <= at - BUDGET_WINDOW:
                hour.popleft()
        hour.append(at)
    hours = (at - now) / 3600
    if hours * 60 < 1:
        span = "at once, within this hour's free slots"
    elif hours < 1:
        span = f"about {max(1, round(hours * 60))} min"
    elif hours < 48:
        span = f"about {hours:.0f} h" if hours >= 10 else f"about {hours:.1f} h"
    else:
        span = f"about {hours / 24:.1f} days"
    return f"{count} name{'s' if count != 1 else ''} at {per_hour}/hour: {span}"

