"""The vocabulary every part of namekeeper speaks.

Sources produce `NameEvent`s, the public lookup produces `PublicProject`s, the
keeper turns both into a `Classification` and, after acting, an `Outcome` that
notifiers deliver.  All are frozen: once said, a fact does not change under
the feet of a plugin.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any


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
    DEFERRED = "deferred"  # waits for a service-wide condition, which is alerted instead


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
        """The highest valid version, normalised (``1.0-RC1`` → ``1.0rc1``)."""
        from .names import highest_version, parsed_version

        best = parsed_version(highest_version(self.versions))
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
    # Set when the upload failed on our credentials, not on the name (none found, or the index
    # refused them): what is wrong and what to do, in one line that names no project.  Every
    # upload fails the same way until a person fixes them, so `serve` holds uploads back
    # behind one condition (`upload_hold`) instead of failing each name.
    credentials_problem: str | None = None


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


# -- the JSON codec: datetimes and outcomes -------------------------------------------------


def iso(value: datetime | None) -> str | None:
    """A datetime as ISO 8601 text (with its offset), None as None: how datetimes go to JSON."""
    return value.isoformat() if value is not None else None


def from_iso(value: Any) -> datetime | None:
    """The datetime `iso` wrote; None for anything that is not text."""
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def outcome_to_dict(outcome: Outcome) -> dict[str, Any]:
    """Every field of ``outcome`` as JSON values (see `outcome_to_json`)."""
    public = outcome.public
    event = outcome.event
    return {
        "name": outcome.name,
        "display_name": outcome.display_name,
        "verdict": outcome.verdict.value,
        "action": outcome.action.value,
        "severity": outcome.severity.value,
        "reason": outcome.reason,
        "message": outcome.message,
        "first_seen_private": iso(outcome.first_seen_private),
        "at": iso(outcome.at),
        "public": None if public is None else {
            "name": public.name,
            "exists": public.exists,
            "owners": list(public.owners),
            "organization": public.organization,
            "versions": list(public.versions),
            "first_release": iso(public.first_release),
            "ownership_known": public.ownership_known,
            "url": public.url,
        },
        "event": None if event is None else {
            "name": event.name,
            "display_name": event.display_name,
            "source": event.source,
            "index": event.index,
            "version": event.version,
            "seen_at": iso(event.seen_at),
            "key": event.key,
        },
    }


def outcome_to_json(outcome: Outcome) -> str:
    """A JSON document that `outcome_from_json` turns back into an equal `Outcome`."""
    return json.dumps(outcome_to_dict(outcome), sort_keys=True)


def outcome_from_json(text: str) -> Outcome:
    """The `Outcome` that `outcome_to_json` wrote; ValueError when ``text`` is not one."""
    try:
        data = json.loads(text)
        pub = data.get("public")
        ev = data.get("event")
        public = None if pub is None else PublicProject(
            name=pub["name"],
            exists=bool(pub["exists"]),
            owners=tuple(pub.get("owners") or ()),
            organization=pub.get("organization"),
            versions=tuple(pub.get("versions") or ()),
            first_release=from_iso(pub.get("first_release")),
            ownership_known=bool(pub.get("ownership_known")),
            url=pub.get("url"),
        )
        event = None if ev is None else NameEvent(
            name=ev["name"],
            display_name=ev["display_name"],
            source=ev["source"],
            index=ev["index"],
            version=ev.get("version"),
            seen_at=from_iso(ev.get("seen_at")) or datetime.fromtimestamp(0, timezone.utc),
            key=ev.get("key"),
        )
        at = from_iso(data.get("at"))
        outcome = Outcome(
            name=data["name"],
            display_name=data["display_name"],
            verdict=Verdict(data["verdict"]),
            action=Action(data["action"]),
            severity=Severity(data["severity"]),
            reason=data["reason"],
            message=data["message"],
            public=public,
            event=event,
            first_seen_private=from_iso(data.get("first_seen_private")),
        )
        return replace(outcome, at=at) if at is not None else outcome
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a stored outcome: {type(exc).__name__}: {exc}") from None
