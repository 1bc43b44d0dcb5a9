"""What a notifier is."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from ..model import Outcome

#: The tags an alert carries; users route with apprise's tag syntax on these words.
TAG_TAKEN = "taken"
TAG_CRITICAL = "critical"
TAG_RESERVED = "reserved"
TAG_PROTECTED = "protected"
TAG_FAILED = "failed"
TAG_RATE_LIMITED = "rate-limited"
#: A service-wide condition: the public index asked us to stop creating projects for a while.
TAG_PAUSED = "paused"
#: A public project that looks like one of our names (`namekeeper watch`).
TAG_LOOKALIKE = "lookalike"
#: A test message (``namekeeper notify --test``): every target receives it.
TAG_TEST = "test"
#: What a target with no tags of its own receives: the alerts that need a human.
DEFAULT_TAGS = frozenset({TAG_TAKEN, TAG_FAILED, TAG_PAUSED, TAG_LOOKALIKE})


@dataclass(frozen=True)
class Message:
    """One alert, rendered once so every notifier delivers the same content.

    ``tags`` name the kind of alert (see the ``TAG_*`` constants); an empty set
    means the outcome is not worth telling anyone.
    """

    title: str
    text: str  # plain text
    markdown: str  # CommonMark, every outside value escaped (Slack, Teams)
    html: str  # an HTML fragment, every outside value escaped (e-mail)
    tags: frozenset[str]


class Notifier(ABC):
    """Delivers an `Outcome` somewhere people look."""

    #: Short identifier, used in logs and in the delivery record.
    name: str = "notifier"

    def wants(self, tags: frozenset[str]) -> bool:
        """Whether an alert with these tags is for this notifier; by default every alert is."""
        return True

    def target(self) -> str:
        """Where this notifier delivers, for people (a host, never a secret part); its name."""
        return self.name

    def last_failure(self) -> str | None:
        """Why the last delivery failed, in the target's own words (secrets masked), if known."""
        return None

    @abstractmethod
    def deliver(self, message: Message, outcome: Outcome) -> bool:
        """Deliver ``message``, rendered once for every notifier, about ``outcome``; return True
        when every target accepted it.  Raising counts as a failure, retried later."""
