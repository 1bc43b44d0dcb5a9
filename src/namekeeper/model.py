"""The vocabulary every part of namekeeper speaks.

Sources produce `NameEvent`s, the public lookup produces `PublicProject`s, the
keeper turns both into a `Classification` and, after acting, an `Outcome` that
notifiers deliver.  All are frozen: once said, a fact does not change under
the feet of a plugin.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone


def utcnow() -> datetime:
    """Aware UTC now; naive datetimes never enter the model."""
    return datetime.now(timezone.utc)


class Verdict(str, enum.Enum):
    """What the public index means for one of our names."""

    FREE = "free"
    OURS = "ours"
    TAKEN = "taken"
    PROTECTED = "protected"
    EXCLUDED = "excluded"


class Severity(str, enum.Enum):
    """How urgently a human should look; ordered from harmless to an attack in progress."""

    NONE = "none"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


class Action(str, enum.Enum):
    """What namekeeper did (or what the public index answered) for a name."""

    RESERVED = "reserved"
    ALREADY_OURS = "already-ours"
    TAKEN = "taken"
    PROTECTED = "protected"
    RATE_LIMITED = "rate-limited"
    FAILED = "failed"
    DRY_RUN = "dry-run"
    SKIPPED = "skipped"
    DEFERRED = "deferred"


@dataclass(frozen=True)
class NameEvent:
    """A project seen on a private index: everything a source ever says."""

    name: str  # canonical (PEP 503)
    display_name: str
    source: str  # "artifactory", "devpi", "poll", "cli", ...
    index: str  # which private index, e.g. "pypi-local" or a simple URL
    version: str | None = None
    seen_at: datetime = field(default_factory=utcnow)
    # Idempotency key of the outside signal (e.g. repo+path+sha256); None = name only.
    key: str | None = None


@dataclass(frozen=True)
class PublicProject:
    """What the public index says about a name.

    ``ownership_known`` is False when the index has no JSON API (devpi, a
    mirror): then ``owners`` and ``organization`` say nothing.
    """

    name: str
    exists: bool
    owners: tuple[str, ...] = ()
    organization: str | None = None
    versions: tuple[str, ...] = ()
    first_release: datetime | None = None
    ownership_known: bool = False
    url: str | None = None  # human page of the project, when the index has one

    @property
    def highest_version(self) -> str | None:
        from packaging.version import InvalidVersion, Version

        best: Version | None = None
        for raw in self.versions:
            try:
                v = Version(raw)
            except InvalidVersion:
                continue
            if best is None or v > best:
                best = v
        return str(best) if best is not None else None


@dataclass(frozen=True)
class Classification:
    """The keeper's decision about one name, before any action."""

    name: str
    verdict: Verdict
    severity: Severity
    reason: str
    public: PublicProject | None = None


@dataclass(frozen=True)
class UploadResult:
    """The public index's answer to a placeholder upload — the final word."""

    action: Action
    message: str
    retry_after: float | None = None  # seconds, when the index said so (429)
    # True when asking again later may succeed (network, 5xx, 429); False for a final answer.
    transient: bool = False
    # True when the index may have created the project although no success came back
    # (timeout or reset after sending, 5xx): the budget slot stays spent, a lookup confirms.
    outcome_unknown: bool = False


@dataclass(frozen=True)
class Outcome:
    """A classification plus what was done about it; what notifiers receive."""

    name: str
    display_name: str
    verdict: Verdict
    action: Action
    severity: Severity
    reason: str
    message: str
    public: PublicProject | None = None
    event: NameEvent | None = None
    first_seen_private: datetime | None = None
    at: datetime = field(default_factory=utcnow)
    # Set when trying again later may succeed: seconds to wait (0 = the queue's backoff decides).
    retry_after: float | None = None
