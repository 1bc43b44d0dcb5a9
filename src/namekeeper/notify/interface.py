"""What a notifier is."""

from __future__ import annotations

from abc import ABC, abstractmethod

from ..model import Outcome


class Notifier(ABC):
    """Delivers an `Outcome` somewhere people look."""

    #: Short identifier, used in logs and in the delivery record.
    name: str = "notifier"

    @abstractmethod
    def notify(self, outcome: Outcome) -> bool:
        """Deliver ``outcome``; return True when every target accepted it."""
